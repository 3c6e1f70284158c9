"""The bulk write path of the store: the hash chain hashed slice by slice while the rows
are sent, notification ids taken as one block, and the register version check."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import orjson
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ledger import store
from ledger.aggregates.participant import CHANNELS, participant_id
from ledger.application import Ledger
from ledger.audit import verify_chain
from ledger.bulk import (
    RECEIPT_MARK,
    _ContributionMapper,
    _Line,
    _Money,
    _Person,
    _validated_events,
    participant_key,
)
from ledger.store import (
    BulkEvent,
    ChainHasher,
    InsufficientFunds,
    OrjsonTranscoder,
    PydanticMapper,
    RegisterVersion,
    RegisterYears,
    chain_blocks,
    recorded_blocks,
)
from tests.conftest import examples
from tests.helpers import contribute, enrol, make_id

TOPIC = "ledger.aggregates.participant:Participant.ContributionReceived"


# ---- the chain, hashed a slice at a time ----------------------------------------------------

aggregate_ids = st.one_of(st.uuids(), st.uuids().map(str))
stored_events = st.lists(
    st.builds(StoredEvent, originator_id=aggregate_ids,
              originator_version=st.integers(min_value=1, max_value=10**12),
              topic=st.sampled_from([TOPIC, "ledger.aggregates.fund:Fund.Swept", "主题"]),
              state=st.binary(max_size=64)),
    min_size=1, max_size=40)


@settings(max_examples=examples(200), deadline=None)
@given(events=stored_events, first_id=st.integers(min_value=1, max_value=10**9),
       block_size=st.integers(min_value=1, max_value=12), cuts=st.lists(
           st.integers(min_value=0, max_value=40), max_size=6))
def test_the_chain_hashed_slice_by_slice_is_the_chain_of_the_stored_ids(
        events: list[StoredEvent], first_id: int, block_size: int, cuts: list[int]) -> None:
    # However the events are fed, the blocks are those an auditor recomputes from the ids.
    recorded = [(first_id + i, e) for i, e in enumerate(events)]
    with mock.patch.object(store, "MAX_BLOCK_EVENTS", block_size):
        expected = recorded_blocks(recorded)
        hasher = ChainHasher(first_id)
        edges = sorted({0, len(events), *(c for c in cuts if c < len(events))})
        for start, end in zip(edges, edges[1:], strict=False):
            hasher.add(events[start:end])
        assert hasher.blocks() == expected == chain_blocks(first_id, events)
    assert sum(b.event_count for b in expected) == len(events)
    assert all(0 < b.event_count <= block_size for b in expected)
    assert [b.first_id for b in expected] == list(range(first_id, first_id + len(events),
                                                        block_size))


@settings(max_examples=examples(300), deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_the_participant_key_is_the_participant_id(id_number: str) -> None:
    assert participant_key(id_number) == participant_id(id_number).bytes


# ---- the bulk write and what rides along --------------------------------------------------

def stored_count(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def write(ledger: Ledger, events: list[BulkEvent], **kwargs: Any) -> int:
    written: int = ledger.recorder.insert_events_bulk(events, **kwargs)  # type: ignore[attr-defined]
    return written


def stray_events(count: int) -> list[BulkEvent]:
    """Events of an aggregate nobody else writes (the store does not read what they say)."""
    aggregate = uuid.uuid4()
    return [BulkEvent(aggregate, v, TOPIC, b'{"n":%d}' % v) for v in range(1, count + 1)]


@pytest.mark.parametrize("copy_min_rows", [1, store.COPY_MIN_ROWS])
def test_a_stale_register_version_refuses_the_whole_write(
        ledger: Ledger, copy_min_rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # With COPY_MIN_ROWS 1 a PostgreSQL write takes the path of a year's import: the
    # register's update runs on the server while the chain is hashed.
    monkeypatch.setattr(store, "COPY_MIN_ROWS", copy_min_rows)
    idn = make_id(1)
    enrol(ledger, idn)
    pid = participant_id(idn)
    row = ledger.queries.register_row(pid)
    assert row is not None and row.version == 1
    before = stored_count(ledger)

    with pytest.raises(IntegrityError):
        write(ledger, stray_events(3), register_years=[
            RegisterYears(pid, row.version - 1, row.version + 1, '{"2016":["R",10000,false]}')])

    assert stored_count(ledger) == before
    assert ledger.queries.register_row(pid) == row
    assert verify_chain(ledger).ok


@pytest.mark.parametrize("copy_min_rows", [1, store.COPY_MIN_ROWS])
def test_the_register_years_are_written_with_the_events(
        ledger: Ledger, copy_min_rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "COPY_MIN_ROWS", copy_min_rows)
    idn = make_id(2)
    enrol(ledger, idn)
    pid = participant_id(idn)
    years = '{"2016":["R-2",10000,false]}'

    assert write(ledger, stray_events(4), register_years=[
        RegisterYears(pid, 1, 5, years)]) == 4

    row = ledger.queries.register_row(pid)
    assert row is not None and (row.version, row.contributed_years) == (5, years)
    assert verify_chain(ledger).ok


@pytest.mark.parametrize("copy_min_rows", [1, store.COPY_MIN_ROWS])
def test_register_versions_move_only_the_version(ledger: Ledger, copy_min_rows: int,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Funding's register write: the version moves, nothing else the row keeps.
    monkeypatch.setattr(store, "COPY_MIN_ROWS", copy_min_rows)
    pids = []
    for n in (4, 5):
        enrol(ledger, make_id(n))
        pids.append(participant_id(make_id(n)))
    contribute(ledger, make_id(4), 2016, 10000)
    before = {pid: ledger.queries.register_row(pid) for pid in pids}

    assert write(ledger, stray_events(2), register_versions=[
        RegisterVersion(pid, before[pid].version, before[pid].version + 1)  # type: ignore[union-attr]
        for pid in pids]) == 2

    for pid in pids:
        row, was = ledger.queries.register_row(pid), before[pid]
        assert row is not None and was is not None
        assert row.version == was.version + 1
        assert (row.status, row.birth_date, row.identity_groups, row.contributed_years) == (
            was.status, was.birth_date, was.identity_groups, was.contributed_years)
    assert verify_chain(ledger).ok


@pytest.mark.parametrize("copy_min_rows", [1, store.COPY_MIN_ROWS])
def test_a_stale_register_version_refuses_a_funding_write(
        ledger: Ledger, copy_min_rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "COPY_MIN_ROWS", copy_min_rows)
    enrol(ledger, make_id(6))
    enrol(ledger, make_id(7))
    fresh, stale = (ledger.queries.register_row(participant_id(make_id(n))) for n in (6, 7))
    assert fresh is not None and stale is not None
    before = stored_count(ledger)

    with pytest.raises(IntegrityError):
        write(ledger, stray_events(2), register_versions=[
            RegisterVersion(fresh.participant_id, fresh.version, fresh.version + 1),
            RegisterVersion(stale.participant_id, stale.version + 1, stale.version + 2)])

    # Nothing of the write stays: not the events, not the row that was still current.
    assert stored_count(ledger) == before
    assert ledger.queries.register_row(fresh.participant_id) == fresh
    assert ledger.queries.register_row(stale.participant_id) == stale
    assert verify_chain(ledger).ok


def test_ids_after_a_refused_bulk_write_still_chain(ledger: Ledger) -> None:
    # A refused write has taken its block of ids: the next writes, bulk and single, take
    # later ones, and every block still recomputes from the stored events.
    enrol(ledger, make_id(3))
    before = stored_count(ledger)
    with pytest.raises(InsufficientFunds):
        write(ledger, stray_events(5), fund_deltas={"1001": -1})
    assert stored_count(ledger) == before

    write(ledger, stray_events(7))
    contribute(ledger, make_id(3), 2016, 10000)
    write(ledger, stray_events(2))

    ids = [n.id for n in ledger.recorder.select_notifications(start=before + 1, limit=100)]
    assert len(ids) == 7 + 2 + 2 and ids == sorted(ids)
    report = verify_chain(ledger)
    assert report.ok, report.problems
    assert report.events == len(ledger.recorder.select_notifications(start=1, limit=10**6))


# ---- the fast mapping of contribution lines ---------------------------------------------------

class _MapperOnly:
    """What _ContributionMapper reads of a ledger."""

    def __init__(self) -> None:
        self.mapper = PydanticMapper(transcoder=OrjsonTranscoder())


@settings(max_examples=examples(200), deadline=None)
@given(receipts=st.lists(st.text(alphabet=st.characters(codec="utf-8"), min_size=1,
                                  max_size=30), min_size=2, max_size=6, unique=True),
       channel=st.sampled_from(CHANNELS), tier_fen=st.sampled_from([10000, 20000, 50000]),
       on_behalf=st.sampled_from([0, 3000, 10000]), back=st.booleans(),
       actor=st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=12))
# An actor named as the mark the receipt number is spliced at: every line the validated way.
@example(receipts=["0", "00"], channel="bank", tier_fen=10000, on_behalf=0, back=False,
         actor=RECEIPT_MARK)
def test_a_spliced_receipt_number_makes_the_mappers_bytes(
        receipts: list[str], channel: str, tier_fen: int, on_behalf: int, back: bool,
        actor: str) -> None:
    # Lines alike but for participant and receipt number share a learnt JSON; whatever the
    # receipt number holds (quotes, backslashes, any script), the spliced bytes are the
    # mapper's own.
    ledger = _MapperOnly()
    now = datetime(2024, 3, 1, 8, 30, tzinfo=UTC)
    mapper = _ContributionMapper(ledger, actor, now)  # type: ignore[arg-type]
    money = _Money("2024", f"{tier_fen // 100}.00", f"{(tier_fen - on_behalf) // 100}.00",
                   "2024-03-01", "true" if back else "")
    assert not money.problems
    for n, receipt in enumerate(receipts):
        idn = make_id(n)
        person = _Person.of_register(participant_id(idn), 1, "active", "1970-05-17",
                                     '[["2015-01-10","destitute"]]', "{}")
        stored: list[Any] = []
        added = mapper.add(person, money, channel, receipt, "destitute", "v1@2015-01-01",
                           stored)
        line = _Line(n, person.pid, idn, 2024, tier_fen, tier_fen - on_behalf, channel,
                     receipt, money.value_date, back)
        expected = [ledger.mapper.to_stored_event(e) for e in _validated_events(
            line, 1, "destitute", "v1@2015-01-01", actor, now)]
        assert added == len(stored) == len(expected) == (2 if on_behalf else 1)
        assert [(s.originator_id, s.originator_version, s.topic, s.state) for s in stored] \
            == [(s.originator_id, s.originator_version, s.topic, s.state) for s in expected]
    assert len(mapper.forms) == 1   # one learnt JSON for all the lines


def test_a_participants_register_years_stay_in_order_whatever_the_order_booked() -> None:
    # The register's JSON is ledger.application.register_row's: years in order. A year
    # after the last keeps the order by appending; an earlier one (a back-payment) sorts.
    years = '{"2015":["R1",20000,false],"2017":["R3",20000,false]}'
    later = _Person.of_register(participant_id(make_id(1)), 3, "enrolled", "1970-05-17",
                                '[["2015-01-10","ordinary"]]', years)
    later.book(2018, "R4", 20000, False, 1)
    earlier = _Person.of_register(participant_id(make_id(2)), 3, "enrolled", "1970-05-17",
                                  '[["2015-01-10","ordinary"]]', years)
    earlier.book(2016, "R2", 20000, True, 1)
    for person, added in ((later, "2018"), (earlier, "2016")):
        booked = orjson.loads(person.register_years().contributed_years)
        assert list(booked) == sorted(booked) and added in booked
        assert person.register_years().contributed_years == orjson.dumps(
            dict(sorted(booked.items()))).decode()
    assert list(orjson.loads(earlier.register_years().contributed_years)) == [
        "2015", "2016", "2017"]
