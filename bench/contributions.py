"""A year's contributions for a county: bulk import against one command at a time, each
next to its baselines measured in the same run on the same store.

    .venv/bin/python -m bench.contributions [--participants N] [--stores sqlite,postgres]

For each store and each run (a fresh SQLite file in bench/out/, or a fresh schema in the
PostgreSQL database `test`, dropped after):
  - bulk import of N participants, then of one year's contributions for all of them
    (ledger.bulk); events/s counts the stored events written (notification ids);
  - one command at a time: ledger.contribute for --single participants, events/s and the
    p50/p99 latency of a command;
  - baselines: a plain eventsourcing Application with a minimal aggregate (one event per
    contribution, the default JSON transcoder) saving the same number of events, one
    aggregate per save (over --plain-single saves) and in batches (the best of
    --batch-sizes); on PostgreSQL a raw binary COPY of the same rows (uuid, version, topic,
    state) into a bare table with the same primary key; on SQLite a raw executemany of them.
Each measurement runs --runs times; the medians and their ratios are printed and written,
with every single figure, to bench/out/contributions-<time>.json.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from psycopg.sql import SQL, Identifier

from ledger import resident_id
from ledger.aggregates.participant import on_behalf_fen
from ledger.application import Ledger
from ledger.bulk import import_contributions, import_participants
from ledger.money import format_yuan
from ledger.rules import Parameters, RuleVersion, in_force, sample_county

PG_DSN = os.environ.get("BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
OUT = Path(__file__).resolve().parent / "out"
YEAR = 2024
AREA = "431121"
# Identity groups per mille: most residents are ordinary; hardship groups have part of the
# lowest tier paid on their behalf, which makes a second event.
GROUPS = (("ordinary", 900), ("minimum_living", 40), ("registered_poor", 30),
          ("destitute", 15), ("severely_disabled", 15))
TIERS_FEN = (10000, 20000, 30000, 50000, 100000, 200000)
MAX_PARTICIPANTS = 1_000_000


# ---- data ---------------------------------------------------------------------------------

def group_of(i: int) -> str:
    slot = i % 1000
    for group, per_mille in GROUPS:
        if slot < per_mille:
            return group
        slot -= per_mille
    raise AssertionError("the shares add up to 1000")


def id_of(i: int) -> str:
    # 1,000 sequence numbers per birth date; birth dates from 1950 on.
    return resident_id.make(AREA, date(1950, 1, 1) + timedelta(days=i // 1000), i % 1000)


def contribution(i: int, year: int) -> tuple[str, int, int]:
    """(id_number, tier_fen, amount_fen) of person i's contribution for a year."""
    tier = TIERS_FEN[i % len(TIERS_FEN)]
    return id_of(i), tier, tier - on_behalf_fen(_params(year), group_of(i), tier)


_PARAMS: dict[int, Parameters] = {}


def _params(year: int) -> Parameters:
    """The sample county's rules in force in March of a year (what `init` publishes)."""
    if year not in _PARAMS:
        versions = [RuleVersion(version=n, effective_from=d, parameters=p, note=note)
                    for n, (d, p, note) in enumerate(sample_county(), start=1)]
        found = in_force(versions, date(year, 3, 1))
        assert found is not None
        _PARAMS[year] = found.parameters
    return _PARAMS[year]


def write_files(n: int) -> tuple[Path, Path]:
    """The participants file and one year's contributions for them (kept in bench/out/)."""
    folder = OUT / f"county-{n}"
    people, money = folder / "participants.csv", folder / f"contributions-{YEAR}.csv"
    if people.exists() and money.exists():
        return people, money
    folder.mkdir(parents=True, exist_ok=True)
    with open(people, "w", newline="", encoding="utf-8") as p, \
            open(money, "w", newline="", encoding="utf-8") as m:
        pw, mw = csv.writer(p), csv.writer(m)
        pw.writerow(("id_number", "name", "township", "village", "identity_group", "enrol_date",
                     "account_name", "account_number", "bank_code"))
        mw.writerow(("id_number", "year", "tier", "amount", "channel", "receipt_no",
                     "value_date", "back_payment"))
        for i in range(n):
            idn, tier, amount = contribution(i, YEAR)
            pw.writerow((idn, f"居民{i}", f"第{i % 12}镇", f"第{i % 97}村", group_of(i),
                         "2015-01-10", f"居民{i}", f"6222{i:012d}", "102"))
            mw.writerow((idn, YEAR, format_yuan(tier), format_yuan(amount), "bank",
                         f"R{YEAR}-{i:07d}", f"{YEAR}-03-{1 + i % 28:02d}", ""))
    return people, money


# ---- stores ---------------------------------------------------------------------------------

