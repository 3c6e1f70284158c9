"""audit match: another register's list (cremations, prisons, the employee scheme's
pensioners) matched against the ledger by ID number (数据比对). Every disagreement is a
finding, with the months paid since and what they came to; nothing is stored."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from ledger.aggregates.participant import Participant
from ledger.application import Ledger
from ledger.cross_check import cross_check
from ledger.errors import ImportRejected, InvalidInput
from tests import test_cli
from tests.helpers import contribute, enrol, make_id
from tests.test_payout_support import OPERATOR, pay, pension_events, transitional, treasury

MONTHS = ("2020-04", "2020-05", "2020-06")


def listing(tmp_path: Path, *lines: str, name: str = "list.csv") -> str:
    path = tmp_path / name
    path.write_text("id_number,date,source\n" + "".join(f"{line}\n" for line in lines),
                    encoding="utf-8")
    return str(path)


def paid_for(ledger: Ledger, idn: str, months: list[str]) -> int:
    """What the monthly runs paid for these months, one month a payment."""
    return sum(e.amount_fen for e in pension_events(ledger, idn)
               if isinstance(e, Participant.PensionPaid) and set(e.months) <= set(months))


@pytest.fixture
def paid_county(ledger: Ledger, tmp_path: Path) -> tuple[Ledger, list[str]]:
    treasury(ledger)
    people = [transitional(ledger, n) for n in (1, 2, 3)]
    for period in MONTHS:
        pay(ledger, period, tmp_path)
    return ledger, people


def test_deaths_never_reported_are_found_with_what_was_paid_since(
        paid_county: tuple[Ledger, list[str]], tmp_path: Path) -> None:
    ledger, (unreported, known, other_date) = paid_county
    ledger.decease(id_number=known, date_of_death=date(2020, 6, 25),
                   reported_on=date(2020, 7, 1), actor=OPERATOR)
    ledger.decease(id_number=other_date, date_of_death=date(2020, 6, 2),
                   reported_on=date(2020, 7, 1), actor=OPERATOR)
    contributor = make_id(9)
    enrol(ledger, contributor)
    contribute(ledger, contributor, 2019, 20000)
    stranger = make_id(77, born=date(1940, 1, 1))
    before = ledger.recorder.max_notification_id()
    found = cross_check(ledger, listing(
        tmp_path, f"{unreported},2020-04-20,火化", f"{known},2020-06-25,火化",
        f"{other_date},2020-04-30,公安", f"{stranger},2020-05-01,火化",
        f"{contributor},2020-05-05,"), "deaths")
    assert ledger.recorder.max_notification_id() == before  # nothing stored
    assert found["counts"] == {"lines": 5, "not_participants": 1, "consistent": 1,
                               "findings": 3}
    by_line = {f["line"]: f for f in found["findings"]}
    first = by_line[2]
    assert (first["finding"], first["id_number"], first["status"], first["date_of_death"],
            first["source"], first["months_paid_since"]) == (
        "death_not_recorded", unreported, "pensioner", "2020-04-20", "火化",
        ["2020-05", "2020-06"])
    # Exactly what the runs paid for May and June.
    assert first["paid_since_fen"] == paid_for(ledger, unreported, ["2020-05", "2020-06"]) > 0
    differs = by_line[4]
    assert (differs["finding"], differs["recorded_date_of_death"],
            differs["months_paid_since"]) == ("death_date_differs", "2020-06-02",
                                              ["2020-05", "2020-06"])
    assert by_line[6]["finding"] == "death_not_recorded"
    assert (by_line[6]["months_paid_since"], by_line[6]["paid_since_fen"]) == ([], 0)
    assert found["paid_since_fen"] == first["paid_since_fen"] + differs["paid_since_fen"]

    # Recorded, the unreported death is no longer a finding.
    ledger.decease(id_number=unreported, date_of_death=date(2020, 4, 20),
                   reported_on=date(2020, 7, 2), actor=OPERATOR)
    again = cross_check(ledger, listing(tmp_path, f"{unreported},2020-04-20,火化"), "deaths")
    assert again["counts"]["consistent"] == 1 and again["findings"] == []


def test_pensions_paid_in_prison_and_beside_the_employee_scheme_are_found(
        sqlite_ledger: Ledger, tmp_path: Path) -> None:
    ledger = sqlite_ledger
    treasury(ledger)
    prisoner, double = transitional(ledger, 1), transitional(ledger, 2)
    enrolled_twice = make_id(9)
    enrol(ledger, enrolled_twice)
    for period in MONTHS:
        pay(ledger, period, tmp_path)
    jailed = cross_check(ledger, listing(tmp_path, f"{prisoner},2020-05-10,监狱"), "imprisoned")
    [f] = jailed["findings"]
    assert (f["finding"], f["months_paid_since"], f["imprisoned_from"]) == (
        "paid_while_imprisoned", ["2020-06"], "2020-05-10")
    assert f["paid_since_fen"] == paid_for(ledger, prisoner, ["2020-06"])
    ledger.suspend(id_number=prisoner, reason_code="imprisoned", from_month="2020-07",
                   actor=OPERATOR)
    assert cross_check(ledger, listing(tmp_path, f"{prisoner},2020-05-10,监狱"),
                       "imprisoned")["counts"]["consistent"] == 1

    both = cross_check(ledger, listing(tmp_path, f"{double},2020-03-15,职工养老",
                                       f"{enrolled_twice},2020-01-01,职工养老"),
                       "employee_pension")
    kinds = {f["id_number"]: (f["finding"], f["months_paid_since"]) for f in both["findings"]}
    assert kinds == {double: ("double_receipt", list(MONTHS)),
                     enrolled_twice: ("double_enrolment", [])}
    ledger.terminate(id_number=enrolled_twice, reason_code="employee_scheme",
                     effective_date=date(2020, 7, 1), actor=OPERATOR)
    after = cross_check(ledger, listing(tmp_path, f"{enrolled_twice},2020-01-01,职工养老"),
                        "employee_pension")
    assert after["counts"]["consistent"] == 1


def test_a_list_with_bad_lines_is_refused_whole_naming_each(
        sqlite_ledger: Ledger, tmp_path: Path) -> None:
    good = make_id(1)
    bad_check_digit = good[:-1] + ("0" if good[-1] != "0" else "1")
    path = listing(tmp_path, f"{good},2020-04-20,火化", f"{bad_check_digit},2020-04-20,火化",
                   f"{make_id(2)},2020-02-30,火化", f"{good},2020-05-01,公安", "a,b")
    with pytest.raises(ImportRejected) as e:
        cross_check(sqlite_ledger, path, "deaths")
    lines = [line for line, _ in e.value.problems]
    assert lines == [3, 4, 5, 6]
    messages = " | ".join(m for _, m in e.value.problems)
    assert "check digit" in messages and "not a real date" in messages
    assert "is already on line 2" in messages and "csv: 2 column(s)" in messages
    with pytest.raises(InvalidInput, match="kind"):
        cross_check(sqlite_ledger, listing(tmp_path, f"{good},2020-04-20,x"), "births")


def test_matching_on_the_command_line(tmp_path: Path) -> None:
    db = str(tmp_path / "ledger.db")
    test_cli.ok(db, "init")
    test_cli.enrol(db)
    path = listing(tmp_path, f"{test_cli.ID},2020-04-20,火化")
    out = test_cli.ok(db, "audit", "match", path, "--kind", "deaths")
    [f] = out["findings"]
    assert f["finding"] == "death_not_recorded"
    assert f["id_number"] == test_cli.ID[:6] + "********" + test_cli.ID[-4:]
    table = test_cli.cli(db, "audit", "match", path, "--kind", "deaths")
    assert table.exit_code == 0 and "1 listed, 1 findings" in table.stdout
    bad = listing(tmp_path, "x,2020-04-20,", name="bad.csv")
    assert "line 2" in test_cli.refused(db, "audit", "match", bad, "--kind", "deaths")
    assert json.loads(test_cli.cli(db, "--json", "audit", "match", path, "--kind",
                                   "deaths").stdout)["counts"]["findings"] == 1
