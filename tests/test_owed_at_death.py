"""The pension owed at death: payment stops from the month after death (DOMAIN.md), so a
pensioner who dies before their month is paid is still owed it. Recording the death, or
the bank sending back a dead pensioner's payment, settles those months into a payable to
the heirs (PensionOwedAtDeath, account 2204), which the monthly run pays like the other
one-offs once the heirs are named."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from ledger.aggregates.participant import OWED_AT_DEATH, Participant
from ledger.application import Ledger
from ledger.audit import anomalies
from ledger.errors import Refused
from ledger.postings import OWED_AT_DEATH_PAYABLE, postings_for
from payout_engine import export, returns_import, run
from payout_engine.bankfiles.domestic import write_domestic_return
from tests import test_cli
from tests.test_payout_one_offs import HEIR, answer, one_off_lines, reasons
from tests.test_payout_support import (
    APPROVER,
    BANK,
    CONFIG,
    FINANCE,
    OPERATOR,
    contributor,
    draft,
    first_day,
    pay,
    pid,
    transitional,
    treasury,
)

ON = date(2020, 9, 1)


def owed_balance(ledger: Ledger, idn: str) -> int:
    """2204 for one participant, from the postings of their stored events (a credit is
    negative: what the fund owes the heirs)."""
    return sum(p.amount_fen for e in ledger.events.get(pid(idn)) for p in postings_for(e)
               if p.account == OWED_AT_DEATH_PAYABLE)


def owed_events(ledger: Ledger, idn: str) -> list[Participant.PensionOwedAtDeath]:
    return [e for e in ledger.events.get(pid(idn))
            if isinstance(e, Participant.PensionOwedAtDeath)]


def test_a_month_owed_at_death_is_paid_to_the_heirs_once_they_are_named(
        ledger: Ledger, tmp_path: Path) -> None:
    treasury(ledger)
    living = transitional(ledger, 1)
    dead = contributor(ledger, 2)  # basic pension and an account part
    april = pay(ledger, "2020-04", tmp_path)
    [april_line] = [line for line in april.lines.values() if line.id_number == dead]
    sources_before = dict(ledger.participant(dead).sources)

    # Died on 20 May, recorded before May's run: May is owed, June is not.
    result = ledger.decease(id_number=dead, date_of_death=date(2020, 5, 20),
                            reported_on=date(2020, 5, 25), actor=OPERATOR)
    assert result["result"]["owed_at_death"] == {"months": ["2020-05"],
                                                 "amount_fen": april_line.amount_fen}
    [owed] = owed_events(ledger, dead)
    assert (owed.basic_fen, owed.account_by_source_fen, owed.pooled_account_fen) == (
        april_line.basic_fen, april_line.account_by_source_fen, april_line.pooled_account_fen)
    p = ledger.participant(dead)
    # The account part is drawn as a month's pension would draw it.
    assert {s: sources_before[s] - p.sources[s] for s in sources_before if
            sources_before[s] != p.sources[s]} == april_line.account_by_source_fen
    assert p.paid_months["2020-05"] == OWED_AT_DEATH
    payable = p.payables[OWED_AT_DEATH]
    assert (payable.amount_fen, payable.payee, payable.payee_account, payable.paid_by) == (
        april_line.amount_fen, "", None, None)
    assert owed_balance(ledger, dead) == -april_line.amount_fen
    assert anomalies(ledger, ON)["counts"]["owed_at_death"] == 0

    # Until the heirs are named the month's run leaves it out, and says why.
    may = answer(ledger, "2020-05", tmp_path)
    assert [line.id_number for line in may.lines.values()] == [living]
    assert may.comparison["excluded"]["listed"] == [
        {"participant_id": str(pid(dead)), "reason": "pension_owed_at_death: no payee account"}]

    ledger.change_payee(id_number=dead, kind=OWED_AT_DEATH, payee="王小五", payee_account=HEIR,
                        actor=OPERATOR)
    june = answer(ledger, "2020-06", tmp_path)
    line = one_off_lines(june)[OWED_AT_DEATH]
    assert line.end_to_end_id.startswith("D202006")
    assert (line.amount_fen, line.payee_name, line.account_number, line.id_number) == (
        april_line.amount_fen, "王小五", HEIR.account_number, dead)
    assert reasons(june)["one_off_payment"] == (1, april_line.amount_fen)
    assert june.state == "closed"
    assert ledger.participant(dead).payables[OWED_AT_DEATH].paid_by == line.end_to_end_id
    assert owed_balance(ledger, dead) == 0

    # Paid once: neither the next run nor recording anything again owes it twice.
    assert one_off_lines(answer(ledger, "2020-07", tmp_path)) == {}
    assert len(owed_events(ledger, dead)) == 1
    with pytest.raises(Refused):
        ledger.decease(id_number=dead, date_of_death=date(2020, 5, 20),
                       reported_on=date(2020, 5, 25), actor=OPERATOR)


def test_nothing_is_owed_when_the_month_of_death_was_paid(
        ledger: Ledger, tmp_path: Path) -> None:
    treasury(ledger)
    dead = transitional(ledger, 1)
    pay(ledger, "2020-04", tmp_path)
    result = ledger.decease(id_number=dead, date_of_death=date(2020, 4, 28),
                            reported_on=date(2020, 5, 2), actor=OPERATOR)
    assert "result" not in result
    assert owed_events(ledger, dead) == []
    assert OWED_AT_DEATH not in ledger.participant(dead).payables


def test_a_payment_sent_back_for_a_dead_pensioner_is_owed_to_the_heirs(
        ledger: Ledger, tmp_path: Path) -> None:
    # May's payment is at the bank when the death on 10 May is recorded; the bank then
    # returns it (the account was closed at death: MD07). May is owed, to the heirs.
    treasury(ledger)
    dead = transitional(ledger, 1)
    pay(ledger, "2020-04", tmp_path)
    may = draft(ledger, "2020-05", file_format="domestic")
    [e2e] = [e for e, line in may.lines.items() if line.id_number == dead]
    amount = may.lines[e2e].amount_fen
    run.approve(ledger, may.id, may.manifest_sha256, APPROVER)
    run.fund(ledger, may.id, value_date=first_day("2020-05"), actor=FINANCE)
    result = ledger.decease(id_number=dead, date_of_death=date(2020, 5, 10),
                            reported_on=date(2020, 5, 12), actor=OPERATOR)
    assert "result" not in result  # May is in flight: nothing owed yet

    out = export.export_batch(ledger, may.id, tmp_path / "may", file_format="domestic",
                              actor=OPERATOR, config=CONFIG)
    for name in out.files:
        f = tmp_path / "may" / name
        ret = f.with_suffix(".ret")
        ret.write_bytes(write_domestic_return(f.read_bytes(), {e2e: ("MD07", "deceased")}))
        returns_import.import_returns(ledger, ret, actor=BANK, config=CONFIG)

    [owed] = owed_events(ledger, dead)
    assert (owed.months, owed.amount_fen) == (["2020-05"], amount)
    assert ledger.participant(dead).payables[OWED_AT_DEATH].amount_fen == amount
    assert owed_balance(ledger, dead) == -amount
    assert anomalies(ledger, ON)["counts"]["owed_at_death"] == 0


@pytest.mark.parametrize(("reason", "owed_months"), [
    ("no_proof_of_life", ["2020-05", "2020-06"]),  # paid in arrears, as on resumption
    ("imprisoned", []),                             # forfeited, as on resumption
])
def test_a_suspension_before_death_is_owed_as_a_resumption_would_owe_it(
        ledger: Ledger, tmp_path: Path, reason: str, owed_months: list[str]) -> None:
    treasury(ledger)
    dead = transitional(ledger, 1)
    pay(ledger, "2020-04", tmp_path)
    ledger.suspend(id_number=dead, reason_code=reason, from_month="2020-05", actor=OPERATOR)
    ledger.decease(id_number=dead, date_of_death=date(2020, 6, 3),
                   reported_on=date(2020, 6, 9), actor=OPERATOR)
    assert [m for e in owed_events(ledger, dead) for m in e.months] == owed_months
    assert anomalies(ledger, ON)["counts"]["owed_at_death"] == 0


def test_a_death_recorded_without_the_settlement_is_an_anomaly(
        ledger: Ledger, tmp_path: Path) -> None:
    # Deaths recorded before the ledger settled months owed at death (the aggregate's own
    # decease, with no settlement) are what `audit anomalies` still finds.
    treasury(ledger)
    dead = transitional(ledger, 1)
    pay(ledger, "2020-04", tmp_path)
    p = ledger.participant(dead)
    p.decease(date(2020, 5, 20), date(2020, 5, 25), OPERATOR)
    ledger._save(p)
    found = anomalies(ledger, ON)["anomalies"]["owed_at_death"]
    assert [(a["id_number"], a["months"]) for a in found] == [(dead, ["2020-05"])]


def test_owing_at_death_refuses_months_that_are_not_owed(ledger: Ledger,
                                                         tmp_path: Path) -> None:
    treasury(ledger)
    dead = transitional(ledger, 1)
    pay(ledger, "2020-04", tmp_path)
    ledger.decease(id_number=dead, date_of_death=date(2020, 5, 20),
                   reported_on=date(2020, 5, 25), actor=OPERATOR)
    p = ledger.participant(dead)
    base = {"basic_fen": 100, "account_by_source_fen": {}, "pooled_account_fen": 0,
            "deduction_fen": 0, "amount_fen": 100, "rule_versions": ["x"],
            "value_date": date(2020, 6, 1), "actor": OPERATOR}
    for months in (["2020-04"], ["2020-05"], ["2020-06"], []):  # paid, settled, after death
        with pytest.raises(Refused, match="months"):
            p.owe_at_death(months=months, **base)  # type: ignore[arg-type]


def test_what_the_heirs_are_owed_and_where_it_stands(ledger: Ledger, tmp_path: Path) -> None:
    treasury(ledger)
    transitional(ledger, 1)
    dead = transitional(ledger, 2)
    april = pay(ledger, "2020-04", tmp_path)
    [line] = [ln for ln in april.lines.values() if ln.id_number == dead]
    ledger.decease(id_number=dead, date_of_death=date(2020, 5, 20),
                   reported_on=date(2020, 5, 25), actor=OPERATOR)
    ledger.award_funeral_grant(id_number=dead, payee="王小五", payee_account=HEIR,
                               value_date=date(2020, 5, 26), actor=OPERATOR)
    grant = ledger.participant(dead).payables["funeral_grant"].amount_fen

    owed = ledger.payables(dead)
    assert (owed["status"], owed["date_of_death"]) == ("deceased", "2020-05-20")
    assert [(r["kind"], r["amount_fen"], r["state"]) for r in owed["payables"]] == [
        ("funeral_grant", grant, "owed"),
        (OWED_AT_DEATH, line.amount_fen, "owed, no payee account")]
    assert owed["owed_fen"] == grant + line.amount_fen

    ledger.change_payee(id_number=dead, kind=OWED_AT_DEATH, payee="王小五", payee_account=HEIR,
                        actor=OPERATOR)
    june = answer(ledger, "2020-06", tmp_path)
    sent = {r["kind"]: r for r in ledger.payables(dead)["payables"]}
    assert {k: (r["state"], r["sent_as"]) for k, r in sent.items()} == {
        kind: ("sent", one_off_lines(june)[kind].end_to_end_id)
        for kind in ("funeral_grant", OWED_AT_DEATH)}
    assert ledger.payables(dead)["owed_fen"] == 0


def test_the_payables_on_the_command_line_are_masked(tmp_path: Path) -> None:
    db = str(tmp_path / "ledger.db")
    ledger = Ledger(db, cipher_key="")
    try:
        ledger.init()
        treasury(ledger)
        dead = transitional(ledger, 2)
        ledger.decease(id_number=dead, date_of_death=date(2020, 5, 20),
                       reported_on=date(2020, 5, 25), actor=OPERATOR)
        ledger.change_payee(id_number=dead, kind=OWED_AT_DEATH, payee="王小五",
                            payee_account=HEIR, actor=OPERATOR)
    finally:
        ledger.close()
    out = test_cli.ok(db, "pensioner", "payables", "--id", dead)
    [row] = out["payables"]
    assert (row["kind"], row["state"]) == (OWED_AT_DEATH, "owed")
    assert row["account_number"].endswith(HEIR.account_number[-4:])
    assert HEIR.account_number not in str(out) and dead not in str(out)
    table = test_cli.cli(db, "pensioner", "payables", "--id", dead)
    assert table.exit_code == 0 and "still owed" in table.stdout, table.stdout
