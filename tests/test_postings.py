"""Double entry: each money event expands into postings (debit +, credit -) that sum to zero.

Chart of accounts: 1001 income, 1002 fiscal special, 1003 expenditure, 1101 in flight,
1201 overpayment receivable, 1202.<level> government subsidy receivable,
2001.<source> individual accounts, 2101 pooled fund, 2201 inheritance payable,
2202 refund payable, 3001 bank interest earned, 3002 interest credited to accounts.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from ledger.aggregates.fund import Fund
from ledger.aggregates.participant import BankAccount, Participant
from ledger.postings import Posting, guarded_deltas, postings_for
from ledger.rules import RuleVersion, in_force, sample_county
from tests.helpers import make_id

PID_NUMBER = make_id(7, born=date(1960, 3, 3))


def rules_on(on: date, **changes: Any) -> RuleVersion:
    versions = [RuleVersion(version=i, effective_from=d, parameters=p.model_copy(update=changes))
                for i, (d, p, _) in enumerate(sample_county(), start=1)]
    v = in_force(versions, on)
    assert v is not None
    return v


def participant(group: str = "ordinary") -> Participant:
    p = Participant.enrol(id_number=PID_NUMBER, name="赵六", birth_date=date(1960, 3, 3),
                          township="城关镇", village="西村", identity_group=group,
                          enrol_date=date(2015, 1, 5),
                          bank=BankAccount(account_name="赵六", account_number="6222000011112222",
                                           bank_code="102"),
                          params=rules_on(date(2015, 1, 5)).parameters, actor="op1")
    p.collect_events()
    return p


def contribute(p: Participant, year: int, tier_fen: int, amount_fen: int | None = None,
               back_payment: bool = False, on: date | None = None) -> None:
    value_date = on or date(year, 3, 1)
    p.receive_contribution(year=year, tier_fen=tier_fen,
                           amount_fen=tier_fen if amount_fen is None else amount_fen,
                           channel="bank", receipt_no=f"R{year}{tier_fen}", value_date=value_date,
                           back_payment=back_payment, rules=rules_on(value_date), actor="op1")


def postings_of(agg: Any) -> list[tuple[str, list[Posting]]]:
    return [(type(e).__name__, postings_for(e)) for e in agg.collect_events()]


def fund() -> Fund:
    f = Fund.open("test", actor="admin")
    f.collect_events()
    return f


# ---- participant money ----------------------------------------------------------------

def test_a_contribution_is_dr_income_account_cr_the_individual_account() -> None:
    p = participant()
    contribute(p, 2016, 50000)
    assert postings_of(p) == [("ContributionReceived", [
        Posting("1001", 50000), Posting("2001.contribution", -50000, p.id)])]


def test_a_payment_on_behalf_is_dr_government_receivable_cr_the_on_behalf_source() -> None:
    p = participant("destitute")
    contribute(p, 2016, 20000, amount_fen=10000)
    assert postings_of(p) == [
        ("ContributionReceived", [Posting("1001", 10000),
                                  Posting("2001.contribution", -10000, p.id)]),
        ("PaidOnBehalf", [Posting("1202.on_behalf", 10000),
                          Posting("2001.on_behalf", -10000, p.id)]),
    ]


def test_a_subsidy_is_one_receivable_per_funding_level() -> None:
    p = participant()
    contribute(p, 2016, 20000)
    p.collect_events()
    p.credit_subsidy(year=2016, value_date=date(2016, 6, 30), rules=rules_on(date(2016, 6, 30)),
                     actor="fin")
    assert postings_of(p) == [
        ("SubsidyCredited", [Posting("1202.province", 1200),
                             Posting("2001.subsidy_province", -1200, p.id)]),
        ("SubsidyCredited", [Posting("1202.city", 1100),
                             Posting("2001.subsidy_city", -1100, p.id)]),
        ("SubsidyCredited", [Posting("1202.county", 1200),
                             Posting("2001.subsidy_county", -1200, p.id)]),
    ]


def test_a_collective_subsidy_is_received_into_the_income_account() -> None:
    p = participant()
    p.credit_collective(year=2016, amount_fen=5000, payer="西村委会", receipt_no="C1",
                        value_date=date(2016, 4, 1), actor="op1")
    assert postings_of(p) == [("CollectiveSubsidyCredited", [
        Posting("1001", 5000), Posting("2001.collective", -5000, p.id)])]


def test_credited_interest_is_dr_interest_credited_cr_the_interest_source() -> None:
    p = participant()
    contribute(p, 2016, 100000, on=date(2016, 1, 15))
    p.collect_events()
    p.credit_interest(year=2016, rules=rules_on(date(2016, 12, 31)), actor="fin")
    # 100000 * 0.0175 * 11/12 = 1604.1666... -> 1604
    assert postings_of(p) == [("InterestCredited", [
        Posting("3002", 1604), Posting("2001.interest", -1604, p.id)])]


def test_no_interest_means_no_postings() -> None:
    p = participant()
    p.credit_interest(year=2016, rules=rules_on(date(2016, 12, 31)), actor="fin")
    assert postings_of(p) == [("InterestCredited", [])]


def _funded(group: str = "ordinary") -> Participant:
    p = participant(group)
    contribute(p, 2016, 20000, amount_fen=10000 if group == "destitute" else 20000)
    p.credit_subsidy(year=2016, value_date=date(2016, 6, 30), rules=rules_on(date(2016, 6, 30)),
                     actor="fin")
    p.credit_collective(year=2016, amount_fen=5000, payer="西村委会", receipt_no="C1",
                        value_date=date(2016, 4, 1), actor="op1")
    p.collect_events()
    return p


def test_a_refund_moves_every_source_to_refund_payable() -> None:
    p = _funded()
    p.terminate("emigration", date(2017, 2, 1), actor="op1")
    p.settle_balance(how="refund", payee="赵六", value_date=date(2017, 2, 10),
                     rules=rules_on(date(2017, 2, 10)), actor="op1")
    (_, terminated), (name, postings) = postings_of(p)
    assert terminated == [] and name == "BalanceSettled"
    assert postings == [
        Posting("2001.collective", 5000, p.id), Posting("2202", -5000),
        Posting("2001.contribution", 20000, p.id), Posting("2202", -20000),
        Posting("2001.subsidy_city", 1100, p.id), Posting("2202", -1100),
        Posting("2001.subsidy_county", 1200, p.id), Posting("2202", -1200),
        Posting("2001.subsidy_province", 1200, p.id), Posting("2202", -1200),
    ]


def test_an_inheritance_moves_the_balance_to_inheritance_payable() -> None:
    p = _funded()
    p.decease(date(2017, 1, 3), date(2017, 1, 20), actor="op1")
    p.settle_balance(how="inheritance", payee="赵小六", value_date=date(2017, 2, 10),
                     rules=rules_on(date(2017, 2, 10)), actor="op1")
    _, (_, postings) = postings_of(p)
    assert {a for a, _, _ in postings if not a.startswith("2001")} == {"2201"}
    assert sum(amt for a, amt, _ in postings if a == "2201") == -(20000 + 3500 + 5000)


def test_a_subsidy_excluded_from_inheritance_returns_to_the_pooled_fund() -> None:
    p = _funded("destitute")
    p.decease(date(2017, 1, 3), date(2017, 1, 20), actor="op1")
    p.settle_balance(how="inheritance", payee="赵小六", value_date=date(2017, 2, 10),
                     rules=rules_on(date(2017, 2, 10), inherit_subsidy=False), actor="op1")
    _, (_, postings) = postings_of(p)
    assert postings == [
        Posting("2001.collective", 5000, p.id), Posting("2201", -5000),
        Posting("2001.contribution", 10000, p.id), Posting("2201", -10000),
        Posting("2001.on_behalf", 10000, p.id), Posting("2101", -10000),
        Posting("2001.subsidy_city", 1100, p.id), Posting("2101", -1100),
        Posting("2001.subsidy_county", 1200, p.id), Posting("2101", -1200),
        Posting("2001.subsidy_province", 1200, p.id), Posting("2101", -1200),
    ]


def test_an_overpayment_is_a_receivable_against_the_pooled_fund() -> None:
    p = _funded()
    p.assess_overpayment(27600, ["2017-02", "2017-03"], "paid after death",
                         date(2017, 4, 1), actor="audit")
    assert postings_of(p) == [("OverpaymentAssessed", [Posting("1201", 27600),
                                                       Posting("2101", -27600)])]


def test_recovery_from_the_family_brings_money_into_the_expenditure_account() -> None:
    p = _funded()
    p.assess_overpayment(27600, ["2017-02"], "paid after death", date(2017, 4, 1), actor="a")
    p.collect_events()
    p.recover_overpayment(27600, "family", date(2017, 5, 1), actor="fin")
    assert postings_of(p) == [("OverpaymentRecovered", [Posting("1003", 27600),
                                                        Posting("1201", -27600)])]


def test_an_offset_takes_the_subsidy_parts_before_the_participants_own_money() -> None:
    p = _funded()
    p.assess_overpayment(9000, ["2017-02"], "paid after death", date(2017, 4, 1), actor="a")
    p.collect_events()
    p.recover_overpayment(9000, "offset_account", date(2017, 5, 1), actor="fin")
    # no interest yet: province 1200, city 1100, county 1200, then collective 5000, then
    # 500 of the contribution
    assert postings_of(p) == [("OverpaymentRecovered", [
        Posting("2001.collective", 5000, p.id), Posting("2001.contribution", 500, p.id),
        Posting("2001.subsidy_city", 1100, p.id), Posting("2001.subsidy_county", 1200, p.id),
        Posting("2001.subsidy_province", 1200, p.id), Posting("1201", -9000)])]


def test_events_that_move_no_money_have_no_postings() -> None:
    p = participant()
    p.change_identity_group("minimum_living", date(2016, 1, 1), actor="op1")
    p.change_bank_details(BankAccount(account_name="赵六", account_number="6222999988887777",
                                      bank_code="103"), actor="op1")
    p.decease(date(2017, 1, 3), date(2017, 1, 20), actor="op1")
    p.terminate("death", date(2017, 1, 20), actor="op1")
    for name, postings in postings_of(p):
        assert postings == [], name


# ---- the fund's bank accounts ----------------------------------------------------------

@pytest.mark.parametrize(("purpose", "level", "credit"), [
    ("basic_pension", "central", "2101"),
    ("basic_pension", "county", "2101"),
    ("contribution_subsidy", "province", "1202.province"),
    ("contribution_subsidy", "county", "1202.county"),
    ("on_behalf", "city", "1202.on_behalf"),
])
def test_treasury_money_arrives_in_the_fiscal_account(purpose: str, level: str,
                                                      credit: str) -> None:
    f = fund()
    f.receive_treasury_funds(amount_fen=1_000_000, level=level, purpose=purpose,
                             value_date=date(2020, 1, 5), reference="T1", actor="fin")
    assert postings_of(f) == [("TreasuryFundsReceived", [Posting("1002", 1_000_000),
                                                         Posting(credit, -1_000_000)])]


def test_a_sweep_is_dr_fiscal_cr_income_and_an_appropriation_dr_expenditure_cr_fiscal() -> None:
    f = fund()
    f.transfer(from_account="income", to_account="fiscal", amount_fen=700,
               value_date=date(2020, 1, 31), reference="S1", actor="fin")
    f.transfer(from_account="fiscal", to_account="expenditure", amount_fen=300,
               value_date=date(2020, 2, 1), reference="A1", actor="fin")
    assert postings_of(f) == [
        ("Transferred", [Posting("1002", 700), Posting("1001", -700)]),
        ("Transferred", [Posting("1003", 300), Posting("1002", -300)]),
    ]


@pytest.mark.parametrize(("account", "code"), [("income", "1001"), ("fiscal", "1002"),
                                               ("expenditure", "1003")])
def test_bank_interest_is_dr_the_bank_account_cr_interest_earned(account: str, code: str) -> None:
    f = fund()
    f.earn_bank_interest(account=account, amount_fen=123, value_date=date(2020, 3, 21),
                         reference="I1", actor="fin")
    assert postings_of(f) == [("BankInterestEarned", [Posting(code, 123),
                                                      Posting("3001", -123)])]


def test_a_returned_payment_comes_back_from_in_flight_to_the_expenditure_account() -> None:
    f = fund()
    f.return_payment(amount_fen=16800, end_to_end_id="E2E-1", value_date=date(2020, 3, 25),
                     reference="RET1", actor="bank")
    assert postings_of(f) == [("PaymentReturned", [Posting("1003", 16800),
                                                   Posting("1101", -16800)])]


def test_opening_the_fund_moves_no_money() -> None:
    f = Fund.open("test", actor="admin")
    assert postings_of(f) == [("Opened", [])]


# ---- balance and the guarded accounts -------------------------------------------------

def test_every_posting_list_above_sums_to_zero() -> None:
    p = _funded("destitute")
    p.assess_overpayment(500, ["2017-02"], "x", date(2017, 4, 1), actor="a")
    p.recover_overpayment(200, "offset_account", date(2017, 5, 1), actor="fin")
    p.recover_overpayment(300, "family", date(2017, 5, 1), actor="fin")
    p.decease(date(2017, 6, 3), date(2017, 6, 20), actor="op1")
    p.settle_balance(how="inheritance", payee="heir", value_date=date(2017, 7, 1),
                     rules=rules_on(date(2017, 7, 1), inherit_subsidy=False), actor="op1")
    events = [e for e in p.collect_events() if not isinstance(e, Participant.Died)]
    assert len(events) == 4
    for e in events:
        postings = postings_for(e)
        assert postings, type(e).__name__
        assert sum(x.amount_fen for x in postings) == 0


def test_guarded_deltas_net_the_bank_accounts_over_a_set_of_events() -> None:
    f = fund()
    f.receive_treasury_funds(amount_fen=1000, level="central", purpose="basic_pension",
                             value_date=date(2020, 1, 5), reference="T1", actor="fin")
    f.transfer(from_account="income", to_account="fiscal", amount_fen=700,
               value_date=date(2020, 1, 31), reference="S1", actor="fin")
    f.transfer(from_account="fiscal", to_account="expenditure", amount_fen=1700,
               value_date=date(2020, 2, 1), reference="A1", actor="fin")
    events = f.collect_events()
    # fiscal: +1000 +700 -1700 = 0, so it is left out
    assert guarded_deltas(events) == {"1001": -700, "1003": 1700}
    assert guarded_deltas([]) == {}


def test_government_receivables_touch_no_bank_account_until_the_treasury_pays() -> None:
    p = participant("destitute")
    contribute(p, 2016, 20000, amount_fen=10000)
    p.credit_subsidy(year=2016, value_date=date(2016, 6, 30), rules=rules_on(date(2016, 6, 30)),
                     actor="fin")
    # only the participant's own 100.00 yuan reached a bank account
    assert guarded_deltas(p.collect_events()) == {"1001": 10000}
