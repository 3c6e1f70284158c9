"""The law on the fund's three bank accounts, and the guard that no account goes negative.

Income (收入户) pays only to the fiscal special account (the sweep); the fiscal special
account (财政专户) funds the expenditure account (支出户) (the appropriation). Every other
direction is illegal.
"""

from __future__ import annotations

from datetime import date
from itertools import permutations
from typing import Any

import pytest

from ledger.application import Ledger
from ledger.errors import IdempotencyConflict, InvalidInput, Refused
from tests.helpers import contribute, enrol, make_id, refused, stored

ACCOUNTS = ("income", "fiscal", "expenditure")
CODES = {"income": "1001", "fiscal": "1002", "expenditure": "1003"}
LAWFUL = {("income", "fiscal"): "sweep", ("fiscal", "expenditure"): "appropriation"}




def money_in_every_account(ledger: Ledger) -> None:
    """500.00 yuan in income, 1,000.00 in fiscal, 0.50 in expenditure."""
    enrol(ledger, make_id(1))
    contribute(ledger, make_id(1), 2016, 50000)
    ledger.receive_treasury_funds(amount_fen=100000, level="central", purpose="basic_pension",
                                  value_date=date(2016, 1, 20), reference="T-1", actor="fin")
    ledger.earn_bank_interest(account="expenditure", amount_fen=50, value_date=date(2016, 3, 21),
                              reference="I-1", actor="fin")
    assert ledger.fund_positions() == {"1001": 50000, "1002": 100000, "1003": 50, "1004": 0,
                                       "1101": 0}


@pytest.mark.parametrize(("source", "target"), list(permutations(ACCOUNTS, 2)),
                         ids=[f"{a}->{b}" for a, b in permutations(ACCOUNTS, 2)])
def test_only_income_to_fiscal_and_fiscal_to_expenditure_are_lawful(
        ledger: Ledger, source: str, target: str) -> None:
    money_in_every_account(ledger)
    move = lambda: ledger.transfer(from_account=source, to_account=target,  # noqa: E731
                                   amount_fen=40, value_date=date(2016, 4, 1),
                                   reference=f"X-{source}-{target}", actor="fin")
    if (source, target) in LAWFUL:
        before = ledger.fund_positions()
        out = move()
        assert out["kind"] == LAWFUL[(source, target)]
        after = ledger.fund_positions()
        assert after[CODES[source]] == before[CODES[source]] - 40
        assert after[CODES[target]] == before[CODES[target]] + 40
    else:
        refused(ledger, Refused, "to_account",
                f"the law forbids moving money {source} -> {target}", move)


@pytest.mark.parametrize("account", ACCOUNTS)
def test_an_account_cannot_pay_itself(ledger: Ledger, account: str) -> None:
    money_in_every_account(ledger)
    refused(ledger, Refused, "to_account", f"the law forbids moving money {account} -> {account}",
            lambda: ledger.transfer(from_account=account, to_account=account, amount_fen=10,
                                    value_date=date(2016, 4, 1), reference="X", actor="fin"))


@pytest.mark.parametrize(("field", "kwargs"), [
    ("from_account", {"from_account": "cash_box", "to_account": "fiscal"}),
    ("to_account", {"from_account": "income", "to_account": "pocket"}),
])
def test_an_unknown_account_is_invalid(sqlite_ledger: Ledger, field: str,
                                       kwargs: dict[str, str]) -> None:
    ledger = sqlite_ledger  # validation only: the store is irrelevant
    refused(ledger, InvalidInput, field, "must be one of income, fiscal, expenditure",
            lambda: ledger.transfer(amount_fen=10, value_date=date(2016, 4, 1), reference="X",
                                    actor="fin", **kwargs))


def test_sweep_and_appropriate_are_the_two_lawful_transfers(ledger: Ledger) -> None:
    money_in_every_account(ledger)
    assert ledger.sweep(amount_fen=50000, value_date=date(2016, 4, 1), reference="S-1",
                        actor="fin")["kind"] == "sweep"
    assert ledger.appropriate(amount_fen=150000, value_date=date(2016, 4, 2), reference="A-1",
                              actor="fin")["kind"] == "appropriation"
    # The income account is swept to zero; the fiscal account funded the expenditure account.
    assert ledger.fund_positions() == {"1001": 0, "1002": 0, "1003": 150050, "1004": 0,
                                       "1101": 0}


def test_a_transfer_beyond_the_balance_is_refused_and_nothing_is_stored(ledger: Ledger) -> None:
    money_in_every_account(ledger)
    err = refused(ledger, Refused, "amount", "would take the income account (收入户) below zero "
                  "(balance 500.00 yuan, change -500.01 yuan)",
                  lambda: ledger.sweep(amount_fen=50001, value_date=date(2016, 4, 1),
                                       reference="S-1", actor="fin"))
    assert "收入户" in str(err)
    # The refused reference was not booked: it can be used for the right amount.
    ledger.sweep(amount_fen=50000, value_date=date(2016, 4, 1), reference="S-1", actor="fin")
    assert ledger.fund_positions()["1001"] == 0
    refused(ledger, Refused, "amount", "would take the income account (收入户) below zero",
            lambda: ledger.sweep(amount_fen=1, value_date=date(2016, 4, 2), reference="S-2",
                                 actor="fin"))


def test_the_fiscal_account_cannot_fund_more_than_it_holds(ledger: Ledger) -> None:
    money_in_every_account(ledger)
    refused(ledger, Refused, "amount", "财政专户",
            lambda: ledger.appropriate(amount_fen=100001, value_date=date(2016, 4, 1),
                                       reference="A-1", actor="fin"))


