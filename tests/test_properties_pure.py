"""Property tests of the pure functions: money, resident IDs, rounding, interest, and the
postings of random participant histories built on the aggregate alone (no store)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ledger import resident_id
from ledger.aggregates.participant import SOURCES, Booking, Participant
from ledger.errors import InvalidInput, LedgerError
from ledger.interest import interest_for_year, months_earning
from ledger.money import MAX_AMOUNT_FEN, format_yuan, parse_yuan
from ledger.postings import postings_for
from ledger.rules import IDENTITY_GROUPS, Parameters, RuleVersion, in_force, sample_county
from tests.conftest import examples

fen = st.integers(min_value=1, max_value=MAX_AMOUNT_FEN - 1)
PARAMS = sample_county()[-1][1]


# ---- money ----------------------------------------------------------------------------

@given(fen)
def test_any_amount_survives_formatting_and_parsing(amount: int) -> None:
    assert parse_yuan(format_yuan(amount), "amount") == amount
    assert parse_yuan(format_yuan(-amount), "amount", allow_negative=True) == -amount


@given(st.integers(0, 10**9), st.integers(0, 10**6).map(lambda n: str(n).rjust(3, "0")))
def test_three_or_more_decimals_are_always_refused(whole: int, decimals: str) -> None:
    with pytest.raises(InvalidInput, match="more than 2 decimal places"):
        parse_yuan(f"{whole}.{decimals}", "amount")


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_no_float_is_ever_accepted(value: float) -> None:
    with pytest.raises(InvalidInput):
        parse_yuan(value, "amount")


@given(st.text(max_size=20))
def test_parse_yuan_either_returns_fen_or_raises_invalid_input(text: str) -> None:
    try:
        amount = parse_yuan(text, "amount")
    except InvalidInput as e:
        assert e.field == "amount"
    else:
        assert 0 < amount <= MAX_AMOUNT_FEN


# ---- resident IDs ---------------------------------------------------------------------

province = st.sampled_from(sorted(resident_id._PROVINCES))
birth = st.dates(min_value=date(1880, 1, 1), max_value=date(2025, 12, 31))


@given(province, st.integers(0, 9999), birth, st.integers(0, 999))
def test_every_made_id_is_valid_and_every_other_check_digit_is_not(
        prov: int, area: int, born: date, seq: int) -> None:
    made = resident_id.make(f"{prov:02d}{area:04d}", born, seq)
    assert resident_id.normalise(made) == made
    assert resident_id.birth_date(made) == born
    for wrong in "0123456789X":
        if wrong != made[-1]:
            with pytest.raises(InvalidInput):
                resident_id.normalise(made[:17] + wrong)


@given(province, birth, st.integers(0, 999), st.integers(0, 16))
def test_a_single_changed_digit_is_always_caught(prov: int, born: date, seq: int,
                                                position: int) -> None:
    made = resident_id.make(f"{prov:02d}0101", born, seq)
    for d in "0123456789":
        if d == made[position]:
            continue
        typo = made[:position] + d + made[position + 1:]
        with pytest.raises(InvalidInput):
            resident_id.normalise(typo)


@given(st.text(alphabet="0123456789Xx", min_size=18, max_size=18))
def test_masking_hides_the_birth_date_and_sequence(text: str) -> None:
    masked = resident_id.mask(text)
    assert masked[:6] == text[:6] and masked[-4:] == text[-4:]
    assert masked[6:14] == "*" * 8


# ---- rounding and interest ------------------------------------------------------------

exact = st.fractions(min_value=-10**9, max_value=10**9, max_denominator=10**6)


@given(exact)
def test_half_up_rounding_is_within_half_a_fen_and_breaks_ties_away_from_zero(
        value: Fraction) -> None:
    rounded = PARAMS.model_copy(update={"rounding": "half_up_fen"}).round_fen(value)
    assert abs(rounded - value) <= Fraction(1, 2)
    if abs(rounded - value) == Fraction(1, 2):
        assert abs(rounded) > abs(value)


@given(exact)
def test_rounding_up_to_the_jiao_never_rounds_down(value: Fraction) -> None:
    rounded = PARAMS.model_copy(update={"rounding": "up_to_jiao"}).round_fen(value)
    assert rounded % 10 == 0
    assert abs(rounded) >= abs(value)
    assert abs(rounded) - abs(value) < 10


@given(st.integers(0, 10**12))
def test_the_account_pension_times_139_is_within_half_a_divisor_of_the_balance(
        balance_fen: int) -> None:
    pension = PARAMS.account_pension_fen(balance_fen)
    assert abs(pension * 139 - balance_fen) <= Fraction(139, 2)


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2030, 12, 31)),
       st.integers(2000, 2030), st.sampled_from(["next_month", "same_month"]))
def test_months_earning_are_between_0_and_12(booked: date, year: int, rule: str) -> None:
    months = months_earning(booked, year, rule)
    assert 0 <= months <= 12
    if booked.year == year:
        assert months == 12 - booked.month + (rule == "same_month")


bookings = st.lists(st.builds(
    lambda d, a: Booking(value_date=d, source="contribution", amount_fen=a, kind="x"),
    st.dates(min_value=date(2018, 1, 1), max_value=date(2021, 12, 31)),
    st.integers(1, 10**7)), max_size=20)
rates = st.decimals(min_value=Decimal("0"), max_value=Decimal("0.0999"), places=4)


@given(bookings, rates)
def test_interest_is_the_exact_sum_rounded_once(items: list[Booking], rate: Decimal) -> None:
    year = 2020
    expected = sum((b.amount_fen * Fraction(rate) * months_earning(b.value_date, year,
                                                                   PARAMS.interest_from) / 12
                    for b in items if b.value_date.year <= year), Fraction(0))
    got = interest_for_year(items, year, rate, PARAMS)
    assert got == (PARAMS.round_fen(expected) if expected > 0 else 0)
    # More money never earns less interest; money after the year changes nothing.
    extra = Booking(value_date=date(2019, 6, 1), source="contribution", amount_fen=100_000,
                    kind="x")
    assert interest_for_year([*items, extra], year, rate, PARAMS) >= got
    later = Booking(value_date=date(2021, 1, 1), source="contribution", amount_fen=10**9,
                    kind="x")
    assert interest_for_year([*items, later], year, rate, PARAMS) == got


# ---- postings of random histories on the aggregate alone ------------------------------

VERSIONS = [RuleVersion(version=i, effective_from=d, parameters=p)
            for i, (d, p, _) in enumerate(sample_county(), start=1)]


def rules(on: date) -> RuleVersion:
    v = in_force(VERSIONS, on)
    assert v is not None
    return v


def act(p: Participant, step: int, cmd: tuple[Any, ...]) -> None:
    kind = cmd[0]
    on = date(2015, 1, 10) + timedelta(days=cmd[1])
    if kind == "contribute":
        tier, back = cmd[2], cmd[3]
        y = on.year - back
        group = p.identity_group_on(on)
        from ledger.aggregates.participant import on_behalf_fen
        amount = tier if back else tier - on_behalf_fen(rules(on).parameters, group, tier)
        p.receive_contribution(year=y, tier_fen=tier, amount_fen=amount, channel="bank",
                               receipt_no=f"R{step}", value_date=on, back_payment=bool(back),
                               rules=rules(on), actor="op1")
    elif kind == "subsidy":
        p.credit_subsidy(year=on.year, value_date=on, rules=rules(on), actor="fin")
    elif kind == "collective":
        p.credit_collective(year=on.year, amount_fen=cmd[2], payer="村", receipt_no=f"C{step}",
                            value_date=on, actor="op1")
    elif kind == "interest":
        p.credit_interest(year=on.year - 1, rules=rules(date(on.year - 1, 12, 31)), actor="fin")
    elif kind == "group":
        p.change_identity_group(cmd[2], on, actor="op1")
    elif kind == "assess":
        p.assess_overpayment(cmd[2], [f"{on:%Y-%m}"], "x", on, actor="a")
    elif kind == "recover":
        p.recover_overpayment(cmd[2], cmd[3], on, actor="fin")
    elif kind == "decease":
        p.decease(on, on, actor="op1")
    elif kind == "terminate":
        p.terminate("emigration", on, actor="op1")
    elif kind == "settle":
        p.settle_balance(how=cmd[2], payee="x", value_date=on,
                         rules=rules(on).model_copy(update={"parameters": rules(
                             on).parameters.model_copy(update={"inherit_subsidy": cmd[3]})}),
                         actor="op1")


days = st.integers(0, 6 * 365)
history = st.lists(st.one_of(
    st.tuples(st.just("contribute"), days, st.sampled_from([10000, 20000, 50000, 150000]),
              st.integers(0, 2)),
    st.tuples(st.just("subsidy"), days),
    st.tuples(st.just("collective"), days, st.integers(1, 50000)),
    st.tuples(st.just("interest"), days),
    st.tuples(st.just("group"), days, st.sampled_from(IDENTITY_GROUPS)),
    st.tuples(st.just("assess"), days, st.integers(1, 30000)),
    st.tuples(st.just("recover"), days, st.integers(1, 30000),
              st.sampled_from(["offset_account", "family"])),
    st.tuples(st.just("decease"), days),
    st.tuples(st.just("terminate"), days),
    st.tuples(st.just("settle"), days, st.sampled_from(["refund", "inheritance"]),
              st.booleans()),
), max_size=40)


@settings(max_examples=examples(150), deadline=None)
@given(st.sampled_from(IDENTITY_GROUPS), history)
def test_any_history_posts_balanced_entries_that_match_the_account(
        group: str, commands: list[tuple[Any, ...]]) -> None:
    p = Participant.enrol(id_number=resident_id.make("110101", date(1960, 1, 1), 1), name="x",
                          birth_date=date(1960, 1, 1), township="t", village="v",
                          identity_group=group, enrol_date=date(2015, 1, 10), bank=None,
                          params=rules(date(2015, 1, 10)).parameters, actor="op1")
    assert [postings_for(e) for e in p.collect_events()] == [[]]
    sub_ledger = dict.fromkeys(SOURCES, 0)
    booked = 0
    for step, cmd in enumerate(commands):
        try:
            act(p, step, cmd)
        except LedgerError:
            assert p.pending_events == [], "a refused command changed the aggregate"
        for e in p.collect_events():
            postings = postings_for(e)
            assert sum(x.amount_fen for x in postings) == 0
            for x in postings:
                if x.account.startswith("2001."):
                    assert x.participant_id == p.id
                    sub_ledger[x.account.removeprefix("2001.")] -= x.amount_fen
                    booked += 1
        assert sub_ledger == p.sources
        assert all(v >= 0 for v in p.sources.values())
        assert p.balance_fen == sum(b.amount_fen for b in p.bookings)
    assume(booked > 0)


def test_parameters_used_above_are_the_shipped_ones() -> None:
    assert isinstance(PARAMS, Parameters)
    assert PARAMS.account_divisor == 139
