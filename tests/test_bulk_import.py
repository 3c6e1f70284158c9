"""Bulk CSV imports: all-or-nothing per file, every bad line reported, replays book nothing,
and the fast path stores exactly what one command at a time would."""

from __future__ import annotations

import csv
import uuid
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from ledger import bulk, resident_id
from ledger.aggregates.participant import BankAccount, on_behalf_fen, participant_id
from ledger.application import Ledger
from ledger.bulk import (
    CONTRIBUTION_COLUMNS,
    PARTICIPANT_COLUMNS,
    csv_records,
    import_contributions,
    import_participants,
)
from ledger.errors import ConcurrencyConflict, IdempotencyConflict, ImportRejected, InvalidInput
from ledger.money import format_yuan
from tests.helpers import contribute, enrol, make_id

GROUPS = ("ordinary", "destitute", "minimum_living", "ordinary", "severely_disabled",
          "registered_poor", "ordinary")
TIERS_FEN = (10000, 20000, 30000, 50000)


# ---- builders -----------------------------------------------------------------------------

def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]],
              bom: bool = False) -> Path:
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def person_id(n: int) -> str:
    # Several birth years so more than 1,000 people get distinct IDs.
    return make_id(n % 1000, born=date(1960 + n // 1000, 5, 17))


def wrong_check_digit(id_number: str) -> str:
    return id_number[:-1] + ("0" if id_number[-1] != "0" else "1")


def participant_rows(ns: Sequence[int]) -> list[list[str]]:
    rows = []
    for n in ns:
        banked = n % 5 != 0
        rows.append([person_id(n), f"居民{n}", "城关镇", f"村{n % 7}", GROUPS[n % len(GROUPS)],
                     "2015-01-10", f"居民{n}" if banked else "",
                     f"6222{n:012d}" if banked else "", "102" if banked else ""])
    return rows


def contribution_line(ledger: Ledger, n: int, year: int, *, back: bool = False,
                      tier_fen: int | None = None, prefix: str = "R") -> list[str]:
    """A valid line for person n: the amount is the tier less the on-behalf part."""
    tier = tier_fen if tier_fen is not None else TIERS_FEN[n % len(TIERS_FEN)]
    value_date = date(year + 1, 2, 1) if back else date(year, 3, 1)
    params = ledger.rules_on(value_date).parameters
    amount = tier - (0 if back else on_behalf_fen(params, GROUPS[n % len(GROUPS)], tier))
    return [person_id(n), str(year), format_yuan(tier), format_yuan(amount), "bank",
            f"{prefix}-{n}-{year}", value_date.isoformat(), "true" if back else ""]


def enrol_all(ledger: Ledger, tmp_path: Path, ns: Sequence[int]) -> None:
    path = write_csv(tmp_path / "people.csv", PARTICIPANT_COLUMNS, participant_rows(ns))
    import_participants(ledger, path, actor="op1")


def stored_count(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def problem_lines(exc: pytest.ExceptionInfo[ImportRejected]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for line, message in exc.value.problems:
        out.setdefault(line, []).append(message)
    return out


# ---- participants -------------------------------------------------------------------------

def test_participants_import_enrols_everyone_with_their_bank_details(
        ledger: Ledger, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "people.csv", PARTICIPANT_COLUMNS, participant_rows(range(30)),
                     bom=True)
    seen: list[int] = []
    result = import_participants(ledger, path, actor="op1", progress=seen.append)

    assert result == {"lines": 30, "participants": 30, "events": 30, "replayed": False}
    assert sum(seen) == 30
    p = ledger.participant(person_id(6))
    assert (p.name, p.village, p.identity_group, p.status) == ("居民6", "村6", "ordinary",
                                                               "enrolled")
    assert p.bank is not None and p.bank.account_number == "6222000000000006"
    assert ledger.participant(person_id(5)).bank is None
    row = ledger.queries.register_row(participant_id(person_id(1)))
    assert row is not None and row.version == 1 and row.identity_groups == \
        '[["2015-01-10","destitute"]]'


def test_participants_file_with_bad_lines_reports_each_and_enrols_no_one(
        ledger: Ledger, tmp_path: Path) -> None:
    enrol(ledger, person_id(900))
    rows = participant_rows(range(8))
    rows[1][0] = wrong_check_digit(rows[1][0])                                # line 3
    rows[2][4] = "vip"                                                        # line 4
    rows[3][6] = ""                                                           # line 5
    rows[4][0] = rows[0][0]                                                   # line 6
    rows[5][5] = "2015-02-30"                                                 # line 7
    rows[6] = rows[6][:5]                                                     # line 8
    young = resident_id.make("110101", date(2010, 1, 1), 7)
    rows.append([young, "小明", "城关镇", "东村", "ordinary", "2020-01-01", "", "", ""])  # 10
    rows.append(participant_rows([900])[0])                                  # line 11
    # Bank details no bank file can carry: fullwidth digits, a bank code with a space.
    rows += participant_rows([21, 22])                                        # lines 12, 13
    rows[-2][7] = "６２２２０００１２３４５６７８"
    rows[-1][8] = "10 2"
    path = write_csv(tmp_path / "people.csv", PARTICIPANT_COLUMNS, rows)
    before = stored_count(ledger)

    with pytest.raises(ImportRejected) as exc:
        import_participants(ledger, path, actor="op1")

    found = problem_lines(exc)
    assert sorted(found) == [3, 4, 5, 6, 7, 8, 10, 11, 12, 13]
    assert found[3][0].startswith("id_number: check digit")
    assert found[4][0].startswith("identity_group: must be one of")
    assert found[5][0].startswith("bank: ")
    assert found[6][0].startswith("id_number: ") and "already on line 2" in found[6][0]
    assert found[7][0].startswith("enrol_date: ")
    assert found[8][0].startswith("csv: 5 column(s)")
    assert found[10][0].startswith("id_number: participant is 10")
    assert found[11][0].endswith("is already enrolled")
    assert found[12] == ["account_number: must be 8 to 32 digits"]
    assert found[13] == ["bank_code: must be 3 to 12 letters or digits"]
    assert stored_count(ledger) == before
    assert ledger.queries.register_row(participant_id(person_id(0))) is None


def test_a_header_without_the_expected_columns_is_refused(ledger: Ledger,
                                                          tmp_path: Path) -> None:
    header = [c for c in CONTRIBUTION_COLUMNS if c != "receipt_no"] + ["note"]
    path = write_csv(tmp_path / "c.csv", header, [])
    with pytest.raises(ImportRejected) as exc:
        import_contributions(ledger, path, actor="op1")
    [(line, message)] = exc.value.problems
    assert line == 1
    assert "missing column(s) receipt_no" in message and "unknown column(s) note" in message


def test_the_line_limit_is_enforced_while_reading(tmp_path: Path) -> None:
    text = ",".join(CONTRIBUTION_COLUMNS) + "\n" + "a,b,c,d,e,f,g,h\n" * 4
    problems: list[tuple[int, str]] = []
    assert len(list(csv_records("f.csv", text, CONTRIBUTION_COLUMNS, problems, 4))) == 4
    with pytest.raises(InvalidInput) as exc:
        list(csv_records("f.csv", text, CONTRIBUTION_COLUMNS, problems, 3))
    assert exc.value.field == "file" and "more than 3 lines" in exc.value.rule


# ---- contributions ------------------------------------------------------------------------

def test_contributions_import_books_every_line_once(ledger: Ledger, tmp_path: Path) -> None:
    ns = range(70)
    enrol_all(ledger, tmp_path, ns)
    lines = [contribution_line(ledger, n, 2016) for n in ns]
    lines += [contribution_line(ledger, n, 2015, back=True) for n in ns if n % 10 == 0]
    path = write_csv(tmp_path / "c.csv", CONTRIBUTION_COLUMNS, lines)
    expected_fen = sum(int(line[3].replace(".", "")) for line in lines)
    on_behalf = sum(int(a[2].replace(".", "")) - int(a[3].replace(".", "")) for a in lines)
    on_behalf_lines = sum(1 for a in lines if a[2] != a[3])

    result = import_contributions(ledger, path, actor="op1")

    assert result == {"lines": 77, "participants": 70, "events": 77 + on_behalf_lines,
                      "amount_fen": expected_fen, "on_behalf_fen": on_behalf,
                      "replayed": False}
    assert on_behalf_lines > 0
    assert ledger.fund_positions()["1001"] == expected_fen
    destitute = ledger.participant(person_id(1))   # the whole lowest tier paid on behalf
    assert destitute.sources["on_behalf"] == 10000
    assert destitute.sources["contribution"] == TIERS_FEN[1] - 10000
    back = ledger.participant(person_id(10))
    assert back.version == 3 and sorted(back.contributed_years) == [2015, 2016]
    assert back.contributed_years[2015] == ("R-10-2015", TIERS_FEN[2], True)


def test_a_file_with_bad_lines_reports_every_one_and_stores_nothing(
        ledger: Ledger, tmp_path: Path) -> None:
    enrol_all(ledger, tmp_path, range(20))
    first = write_csv(tmp_path / "first.csv", CONTRIBUTION_COLUMNS,
                      [contribution_line(ledger, 0, 2016)])
    import_contributions(ledger, first, actor="op1")
    before = (stored_count(ledger), ledger.fund_positions())

    good = [contribution_line(ledger, n, 2017) for n in range(1, 20)]
    bad = {
        3: [wrong_check_digit(good[1][0]), *good[1][1:]],         # check digit
        4: [person_id(999), *good[2][1:]],                        # unknown participant
        5: [*good[3][:2], "500.005", *good[3][3:]],               # over-precision tier
        6: [*good[4][:3], "1e3", *good[4][4:]],                   # amount not decimal
        7: [*good[5][:6], "2017/03/01", good[5][7]],              # date not ISO
        8: [*good[6][:7], "yes"],                                 # back_payment flag
        9: [*good[7][:2], "750.00", "750.00", *good[7][4:]],      # not a tier
        10: [*good[8][:4], "wire", *good[8][5:]],                 # channel
        11: [*good[0][:5], "R-x-11", *good[0][6:]],               # same id and year as line 2
        12: [*good[10][:5], good[0][5], *good[10][6:]],           # receipt repeated (line 2)
        13: [*good[11][:5], "R-0-2016", *good[11][6:]],           # receipt booked already
        14: [*good[12][:1], "2016", *good[12][2:]],               # year is not value-date year
        15: good[13][:7],                                         # a column short
        16: [*good[14][:3], "250.00", *good[14][4:]],             # amount is not the tier
    }
    rows = [bad.get(i + 2, line) for i, line in enumerate(good)]
    path = write_csv(tmp_path / "bad.csv", CONTRIBUTION_COLUMNS, rows)

    with pytest.raises(ImportRejected) as exc:
        import_contributions(ledger, path, actor="op1")

    found = problem_lines(exc)
    assert sorted(found) == list(range(3, 17))
    fields = {line: [m.split(":", 1)[0] for m in msgs] for line, msgs in found.items()}
    assert fields == {3: ["id_number"], 4: ["id_number"], 5: ["tier"], 6: ["amount"],
                      7: ["value_date"], 8: ["back_payment"], 9: ["tier"], 10: ["channel"],
                      11: ["year"], 12: ["receipt_no"], 13: ["receipt_no"], 14: ["year"],
                      15: ["csv"], 16: ["amount"]}
    assert "more than 2 decimal places" in found[5][0]
    assert "no such record" in found[4][0]
    assert "already on line 2" in found[11][0] and "already on line 2" in found[12][0]
    assert found[13] == ["receipt_no: receipt R-0-2016 is already booked"]
    assert str(exc.value).startswith(f"{path}: 14 bad line(s), nothing imported")
    assert (stored_count(ledger), ledger.fund_positions()) == before


def test_every_field_problem_on_one_line_is_reported(ledger: Ledger, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", CONTRIBUTION_COLUMNS,
                     [["12345", "20x6", "100", "1.5.0", "bank", "R1", "2016-13-01", "no"]])
    with pytest.raises(ImportRejected) as exc:
        import_contributions(ledger, path, actor="op1")
    assert [m.split(":", 1)[0] for _, m in exc.value.problems] == [
        "amount", "back_payment", "id_number", "value_date", "year"]


def test_importing_the_same_file_again_replays_and_books_nothing(
        ledger: Ledger, tmp_path: Path) -> None:
    enrol_all(ledger, tmp_path, range(10))
    path = write_csv(tmp_path / "c.csv", CONTRIBUTION_COLUMNS,
                     [contribution_line(ledger, n, 2016) for n in range(10)])
    first = import_contributions(ledger, path, actor="op1")
    after_first = (stored_count(ledger), ledger.fund_positions())

    again = import_contributions(ledger, path, actor="op2")

    assert again == {**first, "replayed": True}
    assert (stored_count(ledger), ledger.fund_positions()) == after_first
    people = write_csv(tmp_path / "people.csv", PARTICIPANT_COLUMNS, participant_rows(range(10)))
    assert import_participants(ledger, people, actor="op1")["replayed"] is True


def test_the_same_key_with_another_file_is_a_conflict(ledger: Ledger, tmp_path: Path) -> None:
    enrol_all(ledger, tmp_path, range(4))
    one = write_csv(tmp_path / "1.csv", CONTRIBUTION_COLUMNS, [contribution_line(ledger, 0, 2016)])
    two = write_csv(tmp_path / "2.csv", CONTRIBUTION_COLUMNS, [contribution_line(ledger, 1, 2016)])
    import_contributions(ledger, one, actor="op1", idempotency_key="town-3-2016")
    before = stored_count(ledger)
    with pytest.raises(IdempotencyConflict):
        import_contributions(ledger, two, actor="op1", idempotency_key="town-3-2016")
    assert stored_count(ledger) == before


def test_a_receipt_booked_by_an_earlier_file_refuses_the_later_file(
        ledger: Ledger, tmp_path: Path) -> None:
    enrol_all(ledger, tmp_path, range(6))
    one = write_csv(tmp_path / "1.csv", CONTRIBUTION_COLUMNS,
                    [contribution_line(ledger, n, 2016) for n in range(3)])
    import_contributions(ledger, one, actor="op1")
    reused = contribution_line(ledger, 4, 2016)
    reused[5] = "R-1-2016"
    two = write_csv(tmp_path / "2.csv", CONTRIBUTION_COLUMNS,
                    [contribution_line(ledger, 3, 2016), reused])
    before = (stored_count(ledger), ledger.fund_positions())

    with pytest.raises(ImportRejected) as exc:
        import_contributions(ledger, two, actor="op1")

    assert exc.value.problems == [(3, "receipt_no: receipt R-1-2016 is already booked")]
    assert (stored_count(ledger), ledger.fund_positions()) == before
    assert 2016 not in ledger.participant(person_id(3)).contributed_years


def test_a_concurrent_writer_makes_the_import_re_read_and_retry(
        ledger: Ledger, tmp_path: Path) -> None:
    enrol_all(ledger, tmp_path, range(5))
    path = write_csv(tmp_path / "c.csv", CONTRIBUTION_COLUMNS,
                     [contribution_line(ledger, n, 2016) for n in range(5)])
    calls: list[int] = []

    def meanwhile(lines: int) -> None:
        # Between the check and the write, another clerk books a back-payment for person 0.
        if not calls:
            contribute(ledger, person_id(0), 2010, 10000, back_payment=True,
                       value_date=date(2016, 1, 5))
        calls.append(lines)

    result = import_contributions(ledger, path, actor="op1", progress=meanwhile)

    assert len(calls) == 2 and result["lines"] == 5
    p = ledger.participant(person_id(0))
    assert p.version == 3 and sorted(p.contributed_years) == [2010, 2016]
    row = ledger.queries.register_row(p.id)
    assert row is not None and row.version == 3


def test_an_import_that_always_loses_the_race_gives_up_and_stores_nothing(
        ledger: Ledger, tmp_path: Path) -> None:
    enrol_all(ledger, tmp_path, range(3))
    path = write_csv(tmp_path / "c.csv", CONTRIBUTION_COLUMNS,
                     [contribution_line(ledger, n, 2016) for n in range(3)])
    years = iter(range(2000, 2010))

    def meanwhile(_: int) -> None:
        contribute(ledger, person_id(1), next(years), 10000, back_payment=True,
                   value_date=date(2016, 1, 5))

    with pytest.raises(ConcurrencyConflict):
        import_contributions(ledger, path, actor="op1", progress=meanwhile)
    assert 2016 not in ledger.participant(person_id(0)).contributed_years
    assert len(ledger.participant(person_id(1)).contributed_years) == 5


# ---- the fast path stores what the commands would -----------------------------------------



def _events(app: Ledger, pid: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
    """Each stored event of an aggregate, all but the time it was recorded."""
    out = []
    for e in app.events.get(pid):
        assert isinstance(e, BaseModel)
        out.append((type(e).__qualname__, e.model_dump(exclude={"timestamp"})))
    return out


def test_bulk_import_stores_what_one_command_at_a_time_stores(
        ledger: Ledger, twin: Ledger, tmp_path: Path) -> None:
    compare_with_commands(ledger, twin, tmp_path)


def test_a_file_of_many_chunks_stores_what_the_commands_store(
        ledger: Ledger, twin: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Chunks of 4 lines: a participant's back-payment comes chunks after their first line
    # (the register read once, advanced through the file), and the fast mapping is checked
    # against the mapper every 5 lines.
    monkeypatch.setattr(bulk, "CHUNK_LINES", 4)
    monkeypatch.setattr(bulk, "CHECK_EVERY", 5)
    compare_with_commands(ledger, twin, tmp_path)


def compare_with_commands(ledger: Ledger, twin: Ledger, tmp_path: Path) -> None:
    ns = list(range(35))
    # The twin enrols and contributes by command, one at a time.
    enrol_all(ledger, tmp_path, ns)
    for row in participant_rows(ns):
        idn, name, town, village, group, _, acc_name, acc_no, code = row
        enrol(twin, idn, group=group, name=name, township=town, village=village,
              bank_account=BankAccount(account_name=acc_name, account_number=acc_no,
                                       bank_code=code) if acc_name else None)
    # A group change with an effective date: the on-behalf part follows the date.
    for app in (ledger, twin):
        app.change_identity_group(id_number=person_id(3), group="destitute",
                                  effective_from=date(2017, 1, 1), actor="op1")
    lines = [contribution_line(ledger, n, 2016) for n in ns]
    lines += [contribution_line(ledger, n, 2015, back=True) for n in ns if n % 4 == 0]
    lines.append(contribution_line(ledger, 3, 2017, tier_fen=10000))
    lines[-1][3] = "0.00"   # destitute from 2017: the whole lowest tier on behalf
    path = write_csv(tmp_path / "c.csv", CONTRIBUTION_COLUMNS, lines)

    import_contributions(ledger, path, actor="op1")
    for idn, year, tier, amount, channel, receipt, day, back in lines:
        twin.contribute(id_number=idn, year=int(year), tier_fen=int(tier.replace(".", "")),
                        amount_fen=int(amount.replace(".", "")), channel=channel,
                        receipt_no=receipt, value_date=date.fromisoformat(day),
                        back_payment=back == "true", actor="op1")

    assert ledger.fund_positions() == twin.fund_positions()
    for n in ns:
        bulk, single = ledger.participant(person_id(n)), twin.participant(person_id(n))
        assert _events(ledger, bulk.id) == _events(twin, single.id)
        assert (bulk.version, bulk.sources, bulk.bookings, bulk.contributed_years,
                bulk.receipts, bulk.identity_groups) == \
            (single.version, single.sources, single.bookings, single.contributed_years,
             single.receipts, single.identity_groups)
        assert ledger.queries.register_row(bulk.id) == twin.queries.register_row(single.id)
    assert ledger.participant(person_id(3)).sources["on_behalf"] == 10000


def test_the_fast_mapping_stores_exactly_what_the_mapper_makes_of_the_events(
        ledger: Ledger, tmp_path: Path) -> None:
    # Most lines take the fast path (the event JSON built from a learnt template); every
    # stored state must be byte for byte what ledger.mapper makes of the validated event.
    ns = range(150)
    enrol_all(ledger, tmp_path, ns)
    lines = [contribution_line(ledger, n, 2016, prefix="收据") for n in ns]
    lines += [contribution_line(ledger, n, 2015, back=True, prefix="补缴") for n in ns[::5]]
    path = write_csv(tmp_path / "c.csv", CONTRIBUTION_COLUMNS, lines)
    result = import_contributions(ledger, path, actor="柜员7")

    mapper = ledger.mapper

    def plain(state: bytes) -> bytes:
        return mapper.cipher.decrypt(state) if mapper.cipher else state

    checked = 0
    for n in ns:
        for stored in ledger.recorder.select_events(participant_id(person_id(n)), gt=1):
            again = mapper.to_stored_event(mapper.to_domain_event(stored))
            assert plain(stored.state) == plain(again.state)
            assert (stored.originator_version, stored.topic) == \
                (again.originator_version, again.topic)
            checked += 1
    assert checked == result["events"] > len(lines)
