"""Rows made ready for PostgreSQL's binary COPY in another process (ledger.copy_rows): the
server reads back exactly the values, and a bulk write given a part made ready elsewhere
stores what it stores given the same events and rows as values, the chain included."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import store
from ledger.copy_rows import SIGNATURE, copy_rows
from ledger.store import (
    ChainHasher,
    PensionerRow,
    RegisterVersion,
    chain_blocks,
    copied_part,
    event_hashes,
)
from tests.conftest import PG_DSN, examples, require_postgres

TYPES = {"uuid": "uuid", "int8": "bigint", "text": "text", "bytea": "bytea"}
VALUES = {
    "uuid": st.uuids(),
    "int8": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    # PostgreSQL's text holds no NUL.
    "text": st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"),
                    max_size=60),
    "bytea": st.binary(max_size=60),
}


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[tuple[Any, ...]]]:
    types = draw(st.lists(st.sampled_from(sorted(TYPES)), min_size=1, max_size=5))
    rows = draw(st.lists(st.tuples(*(VALUES[t] for t in types)), max_size=20))
    return types, rows


@pytest.fixture(scope="module")
def conn() -> Iterator[psycopg.Connection[Any]]:
    require_postgres()
    with psycopg.connect(PG_DSN, autocommit=True) as c:
        yield c


@settings(max_examples=examples(60), deadline=None)
@given(table=tables())
def test_the_server_reads_back_every_value(conn: psycopg.Connection[Any],
                                           table: tuple[list[str], list[tuple[Any, ...]]]
                                           ) -> None:
    types, rows = table
    data = copy_rows(types, rows)
    assert data.count == len(rows) and data.whole().startswith(SIGNATURE)
    columns = ", ".join(f"c{i} {TYPES[t]}" for i, t in enumerate(types))
    with conn.transaction(force_rollback=True):
        conn.execute(f"CREATE TEMP TABLE copied (n serial, {columns}) ON COMMIT DROP")
        names = ", ".join(f"c{i}" for i in range(len(types)))
        with conn.cursor().copy(f"COPY copied ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(data.whole())
        back = conn.execute(f"SELECT {names} FROM copied ORDER BY n").fetchall()
    assert back == rows


def test_the_least_and_greatest_key_are_kept() -> None:
    ids = [uuid.uuid4() for _ in range(50)]
    data = copy_rows(("uuid", "int8"), [(pid, 1) for pid in ids], keyed=True)
    assert (data.least_id, data.greatest_id) == (min(ids), max(ids))
    assert copy_rows(("uuid",), [(ids[0],)]).least_id is None  # not keyed
    assert copy_rows(("uuid",), [], keyed=True).count == 0


def test_an_unknown_type_or_a_row_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(AssertionError):
        copy_rows(("json",), [("{}",)])
    with pytest.raises(AssertionError):
        copy_rows(("uuid", "int8"), [(uuid.uuid4(),)])


# ---- the chain, with hashes made elsewhere ------------------------------------------------

events_ = st.lists(st.builds(
    StoredEvent, originator_id=st.uuids(), originator_version=st.integers(1, 10**9),
    topic=st.sampled_from(["a.b:C.D", "主题"]), state=st.binary(max_size=40)),
    min_size=1, max_size=30)


@settings(max_examples=examples(150), deadline=None)
@given(events=events_, first_id=st.integers(1, 10**9), block_size=st.integers(1, 8),
       cuts=st.lists(st.integers(0, 30), max_size=5), elsewhere=st.lists(st.booleans(),
                                                                         max_size=6))
def test_hashes_made_elsewhere_chain_as_the_events_themselves(
        events: list[StoredEvent], first_id: int, block_size: int, cuts: list[int],
        elsewhere: list[bool]) -> None:
    with mock.patch.object(store, "MAX_BLOCK_EVENTS", block_size):
        hasher = ChainHasher(first_id)
        edges = sorted({0, len(events), *(c for c in cuts if c < len(events))})
        for n, (start, end) in enumerate(zip(edges, edges[1:], strict=False)):
            if n < len(elsewhere) and elsewhere[n]:
                hasher.add_hashes(event_hashes(first_id + start, events[start:end]))
            else:
                hasher.add(events[start:end])
        assert hasher.blocks() == chain_blocks(first_id, events)


# ---- a bulk write given a part made ready elsewhere -----------------------------------------

def test_a_copied_part_is_the_rows_and_hashes_of_its_events() -> None:
    pid = uuid.uuid4()
    events = [StoredEvent(pid, 4, "t:T.E", b'{"a":1}')]
    part = copied_part(100, events, [RegisterVersion(pid, 3, 4)],
                       [PensionerRow(pid, "[1]", None)], [(pid, "2026-01", "E2E")])
    assert part.first_id == 100 and part.event_hashes == event_hashes(100, events)
    assert part.events == copy_rows(store.EVENT_COPY_TYPES, [(pid, 4, "t:T.E", b'{"a":1}', 100)])
    assert (part.register_versions.count, part.pensioner_facts.count,
            part.paid_months_add.count) == (1, 1, 1)
    assert part.pensioner_facts.least_id == pid
    with pytest.raises(AssertionError, match="facts only"):
        copied_part(100, events, pensioners=[PensionerRow(pid, "[1]", b"payee")])
