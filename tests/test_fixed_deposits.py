"""The fiscal special account's fixed deposits (定期存款): placed from it, paid back into it with
their interest, never anywhere else; listed as they stood on any date; in the balances."""

from __future__ import annotations

import os
import tempfile
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.aggregates.fund import (
    Fund,
    add_months,
    interest_at_maturity_fen,
    interest_ceiling_fen,
    parse_rate_percent,
)
from ledger.application import Ledger
from ledger.errors import IdempotencyConflict, InvalidInput, Refused
from ledger.postings import FISCAL, FIXED_DEPOSITS, INTEREST_EARNED, postings_for
from ledger.projections import ProjectionRunner, Views
from tests.conftest import examples
from tests.helpers import refused
from tests.test_cli import ok
from tests.test_cli import refused as cli_refused

RATE = Decimal("0.0175")  # 1.75% a year


def fiscal_holds(ledger: Ledger, amount_fen: int, on: date = date(2024, 1, 5)) -> None:
    ledger.receive_treasury_funds(amount_fen=amount_fen, level="central",
                                  purpose="basic_pension", value_date=on,
                                  reference=f"T-{on}-{amount_fen}", actor="fin")


def place(ledger: Ledger, deposit_no: str = "D-1", amount_fen: int = 60_000_000,
          term_months: int = 12, on: date = date(2024, 1, 10), reference: str = "P-1",
          **kw: Any) -> dict[str, Any]:
    return ledger.place_fixed_deposit(deposit_no=deposit_no, amount_fen=amount_fen,
                                      term_months=term_months,
                                      annual_rate=kw.pop("annual_rate", RATE),
                                      value_date=on, reference=reference, actor="fin", **kw)


def withdraw(ledger: Ledger, deposit_no: str = "D-1", interest_fen: int = 1_050_000,
             on: date = date(2025, 1, 10), reference: str = "W-1",
             **kw: Any) -> dict[str, Any]:
    return ledger.withdraw_fixed_deposit(deposit_no=deposit_no, interest_fen=interest_fen,
                                         value_date=on, reference=reference, actor="fin", **kw)


def test_a_deposit_moves_money_from_the_fiscal_account_and_back_with_its_interest(
        ledger: Ledger) -> None:
    fiscal_holds(ledger, 100_000_000)
    placed = place(ledger)
    assert placed == {
        "deposit_no": "D-1", "principal_fen": 60_000_000, "placed_on": "2024-01-10",
        "term_months": 12, "rate_percent": "1.75", "maturity_date": "2025-01-10",
        "interest_at_maturity_fen": 1_050_000, "withdrawn_on": None, "interest_fen": None,
        "early": False}
    positions = ledger.fund_positions()
    assert (positions[FISCAL], positions[FIXED_DEPOSITS]) == (40_000_000, 60_000_000)

    back = withdraw(ledger)
    assert (back["withdrawn_on"], back["interest_fen"], back["early"]) == (
        "2025-01-10", 1_050_000, False)
    positions = ledger.fund_positions()
    assert (positions[FISCAL], positions[FIXED_DEPOSITS]) == (101_050_000, 0)
    assert ledger.fixed_deposits() == []


def test_the_postings_name_the_deposit_account_and_the_interest_earned(ledger: Ledger) -> None:
    fiscal_holds(ledger, 100_000_000)
    place(ledger)
    withdraw(ledger, interest_fen=1_049_999)
    events = [e for e in ledger.events.get(Fund.id_for("county"))
              if type(e).__name__.startswith("FixedDeposit")]
    placed, withdrawn = (sorted((p.account, p.amount_fen) for p in postings_for(e))
                         for e in events)
    assert placed == [(FISCAL, -60_000_000), (FIXED_DEPOSITS, 60_000_000)]
    assert withdrawn == [(FISCAL, 61_049_999), (FIXED_DEPOSITS, -60_000_000),
                         (INTEREST_EARNED, -1_049_999)]


def test_a_deposit_withdrawn_before_maturity_is_marked_early(ledger: Ledger) -> None:
    fiscal_holds(ledger, 100_000_000)
    place(ledger, term_months=36)
    back = withdraw(ledger, interest_fen=52_000, on=date(2024, 7, 1))
    assert (back["maturity_date"], back["early"]) == ("2027-01-10", True)
    # Interest is whatever the bank paid, down to nothing.
    place(ledger, deposit_no="D-2", term_months=3, reference="P-2")
    assert withdraw(ledger, deposit_no="D-2", interest_fen=0, on=date(2024, 1, 10),
                    reference="W-2")["early"] is True


