"""Year-end interest (记账利息): pro rata by months, exact fractions, one rounding."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from ledger.aggregates.participant import Booking
from ledger.application import Ledger
from ledger.errors import Refused
from ledger.interest import interest_for_year, months_earning
from ledger.rules import Parameters, sample_county
from tests.helpers import contribute, enrol, make_id


def params(**changes: Any) -> Parameters:
    return sample_county()[0][1].model_copy(update=changes)


def booked(on: date, amount_fen: int) -> Booking:
    return Booking(value_date=on, source="contribution", amount_fen=amount_fen, kind="contribution")


def store_state(ledger: Ledger) -> tuple[Any, ...]:
    return (ledger.recorder.max_notification_id(), ledger.fund_positions(),
            len(ledger.queries.chain_blocks()))


# ---- months ---------------------------------------------------------------------------

@pytest.mark.parametrize("month", range(1, 13))
def test_money_booked_in_month_m_earns_12_minus_m_months_from_the_next_month(month: int) -> None:
    assert months_earning(date(2020, month, 15), 2020, "next_month") == 12 - month


@pytest.mark.parametrize("month", range(1, 13))
def test_money_booked_in_month_m_earns_13_minus_m_months_from_the_same_month(month: int) -> None:
    assert months_earning(date(2020, month, 15), 2020, "same_month") == 13 - month


def test_an_opening_balance_earns_all_twelve_months() -> None:
    for rule in ("next_month", "same_month"):
        assert months_earning(date(2019, 12, 31), 2020, rule) == 12
        assert months_earning(date(2011, 1, 1), 2020, rule) == 12


def test_money_booked_after_the_year_earns_nothing_in_it() -> None:
    assert months_earning(date(2021, 1, 1), 2020, "same_month") == 0


# ---- the amount -----------------------------------------------------------------------

def test_a_worked_example_by_hand() -> None:
    # Opening balance 1,000.00 yuan, 500.00 yuan booked on 15 March, rate 2.62%:
    #   100000 * 0.0262            = 2620
    #   50000 * 0.0262 * 9 / 12    =  982.5   (April..December, 9 months)
    #   total                      = 3602.5  -> 3603 fen half-up, 3610 up to the jiao
    bookings = [booked(date(2023, 6, 1), 100000), booked(date(2024, 3, 15), 50000)]
    rate = Decimal("0.0262")
    assert interest_for_year(bookings, 2024, rate, params()) == 3603
    assert interest_for_year(bookings, 2024, rate, params(rounding="up_to_jiao")) == 3610
    # From the same month: 50000 * 0.0262 * 10/12 = 1091.666..., total 3711.666...
    assert interest_for_year(bookings, 2024, rate, params(interest_from="same_month")) == 3712
    assert interest_for_year(bookings, 2024, rate,
                             params(interest_from="same_month", rounding="up_to_jiao")) == 3720


def test_rounding_is_done_once_on_the_exact_amount_not_on_floats() -> None:
    # 3040 fen at 2.25% for 5 months is exactly 28.5 fen: half-up gives 29.
    # In binary floats it is 28.499999999999996, which would round to 28.
    assert 3040 * 0.0225 * 5 / 12 < 28.5
    one = [booked(date(2010, 7, 15), 3040)]
    assert interest_for_year(one, 2010, Decimal("0.0225"), params()) == 29
    # 1200 fen at 0.25% for one month (December) is 0.25 fen.
    # Each alone would round to nothing; summed exactly first, they make one fen.
    two = [booked(date(2010, 11, 2), 1200), booked(date(2010, 11, 20), 1200)]
    assert interest_for_year(two[:1], 2010, Decimal("0.0025"), params()) == 0
    assert interest_for_year(two, 2010, Decimal("0.0025"), params()) == 1


def test_negative_bookings_earn_negative_interest_for_their_months() -> None:
    # 12,000.00 yuan all year, 6,000.00 yuan paid out in June: half the money for half a year.
    bookings = [booked(date(2019, 1, 1), 1_200_000), booked(date(2020, 6, 30), -600_000)]
    assert interest_for_year(bookings, 2020, Decimal("0.05"), params()) == 60000 - 15000


def test_bookings_after_the_year_are_ignored_and_nothing_is_never_negative() -> None:
    later = [booked(date(2021, 1, 1), 100000)]
    assert interest_for_year(later, 2020, Decimal("0.03"), params()) == 0
    assert interest_for_year([], 2020, Decimal("0.03"), params()) == 0
    assert interest_for_year([booked(date(2020, 1, 1), 100000)], 2020, Decimal(0), params()) == 0


# ---- through the ledger ---------------------------------------------------------------

def test_year_end_interest_worked_example_on_the_ledger(ledger: Ledger) -> None:
    idn = make_id(301)
    enrol(ledger, idn, enrol_date=date(2023, 1, 10))
    contribute(ledger, idn, 2023, 50000)  # booked 1 March 2023
    ledger.subsidise(id_number=idn, year=2023, value_date=date(2023, 6, 30), actor="fin")
    # 2023 at 3.97%: 50000 * 0.0397 * 9/12 = 1488.75 (from April)
    #                 6000 * 0.0397 * 6/12 =  119.10 (the subsidy, from July)
    #                                  total 1607.85 -> 1608 fen
    out = ledger.credit_interest(year=2023, today=date(2024, 1, 1), actor="fin")
    assert out == {"credited": 1, "skipped": 0, "amount_fen": 1608}
    contribute(ledger, idn, 2024, 50000)
    # 2024 at 2.62%: opening 57608 * 0.0262 = 1509.3296, plus 50000 * 0.0262 * 9/12 = 982.5
    #                                   total 2491.8296 -> 2492 fen
    out = ledger.credit_interest(year=2024, today=date(2025, 1, 1), actor="fin")
    assert out["amount_fen"] == 2492
    p = ledger.participant(idn)
    assert p.interest_years == {2023: 1608, 2024: 2492}
    assert p.sources["interest"] == 1608 + 2492
    assert p.balance_fen == 50000 + 6000 + 1608 + 50000 + 2492
    st = ledger.statement(idn)
    assert st["interest_by_year_fen"] == {"2023": 1608, "2024": 2492}
    # Interest is booked on 31 December: it is not in the balance the day before.
    assert ledger.statement(idn, as_of=date(2023, 12, 30))["sources_fen"]["interest"] == 0
    assert ledger.statement(idn, as_of=date(2023, 12, 31))["sources_fen"]["interest"] == 1608


def test_interest_rounds_the_exact_half_fen_up_on_the_ledger(ledger: Ledger) -> None:
    idn = make_id(302)
    enrol(ledger, idn, enrol_date=date(2010, 1, 10))
    ledger.credit_collective(id_number=idn, year=2010, amount_fen=3040, payer="东村委会",
                             receipt_no="C-302", value_date=date(2010, 7, 15), actor="op1")
    out = ledger.credit_interest(year=2010, today=date(2011, 1, 1), actor="fin")
    assert out["amount_fen"] == 29  # exactly 28.5 fen, half-up


def test_same_month_and_up_to_the_jiao_are_parameters_of_the_rule_version(ledger: Ledger) -> None:
    idn = make_id(303)
    enrol(ledger, idn, enrol_date=date(2010, 1, 10))
    ledger.credit_collective(id_number=idn, year=2010, amount_fen=3040, payer="东村委会",
                             receipt_no="C-303", value_date=date(2010, 7, 15), actor="op1")
    base = ledger.rules_on(date(2010, 12, 31)).parameters
    ledger.publish_rules(date(2010, 1, 1), base.model_copy(update={
        "interest_from": "same_month", "rounding": "up_to_jiao"}), "local rule", actor="admin")
    # 3040 * 0.0225 * 6/12 = 34.2 fen -> up to the jiao: 40 fen
    out = ledger.credit_interest(year=2010, today=date(2011, 1, 1), actor="fin")
    assert out["amount_fen"] == 40
    assert ledger.participant(idn).interest_years[2010] == 40


def test_interest_is_refused_until_after_31_december(ledger: Ledger) -> None:
    idn = make_id(304)
    enrol(ledger, idn, enrol_date=date(2023, 1, 10))
    contribute(ledger, idn, 2023, 50000)
    before = store_state(ledger)
    for today in (date(2023, 12, 31), date(2023, 6, 1)):
        with pytest.raises(Refused) as e:
            ledger.credit_interest(year=2023, today=today, actor="fin")
        assert e.value.field == "year"
        assert "after 31 December 2023" in e.value.rule
    assert store_state(ledger) == before
    assert ledger.credit_interest(year=2023, today=date(2024, 1, 1), actor="fin")["credited"] == 1


def test_a_year_with_no_published_rate_is_refused(ledger: Ledger) -> None:
    idn = make_id(305)
    enrol(ledger, idn, enrol_date=date(2023, 1, 10))
    before = store_state(ledger)
    with pytest.raises(Refused) as e:
        ledger.credit_interest(year=2027, today=date(2028, 1, 2), actor="fin")
    assert e.value.field == "year"
    assert "names no interest rate for 2027" in e.value.rule
    assert store_state(ledger) == before


def test_running_interest_twice_credits_it_once(ledger: Ledger) -> None:
    for n in (306, 307, 308):
        enrol(ledger, make_id(n), enrol_date=date(2023, 1, 10))
        contribute(ledger, make_id(n), 2023, 20000)
    first = ledger.credit_interest(year=2023, today=date(2024, 1, 2), actor="fin")
    assert first["credited"] == 3 and first["amount_fen"] > 0
    after_first = store_state(ledger)
    balances = [ledger.participant(make_id(n)).balance_fen for n in (306, 307, 308)]
    again = ledger.credit_interest(year=2023, today=date(2024, 2, 1), actor="fin")
    assert again == {"credited": 0, "skipped": 3, "amount_fen": 0}
    assert store_state(ledger) == after_first
    assert [ledger.participant(make_id(n)).balance_fen for n in (306, 307, 308)] == balances


def test_a_participant_enrolled_after_the_year_is_not_credited_for_it(ledger: Ledger) -> None:
    enrol(ledger, make_id(309), enrol_date=date(2023, 1, 10))
    enrol(ledger, make_id(310), enrol_date=date(2024, 2, 1))
    out = ledger.credit_interest(year=2023, today=date(2024, 3, 1), actor="fin")
    assert out == {"credited": 1, "skipped": 1, "amount_fen": 0}
    assert 2023 not in ledger.participant(make_id(310)).interest_years


def test_interest_is_credited_in_small_chunks_all_the_same(ledger: Ledger) -> None:
    for n in range(311, 316):
        enrol(ledger, make_id(n), enrol_date=date(2023, 1, 10))
        contribute(ledger, make_id(n), 2023, 10000)
    seen: list[int] = []
    out = ledger.credit_interest(year=2023, today=date(2024, 1, 2), actor="fin", chunk_size=2,
                                 progress=seen.append)
    # 10000 * 0.0397 * 9/12 = 297.75 -> 298 each
    assert out == {"credited": 5, "skipped": 0, "amount_fen": 5 * 298}
    assert seen == [2, 2, 1]


def test_a_settled_account_earns_no_more_interest(ledger: Ledger) -> None:
    idn = make_id(317)
    enrol(ledger, idn, enrol_date=date(2016, 1, 10))
    contribute(ledger, idn, 2016, 50000)
    ledger.credit_interest(year=2016, today=date(2017, 1, 2), actor="fin")
    ledger.decease(id_number=idn, date_of_death=date(2017, 5, 3), reported_on=date(2017, 5, 20),
                   actor="op1")
    ledger.settle_balance(id_number=idn, how="inheritance", payee="继承人",
                          value_date=date(2017, 6, 30), actor="op1")
    assert ledger.participant(idn).balance_fen == 0
    ledger.credit_interest(year=2017, today=date(2018, 1, 2), actor="fin")
    ledger.credit_interest(year=2018, today=date(2019, 1, 2), actor="fin")
    p = ledger.participant(idn)
    assert p.closed
    assert p.balance_fen == 0, f"{p.balance_fen} fen stranded in a closed account"


def test_interest_run_out_of_order_still_compounds(ledger: Ledger) -> None:
    idn = make_id(318)
    enrol(ledger, idn, enrol_date=date(2015, 1, 10))
    contribute(ledger, idn, 2015, 100000)  # 1 March 2015
    ledger.credit_interest(year=2015, today=date(2016, 1, 2), actor="fin")

    def run(year: int) -> None:
        try:
            ledger.credit_interest(year=year, today=date(2019, 1, 2), actor="fin")
        except Refused as e:  # refusing the later year until the earlier is done is fine
            assert e.field == "year"

    run(2017)  # someone runs 2017 before 2016
    run(2016)
    run(2017)
    # In order: 2015 100000 * 2.75% * 9/12 = 2062.5 -> 2063
    #           2016 102063 * 1.75%        = 1786.1025 -> 1786
    #           2017 103849 * 1.75%        = 1817.3575 -> 1817 (2016's interest compounds)
    assert ledger.participant(idn).interest_years == {2015: 2063, 2016: 1786, 2017: 1817}
