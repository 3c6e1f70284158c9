"""A bulk write sent chunk by chunk (ledger.streamed_write): on PostgreSQL each chunk is
stored by a writer thread while the caller makes the next; elsewhere the chunks are kept and
written at the end. Either way it is one transaction: it stores what one insert_events_bulk
of the same rows stores, or, on any error, nothing."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError

from ledger.aggregates.participant import participant_id
from ledger.application import Ledger
from ledger.audit import verify_chain
from ledger.store import BulkEvent, PensionerRow, RegisterVersion
from ledger.streamed_write import bulk_write
from tests.conftest import PG_DSN
from tests.helpers import contribute, enrol, make_id
from tests.test_bulk_store import TOPIC, stored_count, stray_events, write

PEOPLE = 6


def people(ledger: Ledger) -> list[uuid.UUID]:
    """Six enrolled participants, in the order of their ids (as a batch's lines come), each
    with a pensioner-register row."""
    pids = []
    for n in range(PEOPLE):
        enrol(ledger, make_id(100 + n))
        pids.append(participant_id(make_id(100 + n)))
    pids.sort()
    write(ledger, stray_events(1), pensioners=[
        PensionerRow(pid, f'["facts of {pid}", 0]', b"payee") for pid in pids])
    return pids


def chunks_for(pids: list[uuid.UUID], events: list[BulkEvent], cuts: list[int]
               ) -> list[tuple[list[BulkEvent], dict[str, Any]]]:
    """The write's chunks: an event, a version move, new facts and a paid month per person,
    cut at the given indexes."""
    bounds = [0, *cuts, len(pids)]
    out = []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        out.append((events[lo:hi], {
            "register_versions": [RegisterVersion(pid, 1, 2) for pid in pids[lo:hi]],
            "pensioners": [PensionerRow(pid, f'["paid {pid}", 1]', None)
                           for pid in pids[lo:hi]],
            "paid_months_add": [(pid, "2026-01", f"E2E-{pid.hex[:8]}") for pid in pids[lo:hi]],
        }))
    return out


def what_is_stored(ledger: Ledger, after: int) -> tuple[Any, ...]:
    events = [(n.originator_id, n.originator_version, n.topic, n.state)
              for n in ledger.recorder.select_notifications(start=after + 1, limit=1000)]
    q = ledger.queries
    versions = q.fetch("SELECT participant_id, version FROM {p}participant_register "
                       "ORDER BY participant_id")
    facts = q.fetch("SELECT participant_id, facts, payee FROM {p}pensioner_register "
                    "ORDER BY participant_id")
    paid = q.fetch("SELECT participant_id, month, end_to_end_id FROM {p}paid_months "
                   "ORDER BY participant_id")
    return events, [tuple(r) for r in versions], [(r[0], r[1], bytes(r[2])) for r in facts], \
        [tuple(r) for r in paid]


@pytest.mark.parametrize("cuts", [[], [1], [2, 3, 5], [1, 2, 3, 4, 5]],
                         ids=["one chunk", "two", "four", "six"])
def test_a_streamed_write_stores_what_one_bulk_write_stores(
        ledger: Ledger, twin: Ledger, cuts: list[int]) -> None:
    pids, twin_pids = people(ledger), people(twin)
    assert pids == twin_pids
    lead = stray_events(2)  # the fund's and the batch's events, say: no ride-along
    # Events of aggregates of their own (the store does not read what they say).
    events = [BulkEvent(uuid.uuid5(pid, "paid"), 1, TOPIC, b'{"paid":"%s"}' % pid.hex.encode())
              for pid in pids]
    last = stray_events(3)
    fund_deltas = {"1003": 0}
    chunks = chunks_for(pids, events, cuts)
    before, twin_before = stored_count(ledger), stored_count(twin)

    with bulk_write(ledger.recorder) as w:
        w.add(lead)
        for chunk_events, ride_along in chunks:
            w.add(chunk_events, **ride_along)
        assert w.finish(last, fund_deltas=fund_deltas) == 2 + PEOPLE + 3
    whole = chunks_for(pids, events, [])[0][1]
    write(twin, [*lead, *events, *last], fund_deltas=fund_deltas, **whole)

    assert what_is_stored(ledger, before) == what_is_stored(twin, twin_before)
    ids = [n.id for n in ledger.recorder.select_notifications(start=before + 1, limit=100)]
    assert ids == list(range(before + 1, before + 1 + 2 + PEOPLE + 3))
    # The next writes take the ids after the write's last.
    write(ledger, stray_events(1))
    assert stored_count(ledger) == ids[-1] + 1
    report = verify_chain(ledger)
    assert report.ok, report.problems


def stale_in_the_third_chunk(pids: list[uuid.UUID]) -> list[tuple[list[BulkEvent],
                                                                  dict[str, Any]]]:
    events = [BulkEvent(uuid.uuid5(pid, "paid"), 1, TOPIC, b"{}") for pid in pids]
    chunks = chunks_for(pids, events, [2, 4])
    chunks[1][1]["register_versions"][0] = RegisterVersion(pids[2], 7, 8)  # read at 7: stale
    return chunks


def test_a_row_changed_since_it_was_read_refuses_the_whole_write(ledger: Ledger) -> None:
    pids = people(ledger)
    before = what_is_stored(ledger, 0)

    with pytest.raises(IntegrityError), bulk_write(ledger.recorder) as w:
        for chunk_events, ride_along in stale_in_the_third_chunk(pids):
            w.add(chunk_events, **ride_along)
        w.finish(stray_events(1))

    # Not the first chunk's rows, stored before the stale one was seen.
    assert what_is_stored(ledger, 0) == before
    assert verify_chain(ledger).ok
    write(ledger, stray_events(2))  # and the store takes the next write
    assert verify_chain(ledger).ok


def test_one_person_paid_twice_for_a_month_refuses_the_whole_write(ledger: Ledger) -> None:
    pids = people(ledger)
    before = what_is_stored(ledger, 0)
    again = (pids[0], "2026-01", "E2E-AGAIN")

    with pytest.raises(IntegrityError), bulk_write(ledger.recorder) as w:
        for chunk_events, ride_along in chunks_for(pids, [], [3]):
            w.add(chunk_events, **ride_along)
        w.add([], paid_months_add=[again])
        w.finish(stray_events(1))

    assert what_is_stored(ledger, 0) == before


class Stop(Exception):
    pass


def test_an_error_of_the_caller_between_chunks_stores_nothing(ledger: Ledger) -> None:
    pids = people(ledger)
    before = what_is_stored(ledger, 0)
    threads = threading.active_count()

    with pytest.raises(Stop), bulk_write(ledger.recorder) as w:
        for chunk_events, ride_along in chunks_for(pids, [], [3]):
            w.add(chunk_events, **ride_along)
        raise Stop

    assert what_is_stored(ledger, 0) == before
    assert threading.active_count() == threads  # the writer thread has ended
    write(ledger, stray_events(1))
    assert verify_chain(ledger).ok


def test_a_write_left_without_finish_stores_nothing(ledger: Ledger) -> None:
    pids = people(ledger)
    before = what_is_stored(ledger, 0)

    with bulk_write(ledger.recorder) as w:
        for chunk_events, ride_along in chunks_for(pids, [], [3]):
            w.add(chunk_events, **ride_along)

    assert what_is_stored(ledger, 0) == before


@pytest.fixture
def pg_ledger(pg_url: str) -> Iterator[Ledger]:
    app = Ledger(pg_url)
    app.init()
    yield app
    app.close()


LOCK_WAIT_S = 10.0


def wait_for_lock(ledger: Ledger) -> None:
    """Until a session holds the events table's EXCLUSIVE lock (the streamed write's)."""
    recorder: Any = ledger.recorder
    deadline = time.monotonic() + LOCK_WAIT_S
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND "
                "c.relname = %s AND l.mode = 'ExclusiveLock' AND l.granted",
                (recorder.datastore.schema, recorder.events_table_name)).fetchone()
            if row is not None and row[0]:
                return
            time.sleep(0.01)
    raise AssertionError(f"the streamed write took no lock within {LOCK_WAIT_S} s")


def test_another_writer_waits_for_the_streamed_write_and_comes_after_it(
        pg_ledger: Ledger) -> None:
    ledger = pg_ledger
    pids = people(ledger)
    enrol(ledger, make_id(200))
    before = stored_count(ledger)
    done = threading.Event()

    def contribution() -> None:
        contribute(ledger, make_id(200), 2016, 10000)
        done.set()

    with bulk_write(ledger.recorder) as w:
        w.add(stray_events(2))
        # The writer thread takes the lock on its own connection: the other writer starts
        # once it holds it (started sooner, the other could take it first).
        wait_for_lock(ledger)
        other = threading.Thread(target=contribution)
        for chunk_events, ride_along in chunks_for(pids, [], [3]):
            w.add(chunk_events, **ride_along)
            if not other.is_alive():
                other.start()
        # Held by the write's lock on the events table until it commits.
        assert not done.wait(0.5)
        w.finish(stray_events(1))
    other.join(10)

    assert done.is_set()
    notes = ledger.recorder.select_notifications(start=before + 1, limit=100)
    assert [n.id for n in notes[:3]] == list(range(before + 1, before + 4))
    assert all(n.topic == TOPIC for n in notes[:3])  # the streamed write's
    assert any(n.topic.endswith("ContributionReceived") for n in notes[3:])
    assert verify_chain(ledger).ok


def test_a_chunk_carries_only_the_rows_sent_a_chunk_at_a_time(ledger: Ledger) -> None:
    with bulk_write(ledger.recorder) as w, pytest.raises(AssertionError, match="fund_deltas"):
        w.add(stray_events(1), fund_deltas={"1003": 1})
    with bulk_write(ledger.recorder) as w, pytest.raises(AssertionError, match="facts only"):
        w.add([], pensioners=[PensionerRow(uuid.uuid4(), "[]", b"payee")])
