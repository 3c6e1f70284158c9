"""The fund's three bank accounts reconciled with the bank and with each other: each camt.053
statement beside the ledger's accounts that hold the same money, and the guarded balances the
commands keep beside the balances view (audit reconcile)."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from entrypoints.cli import app
from ledger.application import Ledger
from ledger.errors import InvalidInput
from payout_engine.config import load_config
from payout_engine.reconcile import FUND_ACCOUNTS, fund_statements, reconcile
from tests.helpers import contribute, enrol, ledger_file, make_id
from tests.test_bankfiles_returns import camt053
from tests.test_payout_cli import dated

IBANS = {"income": "CN89MOCK1000000002", "fiscal": "CN89MOCK1000000003",
         "expenditure": "CN89MOCK1000000001"}
ENV = {"LEDGER_DATABASE_URL": None, "CIPHER_KEY": None, "LEDGER_ACTOR": None,
       "PAYOUT_FUND_IBAN": IBANS["expenditure"], "PAYOUT_INCOME_ACCOUNT": IBANS["income"],
       "PAYOUT_FISCAL_ACCOUNT": IBANS["fiscal"]}


def statement(account: str, closing: str, number: int) -> bytes:
    """A camt.053 of one of the fund's accounts closing on 2026-11-18."""
    return dated(camt053(closing, closing, [], number=number)).replace(
        IBANS["expenditure"].encode(), IBANS[account].encode())


def a_month_of_money(ledger: Ledger) -> None:
    """By 2026-11-18: income 500.00; fiscal 1,000.00 in, 300.00 of it on deposit, 200.00
    appropriated: 500.00 on demand; expenditure 200.00."""
    enrol(ledger, make_id(1))
    contribute(ledger, make_id(1), 2026, 50000, value_date=date(2026, 3, 1))
    ledger.receive_treasury_funds(amount_fen=100_000, level="central", purpose="basic_pension",
                                  value_date=date(2026, 11, 2), reference="T-1", actor="fin")
    ledger.place_fixed_deposit(deposit_no="D-1", amount_fen=30_000, term_months=3,
                               annual_rate=Decimal("0.0125"), value_date=date(2026, 11, 3),
                               reference="FD-1", actor="fin")
    ledger.appropriate(amount_fen=20_000, value_date=date(2026, 11, 4), reference="A-1",
                       actor="fin")


def write(folder: Path, **closings: str) -> list[Path]:
    paths = []
    for number, (account, closing) in enumerate(closings.items(), start=1):
        path = folder / f"camt053-{account}.xml"
        path.write_bytes(statement(account, closing, number))
        paths.append(path)
    return paths


def test_each_statement_is_set_beside_the_ledger_accounts_holding_that_money(
        ledger: Ledger, tmp_path: Path) -> None:
    a_month_of_money(ledger)
    config = load_config(ENV)  # type: ignore[arg-type]
    files = write(tmp_path, income="500.00", fiscal="500.00", expenditure="200.00")
    report = reconcile(ledger, fund_statements(files, config, FUND_ACCOUNTS), config)
    rows = {r["fund_account"]: r for r in report["statements"]}
    assert {k: (r["ledger_accounts_fen"], r["bank_closing_fen"], r["agrees"])
            for k, r in rows.items()} == {
        "income": ({"1001": 50_000}, 50_000, True),
        # The deposit is a certificate of its own: not in the account's statement.
        "fiscal": ({"1002": 50_000}, 50_000, True),
        "expenditure": ({"1003": 20_000, "1101": 0}, 20_000, True)}
    assert report["agree"] is True
    # The expenditure account alone, as before the other two were read.
    alone = reconcile(ledger, fund_statements(files, config))
    assert [r["fund_account"] for r in alone["statements"]] == ["expenditure"]

    counted_twice = write(tmp_path, fiscal="800.00")  # the deposit counted as demand money
    off = reconcile(ledger, fund_statements(counted_twice, config, ["fiscal"]), config)
    assert (off["agree"], off["statements"][0]["difference_fen"]) == (False, 30_000)


