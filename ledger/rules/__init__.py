"""Effective-dated parameters of the scheme. Numbers that vary by place live here, never in code."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from fractions import Fraction
from importlib import resources
from math import ceil, floor
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SUBSIDY_LEVELS = ("province", "city", "county")
IDENTITY_GROUPS = (
    "ordinary", "severely_disabled", "destitute", "minimum_living", "registered_poor",
)
MAX_TIERS = 64


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubsidyStep(Frozen):
    """Subsidy for contributions of at least min_tier_fen, by funding level."""

    min_tier_fen: int = Field(ge=0)
    province_fen: int = Field(ge=0)
    city_fen: int = Field(ge=0)
    county_fen: int = Field(ge=0)

    def total_fen(self) -> int:
        return self.province_fen + self.city_fen + self.county_fen

    def by_level(self) -> dict[str, int]:
        return {"province": self.province_fen, "city": self.city_fen, "county": self.county_fen}


class AgeExtra(Frozen):
    min_age: int = Field(ge=60, le=130)
    extra_fen: int = Field(ge=0)


class BasicPension(Frozen):
    """Monthly basic pension (基础养老金) by level, in fen."""

    central_fen: int = Field(ge=0)
    province_fen: int = Field(ge=0)
    city_fen: int = Field(ge=0)
    county_fen: int = Field(ge=0)
    # 长缴多得: extra per contribution year beyond the minimum.
    long_contribution_per_year_fen: int = Field(ge=0)
    age_extras: tuple[AgeExtra, ...] = ()


class Parameters(Frozen):
    """One complete version of the county's rules."""

    contribution_tiers_fen: tuple[int, ...]
    subsidy_schedule: tuple[SubsidyStep, ...]
    # Share of the lowest tier the government pays on behalf of hardship groups, in percent.
    on_behalf_percent: dict[str, int]
    basic_pension: BasicPension
    interest_rates: dict[int, Decimal]  # year -> annual rate, e.g. Decimal("0.0262")
    account_divisor: int = Field(default=139, ge=1, le=1000)
    rounding: Literal["half_up_fen", "up_to_jiao"] = "half_up_fen"
    interest_from: Literal["next_month", "same_month"] = "next_month"
    inherit_subsidy: bool = True
    min_enrol_age: int = Field(default=16, ge=0, le=100)
    pension_age: int = Field(default=60, ge=40, le=100)
    min_contribution_years: int = Field(default=15, ge=0, le=50)
    # People already of pension age when the scheme started get the basic pension
    # without contributing: born on or before this date.
    transitional_born_on_or_before: date | None = None
    funeral_grant_fen: int = Field(default=0, ge=0)
    # An overpayment is recovered from later pensions, at most this share of each payment.
    overpayment_max_deduction_percent: int = Field(default=50, ge=0, le=100)

    @field_validator("contribution_tiers_fen")
    @classmethod
    def _tiers(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or len(v) > MAX_TIERS:
            raise ValueError(f"between 1 and {MAX_TIERS} tiers")
        if any(t <= 0 for t in v) or list(v) != sorted(set(v)):
            raise ValueError("tiers must be positive and strictly increasing")
        return v

    @field_validator("on_behalf_percent")
    @classmethod
    def _on_behalf(cls, v: dict[str, int]) -> dict[str, int]:
        for group, pct in v.items():
            if group not in IDENTITY_GROUPS:
                raise ValueError(f"unknown identity group {group!r}")
            if not 0 <= pct <= 100:
                raise ValueError(f"percent for {group} must be 0..100")
        return v

    @field_validator("interest_rates", mode="before")
    @classmethod
    def _rates_not_floats(cls, v: object) -> object:
        # A binary float such as 0.0262 is not the rate that was published: refuse it.
        if isinstance(v, dict) and any(isinstance(r, float) for r in v.values()):
            raise ValueError("rates must be decimal strings such as \"0.0262\", not floats")
        return v

    @field_validator("interest_rates")
    @classmethod
    def _rates(cls, v: dict[int, Decimal]) -> dict[int, Decimal]:
        for year, rate in v.items():
            if not Decimal("0") <= rate < Decimal("1"):
                raise ValueError(f"rate for {year} must be in [0, 1)")
        return v

    @model_validator(mode="after")
    def _schedule_sorted(self) -> Parameters:
        mins = [s.min_tier_fen for s in self.subsidy_schedule]
        if mins != sorted(set(mins)):
            raise ValueError("subsidy_schedule must be sorted by min_tier_fen, no repeats")
        return self

    def subsidy_for_tier(self, tier_fen: int) -> SubsidyStep | None:
        step = None
        for s in self.subsidy_schedule:
            if tier_fen >= s.min_tier_fen:
                step = s
        return step

    def round_fen(self, value: Fraction) -> int:
        """Round an exact amount in fen by the county's rule (half away from zero to the
        fen, or up to the next jiao). Exact fractions: no binary floats near money."""
        sign = -1 if value < 0 else 1
        a = abs(value)
        if self.rounding == "half_up_fen":
            return sign * floor(a + Fraction(1, 2))
        return sign * ceil(a / 10) * 10

    def county_part_raised(self, by_fen: int) -> Parameters:
        """These parameters with the county's part of the basic pension raised (lowered,
        if negative) by by_fen a month."""
        bp = self.basic_pension
        return self.model_copy(update={"basic_pension": bp.model_copy(
            update={"county_fen": bp.county_fen + by_fen})})

    def account_pension_fen(self, balance_fen: int) -> int:
        """个人账户养老金: the account balance at the start of payment / 计发系数."""
        return self.round_fen(Fraction(balance_fen, self.account_divisor))


class RuleVersion(Frozen):
    version: int
    effective_from: date
    parameters: Parameters
    note: str = ""

    @property
    def label(self) -> str:
        return f"v{self.version}@{self.effective_from.isoformat()}"


def in_force(versions: list[RuleVersion], on: date) -> RuleVersion | None:
    """The version in force on a date: the latest effective_from <= on; ties go to the
    later published version."""
    best: RuleVersion | None = None
    for v in versions:
        if v.effective_from <= on and (
            best is None or (v.effective_from, v.version) > (best.effective_from, best.version)
        ):
            best = v
    return best


def sample_county() -> list[tuple[date, Parameters, str]]:
    """The default rule set for the sample county, shipped as JSON."""
    text = resources.files("ledger.rules").joinpath("sample_county.json").read_text("utf-8")
    out = []
    for item in json.loads(text)["versions"]:
        out.append((date.fromisoformat(item["effective_from"]),
                    Parameters.model_validate(item["parameters"]), item.get("note", "")))
    return out
