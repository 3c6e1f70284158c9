"""A bulk write sent to the database while the rows are still being made.

Funding a province's month writes a million events and rewrites a million rows of each
register in one transaction. Written after everything is made, PostgreSQL's statements run
one after another while this process waits (about half of funding's time); sent a chunk at a
time as the chunks are made, the server stores one chunk while Python makes the next.

`bulk_write(recorder)` opens the write:
  - `add(events, **ride_along)` sends a chunk: its events (in order) and the kinds of
    ride-along rows that can go a chunk at a time (STREAMED): the participant register's
    versions, the pensioner register's facts (facts only) and the paid months;
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
from uuid import UUID

from eventsourcing.persistence import IntegrityError
from psycopg.sql import SQL, Composed, Identifier

from ledger.store import (
    BULK_IDLE_LIMIT_S,
    ChainHasher,
    EventRow,
    LedgerPostgresRecorder,
    PensionerRow,
    RegisterVersion,
)

# The ride-along rows a chunk may carry; the others go with finish.
STREAMED = frozenset({"register_versions", "pensioners", "paid_months_add"})
MAX_QUEUED_CHUNKS = 4  # chunks made but not yet sent: bounds what waits in memory
MAX_CHUNK_ROWS = 100_000
FINISH_WAIT_S = 600.0  # the longest finish waits for the server to store what was sent

Job = Callable[[Any], None]


class BulkWrite(Protocol):
    def add(self, events: Sequence[EventRow], **ride_along: Any) -> None: ...
    def finish(self, events: Sequence[EventRow], **ride_along: Any) -> int: ...


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
    """PostgreSQL: one transaction held by a writer thread, fed chunk by chunk."""

    def __init__(self, recorder: LedgerPostgresRecorder) -> None:
        self.recorder = recorder
        self.schema = recorder._schema
        self.events_table = SQL("{s}.{t}").format(s=self.schema,
                                                  t=Identifier(recorder.events_table_name))
        self.jobs: Queue[Job | object] = Queue(maxsize=MAX_QUEUED_CHUNKS)
        self.error: BaseException | None = None
        self.committed = threading.Event()
        self.closed = False
        self.finished = False
        self.count = 0
        # Set by the writer thread in _begin, before any chunk's job runs.
        self.chain: ChainHasher | None = None
        self.first_id = self.next_id = 0
        self.thread = threading.Thread(target=self._run, name="streamed-write", daemon=True)
        self.thread.start()

    # ---- this thread ----------------------------------------------------------------

    def add(self, events: Sequence[EventRow], **ride_along: Any) -> None:
        assert not self.finished
        _check_streamed(ride_along)
        assert len(events) <= MAX_CHUNK_ROWS
        self._raise_failed()
        self.count += len(events)
        self._put(lambda curs: self._write_chunk(curs, events, **ride_along))

    def finish(self, events: Sequence[EventRow], **ride_along: Any) -> int:
        """Send the rest, commit, and wait for it: the count of events stored."""
        assert not self.finished
        self.finished = True
        self._raise_failed()
        self.count += len(events)
        self._put(lambda curs: self._write_last(curs, events, **ride_along))
        self._put(_COMMIT)
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
            self._put(_ABORT)
            self.thread.join(FINISH_WAIT_S)

    def _put(self, job: Job | object) -> None:
        self.jobs.put(job)

    def _raise_failed(self) -> None:
        if self.error is not None:
            raise self.error

    # ---- the writer thread ----------------------------------------------------------

    def _run(self) -> None:
        try:
            with (self.recorder.datastore.get_connection() as conn, conn.transaction(),
                  conn.cursor() as curs):
                self._begin(curs)
                while (job := self.jobs.get()) is not _COMMIT:
                    if job is _ABORT:
                        raise _Aborted
                    assert callable(job)
                    job(curs)
            self.committed.set()
        except _Aborted:
            return
        except BaseException as e:
            self.error = e
            # Keep taking what this thread is sent, so that the sender never waits on a
            # full queue; it sees the error at its next add, or at finish.
            while self.jobs.get() not in (_COMMIT, _ABORT):
                pass

    def _begin(self, curs: Any) -> None:
        recorder = self.recorder
        # This thread waits between chunks while the other makes them: more than
        # eventsourcing's idle-in-transaction limit at times.
        curs.execute(f"SET LOCAL idle_in_transaction_session_timeout = '{BULK_IDLE_LIMIT_S}s'")
        recorder._lock_table(curs)
        recorder._notify_channel(curs)
        # Under the EXCLUSIVE lock no other writer takes ids until this commits: the ids
        # from here on are this write's, contiguous; the sequence is set past the last at
        # the end.
        curs.execute("SELECT nextval(pg_get_serial_sequence(%s, 'notification_id')) AS first",
                     (self._table_name(curs),))
        row = curs.fetchone()
        assert row is not None
        self.first_id = self.next_id = row["first"]
        self.chain = ChainHasher(self.next_id)
        # One table each for a chunk's register rows: filled, used, emptied again.
        curs.execute("CREATE TEMP TABLE streamed_versions_in (participant_id uuid, "
                     "from_version bigint, version bigint) ON COMMIT DROP")
        curs.execute("CREATE TEMP TABLE streamed_facts_in (participant_id uuid, facts text) "
                     "ON COMMIT DROP")

    def _table_name(self, curs: Any) -> str:
        return str(self.events_table.as_string(curs.connection))

    def _write_events(self, curs: Any, events: Sequence[EventRow]) -> None:
        if not events:
            return
        assert self.chain is not None
        with curs.copy(SQL("COPY {t} (originator_id, originator_version, topic, state, "
                           "notification_id) FROM STDIN (FORMAT BINARY)")
                       .format(t=self.events_table)) as copy:
            copy.set_types(["uuid", "int8", "text", "bytea", "int8"])
            write_row = copy.write_row
            nid = self.next_id
            for s in events:
                write_row((s.originator_id, s.originator_version, s.topic, s.state, nid))
                nid += 1
        self.chain.add(events)
        self.next_id = nid

    def _write_chunk(self, curs: Any, events: Sequence[EventRow], *,
                     register_versions: Sequence[RegisterVersion] = (),
                     pensioners: Sequence[PensionerRow] = (),
                     paid_months_add: Sequence[tuple[UUID, str, str]] = ()) -> None:
        self._write_events(curs, events)
        s = self.schema
        if register_versions:
            self._update_from(curs, "streamed_versions_in", ["uuid", "int8", "int8"],
                              register_versions, SQL(
                                  "UPDATE {s}.participant_register AS r SET version = u.version "
                                  "FROM streamed_versions_in AS u "
                                  "WHERE r.participant_id = u.participant_id "
                                  "AND r.version = u.from_version").format(s=s))
        if pensioners:
            self._update_from(curs, "streamed_facts_in", ["uuid", "text"],
                              [(r.participant_id, r.facts) for r in pensioners], SQL(
                                  "UPDATE {s}.pensioner_register AS r SET facts = u.facts "
                                  "FROM streamed_facts_in AS u "
                                  "WHERE r.participant_id = u.participant_id").format(s=s))
        if paid_months_add:
            # COPY, like a plain INSERT, violates the key if anyone is paid twice for a month.
            with curs.copy(SQL("COPY {s}.paid_months (participant_id, month, end_to_end_id) "
                               "FROM STDIN (FORMAT BINARY)").format(s=s)) as copy:
                copy.set_types(["uuid", "text", "text"])
                for paid in paid_months_add:
                    copy.write_row(paid)

    def _update_from(self, curs: Any, temp: str, types: list[str],
                     rows: Sequence[tuple[Any, ...]], update: Composed) -> None:
        """UPDATE ... FROM a temporary table holding the chunk's rows. The chunk's ids lie
        in one range of the register's key (a batch's lines come in participant id order),
        so the statement reads only that range, not the whole register; a row count short
        of the rows is a row written by someone else since it was read."""
        with curs.copy(SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(Identifier(temp))
                       ) as copy:
            copy.set_types(types)
            write_row = copy.write_row
            for r in rows:
                write_row(r)
        ids = [r[0] for r in rows]
        curs.execute(update + SQL(" AND r.participant_id BETWEEN %s AND %s"),
                     (min(ids), max(ids)))
        if curs.rowcount != len(rows):
            raise IntegrityError(f"{temp}: a register row changed since it was read")
        curs.execute(SQL("TRUNCATE {}").format(Identifier(temp)))

    def _write_last(self, curs: Any, events: Sequence[EventRow], **ride_along: Any) -> None:
        self._write_events(curs, events)
        assert self.chain is not None and self.next_id - self.first_id == self.count > 0
        self.recorder._write_ride_along(curs, **ride_along)
        curs.execute("SELECT setval(pg_get_serial_sequence(%s, 'notification_id'), %s)",
                     (self._table_name(curs), self.next_id - 1))
        self.recorder._append_blocks(curs, self.chain.blocks())