@pytest.mark.parametrize(("env", "name", "rule"), [
    ({"PAYOUT_INCOME_ACCOUNT": "1000000001"}, "PAYOUT_INCOME_ACCOUNT",
     "1000000001 is the expenditure account's"),
    ({"PAYOUT_FUND_IBAN": IBANS["fiscal"], "PAYOUT_FISCAL_ACCOUNT": IBANS["fiscal"]},
     "PAYOUT_FISCAL_ACCOUNT", f"{IBANS['fiscal']} is the expenditure account's"),
    ({"PAYOUT_FISCAL_ACCOUNT": "1000000002"}, "PAYOUT_FISCAL_ACCOUNT",
     "1000000002 is the income account's"),
    ({"PAYOUT_INCOME_ACCOUNT": "9" * 35}, "PAYOUT_INCOME_ACCOUNT", "at most 34 characters"),
])
def test_the_three_accounts_must_be_three(env: dict[str, str], name: str, rule: str) -> None:
    with pytest.raises(InvalidInput) as e:
        load_config(env)
    assert e.value.field == name and rule in e.value.rule


def test_each_account_is_known_by_what_the_statements_call_it() -> None:
    config = load_config(ENV)  # type: ignore[arg-type]
    assert {k: config.fund_account_of(v) for k, v in IBANS.items()} == {
        "income": "income", "fiscal": "fiscal", "expenditure": "expenditure"}
    assert config.fund_account_of("1000000001") == "expenditure"  # its number, too
    assert config.fund_account_of("CN89MOCK9999999999") is None


def run(db: str, *args: str) -> Result:
    return CliRunner().invoke(app, ["--db", db, *args], env=ENV)


def test_audit_reconcile_sets_the_guarded_balances_beside_the_view_and_the_bank(
        tmp_path: Path) -> None:
    db = ledger_file(tmp_path, a_month_of_money)

    r = run(db, "audit", "reconcile", "--json")
    assert r.exit_code == 0, (r.stdout, r.stderr)
    report = json.loads(r.stdout)
    assert {a["account"]: (a["guarded_fen"], a["view_fen"])
            for a in report["internal"]["accounts"]} == {
        "1001": (50_000, 50_000), "1002": (50_000, 50_000), "1003": (20_000, 20_000),
        "1004": (30_000, 30_000), "1101": (0, 0)}
    assert report["internal"]["trial_balance_net_fen"] == 0 and report["agree"] is True

    files = [str(p) for p in write(tmp_path, income="500.00", fiscal="500.00",
                                   expenditure="199.99")]
    r = run(db, "audit", "reconcile", *files)
    assert r.exit_code == 3, (r.stdout, r.stderr)
    assert "-0.01" in r.stdout and r.stdout.rstrip().endswith("DIFFERS")
    rows = json.loads(run(db, "audit", "reconcile", *files, "--json").stdout)["statements"]
    assert [(s["fund_account"], s["difference_fen"]) for s in rows] == [
        ("income", 0), ("fiscal", 0), ("expenditure", -1)]

    # A guarded balance changed behind the ledger's back no longer matches the events.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE fund_positions SET balance_fen = balance_fen + 1 "
                     "WHERE account = '1002'")
    r = run(db, "audit", "reconcile", "--json")
    assert r.exit_code == 3
    fiscal = next(a for a in json.loads(r.stdout)["internal"]["accounts"]
                  if a["account"] == "1002")
    assert (fiscal["guarded_fen"], fiscal["view_fen"], fiscal["difference_fen"]) == (
        50_001, 50_000, 1)


def test_payout_reconcile_reads_every_fund_account(tmp_path: Path) -> None:
    db = ledger_file(tmp_path, a_month_of_money)
    files = [str(p) for p in write(tmp_path, income="500.00", fiscal="500.00")]
    r = run(db, "payout", "reconcile", *files, "--json")
    assert r.exit_code == 0, (r.stdout, r.stderr)
    assert [s["fund_account"] for s in json.loads(r.stdout)["statements"]] == [
        "income", "fiscal"]
