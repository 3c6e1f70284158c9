"""Rows packed for PostgreSQL's binary COPY (ledger.binary_copy) are stored as the values
they were made from, and are the bytes psycopg's own write_row sends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import binary_copy
from ledger.store import StoredEvent
from tests.conftest import PG_DSN, examples, require_postgres

INT8 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=40)
IDS = st.uuids()
ROWS = 20

SETTINGS = settings(max_examples=examples(25), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def conn() -> Iterator[Any]:
    require_postgres()
    with psycopg.connect(PG_DSN, autocommit=True) as c:
        c.execute("CREATE TEMP TABLE versions (id uuid, a int8, b int8)")
        c.execute("CREATE TEMP TABLE facts (id uuid, t text)")
        c.execute("CREATE TEMP TABLE paid (id uuid, a text, b text)")
        c.execute("CREATE TEMP TABLE events (id uuid, version int8, topic text, "
                  "state bytea, nid int8)")
        yield c


def copied(conn: Any, table: str, rows: bytes) -> list[tuple[Any, ...]]:
    """The rows stored by COPY of `rows`, in order; the table emptied again."""
    with conn.cursor() as curs:
        curs.execute(f"TRUNCATE {table}")
        with curs.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(binary_copy.stream(rows))
        return curs.execute(f"SELECT * FROM {table} ORDER BY ctid").fetchall()


def psycopg_bytes(conn: Any, table: str, types: list[str], rows: list[tuple[Any, ...]]
                  ) -> bytes:
    """What psycopg's write_row sends for the rows (read back by COPY TO: the same format)."""
    with conn.cursor() as curs:
        curs.execute(f"TRUNCATE {table}")
        with curs.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)
        out = bytearray()
        with curs.copy(f"COPY {table} TO STDOUT (FORMAT BINARY)") as copy:
            for data in copy:
                out += data
        return bytes(out)


@SETTINGS
@given(rows=st.lists(st.tuples(IDS, INT8, INT8), max_size=ROWS))
def test_versions_are_stored_as_given(conn: Any, rows: list[tuple[UUID, int, int]]) -> None:
    packed = binary_copy.ids_versions(rows)
    assert copied(conn, "versions", packed) == rows
    assert binary_copy.stream(packed) == psycopg_bytes(
        conn, "versions", ["uuid", "int8", "int8"], rows)


@SETTINGS
@given(rows=st.lists(st.tuples(IDS, TEXT), max_size=ROWS))
def test_facts_are_stored_as_given(conn: Any, rows: list[tuple[UUID, str]]) -> None:
    packed = binary_copy.ids_texts(rows)
    assert copied(conn, "facts", packed) == rows
    assert binary_copy.stream(packed) == psycopg_bytes(conn, "facts", ["uuid", "text"], rows)


@SETTINGS
@given(rows=st.lists(st.tuples(IDS, TEXT, TEXT), max_size=ROWS))
def test_paid_months_are_stored_as_given(conn: Any, rows: list[tuple[UUID, str, str]]
                                         ) -> None:
    packed = binary_copy.ids_two_texts(rows)
    assert copied(conn, "paid", packed) == rows
    assert binary_copy.stream(packed) == psycopg_bytes(
        conn, "paid", ["uuid", "text", "text"], rows)


@SETTINGS
@given(rows=st.lists(st.tuples(IDS, st.integers(min_value=1, max_value=2**40),
                               st.sampled_from(["a:B.C", "ledger.x:Y.Z", "话题"]),
                               st.binary(max_size=300)), max_size=ROWS),
       first_id=st.integers(min_value=1, max_value=2**62))
def test_events_are_stored_with_their_notification_ids(
        conn: Any, rows: list[tuple[UUID, int, str, bytes]], first_id: int) -> None:
    stored = [StoredEvent(pid, version, topic, state) for pid, version, topic, state in rows]
    packed = binary_copy.events(stored, first_id)
    expected = [(*row, first_id + i) for i, row in enumerate(rows)]
    assert copied(conn, "events", packed) == expected
    assert binary_copy.stream(packed) == psycopg_bytes(
        conn, "events", ["uuid", "int8", "text", "bytea", "int8"], expected)
