"""pain.001.001.09 files: valid against the official XSD, exact control sums from integer fen,
split into self-consistent files, and the same bytes for the same payments."""

from __future__ import annotations

import random
from dataclasses import fields, replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from payout_engine.bankfiles import (
    BankFile,
    BatchHeader,
    Debtor,
    InvalidInstruction,
    InvalidPain001,
    PaymentInstruction,
    build_manifest,
    validate_pain001,
    write_pain001,
)
from payout_engine.bankfiles.model import MAX_AMOUNT_FEN, format_fen
from payout_engine.bankfiles.pain001 import NAMESPACE, _pack
from tests.conftest import examples

NS = {"p": NAMESPACE}
HEADER = BatchHeader("PO-202611-01", "B202611-01",
                     datetime(2026, 11, 16, 9, 0, tzinfo=timezone(timedelta(hours=8))),
                     date(2026, 11, 18), payout_month="2026-11")
FUND = Debtor("某县城乡居民基本养老保险基金支出户", "1000000001", bank_code="102100099996",
              bank_bic="ICBKCNBJ", organisation_id="12330000MB0000000X")


def pension(n: int, amount_fen: object = 15_873, **kw: object) -> PaymentInstruction:
    fields: dict[str, object] = dict(
        end_to_end_id=f"PAY-202611-{n:06d}", payout_month="2026-11", payee_name="王秀英",
        account_number=f"6222{n:012d}", bank_code="102100099996", amount_fen=amount_fen,
        id_number="11010119500101002X")
    fields.update(kw)
    return PaymentInstruction(**fields)  # type: ignore[arg-type]


def texts(tree: etree._Element, path: str) -> list[str]:
    return [e.text or "" for e in tree.findall(path, NS)]


def check_self_consistent(f: BankFile) -> etree._Element:
    """The file's own header and batch say what its payments add up to."""
    validate_pain001(f.content)
    tree = etree.fromstring(f.content)
    amounts = [Decimal(a) for a in texts(tree, ".//p:CdtTrfTxInf/p:Amt/p:InstdAmt")]
    for where in ("p:CstmrCdtTrfInitn/p:GrpHdr", "p:CstmrCdtTrfInitn/p:PmtInf"):
        assert texts(tree, f"{where}/p:NbOfTxs") == [str(len(amounts))]
        assert texts(tree, f"{where}/p:CtrlSum") == [str(sum(amounts))]
    assert texts(tree, ".//p:GrpHdr/p:MsgId") == [f.message_id]
    assert texts(tree, ".//p:PmtId/p:EndToEndId") == [e2e for e2e, _ in f.payments]
    assert f.ctrl_sum_fen == sum(int(a * 100) for a in amounts)
    return tree


@pytest.mark.parametrize("count, max_txs, expected_files", [
    (1, 10, [1]), (7, 10, [7]), (250, 100, [100, 100, 50]), (12, 4, [4, 4, 4])])
def test_files_are_valid_and_split_each_self_consistent(
        count: int, max_txs: int, expected_files: list[int]) -> None:
    payments = [pension(n, 10_000 + n) for n in range(count)]
    files = write_pain001(HEADER, FUND, payments, max_txs_per_file=max_txs)
    assert [f.nb_of_txs for f in files] == expected_files
    assert [f.message_id for f in files] == [
        f"PO-202611-01-{i:04d}" for i in range(1, len(files) + 1)]
    for f in files:
        tree = check_self_consistent(f)
        seq = f.message_id[-4:]
        assert texts(tree, ".//p:PmtInf/p:PmtInfId") == [f"B202611-01-{seq}"]
        assert f.name == f"{f.message_id}.xml"
    assert sum(f.ctrl_sum_fen for f in files) == sum(p.amount_fen for p in payments)
    assert [e for f in files for e, _ in f.payments] == sorted(p.end_to_end_id
                                                              for p in payments)


def test_split_by_bytes_keeps_every_file_under_the_limit() -> None:
    payments = [pension(n) for n in range(40)]
    one = write_pain001(HEADER, FUND, payments)[0]
    limit = len(one.content) // 3
    files = write_pain001(HEADER, FUND, payments, max_bytes_per_file=limit)
    assert len(files) >= 3
    assert all(len(f.content) <= limit for f in files)
    for f in files:
        check_self_consistent(f)
    assert sum(f.nb_of_txs for f in files) == 40


