"""Year-end interest (记账利息) for a county on PostgreSQL: `credit-interest` over every
participant, beside the raw read of the same participants' events, in the same run.

    .venv/bin/python -m bench.interest [--participants 50000] [--runs 3]

Set-up, per run (not timed): a fresh schema in the PostgreSQL database `test` (dropped
after), N participants enrolled in 2015 and a 2024 contribution for each (bench.contributions'
files and bulk imports), and interest credited for 2015-2023 (the catch-up, timed apart:
nine InterestCredited events per participant). Timed: the year 2024's interest for everyone,
the yearly job (one InterestCredited each, every participant replayed from its ~12 events).
Baselines, after it: a raw read of every participant's events in pages of 1,000 ids
(psycopg, binary), with and without orjson-decoding their state; and the repository's own
read of one participant at a time (eventsourcing's `repository.get`) for --sample of them,
which is how the command read participants before it read a chunk per query.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import date
from typing import Any

import orjson
import psycopg
from psycopg.sql import SQL, Identifier

from bench.contributions import OUT, PG_DSN, YEAR, fresh_store, write_files
from ledger.application import Ledger
from ledger.bulk import import_contributions, import_participants

MAX_PARTICIPANTS = 200_000
PAGE_IDS = 1_000


def raw_read(ledger: Ledger, decode: bool) -> float:
    """Seconds to read every participant's events, a page of ids at a time, as the command
    reads them; optionally decoding each state with orjson."""
    recorder: Any = ledger.recorder
    schema = Identifier(recorder.datastore.schema)
    table = Identifier(recorder.events_table_name)
    ids = ledger.queries.all_participant_ids()
    query = SQL("SELECT originator_id, originator_version, topic, state FROM {s}.{t} "
                "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
                ).format(s=schema, t=table)
    with psycopg.connect(PG_DSN) as conn, conn.cursor(binary=True) as cur:
        started = time.perf_counter()
        for i in range(0, len(ids), PAGE_IDS):
            cur.execute(query, (ids[i:i + PAGE_IDS],))
            rows = cur.fetchall()
            if decode:
                for row in rows:
                    orjson.loads(row[3])
        return time.perf_counter() - started


def one_at_a_time(ledger: Ledger, sample: int) -> float:
    """Seconds per participant for repository.get, one participant per query."""
    ids = ledger.queries.all_participant_ids()
    chosen = random.Random(7).sample(ids, min(sample, len(ids)))
    started = time.perf_counter()
    for pid in chosen:
        ledger.repository.get(pid)
    return (time.perf_counter() - started) / len(chosen)


def run_once(n: int, sample: int) -> dict[str, float]:
    people, money = write_files(n)
    out: dict[str, float] = {"load_1min_at_start": os.getloadavg()[0]}
    with fresh_store("postgres") as (url, _):
        ledger = Ledger(url, cipher_key="")
        try:
            ledger.init()
            import_participants(ledger, people, actor="bench")
            import_contributions(ledger, money, actor="bench")
            today = date(YEAR + 1, 1, 6)
            t = time.perf_counter()
            catch_up = ledger.credit_interest(year=YEAR - 1, today=today, actor="bench")
            out["catch_up_9_years_s"] = time.perf_counter() - t
            t, cpu = time.perf_counter(), time.process_time()
            result = ledger.credit_interest(year=YEAR, today=today, actor="bench")
            out["year_s"] = time.perf_counter() - t
            out["year_cpu_s"] = time.process_time() - cpu
            assert catch_up["credited"] == result["credited"] == n, (catch_up, result)
            assert result["amount_fen"] > 0
            out["year_participants_per_s"] = n / out["year_s"]
            out["year_ms_per_participant"] = out["year_s"] / n * 1000
            out["raw_read_s"] = raw_read(ledger, decode=False)
            out["raw_read_decode_s"] = raw_read(ledger, decode=True)
            out["get_one_at_a_time_ms"] = one_at_a_time(ledger, sample) * 1000
        finally:
            ledger.close()
    out["load_1min_at_end"] = os.getloadavg()[0]
    return out


def report(n: int, runs: list[dict[str, float]]) -> str:
    m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}

    def ratio(a: str, b: str) -> float:
        return statistics.median(r[a] / r[b] for r in runs)

    return "\n".join([
        f"### PostgreSQL: {n:,} participants, {len(runs)} runs",
        "",
        "| figure (median) | baseline, same run (median) | ratio |",
        "|---|---|---:|",
        f"| a year's interest for everyone: **{m['year_s']:.1f} s**, "
        f"{m['year_participants_per_s']:,.0f} participants/s "
        f"({m['year_ms_per_participant']:.3f} ms each; {m['year_cpu_s']:.1f} s of Python CPU) "
        f"| raw read of their events: {m['raw_read_s']:.2f} s "
        f"| {ratio('year_s', 'raw_read_s'):.1f} |",
        f"| | raw read and orjson-decode: {m['raw_read_decode_s']:.2f} s "
        f"| {ratio('year_s', 'raw_read_decode_s'):.1f} |",
        f"| | repository.get, one participant a query: "
        f"{m['get_one_at_a_time_ms']:.3f} ms each "
        f"| {ratio('year_ms_per_participant', 'get_one_at_a_time_ms'):.2f} |",
        f"| the catch-up of nine years (2015-2023): {m['catch_up_9_years_s']:.1f} s | | |",
        "",
        "Load average (1 min) at the start of each run: " + ", ".join(
            f"{r['load_1min_at_start']:.1f}" for r in runs) + "; at the end: " + ", ".join(
            f"{r['load_1min_at_end']:.1f}" for r in runs) + " (2 CPUs).",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.interest",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--participants", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sample", type=int, default=2_000,
                        help="participants read one at a time for the repository baseline")
    args = parser.parse_args(argv)
    if not 1 <= args.participants <= MAX_PARTICIPANTS:
        parser.error(f"--participants: 1 to {MAX_PARTICIPANTS}")
    if not 1 <= args.runs <= 9:
        parser.error("--runs: 1 to 9")
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    runs = []
    for k in range(1, args.runs + 1):
        figures = run_once(args.participants, args.sample)
        print(f"run {k}: " + ", ".join(f"{key}={v:,.3f}" for key, v in figures.items()),
              file=sys.stderr, flush=True)
        runs.append(figures)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"interest-{started.replace(':', '')}.json"
    path.write_text(json.dumps({"started": started, "argv": sys.argv,
                                "participants": args.participants, "runs": runs}, indent=1))
    print(report(args.participants, runs))
    print(f"\n(all figures: {path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
