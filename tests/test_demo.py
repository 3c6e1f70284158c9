"""The demo runs end to end on a small county, and its balances reconcile three ways: with
the demo's own tally, with the postings of every stored event, and with the CSV files."""

from __future__ import annotations

import csv
import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from entrypoints.cli import app
from ledger.aggregates.fund import Fund
from ledger.aggregates.participant import Participant
from ledger.application import Ledger
from ledger.money import parse_yuan
from ledger.postings import GUARDED_ACCOUNTS, postings_for
from ledger.resident_id import normalise
from ledger.rules import sample_county
from ledger.synthetic import make_county
from payout_engine.run import batches_between
from tests.conftest import require_postgres

ENV = {"LEDGER_DATABASE_URL": None, "CIPHER_KEY": None}
SMALL = "40"


def run_demo(*args: str) -> tuple[dict[str, Any], str]:
    r = CliRunner().invoke(app, ["--json", "demo", *args], env=ENV)
    assert r.exit_code == 0, (r.stderr[-3000:], r.exception)
    return json.loads(r.stdout), r.stderr


def postings_of_every_event(url: str) -> dict[str, int]:
    """Replay the event store: the sum of every money event's postings per guarded account."""
    ledger = Ledger(url, cipher_key="")
    try:
        totals = dict.fromkeys(GUARDED_ACCOUNTS, 0)
        start = 1
        while True:
            page = ledger.recorder.select_notifications(start=start, limit=1000)
            if not page:
                break
            for note in page:
                for p in postings_for(ledger.mapper.to_domain_event(note)):
                    if p.account in totals:
                        totals[p.account] += p.amount_fen
            start = page[-1].id + 1
        assert totals == ledger.fund_positions()
        return totals
    finally:
        ledger.close()


def contributions_in_store(url: str) -> int:
    ledger = Ledger(url, cipher_key="")
    try:
        total = 0
        for note in ledger.recorder.select_notifications(start=1, limit=10**6):
            event = ledger.mapper.to_domain_event(note)
            if isinstance(event, Participant.ContributionReceived) and not event.back_payment:
                total += event.amount_fen
            if isinstance(event, Participant.ContributionReversed) and not event.back_payment:
                total -= event.amount_fen
        return total
    finally:
        ledger.close()


