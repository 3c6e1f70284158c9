"""The projection commands as the main CLI registers them."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from ledger.application import Ledger
from ledger.projections.commands import register
from tests.test_projections_support import A, scenario


def cli(ledger: Ledger) -> typer.Typer:
    app = typer.Typer()
    register(app, lambda: ledger)
    return app


def test_balances_trial_balance_report_and_rebuild(ledger: Ledger) -> None:
    scenario(ledger)
    app, runner = cli(ledger), CliRunner()

    result = runner.invoke(app, ["balances", "--as-of", "2016-04-01", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["accounts"]["1003"] == 200_000 and data["as_of"] == "2016-04-01"

    result = runner.invoke(app, ["balances", "--by", "township", "--fund", "--json"])
    assert result.exit_code == 0, result.output
    towns = json.loads(result.stdout)["townships"]
    assert set(towns) == {"(county)", "城关镇", "南镇"}

    result = runner.invoke(app, ["balances"], env={"COLUMNS": "160"})
    assert result.exit_code == 0 and "收入户" in result.stdout
    assert "9100.00" in result.stdout  # the fiscal special account, in yuan

    result = runner.invoke(app, ["trial-balance", "--as-of", "2016-12-31", "--json"])
    assert json.loads(result.stdout)["net_fen"] == 0

    result = runner.invoke(app, ["report", "county", "--year", "2016", "--json"])
    county = json.loads(result.stdout)["county"]
    assert (county["enrolled"], county["contributing"], county["pensioners"]) == (3, 3, 1)

    result = runner.invoke(app, ["roster", "--json"])
    assert [r["status"] for r in json.loads(result.stdout)] == ["pensioner", "deceased"]

    result = runner.invoke(app, ["project", "rebuild", "--view", "roster"])
    assert result.exit_code == 0, result.output
    assert "participants: generation 2" in result.stdout

    result = runner.invoke(app, ["project", "status", "--json"])
    assert json.loads(result.stdout)["participants"]["generation"] == 2
    assert A  # the scenario's first participant is part of the county above


def test_bad_input_exits_2_naming_the_field(ledger: Ledger) -> None:
    app, runner = cli(ledger), CliRunner()
    result = runner.invoke(app, ["balances", "--as-of", "31/12/2016"])
    assert result.exit_code == 2 and "as_of" in result.output
    result = runner.invoke(app, ["balances", "--by", "village"])
    assert result.exit_code == 2 and "by: must be township" in result.output
    result = runner.invoke(app, ["project", "rebuild", "--view", "nope"])
    assert result.exit_code == 2 and "no view named 'nope'" in result.output


def test_project_run_catches_up(ledger: Ledger) -> None:
    scenario(ledger)
    result = CliRunner().invoke(cli(ledger), ["project", "run"])
    assert result.exit_code == 0, result.output
    assert "projected" in result.stdout
    status = json.loads(CliRunner().invoke(cli(ledger), ["project", "status", "--json"]).stdout)
    assert all(v["behind"] == 0 for v in status.values())