def greedy_split(sizes: list[int], envelope: int, max_txs: int, max_bytes: int
                 ) -> list[range]:
    """The split into files restated fragment by fragment: a file takes the next fragment
    unless it holds max_txs already or the fragment would take it past max_bytes."""
    runs, start, size = [], 0, envelope
    for i, fragment_bytes in enumerate(sizes):
        assert envelope + fragment_bytes <= max_bytes
        if i - start == max_txs or size + fragment_bytes > max_bytes:
            runs.append(range(start, i))
            start, size = i, envelope
        size += fragment_bytes
    runs.append(range(start, len(sizes)))
    return runs


@settings(max_examples=examples(300), deadline=None)
@given(sizes=st.lists(st.integers(1, 60), max_size=80), envelope=st.integers(0, 40),
       max_txs=st.integers(1, 12), slack=st.integers(0, 200))
def test_the_files_are_split_as_fragment_by_fragment(sizes: list[int], envelope: int,
                                                     max_txs: int, slack: int) -> None:
    """For all fragment sizes and limits under which every fragment fits a file alone, the
    split found by bisecting the running total is the one taken fragment by fragment."""
    max_bytes = envelope + max(sizes, default=0) + slack
    assert _pack(sizes, envelope, max_txs, max_bytes) == \
        greedy_split(sizes, envelope, max_txs, max_bytes)


def test_one_payment_larger_than_the_byte_limit_is_refused() -> None:
    with pytest.raises(InvalidInstruction, match="max_bytes_per_file 500"):
        write_pain001(HEADER, FUND, [pension(1)], max_bytes_per_file=500)


@pytest.mark.parametrize("amounts, ctrl_sum", [
    ([1], "0.01"), ([99_999_999], "999999.99"), ([10, 20], "0.30"),
    ([1] * 100, "1.00"), ([MAX_AMOUNT_FEN, MAX_AMOUNT_FEN], "19999999999.98"),
    ([7, 99_999_993], "1000000.00")])
def test_ctrl_sum_is_exact_for_awkward_amounts(amounts: list[int], ctrl_sum: str) -> None:
    f, = write_pain001(HEADER, FUND, [pension(n, a) for n, a in enumerate(amounts)])
    tree = check_self_consistent(f)
    assert texts(tree, ".//p:GrpHdr/p:CtrlSum") == [ctrl_sum]
    assert texts(tree, ".//p:PmtInf/p:CtrlSum") == [ctrl_sum]
    assert texts(tree, ".//p:InstdAmt")[0] == format_fen(amounts[0])


def test_same_payments_give_the_same_bytes_whatever_their_order() -> None:
    payments = [pension(n, 10_000 + 7 * n) for n in range(30)]
    first = write_pain001(HEADER, FUND, payments, max_txs_per_file=8)
    shuffled = payments[:]
    random.Random(4).shuffle(shuffled)
    second = write_pain001(HEADER, FUND, shuffled, max_txs_per_file=8)
    assert [f.content for f in first] == [f.content for f in second]
    assert build_manifest(first).hash == build_manifest(second).hash
    changed = write_pain001(HEADER, FUND, [replace(payments[0], amount_fen=10_001),
                                           *payments[1:]], max_txs_per_file=8)
    assert build_manifest(changed).hash != build_manifest(first).hash


