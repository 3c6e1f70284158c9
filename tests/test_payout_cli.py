"""`payout ...` on the command line: each step of a month, batches named by id or as
PERIOD/SEQUENCE, refusals on stderr naming the field and the rule with exit status 2,
personal data masked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from ledger.application import Ledger
from payout_engine.__main__ import app
from payout_engine.bankfiles.domestic import write_domestic_return
from payout_engine.commands import register
from tests.test_payout_support import APPROVER, FINANCE, OPERATOR, transitional, treasury

ENV = {"LEDGER_DATABASE_URL": None, "CIPHER_KEY": None, "LEDGER_ACTOR": None,
       **{name: None for name in ("PAYOUT_FUND_ACCOUNT_NUMBER", "PAYOUT_MAX_TXS_PER_FILE",
                                  "PAYOUT_PAYDAY", "PAYOUT_EXECUTION_OFFSET_DAYS")}}


def cli(db: str, actor: str, *args: str) -> Result:
    return CliRunner().invoke(app, ["--db", db, "--actor", actor, "payout", *args], env=ENV)


def ok(db: str, actor: str, *args: str) -> dict[str, Any]:
    r = cli(db, actor, *args, "--json")
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def refused(db: str, actor: str, *args: str) -> str:
    r = cli(db, actor, *args)
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr, r.exception)
    assert r.stderr.startswith("pension-ledger payout: ")
    return r.stderr.replace("\n", " ")


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "ledger.db")
    ledger = Ledger(path, cipher_key="")
    ledger.init()
    treasury(ledger)
    for n in (1, 2):
        transitional(ledger, n)
    ledger.close()
    return path


def test_a_month_from_the_command_line(db: str, tmp_path: Path) -> None:
    drafted = ok(db, OPERATOR, "run", "--period", "2020-04", "--format", "domestic")
    assert (drafted["batch"], drafted["state"], drafted["line_count"]) == ("2020-04/1",
                                                                          "drafted", 2)
    assert drafted["drafted_now"] is True and drafted["total_fen"] == 2 * 15_300
    again = ok(db, OPERATOR, "run", "--period", "2020-04", "--format", "domestic")
    assert again["drafted_now"] is False and again["batch_id"] == drafted["batch_id"]
    digest = drafted["manifest_sha256"]

    assert "maker-checker" in refused(db, OPERATOR, "approve", "2020-04/1",
                                      "--manifest-hash", digest)
    assert "manifest_hash" in refused(db, APPROVER, "approve", "2020-04/1",
                                      "--manifest-hash", "ab" * 32)
    approved = ok(db, APPROVER, "approve", drafted["batch_id"], "--manifest-hash", digest)
    assert (approved["state"], approved["approved_by"]) == ("approved", APPROVER)
    assert "exported only after" in refused(db, OPERATOR, "export", "2020-04",
                                            "--format", "domestic", "--out", str(tmp_path))
    funded = ok(db, FINANCE, "fund", "2020-04/1", "--date", "2020-04-10")
    assert funded["total_fen"] == drafted["total_fen"]
    assert ok(db, FINANCE, "fund", "2020-04/1")["replayed"] is True
    out = tmp_path / "files"
    exported = ok(db, OPERATOR, "export", "2020-04/1", "--format", "domestic", "--out",
                  str(out))
    assert exported["manifest_sha256"] == digest and exported["recorded"] is True

    sent = out / exported["files"][0]
    first = sorted(json.loads(cli(db, OPERATOR, "show", "2020-04/1", "--json").stdout)
                   ["files"])[0]
    assert first == sent.name
    ret = tmp_path / "answer.ret"
    lines = ok(db, OPERATOR, "show", "2020-04/1")
    assert lines["outcomes"]["pending"] == 2
    from ledger import disbursement
    from payout_engine.run import find_batch

    ledger = Ledger(db, cipher_key="")
    e2e = sorted(disbursement.get_batch(ledger, find_batch(ledger, "2020-04/1")).lines)
    ledger.close()
    ret.write_bytes(write_domestic_return(sent.read_bytes(), {e2e[0]: ("AC04", "closed")}))
    summary = ok(db, "bank", "import-returns", str(ret))
    assert summary["batches"][0]["failed"] == 1 and summary["batches"][0]["closed"] is True
    assert summary["held"][0]["id_number"].count("*") == 8
    shown = ok(db, OPERATOR, "show", "2020-04")
    assert shown["state"] == "closed"
    assert shown["outcomes"] == {"pending": 0, "settled": 1, "failed": 1, "returned": 0,
                                      "settled_fen": 15_300, "failed_fen": 15_300,
                                      "returned_fen": 0}
    failed = shown["failed_payments"][0]
    assert failed["id_number"].count("*") == 8 and failed["account_number"].startswith("*")
    table = cli(db, OPERATOR, "show", "2020-04/1")
    assert table.exit_code == 0 and "manifest_sha256" in table.stdout


def test_refusals_name_the_field_and_the_rule(db: str, tmp_path: Path) -> None:
    assert "period: '2020-13' is not a month" in refused(db, OPERATOR, "run", "--period",
                                                         "2020-13")
    assert "format: must be one of pain001, domestic" in refused(
        db, OPERATOR, "run", "--period", "2020-04", "--format", "csv")
    assert "no batch for 2020-04" in refused(db, OPERATOR, "show", "2020-04")
    bad = tmp_path / "bad.xml"
    bad.write_text("<Document>")
    assert "bank file refused (MalformedFile)" in refused(db, "bank", "import-returns",
                                                          str(bad))
    assert "batch: '2020-04/0': the sequence is 1 to 99" in refused(db, OPERATOR, "show",
                                                                    "2020-04/0")


def test_the_batches_of_a_range_of_months_are_listed(db: str) -> None:
    april = ok(db, OPERATOR, "run", "--period", "2020-04")
    ok(db, OPERATOR, "cancel", "2020-04/1", "--reason", "wrong execution date")
    again = ok(db, OPERATOR, "run", "--period", "2020-04")
    ok(db, APPROVER, "approve", "2020-04/2", "--manifest-hash", again["manifest_sha256"])

    listed = ok(db, OPERATOR, "list", "--from", "2020-01", "--to", "2020-06")
    assert (listed["from"], listed["to"]) == ("2020-01", "2020-06")
    assert [(b["batch"], b["state"], b["payments"], b["total_fen"]) for b in listed["batches"]
            ] == [("2020-04/1", "cancelled", 2, april["total_fen"]),
                  ("2020-04/2", "approved", 2, again["total_fen"])]
    assert listed["batches"][1]["manifest_sha256"] == again["manifest_sha256"]
    only = ok(db, OPERATOR, "list", "--from", "2020-04", "--to", "2020-04", "--state",
              "approved")
    assert [b["batch"] for b in only["batches"]] == ["2020-04/2"]
    assert ok(db, OPERATOR, "list", "--from", "2020-05", "--to", "2020-06")["batches"] == []
    table = cli(db, OPERATOR, "list", "--from", "2020-04", "--to", "2020-04")
    assert table.exit_code == 0 and "2020-04/2" in table.stdout and "approved" in table.stdout

    assert "state: must be one of drafted, approved" in refused(db, OPERATOR, "list",
                                                                "--state", "paid")
    assert "from: 2020-06 is after 2020-04" in refused(db, OPERATOR, "list", "--from",
                                                       "2020-06", "--to", "2020-04")
    assert "to: '2020-13' is not a month" in refused(db, OPERATOR, "list", "--to", "2020-13")
    assert "more than 120 months" in refused(db, OPERATOR, "list", "--from", "2000-01",
                                             "--to", "2020-04")


def dated(statement: bytes) -> bytes:
    """The statement's period (FrToDt): it closes at the end of 2026-11-18."""
    return statement.replace(b"<Acct>", b"<FrToDt><FrDtTm>2026-11-18T00:00:00+08:00</FrDtTm>"
                             b"<ToDtTm>2026-11-18T23:59:59+08:00</ToDtTm></FrToDt><Acct>", 1)


