"""A rule version that raises the basic pension of months already paid (a raise announced
mid-year and back-dated to January, as most are): the next run tops up each month paid to
what the rules now give (调待补发), beside the month it pays. What each month was paid is
known month by month, so a top-up that comes back from the bank is owed again, and no
month is topped up twice. A version that lowers months already paid is not recovered by
the run: the run lists those pensioners for the office to assess."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from ledger.aggregates.participant import BankAccount, Participant
from ledger.aggregates.payout_batch import BatchLine, PayoutBatch
from ledger.application import Ledger
from ledger.errors import Refused
from ledger.payout import facts_of, load_facts
from payout_engine import run
from tests.test_payout_cli import cli
from tests.test_payout_support import (
    APPROVER,
    FINANCE,
    OPERATOR,
    county_raise,
    draft,
    net_paid_months,
    pay,
    pid,
    send,
    transitional,
    treasury,
)

# A transitional pensioner born 1950-03 is 70 from April 2020: the sample county's basic
# pension of 2020 (central 93 + province 30 + city 10 + county 10 yuan) and the age-70 extra.
BASIC = 9300 + 5000 + 1000
RAISE = 800


def line_of(batch: PayoutBatch, idn: str) -> BatchLine:
    lines = [line for line in batch.lines.values() if line.participant_id == pid(idn)]
    assert len(lines) == 1
    return lines[0]


def participant(ledger: Ledger, idn: str) -> Participant:
    p: Participant = ledger.repository.get(pid(idn))
    return p


def register_is_a_replay(ledger: Ledger, idn: str) -> None:
    """The pensioner register (which funding writes without the aggregate) holds what a
    replay of the participant's events gives."""
    row = next(r for r in ledger.queries.pensioner_rows(10_000) if r[0] == pid(idn))
    stored = load_facts(row[0], row[1], ledger.open_personal(row[2]))
    assert stored == facts_of(participant(ledger, idn))


def reason(batch: PayoutBatch, name: str) -> dict[str, object]:
    return next(r for r in batch.comparison["reasons"] if r["reason"] == name)


def paid_april_to_june(ledger: Ledger, tmp_path: Path) -> str:
    """A pensioner from April 2020, paid April, May and June: their resident ID."""
    treasury(ledger)
    idn = transitional(ledger, 1)
    for month in ("2020-04", "2020-05", "2020-06"):
        pay(ledger, month, tmp_path)
    return idn


def test_a_raise_back_dated_over_months_paid_is_paid_with_the_next_month(
        ledger: Ledger, tmp_path: Path) -> None:
    a = paid_april_to_june(ledger, tmp_path)
    county_raise(ledger, date(2020, 5, 1), RAISE, "county raise from May, announced in July")

    july, files = send(ledger, "2020-07", tmp_path, file_format="pain001")
    line = line_of(july, a)
    assert line.months == ["2020-07"]
    assert line.rerated_fen == {"2020-05": RAISE, "2020-06": RAISE}
    assert line.basic_fen == (BASIC + RAISE) + 2 * RAISE
    assert line.amount_fen == line.basic_fen
    assert line.rule_versions[-1].endswith("@2020-05-01")
    assert line.rated_version == len(ledger.ruleset().versions)
    # The payee's statement says what the money is; the change is put down to its reason.
    assert "养老金 2020-07 含调待补发" in files[0].read_text(encoding="utf-8")
    assert reason(july, "rerated_paid")["amount_fen"] == line.amount_fen - BASIC

    # Funded: each month now holds exactly the basic pension the rules give it.
    p = participant(ledger, a)
    assert p.basic_paid == {"2020-04": BASIC, "2020-05": BASIC + RAISE,
                            "2020-06": BASIC + RAISE, "2020-07": BASIC + RAISE}
    assert p.rated_version == len(ledger.ruleset().versions)
    register_is_a_replay(ledger, a)

    # Nothing is topped up twice: August pays August alone.
    august = draft(ledger, "2020-08")
    assert line_of(august, a).rerated_fen == {}
    assert line_of(august, a).basic_fen == BASIC + RAISE
    assert reason(august, "rerated_ended")["amount_fen"] == -2 * RAISE
    assert net_paid_months(ledger, a) == ["2020-04", "2020-05", "2020-06", "2020-07"]


