"""audit anomalies: what audits of the scheme keep finding, looked for in the ledger's own
records: pensions paid after death with no overpayment assessed, one bank account taking
several living pensioners' pensions, pensioners of 100 or more still paid, money still held
for people dead over a year, refunds never made, and hardship-group members whose
contribution the government never paid on their behalf."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from typer.testing import CliRunner

from ledger.application import Ledger
from ledger.audit import ANOMALY_KINDS, anomalies
from ledger.cli import app
from tests.helpers import contribute, enrol, make_id
from tests.test_cli import ENV
from tests.test_participant import funded
from tests.test_payout_support import OPERATOR, account, pay, transitional, treasury

ON = date(2020, 7, 3)
NONE = dict.fromkeys(ANOMALY_KINDS, 0)


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
    assert found["counts"] == NONE
    assert found["pensioners_checked"] == 2
    assert lives  # the living pensioner is checked and raises nothing


def test_a_shared_account_and_a_centenarian_are_found(ledger: Ledger) -> None:
    one, two = transitional(ledger, 1), transitional(ledger, 2)
    old = transitional(ledger, 3, born=date(1918, 5, 1))
    assert anomalies(ledger, ON)["counts"] == {**NONE, "centenarian": 1}
    ledger.change_bank_details(id_number=two, bank=account(1), actor=OPERATOR)

    found = anomalies(ledger, ON)
    assert found["counts"] == {**NONE, "shared_account": 1, "centenarian": 1}
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


def test_money_held_for_someone_dead_over_a_year_is_found_until_it_is_paid_out(
        ledger: Ledger, tmp_path: Path) -> None:
    long_ago, lately = funded(ledger, 80), funded(ledger, 81)
    ledger.decease(id_number=long_ago, date_of_death=date(2019, 5, 1),
                   reported_on=date(2019, 5, 3), actor=OPERATOR)
    ledger.decease(id_number=lately, date_of_death=date(2020, 3, 1),
                   reported_on=date(2020, 3, 3), actor=OPERATOR)

    def held() -> list[tuple[str, int, dict[str, int], int]]:
        return [(a["id_number"], a["account_fen"], a["unpaid"], a["held_fen"])
                for a in anomalies(ledger, ON)["anomalies"]["dead_account_open"]]

    assert held() == [(long_ago, 28500, {}, 28500)]  # the one dead within the year is not
    ledger.settle_balance(id_number=long_ago, how="inheritance", payee="王小五",
                          payee_account=account(9), value_date=date(2020, 6, 1),
                          actor=OPERATOR)
    assert held() == [(long_ago, 0, {"inheritance": 28500}, 28500)]  # owed, not yet paid
    treasury(ledger)
    pay(ledger, "2020-06", tmp_path)
    assert held() == []


def test_a_refund_never_made_is_found_until_it_is_paid_out(
        ledger: Ledger, tmp_path: Path) -> None:
    leaver, mover = funded(ledger, 80), funded(ledger, 81)
    ledger.terminate(id_number=leaver, reason_code="emigration",
                     effective_date=date(2020, 5, 1), actor=OPERATOR)
    ledger.terminate(id_number=mover, reason_code="transfer_out",  # moved, not refunded
                     effective_date=date(2020, 5, 1), actor=OPERATOR)

    def refunds() -> list[tuple[str, str, int, int]]:
        return [(a["id_number"], a["reason"], a["account_fen"], a["unpaid_fen"])
                for a in anomalies(ledger, ON)["anomalies"]["refund_not_made"]]

    assert refunds() == [(leaver, "emigration", 28500, 0)]
    ledger.settle_balance(id_number=leaver, how="refund", payee="王五", payee_account=None,
                          value_date=date(2020, 6, 1), actor=OPERATOR)
    assert refunds() == [(leaver, "emigration", 0, 28500)]  # no account to pay it to yet
    ledger.change_payee(id_number=leaver, kind="refund", payee="王五", payee_account=account(8),
                        actor=OPERATOR)
    treasury(ledger)
    pay(ledger, "2020-06", tmp_path)
    assert refunds() == []


def test_a_hardship_member_with_nothing_booked_for_the_year_is_found(ledger: Ledger) -> None:
    missed = make_id(90)
    enrol(ledger, missed, group="destitute")
    paid = make_id(91)
    enrol(ledger, paid, group="destitute")
    contribute(ledger, paid, 2019, 20000, amount_fen=10000)  # the lowest tier on behalf
    ordinary = make_id(92)
    enrol(ledger, ordinary)                                   # pays their own, or not
    old = make_id(93, born=date(1955, 5, 17))                 # 60 in 2015: no contributions
    enrol(ledger, old, group="destitute")
    late = make_id(94)
    enrol(ledger, late, group="minimum_living", enrol_date=date(2020, 2, 1))
    became = make_id(95)
    enrol(ledger, became)
    ledger.change_identity_group(id_number=became, group="minimum_living",
                                 effective_from=date(2019, 9, 1), actor=OPERATOR)

    found = anomalies(ledger, ON)  # the year before: 2019
    assert found["year"] == 2019
    assert sorted((a["id_number"], a["identity_group"])
                  for a in found["anomalies"]["hardship_without_on_behalf"]) == sorted([
        (missed, "destitute"), (became, "minimum_living")])
    # Asked about 2018, the one who became a hardship member in 2019 is not listed; the
    # one who paid for 2019 had nothing booked for 2018.
    assert sorted(a["id_number"] for a in anomalies(ledger, ON, year=2018)[
        "anomalies"]["hardship_without_on_behalf"]) == sorted([missed, paid])


def test_income_left_unswept_at_a_months_end_is_found(ledger: Ledger) -> None:
    """The law wants the income account swept to the fiscal special account monthly."""
    from tests.helpers import contribute, enrol

    enrol(ledger, make_id(1))
    contribute(ledger, make_id(1), 2024, 50000, value_date=date(2024, 3, 5))
    on = date(2024, 6, 15)
    found = anomalies(ledger, on)
    assert found["anomalies"]["income_not_swept"] == [
        {"month": m, "month_end": end, "balance_fen": 50000}
        for m, end in (("2024-03", "2024-03-31"), ("2024-04", "2024-04-30"),
                       ("2024-05", "2024-05-31"))]
    ledger.sweep(amount_fen=50000, value_date=date(2024, 4, 30), reference="SWP-1",
                 actor="fin")
    assert [a["month"] for a in anomalies(ledger, on)["anomalies"]["income_not_swept"]] == [
        "2024-03"]
    # Twelve month ends are looked at: by the next spring, March 2024 is past them.
    assert anomalies(ledger, date(2025, 4, 1))["counts"]["income_not_swept"] == 0


def test_a_payment_held_since_the_bank_failed_it_is_found_until_the_details_change(
        ledger: Ledger, tmp_path: Path) -> None:
    """The bank fails April's payment (AC04, the account closed); May's run holds it. By
    the end of May two months are owed and not sent: the audit lists them. New bank details
    lift the hold, and the next run pays both."""
    treasury(ledger)
    held, other = transitional(ledger, 1), transitional(ledger, 2)
    pay(ledger, "2020-04", tmp_path, failures={held: "AC04"})
    assert anomalies(ledger, date(2020, 4, 25))["counts"]["payment_held"] == 0  # 1 month
    pay(ledger, "2020-05", tmp_path)
    found = anomalies(ledger, date(2020, 5, 25))
    assert found["anomalies"]["payment_held"] == [
        {"id_number": held, "name": "领取人1", "hold": "AC04",
         "months": ["2020-04", "2020-05"]}]
    assert found["counts"] == {**NONE, "payment_held": 1}

    ledger.change_bank_details(id_number=held, bank=account(7), actor=OPERATOR)
    assert anomalies(ledger, date(2020, 5, 25))["counts"]["payment_held"] == 0
    pay(ledger, "2020-06", tmp_path)
    assert anomalies(ledger, date(2020, 6, 25))["counts"] == NONE
    assert other != held
