"""Crash safety: the payout engine killed with SIGKILL at every step, then run again.

A child process (`python -m tests.test_payout_crash URL KEY OUT KILL_AT`) runs two months
end to end (draft, approve, fund, export, the bank's 回盘 imported, then a pacs.004 that
returns one payment of each month) and kills itself with SIGKILL at the named point: inside
the write transaction of a step (before its commit), right after a step, after the first
bank file is written, after a return file naming both months is booked (in one transaction)
and before its batches are closed. Each kill is followed by the next run, which kills
itself later on, and a last run that finishes. The ledger must end
exactly where an uninterrupted run ends: the same batches (same manifest hashes), the same
money, and nobody paid twice for a month.

A second test kills the command line (`python -m payout_engine payout ...`) from outside at
random moments while it drafts, approves, funds and exports a month of 8,000 pensioners.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ledger import disbursement
from ledger.aggregates.participant import Participant
from ledger.aggregates.payout_batch import PayoutBatch
from ledger.application import Ledger
from payout_engine import export, returns_import, run
from payout_engine.bankfiles.domestic import write_domestic_return
from tests.conftest import TEST_CIPHER_KEY, require_postgres
from tests.test_payout_support import (
    APPROVER,
    BANK,
    CONFIG,
    FINANCE,
    OPERATOR,
    pacs004,
    pid,
    transitional,
    treasury,
)

PERIODS = ("2020-04", "2020-05")
PEOPLE = range(1, 7)
FAILS = {"2020-04": 2}       # pensioner 2's first payment fails (AC04) ...
REBANK = 2                   # ... until new bank details are given
RETURNS = {"2020-04": 3, "2020-05": 4}  # settled, then back with MD07 / AC04
TODAY = date(2030, 1, 1)
PENSIONERS = 8000  # for the command line killed from outside
KILL_POINTS = [
    "run@2020-04:commit", "approve@2020-04:commit", "fund@2020-04:commit",
    "fund@2020-04:after", "export@2020-04:file", "export@2020-04:commit",
    "import@2020-04:commit", "run@2020-05:after", "fund@2020-05:commit",
    "export@2020-05:after", "return@-:commit", "return@-:booked",
]


# ---- the child process ----------------------------------------------------------------------

class Killer:
    """Kills this process at one named point: stage@period:point."""

    def __init__(self, kill_at: str) -> None:
        self.target = kill_at
        self.stage = ""

    def at(self, point: str) -> None:
        if f"{self.stage}:{point}" == self.target:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def wrap(self, fn: Callable[..., Any], before: str = "", after: str = ""
             ) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if before:
                self.at(before)
            result = fn(*args, **kwargs)
            if after:
                self.at(after)
            return result
        return wrapper


def pipeline(ledger: Ledger, out: Path, killer: Killer | None = None) -> None:
    """Both months end to end; every step safe to repeat."""
    k = killer or Killer("")
    if killer is not None:
        # Inside the write transaction of every save, before it commits: where the hash
        # chain's block is written (`_append_blocks` where the store has it, `_chain`
        # otherwise; each write path calls one of them last, inside its transaction).
        recorder: Any = ledger.recorder
        for hook in ("_chain", "_append_blocks"):
            if hasattr(recorder, hook):
                setattr(recorder, hook, k.wrap(getattr(recorder, hook), before="commit"))
        from payout_engine.bankfiles import manifest
        manifest.write_atomic = k.wrap(manifest.write_atomic, after="file")  # type: ignore[assignment]
        disbursement.answer_all = k.wrap(disbursement.answer_all, after="booked")  # type: ignore[assignment]
    people = {n: transitional_id(n) for n in PEOPLE}
    for period in PERIODS:
        if period == PERIODS[1] and ledger.participant(people[REBANK]).payment_hold:
            from tests.test_payout_support import account

            ledger.change_bank_details(id_number=people[REBANK], bank=account(20 + REBANK),
                                       actor=OPERATOR, idempotency_key=f"rebank-{REBANK}")
        k.stage = f"run@{period}"
        batch = run.run_month(ledger, period, actor=OPERATOR, file_format="domestic",
                              config=CONFIG, today=TODAY)
        k.at("after")
        k.stage = f"approve@{period}"
        run.approve(ledger, batch.id, batch.manifest_sha256, APPROVER)
        k.at("after")
        k.stage = f"fund@{period}"
        run.fund(ledger, batch.id, value_date=date(2020, int(period[5:]), 10), actor=FINANCE)
        k.at("after")
        k.stage = f"export@{period}"
        result = export.export_batch(ledger, batch.id, out / period, file_format="domestic",
                                     actor=OPERATOR, config=CONFIG)
        k.at("after")
        k.stage = f"import@{period}"
        failing = FAILS.get(period)
        for name in result.files:
            request = (out / period / name).read_bytes()
            fails = {e: ("AC04", "account closed") for e, line in batch.lines.items()
                     if failing and line.id_number == people[failing]}
            answer = out / f"{name}.ret"
            if not answer.exists():
                answer.write_bytes(write_domestic_return(request, fails))
            returns_import.import_returns(ledger, answer, actor=BANK, config=CONFIG)
        k.at("after")
    k.stage = "return@-"
    back = {}
    for period, n in RETURNS.items():
        b = disbursement.get_batch(ledger, PayoutBatch.id_for(period, 1))
        e2e, line = next((e, line) for e, line in b.lines.items()
                         if line.id_number == people[n])
        back[e2e] = (line.amount_fen, "MD07" if n == 3 else "AC04")
    path = out / "pacs004.xml"
    path.write_bytes(pacs004(back))
    returns_import.import_returns(ledger, path, actor=BANK, config=CONFIG)
    k.at("after")


def transitional_id(n: int) -> str:
    from tests.helpers import make_id

    return make_id(n, born=date(1950, 3, 15))


def set_up(ledger: Ledger) -> None:
    treasury(ledger)
    for n in PEOPLE:
        transitional(ledger, n)


def child(argv: list[str]) -> None:
    url, key, out, kill_at = argv
    ledger = Ledger(url, cipher_key=key)
    try:
        pipeline(ledger, Path(out), Killer(kill_at))
    finally:
        ledger.close()


# ---- what an uninterrupted run leaves -------------------------------------------------------

def outcome(ledger: Ledger) -> dict[str, Any]:
    """Everything that must not depend on where the engine was killed."""
    batches = {}
    for period in PERIODS:
        infos = run.batches_of(ledger, period)
        b = disbursement.get_batch(ledger, infos[0].id)
        batches[period] = (len(infos), b.manifest_sha256, b.state, b.total_fen,
                           sorted(b.outcomes.items()), len(list(ledger.events.get(b.id))))
    people = {}
    for n in PEOPLE:
        idn = transitional_id(n)
        events = [e for e in ledger.events.get(pid(idn))
                  if isinstance(e, Participant.PensionPaid | Participant.PensionPaymentReversed)]
        paid = Counter(m for e in events if isinstance(e, Participant.PensionPaid)
                       for m in e.months)
        reversed_ = Counter(m for e in events
                            if isinstance(e, Participant.PensionPaymentReversed)
                            for m in e.months)
        # Nobody is paid twice for a month: a second payment only after a reversal.
        assert all(paid[m] - reversed_[m] in (0, 1) for m in paid), (idn, paid, reversed_)
        net = sorted(m for m in paid if paid[m] > reversed_[m])
        assert ledger.queries.paid_month_count(pid(idn)) == len(net)
        people[n] = ([type(e).__name__ for e in events], net,
                     ledger.participant(idn).status, ledger.participant(idn).payment_hold)
    return {"batches": batches, "people": people, "positions": ledger.fund_positions()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    where = tmp_path_factory.mktemp("reference")
    ledger = Ledger(str(where / "ledger.db"), cipher_key="")
    ledger.init()
    set_up(ledger)
    pipeline(ledger, where / "out")
    found = outcome(ledger)
    ledger.close()
    return found


def spawn(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=Path(__file__).resolve().parent.parent)


@pytest.mark.parametrize("store", ["sqlite", "postgres-encrypted"])
def test_killed_at_every_step_the_engine_ends_where_an_uninterrupted_run_ends(
        store: str, tmp_path: Path, reference: dict[str, Any], request: pytest.FixtureRequest
        ) -> None:
    if store == "sqlite":
        url, key = str(tmp_path / "ledger.db"), ""
    else:
        require_postgres()
        url, key = request.getfixturevalue("pg_url"), TEST_CIPHER_KEY
    ledger = Ledger(url, cipher_key=key)
    ledger.init()
    set_up(ledger)
    ledger.close()
    out = tmp_path / "out"
    for point in KILL_POINTS:
        done = spawn("-m", "tests.test_payout_crash", url, key, str(out), point)
        assert done.returncode == -signal.SIGKILL, (point, done.returncode, done.stderr)
    for _ in range(2):  # the run that finishes, then one that finds everything done
        done = spawn("-m", "tests.test_payout_crash", url, key, str(out), "none")
        assert done.returncode == 0, done.stderr
    ledger = Ledger(url, cipher_key=key)
    try:
        assert outcome(ledger) == reference
    finally:
        ledger.close()


MAX_KILL_ATTEMPTS = 6  # a step's attempts to kill the command line mid-step


def test_the_command_line_killed_at_random_moments_pays_nobody_twice(tmp_path: Path) -> None:
    from bench.payout import populate

    db = tmp_path / "ledger.db"
    ledger = Ledger(str(db), cipher_key="")
    ledger.init()
    populate(ledger, PENSIONERS)
    ledger.close()
    shutil.copy(db, tmp_path / "reference.db")

    def cli(db_path: Path, actor: str, *args: str) -> subprocess.CompletedProcess[str]:
        return spawn("-m", "payout_engine", "--db", str(db_path), "--actor", actor, "payout",
                     *args, "--json")

    steps = [(OPERATOR, "run", "--period", "2026-01"),
             (APPROVER, "approve", "2026-01/1", "--manifest-hash", "{hash}"),
             (FINANCE, "fund", "2026-01/1", "--date", "2026-01-10"),
             (OPERATOR, "export", "2026-01/1", "--format", "pain001", "--out", "{out}")]
    # Each step run once undisturbed on a copy: the manifest to approve, and how long the
    # step takes on this machine, so that the kills land inside it however fast it is.
    manifest = ""
    seconds: list[float] = []
    for actor, *args in steps:
        argv = [a.format(hash=manifest, out=tmp_path / "reference-files") for a in args]
        started = time.monotonic()
        done = cli(tmp_path / "reference.db", actor, *argv)
        seconds.append(time.monotonic() - started)
        assert done.returncode == 0, (argv, done.stderr)
        manifest = manifest or __import__("json").loads(done.stdout)["manifest_sha256"]
    rng = random.Random(20261130)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    kills = 0
    for (actor, *args), step_s in zip(steps, seconds, strict=True):
        argv = [a.format(hash=manifest, out=tmp_path / "files") for a in args]
        step_kills = 0
        for attempt in range(MAX_KILL_ATTEMPTS):  # killed from outside at a random moment
            if attempt >= 3 and step_kills:
                break
            # Past the interpreter's start (about half of a short step), before the end;
            # earlier once three attempts ended before the kill (the machine ran faster
            # than when the step was timed).
            low = 0.5 if attempt < 3 else 0.3
            proc = subprocess.Popen(
                [sys.executable, "-m", "payout_engine", "--db", str(db), "--actor", actor,
                 "payout", *argv, "--json"], env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent)
            try:
                proc.wait(timeout=rng.uniform(low, 0.95) * step_s)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                step_kills += proc.wait() == -signal.SIGKILL
        kills += step_kills
        done = cli(db, actor, *argv)
        assert done.returncode == 0, (argv, done.stderr)
    assert kills >= 3  # most attempts die mid-step (a step takes 1-2 s here)
    ledger = Ledger(str(db), cipher_key="")
    try:
        infos = run.batches_of(ledger, "2026-01")
        assert len(infos) == 1 and infos[0].manifest_sha256 == manifest
        batch = disbursement.get_batch(ledger, infos[0].id)
        assert batch.state == "exported" and batch.line_count == PENSIONERS
        positions = ledger.fund_positions()
        assert positions["1101"] == batch.total_fen
        pids = [line.participant_id for line in batch.lines.values()]
        assert all(ledger.queries.paid_month_count(p) == 1 for p in pids[::97])
        paid = sum(1 for e in ledger.events.get(pids[0])
                   if isinstance(e, Participant.PensionPaid))
        assert paid == 1
        assert sorted(p.name for p in (tmp_path / "files").iterdir()) == sorted(
            [*batch.exported_files, "manifest.json"])
    finally:
        ledger.close()


if __name__ == "__main__":
    child(sys.argv[1:])
