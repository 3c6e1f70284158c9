"""The county's rules: effective-dated parameters, never constants in code."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from pydantic import ValidationError

from ledger.aggregates.ruleset import RuleSet
from ledger.errors import Refused
from ledger.rules import Parameters, RuleVersion, in_force, sample_county


def params(**changes: Any) -> Parameters:
    """The sample county's latest parameters, with some changed."""
    latest = sample_county()[-1][1]
    return latest.model_copy(update=changes)


def versions() -> list[RuleVersion]:
    return [RuleVersion(version=i, effective_from=d, parameters=p, note=n)
            for i, (d, p, n) in enumerate(sample_county(), start=1)]


# ---- which version is in force -------------------------------------------------------

@pytest.mark.parametrize(("on", "version"), [
    (date(2009, 10, 1), 1),    # the first day of the pilot
    (date(2014, 6, 30), 1),
    (date(2014, 7, 1), 2),     # 70 yuan from July 2014
    (date(2017, 12, 31), 2),
    (date(2018, 1, 1), 3),
    (date(2023, 5, 5), 4),
    (date(2024, 1, 1), 5),
    (date(2099, 1, 1), 6),     # the latest stays in force
])
def test_in_force_picks_the_latest_effective_from_on_or_before_the_date(on: date,
                                                                       version: int) -> None:
    chosen = in_force(versions(), on)
    assert chosen is not None
    assert chosen.version == version
    assert chosen.effective_from <= on


def test_nothing_is_in_force_before_the_first_version() -> None:
    assert in_force(versions(), date(2009, 9, 30)) is None
    assert in_force([], date(2020, 1, 1)) is None


def test_two_versions_effective_the_same_day_resolve_to_the_later_published() -> None:
    p = params()
    v6 = RuleVersion(version=6, effective_from=date(2020, 1, 1), parameters=p, note="first")
    v7 = RuleVersion(version=7, effective_from=date(2020, 1, 1), parameters=p, note="correction")
    older = RuleVersion(version=8, effective_from=date(2019, 1, 1), parameters=p)
    for order in ([v6, v7, older], [v7, v6, older], [older, v7, v6]):
        chosen = in_force(order, date(2020, 6, 1))
        assert chosen is not None and chosen.note == "correction"
    # A version published later but effective earlier does not displace a later date.
    chosen = in_force([v6, older], date(2020, 6, 1))
    assert chosen is not None and chosen.version == 6


def test_the_rule_label_names_version_and_effective_date() -> None:
    assert versions()[1].label == "v2@2014-07-01"


def test_the_rule_set_refuses_a_date_with_no_rule_naming_the_field() -> None:
    rules = RuleSet.open("test", actor="admin")
    for effective_from, p, note in sample_county():
        rules.publish(effective_from, p, note, actor="admin")
    assert rules.in_force(date(2016, 1, 1)).version == 2
    with pytest.raises(Refused) as e:
        rules.in_force(date(2000, 1, 1), "enrol_date")
    assert e.value.field == "enrol_date"
    assert "no rule version is in force on 2000-01-01" in e.value.rule


def test_versions_are_numbered_in_the_order_they_are_published() -> None:
    rules = RuleSet.open("test", actor="admin")
    assert rules.publish(date(2020, 1, 1), params(), "a", "admin") == 1
    assert rules.publish(date(2010, 1, 1), params(), "retroactive", "admin") == 2
    assert [v.version for v in rules.versions] == [1, 2]
    assert rules.in_force(date(2015, 1, 1)).note == "retroactive"
    assert rules.in_force(date(2021, 1, 1)).note == "a"


def test_the_sample_county_ships_six_versions_with_rising_central_minimums() -> None:
    shipped = sample_county()
    assert [d for d, _, _ in shipped] == sorted(d for d, _, _ in shipped)
    centrals = [p.basic_pension.central_fen for _, p, _ in shipped]
    assert centrals == [5500, 7000, 8800, 9300, 12300, 14300]
    assert all(p.account_divisor == 139 for _, p, _ in shipped)


# ---- subsidy schedule -----------------------------------------------------------------

@pytest.mark.parametrize(("tier_fen", "levels"), [
    (10000, (1000, 1000, 1000)),   # lowest tier: 30 yuan
    (15000, (1000, 1000, 1000)),   # between steps: the step below applies
    (20000, (1200, 1100, 1200)),
    (50000, (2000, 2000, 2000)),   # 500 and up: at least 60 yuan
    (99999, (2000, 2000, 2000)),
    (100000, (2500, 2500, 2500)),
    (300000, (3000, 3000, 3000)),  # above the last step
])
def test_subsidy_for_tier_takes_the_highest_step_not_above_the_tier(
        tier_fen: int, levels: tuple[int, int, int]) -> None:
    step = params().subsidy_for_tier(tier_fen)
    assert step is not None
    assert (step.province_fen, step.city_fen, step.county_fen) == levels
    assert step.total_fen() == sum(levels)
    assert step.by_level() == dict(zip(("province", "city", "county"), levels, strict=True))