def test_the_transaction_carries_what_the_bank_needs() -> None:
    p = pension(1, 12_345, payee_name="欧阳&<娜>", account_name="欧阳家")
    f, = write_pain001(HEADER, FUND, [p])
    tree = check_self_consistent(f)
    tx = tree.find(".//p:CdtTrfTxInf", NS)
    assert tx is not None
    assert texts(tx, "p:Amt/p:InstdAmt") == ["123.45"]
    assert tx.find("p:Amt/p:InstdAmt", NS).get("Ccy") == "CNY"
    assert texts(tx, "p:Cdtr/p:Nm") == ["欧阳家"]
    assert texts(tx, "p:CdtrAcct/p:Id/p:Othr/p:Id") == [p.account_number]
    assert texts(tx, "p:CdtrAgt/p:FinInstnId/p:ClrSysMmbId/p:MmbId") == ["102100099996"]
    assert texts(tx, "p:Cdtr/p:Id/p:PrvtId/p:Othr/p:Id") == [p.id_number]
    assert texts(tx, "p:RmtInf/p:Ustrd") == ["养老金 2026-11"]
    assert texts(tx, "p:Purp/p:Cd") == ["PENS"]
    assert texts(tree, ".//p:PmtInf/p:PmtMtd") == ["TRF"]
    assert texts(tree, ".//p:PmtTpInf/p:CtgyPurp/p:Cd") == ["PENS"]
    assert texts(tree, ".//p:ReqdExctnDt/p:Dt") == ["2026-11-18"]
    assert texts(tree, ".//p:DbtrAcct/p:Id/p:Othr/p:Id") == ["1000000001"]
    assert texts(tree, ".//p:DbtrAgt/p:FinInstnId/p:BICFI") == ["ICBKCNBJ"]
    assert texts(tree, ".//p:GrpHdr/p:InitgPty/p:Nm") == [FUND.name]
    # Escaped on the way out, the name comes back as it was.
    named = write_pain001(HEADER, FUND, [pension(2, payee_name="欧阳&<娜>")])[0]
    assert texts(etree.fromstring(named.content), ".//p:Cdtr/p:Nm") == ["欧阳&<娜>"]
    anonymous = write_pain001(HEADER, FUND, [p], include_id_number=False)[0]
    validate_pain001(anonymous.content)
    assert p.id_number.encode() not in anonymous.content


def test_a_debtor_named_by_iban_is_written_as_iban() -> None:
    debtor = Debtor("基金支出户", "1000000001", bank_code="999999992",
                    iban="CN89MOCK1000000001")
    f, = write_pain001(HEADER, debtor, [pension(1)])
    tree = check_self_consistent(f)
    assert texts(tree, ".//p:DbtrAcct/p:Id/p:IBAN") == ["CN89MOCK1000000001"]


@pytest.mark.parametrize("change, message", [
    ({"amount_fen": 0}, "amount_fen 0 must be between 1"),
    ({"amount_fen": -5}, "amount_fen -5"),
    ({"amount_fen": 12.5}, "must be an int"),
    ({"amount_fen": True}, "must be an int"),
    ({"amount_fen": MAX_AMOUNT_FEN + 1}, "must be between"),
    ({"end_to_end_id": "X" * 36}, "end_to_end_id"),
    ({"end_to_end_id": "PAY 1"}, "end_to_end_id"),
    ({"payout_month": "2026-13"}, "payout_month"),
    ({"account_number": "6222-0000"}, "account_number"),
    ({"account_number": "1" * 33}, "account_number"),
    ({"bank_code": "1"}, "bank_code"),
    ({"id_number": "11010119500101002x"}, "id_number"),
    ({"payee_name": ""}, "payee_name is empty"),
    ({"payee_name": "王\n五"}, "control character"),
    ({"purpose": "pens"}, "purpose"),
])
def test_bad_instructions_are_refused_naming_the_field(change: dict[str, object],
                                                        message: str) -> None:
    with pytest.raises(InvalidInstruction, match=message):
        pension(1, **change)


def test_a_batch_is_refused_whole_for_a_repeated_id_or_nothing_to_pay() -> None:
    with pytest.raises(InvalidInstruction, match="PAY-202611-000001 appears twice"):
        write_pain001(HEADER, FUND, [pension(1), pension(1, 20_000)])
    with pytest.raises(InvalidInstruction, match="no payments"):
        write_pain001(HEADER, FUND, [])
    with pytest.raises(InvalidInstruction, match="time zone"):
        BatchHeader("PO-1", "B-1", datetime(2026, 11, 16, 9, 0), date(2026, 11, 18))
    with pytest.raises(InvalidInstruction, match="message_id"):
        BatchHeader("P" * 31, "B-1", HEADER.created_at, date(2026, 11, 18))
    with pytest.raises(InvalidInstruction, match="bank_code or a bank_bic"):
        Debtor("基金支出户", "1000000001")


def test_validation_refuses_what_the_xsd_refuses() -> None:
    f, = write_pain001(HEADER, FUND, [pension(1)])
    validate_pain001(f.content)
    with pytest.raises(InvalidPain001, match="CtrlSum"):
        validate_pain001(f.content.replace(b"<CtrlSum>158.73</CtrlSum>",
                                           b"<CtrlSum>158.7.3</CtrlSum>", 1))
    with pytest.raises(InvalidPain001, match="PmtMtd"):
        validate_pain001(f.content.replace(b"<PmtMtd>TRF</PmtMtd>", b"", 1))
    with pytest.raises(InvalidPain001, match="not well-formed"):
        validate_pain001(f.content[:-20])


