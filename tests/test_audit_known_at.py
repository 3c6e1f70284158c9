"""What the ledger knew at a recorded time: balances replayed from the events committed by
then (the hash chain's blocks recorded by then), as of any value date, equal to what the
views answered at that time, whatever was booked later with earlier value dates."""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ledger.application import Ledger
from ledger.audit import balances_known_at, known_through
from ledger.cli import app
from ledger.projections import ProjectionRunner, Views
from tests.helpers import contribute
from tests.test_cli import ENV
from tests.test_projections_support import AS_OF_DATES, A, nonzero, scenario


def view_balances(ledger: Ledger) -> dict[str, dict[str, int]]:
    ProjectionRunner(ledger).run_until_caught_up()
    views = Views(ledger)
    return {str(on): nonzero(views.balances(on)["accounts"]) for on in AS_OF_DATES}


def known(ledger: Ledger, at: datetime) -> dict[str, dict[str, int]]:
    return {str(on): balances_known_at(ledger, at, on)["accounts"] for on in AS_OF_DATES}


def later_than_now() -> datetime:
    """A moment every write from here on is recorded after."""
    moment = datetime.now(UTC)
    time.sleep(0.002)
    return moment


def test_balances_known_at_a_time_are_what_the_views_said_then(ledger: Ledger) -> None:
    scenario(ledger)
    then = view_balances(ledger)
    at = later_than_now()

    # Booked afterwards, dated earlier: a back-dated treasury receipt and a late contribution.
    ledger.receive_treasury_funds(amount_fen=70_000, level="county", purpose="basic_pension",
                                  value_date=date(2016, 2, 1), reference="T-LATE",
                                  actor="fin1")
    contribute(ledger, A, 2017, 50000, value_date=date(2017, 3, 1))
    now = view_balances(ledger)
    assert now != then  # the later bookings change what is answered as of those dates

    assert known(ledger, at) == then
    assert known(ledger, datetime.now(UTC)) == now


def test_before_the_first_write_nothing_was_known(ledger: Ledger) -> None:
    before = datetime.now(UTC) - timedelta(days=1)
    scenario(ledger)
    result = balances_known_at(ledger, before)
    assert (result["through_notification"], result["money_events"], result["accounts"]) == (
        0, 0, {})
    assert known_through(ledger, datetime.now(UTC)) == ledger.recorder.max_notification_id()


def test_a_time_without_its_zone_is_refused(ledger: Ledger) -> None:
    with pytest.raises(AssertionError, match="time zone"):
        balances_known_at(ledger, datetime(2026, 1, 1, 12, 0))


def test_on_the_command_line_a_time_without_offset_is_china_standard_time(
        tmp_path: Path) -> None:
    db = str(tmp_path / "ledger.db")

    def run(*args: str) -> Result:
        return CliRunner().invoke(app, ["--db", db, *args], env=ENV)

    assert run("init").exit_code == 0
    for amount, day, ref in (("1000.00", "2026-01-05", "T1"), ("50.00", "2026-01-02", "T2")):
        r = run("--actor", "fin1", "treasury", "--amount", amount, "--level", "county",
                "--purpose", "basic_pension", "--date", day, "--reference", ref)
        assert r.exit_code == 0, r.stderr
    # The second receipt was recorded at its block's time; a minute before that, in UTC+8
    # written without an offset, only the first was known.
    ledger = Ledger(db, cipher_key="")
    recorded = ledger.queries.fetch("SELECT recorded_at FROM {p}event_chain "
                                    "ORDER BY block_no DESC LIMIT 1")[0][0]
    ledger.close()
    before_second = (datetime.fromisoformat(recorded) - timedelta(microseconds=1)).astimezone(
        timezone(timedelta(hours=8))).replace(tzinfo=None).isoformat()

    r = run("--json", "audit", "balances", "--known-at", before_second)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["balances_fen"] == {"1002": 100000, "2101": -100000}
    r = run("--json", "audit", "balances", "--known-at", recorded, "--as-of", "2026-01-03")
    assert json.loads(r.stdout)["balances_fen"] == {"1002": 5000, "2101": -5000}

    r = run("audit", "balances", "--known-at", "yesterday")
    assert r.exit_code == 2 and "known_at: 'yesterday' is not a date and time" in r.stderr