@contextmanager
def fresh_store(kind: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(ledger URL, plain eventsourcing environment) for a store nobody else uses."""
    if kind == "sqlite":
        OUT.mkdir(parents=True, exist_ok=True)
        folder = tempfile.mkdtemp(prefix="store-", dir=OUT)
        db = os.path.join(folder, "bench.db")
        try:
            yield db, {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": db}
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(SQL("CREATE SCHEMA {}").format(Identifier(schema)))
    u = psycopg.conninfo.conninfo_to_dict(PG_DSN)
    try:
        yield f"{PG_DSN}?schema={schema}", {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": str(u.get("dbname", "test")),
            "POSTGRES_HOST": str(u.get("host", "127.0.0.1")),
            "POSTGRES_PORT": str(u.get("port", "5432")),
            "POSTGRES_USER": str(u.get("user", "postgres")),
            "POSTGRES_PASSWORD": str(u.get("password", "")),
            "POSTGRES_SCHEMA": schema,
        }
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(schema)))


# ---- the plain eventsourcing baseline -----------------------------------------------------

class PlainContribution(Aggregate):
    """A minimal aggregate: one event per contribution, with the same fields."""

    @event("Received")
    def __init__(self, participant: str, year: int, tier_fen: int, amount_fen: int,
                 channel: str, receipt_no: str, value_date: str, back_payment: bool,
                 rule_version: str, actor: str) -> None:
        self.participant = participant


def plain_aggregates(count: int) -> list[PlainContribution]:
    out = []
    for i in range(count):
        idn, tier, amount = contribution(i, YEAR)
        out.append(PlainContribution(idn, YEAR, tier, amount, "bank", f"R{YEAR}-{i:07d}",
                                     f"{YEAR}-03-01", False, "v5@2024-01-01", "bench"))
    return out


def plain_save(env: dict[str, str], count: int, batch: int) -> float:
    """Seconds to save `count` new aggregates, `batch` per save. The aggregates are made
    before the clock starts, and anew each time: a saved aggregate has no pending events,
    so saving it again would write nothing."""
    aggregates = plain_aggregates(count)
    app: Application[uuid.UUID] = Application(env=env)
    try:
        start = time.perf_counter()
        for i in range(0, len(aggregates), batch):
            app.save(*aggregates[i:i + batch])
        seconds = time.perf_counter() - start
        written = app.recorder.max_notification_id()
        assert written == count, (written, count)
        return seconds
    finally:
        app.close()


# ---- raw writes of the same rows ----------------------------------------------------------

Row = tuple[uuid.UUID, int, str, bytes]


def stored_rows(ledger: Ledger, after: int, upto: int) -> list[Row]:
    table = ledger.recorder.events_table_name  # type: ignore[attr-defined]
    key = "notification_id" if ledger.queries.is_postgres else "rowid"
    rows = ledger.queries.fetch(
        f"SELECT originator_id, originator_version, topic, state FROM {{p}}{table} "
        f"WHERE {key} > ? AND {key} <= ? ORDER BY {key}", (after, upto))
    return [(r[0] if isinstance(r[0], uuid.UUID) else uuid.UUID(r[0]), int(r[1]), r[2],
             bytes(r[3])) for r in rows]


def raw_copy(env: dict[str, str], rows: list[Row]) -> float:
    """Seconds for a binary COPY of the rows into a bare table, committed."""
    schema = Identifier(env["POSTGRES_SCHEMA"])
    with psycopg.connect(PG_DSN) as conn:
        conn.execute(SQL("CREATE TABLE {s}.raw_events (originator_id uuid NOT NULL, "
                         "originator_version bigint NOT NULL, topic text, state bytea, "
                         "PRIMARY KEY (originator_id, originator_version))").format(s=schema))
        conn.commit()
        start = time.perf_counter()
        with conn.cursor() as curs, curs.copy(
                SQL("COPY {s}.raw_events FROM STDIN (FORMAT BINARY)").format(s=schema)) as copy:
            copy.set_types(["uuid", "int8", "text", "bytea"])
            for row in rows:
                copy.write_row(row)
        conn.commit()
        return time.perf_counter() - start


def raw_sqlite(env: dict[str, str], rows: list[Row]) -> float:
    """Seconds for one executemany of the rows into a bare table, committed."""
    import sqlite3

    conn = sqlite3.connect(env["SQLITE_DBNAME"] + ".raw")
    try:
        conn.execute("CREATE TABLE raw_events (originator_id TEXT, originator_version INTEGER, "
                     "topic TEXT, state BLOB, PRIMARY KEY (originator_id, originator_version))")
        conn.commit()
        start = time.perf_counter()
        conn.executemany("INSERT INTO raw_events VALUES (?,?,?,?)",
                         [(r[0].hex, r[1], r[2], r[3]) for r in rows])
        conn.commit()
        return time.perf_counter() - start
    finally:
        conn.close()


# ---- one run ------------------------------------------------------------------------------

def stored_count(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def run_once(kind: str, n: int, args: argparse.Namespace) -> dict[str, float]:
    """One run. Each figure is measured right next to its baselines (the machine's load
    changes by the minute): the bulk import, then the batched baselines; one command at a
    time, then the one-aggregate-per-save baseline."""
    people, money = write_files(n)
    out: dict[str, float] = {"load_1min_at_start": os.getloadavg()[0]}
    with fresh_store(kind) as (url, _):
        ledger = Ledger(url, cipher_key="")
        try:
            ledger.init()
            rows = bulk_import(ledger, kind, n, people, money, args, out)
            events = len(rows)
            best = 0.0
            for size in args.batch_sizes:
                with fresh_store(kind) as (_, env):
                    rate = events / plain_save(env, events, size)
                out[f"plain_batch_{size}_events_per_s"] = rate
                best = max(best, rate)
            out["plain_best_batch_events_per_s"] = best
            with fresh_store(kind) as (_, env):
                raw = raw_copy if kind == "postgres" else raw_sqlite
                out["raw_rows_per_s"] = len(rows) / raw(env, rows)

            out.update(one_at_a_time(ledger, min(args.single, n)))
            with fresh_store(kind) as (_, env):
                count = min(args.plain_single, events)
                out["plain_one_per_save_events_per_s"] = count / plain_save(env, count, 1)
        finally:
            ledger.close()
    out["load_1min_at_end"] = os.getloadavg()[0]  # the machine is shared: say how busy
    return out


def bulk_import(ledger: Ledger, kind: str, n: int, people: Path, money: Path,
                args: argparse.Namespace, out: dict[str, float]) -> list[Row]:
    """Both imports; the rows the contributions import stored (for the raw baseline)."""
    before = stored_count(ledger)
    start = time.perf_counter()
    import_participants(ledger, people, actor="bench")
    seconds = time.perf_counter() - start
    out["participants_events_per_s"] = (stored_count(ledger) - before) / seconds

    before = stored_count(ledger)
    profile = cProfile.Profile() if args.profile else None
    start, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
    if profile:
        profile.enable()
    result = import_contributions(ledger, money, actor="bench")
    seconds = time.perf_counter() - start
    # Python's own CPU time: on a shared machine it moves less than the wall time does.
    # A big file is checked by a forked child too (ledger.bulk): its CPU counts, apart.
    out["bulk_child_cpu_seconds"] = _children_cpu() - children
    out["bulk_python_cpu_seconds"] = time.process_time() - cpu + out["bulk_child_cpu_seconds"]
    if profile:
        profile.disable()
        profile.dump_stats(str(OUT / f"profile-{kind}-{n}.prof"))
    after = stored_count(ledger)
    assert result["lines"] == n and not result["replayed"], result
    out["bulk_events"] = after - before
    out["bulk_seconds"] = seconds
    out["bulk_events_per_s"] = (after - before) / seconds
    rows = stored_rows(ledger, before, after)
    assert len(rows) == after - before
    return rows


def _children_cpu() -> float:
    """CPU seconds of this process's children that have ended and been waited for."""
    t = os.times()
    return t.children_user + t.children_system


def one_at_a_time(ledger: Ledger, count: int) -> dict[str, float]:
    """ledger.contribute for the next year, one participant at a time."""
    year = YEAR + 1
    latencies_ms: list[float] = []
    before = stored_count(ledger)
    start = time.perf_counter()
    for i in range(count):
        idn, tier, amount = contribution(i, year)
        t = time.perf_counter()
        ledger.contribute(id_number=idn, year=year, tier_fen=tier, amount_fen=amount,
                          channel="bank", receipt_no=f"R{year}-{i:07d}",
                          value_date=date(year, 3, 1), actor="bench")
        latencies_ms.append((time.perf_counter() - t) * 1000)
    seconds = time.perf_counter() - start
    cuts = statistics.quantiles(latencies_ms, n=100)
    return {"single_events_per_s": (stored_count(ledger) - before) / seconds,
            "single_commands_per_s": count / seconds,
            "single_p50_ms": statistics.median(latencies_ms), "single_p99_ms": cuts[98]}


# ---- report -------------------------------------------------------------------------------

def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def report(kind: str, n: int, runs: list[dict[str, float]]) -> str:
    """A markdown table: medians over the runs, and the median of each run's own ratio (a
    figure and its baseline share a run, so the ratio suffers less from a noisy machine)."""
    m = medians(runs)

    def ratio(figure: str, baseline: str) -> float:
        return statistics.median(r[figure] / r[baseline] for r in runs)

    def spread(figure: str) -> str:
        low, high = min(r[figure] for r in runs), max(r[figure] for r in runs)
        return f"{low:,.0f}-{high:,.0f}"

    raw = "binary COPY" if kind == "postgres" else "executemany"
    lines = [
        f"### {kind}: {n:,} participants, {int(m['bulk_events']):,} stored events per import, "
        f"{len(runs)} runs",
        "",
        "| figure (median of the runs; range) | baseline, same run (median) | ratio "
        "(median of the runs' ratios) |",
        "|---|---|---:|",
        f"| bulk import of a year's contributions: **{m['bulk_events_per_s']:,.0f} events/s** "
        f"({spread('bulk_events_per_s')}) | plain eventsourcing, best batched save: "
        f"{m['plain_best_batch_events_per_s']:,.0f} events/s "
        f"| {ratio('bulk_events_per_s', 'plain_best_batch_events_per_s'):.2f} |",
        f"| | plain eventsourcing, one aggregate per save: "
        f"{m['plain_one_per_save_events_per_s']:,.0f} events/s "
        f"| {ratio('bulk_events_per_s', 'plain_one_per_save_events_per_s'):.1f} |",
        f"| | raw {raw} of the same rows: {m['raw_rows_per_s']:,.0f} rows/s "
        f"| {ratio('bulk_events_per_s', 'raw_rows_per_s'):.2f} |",
        f"| (the bulk import: {m['bulk_seconds']:.2f} s wall, "
        f"{m['bulk_python_cpu_seconds']:.2f} s of Python CPU"
        + (f", {m['bulk_child_cpu_seconds']:.2f} s of it the checking child's"
           if m['bulk_child_cpu_seconds'] else "") + ") | | |",
    ]
    lines += [
        f"| one command at a time (ledger.contribute): {m['single_events_per_s']:,.0f} events/s "
        f"({m['single_commands_per_s']:,.0f} commands/s; p50 {m['single_p50_ms']:.2f} ms, "
        f"p99 {m['single_p99_ms']:.2f} ms) | plain eventsourcing, one aggregate per save "
        f"| {ratio('single_events_per_s', 'plain_one_per_save_events_per_s'):.2f} |",
        f"| bulk import of the participants: {m['participants_events_per_s']:,.0f} events/s "
        f"| | |",
        "",
        "Load average (1 min) at the start of each run: " + ", ".join(
            f"{r['load_1min_at_start']:.1f}" for r in runs) + "; at the end: " + ", ".join(
            f"{r['load_1min_at_end']:.1f}" for r in runs) + " (2 CPUs).",
        "Plain eventsourcing batched saves (medians): " + ", ".join(
            f"{k.split('_')[2]} per save {v:,.0f} events/s" for k, v in m.items()
            if k.startswith("plain_batch_")) + ".",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.contributions",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--participants", type=int, default=100_000,
                        help="participants on PostgreSQL (default 100,000)")
    parser.add_argument("--sqlite-participants", type=int, default=None,
                        help="participants on SQLite (default: as --participants)")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--single", type=int, default=2000,
                        help="commands in the one-at-a-time measurement")
    parser.add_argument("--plain-single", type=int, default=10_000,
                        help="saves in the plain one-aggregate-per-save baseline")
    parser.add_argument("--batch-sizes", default="1000,5000,10000")
    parser.add_argument("--profile", action="store_true",
                        help="write a cProfile of each contributions import to bench/out/")
    args = parser.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    for s in stores:
        if s not in ("sqlite", "postgres"):
            parser.error(f"--stores: unknown store {s!r} (sqlite, postgres)")
    for n in (args.participants, args.sqlite_participants or args.participants):
        if not 1 <= n <= MAX_PARTICIPANTS:
            parser.error(f"participants: 1 to {MAX_PARTICIPANTS}")
    if not 1 <= args.runs <= 20:
        parser.error("--runs: 1 to 20")

    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    results: dict[str, Any] = {"started": started, "argv": sys.argv, "python":
                               platform.python_version(), "cpus": os.cpu_count(), "stores": {}}
    sections = []
    for kind in stores:
        n = args.participants if kind == "postgres" else (args.sqlite_participants
                                                          or args.participants)
        runs = []
        for run in range(1, args.runs + 1):
            figures = run_once(kind, n, args)
            print(f"{kind} run {run}: " + ", ".join(f"{k}={v:,.1f}" for k, v in figures.items()),
                  file=sys.stderr, flush=True)
            runs.append(figures)
        results["stores"][kind] = {"participants": n, "runs": runs, "medians": medians(runs)}
        sections.append(report(kind, n, runs))
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"contributions-{started.replace(':', '')}.json"
    path.write_text(json.dumps(results, indent=1))
    print("\n\n".join(sections))
    print(f"\n(all figures: {path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
