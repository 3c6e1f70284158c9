"""The command line: thin over the Ledger, exit 2 with the field and the rule on bad input,
nothing stored when refused, personal data masked, JSON that parses."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from ledger import resident_id
from ledger.application import Ledger
from ledger.cli import app, hoist_global_options, mask_text, redact
from tests.helpers import make_id

ID = make_id(1)                        # 110101197005170017
OTHER = make_id(2)
ACCOUNT = "6222000012345678"
ENV = {"LEDGER_DATABASE_URL": None, "CIPHER_KEY": None, "LEDGER_ACTOR": None}


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.db")


def cli(db: str, *args: str, actor: str | None = None) -> Result:
    pre = ["--db", db] + (["--actor", actor] if actor else [])
    return CliRunner().invoke(app, [*pre, *args], env=ENV)


def ok(db: str, *args: str, actor: str | None = None) -> dict[str, Any]:
    """Run with --json, expect success, return the parsed output."""
    r = cli(db, "--json", *args, actor=actor)
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def refused(db: str, *args: str, actor: str | None = None) -> str:
    r = cli(db, *args, actor=actor)
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr, r.exception)
    assert r.stderr.startswith("pension-ledger: ")
    return r.stderr


def enrol(db: str, id_number: str = ID, **kw: str) -> dict[str, Any]:
    return ok(db, "enrol", "--id", id_number, "--name", kw.get("name", "王五"),
              "--township", "城关镇", "--village", "东村", "--date", "2015-01-10",
              "--group", kw.get("group", "ordinary"), "--account-name", "王五",
              "--account-number", ACCOUNT, "--bank-code", "102")


def contribute(db: str, *extra: str, amount: str = "500.00", receipt: str = "R-1",
               id_number: str = ID) -> list[str]:
    return ["contribute", "--id", id_number, "--year", "2016", "--tier", "500.00",
            "--amount", amount, "--receipt", receipt, "--date", "2016-03-01", *extra]


def positions(db: str) -> dict[str, int]:
    ledger = Ledger(db, cipher_key="")
    try:
        return ledger.fund_positions()
    finally:
        ledger.close()


def events_table(db: str) -> str:
    ledger = Ledger(db, cipher_key="")
    try:
        return str(ledger.recorder.events_table_name)  # type: ignore[attr-defined]
    finally:
        ledger.close()


def events_stored(db: str) -> int:
    table = events_table(db)
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


@pytest.fixture
def ready(db: str) -> str:
    ok(db, "init")
    enrol(db)
    return db


# ---- happy paths ------------------------------------------------------------------------

def test_init_enrol_contribute_and_read_back(ready: str) -> None:
    booked = ok(ready, *contribute(ready))
    assert booked["amount_fen"] == 50000 and booked["on_behalf_fen"] == 0
    assert positions(ready)["1001"] == 50000

    bal = ok(ready, "balances", "--json")
    assert bal["accounts"]["1001"] == 50000           # Dr the income account
    assert bal["accounts"]["2001.contribution"] == -50000  # Cr the individual account
    assert sum(bal["accounts"].values()) == 0

    st = ok(ready, "statement", ID)
    assert st["sources_fen"]["contribution"] == 50000
    assert ok(ready, "statement", ID, "--as-of", "2016-02-01")["balance_fen"] == 0


def test_table_output_shows_yuan(ready: str) -> None:
    ok(ready, *contribute(ready))
    r = cli(ready, "balances")
    assert r.exit_code == 0
    assert "500.00" in r.stdout and "收入户" in r.stdout


def test_global_options_may_follow_the_command(ready: str) -> None:
    r = CliRunner().invoke(app, ["rules", "show", "--json", "--db", ready], env=ENV)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)
    assert hoist_global_options(["demo", "--db", "x.db", "--fresh", "--unmask"]) == \
        ["--db", "x.db", "--unmask", "demo", "--fresh"]


def test_hardship_member_pays_the_tier_less_the_part_paid_on_behalf(db: str) -> None:
    ok(db, "init")
    enrol(db, group="minimum_living")
    # minimum_living: 50% of the lowest tier (100 yuan) is paid on behalf.
    err = refused(db, *contribute(db, amount="500.00"))
    assert "amount:" in err and "on-behalf part 5000 fen" in err
    booked = ok(db, *contribute(db, amount="450.00"))
    assert booked["on_behalf_fen"] == 5000


def test_subsidy_and_interest_for_everyone(ready: str) -> None:
    enrol(ready, OTHER)
    ok(ready, *contribute(ready))
    ok(ready, *contribute(ready, receipt="R-2", id_number=OTHER))
    sub = ok(ready, "subsidise", "--all", "--year", "2016", "--date", "2016-12-20")
    assert sub["credited"] == 2 and sub["amount_fen"] == 2 * 6000
    again = ok(ready, "subsidise", "--all", "--year", "2016", "--date", "2016-12-20")
    assert again["credited"] == 0 and again["skipped"] == 2
    interest = ok(ready, "credit-interest", "--year", "2016", "--today", "2017-01-05")
    assert interest["credited"] == 2 and interest["amount_fen"] > 0
    err = refused(ready, "credit-interest", "--year", "2016", "--today", "2016-12-31")
    assert "year:" in err and "after 31 December" in err
    err = refused(ready, "subsidise", "--year", "2016", "--date", "2016-12-20")
    assert "exactly one of --id ID or --all" in err


def test_fund_movements(ready: str) -> None:
    ok(ready, *contribute(ready))
    ok(ready, "sweep", "--amount", "500.00", "--date", "2016-03-31", "--reference", "S1")
    ok(ready, "treasury", "--amount", "1000.00", "--level", "central", "--purpose",
       "basic_pension", "--date", "2016-04-01", "--reference", "T1")
    ok(ready, "appropriate", "--amount", "700.00", "--date", "2016-04-02", "--reference", "A1")
    ok(ready, "bank-interest", "--account", "expenditure", "--amount", "0.35", "--date",
       "2016-06-21", "--reference", "I1")
    assert positions(ready) == {"1001": 0, "1002": 80000, "1003": 70035, "1004": 0,
                                "1101": 0}


def test_pension_needs_a_second_person(db: str) -> None:
    ok(db, "init")
    elder = make_id(3, born=date(1948, 3, 1))
    enrol(db, elder)
    ok(db, "pensioner", "apply", "--id", elder, "--start-month", "2016-01", actor="op1")
    err = refused(db, "pensioner", "approve", "--id", elder, actor="op1")
    assert "actor:" in err and "separation of duties" in err
    approved = ok(db, "pensioner", "approve", "--id", elder, actor="approver1")
    assert approved["start_month"] == "2016-01" and approved["basic_fen"] > 0
    ok(db, "pensioner", "suspend", "--id", elder, "--reason", "no_proof_of_life",
       "--from-month", "2016-03")
    resumed = ok(db, "pensioner", "resume", "--id", elder, "--from-month", "2016-05")
    assert resumed["result"]["arrears_months"] == ["2016-03", "2016-04"]
    ok(db, "pensioner", "decease", "--id", elder, "--date-of-death", "2016-06-02",
       "--reported-on", "2016-06-05")
    assert ok(db, "statement", elder)["status"] == "deceased"


def test_idempotency_key(ready: str) -> None:
    first = ok(ready, "--key", "k-1", "group", "--id", ID, "--group", "destitute",
               "--from", "2017-01-01")
    again = ok(ready, "--key", "k-1", "group", "--id", ID, "--group", "destitute",
               "--from", "2017-01-01")
    assert again == {**first, "replayed": True}
    err = refused(ready, "--key", "k-1", "group", "--id", ID, "--group", "ordinary",
                  "--from", "2017-01-01")
    assert "idempotency_key:" in err and "different payload" in err


# ---- bad input: exit 2, the field and the rule, nothing stored -------------------------

def test_bad_check_digit(db: str) -> None:
    ok(db, "init")
    bad = ID[:17] + ("0" if ID[17] != "0" else "1")
    before = events_stored(db)
    err = refused(db, "enrol", "--id", bad, "--name", "王五", "--township", "城关镇",
                  "--village", "东村", "--date", "2015-01-10")
    assert "id_number:" in err and "check digit" in err
    assert events_stored(db) == before


@pytest.mark.parametrize(("amount", "rule"), [
    ("1.234", "more than 2 decimal places"),
    ("5e2", "not a decimal amount"),
    ("500.", "not a decimal amount"),
    ("NaN", "not a decimal amount"),
    ("-500.00", "must not be negative"),
])
def test_amounts_are_decimal_yuan_strings(ready: str, amount: str, rule: str) -> None:
    before = events_stored(ready)
    err = refused(ready, *contribute(ready, amount=amount))
    assert "amount:" in err and rule in err
    assert events_stored(ready) == before
    assert positions(ready)["1001"] == 0


def test_bad_dates_and_months(ready: str) -> None:
    err = refused(ready, *contribute(ready)[:-2], "--date", "2016-3-1")
    assert "date:" in err and "YYYY-MM-DD" in err
    err = refused(ready, "pensioner", "apply", "--id", ID, "--start-month", "2016-13")
    assert "start_month:" in err and "YYYY-MM" in err


def test_forbidden_transfer_and_overdraft(ready: str) -> None:
    ok(ready, *contribute(ready))
    before = events_stored(ready)
    err = refused(ready, "transfer", "--from", "expenditure", "--to", "income", "--amount",
                  "1.00", "--date", "2016-04-01", "--reference", "X1")
    assert "to_account:" in err and "the law forbids" in err
    err = refused(ready, "sweep", "--amount", "500.01", "--date", "2016-04-01",
                  "--reference", "X2")
    assert "amount:" in err and "below zero" in err
    assert events_stored(ready) == before
    assert positions(ready) == {"1001": 50000, "1002": 0, "1003": 0, "1004": 0, "1101": 0}


def test_unknown_participant(ready: str) -> None:
    err = refused(ready, "statement", OTHER)
    assert "not found: id_number" in err
    assert OTHER not in err and resident_id.mask(OTHER) in err


def test_not_set_up(db: str) -> None:
    err = refused(db, "sweep", "--amount", "1.00", "--date", "2020-01-01",
                  "--reference", "SW-1")
    assert "fund:" in err and "pension-ledger init" in err


def test_bulk_import_lists_every_bad_line(ready: str, tmp_path: Path) -> None:
    good = make_id(5)
    path = tmp_path / "contributions.csv"
    path.write_text(
        "id_number,year,tier,amount,channel,receipt_no,value_date,back_payment\n"
        f"{ID},2016,500.00,500.00,bank,R-10,2016-03-01,false\n"
        f"{ID[:17]}0,2016,500.00,500.00,bank,R-11,2016-03-01,false\n"
        f"{good},2016,500.00,1.234,bank,R-12,2016-03-01,false\n", encoding="utf-8")
    before = events_stored(ready)
    err = refused(ready, "import", "contributions", str(path))
    assert "import rejected" in err and "2 bad line(s)" in err
    assert "line 3: id_number: check digit is wrong" in err
    assert "line 4: amount:" in err
    assert events_stored(ready) == before


def test_bulk_import_participants(db: str, tmp_path: Path) -> None:
    ok(db, "init")
    path = tmp_path / "participants.csv"
    path.write_text(
        "id_number,name,township,village,identity_group,enrol_date,account_name,"
        "account_number,bank_code\n"
        f"{ID},王五,城关镇,东村,ordinary,2015-01-10,王五,{ACCOUNT},102\n"
        f"{OTHER},李四,城关镇,西村,destitute,2015-02-10,,,\n", encoding="utf-8")
    summary = ok(db, "import", "participants", str(path))
    assert summary["participants"] == 2 and summary["replayed"] is False
    assert ok(db, "import", "participants", str(path))["replayed"] is True
    assert ok(db, "statement", OTHER)["identity_group"] == "destitute"


def test_rules_show_and_publish(ready: str, tmp_path: Path) -> None:
    shown = ok(ready, "rules", "show", "--on", "2024-06-01")
    assert shown["in_force"] == "v5@2024-01-01"
    params = shown["rule"]["parameters"]
    assert 300000 in params["contribution_tiers_fen"]

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"effective_from": "2026-01-01", "note": "x", "parameters": {
        **params, "interest_rates": {"2026": 0.0262}}}))
    err = refused(ready, "rules", "publish", str(bad))
    assert "parameters.interest_rates" in err and "decimal strings" in err

    good = tmp_path / "good.json"
    good.write_text(json.dumps({"effective_from": "2026-01-01", "note": "2026 rates",
                                "parameters": params}))
    assert ok(ready, "rules", "publish", str(good))["version"] == 7
    assert ok(ready, "rules", "show", "--on", "2026-02-01")["in_force"] == "v7@2026-01-01"


# ---- masking ----------------------------------------------------------------------------

def test_ids_and_accounts_are_masked_unless_an_auditor_unmasks(ready: str) -> None:
    r = cli(ready, "statement", ID)
    assert r.exit_code == 0
    assert ID not in r.stdout and resident_id.mask(ID) in r.stdout
    assert ACCOUNT not in r.stdout and "************5678" in r.stdout

    st = ok(ready, "statement", ID)
    assert st["id_number"] == resident_id.mask(ID)
    assert st["bank"]["account_number"] == "************5678"

    full = ok(ready, "--role", "auditor", "--unmask", "statement", ID)
    assert full["id_number"] == ID and full["bank"]["account_number"] == ACCOUNT

    err = refused(ready, "--unmask", "statement", ID)
    assert "unmask:" in err and "auditor or admin" in err
    err = refused(ready, "--role", "finance", "--unmask", "statement", ID)
    assert "auditor or admin" in err


def test_enrol_output_is_masked(db: str) -> None:
    ok(db, "init")
    r = cli(db, "enrol", "--id", ID, "--name", "王五", "--township", "城关镇",
            "--village", "东村", "--date", "2015-01-10")
    assert r.exit_code == 0 and ID not in r.stdout and resident_id.mask(ID) in r.stdout


def test_redact_masks_ids_in_free_text_and_account_numbers() -> None:
    assert mask_text(f"line 2: {ID} twice") == f"line 2: {resident_id.mask(ID)} twice"
    # 18 digits that fail the check digit are not an ID (a receipt number, say).
    not_an_id = ID[:17] + ("0" if ID[17] != "0" else "1")
    assert mask_text(not_an_id) == not_an_id
    shown = redact({"id_number": ID, "bank": {"account_number": ACCOUNT}, "note": ID})
    assert shown == {"id_number": resident_id.mask(ID),
                     "bank": {"account_number": "************5678"},
                     "note": resident_id.mask(ID)}
    assert redact({"id_number": ID}, unmask=True) == {"id_number": ID}


# ---- audit, exit statuses ---------------------------------------------------------------

def test_audit_verify_finds_an_altered_event(ready: str) -> None:
    ok(ready, *contribute(ready))
    assert ok(ready, "audit", "verify")["ok"] is True
    table = events_table(ready)
    with sqlite3.connect(ready) as conn:
        conn.execute(f"UPDATE {table} SET state = CAST('{{}}' AS BLOB) "
                     f"WHERE rowid = (SELECT MAX(rowid) FROM {table})")
    r = cli(ready, "--json", "audit", "verify")
    assert r.exit_code == 3
    report = json.loads(r.stdout)
    assert report["ok"] is False and any("altered" in p for p in report["problems"])


def test_unexpected_error_exits_1(ready: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: Ledger, id_number: str) -> None:
        raise RuntimeError(f"disk on fire near {ID}")
    monkeypatch.setattr(Ledger, "participant", boom)
    r = cli(ready, "statement", ID)
    assert r.exit_code == 1
    assert "unexpected error: RuntimeError" in r.stderr
    assert ID not in r.stderr and resident_id.mask(ID) in r.stderr


def test_the_console_script_exits_2_on_bad_input(ready: str) -> None:
    exe = Path(sys.executable).with_name("pension-ledger")
    env = {k: v for k, v in os.environ.items()
           if k not in ("LEDGER_DATABASE_URL", "CIPHER_KEY")}
    proc = subprocess.run([str(exe), "--db", ready, *contribute(ready, amount="1.234")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert "amount: '1.234' has more than 2 decimal places" in proc.stderr
    assert proc.stdout == ""


def test_encrypted_store_needs_its_key(db: str) -> None:
    from eventsourcing.cipher import AESCipher

    key = AESCipher.create_key(num_bytes=32)
    runner = CliRunner()
    for args in (["init"], ["enrol", "--id", ID, "--name", "王五", "--township", "城关镇",
                            "--village", "东村", "--date", "2015-01-10"]):
        r = runner.invoke(app, ["--db", db, *args], env={**ENV, "CIPHER_KEY": key})
        assert r.exit_code == 0, r.stderr
    with sqlite3.connect(db) as conn:
        stored = b"".join(row[0] for row in conn.execute(
            f"SELECT state FROM {events_table(db)}"))
    assert "王五".encode() not in stored  # encrypted at rest

    r = runner.invoke(app, ["--db", db, "statement", ID], env=ENV)
    assert r.exit_code == 1
    assert "is CIPHER_KEY the key this database was written with?" in r.stderr
    r = runner.invoke(app, ["--db", db, "--json", "statement", ID],
                      env={**ENV, "CIPHER_KEY": key})
    assert r.exit_code == 0 and json.loads(r.stdout)["name"] == "王五"
