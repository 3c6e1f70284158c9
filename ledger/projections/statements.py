"""Statements view: each participant's individual-account bookings, per source, per value
date and per kind of event, so a statement as of any date is one query.

The rows come from the postings on the participant's sub-ledger accounts (2001.<source>),
so the view can never disagree with the balances of those accounts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from ledger.postings import INDIVIDUAL, PARTICIPANT, RULES
from ledger.projections.items import Item, kind_of
from ledger.projections.tables import TableSpec, col
from ledger.projections.view import Row, View, Write

SUBLEDGER_PREFIX = INDIVIDUAL + "."
SOURCE_AT = len(SUBLEDGER_PREFIX)
MAX_SOURCES = 1_000

STATEMENT_ROWS = TableSpec("proj_statement_rows", (
    col("participant_id", "uuid"),
    col("source", "text"),
    col("value_date", "date"),
    col("kind", "text"),   # the event class, e.g. ContributionReceived, InterestCredited
    col("amount_fen", "int"),  # positive: money into the individual account
), indexes=(("participant_id", "value_date"),), append=True)
# Append-only: a statement sums its rows, so a batch only ever adds some. On a big store
# this is the view with most rows, and a COPY costs a third of an upsert on a wide key.


class StatementsView(View):
    name = "statements"
    version = 2
    tables = (STATEMENT_ROWS,)

    def __init__(self) -> None:
        self._kinds = {topic: kind_of(topic) for topic in self.topics()}
        self._sources: dict[str, str] = {}  # sub-ledger account -> source

    def _source(self, account: str) -> str:
        assert account.startswith(SUBLEDGER_PREFIX), account
        assert len(self._sources) < MAX_SOURCES, "more sources than the ledger has"
        source = self._sources[account] = account[SOURCE_AT:]
        return source

    def topics(self) -> frozenset[str]:
        return frozenset(t for t in RULES if t.startswith(PARTICIPANT))

    def apply(self, items: Sequence[Item]) -> list[Write]:
        # One row a posting, not netted per key: the table is append-only and netting
        # merged next to nothing (each event is a day and a source of its own).
        rows: list[Row] = []
        append = rows.append
        kinds, sources = self._kinds, self._sources
        days: dict[str, date] = {}  # ISO value dates, parsed once a batch each
        for _, _, _, topic, fields, postings, participant in items:
            if not participant or not postings:
                continue
            kind = kinds[topic]
            iso = fields["value_date"]
            day = days.get(iso)
            if day is None:
                day = days[iso] = date.fromisoformat(iso)
            for account, amount, pid in postings:
                if pid is None:
                    continue
                source = sources.get(account) or self._source(account)
                # The sub-ledger is a liability: a credit (negative) adds to the account.
                append((pid, source, day, kind, -amount))
        return [Write(STATEMENT_ROWS.name, rows)]