def test_money_in_fixed_deposits_cannot_be_appropriated(ledger: Ledger) -> None:
    fiscal_holds(ledger, 100_000_000)
    place(ledger, amount_fen=90_000_000)
    refused(ledger, Refused, "amount", "would take the fiscal special account (财政专户) below "
            "zero", lambda: ledger.appropriate(amount_fen=10_000_001,
                                               value_date=date(2024, 2, 1), reference="A-1",
                                               actor="fin"))
    ledger.appropriate(amount_fen=10_000_000, value_date=date(2024, 2, 1), reference="A-1",
                       actor="fin")


@pytest.mark.parametrize(("change", "error", "field", "rule"), [
    ({"amount_fen": 100_000_001}, Refused, "amount",
     "would take the fiscal special account (财政专户) below zero"),
    ({"amount_fen": 0}, InvalidInput, "amount", "must be greater than zero"),
    ({"term_months": 7}, InvalidInput, "term_months", "must be one of 3, 6, 12, 24, 36, 60"),
    ({"deposit_no": "  "}, InvalidInput, "deposit_no", "must be 1 to 32 characters"),
    ({"deposit_no": "D" * 33}, InvalidInput, "deposit_no", "must be 1 to 32 characters"),
    ({"deposit_no": "D-0"}, Refused, "deposit_no", "fixed deposit D-0 is already booked"),
    # (The default idempotency key is the reference: a reused reference under it is a
    # conflict; under a key of its own, the fund refuses the reference.)
    ({"reference": "P-0", "idempotency_key": "k"}, Refused, "reference",
     "bank reference P-0 is already booked"),
])
def test_a_bad_placement_is_refused_and_nothing_is_stored(
        ledger: Ledger, change: dict[str, Any], error: type[Exception], field: str,
        rule: str) -> None:
    fiscal_holds(ledger, 101_000_000)
    place(ledger, deposit_no="D-0", amount_fen=1_000_000, reference="P-0")
    kwargs = {"deposit_no": "D-1", "amount_fen": 50_000_000, "reference": "P-1", **change}
    refused(ledger, error, field, rule, lambda: place(ledger, **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize(("change", "error", "field", "rule"), [
    ({"deposit_no": "D-9"}, Refused, "deposit_no", "no fixed deposit D-9 was placed"),
    ({"on": date(2024, 1, 9)}, Refused, "value_date",
     "2024-01-09 is before the deposit was placed (2024-01-10)"),
    ({"interest_fen": -1}, InvalidInput, "interest", "must not be negative"),
    ({"reference": "P-1", "idempotency_key": "k"}, Refused, "reference",
     "bank reference P-1 is already booked"),
    # An extra digit read off the slip: 10% a year on 600,000.00 for 366 days is 60,164.39.
    ({"interest_fen": 10_500_000}, Refused, "interest",
     "105000.00 yuan is more than 10 percent a year on the principal for the 366 days held "
     "(60164.39 yuan)"),
])
def test_a_bad_withdrawal_is_refused_and_nothing_is_stored(
        ledger: Ledger, change: dict[str, Any], error: type[Exception], field: str,
        rule: str) -> None:
    fiscal_holds(ledger, 100_000_000)
    place(ledger)
    refused(ledger, error, field, rule, lambda: withdraw(ledger, **change))


def test_a_deposit_is_withdrawn_once(ledger: Ledger) -> None:
    fiscal_holds(ledger, 100_000_000)
    place(ledger)
    withdraw(ledger)
    refused(ledger, Refused, "deposit_no", "fixed deposit D-1 was already withdrawn on "
            "2025-01-10", lambda: withdraw(ledger, reference="W-2"))


def test_a_retry_with_the_same_key_places_the_deposit_once(ledger: Ledger) -> None:
    fiscal_holds(ledger, 100_000_000)
    first = place(ledger, idempotency_key="k-1")
    again = place(ledger, idempotency_key="k-1")
    assert again == {**first, "replayed": True}
    assert ledger.fund_positions()[FIXED_DEPOSITS] == 60_000_000
    with pytest.raises(IdempotencyConflict):
        place(ledger, idempotency_key="k-1", amount_fen=1)


def test_the_deposits_are_listed_as_they_stood_on_any_date(ledger: Ledger) -> None:
    fiscal_holds(ledger, 100_000_000)
    place(ledger, deposit_no="D-1", term_months=12, on=date(2024, 1, 10), reference="P-1")
    place(ledger, deposit_no="D-2", amount_fen=30_000_000, term_months=3,
          on=date(2024, 2, 1), reference="P-2")
    withdraw(ledger, deposit_no="D-2", interest_fen=131_250, on=date(2024, 5, 1),
             reference="W-2")

    def held(on: date | None) -> list[tuple[str, Any]]:
        return [(d["deposit_no"], d["withdrawn_on"]) for d in ledger.fixed_deposits(on)]

    assert held(date(2024, 1, 9)) == []
    assert held(date(2024, 1, 10)) == [("D-1", None)]
    # Soonest maturity first; the withdrawal on 1 May is not known as of April.
    assert held(date(2024, 4, 30)) == [("D-2", None), ("D-1", None)]
    assert held(date(2024, 5, 1)) == [("D-1", None)]  # withdrawn that day
    assert held(None) == [("D-1", None)]


def test_a_rate_out_of_range_is_refused_by_the_fund_too(ledger: Ledger) -> None:
    fiscal_holds(ledger, 100_000_000)
    for rate in (Decimal("0"), Decimal("0.11")):
        refused(ledger, InvalidInput, "rate_percent", "above 0 and at most 0.1",
                lambda r=rate: place(ledger, annual_rate=r))


@pytest.mark.parametrize(("text", "rate"), [
    ("1.75", Decimal("0.0175")), ("2", Decimal("0.02")), (" 1.5% ", Decimal("0.015")),
    ("0.0125", Decimal("0.000125")), ("10", Decimal("0.1")),
])
def test_a_rate_is_given_in_percent(text: str, rate: Decimal) -> None:
    assert parse_rate_percent(text) == rate


@pytest.mark.parametrize(("text", "rule"), [
    (1.75, "a rate must be a decimal string"), (2, "a rate must be a decimal string"),
    ("17.5", "at most 10 percent a year"), ("0", "above 0"), ("-1.5", "above 0"),
    ("NaN", "above 0"), ("1.23456", "more than 4 decimal places"),
    ("1,75", "is not a rate in percent"),
])
def test_a_bad_rate_names_the_field_and_the_rule(text: Any, rule: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_rate_percent(text)
    assert e.value.field == "rate_percent" and rule in e.value.rule


@pytest.mark.parametrize(("placed", "months", "matures"), [
    (date(2024, 1, 10), 12, date(2025, 1, 10)),
    (date(2024, 8, 31), 6, date(2025, 2, 28)),
    (date(2023, 8, 31), 6, date(2024, 2, 29)),
    (date(2024, 11, 30), 3, date(2025, 2, 28)),
    (date(2024, 12, 15), 60, date(2029, 12, 15)),
])
def test_a_deposit_matures_the_same_day_months_later_or_the_months_last(
        placed: date, months: int, matures: date) -> None:
    assert add_months(placed, months) == matures


def test_the_interest_at_maturity_is_simple_interest_rounded_half_up() -> None:
    assert interest_at_maturity_fen(60_000_000, Decimal("0.0175"), 12) == 1_050_000
    assert interest_at_maturity_fen(30_000_000, Decimal("0.0175"), 3) == 131_250
    # 1,000.01 yuan at 1.35% for 6 months: 675.00675 fen.
    assert interest_at_maturity_fen(100_001, Decimal("0.0135"), 6) == 675
    assert interest_at_maturity_fen(100, Decimal("0.01"), 6) == 1  # 0.5 fen, half up


def test_the_balances_view_shows_the_deposits_on_any_date(ledger: Ledger) -> None:
    fiscal_holds(ledger, 100_000_000)
    place(ledger)
    withdraw(ledger)
    ProjectionRunner(ledger).run_until_caught_up()
    views = Views(ledger)
    held = views.fund_balances(date(2024, 6, 30))
    assert (held["fiscal_fen"], held["fixed_deposits_fen"]) == (40_000_000, 60_000_000)
    back = views.fund_balances(date(2025, 1, 10))
    assert (back["fiscal_fen"], back["fixed_deposits_fen"]) == (101_050_000, 0)


deposit_ops = st.lists(st.tuples(
    st.integers(1, 40_000_000),               # principal, fen
    st.integers(0, 400),                      # placed, days after 2024-01-01
    st.sampled_from([3, 6, 12]),              # term
    st.none() | st.integers(0, 500),          # withdrawn, days after placing
    st.integers(0, 1_000_000)), min_size=1, max_size=6)   # interest, fen


@settings(max_examples=examples(25), deadline=None)
@given(deposit_ops)
def test_the_deposits_held_on_a_date_are_the_balance_of_the_deposit_account(
        ops: list[tuple[int, int, int, int | None, int]]) -> None:
    """For any deposits placed and withdrawn, on every date: the listed principals add up to
    the fixed-deposit account's balance as of that date, and the fiscal account and its
    deposits together hold what came in plus the interest paid by then."""
    start, came_in = date(2024, 1, 1), 240_000_000   # room for every deposit at once
    # What a bank could have paid: at most 10% a year for the days held.
    ops = [(p, d, t, w, i if w is None else min(i, interest_ceiling_fen(p, w)))
           for p, d, t, w, i in ops]
    with tempfile.TemporaryDirectory() as folder:
        ledger = Ledger(os.path.join(folder, "ledger.db"), cipher_key="")
        try:
            ledger.init()
            fiscal_holds(ledger, came_in, start)
            for i, (principal, placed, term, withdrawn, interest) in enumerate(ops):
                place(ledger, deposit_no=f"D-{i}", amount_fen=principal, term_months=term,
                      on=start + timedelta(placed), reference=f"P-{i}")
                if withdrawn is not None:
                    withdraw(ledger, deposit_no=f"D-{i}", interest_fen=interest,
                             on=start + timedelta(placed + withdrawn), reference=f"W-{i}")
            ProjectionRunner(ledger).run_until_caught_up()
            views = Views(ledger)
            for days in range(0, 1000, 37):
                on = start + timedelta(days)
                balances = views.fund_balances(on)
                listed = ledger.fixed_deposits(on)
                assert sum(d["principal_fen"] for d in listed) == \
                    balances["fixed_deposits_fen"]
                interest_by_then = sum(i for _, p, _, w, i in ops
                                       if w is not None and p + w <= days)
                assert balances["fiscal_fen"] + balances["fixed_deposits_fen"] == \
                    came_in + interest_by_then
            held_now = sum(p for p, _, _, w, _ in ops if w is None)
            assert ledger.fund_positions()[FIXED_DEPOSITS] == held_now
        finally:
            ledger.close()


def test_the_command_line_places_lists_and_withdraws(tmp_path: Any) -> None:
    db = str(tmp_path / "ledger.db")
    ok(db, "init")
    ok(db, "treasury", "--amount", "1000000.00", "--level", "central", "--purpose",
       "basic_pension", "--date", "2024-01-05", "--reference", "T-1")
    placed = ok(db, "deposit", "place", "D-1", "--amount", "600000.00", "--term-months", "12",
                "--rate-percent", "1.75", "--date", "2024-01-10", "--reference", "P-1")
    assert (placed["principal_fen"], placed["interest_at_maturity_fen"]) == (
        60_000_000, 1_050_000)
    listed = ok(db, "deposit", "list", "--as-of", "2024-06-30")
    assert [d["deposit_no"] for d in listed["deposits"]] == ["D-1"]
    assert listed["total_fen"] == 60_000_000
    assert "rate_percent: '1.7.5' is not a rate" in cli_refused(
        db, "deposit", "place", "D-2", "--amount", "1.00", "--term-months", "12",
        "--rate-percent", "1.7.5", "--date", "2024-01-10", "--reference", "P-2")
    assert "interest: amount must not be negative" in cli_refused(
        db, "deposit", "withdraw", "D-1", "--interest", "-1.00", "--date", "2025-01-10",
        "--reference", "W-1")
    back = ok(db, "deposit", "withdraw", "D-1", "--interest", "10500.00", "--date",
              "2025-01-10", "--reference", "W-1")
    assert (back["interest_fen"], back["early"]) == (1_050_000, False)
    assert ok(db, "deposit", "list")["deposits"] == []


def test_a_deposit_left_past_maturity_is_an_anomaly_until_withdrawn(ledger: Ledger) -> None:
    from ledger.audit import anomalies

    fiscal_holds(ledger, 100_000_000)
    place(ledger)   # matures 2025-01-10
    assert anomalies(ledger, date(2025, 1, 10))["counts"]["deposit_not_withdrawn"] == 0
    found = anomalies(ledger, date(2025, 3, 1))
    assert found["anomalies"]["deposit_not_withdrawn"] == [{
        "deposit_no": "D-1", "principal_fen": 60_000_000, "maturity_date": "2025-01-10",
        "days_past_maturity": 50}]
    withdraw(ledger, on=date(2025, 2, 1))  # late, value-dated when the bank paid it back
    assert anomalies(ledger, date(2025, 3, 1))["counts"]["deposit_not_withdrawn"] == 0
    # As of a day it was still held past maturity, it still counts.
    assert anomalies(ledger, date(2025, 1, 20))["counts"]["deposit_not_withdrawn"] == 1
