"""`pension-ledger serve`: the views over HTTP, read only. Answers equal what the views
answer; bad input, unknown things and writes get a problem body with the right status."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from threading import Thread
from typing import Any

import pytest

from entrypoints.http_api import make_server
from ledger.application import Ledger
from ledger.projections import ProjectionRunner, Views
from tests.helpers import make_id
from tests.test_projections_support import A, scenario


@pytest.fixture
def served(ledger: Ledger) -> Iterator[tuple[str, Ledger]]:
    scenario(ledger)
    ProjectionRunner(ledger).run_until_caught_up()
    server = make_server(ledger, "127.0.0.1", 0)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host!s}:{port}", ledger
    server.shutdown()
    server.server_close()


def get(url: str, method: str = "GET") -> tuple[int, str, Any]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.headers["Content-Type"], json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], json.loads(e.read())


def test_the_answers_are_the_views_answers(served: tuple[str, Ledger]) -> None:
    base, ledger = served
    views = Views(ledger)
    from datetime import date

    assert get(f"{base}/balances")[2] == views.balances()
    assert get(f"{base}/balances?as_of=2016-06-30&by=township")[2] == views.balances(
        date(2016, 6, 30), "township")
    assert get(f"{base}/fund-balances?as_of=2016-12-31")[2] == views.fund_balances(
        date(2016, 12, 31))
    trial = get(f"{base}/trial-balance")[2]
    assert trial == views.trial_balance() and trial["net_fen"] == 0
    status, kind, statement = get(f"{base}/statement/{A}?as_of=2016-12-31")
    assert (status, kind) == (200, "application/json")
    assert statement == views.statement(A, date(2016, 12, 31))
    assert A not in json.dumps(statement)  # the ID is masked
    assert get(f"{base}/roster")[2] == views.roster()
    assert get(f"{base}/report/county?year=2016")[2]["year"] == 2016
    assert set(get(f"{base}/positions")[2]) == set(views.positions())


def test_the_fixed_deposits_are_served_as_of_a_date(served: tuple[str, Ledger]) -> None:
    from datetime import date
    from decimal import Decimal

    base, ledger = served
    ledger.place_fixed_deposit(deposit_no="D-1", amount_fen=100_000, term_months=6,
                               annual_rate=Decimal("0.015"), value_date=date(2016, 7, 1),
                               reference="FD-1", actor="fin")
    held = get(f"{base}/fixed-deposits?as_of=2016-12-31")[2]
    assert (held["total_fen"], [d["deposit_no"] for d in held["deposits"]]) == (100_000, ["D-1"])
    assert held["deposits"][0]["maturity_date"] == "2017-01-01"
    assert get(f"{base}/fixed-deposits?as_of=2016-06-30")[2]["deposits"] == []


@pytest.mark.parametrize("path, status, detail", [
    ("/balances?as_of=2016-13-01", 400, "as_of: '2016-13-01' is not a date"),
    ("/balances?by=village", 400, "by: must be township"),
    ("/report/county?year=20x6", 400, "year: '20x6' is not a year"),
    ("/statement/110101197005170018", 400, "id_number"),
    (f"/statement/{make_id(999)}", 404, "no such record"),
    ("/ledger/events", 404, "path"),
])
def test_refusals_are_problem_bodies(served: tuple[str, Ledger], path: str, status: int,
                                     detail: str) -> None:
    base, _ = served
    got, kind, body = get(base + path)
    assert (got, kind) == (status, "application/problem+json")
    assert body["status"] == status and detail in body["detail"], body


def test_the_api_only_reads(served: tuple[str, Ledger]) -> None:
    base, ledger = served
    before = ledger.recorder.max_notification_id()
    status, _, body = get(f"{base}/balances", method="POST")
    assert status == 405 and body["detail"] == "the API only reads: use GET"
    assert ledger.recorder.max_notification_id() == before


def test_serve_follows_the_log(tmp_path: Path) -> None:
    # The command serves, and what is booked after it started shows up without a refresh.
    db = str(tmp_path / "ledger.db")
    ledger = Ledger(db, cipher_key="")
    ledger.init()
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-m", "entrypoints.cli", "--db", db, "serve",
                             "--port", "0"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("serving http://"), line
        base = line.split()[1]
        from datetime import date

        ledger.receive_treasury_funds(amount_fen=123_400, level="central",
                                      purpose="basic_pension", value_date=date(2026, 1, 5),
                                      reference="T-1", actor="fin1")
        for _ in range(100):  # the runner polls every second
            accounts = get(f"{base}/balances")[2]["accounts"]
            if accounts:
                break
            time.sleep(0.1)
        assert accounts == {"1002": 123_400, "2101": -123_400}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        ledger.close()


def test_a_failing_runner_is_reported_and_started_again(
        sqlite_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    from threading import Event

    from entrypoints import http_api

    stop = Event()
    runs: list[int] = []

    class FlakyRunner:
        def __init__(self, ledger: Ledger) -> None:
            pass

        def run(self, stop_: Event, poll_interval_s: float) -> None:
            runs.append(1)
            if len(runs) == 1:
                raise OSError("database restarting")
            stop_.set()

    monkeypatch.setattr(http_api, "ProjectionRunner", FlakyRunner)
    monkeypatch.setattr(http_api, "RETRY_AFTER_S", 0.0)
    reports: list[str] = []
    http_api.follow(sqlite_ledger, stop, reports.append)
    assert len(runs) == 2
    assert reports == ["projection runner failed: OSError: database restarting; retrying "
                       "in 0 s"]
