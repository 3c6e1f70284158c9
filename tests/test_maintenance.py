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
from ledger.maintenance import MIN_ORDER, REGISTERS
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


@pytest.fixture(autouse=True)
def short_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of ids as long as the test's small registers allow (a tenth of them): each
    run's rows in order then lie on about seven pages, and the ends of a run cost it about
    a tenth of the order of a county's, where they lie on a hundred."""
    monkeypatch.setattr(maintenance, "RUN_ROWS", PENSIONERS // maintenance.MIN_TABLE_RUNS)


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
        assert u["order_before"] < MIN_ORDER
        assert u["clustered"]
        assert u["order_after"] > 0.8
    for table in REGISTERS:
        assert rows_by_id(schema, table) == before[table]
        stored = ids_as_stored(schema, table)
        assert stored == sorted(stored)
    # In order now: the second time only vacuums, and leaves the order as it is.
    again = ledger.keep_registers_in_order()
    assert [u["clustered"] for u in again] == [False] * len(REGISTERS)
    assert all(u["order_before"] > 0.8 for u in again)
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


def layout(rows_per_page: int, order: list[int]) -> dict[int, float]:
    """Each id's page, for ids stored one after another in `order`, rows_per_page a page."""
    return {i: float(n // rows_per_page) for n, i in enumerate(order)}


def judged(pages: dict[int, float], runs: int, run_rows: int) -> float | None:
    """order_of as _order_on_disk reads it: runs of consecutive ids from evenly spaced ids,
    and every page."""
    ids = sorted(pages)
    starts = [len(ids) * k // runs for k in range(runs)]
    return maintenance.order_of([[pages[i] for i in ids[s:s + run_rows]] for s in starts],
                                list(pages.values()))


@settings(max_examples=examples(50), deadline=None)
@given(per_page=st.integers(8, 40), pages=st.integers(200, 400), moved=st.floats(0, 0.5),
       seed=st.integers(0, 2**32 - 1))
def test_runs_of_ids_lying_together_are_in_order(per_page: int, pages: int, moved: float,
                                                  seed: int) -> None:
    # In id order, then each row shuffled on its page and a share of each chunk of ids moved
    # to the table's end together (funding's updates, a chunk at a time).
    rng = random.Random(seed)
    ids = list(range(per_page * pages))
    stored: list[int] = []
    at_end: list[int] = []
    for page in range(pages):
        on_page = ids[page * per_page:(page + 1) * per_page]
        rng.shuffle(on_page)
        stay = [i for i in on_page if rng.random() >= moved]
        stored += stay
        at_end += [i for i in on_page if i not in stay]
    order = judged(layout(per_page, stored + at_end), runs=5, run_rows=per_page * 10)
    assert order is not None and order >= maintenance.MIN_ORDER


@settings(max_examples=examples(50), deadline=None)
@given(per_page=st.integers(8, 40), pages=st.integers(200, 400),
       seed=st.integers(0, 2**32 - 1))
def test_ids_in_no_order_are_not(per_page: int, pages: int, seed: int) -> None:
    ids = list(range(per_page * pages))
    random.Random(seed).shuffle(ids)
    order = judged(layout(per_page, ids), runs=5, run_rows=per_page * 10)
    assert order is not None and order < maintenance.MIN_ORDER


def test_a_table_too_small_to_tell_is_not_judged() -> None:
    pages = layout(10, list(range(500)))
    assert judged(pages, runs=5, run_rows=100) is None  # 500 rows: under 10 runs of 100
    assert judged(layout(10, list(range(1000))), runs=5, run_rows=100) is not None


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


def test_a_big_table_is_judged_from_a_sample_of_its_pages() -> None:
    # A bloated register: a sample of a tenth of its pages holds fewer rows than ten runs.
    pages = layout(10, list(range(20_000)))
    runs = [[pages[i] for i in range(s, s + 1_000)] for s in range(0, 20_000, 4_000)]
    sample = [p for p in pages.values() if p % 10 == 0]
    assert len(sample) < maintenance.MIN_TABLE_RUNS * 1_000
    assert maintenance.order_of(runs, sample, sampled=0.1) == pytest.approx(1.0)
    assert maintenance.order_of(runs, sample[:900], sampled=0.1) is None  # under MIN_SAMPLE
