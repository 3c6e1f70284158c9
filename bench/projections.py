"""Rebuilding the projections from N stored events on PostgreSQL, beside the raw baseline
measured in the same run, and the latency of `balances` on the big store.

    .venv/bin/python -m bench.projections [--events 1000000] [--runs 3] [--keep]

The store: a synthetic county written straight into a fresh schema of the PostgreSQL
database `test` (ledger.recorder.insert_events_bulk of pydantic events built here), in the
order a year's work produces them: enrolments, contributions (with payments on behalf for
hardship groups), subsidies at three levels, interest, the next year's contributions,
pensions and deaths, and the fund's monthly sweeps. About 7 events per participant.

Each run measures:
  - baseline: reading the same rows with psycopg (binary, pages of 10,000 by notification
    id, as the runner reads) and orjson-decoding each state; no projection work;
  - rebuild: ledger.projections.rebuild of every view, one pass, into fresh tables, indexed
    and switched once caught up (read, decrypt when encrypted, orjson-decode the stored
    state into a dict, postings by the topic's rule, rows, COPY and upserts, tracking);
  - balances latency: Views.balances() now, as of a date, and by township, repeated.
The load average (os.getloadavg) is recorded with each run: the machine may be shared.
Medians of --runs are printed and written with every figure to
bench/out/projections-<time>.json. The schema is dropped afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg
from eventsourcing.utils import get_topic
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from ledger import resident_id
from ledger.aggregates.fund import Fund
from ledger.aggregates.participant import BankAccount, BasicPensionComponents, participant_id
from ledger.aggregates.participant import Participant as P
from ledger.application import FUND_NAME, Ledger
from ledger.projections import Views, rebuild

PG_DSN = os.environ.get("BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
OUT = Path(__file__).resolve().parent / "out"
AREA = "431121"
TOWNSHIPS = [f"{name}镇" for name in "东西南北中上下前后左右新老大小高低长平安"]
EVENTS_PER_PARTICIPANT = 7.2
CHUNK = 50_000
MAX_EVENTS = 20_000_000
TARGET_EVENTS_PER_S = 50_000
TARGET_SHARE_OF_BASELINE = 0.60
TARGET_BALANCES_MS = 20.0
NOW = datetime(2025, 1, 20, 8, 0, tzinfo=UTC)


# ---- the synthetic county ----------------------------------------------------------------

def day_in(year: int, i: int) -> date:
    return date(year, 1, 1) + timedelta(days=(i * 7919) % 365)


class County:
    """Events of n participants, phase by phase, with each aggregate's versions in order."""

    def __init__(self, participants: int, fund_version: int) -> None:
        self.n = participants
        self.versions = [1] * participants
        self.pids = [participant_id(self.id_number(i)) for i in range(participants)]
        self.fund_id = Fund.id_for(FUND_NAME)
        self.fund_version = fund_version

    @staticmethod
    def id_number(i: int) -> str:
        return resident_id.make(AREA, date(1950, 1, 1) + timedelta(days=i // 1000), i % 1000)

    def _next(self, i: int) -> dict[str, Any]:
        self.versions[i] += 1
        return {"originator_id": self.pids[i], "originator_version": self.versions[i],
                "timestamp": NOW, "actor": "bench"}

    def _fund(self) -> dict[str, Any]:
        self.fund_version += 1
        return {"originator_id": self.fund_id, "originator_version": self.fund_version,
                "timestamp": NOW, "actor": "bench"}

    def phases(self) -> Iterator[Callable[[int], list[Any]]]:
        yield self.enrol
        yield lambda i: self.contribute(i, 2023)
        yield self.subsidise
        yield self.interest
        yield lambda i: self.contribute(i, 2024)
        yield self.pension_or_death

    def enrol(self, i: int) -> list[Any]:
        idn = self.id_number(i)
        return [P.Enrolled(
            originator_id=self.pids[i], originator_version=1, timestamp=NOW, actor="bench",
            originator_topic=get_topic(P), id_number=idn, name=f"参保人{i}",
            birth_date=resident_id.birth_date(idn), township=TOWNSHIPS[i % len(TOWNSHIPS)],
            village=f"{i // len(TOWNSHIPS) % 15}村", identity_group="ordinary",
            enrol_date=date(2015, 1, 10),
            bank=BankAccount(account_name=f"参保人{i}", account_number=f"6222{i:012d}",
                             bank_code="102"))]

    def contribute(self, i: int, year: int) -> list[Any]:
        on = day_in(year, i)
        tier = (10000, 20000, 50000, 100000)[i % 4]
        on_behalf = 5000 if i % 10 == 0 and tier == 10000 else 0
        out: list[Any] = [P.ContributionReceived(
            **self._next(i), value_date=on, year=year, tier_fen=tier,
            amount_fen=tier - on_behalf, channel="bank", receipt_no=f"B{year}-{i}",
            rule_version="v5@2020-01-01")]
        if on_behalf:
            out.append(P.PaidOnBehalf(**self._next(i), value_date=on, year=year,
                                      amount_fen=on_behalf, identity_group="minimum_living",
                                      rule_version="v5@2020-01-01"))
        return out

    def subsidise(self, i: int) -> list[Any]:
        return [P.SubsidyCredited(**self._next(i), value_date=date(2023, 12, 1), year=2023,
                                  level=level, amount_fen=amount, rule_version="v5@2020-01-01")
                for level, amount in (("province", 2000), ("city", 1500), ("county", 1500))]

    def interest(self, i: int) -> list[Any]:
        return [P.InterestCredited(**self._next(i), value_date=date(2023, 12, 31), year=2023,
                                   rate=Decimal("0.0175"), amount_fen=100 + i % 500,
                                   rule_version="v5@2020-01-01")]

    def pension_or_death(self, i: int) -> list[Any]:
        if i % 20 == 0:
            return [P.PensionApproved(
                **self._next(i), start_month="2024-07",
                basic=BasicPensionComponents(central_fen=14300, province_fen=3000,
                                             city_fen=1000, county_fen=1000,
                                             long_contribution_fen=0, age_extra_fen=0),
                account_balance_fen=150000, account_pension_fen=1079, contribution_years=15,
                transitional=False, rule_version="v6@2024-01-01")]
        if i % 101 == 0:
            return [P.Died(**self._next(i), date_of_death=day_in(2024, i),
                           reported_on=day_in(2024, i))]
        return []

    def sweep(self, month: int, year: int, amount_fen: int) -> Any:
        return Fund.Transferred(**self._fund(), amount_fen=amount_fen,
                                value_date=date(year, month, 28),
                                reference=f"SWEEP-{year}-{month}", from_account="income",
                                to_account="fiscal", kind="sweep")


def populate(ledger: Ledger, events: int) -> int:
    """Write about `events` events; returns how many were written."""
    county = County(max(1, int(events / EVENTS_PER_PARTICIPANT)), ledger.fund().version)
    written = 0
    batch: list[Any] = []

    def flush() -> None:
        nonlocal written, batch
        if batch:
            written += ledger.recorder.insert_events_bulk(  # type: ignore[attr-defined]
                [ledger.mapper.to_stored_event(e) for e in batch])
            batch = []

    for phase_no, phase in enumerate(county.phases()):
        for i in range(county.n):
            batch += phase(i)
            if len(batch) >= CHUNK:
                flush()
        if phase_no in (1, 4):  # the income account swept once a month
            year = 2023 if phase_no == 1 else 2024
            batch += [county.sweep(m, year, 1_000_000) for m in range(1, 13)]
        print(f"  phase {phase_no + 1}/6: {written + len(batch):,} events", file=sys.stderr)
    flush()
    return written


# ---- measurements ------------------------------------------------------------------------

def baseline(schema: str, table: str) -> tuple[float, int]:
    """Read every row with psycopg and orjson-decode its state: (seconds, rows)."""
    rows = 0
    started = time.perf_counter()
    with psycopg.connect(PG_DSN, row_factory=tuple_row) as conn:
        cur = conn.cursor(binary=True)
        query = SQL("SELECT notification_id, originator_id, originator_version, topic, state "
                    "FROM {}.{} WHERE notification_id > %s ORDER BY notification_id "
                    "LIMIT 10000").format(Identifier(schema), Identifier(table))
        last = 0
        while True:
            cur.execute(query, (last,))
            page = cur.fetchall()
            if not page:
                break
            for row in page:
                orjson.loads(row[4])
            rows += len(page)
            last = page[-1][0]
    return time.perf_counter() - started, rows


def latencies_ms(call: Callable[[], Any], repeat: int = 50) -> dict[str, float]:
    call()  # warm: connection, plans
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return {"median_ms": round(statistics.median(timings), 2),
            "p95_ms": round(timings[int(len(timings) * 0.95) - 1], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--schema", default="bench_projections")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the events of an earlier --keep run of the same size")
    parser.add_argument("--keep", action="store_true", help="do not drop the schema")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes sharing the rebuild (rebuild(workers=...))")
    args = parser.parse_args(argv)
    assert 0 < args.events <= MAX_EVENTS and 0 < args.runs <= 20

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        if not args.reuse:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(args.schema)))
    ledger = Ledger(f"{PG_DSN}?schema={args.schema}", cipher_key="")
    ledger.init()
    table = ledger.recorder.events_table_name  # type: ignore[attr-defined]
    stored = ledger.recorder.max_notification_id() or 0
    if stored < args.events * 0.9:
        started = time.perf_counter()
        populate(ledger, args.events)
        print(f"populated in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    total = ledger.recorder.max_notification_id() or 0
    rebuild(ledger)  # live views of this program's version, which each run replaces

    runs: list[dict[str, Any]] = []
    views = Views(ledger)
    for run in range(args.runs):
        base_s, rows = baseline(args.schema, table)
        started = time.perf_counter()
        rebuild(ledger, workers=args.workers)
        rebuild_s = time.perf_counter() - started
        figures: dict[str, Any] = {
            "baseline_events_per_s": round(rows / base_s),
            "rebuild_events_per_s": round(total / rebuild_s),
            "rebuild_seconds": round(rebuild_s, 2),
            "balances_now": latencies_ms(views.balances),
            "balances_as_of": latencies_ms(lambda: views.balances(date(2024, 6, 30))),
            "balances_by_township": latencies_ms(
                lambda: views.balances(date(2024, 6, 30), by="township")),
        }
        figures["share_of_baseline"] = round(
            figures["rebuild_events_per_s"] / figures["baseline_events_per_s"], 3)
        figures["load_average_1m"] = round(os.getloadavg()[0], 2)
        runs.append(figures)
        print(f"run {run + 1}: {json.dumps(figures)}", file=sys.stderr)

    def median(key: str, sub: str | None = None) -> float:
        values = [float(r[key][sub] if sub else r[key]) for r in runs]
        return statistics.median(values)

    summary: dict[str, Any] = {
        "events": total,
        "workers": args.workers,
        "baseline_events_per_s": median("baseline_events_per_s"),
        "rebuild_events_per_s": median("rebuild_events_per_s"),
        "share_of_baseline": median("share_of_baseline"),
        "rebuild_events_per_s_range": [min(r["rebuild_events_per_s"] for r in runs),
                                       max(r["rebuild_events_per_s"] for r in runs)],
        "load_average_1m_range": [min(r["load_average_1m"] for r in runs),
                                  max(r["load_average_1m"] for r in runs)],
        "balances_now_ms": median("balances_now", "median_ms"),
        "balances_as_of_ms": median("balances_as_of", "median_ms"),
        "balances_by_township_ms": median("balances_by_township", "median_ms"),
    }
    summary["meets_targets"] = {
        "events_per_s": summary["rebuild_events_per_s"] >= TARGET_EVENTS_PER_S,
        "share_of_baseline": summary["share_of_baseline"] >= TARGET_SHARE_OF_BASELINE,
        "balances_ms": max(summary["balances_now_ms"], summary["balances_as_of_ms"],
                           summary["balances_by_township_ms"]) < TARGET_BALANCES_MS,
    }
    OUT.mkdir(exist_ok=True)
    stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
    out = OUT / f"projections-{stamp}.json"
    out.write_text(json.dumps({"summary": summary, "runs": runs, "machine": {
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "platform": platform.platform()}}, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"written to {out}", file=sys.stderr)
    ledger.close()
    if not args.keep:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(args.schema)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
