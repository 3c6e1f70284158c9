"""The bulk write's WAL compression (store.compress_wal, decision #45) on the writes of a
month's funding: the same transaction with wal_compression = lz4 and = off, alternating.

    .venv/bin/python -m bench.wal_compression [--rows 1000000] [--rounds 3]

In a fresh schema of the PostgreSQL database `test`: a register of N rows (participant id,
facts text) at fillfactor 70, in id order, and an events table shaped like the ledger's
(primary key on the aggregate's id and version, unique notification id). Each round, one
transaction per setting: by chunks of 10,000 ids, a binary COPY of one 419-byte event per
id, a COPY of new facts into a temporary table and one UPDATE of the register from it, as
funding writes them. A CHECKPOINT before each, so every round starts alike. Reported: wall
seconds and the WAL bytes written, medians, and the ratio of the two settings. The schema is
dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from datetime import datetime
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from bench.contributions import OUT, PG_DSN

CHUNK = 10_000
MAX_ROWS = 5_000_000
STATE = b'{"timestamp":"2026-12-02T00:25:37.625985Z","actor":"finance",' + b"x" * 356 + b"}"
FACTS = ('[1,12,"pensioner","1946-06-23","2026-01",1,360,[47840,0,0,0,0,0,0],"2026-06",'
         '[],[],null,0,"town","village",[["2026-01","2026-06",20300]],6]')


def set_up(conn: psycopg.Connection[Any], schema: Identifier, rows: int) -> list[uuid.UUID]:
    conn.execute(SQL("CREATE SCHEMA {}").format(schema))
    conn.execute(SQL("CREATE TABLE {}.register (participant_id uuid PRIMARY KEY, facts text) "
                     "WITH (fillfactor = 70)").format(schema))
    ids = sorted(uuid.uuid4() for _ in range(rows))
    with conn.cursor() as cur, cur.copy(SQL("COPY {}.register FROM STDIN").format(schema)) as cp:
        for pid in ids:
            cp.write_row((pid, FACTS))
    conn.execute(SQL("CREATE TABLE {}.events (originator_id uuid, originator_version bigint, "
                     "topic text, state bytea, notification_id bigint NOT NULL, "
                     "PRIMARY KEY (originator_id, originator_version))").format(schema))
    conn.execute(SQL("CREATE UNIQUE INDEX ON {}.events (notification_id)").format(schema))
    conn.execute(SQL("VACUUM ANALYZE {}.register").format(schema))
    return ids


def one_month(conn: psycopg.Connection[Any], schema: Identifier, ids: list[uuid.UUID],
              version: int, first_id: int, compress: bool) -> tuple[float, int]:
    """Seconds and WAL bytes of one funding-shaped transaction."""
    conn.execute("CHECKPOINT")
    [(lsn,)] = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchall()
    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET LOCAL jit = off")
        cur.execute(f"SET LOCAL wal_compression = {'lz4' if compress else 'off'}")
        cur.execute("CREATE TEMP TABLE facts_in (participant_id uuid, facts text) "
                    "ON COMMIT DROP")
        nid = first_id
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i:i + CHUNK]
            with cur.copy(SQL("COPY {}.events FROM STDIN (FORMAT BINARY)").format(schema)) as cp:
                cp.set_types(["uuid", "int8", "text", "bytea", "int8"])
                for pid in chunk:
                    cp.write_row((pid, version, "PensionPaid", STATE, nid))
                    nid += 1
            with cur.copy("COPY facts_in FROM STDIN") as cp:
                for pid in chunk:
                    cp.write_row((pid, FACTS))
            cur.execute(SQL("UPDATE {}.register AS r SET facts = v.facts FROM facts_in v "
                            "WHERE r.participant_id = v.participant_id "
                            "AND r.participant_id BETWEEN %s AND %s").format(schema),
                        (chunk[0], chunk[-1]))
            cur.execute("TRUNCATE facts_in")
    seconds = time.perf_counter() - started
    [(wal,)] = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)",
                            (lsn,)).fetchall()
    return seconds, int(wal)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    assert 0 < args.rows <= MAX_ROWS and 0 < args.rounds <= 20
    schema = Identifier(f"bench_wal_{uuid.uuid4().hex[:8]}")
    runs: dict[str, list[tuple[float, int]]] = {"lz4": [], "off": []}
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        try:
            ids = set_up(conn, schema, args.rows)
            for n in range(args.rounds):
                for setting in ("lz4", "off"):
                    version = 2 * n + (setting == "off") + 1
                    seconds, wal = one_month(conn, schema, ids, version,
                                             version * args.rows, setting == "lz4")
                    runs[setting].append((seconds, wal))
                    print(f"round {n + 1} wal_compression={setting}: {seconds:.1f} s, "
                          f"WAL {wal / 1e6:,.0f} MB", flush=True)
        finally:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
    medians = {k: {"seconds": statistics.median(s for s, _ in v),
                   "wal_bytes": statistics.median(w for _, w in v)} for k, v in runs.items()}
    result = {"rows": args.rows, "rounds": args.rounds, "runs": runs, "medians": medians,
              "ratios": {"seconds lz4 / off": medians["lz4"]["seconds"]
                         / medians["off"]["seconds"],
                         "WAL lz4 / off": medians["lz4"]["wal_bytes"]
                         / medians["off"]["wal_bytes"]},
              "load": os.getloadavg()}
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"wal-compression-{datetime.now():%Y-%m-%dT%H%M%S}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps({"medians": medians, "ratios": result["ratios"]}, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
