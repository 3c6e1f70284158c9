"""Waiting for new events: LISTEN/NOTIFY on PostgreSQL, a plain poll on SQLite.

Either way the wait ends after poll_interval_s at the latest, so a notification that is
lost (or never sent, as by a writer using another channel) costs a delay, not a stall.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from threading import Event
from typing import TYPE_CHECKING, Any

from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL, Identifier

if TYPE_CHECKING:
    from ledger.application import Ledger

# Granularity at which a waiting runner notices it has been asked to stop.
STOP_CHECK_S = 0.2


class Wakeup(ABC):
    def __init__(self, poll_interval_s: float) -> None:
        assert 0 < poll_interval_s <= 3600
        self.poll_interval_s = poll_interval_s

    @abstractmethod
    def wait(self, stop: Event) -> bool:
        """Block until new events may exist, stop is set, or the poll interval passes.
        True if woken by a notification."""


class PollWakeup(Wakeup):
    def wait(self, stop: Event) -> bool:
        stop.wait(self.poll_interval_s)
        return False


class ListenWakeup(Wakeup):
    def __init__(self, conn: Any, poll_interval_s: float) -> None:
        super().__init__(poll_interval_s)
        self.conn = conn

    def wait(self, stop: Event) -> bool:
        waited = 0.0
        while waited < self.poll_interval_s and not stop.is_set():
            slice_s = min(STOP_CHECK_S, self.poll_interval_s - waited)
            # The generator holds the connection's lock until it is exhausted, so it is
            # consumed whole (never nested, never left suspended).
            if list(self.conn.notifies(timeout=slice_s, stop_after=1)):
                # Swallow any burst that came with it: one read serves them all.
                list(self.conn.notifies(timeout=0))
                return True
            waited += slice_s
        return False


@contextmanager
def wakeup_for(ledger: Ledger, poll_interval_s: float) -> Iterator[Wakeup]:
    datastore = ledger.recorder.datastore  # type: ignore[attr-defined]
    if not isinstance(datastore, PostgresDatastore):
        yield PollWakeup(poll_interval_s)
        return
    channel = ledger.recorder.channel_name  # type: ignore[attr-defined]
    with datastore.get_connection() as conn:
        conn.execute(SQL("LISTEN {0}").format(Identifier(channel)))
        try:
            yield ListenWakeup(conn, poll_interval_s)
        finally:
            conn.execute(SQL("UNLISTEN {0}").format(Identifier(channel)))