def test_top_ups_the_bank_sent_back_are_owed_again(ledger: Ledger, tmp_path: Path) -> None:
    treasury(ledger)
    a = transitional(ledger, 1)
    b = transitional(ledger, 2)
    for month in ("2020-04", "2020-05", "2020-06"):
        pay(ledger, month, tmp_path)
    county_raise(ledger, date(2020, 5, 1), RAISE, "county raise from May")
    pay(ledger, "2020-07", tmp_path, failures={a: "AC04"})

    # The failed payment took its month and its top-ups back; the other one stands.
    p = participant(ledger, a)
    assert p.basic_paid == {"2020-04": BASIC, "2020-05": BASIC, "2020-06": BASIC}
    assert p.rated_version == 0 and p.payment_hold == "AC04"
    assert participant(ledger, b).basic_paid["2020-06"] == BASIC + RAISE
    register_is_a_replay(ledger, a)

    ledger.change_bank_details(id_number=a, bank=BankAccount(
        account_name="领取人1", account_number="6222999900000001", bank_code="102"),
        actor=OPERATOR)
    august = pay(ledger, "2020-08", tmp_path)
    line = line_of(august, a)
    assert line.months == ["2020-07", "2020-08"]
    assert line.basic_by_month == {"2020-07": BASIC + RAISE, "2020-08": BASIC + RAISE}
    assert line.rerated_fen == {"2020-05": RAISE, "2020-06": RAISE}
    assert line_of(august, b).rerated_fen == {}
    assert participant(ledger, a).basic_paid == {
        "2020-04": BASIC, **dict.fromkeys(["2020-05", "2020-06", "2020-07", "2020-08"],
                                          BASIC + RAISE)}
    register_is_a_replay(ledger, a)


def test_a_batch_drafted_before_a_back_dated_raise_is_not_funded(
        ledger: Ledger, tmp_path: Path) -> None:
    treasury(ledger)
    transitional(ledger, 1)
    for month in ("2020-04", "2020-05"):
        pay(ledger, month, tmp_path)
    june = draft(ledger, "2020-06")
    run.approve(ledger, june.id, june.manifest_sha256, APPROVER)
    county_raise(ledger, date(2020, 4, 1), RAISE, "county raise from April")
    with pytest.raises(Refused, match=r"no longer owed.*now owed"):
        run.fund(ledger, june.id, value_date=date(2020, 6, 1), actor=FINANCE)


def test_a_version_lowering_months_paid_is_listed_not_recovered(
        ledger: Ledger, tmp_path: Path) -> None:
    a = paid_april_to_june(ledger, tmp_path)
    rated = participant(ledger, a).rated_version
    county_raise(ledger, date(2020, 5, 1), -300, "county part cut from May, in error")

    july = pay(ledger, "2020-07", tmp_path)
    line = line_of(july, a)
    assert line.rerated_fen == {} and line.basic_fen == BASIC - 300
    assert july.comparison["paid_above_the_rules"] == {
        "pensioners": 1, "amount_fen": 600, "participant_ids": [str(pid(a))]}
    # Still rated as before: every later run finds the same months and lists them again.
    assert participant(ledger, a).rated_version == rated
    assert participant(ledger, a).basic_paid["2020-05"] == BASIC
    assert draft(ledger, "2020-08").comparison["paid_above_the_rules"]["amount_fen"] == 600


def test_a_pensioner_who_died_before_the_top_ups_were_paid_leaves_them_to_the_heirs(
        ledger: Ledger, tmp_path: Path) -> None:
    a = paid_april_to_june(ledger, tmp_path)
    county_raise(ledger, date(2020, 5, 1), RAISE, "county raise from May")
    result = ledger.decease(id_number=a, date_of_death=date(2020, 6, 20),
                            reported_on=date(2020, 7, 2), actor=OPERATOR)
    # Every month to the month of death was paid; their top-ups are owed to the heirs.
    assert result["result"]["owed_at_death"] == {"months": [], "amount_fen": 2 * RAISE}
    p = participant(ledger, a)
    assert p.payables["pension_owed_at_death"].amount_fen == 2 * RAISE
    assert p.basic_paid["2020-05"] == p.basic_paid["2020-06"] == BASIC + RAISE
    assert p.basic_paid["2020-04"] == BASIC


def test_payout_show_says_what_was_paid_above_the_rules(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.db")
    ledger = Ledger(path, cipher_key="")
    ledger.init()
    treasury(ledger)
    transitional(ledger, 1)
    for month in ("2020-04", "2020-05"):
        pay(ledger, month, tmp_path)
    county_raise(ledger, date(2020, 4, 1), -250, "county part cut from April, in error")
    draft(ledger, "2020-06")
    ledger.close()
    shown = cli(path, OPERATOR, "show", "2020-06/1")
    assert shown.exit_code == 0, (shown.stdout, shown.stderr)
    assert ("Paid above the rules as they now stand: 1 pensioner(s), 5.00 yuan, not "
            "recovered by the run") in " ".join(shown.stdout.split())
