"""A year's interest credited at a wrong rate is reversed (InterestReversed), never edited:
back-valued to the 31 December it was credited on, so the year nets to nothing in every
statement and balance, and the year is credited again under the rule set corrected. Only
while nothing was computed from it."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.aggregates.participant import Participant, participant_id
from ledger.application import Ledger
from ledger.errors import InvalidInput, Refused
from ledger.postings import INTEREST_CREDITED, Posting, postings_for
from ledger.projections import ProjectionRunner, Views
from tests import test_cli
from tests.conftest import examples
from tests.helpers import contribute, enrol, make_id, refused

RUN = date(2017, 1, 5)


def wrong_rate(ledger: Ledger, year: int, rate: str) -> None:
    """Publish the year's interest rate (from 1 January of the year)."""
    base = ledger.rules_on(date(year, 12, 31)).parameters
    rates = {**base.interest_rates, year: Decimal(rate)}
    ledger.publish_rules(date(year, 1, 1), base.model_copy(update={"interest_rates": rates}),
                         f"rate {rate}", actor="admin")


def test_a_year_at_a_wrong_rate_is_reversed_and_credited_again_as_if_right(
        ledger: Ledger) -> None:
    fixed, right = make_id(1), make_id(2)
    for idn in (fixed, right):
        enrol(ledger, idn, enrol_date=date(2016, 1, 10))
        contribute(ledger, idn, 2016, 50000, value_date=date(2016, 3, 1))
    correct = ledger.rules_on(date(2016, 12, 31)).parameters.interest_rates[2016]
    ledger.credit_interest(year=2016, today=RUN, actor="fin")
    right_interest = ledger.participant(right).interest_years[2016]
    # The office's own mistake for `fixed`: a rate ten times too high, credited and reversed.
    ledger.reverse_interest(id_number=fixed, year=2016, reason="to recredit", actor="fin")
    wrong_rate(ledger, 2016, str(correct * 10))
    ledger.credit_interest(year=2016, today=RUN, actor="fin")
    wrong = ledger.participant(fixed).interest_years[2016]
    assert wrong > right_interest

    out = ledger.reverse_interest(id_number=fixed, year=2016, reason="rate was 10x",
                                  actor="fin")
    assert out["result"] == {"year": 2016, "reversed_fen": wrong}
    events = [e for e in ledger.events.get(participant_id(fixed))
              if isinstance(e, Participant.InterestReversed)]
    last = events[-1]
    assert (last.year, last.amount_fen, last.rate, last.value_date, last.reason) == (
        2016, wrong, correct * 10, date(2016, 12, 31), "rate was 10x")
    assert sorted(postings_for(last)) == sorted([
        Posting(INTEREST_CREDITED, -wrong),
        Posting("2001.interest", wrong, participant_id(fixed))])
    assert 2016 not in ledger.participant(fixed).interest_years

    wrong_rate(ledger, 2016, str(correct))
    assert ledger.credit_interest(year=2016, today=RUN, actor="fin")["credited"] == 1
    a, b = ledger.participant(fixed), ledger.participant(right)
    assert a.sources == b.sources and a.interest_years == b.interest_years
    for day in (date(2016, 12, 31), date(2017, 6, 30)):
        sa, sb = ledger.statement(fixed, as_of=day), ledger.statement(right, as_of=day)
        assert sa["sources_fen"] == sb["sources_fen"]
        assert sa["interest_by_year_fen"] == sb["interest_by_year_fen"] == {
            "2016": right_interest}

    # The views agree with the aggregates, and the interest account holds the right sum.
    ProjectionRunner(ledger).run_until_caught_up()
    views = Views(ledger)
    for idn in (fixed, right):
        assert views.statement(idn) == ledger.statement(idn)
    assert views.balances()["accounts"][INTEREST_CREDITED] == 2 * right_interest


def test_the_later_year_is_reversed_first(ledger: Ledger) -> None:
    idn = make_id(1)
    enrol(ledger, idn, enrol_date=date(2016, 1, 10))
    contribute(ledger, idn, 2016, 50000, value_date=date(2016, 3, 1))
    ledger.credit_interest(year=2017, today=date(2018, 1, 5), actor="fin")  # 2016 and 2017

    def reverse(year: int, reason: str = "wrong rate") -> object:
        return ledger.reverse_interest(id_number=idn, year=year, reason=reason, actor="fin")

    refused(ledger, Refused, "year", "interest for 2017 was credited on the 2016 interest",
            lambda: reverse(2016))
    refused(ledger, Refused, "year", "no interest is credited for 2015", lambda: reverse(2015))
    refused(ledger, InvalidInput, "reason", "must say why", lambda: reverse(2017, " "))
    reverse(2017)
    reverse(2016)
    p = ledger.participant(idn)
    assert p.interest_years == {} and p.sources["interest"] == 0
    assert ledger.credit_interest(year=2017, today=date(2018, 1, 5), actor="fin")[
        "credited"] == 1
    assert sorted(ledger.participant(idn).interest_years) == [2016, 2017]


