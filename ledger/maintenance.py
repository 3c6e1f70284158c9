"""Keeping the registers in participant-id order on disk (PostgreSQL).

Every month funding rewrites every pensioner's row of the participant and pensioner
registers, 10,000 participant ids at a time, and the run reads the pensioner register in
the same order. PostgreSQL keeps a row where it was first written, and pensioners are
approved in no order of their ids: in a register filled that way, each chunk's 10,000
rows lie on 7,000 of the table's pages, and every page is written again by nearly every
chunk (measured at 1,000,000 pensioners: 40 MB of WAL a chunk for the pensioner register,
most of it whole pages written again after each checkpoint). In id order, a chunk's rows
share about a seventh as many pages. The monthly rewrites keep the rows of a chunk together
once they are: most are HOT updates, on the row's own page (the registers' fillfactor
leaves room), and a row that no longer fits moves to the table's end with the rest of its
chunk.

`keep_in_order` puts each register in that order (CLUSTER on its primary key) when its
order has drifted (`order_of` its pages under MIN_ORDER: after a big first load, or years
of new pensioners appended at the end), and otherwise vacuums it (clears the row versions
the monthly rewrite leaves, where the server's autovacuum is off). An office runs it after
a first load and once a year, out of hours: CLUSTER holds the table's lock while it
rewrites it (seconds at a million rows), and gives up rather than wait long on another
session's lock (LOCK_TIMEOUT_MS). `drifted` says which registers it would rewrite;
`payout fund` prints it after a big funding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg.errors import LockNotAvailable
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from ledger.errors import Refused

# The registers funding rewrites every month, each clustered on its primary key.
REGISTERS = ("participant_register", "pensioner_register")
MIN_ORDER = 0.5  # order_of under which a register is put back in order
LOCK_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 10
# The order of a register on disk (order_of) is judged from the pages of RUNS runs of
# RUN_ROWS consecutive ids and of about SAMPLE_PAGES of its pages, in a table of at least
# MIN_TABLE_RUNS runs' worth of rows.
RUNS = 5
RUN_ROWS = 2_000
SAMPLE_PAGES = 2_000
MIN_TABLE_RUNS = 10
MIN_SAMPLE = 1_000  # rows of the sampled pages
STATEMENT_TIMEOUT_MS = 30 * 60 * 1000  # a province's register is rewritten in minutes


@dataclass(frozen=True)
class RegisterUpkeep:
    table: str
    order_before: float | None  # order_of its pages; None: too few rows to judge
    clustered: bool  # rewritten in id order (else vacuumed)
    order_after: float | None
    seconds: float


def keep_in_order(recorder: Any) -> list[RegisterUpkeep]:
    """Each register put in participant-id order if it has drifted from it, else vacuumed;
    what was done. On SQLite, nothing (a table there is a B-tree on its key already)."""
    from ledger.store import LedgerPostgresRecorder, autocommit_connection

    if not isinstance(recorder, LedgerPostgresRecorder):
        return []
    schema = recorder.datastore.schema
    done: list[RegisterUpkeep] = []
    # VACUUM and CLUSTER of a whole table run outside any transaction block.
    with autocommit_connection(recorder, CONNECT_TIMEOUT_S) as conn:
        conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
        conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        for table in REGISTERS:
            started = time.perf_counter()
            name = SQL("{}.{}").format(Identifier(schema), Identifier(table))
            before = _order_on_disk(conn, schema, table)
            clustered = _has_drifted(before)
            try:
                if clustered:
                    conn.execute(SQL("CLUSTER {} USING {}").format(
                        name, Identifier(f"{table}_pkey")))
                    conn.execute(SQL("ANALYZE {}").format(name))
                else:
                    conn.execute(SQL("VACUUM (ANALYZE) {}").format(name))
            except LockNotAvailable:
                # The statement is rolled back whole: the register is as it was.
                raise Refused("registers", f"{table} is in use by another session (waited "
                              f"{LOCK_TIMEOUT_MS // 1000} s for its lock); run maintain "
                              "again out of hours") from None
            after = _order_on_disk(conn, schema, table)
            done.append(RegisterUpkeep(table, before, clustered, after,
                                       round(time.perf_counter() - started, 3)))
    return done


def drifted(recorder: Any) -> list[str]:
    """The registers whose rows have drifted from participant-id order on disk: those
    `keep_in_order` would rewrite. [] on SQLite."""
    from ledger.store import LedgerPostgresRecorder

    if not isinstance(recorder, LedgerPostgresRecorder):
        return []
    schema = recorder.datastore.schema
    with recorder.datastore.get_connection() as conn:
        orders = {table: _order_on_disk(conn, schema, table) for table in REGISTERS}
    return [t for t, order in orders.items() if _has_drifted(order)]


def _has_drifted(order: float | None) -> bool:
    """Whether a register of this order_of is to be put back in order (None: too small to
    judge, and to matter)."""
    return order is not None and order < MIN_ORDER


def _order_on_disk(conn: Any, schema: str, table: str) -> float | None:
    """order_of the table: the pages of RUNS runs of RUN_ROWS consecutive ids, read in key
    order as funding reads them, and of a sample of about SAMPLE_PAGES of its pages (all of a
    smaller table); without the statistics an ANALYZE keeps (a server may never run one)."""
    name = SQL("{}.{}").format(Identifier(schema), Identifier(table))
    with conn.cursor(row_factory=tuple_row) as curs:
        row = curs.execute("SELECT pg_relation_size(%s::regclass) / "
                           "current_setting('block_size')::int",
                           (name.as_string(curs),)).fetchone()
        pages = int(row[0]) if row else 0
        percent = 100.0 if pages <= SAMPLE_PAGES else 100.0 * SAMPLE_PAGES / pages
        sample = [r[0] for r in curs.execute(SQL(
            "SELECT (ctid::text::point)[0] FROM {} TABLESAMPLE SYSTEM (%s)").format(name),
            (percent,)).fetchall()]
        runs = []
        for k in range(RUNS):
            # Ids are hashes (uuid5), spread evenly: runs from evenly spaced ids.
            first = UUID(int=(k << 128) // RUNS)
            runs.append([r[0] for r in curs.execute(SQL(
                "SELECT (ctid::text::point)[0] FROM {} WHERE participant_id >= %s "
                "ORDER BY participant_id LIMIT %s").format(name), (first, RUN_ROWS)).fetchall()])
    return order_of(runs, sample, percent / 100)


def order_of(runs: list[list[float]], sample: list[float], sampled: float = 1.0
             ) -> float | None:
    """How closely rows of consecutive ids lie together on disk, from the pages of some runs
    of consecutive ids and of a sample of the table's pages: the rows a run has on each page
    it lies on, over the rows the table holds on a page. About 1 when each run's rows fill
    the pages they are on (in id order, whatever the order on a page, and whatever rows an
    update moved to the table's end, which funding does a chunk of ids at a time); about
    1 / (rows a page holds) when each row of a run is on a page of its own (no order).
    `sampled`: the share of the table's pages in the sample. None for a table under
    MIN_TABLE_RUNS runs' worth of rows (in a table that small, a run lies on most of its
    pages in any order, and reading it costs little anyway) or a sample under MIN_SAMPLE."""
    assert 0 < sampled <= 1
    rows = sum(len(run) for run in runs)
    longest = max((len(run) for run in runs), default=0)
    if (rows == 0 or len(sample) < MIN_SAMPLE
            or len(sample) / sampled < MIN_TABLE_RUNS * longest):
        return None
    run_pages = sum(len(set(run)) for run in runs)
    per_page_in_runs = rows / run_pages
    per_page_in_table = len(sample) / len(set(sample))
    order: float = per_page_in_runs / per_page_in_table
    return order
