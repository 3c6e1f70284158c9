"""The domestic 代发 format: fixed widths counted in GB18030 bytes, header and trailer totals,
and the bank's 回盘 read back with every total checked."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from payout_engine.bankfiles import (
    BatchHeader,
    Debtor,
    InvalidInstruction,
    MalformedFile,
    PaymentInstruction,
    TotalsMismatch,
    check_domestic_return,
    read_domestic,
    read_domestic_return,
    read_return_file,
    write_domestic,
)
from payout_engine.bankfiles.domestic import (
    DETAIL,
    RECORD_BYTES,
    RESULT,
    RETURN_RECORD_BYTES,
    RETURN_TRAILER,
    write_domestic_return,
)
from payout_engine.bankfiles.domestic import HEADER as HEADER_SPEC

HEADER = BatchHeader("PO-202611-01", "B202611-01",
                     datetime(2026, 11, 16, 9, 0, tzinfo=timezone(timedelta(hours=8))),
                     date(2026, 11, 18), payout_month="2026-11")
FUND = Debtor("某县城乡居民基本养老保险基金支出户", "1000000001", bank_code="102100099996")
NAMES = ["张三", "欧阳𠀀", "李", "Zhang San", "阿卜杜热合曼·买买提"]


def pension(n: int, amount_fen: int = 15_873, name: str = "王秀英",
            **kw: object) -> PaymentInstruction:
    return PaymentInstruction(
        end_to_end_id=f"PAY-202611-{n:06d}", payout_month=str(kw.pop("month", "2026-11")),
        payee_name=name, account_number=f"6222{n:012d}", bank_code="102100099996",
        amount_fen=amount_fen, id_number="11010119500101002X", **kw)  # type: ignore[arg-type]


def test_round_trip_with_chinese_names_at_exact_byte_widths() -> None:
    payments = [pension(n, 10_000 + n, name) for n, name in enumerate(NAMES, start=1)]
    payments.append(pension(9, 1, "王五", month="2026-08", account_name="王五之子"))
    f, = write_domestic(HEADER, FUND, payments)
    lines = f.content.split(b"\r\n")
    assert lines[-1] == b"" and all(len(line) == RECORD_BYTES for line in lines[:-1])
    assert len(lines) == len(payments) + 3  # header, payments, trailer, final CRLF
    read = read_domestic(f.content)
    assert (read.file_id, read.fund_account, read.payout_month, read.payment_date) == (
        "PO-202611-01-0001", "1000000001", "2026-11", date(2026, 11, 18))
    assert read.count == len(payments) and read.total_fen == sum(p.amount_fen
                                                                 for p in payments)
    for line, p in zip(read.lines, sorted(payments, key=lambda p: p.end_to_end_id),
                       strict=True):
        assert (line.end_to_end_id, line.payout_month, line.account_name, line.account_number,
                line.bank_code, line.amount_fen, line.id_number, line.payee_name,
                line.purpose) == (p.end_to_end_id, p.payout_month, p.account_name,
                                  p.account_number, p.bank_code, p.amount_fen, p.id_number,
                                  p.payee_name, p.purpose)


def test_a_name_is_counted_in_gb18030_bytes() -> None:
    f, = write_domestic(HEADER, FUND, [pension(1, name="欧阳𠀀")])
    detail = f.content.split(b"\r\n")[1]
    # 欧阳 are 2 bytes each in GB18030 and 𠀀 (U+20000) is 4: 8 bytes, then 52 spaces.
    start = 1 + 10 + 35 + 6
    assert detail[start:start + 60] == "欧阳𠀀".encode("gb18030") + b" " * 52
    assert len("欧阳𠀀".encode("gb18030")) == 8


def test_a_value_wider_than_its_field_is_refused_never_cut() -> None:
    write_domestic(HEADER, FUND, [pension(1, name="王" * 30)])  # 60 bytes: fits exactly
    with pytest.raises(InvalidInstruction,
                       match="payment PAY-202611-000001: name .* 62 bytes .* its 60"):
        write_domestic(HEADER, FUND, [pension(1, name="王" * 31, account_name="王五")])
    with pytest.raises(InvalidInstruction, match="account_name .* 62 bytes"):
        write_domestic(HEADER, FUND, [pension(1, name="王五", account_name="王" * 31)])


def test_split_files_each_carry_their_own_totals() -> None:
    payments = [pension(n, 100 * n) for n in range(1, 8)]
    files = write_domestic(HEADER, FUND, payments, max_lines_per_file=3)
    assert [f.nb_of_txs for f in files] == [3, 3, 1]
    for f in files:
        read = read_domestic(f.content)
        assert read.file_id == f.message_id and f.name == f"{f.message_id}.txt"
        assert (read.count, read.total_fen) == (f.nb_of_txs, f.ctrl_sum_fen)
    assert sum(f.ctrl_sum_fen for f in files) == sum(p.amount_fen for p in payments)


def test_the_same_payments_give_the_same_bytes() -> None:
    payments = [pension(n, 100 * n) for n in range(1, 8)]
    assert (write_domestic(HEADER, FUND, payments)[0].content
            == write_domestic(HEADER, FUND, payments[::-1])[0].content)


def test_the_return_file_says_who_was_paid_and_who_was_not() -> None:
    payments = [pension(n, 10_000 + n, name) for n, name in enumerate(NAMES, start=1)]
    f, = write_domestic(HEADER, FUND, payments)
    failures = {"PAY-202611-000002": ("MD07", "持卡人已死亡"),
                "PAY-202611-000004": ("AC04", "账户已销户")}
    returned = write_domestic_return(f.content, failures)
    assert all(len(line) == RETURN_RECORD_BYTES for line in returned.split(b"\r\n")[:-1])
    answer = read_domestic_return(returned)
    check_domestic_return(answer, f)
    assert read_return_file(returned) == answer
    failed = {r.end_to_end_id: (r.reason_code, r.reason_text) for r in answer.results
              if not r.paid}
    assert failed == failures
    assert answer.failed_fen == 10_002 + 10_004
    assert answer.paid_fen + answer.failed_fen == answer.total_fen == f.ctrl_sum_fen
    assert (answer.paid_count, answer.failed_count) == (3, 2)


def _returned() -> tuple[bytes, list[bytes]]:
    f, = write_domestic(HEADER, FUND, [pension(n, 1_000 * n) for n in range(1, 4)])
    data = write_domestic_return(f.content, {"PAY-202611-000002": ("AC01", "账号不存在")})
    return data, data.split(b"\r\n")


def test_a_return_with_wrong_totals_is_refused_whole() -> None:
    data, lines = _returned()
    trailer = lines[-2]
    # The trailer's paid total says one fen more than its paid lines add up to.
    paid_at = 1 + 10 + 18 + 10
    bad = trailer[:paid_at] + b"%018d" % (4_001) + trailer[paid_at + 18:]
    with pytest.raises(TotalsMismatch, match="trailer paid: total 4001 fen"):
        read_domestic_return(b"\r\n".join(lines[:-2] + [bad, b""]))
    amount_at = 1 + 10 + 35 + 6 + 60 + 32 + 12
    line = lines[1]
    more = line[:amount_at] + b"%015d" % 1_001 + line[amount_at + 15:]
    with pytest.raises(TotalsMismatch, match="header: total 6000 fen"):
        read_domestic_return(b"\r\n".join([lines[0], more, *lines[2:]]))


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:-2], "does not end with CRLF"),
    (lambda d: d.replace(b"\r\n", b"\r\n ", 1), "line 2: 319 bytes"),
    (lambda d: d.replace(b"FAC01", b"SAC01"), "status S with reason code 'AC01'"),
    (lambda d: d.replace(b"FAC01", b"XAC01"), "neither S nor F"),
    (lambda d: d.replace(b"HRET", b"HPAY"), "expected a RET header"),
    (lambda d: d.replace(b"D0000000002", b"D0000000007"), "sequence 7, expected 2"),
    (lambda d: d.replace("账号不存在".encode("gb18030"), b"\xff\xfe" * 5),
     "reason_text .* is not valid GB18030"),
])
def test_a_damaged_return_is_refused_naming_the_line(damage: object, message: str) -> None:
    data, _ = _returned()
    with pytest.raises(MalformedFile, match=message):
        read_domestic_return(damage(data))  # type: ignore[operator]


def test_a_return_for_another_file_or_payment_is_refused() -> None:
    f, = write_domestic(HEADER, FUND, [pension(n, 1_000 * n) for n in range(1, 4)])
    g, = write_domestic(HEADER, FUND, [pension(n, 1_000 * n) for n in range(1, 3)])
    answer = read_domestic_return(write_domestic_return(g.content, {}))
    with pytest.raises(TotalsMismatch, match="2 payments"):
        check_domestic_return(answer, f)
    other = write_domestic(BatchHeader("PO-202611-09", "B9", HEADER.created_at,
                                       date(2026, 11, 18)), FUND, [pension(1)])[0]
    with pytest.raises(MalformedFile, match="answers file PO-202611-09-0001"):
        check_domestic_return(read_domestic_return(write_domestic_return(other.content, {})),
                              f)
    with pytest.raises(InvalidInstruction, match="not in the file"):
        write_domestic_return(f.content, {"PAY-X": ("AC01", "")})


def test_the_documented_layout_is_the_one_written() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "domestic-format.md").read_text()
    for spec, start in ((HEADER_SPEC, 1), (DETAIL, 1), (RESULT, RECORD_BYTES + 1),
                        (RETURN_TRAILER, 1)):
        at = start
        for name, width, kind in spec:
            assert f"| {name} | {at}-{at + width - 1} | {width} | {kind} |" in doc, name
            at += width
    example = doc.split("```\n")[-2].splitlines()
    p = PaymentInstruction("PAY-202611-000001", "2026-11", "王秀英", "6222000000000001",
                           "102100099996", 15_873, "11010119500101002X")
    f, = write_domestic(HEADER, FUND, [p])
    written = f.content.decode("gb18030").split("\r\n")[:-1]
    assert example == [line.rstrip(" ").replace(" ", "·") for line in written]
