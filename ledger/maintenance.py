"""Keeping the registers in participant-id order on disk (PostgreSQL).

Every month funding rewrites every pensioner's row of the participant and pensioner
registers, 10,000 participant ids at a time, and the run reads the pensioner register in
the same order. PostgreSQL keeps a row where it was first written, and pensioners are
approved in no order of their ids: in a register filled that way, each chunk's 10,000
rows lie on 7,000 of the table's pages, and every page is written again by nearly every
chunk (measured at 1,000,000 pensioners: 40 MB of WAL a chunk for the pensioner register,
most of it whole pages written again after each checkpoint). In id order, a chunk's rows
share about a seventh as many pages. The monthly rewrites keep the order once it is made:
they are HOT updates, on the row's own page (the registers' fillfactor leaves room).

`keep_in_order` puts each register in that order (CLUSTER on its primary key) when its
order has drifted (`page_order` of a sample of its pages under MIN_CORRELATION: after a big
first load, or a few years of new pensioners appended at the end), and otherwise vacuums
it (clears the row versions the monthly rewrite leaves, where the server's autovacuum is
off). An office runs it after a first load and once a year, out of hours: CLUSTER holds
the table's lock while it rewrites it (seconds at a million rows), and gives up rather
than wait long on another session's lock (LOCK_TIMEOUT_MS). `drifted` says which
registers it would rewrite; `payout fund` prints it after a big funding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from psycopg.errors import LockNotAvailable
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier, Literal

from ledger.errors import Refused

# The registers funding rewrites every month, each clustered on its primary key.
REGISTERS = ("participant_register", "pensioner_register")
MIN_CORRELATION = 0.9
LOCK_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 10
SAMPLE_PAGES = 2_000  # of a register's pages, read to judge its order on disk
MIN_SAMPLE = 100     # rows, below which the order is not judged
STATEMENT_TIMEOUT_MS = 30 * 60 * 1000  # a province's register is rewritten in minutes


@dataclass(frozen=True)
class RegisterUpkeep:
    table: str
    order_before: float | None  # page_order on disk; None: too few rows to judge
    clustered: bool                   # rewritten in id order (else vacuumed)
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
            clustered = before is not None and before < MIN_CORRELATION
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
    return [t for t, order in orders.items() if order is not None and order < MIN_CORRELATION]


def _order_on_disk(conn: Any, schema: str, table: str) -> float | None:
    """page_order of a sample of about SAMPLE_PAGES of the table's pages (all of a smaller
    table), read without the statistics an ANALYZE keeps (a server may never run one)."""
    name = SQL("{}.{}").format(Identifier(schema), Identifier(table))
    with conn.cursor(row_factory=tuple_row) as curs:
        row = curs.execute(SQL("SELECT pg_relation_size({}::regclass) / "
                               "current_setting('block_size')::int").format(
                                   Literal(f'"{schema}"."{table}"'))).fetchone()
        pages = int(row[0]) if row else 0
        percent = 100.0 if pages <= SAMPLE_PAGES else 100.0 * SAMPLE_PAGES / pages
        rows = curs.execute(SQL("SELECT (ctid::text::point)[0], participant_id FROM {} "
                                "TABLESAMPLE SYSTEM (%s)").format(name), (percent,)).fetchall()
    return page_order(rows)


def page_order(rows: list[tuple[float, Any]]) -> float | None:
    """The correlation of pages with the ranks of the ids on them: 1 in id order, whatever
    the order on a page (funding's updates move a row within its page), near 0 in no order;
    None for fewer than MIN_SAMPLE rows or a single page."""
    if len(rows) < MIN_SAMPLE:
        return None
    ranked = sorted(range(len(rows)), key=lambda i: rows[i][1])
    rank = [0] * len(rows)
    for r, i in enumerate(ranked):
        rank[i] = r
    pages = [p for p, _ in rows]
    n = len(rows)
    mean_page, mean_rank = sum(pages) / n, (n - 1) / 2
    cov = sum((p - mean_page) * (r - mean_rank) for p, r in zip(pages, rank, strict=True))
    var_page = sum((p - mean_page) ** 2 for p in pages)
    var_rank = sum((r - mean_rank) ** 2 for r in rank)
    if var_page == 0:
        return None
    correlation: float = cov / (var_page * var_rank) ** 0.5
    return correlation