def test_a_tier_below_the_first_step_has_no_subsidy() -> None:
    assert params().subsidy_for_tier(9999) is None


# ---- rounding on exact fractions ------------------------------------------------------

@pytest.mark.parametrize(("value", "fen"), [
    (Fraction(5, 2), 3),          # half goes up
    (Fraction(7, 2), 4),          # not to the even neighbour (no banker's rounding)
    (Fraction(249, 100), 2),
    (Fraction(251, 100), 3),
    (Fraction(9, 2), 5),          # 480 fen at 2.25% for 5 months: floats give 4.4999...
    (Fraction(1234), 1234),       # whole fen stay as they are
    (Fraction(0), 0),
    (Fraction(-5, 2), -3),        # half away from zero
    (Fraction(-249, 100), -2),
])
def test_half_up_rounding_to_the_fen(value: Fraction, fen: int) -> None:
    assert params(rounding="half_up_fen").round_fen(value) == fen


@pytest.mark.parametrize(("value", "fen"), [
    (Fraction(1230), 1230),       # already a whole jiao
    (Fraction(1231), 1240),
    (Fraction(12301, 10), 1240),  # 1230.1 fen
    (Fraction(1, 1000), 10),
    (Fraction(1239), 1240),
    (Fraction(0), 0),
    (Fraction(-1231), -1240),
])
def test_rounding_up_to_the_jiao(value: Fraction, fen: int) -> None:
    assert params(rounding="up_to_jiao").round_fen(value) == fen


@pytest.mark.parametrize(("balance_fen", "pension_fen"), [
    (13900, 100),     # exactly 100 fen a month
    (13969, 100),     # 100.496...
    (13970, 101),     # 100.503...
    (150000, 1079),   # 1079.136...
    (0, 0),
])
def test_account_pension_is_the_balance_divided_by_139_rounded(balance_fen: int,
                                                             pension_fen: int) -> None:
    assert params().account_pension_fen(balance_fen) == pension_fen


def test_the_account_divisor_and_rounding_are_parameters() -> None:
    assert params(account_divisor=100).account_pension_fen(12345) == 123
    assert params(account_divisor=100).account_pension_fen(12350) == 124
    assert params(rounding="up_to_jiao").account_pension_fen(13901) == 110


# ---- the parameters validate themselves -----------------------------------------------

def _raw(**changes: Any) -> dict[str, Any]:
    raw = params().model_dump(mode="json")
    raw.update(changes)
    return raw


@pytest.mark.parametrize(("changes", "message"), [
    ({"contribution_tiers_fen": [20000, 10000]}, "strictly increasing"),
    ({"contribution_tiers_fen": [10000, 10000]}, "strictly increasing"),
    ({"contribution_tiers_fen": [0, 10000]}, "positive"),
    ({"contribution_tiers_fen": []}, "between 1 and"),
    ({"on_behalf_percent": {"students": 100}}, "unknown identity group"),
    ({"on_behalf_percent": {"destitute": 101}}, "0..100"),
    ({"interest_rates": {"2024": 0.0262}}, "not floats"),
    ({"interest_rates": {"2024": "1.5"}}, "must be in [0, 1)"),
    ({"interest_rates": {"2024": "-0.01"}}, "must be in [0, 1)"),
    ({"account_divisor": 0}, "greater than or equal to 1"),
    ({"rounding": "banker"}, "half_up_fen"),
    ({"surprise": 1}, "Extra inputs are not permitted"),
])
def test_parameters_refuse_what_would_make_the_arithmetic_wrong(changes: dict[str, Any],
                                                                message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        Parameters.model_validate(_raw(**changes))


def test_a_subsidy_schedule_out_of_order_is_refused() -> None:
    raw = _raw()
    raw["subsidy_schedule"] = list(reversed(raw["subsidy_schedule"]))
    with pytest.raises(ValidationError, match="sorted by min_tier_fen"):
        Parameters.model_validate(raw)


def test_rates_are_exact_decimals_and_survive_a_json_round_trip() -> None:
    p = params()
    assert p.interest_rates[2024] == Decimal("0.0262")
    again = Parameters.model_validate_json(p.model_dump_json())
    assert again == p
    assert isinstance(again.interest_rates[2024], Decimal)
