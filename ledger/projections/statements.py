"""Statements view: each participant's individual-account bookings, per source, per value
date and per kind of event, so a statement as of any date is one query.

The rows come from the postings on the participant's sub-ledger accounts (2001.<source>),
so the view can never disagree with the balances of those accounts.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.postings import INDIVIDUAL
from ledger.projections.items import Item
from ledger.projections.tables import TableSpec, col
from ledger.projections.view import Row, View, Write

SUBLEDGER_PREFIX = INDIVIDUAL + "."
SOURCE_AT = len(SUBLEDGER_PREFIX)

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

    def apply(self, items: Sequence[Item]) -> list[Write]:
        # One row a posting, not netted per key: the table is append-only and netting
        # merged next to nothing (each event is a day and a source of its own).
        rows: list[Row] = []
        for item in items:
            if not item.participant or not item.postings:
                continue
            event = item.event
            kind = type(event).__name__
            day = event.value_date
            for p in item.postings:
                if p.participant_id is None:
                    continue
                assert p.account.startswith(SUBLEDGER_PREFIX), p
                # The sub-ledger is a liability: a credit (negative) adds to the account.
                rows.append((p.participant_id, p.account[SOURCE_AT:], day, kind, -p.amount_fen))
        return [Write(STATEMENT_ROWS.name, rows)]
