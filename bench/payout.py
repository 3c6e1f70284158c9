"""A monthly payout run for a province-sized roll: N pensioners on PostgreSQL, from the
register to an approved, funded batch and its exported pain.001 files.

    .venv/bin/python -m bench.payout [--pensioners 1000000] [--runs 3] [--profile]
        [--keep | --reuse SCHEMA] [--raise-before-last] [--one-process]

Set-up (not timed): a fresh schema in the PostgreSQL database `test` (dropped after). The
pensioners are written straight to the event store with their register rows, the way
ledger.application._save would write them, but in a few large COPY transactions instead of
a million commands: 2,000 real histories are made by the domain (Participant.enrol,
receive_contribution, apply_for_pension, approve_pension: transitional pensioners born
1946-1948, half with a contribution in their account) and each pensioner is one of them
with its own resident ID, name, bank account and receipt number.

Timed, for each run (run k pays month 2026-0k, so runs 2 and 3 also compare with a
previous month of N payments): run_month (read the register, compute what each is owed,
make the files and their manifest, compare with last month, draft the batch's events),
approve, fund (appropriation + one PensionPaid per pensioner, one transaction), export
(the files made again from the batch and written, 0600, with the manifest).
With --raise-before-last, a raise of the county's part back-dated to the first month is
published before the last: that month also tops up every month paid before it.
Baselines, measured after each month in the same run (not part of its time): the raw
PostgreSQL read of every pensioner-register row as run_month reads them (pages of 10,000 by
id, binary, nothing decoded), and a raw binary COPY of the events funding stored into a bare
table with the events' primary key. Figures, baselines and ratios are printed and written
to bench/out/payout-<time>.json.

Each part is reported as wall seconds, as this process's CPU seconds ("<part>.cpu":
user + system of the benchmark process, not PostgreSQL's): on a shared machine the CPU
figure moves less with the load), as the CPU seconds of the child funding forks to share
its work ("<part>.child_cpu", decision #35; --one-process funds without it), and with
the process's peak resident memory so far (and the largest child's, which counts the pages it
shares with this process). The load average is recorded before and after each run.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import os
import platform
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg.sql import SQL, Identifier

from ledger import disbursement, resident_id
from ledger.aggregates.participant import BankAccount, Participant, participant_id
from ledger.application import Ledger, register_row
from ledger.payout import facts_of
from ledger.postings import guarded_deltas
from ledger.store import RegisterRow
from payout_engine import export, run
from payout_engine.config import PayoutConfig

PG_DSN = os.environ.get("BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
OUT = Path(__file__).resolve().parent / "out"
AREA = "431121"
BIRTH_DATES = 1000  # 1,000 sequence numbers per birth date make 1,000,000 resident IDs
MAX_PENSIONERS = BIRTH_DATES * 1000
WRITE_CHUNK = 50_000  # pensioners per set-up transaction
FIRST_BORN = date(1946, 1, 1)
START_MONTH = "2026-01"


# ---- set-up -------------------------------------------------------------------------------

@dataclasses.dataclass
class Profile:
    """One real pensioner history, made by the domain, that many pensioners share."""

    born: date
    states: list[tuple[str, dict[str, Any]]]  # (topic, stored state) of each event
    facts: Any
    register: RegisterRow
    deltas: dict[str, int]
    contributes: bool


def make_profiles(ledger: Ledger) -> dict[tuple[int, bool], Profile]:
    rules = ledger.ruleset()
    out = {}
    for b in range(BIRTH_DATES):
        born = FIRST_BORN + timedelta(days=b)
        for contributes in (False, True):
            p = Participant.enrol(
                id_number=resident_id.make(AREA, born, 0), name="居民", birth_date=born,
                township="城关镇", village="东村", identity_group="ordinary",
                enrol_date=date(2009, 12, 1),
                bank=BankAccount(account_name="居民", account_number="6222000000000000",
                                 bank_code="102"),
                params=rules.in_force(date(2009, 12, 1)).parameters, actor="bench")
            if contributes:
                p.receive_contribution(year=2010, tier_fen=50000, amount_fen=50000,
                                       channel="bank", receipt_no="R", back_payment=False,
                                       value_date=date(2010, 3, 1),
                                       rules=rules.in_force(date(2010, 3, 1)), actor="bench")
            start = rules.in_force(date(2026, 1, 1))
            p.apply_for_pension(start_month=START_MONTH, rules=start, actor="op")
            p.approve_pension(rules=start, actor="ap")
            events = p.collect_events()
            states = []
            for e in events:
                s = ledger.mapper.to_stored_event(e)
                states.append((s.topic, orjson.loads(s.state)))
            out[(b, contributes)] = Profile(born, states, facts_of(p), register_row(p),
                                            guarded_deltas(events), contributes)
    return out


def pensioner_rows(ledger: Ledger, profiles: dict[tuple[int, bool], Profile], i: int
                   ) -> tuple[list[Any], RegisterRow, Any, list[tuple[str, uuid.UUID]],
                              dict[str, int]]:
    """Pensioner i: the stored events, register row, pensioner row, receipts, fund deltas."""
    from eventsourcing.persistence import StoredEvent

    b, seq = i % BIRTH_DATES, i // BIRTH_DATES
    profile = profiles[(b, seq % 2 == 1)]
    idn = resident_id.make(AREA, profile.born, seq)
    pid = participant_id(idn)
    name = f"居民{i}"
    bank = {"account_name": name, "account_number": f"6222{i:012d}", "bank_code": "102"}
    receipt = f"R2010-{i:07d}"
    stored = []
    for version, (topic, state) in enumerate(profile.states, start=1):
        if "id_number" in state:
            state = {**state, "id_number": idn, "name": name, "bank": bank}
        elif "receipt_no" in state:
            state = {**state, "receipt_no": receipt}
        stored.append(StoredEvent(originator_id=pid, originator_version=version, topic=topic,
                                  state=orjson.dumps(state)))
    years = orjson.loads(profile.register.contributed_years)
    for y in years:
        years[y][0] = receipt
    register = dataclasses.replace(profile.register, participant_id=pid,
                                   contributed_years=orjson.dumps(years).decode())
    facts = dataclasses.replace(profile.facts, participant_id=str(pid), name=name,
                                id_number=idn, bank=BankAccount(**bank))
    receipts = [(receipt, pid)] if profile.contributes else []
    return stored, register, ledger.pensioner_row(facts), receipts, profile.deltas


def populate(ledger: Ledger, n: int) -> float:
    t = time.perf_counter()
    profiles = make_profiles(ledger)
    for start in range(0, n, WRITE_CHUNK):
        stored: list[Any] = []
        registers, pensioners, receipts = [], [], []
        deltas: dict[str, int] = {}
        for i in range(start, min(n, start + WRITE_CHUNK)):
            s, reg, pen, rec, d = pensioner_rows(ledger, profiles, i)
            stored += s
            registers.append(reg)
            pensioners.append(pen)
            receipts += rec
            for k, v in d.items():
                deltas[k] = deltas.get(k, 0) + v
        ledger.recorder.insert_events_bulk(  # type: ignore[attr-defined]
            stored, fund_deltas=deltas, register=registers, pensioners=pensioners,
            receipts=receipts)
        print(f"  set-up: {min(n, start + WRITE_CHUNK):>9,} pensioners "
              f"({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    ledger.receive_treasury_funds(amount_fen=n * 100_000 * 12, level="central",
                                  purpose="basic_pension", value_date=date(2025, 12, 20),
                                  reference="BENCH-TREASURY", actor="finance")
    return time.perf_counter() - t


@contextmanager
def fresh_schema(keep: bool = False) -> Iterator[str]:
    schema = f"bench_payout_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(SQL("CREATE SCHEMA {}").format(Identifier(schema)))
    try:
        yield f"{PG_DSN}?schema={schema}"
    finally:
        if keep:
            print(f"schema kept: --reuse {schema} (drop it when done, and remove "
                  f"bench/out/drafted-{schema})", file=sys.stderr)
        else:
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(schema)))


@contextmanager
def kept_schema(schema: str) -> Iterator[str]:
    """A schema a run with --keep set up: its months paid so far stay paid."""
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name = %s",
                             (schema,)).fetchone()
    if found is None:
        raise SystemExit(f"no schema {schema}")
    yield f"{PG_DSN}?schema={schema}"


# ---- raw baselines of the same month, same run ----------------------------------------------

def raw_read_register(ledger: Ledger) -> tuple[float, int]:
    """Seconds to read every pensioner-register row as run_month reads them (pages of
    10,000 by participant id, binary), with no decoding: (seconds, rows)."""
    schema = Identifier(ledger.recorder.datastore.schema)  # type: ignore[attr-defined]
    first = SQL("SELECT participant_id, facts, payee FROM {s}.pensioner_register "
                "ORDER BY participant_id LIMIT 10000").format(s=schema)
    after = SQL("SELECT participant_id, facts, payee FROM {s}.pensioner_register "
                "WHERE participant_id > %s ORDER BY participant_id LIMIT 10000").format(s=schema)
    rows = 0
    with psycopg.connect(PG_DSN) as conn, conn.cursor(binary=True) as cur:
        started = time.perf_counter()
        cur.execute(first)
        while True:
            page = cur.fetchall()
            if not page:
                break
            rows += len(page)
            cur.execute(after, (page[-1][0],))
        return time.perf_counter() - started, rows


def raw_copy_events(ledger: Ledger, after: int, upto: int) -> tuple[float, int]:
    """Seconds for a binary COPY of the events funding stored (notification ids after..upto)
    into a bare table with the events' primary key, committed: (seconds, rows)."""
    schema = Identifier(ledger.recorder.datastore.schema)  # type: ignore[attr-defined]
    table = Identifier(ledger.recorder.events_table_name)  # type: ignore[attr-defined]
    with psycopg.connect(PG_DSN) as conn:
        with conn.cursor(binary=True) as cur:
            cur.execute(SQL("SELECT originator_id, originator_version, topic, state FROM {s}.{t} "
                            "WHERE notification_id > %s AND notification_id <= %s "
                            "ORDER BY notification_id").format(s=schema, t=table), (after, upto))
            rows = cur.fetchall()
        conn.execute(SQL("DROP TABLE IF EXISTS {s}.raw_events").format(s=schema))
        conn.execute(SQL("CREATE TABLE {s}.raw_events (originator_id uuid NOT NULL, "
                         "originator_version bigint NOT NULL, topic text, state bytea, "
                         "PRIMARY KEY (originator_id, originator_version))").format(s=schema))
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(SQL("COPY {s}.raw_events FROM STDIN (FORMAT BINARY)")
                                            .format(s=schema)) as copy:
            copy.set_types(["uuid", "int8", "text", "bytea"])
            for row in rows:
                copy.write_row(row)
        conn.commit()
        seconds = time.perf_counter() - started
        conn.execute(SQL("DROP TABLE {s}.raw_events").format(s=schema))
        conn.commit()
        return seconds, len(rows)


