"""One-off payables (funeral grant, inheritance, refund) paid by the monthly run: a line each
beside the pensions, booked as OneOffPaid at funding and reversed (and held, for an account
problem) by the bank's answers; paid once, whatever is run again."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ledger import disbursement
from ledger.aggregates.participant import BankAccount, Participant
from ledger.aggregates.payout_batch import PayoutBatch
from ledger.application import Ledger
from ledger.errors import Refused
from ledger.postings import postings_for
from payout_engine import returns_import, run
from payout_engine.bankfiles.domestic import write_domestic_return
from tests.test_one_off_payables import GRANT_FEN
from tests.test_participant import funded
from tests.test_payout_support import (
    APPROVER,
    BANK,
    CONFIG,
    FINANCE,
    OPERATOR,
    account,
    contributor,
    draft,
    first_day,
    pay,
    pid,
    send,
    transitional,
    treasury,
)

HEIR = BankAccount(account_name="王小五", account_number="6222000012345678", bank_code="102")
PAYABLES = ("2201", "2202", "2203")  # inheritance, refund, funeral grant payable


def answer(ledger: Ledger, period: str, out: Path, failures: dict[str, str] | None = None
           ) -> PayoutBatch:
    """A month sent and answered by the bank: failures maps an EndToEndId to a reason."""
    batch, files = send(ledger, period, out)
    fails = {e2e: (code, "failed") for e2e, code in (failures or {}).items()}
    for f in files:
        ret = f.with_suffix(".ret")
        ret.write_bytes(write_domestic_return(f.read_bytes(), fails))
        returns_import.import_returns(ledger, ret, actor=BANK, config=CONFIG)
    return disbursement.get_batch(ledger, batch.id)


def die(ledger: Ledger, idn: str) -> None:
    """Dead at the end of April, after April's pension was paid: nothing more is owed."""
    ledger.decease(id_number=idn, date_of_death=date(2020, 4, 30),
                   reported_on=date(2020, 5, 2), actor=OPERATOR)


def one_off_lines(batch: PayoutBatch) -> dict[str, Any]:
    return {line.kind: line for line in batch.lines.values() if line.kind != "monthly_pension"}


def payable_balances(ledger: Ledger, *idns: str) -> dict[str, int]:
    """The payables' balances from the postings of the participants' stored events."""
    out = dict.fromkeys(PAYABLES, 0)
    for idn in idns:
        for e in ledger.events.get(pid(idn)):
            for posting in postings_for(e):
                if posting.account in out:
                    out[posting.account] += posting.amount_fen
    return out


def reasons(batch: PayoutBatch) -> dict[str, tuple[int, int]]:
    return {r["reason"]: (r["headcount"], r["amount_fen"])
            for r in batch.comparison["reasons"]}


