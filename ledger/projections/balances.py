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

from ledger.aggregates.participant import Participant
from ledger.projections.items import Item
from ledger.projections.tables import TableSpec, add, col, key
from ledger.projections.values import as_uuid
from ledger.projections.view import Row, View, Write

COUNTY = ""
ALL_TIME = date(1, 1, 1)
MAX_CACHED_TOWNSHIPS = 2_000_000
ENROLLED = Participant.Enrolled

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
        # Keyed by the id's integer: hashing a UUID object costs a Python call.
        self._townships: dict[int, str] = {}

    def missing(self, items: Sequence[Item]) -> dict[str, set[UUID]]:
        townships = self._townships
        enrolled_here = {i.event.originator_id.int for i in items
                         if type(i.event) is ENROLLED}
        need = {i.event.originator_id for i in items
                if i.participant and i.postings
                and i.event.originator_id.int not in townships
                and i.event.originator_id.int not in enrolled_here}
        return {TOWNSHIPS.name: need} if need else {}

    def load(self, table: str, rows: Sequence[Row]) -> None:
        assert table == TOWNSHIPS.name
        for pid, township in rows:
            self._townships[as_uuid(pid).int] = township

    def apply(self, items: Sequence[Item]) -> list[Write]:
        townships = self._townships
        days: dict[tuple[date, str, str], int] = {}
        enrolled: list[Row] = []
        for item in items:
            event = item.event
            if item.participant:
                if type(event) is ENROLLED:
                    townships[event.originator_id.int] = event.township
                    enrolled.append((event.originator_id, event.township))
                if not item.postings:
                    continue
                township = townships[event.originator_id.int]
            elif not item.postings:
                continue
            else:
                township = COUNTY
            day = event.value_date
            for p in item.postings:
                k = (day, p.account, township)
                days[k] = days.get(k, 0) + p.amount_fen
        return [Write(MOVEMENTS.name, roll_up(days)), Write(TOWNSHIPS.name, enrolled)]

    def forget(self) -> None:
        self._townships.clear()

    def after_commit(self) -> None:
        if len(self._townships) > MAX_CACHED_TOWNSHIPS:
            self._townships.clear()


def roll_up(days: dict[tuple[date, str, str], int]) -> list[Row]:
    """Day movements to rows at every grain, netted per key; zero rows are not written."""
    grains: dict[tuple[str, date, str, str], int] = {}
    for (day, account, township), amount in days.items():
        for grain, period in (("D", day), ("M", day.replace(day=1)),
                              ("Y", date(day.year, 1, 1)), ("A", ALL_TIME)):
            k = (grain, period, account, township)
            grains[k] = grains.get(k, 0) + amount
    return [(*k, amount) for k, amount in grains.items() if amount]