# ---- the timed month ----------------------------------------------------------------------

def one_month(ledger: Ledger, period: str, out_dir: Path, config: PayoutConfig
              ) -> dict[str, Any]:
    parts: dict[str, float] = {}
    peaks: dict[str, float] = {}
    timings = run.RunTimings()
    load_before = os.getloadavg()[0]

    def done(part: str, since: tuple[float, float, float]) -> None:
        parts[part] = time.perf_counter() - since[0]
        parts[f"{part}.cpu"] = time.process_time() - since[1]
        # The forked child that shares funding's work (ledger.forked).
        parts[f"{part}.child_cpu"] = children_cpu() - since[2]
        # The process's peak resident memory so far (a high-water mark: the step that
        # raised it is the one where it first shows), and its children's.
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
        peaks[part] = round(peak_gb, 2)
        peaks[f"{part}.child"] = round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 / 1024, 2)
        print(f"  {period} {part}: {parts[part]:.1f} s (cpu {parts[part + '.cpu']:.1f} s, "
              f"the child's {parts[part + '.child_cpu']:.1f} s; peak memory so far "
              f"{peak_gb:.2f} GB, a child's {peaks[part + '.child']:.2f} GB)", file=sys.stderr)

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def now() -> tuple[float, float, float]:
        return time.perf_counter(), time.process_time(), children_cpu()

    t0 = t = now()
    batch = run.run_month(ledger, period, actor="operator", config=config,
                          today=date(2026, 12, 1), timings=timings)
    done("run_month", t)
    # Counted now: the drafted lines are let go with the drafted batch (a million models).
    topped_up = sum(1 for line in batch.lines.values() if line.rerated_fen)
    parts.update({f"run_month.{k}": v for k, v in timings.parts.items()})
    t = now()
    batch, _ = run.approve(ledger, batch.id, batch.manifest_sha256, "approver")
    done("approve", t)
    t = now()
    head = ledger.recorder.max_notification_id() or 0
    funded = run.fund(ledger, batch.id, value_date=date(2026, int(period[5:]), 10),
                      actor="finance")
    done("fund", t)
    funded_upto = ledger.recorder.max_notification_id() or 0
    t = now()
    result = export.export_batch(ledger, batch.id, out_dir, file_format="pain001",
                                 actor="operator", config=config)
    done("export", t)
    total = time.perf_counter() - t0[0]
    assert funded["payments"] == batch.line_count and result.total_fen == batch.total_fen
    # Baselines, untimed by the month: the raw PostgreSQL work of its biggest read and write.
    read_s, read_rows = raw_read_register(ledger)
    copy_s, copy_rows = raw_copy_events(ledger, head, funded_upto)
    baselines = {"raw_read_register_s": read_s, "raw_read_register_rows": read_rows,
                 "raw_copy_funded_events_s": copy_s, "raw_copy_funded_events_rows": copy_rows}
    print(f"  {period} baselines: raw read of the register {read_s:.1f} s ({read_rows:,} rows), "
          f"raw COPY of the funded events {copy_s:.1f} s ({copy_rows:,} rows)", file=sys.stderr)
    return {"period": period, "total_s": total, "parts_s": parts, "baselines": baselines,
            "peak_memory_gb_after": peaks,
            "ratios": {
                "read_register / raw read": parts["run_month.read_register"] / read_s,
                "fund / raw COPY of its events": parts["fund"] / copy_s,
                "total / (raw read + raw COPY)": total / (read_s + copy_s)},
            "load_average": [load_before, os.getloadavg()[0]],
            "payments": batch.line_count, "total_fen": batch.total_fen,
            "topped_up": topped_up,
            "files": len(result.files),
            "bytes": sum((out_dir / f).stat().st_size for f in result.files),
            "manifest_sha256": result.manifest_sha256}


