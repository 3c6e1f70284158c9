"""A bulk write sent to the database while the rows are still being made.

Funding a province's month writes a million events and rewrites a million rows of each
register in one transaction. Written after everything is made, PostgreSQL's statements run
one after another while this process waits (about half of funding's time); sent a chunk at a
time as the chunks are made, the server stores one chunk while Python makes the next.

`bulk_write(recorder)` opens the write:
  - `add(events, **ride_along)` sends a chunk: its events (in order) and the kinds of
    ride-along rows that can go a chunk at a time (STREAMED): the participant register's
    versions, the pensioner register's facts (facts only) and the paid months;
  - `add_copied(part)` sends a chunk made ready in another process (ledger.store.copied_part:
    its rows in the binary COPY format, its events' hashes), whose first event is to have
    the notification id `next_id()` gives (on PostgreSQL only: elsewhere ids are given at
    finish, and next_id() is None);
  - `finish(events, **ride_along)` sends the last events and every other ride-along row (the
    fund's guarded balances among them), hashes the chain and commits;
  - leaving the `with` block without finish, or on an error, rolls everything back.
The whole write is one transaction, as insert_events_bulk: a crash or a refusal at any point
stores nothing. On PostgreSQL, the transaction lives in a thread of its own, which sends each
chunk's statements while this thread makes the next chunk (the waits release the
interpreter's lock); an error there (a register row changed since it was read: IntegrityError)
is raised here at the next add or at finish. Elsewhere (SQLite, one writer at a time), the
chunks are collected and written by insert_events_bulk at finish.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from queue import Queue
from typing import Any, Protocol

from ledger.store import (
    BulkTransaction,
    CopiedPart,
    EventRow,
    LedgerPostgresRecorder,
    PensionerRow,
)

# The ride-along rows a chunk may carry; the others go with finish.
STREAMED = frozenset({"register_versions", "pensioners", "paid_months_add"})
MAX_QUEUED_CHUNKS = 4  # chunks made but not yet sent: bounds what waits in memory
MAX_CHUNK_ROWS = 100_000
FINISH_WAIT_S = 600.0  # the longest finish waits for the server to store what was sent
BEGIN_WAIT_S = 60.0  # the longest next_id waits for the transaction to take its first id

Job = Callable[[BulkTransaction], None]


class BulkWrite(Protocol):
    def add(self, events: Sequence[EventRow], **ride_along: Any) -> None: ...
    def finish(self, events: Sequence[EventRow], **ride_along: Any) -> int: ...

    def next_id(self) -> int | None:
        """The notification id the next event added will be stored with; None where it is
        known only when the write is stored (then parts cannot be made ready elsewhere)."""
        ...

    def add_copied(self, part: CopiedPart) -> None: ...


@contextmanager
def bulk_write(recorder: Any) -> Iterator[BulkWrite]:
    """A bulk write on the recorder: streamed on PostgreSQL, collected elsewhere."""
    write: StreamedWrite | CollectedWrite
    if isinstance(recorder, LedgerPostgresRecorder):
        write = StreamedWrite(recorder)
    else:
        write = CollectedWrite(recorder)
    try:
        yield write
    finally:
        write.close()


def _check_streamed(ride_along: dict[str, Any]) -> None:
    extra = {k for k, v in ride_along.items() if v} - STREAMED
    assert not extra, f"not written a chunk at a time: {sorted(extra)}"
    pensioners: Sequence[PensionerRow] = ride_along.get("pensioners", ())
    assert all(r.payee is None for r in pensioners), "a chunk carries facts only"


class CollectedWrite:
    """The chunks kept, and written by insert_events_bulk at finish."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self.events: list[EventRow] = []
        self.ride_along: dict[str, list[Any]] = {name: [] for name in STREAMED}
        self.finished = False

    def add(self, events: Sequence[EventRow], **ride_along: Any) -> None:
        assert not self.finished
        _check_streamed(ride_along)
        self.events += events
        for name, rows in ride_along.items():
            self.ride_along[name] += rows

    def next_id(self) -> int | None:
        return None

    def add_copied(self, part: CopiedPart) -> None:
        raise AssertionError("parts are made ready elsewhere only for a streamed write")

    def finish(self, events: Sequence[EventRow], **ride_along: Any) -> int:
        assert not self.finished
        self.events += events
        merged: dict[str, Any] = dict(ride_along)
        for name, rows in self.ride_along.items():
            merged[name] = [*rows, *ride_along.get(name, ())]
        count: int = self.recorder.insert_events_bulk(self.events, **merged)
        self.finished = True
        return count

    def close(self) -> None:
        self.events.clear()


