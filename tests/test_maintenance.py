"""`pension-ledger maintain`: the registers funding rewrites every month put back in
participant-id order on disk, their rows unchanged; in order already, only vacuumed."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from ledger import maintenance
from ledger.application import Ledger
from ledger.errors import Refused
from ledger.maintenance import MIN_CORRELATION, REGISTERS
from tests.conftest import PG_DSN
from tests.test_cli import cli, ok

PENSIONERS = 2_000


def rows_by_id(schema: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(PG_DSN) as conn:
        return conn.execute(f'SELECT * FROM "{schema}".{table} ORDER BY participant_id'
                            ).fetchall()


def ids_as_stored(schema: str, table: str) -> list[Any]:
    """The ids in the order the table holds its rows (by their place on disk)."""
    with psycopg.connect(PG_DSN) as conn:
        return [r[0] for r in conn.execute(
            f'SELECT participant_id FROM "{schema}".{table} ORDER BY ctid').fetchall()]


@pytest.fixture
def loaded(pg_url: str) -> tuple[str, str]:
    """A PostgreSQL ledger with a register loaded the way offices approve pensioners: in
    the order of their ID numbers, whose ids (uuid5) are in no order."""
    from bench.payout import populate

    ledger = Ledger(pg_url, cipher_key="")
    ledger.init(actor="admin")
    populate(ledger, PENSIONERS)
    ledger.close()
    return pg_url, pg_url.split("schema=")[1]


def test_a_register_loaded_in_no_order_is_put_in_id_order_with_the_same_rows(
        loaded: tuple[str, str]) -> None:
    url, schema = loaded
    before = {t: rows_by_id(schema, t) for t in REGISTERS}
    for table in REGISTERS:
        assert len(before[table]) >= PENSIONERS
        assert ids_as_stored(schema, table) != sorted(ids_as_stored(schema, table))
    ledger = Ledger(url, cipher_key="")
    done = ledger.keep_registers_in_order()
    assert [u["table"] for u in done] == list(REGISTERS)
    for u in done:
        assert u["correlation_before"] < MIN_CORRELATION
        assert u["clustered"]
        assert u["correlation_after"] > 0.99
    for table in REGISTERS:
        assert rows_by_id(schema, table) == before[table]
        stored = ids_as_stored(schema, table)
        assert stored == sorted(stored)
    # In order now: the second time only vacuums, and leaves the order as it is.
    again = ledger.keep_registers_in_order()
    assert [u["clustered"] for u in again] == [False] * len(REGISTERS)
    assert all(u["correlation_before"] > 0.99 for u in again)
    ledger.close()


def test_the_command_says_what_it_did(loaded: tuple[str, str]) -> None:
    url, _ = loaded
    out = ok(url, "maintain")
    assert [(u["table"], u["clustered"]) for u in out["registers"]] == [
        (t, True) for t in REGISTERS]
    shown = cli(url, "maintain")
    assert shown.exit_code == 0, shown.output
    for table in REGISTERS:
        assert table in shown.output
    assert "vacuumed" in shown.output and "put in id order" not in shown.output


def test_a_sqlite_store_has_nothing_to_do(sqlite_ledger: Ledger, tmp_path: Any) -> None:
    assert sqlite_ledger.keep_registers_in_order() == []
    db = str(tmp_path / "other.db")
    assert ok(db, "init")
    assert ok(db, "maintain") == {"registers": []}
    assert "nothing to do" in cli(db, "maintain").output


def test_a_register_in_use_is_left_as_it_was_with_a_clear_refusal(
        loaded: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    url, schema = loaded
    monkeypatch.setattr(maintenance, "LOCK_TIMEOUT_MS", 300)
    before = ids_as_stored(schema, "pensioner_register")
    ledger = Ledger(url, cipher_key="")
    with psycopg.connect(PG_DSN) as reader:  # a long read of the register, in a transaction
        reader.execute(f'SELECT count(*) FROM "{schema}".pensioner_register').fetchone()
        with pytest.raises(Refused, match="pensioner_register is in use by another session"):
            ledger.keep_registers_in_order()
    assert ids_as_stored(schema, "pensioner_register") == before
    # Once the reader is done, it goes through.
    assert [u["table"] for u in ledger.keep_registers_in_order()] == list(REGISTERS)
    assert ids_as_stored(schema, "pensioner_register") == sorted(before)
    ledger.close()
