"""Processes started together on a new PostgreSQL schema (a deployment's services: the API,
the relay, the consumers) each set up the tables they need; one at a time, so none of them
fails on another's CREATE."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Barrier

import psycopg

from tests.conftest import PG_DSN

PROCESSES = 4


def start(url: str, barrier: Barrier) -> str:
    from ledger.application import Ledger
    from ledger.projections import ProjectionRunner

    try:
        barrier.wait(timeout=60)
        ledger = Ledger(url, cipher_key="")
        ProjectionRunner(ledger)  # sets the views up
        ledger.close()
    except Exception as e:  # reported to the test, which names it
        return f"{type(e).__name__}: {e}"
    return "ok"


def test_services_started_together_all_set_the_schema_up(pg_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(PROCESSES)
        with context.Pool(PROCESSES) as pool:
            results = pool.starmap(start, [(pg_url, barrier)] * PROCESSES)
    assert results == ["ok"] * PROCESSES
    schema = pg_url.rsplit("schema=", 1)[1]
    with psycopg.connect(PG_DSN) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,))}
    assert {"participant_register", "pensioner_register", "event_chain"} <= tables
    assert any(t.startswith("proj_") for t in tables)


def test_event_states_are_compressed_with_lz4_where_the_server_has_it(pg_url: str) -> None:
    """A month's batch stores its lines as events of megabytes: lz4 writes them about three
    times as fast as PostgreSQL's default. Set once; starting again changes nothing."""
    from ledger.application import Ledger

    for _ in range(2):
        ledger = Ledger(pg_url, cipher_key="")
        table = ledger.recorder.events_table_name  # type: ignore[attr-defined]
        ledger.close()
    schema = pg_url.rsplit("schema=", 1)[1]
    with psycopg.connect(PG_DSN) as conn:
        [(methods,)] = conn.execute("SELECT enumvals FROM pg_settings "
                                    "WHERE name = 'default_toast_compression'").fetchall()
        [(compression,)] = conn.execute(
            "SELECT attcompression FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attname = 'state'", (f'"{schema}"."{table}"',)).fetchall()
    assert compression == ("l" if "lz4" in methods else "")