def raise_back_dated(ledger: Ledger, since: str) -> None:
    """A rule version raising the county's part by 5 yuan from `since`, published now."""
    on = date(int(since[:4]), int(since[5:]), 1)
    ledger.publish_rules(on, ledger.rules_on(on).parameters.county_part_raised(500),
                         f"county raise from {since}", actor="admin")
    print(f"  a raise back-dated to {since} published", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pensioners", type=int, default=MAX_PENSIONERS)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the last run; top functions to bench/out/")
    ap.add_argument("--keep", action="store_true",
                    help="keep the schema afterwards (to measure more months on it: --reuse)")
    ap.add_argument("--reuse", metavar="SCHEMA",
                    help="no set-up: run the next months on a schema kept by --keep")
    ap.add_argument("--raise-before-last", action="store_true",
                    help="before the last month, publish a raise of the county's part "
                         "back-dated to the first month: that month tops up every month "
                         "paid before it (调待补发)")
    ap.add_argument("--one-process", action="store_true",
                    help="fund without its forked child (decision #35), to compare")
    ap.add_argument("--as-loaded", action="store_true",
                    help="leave the registers in the order the set-up wrote them (no "
                         "`pension-ledger maintain` after the load), to compare")
    args = ap.parse_args(argv)
    if args.one_process:
        disbursement.FUND_IN_TWO_MIN_LINES = 10**12
    if not 1 <= args.pensioners <= MAX_PENSIONERS:
        ap.error(f"--pensioners must be 1..{MAX_PENSIONERS}")
    if not 1 <= args.runs <= 9:
        ap.error("--runs must be 1..9")
    OUT.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    first = 1
    with (kept_schema(args.reuse) if args.reuse else fresh_schema(args.keep)) as url:
        ledger = Ledger(url, cipher_key="")
        setup_s = upkeep_s = 0.0
        upkeep: list[dict[str, Any]] = []
        if args.reuse:
            while run.live_batch(ledger, f"2026-{first:02d}") is not None:
                first += 1
            if first + args.runs - 1 > 12:
                raise SystemExit(f"months 2026-{first:02d} on do not fit in 2026")
            print(f"reusing {args.reuse}: from 2026-{first:02d}", file=sys.stderr)
        else:
            ledger.init(actor="admin")
            print(f"set-up of {args.pensioners:,} pensioners ...", file=sys.stderr)
            setup_s = populate(ledger, args.pensioners)
            if not args.as_loaded:
                # What an office does after a first load (`pension-ledger maintain`):
                # the registers in participant-id order, as funding rewrites them.
                started = time.perf_counter()
                upkeep = ledger.keep_registers_in_order()
                upkeep_s = time.perf_counter() - started
                print(f"  registers put in order: {upkeep_s:.1f} s {upkeep}", file=sys.stderr)
        work = Path(tempfile.mkdtemp(prefix="payout-", dir=OUT))
        # The drafts keep their files and line summaries (payout_engine.drafted_files,
        # line_summaries) where an office keeps them: one place for the store, so that the
        # next month, run later with --reuse, finds last month's.
        spool = OUT / f"drafted-{ledger.recorder.datastore.schema}"  # type: ignore[attr-defined]
        config = PayoutConfig(drafted_files_dir=str(spool))
        try:
            for k in range(first, first + args.runs):
                period = f"2026-{k:02d}"
                last = k == first + args.runs - 1
                if last and args.raise_before_last and k > first:
                    raise_back_dated(ledger, f"2026-{first:02d}")
                profiler = cProfile.Profile() if args.profile and last else None
                if profiler:
                    profiler.enable()
                r = one_month(ledger, period, work / period, config)
                if profiler:
                    profiler.disable()
                    stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
                    with open(OUT / f"payout-profile-{stamp}.txt", "w") as fh:
                        stats = pstats.Stats(profiler, stream=fh)
                        stats.sort_stats("cumulative").print_stats(60)
                        stats.sort_stats("tottime").print_stats(40)
                results.append(r)
                print(f"{period}: {r['total_s']:.1f} s  load {r['load_average']}  " + "  ".join(
                    f"{k}={v:.1f}" for k, v in r["parts_s"].items()), file=sys.stderr)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            if not (args.keep or args.reuse):
                shutil.rmtree(spool, ignore_errors=True)
            ledger.close()
    parts = sorted({p for r in results for p in r["parts_s"]})
    medians = {"total_s": statistics.median(r["total_s"] for r in results),
               **{p: statistics.median(r["parts_s"].get(p, 0.0) for r in results)
                  for p in parts}}
    baselines = {b: statistics.median(r["baselines"][b] for r in results)
                 for b in results[0]["baselines"]}
    ratios = {k: round(statistics.median(r["ratios"][k] for r in results), 2)
              for k in results[0]["ratios"]}
    report = {"pensioners": args.pensioners, "raise_before_last": args.raise_before_last,
              "one_process": args.one_process,
              "runs": results, "median_s": medians,
              "baselines_median": baselines, "ratios_median": ratios, "setup_s": setup_s,
              "registers_put_in_order_s": upkeep_s, "registers_upkeep": upkeep,
              "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                          "cpus": os.cpu_count()}}
    stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
    (OUT / f"payout-{stamp}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({"pensioners": args.pensioners, "median_s": medians,
                      "baselines_median": baselines, "ratios_median": ratios}, indent=2))


if __name__ == "__main__":
    main()
