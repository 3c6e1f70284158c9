"""audit history: a participant's events as recorded, each with its postings and the
individual account's balance after it, replayed from the events alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger.application import Ledger
from ledger.audit import history
from ledger.cli import app
from ledger.errors import NotFound
from tests.helpers import ledger_file, make_id
from tests.test_cli import ENV
from tests.test_projections_support import A, B, C, D, E, scenario


def test_the_history_of_each_participant_ends_at_their_balance(ledger: Ledger) -> None:
    scenario(ledger)  # every kind of participant event
    for id_number in (A, B, C, D, E):
        p = ledger.participant(id_number)
        events = history(ledger, id_number)["events"]
        assert [r["version"] for r in events] == list(range(1, p.version + 1))
        assert events[0]["event"] == "Enrolled"
        # Each event's postings balance, and the running balance ends where the account is.
        assert all(sum(r["postings_fen"].values()) == 0 for r in events)
        assert events[-1]["account_balance_fen"] == p.balance_fen
    kinds = {r["event"] for i in (A, B, C, D, E) for r in history(ledger, i)["events"]}
    assert {"ContributionReceived", "SubsidyCredited", "PensionApproved"} <= kinds


def test_an_unknown_participant_has_no_history(ledger: Ledger) -> None:
    with pytest.raises(NotFound):
        history(ledger, make_id(999))


def test_on_the_command_line_the_id_is_masked(tmp_path: Path) -> None:
    db = ledger_file(tmp_path, scenario)
    r = CliRunner().invoke(app, ["--db", db, "--json", "audit", "history", A], env=ENV)
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["id_number"] != A and out["id_number"].endswith(A[-4:])
    assert out["events"][0]["event"] == "Enrolled"