def test_the_month_pays_the_heirs_and_the_refund_with_the_pensions(
        ledger: Ledger, tmp_path: Path) -> None:
    treasury(ledger)
    living = transitional(ledger, 1)
    dead = contributor(ledger, 2)
    pay(ledger, "2020-04", tmp_path)
    die(ledger, dead)
    ledger.award_funeral_grant(id_number=dead, payee="王小五", payee_account=HEIR,
                               value_date=date(2020, 5, 3), actor=OPERATOR)
    inherited = ledger.settle_balance(id_number=dead, how="inheritance", payee="王小五",
                                      payee_account=HEIR, value_date=date(2020, 5, 3),
                                      actor=OPERATOR)["result"]["amount_fen"]
    leaver = funded(ledger, 80)
    ledger.terminate(id_number=leaver, reason_code="emigration",
                     effective_date=date(2020, 5, 1), actor=OPERATOR)
    ledger.settle_balance(id_number=leaver, how="refund", payee="王五",
                          payee_account=account(80), value_date=date(2020, 5, 3),
                          actor=OPERATOR)
    assert inherited > 0
    assert sorted((o.participant_id, o.kind, o.amount_fen) for o in ledger.open_one_offs()) \
        == sorted([(pid(dead), "funeral_grant", GRANT_FEN),
                   (pid(dead), "inheritance", inherited), (pid(leaver), "refund", 28500)])

    batch = answer(ledger, "2020-05", tmp_path)
    lines = one_off_lines(batch)
    assert sorted(lines) == ["funeral_grant", "inheritance", "refund"]
    assert [line.id_number for line in batch.lines.values()
            if line.kind == "monthly_pension"] == [living]
    label = ledger.rules_on(batch.execution_date).label
    for kind, letter in (("funeral_grant", "F"), ("inheritance", "I"), ("refund", "R")):
        line = lines[kind]
        assert line.end_to_end_id == f"{letter}2020050{1}{line.participant_id.hex[:24].upper()}"
        assert len(line.end_to_end_id) <= 35
        assert (line.months, line.basic_fen, line.deduction_fen) == ([], 0, 0)
        assert line.rule_versions == [label]  # the line names the rule version it used
    assert lines["funeral_grant"].id_number == lines["inheritance"].id_number == dead
    assert (lines["funeral_grant"].account_number, lines["inheritance"].payee_name) == (
        HEIR.account_number, "王小五")
    assert (lines["refund"].id_number, lines["refund"].amount_fen) == (leaver, 28500)
    assert batch.total_fen == sum(line.amount_fen for line in batch.lines.values())
    assert (batch.state, len(batch.outcomes)) == ("closed", 4)
    assert reasons(batch)["one_off_payment"] == (3, GRANT_FEN + inherited + 28500)

    payables = ledger.participant(dead).payables
    assert payables["funeral_grant"].paid_by == lines["funeral_grant"].end_to_end_id
    assert payables["inheritance"].paid_by == lines["inheritance"].end_to_end_id
    assert ledger.open_one_offs() == []
    assert payable_balances(ledger, dead, leaver) == dict.fromkeys(PAYABLES, 0)

    # Running the month again, or the next one, pays nobody's one-off twice.
    assert draft(ledger, "2020-05", file_format="domestic").id == batch.id
    june = answer(ledger, "2020-06", tmp_path)
    assert one_off_lines(june) == {}
    assert reasons(june)["one_off_paid_before"] == (-3, -(GRANT_FEN + inherited + 28500))
    paid = [e for idn in (dead, leaver) for e in ledger.events.get(pid(idn))
            if isinstance(e, Participant.OneOffPaid)]
    assert sorted(e.kind for e in paid) == ["funeral_grant", "inheritance", "refund"]


def a_grant_owed(ledger: Ledger, tmp_path: Path, payee_account: BankAccount | None) -> str:
    """Two pensioners paid for April; one dies and a funeral grant is awarded to 王小五."""
    treasury(ledger)
    transitional(ledger, 1)
    dead = transitional(ledger, 2)
    pay(ledger, "2020-04", tmp_path)
    die(ledger, dead)
    ledger.award_funeral_grant(id_number=dead, payee="王小五", payee_account=payee_account,
                               value_date=date(2020, 5, 3), actor=OPERATOR)
    return dead


