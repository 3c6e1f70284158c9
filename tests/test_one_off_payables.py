"""One-off sums owed after a death or a termination: the funeral grant (丧葬补助金), the
inherited balance and a refund. The ledger books each as a payable with its payee; the
monthly payout run pays it through the bank."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import pytest

from ledger.aggregates.participant import BankAccount, Payable
from ledger.application import Ledger
from ledger.errors import InvalidInput, Refused
from ledger.postings import Posting, postings_for
from tests.helpers import bank, refused
from tests.test_participant import funded, pensioner

HEIR = BankAccount(account_name="王小五", account_number="6222000012345678", bank_code="102")
GRANT_FEN = 100_000  # the sample county's funeral grant, 1,000 yuan


def dead_pensioner(ledger: Ledger, n: int) -> str:
    idn = pensioner(ledger, n)
    ledger.decease(id_number=idn, date_of_death=date(2020, 3, 5), reported_on=date(2020, 3, 9),
                   actor="op1")
    return idn


def test_the_funeral_grant_of_the_rules_at_death_is_owed_to_the_payee(ledger: Ledger) -> None:
    idn = dead_pensioner(ledger, 70)
    assert ledger.rules_on(date(2020, 3, 5)).parameters.funeral_grant_fen == GRANT_FEN
    out = ledger.award_funeral_grant(id_number=idn, payee="王小五", payee_account=HEIR,
                                     value_date=date(2020, 3, 20), actor="op1")
    assert out["result"] == {"amount_fen": GRANT_FEN, "payable_fen": GRANT_FEN}
    p = ledger.participant(idn)
    assert p.funeral_grant_fen == GRANT_FEN
    # (Beside it, the months of pension never paid up to the death: test_owed_at_death.py.)
    assert p.payables["funeral_grant"] == Payable(
        kind="funeral_grant", amount_fen=GRANT_FEN, payee="王小五", payee_account=HEIR)
    refused(ledger, Refused, "participant", "already awarded",
            lambda: ledger.award_funeral_grant(id_number=idn, payee="王小五",
                                               payee_account=HEIR, value_date=date(2020, 4, 1),
                                               actor="op1", idempotency_key="grant-again"))


def test_the_grant_first_recovers_pension_paid_after_death(ledger: Ledger) -> None:
    idn = dead_pensioner(ledger, 71)
    ledger.assess_overpayment(id_number=idn, amount_fen=30_000, months=["2020-04", "2020-05"],
                              reason="paid after death (冒领)", value_date=date(2020, 6, 1),
                              actor="op1")
    out = ledger.award_funeral_grant(id_number=idn, payee="王小五", payee_account=HEIR,
                                     value_date=date(2020, 6, 2), actor="op1")
    assert out["result"] == {"amount_fen": GRANT_FEN, "payable_fen": 70_000}
    p = ledger.participant(idn)
    assert p.overpayment_fen == 0
    assert p.payables["funeral_grant"].amount_fen == 70_000


def test_an_overpayment_larger_than_the_grant_leaves_nothing_to_pay(ledger: Ledger) -> None:
    idn = dead_pensioner(ledger, 72)
    ledger.assess_overpayment(id_number=idn, amount_fen=130_000, months=["2020-04"],
                              reason="paid after death (冒领)", value_date=date(2020, 6, 1),
                              actor="op1")
    out = ledger.award_funeral_grant(id_number=idn, payee="王小五", payee_account=None,
                                     value_date=date(2020, 6, 2), actor="op1")
    assert out["result"] == {"amount_fen": GRANT_FEN, "payable_fen": 0}
    p = ledger.participant(idn)
    assert p.overpayment_fen == 30_000 and "funeral_grant" not in p.payables


def test_the_funeral_grant_needs_a_dead_pensioner(ledger: Ledger) -> None:
    living = pensioner(ledger, 73)
    refused(ledger, Refused, "participant", "needs a recorded death",
            lambda: ledger.award_funeral_grant(id_number=living, payee="王小五",
                                               payee_account=HEIR, value_date=date(2020, 6, 2),
                                               actor="op1"))
    never_drawn = funded(ledger, 74)
    ledger.decease(id_number=never_drawn, date_of_death=date(2017, 3, 1),
                   reported_on=date(2017, 3, 9), actor="op1")
    refused(ledger, Refused, "participant", "for pensioners only",
            lambda: ledger.award_funeral_grant(id_number=never_drawn, payee="王小五",
                                               payee_account=HEIR, value_date=date(2017, 4, 2),
                                               actor="op1"))
    dead = dead_pensioner(ledger, 75)
    refused(ledger, InvalidInput, "payee", "must name who receives the money",
            lambda: ledger.award_funeral_grant(id_number=dead, payee="  ", payee_account=HEIR,
                                               value_date=date(2020, 4, 2), actor="op1"))


def test_where_the_county_grants_none_it_is_refused(ledger: Ledger) -> None:
    idn = dead_pensioner(ledger, 76)
    in_force = ledger.rules_on(date(2020, 1, 1)).parameters
    ledger.publish_rules(date(2020, 1, 1), in_force.model_copy(update={"funeral_grant_fen": 0}),
                         "no funeral grant", actor="admin")
    refused(ledger, Refused, "funeral_grant", "grant none",
            lambda: ledger.award_funeral_grant(id_number=idn, payee="王小五",
                                               payee_account=HEIR, value_date=date(2020, 4, 2),
                                               actor="op1"))


def test_an_inheritance_with_the_heirs_account_is_owed_to_the_heir(ledger: Ledger) -> None:
    idn = funded(ledger, 77)
    ledger.decease(id_number=idn, date_of_death=date(2017, 3, 1), reported_on=date(2017, 3, 9),
                   actor="op1")
    ledger.settle_balance(id_number=idn, how="inheritance", payee="王小五", payee_account=HEIR,
                          value_date=date(2017, 4, 1), actor="op1")
    assert ledger.participant(idn).payables == {"inheritance": Payable(
        kind="inheritance", amount_fen=28500, payee="王小五", payee_account=HEIR)}


def test_the_payee_can_change_until_the_payment_is_sent(ledger: Ledger) -> None:
    idn = funded(ledger, 78)
    ledger.terminate(id_number=idn, reason_code="emigration", effective_date=date(2017, 5, 1),
                     actor="op1")
    refused(ledger, Refused, "kind", "nothing is owed as refund",
            lambda: ledger.change_payee(id_number=idn, kind="refund", payee="王五",
                                        payee_account=bank(2), actor="op1"))
    ledger.settle_balance(id_number=idn, how="refund", payee="王五", payee_account=None,
                          value_date=date(2017, 5, 2), actor="op1")
    refused(ledger, InvalidInput, "kind", "must be one of funeral_grant, inheritance, refund",
            lambda: ledger.change_payee(id_number=idn, kind="pension", payee="王五",
                                        payee_account=bank(2), actor="op1"))
    ledger.change_payee(id_number=idn, kind="refund", payee="王五", payee_account=bank(2),
                        actor="op1")
    assert ledger.participant(idn).payables["refund"].payee_account == bank(2)


def test_a_payment_sent_then_returned_for_a_bad_account_is_held_until_the_payee_changes(
        ledger: Ledger) -> None:
    idn = dead_pensioner(ledger, 79)
    ledger.award_funeral_grant(id_number=idn, payee="王小五", payee_account=HEIR,
                               value_date=date(2020, 3, 20), actor="op1")
    p = ledger.participant(idn)
    batch = uuid.uuid4()
    with pytest.raises(Refused) as e:
        p.pay_one_off(kind="funeral_grant", batch_id=batch, end_to_end_id="E1", amount_fen=1,
                      value_date=date(2020, 4, 1), actor="run")
    assert e.value.field == "amount_fen"
    p.pay_one_off(kind="funeral_grant", batch_id=batch, end_to_end_id="E1",
                  amount_fen=GRANT_FEN, value_date=date(2020, 4, 1), actor="run")
    assert p.payables["funeral_grant"].paid_by == "E1"
    with pytest.raises(Refused) as e:
        p.change_payee(kind="funeral_grant", payee="王小六", payee_account=bank(3), actor="op1")
    assert "sent to the bank as E1" in e.value.rule
    with pytest.raises(Refused):
        p.pay_one_off(kind="funeral_grant", batch_id=batch, end_to_end_id="E2",
                      amount_fen=GRANT_FEN, value_date=date(2020, 4, 1), actor="run")
    p.reverse_one_off(kind="funeral_grant", end_to_end_id="E1", reason_code="AC04",
                      after_settlement=True, value_date=date(2020, 4, 9), actor="bank")
    assert p.payables["funeral_grant"] == Payable(
        kind="funeral_grant", amount_fen=GRANT_FEN, payee="王小五", payee_account=HEIR,
        hold="AC04")
    with pytest.raises(Refused):  # held: not payable until the details change
        p.pay_one_off(kind="funeral_grant", batch_id=batch, end_to_end_id="E2",
                      amount_fen=GRANT_FEN, value_date=date(2020, 5, 1), actor="run")
    p.change_payee(kind="funeral_grant", payee="王小六", payee_account=bank(3), actor="op1")
    assert p.payables["funeral_grant"].hold is None
    p.pay_one_off(kind="funeral_grant", batch_id=batch, end_to_end_id="E2",
                  amount_fen=GRANT_FEN, value_date=date(2020, 5, 1), actor="run")
    assert p.payables["funeral_grant"].paid_by == "E2"


# ---- the command line -------------------------------------------------------------------

def test_the_command_line_awards_the_grant_and_names_the_field_it_refuses(
        tmp_path: Path) -> None:
    from tests import test_cli as c

    db = str(tmp_path / "ledger.db")
    c.ok(db, "init")
    c.enrol(db)
    err = c.refused(db, "pensioner", "funeral-grant", "--id", c.ID, "--payee", "王小五",
                    "--date", "2020-03-20", "--account-name", "王小五",
                    "--account-number", "62-22", "--bank-code", "102")
    assert "account_number" in err and "8 to 32 digits" in err
    # Digits a bank takes: not fullwidth ones, which a Chinese keyboard may type.
    err = c.refused(db, "pensioner", "funeral-grant", "--id", c.ID, "--payee", "王小五",
                    "--date", "2020-03-20", "--account-name", "王小五",
                    "--account-number", "６２２２０００１２３４５６７８", "--bank-code", "102")
    assert "account_number" in err and "8 to 32 digits" in err
    err = c.refused(db, "pensioner", "funeral-grant", "--id", c.ID, "--payee", "王小五",
                    "--date", "2020-03-20")
    assert "participant" in err and "needs a recorded death" in err
    err = c.refused(db, "pensioner", "payee", "--id", c.ID, "--kind", "pension", "--payee", "王",
                    "--account-name", "王", "--account-number", "6222000012345678",
                    "--bank-code", "102")
    assert "kind" in err and "must be one of" in err
    ok_out = c.ok(db, "pensioner", "decease", "--id", c.ID, "--date-of-death", "2020-03-05",
                  "--reported-on", "2020-03-09")
    assert ok_out["status"] == "deceased"
    err = c.refused(db, "pensioner", "funeral-grant", "--id", c.ID, "--payee", "王小五",
                    "--date", "2020-03-20")
    assert "for pensioners only" in err


# ---- double entry -----------------------------------------------------------------------

def test_the_pool_pays_the_grant_less_the_offset_and_the_bank_run_clears_the_payable(
        ledger: Ledger) -> None:
    idn = dead_pensioner(ledger, 80)
    ledger.assess_overpayment(id_number=idn, amount_fen=30_000, months=["2020-04"],
                              reason="paid after death (冒领)", value_date=date(2020, 6, 1),
                              actor="op1")
    p = ledger.participant(idn)
    p.award_funeral_grant(payee="王小五", payee_account=HEIR, value_date=date(2020, 6, 2),
                          rules=ledger.rules_on(date(2020, 3, 5)), actor="op1")
    p.pay_one_off(kind="funeral_grant", batch_id=uuid.uuid4(), end_to_end_id="E1",
                  amount_fen=70_000, value_date=date(2020, 7, 1), actor="run")
    p.reverse_one_off(kind="funeral_grant", end_to_end_id="E1", reason_code="AC01",
                      after_settlement=False, value_date=date(2020, 7, 3), actor="bank")
    assert [(type(e).__name__, postings_for(e)) for e in p.collect_events()] == [
        ("FuneralGrantAwarded", [Posting("2101", 100_000), Posting("1201", -30_000),
                                 Posting("2203", -70_000)]),
        ("OneOffPaid", [Posting("2203", 70_000), Posting("2301", -70_000)]),
        ("OneOffPaymentReversed", [Posting("2301", 70_000), Posting("2203", -70_000)]),
    ]


def test_a_refund_paid_by_the_run_clears_the_refund_payable(ledger: Ledger) -> None:
    idn = funded(ledger, 81)
    ledger.terminate(id_number=idn, reason_code="emigration", effective_date=date(2017, 5, 1),
                     actor="op1")
    ledger.settle_balance(id_number=idn, how="refund", payee="王五", payee_account=bank(2),
                          value_date=date(2017, 5, 2), actor="op1")
    p = ledger.participant(idn)
    p.pay_one_off(kind="refund", batch_id=uuid.uuid4(), end_to_end_id="E9", amount_fen=28500,
                  value_date=date(2017, 6, 1), actor="run")
    assert [postings_for(e) for e in p.collect_events()] == [
        [Posting("2202", 28500), Posting("2301", -28500)]]