@settings(max_examples=examples(100), deadline=None)
@given(n=st.integers(min_value=0, max_value=999_999),
       amount_fen=st.integers(min_value=1, max_value=MAX_AMOUNT_FEN),
       account_name=st.sampled_from(["", "王秀英", "李建国"]),
       remittance_info=st.sampled_from(["", "养老金 2026-11 含补发2个月", "丧葬补助金 2026-11"]))
def test_an_instruction_made_again_without_checks_is_the_checked_one(
        n: int, amount_fen: int, account_name: str, remittance_info: str) -> None:
    # The export makes its instructions this way from the stored lines; the files they make
    # must be the checked files byte for byte (their hash is compared with the approved one).
    checked = pension(n, amount_fen, account_name=account_name,
                      remittance_info=remittance_info)
    again = PaymentInstruction.checked_before(**{
        f.name: getattr(checked, f.name) for f in fields(PaymentInstruction)})
    assert again == checked
    assert write_pain001(HEADER, FUND, [again]) == write_pain001(HEADER, FUND, [checked])



# Each field's valid values, and values breaking each of its rules.
_GOOD_TEXT = st.sampled_from(["王秀英", "A", "x" * 60, "&<>", "王 英"])
_BAD_TEXT = st.sampled_from(["x" * 61, "", " ", " 王", "王 ", "王\n英", "王\u2028英", None, 1])
_FIELDS: dict[str, tuple[st.SearchStrategy[object], st.SearchStrategy[object]]] = {
    "end_to_end_id": (st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,34}", fullmatch=True),
                      st.sampled_from(["P" * 36, "-P", "P P", "", None])),
    "payout_month": (st.sampled_from(["2026-11", "2027-01"]),
                     st.sampled_from(["2026-13", "2026-1", "", 202611])),
    "payee_name": (_GOOD_TEXT, _BAD_TEXT),
    "account_number": (st.from_regex(r"[0-9]{1,32}", fullmatch=True),
                       st.sampled_from(["1" * 33, "6222 0000", "", "６２２２", "٠١", 6222])),
    "bank_code": (st.sampled_from(["102", "102100099996", "ABC1"]),
                  st.sampled_from(["10", "1" * 13, "10 2", ""])),
    "amount_fen": (st.integers(1, MAX_AMOUNT_FEN),
                   st.sampled_from([MAX_AMOUNT_FEN + 1, 0, -1, True, 1.5, "100"])),
    "id_number": (st.sampled_from(["11010119500101002X", "110101195001010021"]),
                  st.sampled_from(["11010119500101002x", "1101011950010100", ""])),
    "purpose": (st.just("PENS"), st.sampled_from(["pens", "PEN", ""])),
    # Empty or None: not given, the payee's name is the account holder's.
    "account_name": (_GOOD_TEXT | st.sampled_from(["", None]),
                     _BAD_TEXT.filter(lambda v: v not in ("", None))),
    "remittance_info": (st.sampled_from(["养老金 2026-11", ""]),
                        st.sampled_from([" 养老金", "x" * 141, "养老金\n"])),
}


@st.composite
def _payment_values(draw: st.DrawFn) -> tuple[dict[str, object], set[str]]:
    """Every field valid but a drawn few (none, one or two), each broken in a drawn way."""
    broken = draw(st.sets(st.sampled_from(sorted(_FIELDS)), max_size=2))
    return {name: draw(bad if name in broken else good)
            for name, (good, bad) in _FIELDS.items()}, broken


@settings(max_examples=examples(500), deadline=None)
@given(_payment_values())
def test_a_payment_is_refused_naming_its_field_or_accepted_by_every_rule(
        drawn: tuple[dict[str, object], set[str]]) -> None:
    """A payment is checked by plain tests first and field by field only when one fails:
    for all values, the two agree. A payment with a field broken is refused with an
    InvalidInstruction naming a broken field (never an AssertionError); one with none is
    accepted, and passes every rule."""
    values, broken = drawn
    try:
        p = PaymentInstruction(**values)  # type: ignore[arg-type]
    except InvalidInstruction as e:
        assert broken and any(name in str(e) for name in broken), (str(e), broken)
        return
    assert not broken, (values, broken)
    p._refuse()  # raises if any rule fails
    assert p.account_name == (values["account_name"] or values["payee_name"])
