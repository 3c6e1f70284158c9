"""A bulk write's transaction has its WAL full-page images compressed (lz4) where the server
has lz4 and the role may set wal_compression; otherwise it leaves the setting alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from psycopg.rows import dict_row

from ledger import store
from ledger.application import Ledger
from tests.conftest import PG_DSN, require_postgres


@pytest.fixture
def curs() -> Iterator[Any]:
    """A cursor in a transaction that is rolled back (roles made in it, too)."""
    require_postgres()
    with psycopg.connect(PG_DSN) as conn, conn.cursor(row_factory=dict_row) as c:
        yield c
        conn.rollback()


def setting(curs: Any) -> str:
    curs.execute("SELECT current_setting('wal_compression') AS v")
    value: str = curs.fetchone()["v"]
    return value


def test_a_role_that_may_set_it_compresses_its_transaction_s_wal(curs: Any) -> None:
    curs.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    assert curs.fetchone()["rolsuper"], "the tests connect as a superuser"
    before = setting(curs)
    assert store.compress_wal(curs) is True
    assert setting(curs) == "lz4"
    curs.connection.rollback()  # SET LOCAL: to the end of the transaction only
    assert setting(curs) == before


def test_a_role_that_may_not_leaves_the_setting_as_it_is(curs: Any) -> None:
    curs.execute("CREATE ROLE ledger_test_plain NOSUPERUSER")
    curs.execute("SET ROLE ledger_test_plain")
    before = setting(curs)
    assert store.compress_wal(curs) is False
    assert setting(curs) == before


def test_a_bulk_write_runs_compressed(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger(pg_url)
    ledger.init()
    seen: list[str] = []
    compress = store.compress_wal

    def spied(c: Any) -> bool:
        done = compress(c)
        seen.append(setting(c))
        return done

    monkeypatch.setattr(store, "compress_wal", spied)
    ledger.recorder.insert_events_bulk([  # type: ignore[attr-defined]
        StoredEvent(originator_id=uuid4(), originator_version=1, topic="test:Event",
                    state=b"{}")])
    assert seen == ["lz4"]
