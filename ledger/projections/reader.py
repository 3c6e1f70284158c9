"""Reading the notification log in order, one window of notification ids at a time.

A page is "ids in (start, stop]" with stop at most the head of the log read beforehand,
never "ids after start, LIMIT n": right after a bulk import the table's statistics are
stale, and PostgreSQL then planned the LIMIT query as a scan and sort of everything after
start (measured: 1.2 s a page on a 1M-event store). A window bounds any plan's work.
Every id up to a head that was visible is final: writers take the events table's lock
and commit in id order, so a window never needs reading twice.

On PostgreSQL the window is read with a binary, tuple-row cursor, which costs a quarter
of the recorder's select_notifications (bytea decoded from hex text, a dict per row), and
ids as bytes. On SQLite the recorder's select_notifications is used as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from ledger.projections.items import StoredRow
from ledger.projections.values import as_uuid

if TYPE_CHECKING:
    from ledger.application import Ledger

MAX_WINDOW = 1_000_000


Read = Callable[[int, int], Sequence[StoredRow]]


def head_of(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def reader_for(ledger: Ledger) -> Read:
    """read(start, stop): the notifications with start < id <= stop, in order."""
    recorder = ledger.recorder
    if not isinstance(recorder, PostgresApplicationRecorder):
        def select(start: int, stop: int) -> Sequence[StoredRow]:
            assert 0 <= start < stop <= start + MAX_WINDOW
            return [(n.id, as_uuid(n.originator_id).bytes, n.originator_version, n.topic,
                     n.state)
                    for n in recorder.select_notifications(start, stop - start, stop=stop,
                                                           inclusive_of_start=False)]
        return select

    datastore = recorder.datastore
    # uuid_send: the id as its 16 bytes (see items.StoredRow).
    query = SQL("SELECT notification_id, uuid_send(originator_id), originator_version, topic, "
                "state "
                "FROM {}.{} WHERE notification_id > %s AND notification_id <= %s "
                "ORDER BY notification_id"
                ).format(Identifier(datastore.schema), Identifier(recorder.events_table_name))

    def read(start: int, stop: int) -> Sequence[StoredRow]:
        assert 0 <= start < stop <= start + MAX_WINDOW
        with (datastore.get_connection() as conn,
              conn.cursor(binary=True, row_factory=tuple_row) as cur):
            cur.execute(query, (start, stop), prepare=True)
            rows: list[StoredRow] = cur.fetchall()
            return rows
    return read