def test_reconcile_sets_each_statement_beside_the_ledger(db: str, tmp_path: Path) -> None:
    from datetime import date

    from tests.test_bankfiles_returns import camt053
    from tests.test_payout_support import pacs004

    ledger = Ledger(db, cipher_key="")
    ledger.appropriate(amount_fen=100_000, value_date=date(2026, 11, 2), reference="P-1",
                       actor=FINANCE)
    ledger.close()
    agrees = tmp_path / "camt053-1.xml"
    agrees.write_bytes(dated(camt053("1000.00", "1000.00", [])))
    differs = tmp_path / "camt053-2.xml"
    differs.write_bytes(dated(camt053("999.99", "999.99", [], number=2)))  # a fen short
    env = {**ENV, "PAYOUT_FUND_IBAN": "CN89MOCK1000000001"}

    def run(*args: str) -> Result:
        return CliRunner().invoke(app, ["--db", db, "payout", "reconcile", *args], env=env)

    r = run(str(agrees), "--json")
    assert r.exit_code == 0, (r.stdout, r.stderr)
    (row,) = json.loads(r.stdout)["statements"]
    assert (row["closing_date"], row["bank_closing_fen"], row["ledger_expenditure_fen"],
            row["difference_fen"], row["agrees"]) == ("2026-11-18", 100_000, 100_000, 0, True)
    r = run(str(agrees), str(differs))
    assert r.exit_code == 3 and "DIFFERS" in r.stdout and "agrees" in r.stdout
    assert "-0.01" in r.stdout
    other = tmp_path / "pacs004.xml"
    other.write_bytes(pacs004({"E2E-1": (10_000, "AC04")}))
    assert "a pacs.004.001.09, not a camt.053 statement" in refused(
        db, OPERATOR, "reconcile", str(other))


def test_register_adds_the_group_to_another_app(db: str) -> None:
    host = typer.Typer()

    @host.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = type("Settings", (), {"actor": OPERATOR, "json": True, "unmask": False})()

    register(host, lambda ctx: Ledger(db, cipher_key=""))
    r = CliRunner().invoke(host, ["payout", "run", "--period", "2020-04"], env=ENV)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["drafted_by"] == OPERATOR
