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
order has drifted (PostgreSQL's own statistic, pg_stats.correlation, under MIN_CORRELATION:
after a big first load, or a few years of new pensioners appended at the end), and
otherwise vacuums it (clears the row versions the monthly rewrite leaves, where the
server's autovacuum is off). An office runs it after a first load and once a year, out of
hours: CLUSTER holds the table's lock while it rewrites it (seconds at a million rows), and
gives up rather than wait long on another session's lock (LOCK_TIMEOUT_MS).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from psycopg.errors import LockNotAvailable
from psycopg.sql import SQL, Identifier

from ledger.errors import Refused

# The registers funding rewrites every month, each clustered on its primary key.
REGISTERS = ("participant_register", "pensioner_register")
ORDERED_COLUMN = "participant_id"
MIN_CORRELATION = 0.9
LOCK_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 10
STATEMENT_TIMEOUT_MS = 30 * 60 * 1000  # a province's register is rewritten in minutes


@dataclass(frozen=True)
class RegisterUpkeep:
    table: str
    correlation_before: float | None  # None: too few rows for the statistic
    clustered: bool                   # rewritten in id order (else vacuumed)
    correlation_after: float | None
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
            try:
                conn.execute(SQL("ANALYZE {}").format(name))
                before = _correlation(conn, schema, table)
                clustered = before is not None and before < MIN_CORRELATION
                if clustered:
                    conn.execute(SQL("CLUSTER {} USING {}").format(
                        name, Identifier(f"{table}_pkey")))
                    conn.execute(SQL("ANALYZE {}").format(name))
                else:
                    conn.execute(SQL("VACUUM {}").format(name))
            except LockNotAvailable:
                # The statement is rolled back whole: the register is as it was.
                raise Refused("registers", f"{table} is in use by another session (waited "
                              f"{LOCK_TIMEOUT_MS // 1000} s for its lock); run maintain "
                              "again out of hours") from None
            after = _correlation(conn, schema, table)
            done.append(RegisterUpkeep(table, before, clustered, after,
                                       round(time.perf_counter() - started, 3)))
    return done


def _correlation(conn: Any, schema: str, table: str) -> float | None:
    row = conn.execute("SELECT correlation FROM pg_stats WHERE schemaname = %s AND "
                       "tablename = %s AND attname = %s",
                       (schema, table, ORDERED_COLUMN)).fetchone()
    return None if row is None or row[0] is None else float(row[0])