_COMMIT = object()
_ABORT = object()


class _Aborted(Exception):
    pass


class StreamedWrite:
    """PostgreSQL: a BulkTransaction held by a writer thread, fed chunk by chunk."""

    def __init__(self, recorder: LedgerPostgresRecorder) -> None:
        self.recorder = recorder
        self.jobs: Queue[Job | object] = Queue(maxsize=MAX_QUEUED_CHUNKS)
        self.error: BaseException | None = None
        self.committed = threading.Event()
        self.began = threading.Event()
        self.first_id = 0  # the transaction's first notification id, once it began
        self.closed = False
        self.finished = False
        self.count = 0
        self.thread = threading.Thread(target=self._run, name="streamed-write", daemon=True)
        self.thread.start()

    # ---- this thread ----------------------------------------------------------------

    def add(self, events: Sequence[EventRow], **ride_along: Any) -> None:
        assert not self.finished
        _check_streamed(ride_along)
        assert len(events) <= MAX_CHUNK_ROWS
        self._raise_failed()
        self.count += len(events)
        self.jobs.put(lambda write: write.add(events, **ride_along))

    def next_id(self) -> int:
        """The id of the next event added: the transaction's first (taken under the events
        table's lock, so the ids from it on are this write's) and the count sent so far."""
        if not self.began.wait(BEGIN_WAIT_S):
            self._raise_failed()
            raise TimeoutError(f"the bulk write did not begin within {BEGIN_WAIT_S} s")
        self._raise_failed()
        return self.first_id + self.count

    def add_copied(self, part: CopiedPart) -> None:
        """A part made ready elsewhere (ledger.store.copied_part), whose first event is to
        be stored with next_id()."""
        assert not self.finished
        self._raise_failed()  # the transaction checks the part's place (add_copied)
        self.count += part.events.count
        self.jobs.put(lambda write: write.add_copied(part))

    def finish(self, events: Sequence[EventRow], **ride_along: Any) -> int:
        """Send the rest, commit, and wait for it: the count of events stored."""
        assert not self.finished
        self.finished = True
        self._raise_failed()
        self.count += len(events)

        def last(write: BulkTransaction) -> None:
            write.add(events, **ride_along)
            assert write.finish() == self.count

        self.jobs.put(last)
        self.jobs.put(_COMMIT)
        self.thread.join(FINISH_WAIT_S)
        if self.thread.is_alive():
            raise TimeoutError(f"the bulk write did not commit within {FINISH_WAIT_S} s")
        self._raise_failed()
        assert self.committed.is_set()
        return self.count

    def close(self) -> None:
        """Roll back unless committed; the writer thread ends either way."""
        if self.closed:
            return
        self.closed = True
        if self.thread.is_alive():
            self.jobs.put(_ABORT)
            self.thread.join(FINISH_WAIT_S)

    def _raise_failed(self) -> None:
        if self.error is not None:
            raise self.error

    # ---- the writer thread ----------------------------------------------------------

    def _run(self) -> None:
        try:
            with (self.recorder.datastore.get_connection() as conn, conn.transaction(),
                  conn.cursor() as curs):
                write = BulkTransaction(self.recorder, curs)
                self.first_id = write.first_id
                self.began.set()
                while (job := self.jobs.get()) is not _COMMIT:
                    if job is _ABORT:
                        raise _Aborted
                    assert callable(job)
                    job(write)
            self.committed.set()
        except _Aborted:
            return
        except BaseException as e:
            self.error = e
            self.began.set()  # next_id raises it
            # Keep taking what this thread is sent, so that the sender never waits on a
            # full queue; it sees the error at its next add, or at finish.
            while self.jobs.get() not in (_COMMIT, _ABORT):
                pass
