"""`pension-ledger maintain`: the registers funding rewrites every month put back in
participant-id order on disk, their rows unchanged; in order already, only vacuumed."""

from __future__ import annotations

import random
from datetime import date
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ledger import maintenance
from ledger.application import Ledger
from ledger.errors import Refused
from ledger.maintenance import MIN_CORRELATION, REGISTERS
from payout_engine import commands, run
from payout_engine.__main__ import app as payout_app
from tests.conftest import PG_DSN, examples
from tests.test_cli import cli, ok
from tests.test_payout_cli import ENV as PAYOUT_ENV

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
        assert u["order_before"] < MIN_CORRELATION
        assert u["clustered"]
        assert u["order_after"] > 0.99
    for table in REGISTERS:
        assert rows_by_id(schema, table) == before[table]
        stored = ids_as_stored(schema, table)
        assert stored == sorted(stored)
    # In order now: the second time only vacuums, and leaves the order as it is.
    again = ledger.keep_registers_in_order()
    assert [u["clustered"] for u in again] == [False] * len(REGISTERS)
    assert all(u["order_before"] > 0.99 for u in again)
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


@settings(max_examples=examples(50), deadline=None)
@given(pages=st.integers(min_value=10, max_value=60), per_page=st.integers(1, 30),
       data=st.data())
def test_rows_in_id_order_page_by_page_are_in_order_whatever_their_order_on_a_page(
        pages: int, per_page: int, data: st.DataObject) -> None:
    # Funding's HOT updates move a row within its page, never off it.
    ids = list(range(pages * per_page))
    rows: list[tuple[float, Any]] = []
    for page in range(pages):
        on_page = ids[page * per_page:(page + 1) * per_page]
        rows += [(float(page), i) for i in data.draw(st.permutations(on_page))]
    if len(rows) < maintenance.MIN_SAMPLE:
        assert maintenance.page_order(rows) is None
        return
    order = maintenance.page_order(rows)
    assert order is not None and order >= MIN_CORRELATION
    backwards = [(float(pages - 1 - p), i) for p, i in rows]
    assert maintenance.page_order(backwards) == pytest.approx(-order)


def test_rows_in_no_order_are_not() -> None:
    rng = random.Random(41)
    ids = list(range(5_000))
    rng.shuffle(ids)
    order = maintenance.page_order([(float(n // 30), i) for n, i in enumerate(ids)])
    assert order is not None and abs(order) < 0.1
    assert maintenance.page_order([(0.0, i) for i in ids]) is None  # one page: no order


def test_funding_a_big_register_out_of_order_says_to_maintain_it(
        loaded: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = loaded
    monkeypatch.setattr(commands, "DRIFT_HINT_MIN_PENSIONERS", 1)
    ledger = Ledger(url, cipher_key="")
    assert ledger.registers_drifted() == list(REGISTERS)
    batch = run.run_month(ledger, "2026-01", actor="operator", today=date(2026, 1, 1))
    run.approve(ledger, batch.id, batch.manifest_sha256, "approver")
    funded = CliRunner().invoke(payout_app, ["--db", url, "--actor", "finance", "payout",
                                             "fund", str(batch.id), "--date", "2026-01-10"],
                                env=PAYOUT_ENV)
    assert funded.exit_code == 0, funded.output
    assert "pension-ledger maintain" in funded.stderr
    for table in REGISTERS:
        assert table in funded.stderr
    ledger.keep_registers_in_order()
    assert ledger.registers_drifted() == []
    ledger.close()
