"""The runner really killed (SIGKILL, a separate process) at random points and restarted:
the views come out the same as replaying the events, with nothing counted twice or
skipped."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from ledger.application import Ledger
from ledger.projections import Views, rebuild
from tests.helpers import contribute, enrol, make_id
from tests.test_projections_support import check_against_replay, scenario, snapshot

REPO = Path(__file__).resolve().parent.parent
KILLS = 6
MAX_CHILDREN = 12
# The child dawdles inside each write transaction (after advancing the position, between
# the rows, before the commit), so kills land there as well as between batches and while
# reading.
CHILD = r"""
import random, sys, time
import ledger.projections.store_postgres, ledger.projections.store_sqlite
from ledger.application import Ledger
from ledger.projections import ProjectionRunner
from ledger.projections.store import Tx

url, key, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
for cls in Tx.__subclasses__():
    for name in ("track", "upsert", "append"):
        def slow(self, *args, _write=getattr(cls, name), **kwargs):
            _write(self, *args, **kwargs)
            time.sleep(rng.random() * 0.004)
        setattr(cls, name, slow)
ledger = Ledger(url, cipher_key=key)
runner = ProjectionRunner(ledger, batch_size=rng.randint(1, 6))
print("ready", flush=True)
runner.run_until_caught_up()
print("caught up", flush=True)
"""


def start_runner(url: str, key: str, seed: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", CHILD, url, key, str(seed)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_runner_restarts_to_the_same_views(ledger_url: tuple[str, str | None]) -> None:
    url, key = ledger_url
    ledger = Ledger(url, cipher_key=key)
    ledger.init()
    try:
        scenario(ledger)
        for n in range(10, 50):
            enrol(ledger, make_id(n), village=f"村{n % 3}")
            contribute(ledger, make_id(n), 2016)
        head = ledger.recorder.max_notification_id()
        assert head is not None
        rng = random.Random(os.environ.get("PYTEST_SEED", "kill"))
        mid_run_kills = 0
        for _attempt in range(MAX_CHILDREN):
            child = start_runner(url, key or "", rng.randrange(1_000_000))
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"  # imports and set-up done
            time.sleep(rng.uniform(0.0, 0.2))
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            position = Views(ledger).positions()["balances"]["position"]
            if child.returncode == -signal.SIGKILL and 0 < position < head:
                mid_run_kills += 1
            if mid_run_kills == KILLS or position == head:
                break
        assert mid_run_kills >= 3, "too few kills landed while the runner was working"
        final = start_runner(url, key or "", rng.randrange(1_000_000))
        out, err = final.communicate(timeout=120)
        assert final.returncode == 0, err
        assert "caught up" in out

        positions = Views(ledger).positions()
        assert all(p["position"] == head for p in positions.values()), positions
        after_kills = snapshot(ledger)
        check_against_replay(ledger, after_kills)
        rebuild(ledger)
        assert snapshot(ledger) == after_kills
    finally:
        ledger.close()
