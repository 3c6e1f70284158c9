"""audit anomalies: what audits of the scheme keep finding, looked for in the ledger's own
records: pensions paid after death with no overpayment assessed, one bank account taking
several living pensioners' pensions, and pensioners of 100 or more still paid."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from typer.testing import CliRunner

from ledger.application import Ledger
from ledger.audit import anomalies
from ledger.cli import app
from tests.test_cli import ENV
from tests.test_payout_support import OPERATOR, account, pay, transitional, treasury

ON = date(2020, 7, 3)


def paid_after_death(ledger: Ledger) -> list[tuple[str, list[str]]]:
    return [(a["id_number"], a["months"])
            for a in anomalies(ledger, ON)["anomalies"]["paid_after_death"]]


def test_a_pension_paid_after_death_is_found_until_the_overpayment_is_assessed(
        ledger: Ledger, tmp_path: Path) -> None:
    treasury(ledger)
    died, lives = transitional(ledger, 1), transitional(ledger, 2)
    for period in ("2020-04", "2020-05", "2020-06"):
        pay(ledger, period, tmp_path)
    assert paid_after_death(ledger) == []

    # The death in April is reported in July: May and June were paid after it.
    ledger.decease(id_number=died, date_of_death=date(2020, 4, 20),
                   reported_on=date(2020, 7, 2), actor=OPERATOR)
    assert paid_after_death(ledger) == [(died, ["2020-05", "2020-06"])]

    ledger.assess_overpayment(id_number=died, amount_fen=15_300, months=["2020-05"],
                              reason="paid after death", value_date=ON, actor=OPERATOR)
    assert paid_after_death(ledger) == [(died, ["2020-06"])]
    ledger.assess_overpayment(id_number=died, amount_fen=15_300, months=["2020-06"],
                              reason="paid after death", value_date=ON, actor=OPERATOR)
    found = anomalies(ledger, ON)
    assert found["counts"] == {"paid_after_death": 0, "owed_at_death": 0,
                               "shared_account": 0, "centenarian": 0}
    assert found["pensioners_checked"] == 2
    assert lives  # the living pensioner is checked and raises nothing


def test_a_shared_account_and_a_centenarian_are_found(ledger: Ledger) -> None:
    one, two = transitional(ledger, 1), transitional(ledger, 2)
    old = transitional(ledger, 3, born=date(1918, 5, 1))
    assert anomalies(ledger, ON)["counts"] == {"paid_after_death": 0, "owed_at_death": 0,
                                               "shared_account": 0, "centenarian": 1}
    ledger.change_bank_details(id_number=two, bank=account(1), actor=OPERATOR)

    found = anomalies(ledger, ON)
    assert found["counts"] == {"paid_after_death": 0, "owed_at_death": 0,
                               "shared_account": 1, "centenarian": 1}
    shared = found["anomalies"]["shared_account"][0]
    assert shared["account_number"] == account(1).account_number
    assert sorted(p["id_number"] for p in shared["pensioners"]) == sorted([one, two])
    assert [(c["id_number"], c["age"]) for c in found["anomalies"]["centenarian"]] == [
        (old, 102)]


def test_on_the_command_line_ids_and_accounts_are_masked(tmp_path: Path) -> None:
    db = str(tmp_path / "ledger.db")
    ledger = Ledger(db, cipher_key="")
    ledger.init()
    one, two = transitional(ledger, 1), transitional(ledger, 2)
    ledger.change_bank_details(id_number=two, bank=account(1), actor=OPERATOR)
    ledger.close()

    r = CliRunner().invoke(app, ["--db", db, "--json", "audit", "anomalies", "--on",
                                 ON.isoformat()], env=ENV)
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    shared = out["anomalies"]["shared_account"][0]
    assert shared["account_number"].endswith(account(1).account_number[-4:])
    assert account(1).account_number not in r.stdout and one not in r.stdout
    table = CliRunner().invoke(app, ["--db", db, "audit", "anomalies", "--on", "2020-07-03"],
                               env=ENV)
    assert table.exit_code == 0 and "shared_account" in table.stdout