def test_an_account_failure_holds_the_grant_until_the_payee_changes_then_pays_it_once(
        ledger: Ledger, tmp_path: Path) -> None:
    dead = a_grant_owed(ledger, tmp_path, HEIR)
    may = draft(ledger, "2020-05", file_format="domestic")
    e2e = one_off_lines(may)["funeral_grant"].end_to_end_id
    answer(ledger, "2020-05", tmp_path, {e2e: "AC01"})
    grant = ledger.participant(dead).payables["funeral_grant"]
    assert (grant.paid_by, grant.hold) == (None, "AC01")
    assert ledger.queries.one_off_rows(pid(dead)) == [("funeral_grant", GRANT_FEN, None,
                                                       "AC01")]
    assert ledger.open_one_offs() == []
    assert payable_balances(ledger, dead)["2203"] == -GRANT_FEN  # owed again

    june = answer(ledger, "2020-06", tmp_path)
    assert one_off_lines(june) == {}  # held

    ledger.change_payee(id_number=dead, kind="funeral_grant", payee="王小六",
                        payee_account=account(9), actor=OPERATOR)
    july = answer(ledger, "2020-07", tmp_path)
    line = one_off_lines(july)["funeral_grant"]
    assert (line.payee_name, line.account_number) == ("王小六", account(9).account_number)
    assert ledger.participant(dead).payables["funeral_grant"].paid_by == line.end_to_end_id
    august = answer(ledger, "2020-08", tmp_path)
    assert one_off_lines(august) == {}
    events = [type(e).__name__ for e in ledger.events.get(pid(dead))
              if isinstance(e, Participant.OneOffPaid | Participant.OneOffPaymentReversed)]
    assert events == ["OneOffPaid", "OneOffPaymentReversed", "OneOffPaid"]
    assert payable_balances(ledger, dead)["2203"] == 0


def test_a_one_off_without_an_account_stays_owed_and_a_changed_one_refuses_funding(
        ledger: Ledger, tmp_path: Path) -> None:
    dead = a_grant_owed(ledger, tmp_path, None)
    may = draft(ledger, "2020-05", file_format="domestic")
    assert one_off_lines(may) == {}
    assert may.comparison["excluded"]["listed"] == [
        {"participant_id": str(pid(dead)), "reason": "funeral_grant: no payee account"}]
    run.approve(ledger, may.id, may.manifest_sha256, APPROVER)
    run.fund(ledger, may.id, value_date=first_day("2020-05"), actor=FINANCE)

    ledger.change_payee(id_number=dead, kind="funeral_grant", payee="王小五",
                        payee_account=HEIR, actor=OPERATOR)
    june = draft(ledger, "2020-06", file_format="domestic")
    assert one_off_lines(june)["funeral_grant"].amount_fen == GRANT_FEN
    run.approve(ledger, june.id, june.manifest_sha256, APPROVER)
    # A change after the draft: the line no longer says what is owed, to whom.
    ledger.change_payee(id_number=dead, kind="funeral_grant", payee="王小六",
                        payee_account=account(9), actor=OPERATOR)
    with pytest.raises(Refused, match="since the draft.*new payee or bank details"):
        run.fund(ledger, june.id, value_date=first_day("2020-06"), actor=FINANCE)
    assert disbursement.get_batch(ledger, june.id).state == "approved"
    assert ledger.participant(dead).payables["funeral_grant"].paid_by is None
    run.cancel(ledger, june.id, "payee changed", OPERATOR)
    again = draft(ledger, "2020-06", file_format="domestic")
    assert again.sequence == 2
    assert one_off_lines(again)["funeral_grant"].account_number == account(9).account_number


def test_a_one_off_still_owed_as_drafted_is_paid_whatever_else_changed(
        ledger: Ledger, tmp_path: Path) -> None:
    """Year-end interest credited between the draft and the funding moves the deceased's
    account to a new version; the grant is still owed, to the same heir: it is paid."""
    dead = a_grant_owed(ledger, tmp_path, HEIR)
    may = draft(ledger, "2020-05", file_format="domestic")
    line = one_off_lines(may)["funeral_grant"]
    run.approve(ledger, may.id, may.manifest_sha256, APPROVER)
    ledger.credit_interest(year=2019, today=date(2020, 5, 6), actor=FINANCE)
    assert ledger.participant(dead).version > line.register_version

    run.fund(ledger, may.id, value_date=first_day("2020-05"), actor=FINANCE)

    grant = ledger.participant(dead).payables["funeral_grant"]
    assert grant.paid_by == line.end_to_end_id
    assert ledger.queries.one_off_rows(pid(dead)) == [
        ("funeral_grant", GRANT_FEN, line.end_to_end_id, None)]