def test_demo_end_to_end_reconciles(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    result, narrative = run_demo("--db", str(db), "--fresh", "--participants", SMALL)

    assert result["reconciled"] is True
    assert result["booked_fen"] == result["positions_fen"]
    assert result["positions_fen"] == postings_of_every_event(str(db))
    # Money really moved: contributions were swept and pensions funded.
    assert result["positions_fen"]["1002"] > 0 and result["positions_fen"]["1003"] > 0
    assert result["positions_fen"]["1001"] == 0  # swept to zero

    # What the contribution files say is what the ledger booked.
    csv_fen = 0
    for path in sorted(Path(result["csv_dir"]).glob("contributions-*.csv")):
        with path.open(encoding="utf-8") as f:
            csv_fen += sum(parse_yuan(row["amount"], "amount") for row in csv.DictReader(f))
    # Beside the files, one contribution booked at the wrong tier, reversed and booked again.
    corrected = sum(b["amount_fen"] for b in result["bookings"]
                    if b["what"].startswith("correction:"))
    assert corrected == 50000
    assert csv_fen + corrected == contributions_in_store(str(db)) > 0

    assert result["audit"]["ok"] is True and result["audit"]["events"] > 0
    # The demo's county has no shared accounts and no one of 100. The month paid after a
    # death is assessed as an overpayment, and the months up to it were paid; its deaths
    # are in its last year, not a year before the audit (test_audit_anomalies.py and
    # test_owed_at_death.py find each kind). Some
    # hardship-group members have no line in the last contribution file: nothing was paid
    # on their behalf, and the audit finds exactly those.
    folder = Path(result["csv_dir"])
    last = max(int(p.stem.rsplit("-", 1)[1]) for p in folder.glob("contributions-*.csv"))
    with (folder / f"contributions-{last}.csv").open(encoding="utf-8") as f:
        booked = {row["id_number"] for row in csv.DictReader(f)}
    hardship = {"destitute", "severely_disabled", "minimum_living", "registered_poor"}
    with (folder / "participants.csv").open(encoding="utf-8") as f:
        missed = [row for row in csv.DictReader(f) if row["identity_group"] in hardship
                  and int(row["id_number"][6:10]) + 60 > last
                  and row["enrol_date"] <= f"{last}-12-31" and row["id_number"] not in booked]
    assert result["audit"]["anomalies"] == {
        "paid_after_death": 0, "owed_at_death": 0, "shared_account": 0, "centenarian": 0,
        "dead_account_open": 0, "refund_not_made": 0,
        "hardship_without_on_behalf": len(missed), "deposit_not_withdrawn": 0,
        "income_not_swept": 0, "payment_held": 0}
    refusals = "\n".join(result["refusals"])
    assert "drafted this batch and may not approve it (maker-checker)" in refusals
    assert "the law forbids moving money expenditure -> income" in refusals
    assert "below zero" in refusals
    assert "separation of duties" in refusals
    assert "more than 2 decimal places" in refusals

    # The pension year's first six months went through the bank: each batch drafted, approved
    # by another person, funded, written as the bank's file (0600) and answered in full.
    ledger = Ledger(str(db), cipher_key="")
    try:
        batches = batches_between(ledger, f"{last + 1}-01", f"{last + 1}-12")
        assert [(b.period, b.state) for b in batches] == [
            (f"{last + 1}-{m:02d}", "closed") for m in range(1, 7)]
        paid = [e for e in ledger.events.get(ledger.fund().id)
                if isinstance(e, Fund.Transferred) and e.reference.startswith("PAYOUT-")]
        assert sum(e.amount_fen for e in paid) == sum(b.total_fen for b in batches)
        sent_back = [b for b in result["bookings"] if "sent back by the bank" in b["what"]]
        assert len(sent_back) == 2  # an account closed (AC04), a holder dead (MD07)
    finally:
        ledger.close()
    files = sorted((Path(result["csv_dir"]) / "bank").rglob("PO-*"))
    assert len(files) == 12 and all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    assert len([f for f in files if f.suffix == ".ret"]) == 6  # the bank's answers
    # March; April's payment came back (MD07).
    assert re.search(r"1\s+month\s+paid\s+after\s+death", narrative), narrative

    # No full resident ID or bank account number reaches the screen.
    with (Path(result["csv_dir"]) / "participants.csv").open(encoding="utf-8") as f:
        people = list(csv.DictReader(f))
    screen = narrative + json.dumps(result)
    for row in people:
        assert row["id_number"] not in screen
        assert row["account_number"] not in screen
    assert "Statement (对账单)" in narrative and "********" in narrative


def test_demo_refuses_a_ledger_that_has_data_and_fresh_starts_over(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    run_demo("--db", str(db), "--participants", "20")
    r = CliRunner().invoke(app, ["demo", "--db", str(db), "--participants", "20"], env=ENV)
    assert r.exit_code == 2
    assert "db: already holds participants" in r.stderr
    # A bad size is refused before --fresh deletes anything.
    r = CliRunner().invoke(app, ["demo", "--db", str(db), "--fresh", "--participants", "5"],
                           env=ENV)
    assert r.exit_code == 2 and "participants: must be 20 to" in r.stderr
    assert db.exists()
    again, _ = run_demo("--db", str(db), "--fresh", "--participants", "20")
    assert again["reconciled"] is True


def test_fresh_never_drops_a_server_database() -> None:
    r = CliRunner().invoke(app, ["demo", "--fresh", "--db",
                                 "postgresql://postgres@127.0.0.1:5432/test"], env=ENV)
    assert r.exit_code == 2
    assert "fresh: deletes a SQLite file only" in r.stderr


@pytest.mark.postgres
def test_demo_on_postgresql(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_postgres()
    monkeypatch.chdir(tmp_path)  # the CSV files go under ./var
    result, _ = run_demo("--db", pg_url, "--participants", "20")
    assert result["reconciled"] is True
    assert result["positions_fen"] == postings_of_every_event(pg_url)
    assert result["audit"]["ok"] is True


def test_synthetic_county_is_valid_and_deterministic() -> None:
    rules = {v[0].year: v[1] for v in sample_county()}

    def rules_for(year: int) -> Any:
        return rules[max(y for y in rules if y <= year)]

    a = make_county(300, (2021, 2022), rules_for, seed=7)
    b = make_county(300, (2021, 2022), rules_for, seed=7)
    assert [p.id_number for p in a.people] == [p.id_number for p in b.people]
    assert len({p.id_number for p in a.people}) == 300
    for p in a.people:
        assert normalise(p.id_number) == p.id_number
        assert date(1945, 1, 1) <= p.birth_date <= date(2005, 12, 31)
        assert p.enrol_date > p.birth_date
    groups = {p.identity_group for p in a.people}
    assert "ordinary" in groups and groups - {"ordinary"}
    for year, rows in a.contributions.items():
        tiers = rules_for(year).contribution_tiers_fen
        assert rows and all(c.tier_fen in tiers and 0 <= c.amount_fen <= c.tier_fen
                            and c.value_date.year == year for c in rows)
        assert len({c.receipt_no for c in rows}) == len(rows)


def test_the_ledger_alone_tells_the_pension_year_without_the_bank(tmp_path: Path) -> None:
    """ledger/ runs without the payout engine (it never imports it): the demo's story then
    appropriates the year's pensions at once and reconciles all the same."""
    from io import StringIO

    from rich.console import Console

    from ledger.demo import run_demo as run_ledger_demo

    ledger = Ledger(str(tmp_path / "alone.db"), cipher_key="")
    try:
        result = run_ledger_demo(ledger, participants=20, workdir=tmp_path / "county",
                                 console=Console(file=StringIO()), payout=None)
    finally:
        ledger.close()
    assert result.reconciled and result.audit["ok"]
    assert not any(b.what.startswith("payout ") for b in result.bookings)
    assert any(b.what.startswith("appropriation ") for b in result.bookings)
