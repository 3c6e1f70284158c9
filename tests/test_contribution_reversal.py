"""A contribution booked in error is reversed (冲正), never edited: ContributionReversed
refunds the amount paid from the income account (the channel it came by), gives back what
the government was to pay on the participant's behalf, and frees the year to be booked
again under a receipt of its own. Only while nothing was built on it."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.aggregates.participant import Participant, participant_id
from ledger.application import Ledger
from ledger.errors import IdempotencyConflict, InvalidInput, Refused
from ledger.postings import Posting, postings_for
from ledger.projections import ProjectionRunner, Views
from ledger.store import InsufficientFunds
from tests import test_cli
from tests.conftest import examples
from tests.helpers import contribute, enrol, make_id, refused

DAY = date(2016, 3, 1)
LATER = date(2016, 3, 9)


def reversal(ledger: Ledger, idn: str) -> Participant.ContributionReversed:
    [e] = [e for e in ledger.events.get(participant_id(idn))
           if isinstance(e, Participant.ContributionReversed)]
    return e


def test_a_reversal_refunds_the_payer_and_frees_the_year(ledger: Ledger) -> None:
    idn = make_id(1)
    enrol(ledger, idn, group="minimum_living")   # half the lowest tier paid on behalf
    contribute(ledger, idn, 2016, 20000, 15000, value_date=DAY, receipt_no="R-1")
    income = ledger.fund_positions()["1001"]

    out = ledger.reverse_contribution(id_number=idn, year=2016, reason="wrong tier",
                                      value_date=LATER, actor="fin")
    assert out["result"] == {"year": 2016, "refunded_fen": 15000, "on_behalf_fen": 5000}
    e = reversal(ledger, idn)
    assert (e.receipt_no, e.amount_fen, e.on_behalf_fen, e.reason) == (
        "R-1", 15000, 5000, "wrong tier")
    pid = participant_id(idn)
    assert sorted(postings_for(e)) == sorted([
        Posting("1001", -15000), Posting("2001.contribution", 15000, pid),
        Posting("1202.on_behalf", -5000), Posting("2001.on_behalf", 5000, pid)])
    assert ledger.fund_positions()["1001"] == income - 15000
    p = ledger.participant(idn)
    assert p.balance_fen == 0 and 2016 not in p.contributed_years

    # The year is booked again, right this time; the old receipt stays used.
    refused(ledger, IdempotencyConflict, "idempotency_key", "the same key",
            lambda: contribute(ledger, idn, 2016, 50000, 45000, value_date=LATER,
                               receipt_no="R-1"))
    contribute(ledger, idn, 2016, 50000, 45000, value_date=LATER, receipt_no="R-2")
    assert ledger.participant(idn).contributed_years[2016] == ("R-2", 50000, False)

    # The views agree with the events: the statement, the year counted once, the balances.
    runner = ProjectionRunner(ledger)
    runner.run_until_caught_up()
    views = Views(ledger)
    statement = views.statement(idn)
    assert statement["contribution_years"] == [2016]
    assert statement["sources_fen"]["contribution"] == 45000
    assert statement["booked_by_year_fen"]["2016"]["contribution"] == 45000
    figures = views.county_report(2016)["county"]
    assert figures["contributing"] == 1
    assert views.balances()["accounts"]["1001"] == ledger.fund_positions()["1001"]


def test_the_county_stops_counting_a_reversed_year(ledger: Ledger) -> None:
    one, two = make_id(1), make_id(2)
    enrol(ledger, one)
    enrol(ledger, two)
    contribute(ledger, one, 2016, 20000, value_date=DAY)
    contribute(ledger, two, 2016, 20000, value_date=DAY)
    runner = ProjectionRunner(ledger)
    runner.run_until_caught_up()
    assert Views(ledger).county_report(2016)["county"]["contributing"] == 2
    ledger.reverse_contribution(id_number=two, year=2016, reason="paid for someone else",
                                value_date=LATER, actor="fin")
    runner.run_until_caught_up()
    assert Views(ledger).county_report(2016)["county"]["contributing"] == 1
    assert Views(ledger).statement(two)["contribution_years"] == []


def test_nothing_built_on_a_contribution_may_be_reversed(ledger: Ledger) -> None:
    idn = make_id(1)
    enrol(ledger, idn)
    contribute(ledger, idn, 2016, 20000, value_date=DAY)

    def reverse(year: int = 2016, reason: str = "wrong tier", on: date = LATER) -> object:
        return ledger.reverse_contribution(id_number=idn, year=year, reason=reason,
                                           value_date=on, actor="fin")

    refused(ledger, Refused, "year", "no contribution is booked for 2015", lambda: reverse(2015))
    refused(ledger, InvalidInput, "reason", "must say why", lambda: reverse(reason=" "))
    refused(ledger, InvalidInput, "value_date", "before the contribution's value date",
            lambda: reverse(on=date(2016, 2, 1)))
    ledger.subsidise(id_number=idn, year=2016, value_date=date(2016, 6, 30), actor="fin")
    refused(ledger, Refused, "year", "the 2016 subsidy was credited", reverse)


def test_a_contribution_with_interest_credited_on_it_is_not_reversed(ledger: Ledger) -> None:
    idn = make_id(1)
    enrol(ledger, idn)
    contribute(ledger, idn, 2016, 20000, value_date=DAY)
    ledger.credit_interest(year=2016, today=date(2017, 1, 5), actor="fin")
    refused(ledger, Refused, "year", "interest for 2016 was credited",
            lambda: ledger.reverse_contribution(id_number=idn, year=2016, reason="x",
                                                value_date=date(2017, 2, 1), actor="fin"))


def test_money_already_swept_cannot_be_refunded_from_the_income_account(
        ledger: Ledger) -> None:
    idn = make_id(1)
    enrol(ledger, idn)
    contribute(ledger, idn, 2016, 20000, value_date=DAY)
    ledger.sweep(amount_fen=20000, value_date=date(2016, 3, 5), reference="SW-1", actor="fin")
    refused(ledger, InsufficientFunds, "amount", "below zero",
            lambda: ledger.reverse_contribution(id_number=idn, year=2016, reason="wrong tier",
                                                value_date=LATER, actor="fin"))


def test_reversing_on_the_command_line(tmp_path: Path) -> None:
    db = str(tmp_path / "ledger.db")
    test_cli.ok(db, "init")
    test_cli.enrol(db)
    test_cli.ok(db, "contribute", "--id", test_cli.ID, "--year", "2016", "--tier", "200.00",
                "--amount", "200.00", "--receipt", "R-1", "--date", DAY.isoformat())
    args = ("reverse-contribution", "--id", test_cli.ID, "--year", "2016", "--reason",
            "entered twice", "--date", LATER.isoformat())
    assert test_cli.ok(db, *args)["result"] == {"year": 2016, "refunded_fen": 20000,
                                                "on_behalf_fen": 0}
    assert "year: no contribution is booked for 2016" in test_cli.refused(db, *args)


def test_a_reversed_contribution_earns_no_interest(ledger: Ledger) -> None:
    # Booked in March, reversed in June and again in the next January, before the year's
    # interest: the mistaken money earns nothing for the months it sat in the account.
    kept, june, january = make_id(1), make_id(2), make_id(3)
    for idn in (kept, june, january):
        enrol(ledger, idn)
        contribute(ledger, idn, 2016, 20000, value_date=DAY)
    ledger.reverse_contribution(id_number=june, year=2016, reason="wrong person",
                                value_date=date(2016, 6, 15), actor="fin")
    ledger.reverse_contribution(id_number=january, year=2016, reason="wrong person",
                                value_date=date(2017, 1, 3), actor="fin")
    ledger.credit_interest(year=2016, today=date(2017, 1, 5), actor="fin")
    interest = {idn: ledger.participant(idn).interest_years[2016]
                for idn in (kept, june, january)}
    assert interest[kept] > 0
    assert interest[june] == interest[january] == 0


def test_a_subsidy_is_reversed_first_then_its_contribution(ledger: Ledger) -> None:
    idn = make_id(1)
    enrol(ledger, idn)
    contribute(ledger, idn, 2016, 20000, value_date=DAY, receipt_no="R-1")
    credited = ledger.subsidise(id_number=idn, year=2016, value_date=date(2016, 6, 30),
                                actor="fin")["amount_fen"]
    refused(ledger, Refused, "year", "reverse it first (reverse-subsidy)",
            lambda: ledger.reverse_contribution(id_number=idn, year=2016, reason="wrong tier",
                                                value_date=date(2016, 7, 1), actor="fin"))

    out = ledger.reverse_subsidy(id_number=idn, year=2016, reason="on a wrong tier",
                                 value_date=date(2016, 7, 1), actor="fin")
    assert out["result"] == {"year": 2016, "reversed_fen": credited}
    reversed_ = [e for e in ledger.events.get(participant_id(idn))
                 if isinstance(e, Participant.SubsidyReversed)]
    assert sum(e.amount_fen for e in reversed_) == credited
    for e in reversed_:
        assert sorted(postings_for(e)) == sorted([
            Posting(f"1202.{e.level}", -e.amount_fen),
            Posting(f"2001.subsidy_{e.level}", e.amount_fen, participant_id(idn))])
    refused(ledger, Refused, "year", "no subsidy is credited for 2016",
            lambda: ledger.reverse_subsidy(id_number=idn, year=2016, reason="again",
                                           value_date=date(2016, 7, 2), actor="fin"))

    # Now the contribution, then the year booked and subsidised again, right this time.
    ledger.reverse_contribution(id_number=idn, year=2016, reason="wrong tier",
                                value_date=date(2016, 7, 1), actor="fin")
    contribute(ledger, idn, 2016, 50000, value_date=date(2016, 7, 2), receipt_no="R-2")
    again = ledger.subsidise(id_number=idn, year=2016, value_date=date(2016, 7, 3),
                             actor="fin")["amount_fen"]
    p = ledger.participant(idn)
    assert p.balance_fen == 50000 + again
    ProjectionRunner(ledger).run_until_caught_up()
    statement = Views(ledger).statement(idn)
    assert statement["balance_fen"] == p.balance_fen
    assert statement["sources_fen"] == p.balance_on(date.max)


def test_a_reversed_subsidy_earns_no_interest_and_is_not_reversed_after_it(
        ledger: Ledger) -> None:
    idn = make_id(1)
    enrol(ledger, idn)
    contribute(ledger, idn, 2016, 20000, value_date=DAY)
    ledger.subsidise(id_number=idn, year=2016, value_date=date(2016, 6, 30), actor="fin")
    ledger.reverse_subsidy(id_number=idn, year=2016, reason="credited twice by hand",
                           value_date=date(2016, 11, 30), actor="fin")
    alone = make_id(2)
    enrol(ledger, alone)
    contribute(ledger, alone, 2016, 20000, value_date=DAY)
    ledger.credit_interest(year=2016, today=date(2017, 1, 5), actor="fin")
    # The same interest as someone never subsidised: the subsidy's months earn nothing.
    assert (ledger.participant(idn).interest_years[2016]
            == ledger.participant(alone).interest_years[2016])

    ledger.subsidise(id_number=alone, year=2016, value_date=date(2017, 1, 6), actor="fin")
    ledger.credit_interest(year=2017, today=date(2018, 1, 5), actor="fin")
    refused(ledger, Refused, "year", "interest for 2017 was credited on this subsidy",
            lambda: ledger.reverse_subsidy(id_number=alone, year=2016, reason="x",
                                           value_date=date(2018, 1, 6), actor="fin"))


@settings(max_examples=examples(15), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wrong=st.sampled_from([10000, 20000, 30000, 50000, 100000]),
       right=st.sampled_from([10000, 20000, 50000, 100000]),
       booked=st.dates(date(2016, 1, 1), date(2016, 6, 30)),
       days_to_reversal=st.integers(0, 150), days_to_rebooking=st.integers(0, 30),
       subsidised=st.booleans())
def test_a_correction_leaves_the_account_as_if_booked_right(
        tmp_path: Path, wrong: int, right: int, booked: date, days_to_reversal: int,
        days_to_rebooking: int, subsidised: bool) -> None:
    # For any mistaken tier and any dates: booking it, (subsidising it,) reversing it all
    # and booking the right tier leaves the account, its sources and its year's interest
    # as those of someone who booked the right tier on the day of the rebooking.
    reversed_on = booked + timedelta(days=days_to_reversal)
    rebooked_on = reversed_on + timedelta(days=days_to_rebooking)
    ledger = Ledger(str(tmp_path / f"{uuid.uuid4().hex}.db"), cipher_key="")
    try:
        ledger.init()
        fixed, plain = make_id(1), make_id(2)
        for idn in (fixed, plain):
            enrol(ledger, idn)
        contribute(ledger, fixed, 2016, wrong, value_date=booked, receipt_no="W")
        if subsidised:
            ledger.subsidise(id_number=fixed, year=2016, value_date=booked, actor="fin")
            ledger.reverse_subsidy(id_number=fixed, year=2016, reason="wrong tier",
                                   value_date=reversed_on, actor="fin")
        ledger.reverse_contribution(id_number=fixed, year=2016, reason="wrong tier",
                                    value_date=reversed_on, actor="fin")
        for idn in (fixed, plain):
            contribute(ledger, idn, 2016, right, value_date=rebooked_on,
                       receipt_no=f"R-{idn[-4:]}")
            if subsidised:
                ledger.subsidise(id_number=idn, year=2016, value_date=rebooked_on,
                                 actor="fin")
        ledger.credit_interest(year=2016, today=date(2017, 1, 5), actor="fin")
        a, b = ledger.participant(fixed), ledger.participant(plain)
        assert a.sources == b.sources
        assert a.interest_years == b.interest_years
        assert a.contributed_years[2016][1:] == b.contributed_years[2016][1:]
        assert a.subsidised_years == b.subsidised_years
    finally:
        ledger.close()