def test_interest_a_pension_was_computed_on_is_not_reversed(ledger: Ledger) -> None:
    # Of pension age when the scheme began: a pension without contributions.
    old, young = make_id(1, born=date(1950, 3, 15)), make_id(2)
    enrol(ledger, old, enrol_date=date(2009, 12, 1))
    enrol(ledger, young, enrol_date=date(2016, 1, 10))
    contribute(ledger, young, 2016, 50000, value_date=date(2016, 3, 1))
    ledger.credit_interest(year=2016, today=RUN, actor="fin")
    ledger.apply_for_pension(id_number=old, start_month="2017-03", actor="op1")
    refused(ledger, Refused, "participant", "a pension was applied for",
            lambda: ledger.reverse_interest(id_number=old, year=2016, reason="wrong rate",
                                            actor="fin"))
    # The year-wide run reverses everyone else and lists who it could not.
    out = ledger.reverse_interest_year(year=2016, reason="wrong rate", actor="fin")
    assert (out["reversed"], out["refused"]) == (1, 1)
    assert out["refused_listed"] == [{
        "participant_id": str(participant_id(old)),
        "reason": "participant: a pension was applied for on this account; the interest "
                  "can no longer be reversed"}]
    assert 2016 in ledger.participant(old).interest_years
    assert 2016 not in ledger.participant(young).interest_years
    again = ledger.reverse_interest_year(year=2016, reason="wrong rate", actor="fin")
    assert (again["reversed"], again["refused"], again["amount_fen"]) == (0, 1, 0)


def test_reversing_interest_on_the_command_line(tmp_path: Path) -> None:
    db = str(tmp_path / "ledger.db")
    test_cli.ok(db, "init")
    test_cli.enrol(db)
    test_cli.ok(db, "contribute", "--id", test_cli.ID, "--year", "2016", "--tier", "200.00",
                "--amount", "200.00", "--receipt", "R-1", "--date", "2016-03-01")
    credited = test_cli.ok(db, "credit-interest", "--year", "2016", "--today", "2017-01-05")
    out = test_cli.ok(db, "reverse-interest", "--year", "2016", "--reason", "wrong rate",
                      "--all")
    assert (out["reversed"], out["amount_fen"]) == (1, credited["amount_fen"])
    assert "no interest is credited for 2016" in test_cli.refused(
        db, "reverse-interest", "--year", "2016", "--reason", "x", "--id", test_cli.ID)
    assert "exactly one of --id ID or --all" in test_cli.refused(
        db, "reverse-interest", "--year", "2016", "--reason", "x")


@settings(max_examples=examples(15), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wrong_permille=st.integers(1, 80), right_permille=st.integers(1, 80),
       booked=st.dates(date(2016, 1, 1), date(2016, 12, 31)), years=st.integers(1, 3))
def test_reversed_and_credited_again_is_as_if_credited_right(
        tmp_path: Path, wrong_permille: int, right_permille: int, booked: date,
        years: int) -> None:
    # For any wrong and right rates, any booking date and any run of years credited at the
    # wrong rate: reversing them, latest first, and crediting them again at the right rate
    # leaves the account as that of someone credited at the right rate all along.
    ledger = Ledger(str(tmp_path / f"{uuid.uuid4().hex}.db"), cipher_key="")
    try:
        ledger.init()
        fixed, plain = make_id(1), make_id(2)
        last = 2015 + years
        for idn in (fixed, plain):
            enrol(ledger, idn, enrol_date=date(2016, 1, 1))
            contribute(ledger, idn, 2016, 50000, value_date=booked)
        for year in range(2016, last + 1):
            wrong_rate(ledger, year, str(Decimal(right_permille) / 1000))
        ledger.credit_interest(year=last, today=date(last + 1, 1, 5), actor="fin")
        for year in range(last, 2015, -1):  # plain's interest, reversed to be redone
            ledger.reverse_interest(id_number=fixed, year=year, reason="x", actor="fin")
        for year in range(2016, last + 1):
            wrong_rate(ledger, year, str(Decimal(wrong_permille) / 1000))
        ledger.credit_interest(year=last, today=date(last + 1, 1, 5), actor="fin")
        for year in range(last, 2015, -1):
            ledger.reverse_interest(id_number=fixed, year=year, reason="wrong rate",
                                    actor="fin")
        for year in range(2016, last + 1):
            wrong_rate(ledger, year, str(Decimal(right_permille) / 1000))
        ledger.credit_interest(year=last, today=date(last + 1, 1, 5), actor="fin")
        a, b = ledger.participant(fixed), ledger.participant(plain)
        assert a.sources == b.sources
        assert a.interest_years == b.interest_years
        assert ledger.statement(fixed)["interest_by_year_fen"] == \
            ledger.statement(plain)["interest_by_year_fen"]
    finally:
        ledger.close()