@pytest.mark.parametrize(("purpose", "level"), [
    ("basic_pension", "central"), ("basic_pension", "province"),
    ("contribution_subsidy", "province"), ("contribution_subsidy", "city"),
    ("contribution_subsidy", "county"), ("on_behalf", "county"),
])
def test_treasury_funds_arrive_in_the_fiscal_special_account(ledger: Ledger, purpose: str,
                                                             level: str) -> None:
    out = ledger.receive_treasury_funds(amount_fen=1_234_567, level=level, purpose=purpose,
                                        value_date=date(2020, 1, 20), reference="T-9",
                                        actor="fin")
    assert out == {"reference": "T-9", "amount_fen": 1_234_567}
    assert ledger.fund_positions() == {"1001": 0, "1002": 1_234_567, "1003": 0, "1004": 0,
                                       "1101": 0}


@pytest.mark.parametrize(("kwargs", "field", "rule"), [
    ({"level": "central", "purpose": "contribution_subsidy"}, "level",
     "contribution subsidies are funded by province, city or county"),
    ({"level": "township", "purpose": "basic_pension"}, "level", "must be one of central"),
    ({"level": "county", "purpose": "bonus"}, "purpose", "must be one of basic_pension"),
])
def test_treasury_funds_must_name_a_real_level_and_purpose(
        sqlite_ledger: Ledger, kwargs: dict[str, str], field: str, rule: str) -> None:
    ledger = sqlite_ledger  # validation only: the store is irrelevant
    refused(ledger, InvalidInput, field, rule,
            lambda: ledger.receive_treasury_funds(amount_fen=100, value_date=date(2020, 1, 20),
                                                  reference="T-9", actor="fin", **kwargs))


@pytest.mark.parametrize("account", ACCOUNTS)
def test_bank_interest_is_earned_on_each_of_the_three_accounts(ledger: Ledger,
                                                               account: str) -> None:
    ledger.earn_bank_interest(account=account, amount_fen=321, value_date=date(2020, 3, 21),
                              reference=f"I-{account}", actor="fin")
    positions = ledger.fund_positions()
    assert positions[CODES[account]] == 321
    assert sum(positions.values()) == 321


def test_bank_interest_must_name_one_of_the_three_accounts(sqlite_ledger: Ledger) -> None:
    ledger = sqlite_ledger  # validation only: the store is irrelevant
    refused(ledger, InvalidInput, "account", "must be one of income, fiscal, expenditure",
            lambda: ledger.earn_bank_interest(account="savings", amount_fen=321,
                                              value_date=date(2020, 3, 21), reference="I-1",
                                              actor="fin"))


def test_a_bank_reference_is_booked_once(ledger: Ledger) -> None:
    first = ledger.receive_treasury_funds(amount_fen=5000, level="county",
                                          purpose="basic_pension", value_date=date(2020, 1, 20),
                                          reference="BANK-0001", actor="fin")
    before = stored(ledger)
    # The same message again (a retry) returns the first answer and books nothing.
    again = ledger.receive_treasury_funds(amount_fen=5000, level="county",
                                          purpose="basic_pension", value_date=date(2020, 1, 20),
                                          reference="BANK-0001", actor="fin")
    assert again == {**first, "replayed": True}
    assert stored(ledger) == before
    # The same reference with other content is a conflict ...
    with pytest.raises(IdempotencyConflict):
        ledger.receive_treasury_funds(amount_fen=6000, level="county", purpose="basic_pension",
                                      value_date=date(2020, 1, 20), reference="BANK-0001",
                                      actor="fin")
    with pytest.raises(IdempotencyConflict):
        ledger.earn_bank_interest(account="fiscal", amount_fen=5000,
                                  value_date=date(2020, 1, 20), reference="BANK-0001",
                                  actor="fin")
    assert stored(ledger) == before
    # ... and under a key of its own the fund itself refuses the duplicate reference.
    refused(ledger, Refused, "reference", "bank reference BANK-0001 is already booked",
            lambda: ledger.earn_bank_interest(account="fiscal", amount_fen=5000,
                                              value_date=date(2020, 1, 20),
                                              reference="BANK-0001", actor="fin",
                                              idempotency_key="interest-2020-q1"))
    assert ledger.fund_positions()["1002"] == 5000


@pytest.mark.parametrize("reference", ["", "   ", "R" * 65])
def test_a_bank_reference_is_1_to_64_characters(sqlite_ledger: Ledger, reference: str) -> None:
    ledger = sqlite_ledger  # validation only: the store is irrelevant
    refused(ledger, InvalidInput, "reference", "must be 1 to 64 characters",
            lambda: ledger.earn_bank_interest(account="fiscal", amount_fen=1,
                                              value_date=date(2020, 1, 20), reference=reference,
                                              actor="fin", idempotency_key="k"))


@pytest.mark.parametrize(("amount", "rule"), [
    (0, "amount must be greater than zero"),
    (-100, "amount must not be negative"),
    (1.5, "amount in fen must be an integer"),
    ("100", "amount in fen must be an integer"),
])
def test_fund_movements_take_a_positive_whole_number_of_fen(sqlite_ledger: Ledger, amount: Any,
                                                            rule: str) -> None:
    ledger = sqlite_ledger  # validation only: the store is irrelevant
    money_in_every_account(ledger)
    refused(ledger, InvalidInput, "amount", rule,
            lambda: ledger.sweep(amount_fen=amount, value_date=date(2016, 4, 1),
                                 reference="S-1", actor="fin"))
    refused(ledger, InvalidInput, "amount", rule,
            lambda: ledger.receive_treasury_funds(amount_fen=amount, level="county",
                                                  purpose="basic_pension",
                                                  value_date=date(2016, 4, 1), reference="T-2",
                                                  actor="fin"))
