"""Balances view: movements of every posting account, by township, at four grains.

A balance as of a value date D is the sum of movements with value_date <= D. To keep that
sum short on a big store, movements are kept per year, per month and per day, so "as of
D" reads: whole years before D's year + whole months before D's month + days of D's month
up to D (and the grain "A" holds the all-time total for the current balance).

The township of a movement is the township the participant enrolled in; money moved by
the fund itself (treasury receipts, sweeps, bank interest) belongs to no township and is
stored under COUNTY ("").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from uuid import UUID

from ledger.postings import PARTICIPANT, RULES
from ledger.projections.items import Item
from ledger.projections.tables import TableSpec, add, col, key
from ledger.projections.values import as_uuid
from ledger.projections.view import Row, View, Write

COUNTY = ""
ALL_TIME = "0001-01-01"
MAX_CACHED_TOWNSHIPS = 2_000_000
ENROLLED = PARTICIPANT + "Enrolled"

MOVEMENTS = TableSpec("proj_movements", (
    key("grain", "text"),      # "A" all time, "Y" year, "M" month, "D" day
    key("period", "date"),     # first day of the period (ALL_TIME for "A")
    key("account", "text"),
    key("township", "text"),
    add("amount_fen"),
))
TOWNSHIPS = TableSpec("proj_bal_townships", (
    key("participant_id", "uuid"),
    col("township", "text"),
), append=True)  # a participant enrols once


class BalancesView(View):
    name = "balances"
    version = 1
    tables = (MOVEMENTS, TOWNSHIPS)

    def __init__(self) -> None:
        # Keyed by the id's bytes (items.StoredRow).
        self._townships: dict[bytes, str] = {}

    def topics(self) -> frozenset[str]:
        return frozenset((*RULES, ENROLLED))

    def missing(self, items: Sequence[Item]) -> dict[str, set[UUID]]:
        townships = self._townships
        enrolled_here = {i[1] for i in items if i[3] == ENROLLED}
        need = {UUID(bytes=i[1]) for i in items  # participants' events that post
                if i[6] and i[5] and i[1] not in townships and i[1] not in enrolled_here}
        return {TOWNSHIPS.name: need} if need else {}

    def load(self, table: str, rows: Sequence[Row]) -> None:
        assert table == TOWNSHIPS.name
        for pid, township in rows:
            self._townships[as_uuid(pid).bytes] = township

    def apply(self, items: Sequence[Item]) -> list[Write]:
        townships = self._townships
        days: dict[tuple[str, str, str], int] = {}
        enrolled: list[Row] = []
        for _, pid, _, topic, fields, postings, participant in items:
            if participant:
                if topic == ENROLLED:
                    township = fields["township"]
                    townships[pid] = township
                    enrolled.append((pid, township))
                if not postings:
                    continue
                township = townships[pid]
            elif not postings:
                continue
            else:
                township = COUNTY
            day = fields["value_date"]
            for account, amount, _ in postings:
                k = (day, account, township)
                days[k] = days.get(k, 0) + amount
        # Double entry: each event's postings sum to zero, so every batch's do.
        assert sum(days.values()) == 0, "postings of a batch do not net to zero"
        return [Write(MOVEMENTS.name, roll_up(days)), Write(TOWNSHIPS.name, enrolled)]

    def forget(self) -> None:
        self._townships.clear()

    def after_commit(self) -> None:
        if len(self._townships) > MAX_CACHED_TOWNSHIPS:
            self._townships.clear()


def roll_up(days: dict[tuple[str, str, str], int]) -> list[Row]:
    """Day movements (ISO value dates) to rows at every grain, netted per key; zero rows
    are not written."""
    grains: dict[tuple[str, str, str, str], int] = {}
    for (day, account, township), amount in days.items():
        assert len(day) == 10 and day[4] == day[7] == "-", day
        for grain, period in (("D", day), ("M", day[:8] + "01"), ("Y", day[:5] + "01-01"),
                              ("A", ALL_TIME)):
            k = (grain, period, account, township)
            grains[k] = grains.get(k, 0) + amount
    periods: dict[str, date] = {}
    rows: list[Row] = []
    for (grain, period, account, township), amount in grains.items():
        if amount:
            on = periods.get(period)
            if on is None:
                on = periods[period] = date.fromisoformat(period)
            rows.append((grain, on, account, township, amount))
    return rows
