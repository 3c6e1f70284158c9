"""Year-end interest (记账利息) on an individual account.

The opening balance earns the whole year; money booked during the year earns from the
month after booking (or the same month: a parameter), pro rata by months. Exact fractions,
then one rounding by the county's rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from fractions import Fraction
from typing import Protocol

from ledger.rules import Parameters


class HasBooking(Protocol):
    @property
    def value_date(self) -> date: ...
    @property
    def amount_fen(self) -> int: ...


def months_earning(booked: date, year: int, interest_from: str) -> int:
    """How many months of `year` an amount booked on `booked` earns."""
    if booked.year < year:
        return 12
    if booked.year > year:
        return 0
    first_month = booked.month + 1 if interest_from == "next_month" else booked.month
    return max(0, 12 - first_month + 1)


def interest_for_year(bookings: Iterable[HasBooking], year: int, rate: Decimal,
                      params: Parameters) -> int:
    rate_fraction = Fraction(rate)
    total = Fraction(0)
    for b in bookings:
        # A reversal earns (negatively) from the date of what it reverses: the two cancel.
        day = getattr(b, "earns_from", None) or b.value_date
        if day.year > year:
            continue
        months = months_earning(day, year, params.interest_from)
        total += b.amount_fen * rate_fraction * months / 12
    if total <= 0:
        return 0
    return params.round_fen(total)
