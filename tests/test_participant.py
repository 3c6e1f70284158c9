"""The scheme's rules for a participant, through the Ledger's commands.

Every refusal names the field and the rule, and stores nothing: no event, no change to the
fund's bank accounts, no new block of the hash chain.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from ledger import resident_id
from ledger.application import Ledger
from ledger.errors import IdempotencyConflict, InvalidInput, LedgerError, Refused
from tests.helpers import contribute, enrol, make_id, refused, stored

PENSION_BORN = date(1959, 6, 15)   # 60 on 15 June 2019: a pension from July 2019




# ---- enrolment ------------------------------------------------------------------------

def test_enrolment_records_an_enrolled_participant_and_masks_the_id(ledger: Ledger) -> None:
    idn = make_id(1)
    out = enrol(ledger, idn)
    assert out["id_number"] == resident_id.mask(idn) != idn
    p = ledger.participant(idn)
    assert (p.status, p.birth_date, p.name, p.identity_group) == (
        "enrolled", date(1970, 5, 17), "王五", "ordinary")
    assert p.balance_fen == 0


def test_enrolment_under_16_is_refused(ledger: Ledger) -> None:
    idn = make_id(2, born=date(2000, 5, 17))
    refused(ledger, Refused, "id_number", "participant is 15; enrolment needs age 16 or over",
            lambda: enrol(ledger, idn, enrol_date=date(2016, 5, 16)))
    enrol(ledger, idn, enrol_date=date(2016, 5, 17))  # the 16th birthday is enough
    assert ledger.participant(idn).status == "enrolled"


def test_a_second_enrolment_of_the_same_resident_id_is_refused(ledger: Ledger) -> None:
    idn = "11010519491231002X"
    enrol(ledger, idn, enrol_date=date(2010, 1, 10))
    err = refused(ledger, Refused, "id_number", "is already enrolled",
                  lambda: enrol(ledger, idn.lower(), enrol_date=date(2011, 1, 10),
                                name="另一个人"))
    assert idn not in str(err)  # the error shows the masked ID only
    assert ledger.participant(idn).name == "王五"


def test_the_same_id_in_full_width_digits_is_not_a_second_participant(ledger: Ledger) -> None:
    enrol(ledger, "11010519491231002X", enrol_date=date(2010, 1, 10))
    before = stored(ledger)
    with pytest.raises(LedgerError):
        enrol(ledger, "１１０１０５１９４９１２３１００２X", enrol_date=date(2010, 1, 10))
    assert stored(ledger) == before


def test_an_invalid_resident_id_is_refused(ledger: Ledger) -> None:
    refused(ledger, InvalidInput, "id_number", "check digit is wrong",
            lambda: enrol(ledger, "110101199003074475"))


def test_enrolment_before_any_rule_version_is_refused(ledger: Ledger) -> None:
    refused(ledger, Refused, "enrol_date", "no rule version is in force on 2009-09-30",
            lambda: enrol(ledger, make_id(3), enrol_date=date(2009, 9, 30)))


@pytest.mark.parametrize(("changes", "field", "rule"), [
    ({"group": "student"}, "identity_group", "must be one of ordinary"),
    ({"name": "  "}, "name", "must be 1 to 100 characters"),
    ({"township": ""}, "township", "must be 1 to 100 characters"),
    ({"village": "村" * 101}, "village", "must be 1 to 100 characters"),
])
def test_enrolment_fields_are_validated(sqlite_ledger: Ledger, changes: dict[str, Any], field: str,
                                        rule: str) -> None:
    ledger = sqlite_ledger  # validation only: the store is irrelevant
    refused(ledger, InvalidInput, field, rule, lambda: enrol(ledger, make_id(4), **changes))


# ---- contributions --------------------------------------------------------------------

def test_a_tier_not_in_the_rules_of_that_year_is_refused(ledger: Ledger) -> None:
    idn = make_id(10)
    enrol(ledger, idn, enrol_date=date(2012, 1, 10))
    # 600 yuan became a tier only in July 2014.
    refused(ledger, Refused, "tier",
            "600.00 is not a tier of rule v1@2009-10-01 (yuan: 100, 200, 300, 400, 500)",
            lambda: contribute(ledger, idn, 2012, 60000))
    out = contribute(ledger, idn, 2015, 60000)
    assert out["rule_version"] == "v2@2014-07-01"


def test_a_contribution_must_equal_the_tier(ledger: Ledger) -> None:
    idn = make_id(11)
    enrol(ledger, idn)
    refused(ledger, InvalidInput, "amount", "must equal the tier (50000 fen)",
            lambda: contribute(ledger, idn, 2016, 50000, amount_fen=49999))


def test_a_contribution_is_for_the_year_of_its_value_date(ledger: Ledger) -> None:
    idn = make_id(12)
    enrol(ledger, idn)
    refused(ledger, InvalidInput, "year", "2016 is not the year of the value date",
            lambda: contribute(ledger, idn, 2016, value_date=date(2017, 1, 5)))
    refused(ledger, InvalidInput, "year", "2018 is after the value date",
            lambda: contribute(ledger, idn, 2018, value_date=date(2017, 1, 5)))


def test_a_contribution_for_a_dead_participant_is_refused(ledger: Ledger) -> None:
    idn = make_id(13)
    enrol(ledger, idn)
    contribute(ledger, idn, 2016)
    ledger.decease(id_number=idn, date_of_death=date(2016, 8, 1), reported_on=date(2016, 8, 9),
                   actor="op1")
    refused(ledger, Refused, "id_number", "participant is deceased; contributions are refused",
            lambda: contribute(ledger, idn, 2017))


def test_a_contribution_for_a_terminated_participant_is_refused(ledger: Ledger) -> None:
    idn = make_id(14)
    enrol(ledger, idn)
    ledger.terminate(id_number=idn, reason_code="transfer_out", effective_date=date(2016, 8, 1),
                     actor="op1")
    refused(ledger, Refused, "id_number", "participant is terminated; contributions are refused",
            lambda: contribute(ledger, idn, 2017))


def test_a_contribution_for_an_unknown_participant_is_not_found(ledger: Ledger) -> None:
    before = stored(ledger)
    with pytest.raises(LedgerError) as e:
        contribute(ledger, make_id(15), 2016)
    assert e.value.field == "id_number"  # type: ignore[attr-defined]
    assert stored(ledger) == before


def test_a_second_contribution_for_the_same_year_is_refused(ledger: Ledger) -> None:
    idn = make_id(16)
    enrol(ledger, idn)
    contribute(ledger, idn, 2016, 50000)
    refused(ledger, Refused, "year", "a contribution for 2016 is already booked",
            lambda: contribute(ledger, idn, 2016, 20000, receipt_no="R-other",
                               value_date=date(2016, 11, 1)))
    assert ledger.participant(idn).sources["contribution"] == 50000


def test_a_back_payment_is_for_an_earlier_year_and_earns_no_subsidy(ledger: Ledger) -> None:
    idn = make_id(17)
    enrol(ledger, idn)
    refused(ledger, InvalidInput, "year", "a back-payment (补缴) is for an earlier year",
            lambda: contribute(ledger, idn, 2016, back_payment=True))
    contribute(ledger, idn, 2012, 20000, back_payment=True, value_date=date(2016, 3, 1))
    p = ledger.participant(idn)
    assert p.contributed_years[2012][2] is True
    assert p.bookings[-1].kind == "back_payment"
    assert p.bookings[-1].value_date == date(2016, 3, 1)
    refused(ledger, Refused, "year", "2012 was a back-payment (补缴), which earns no subsidy",
            lambda: ledger.subsidise(id_number=idn, year=2012, value_date=date(2016, 6, 30),
                                     actor="fin"))


def test_a_back_payment_for_a_year_before_age_16_is_refused(ledger: Ledger) -> None:
    idn = make_id(18, born=date(1999, 1, 1))
    enrol(ledger, idn, enrol_date=date(2017, 1, 10))
    refused(ledger, Refused, "year", "the participant was under 16 in 2014",
            lambda: contribute(ledger, idn, 2014, back_payment=True, value_date=date(2017, 3, 1)))
    contribute(ledger, idn, 2015, back_payment=True, value_date=date(2017, 3, 1))


def test_a_back_payment_gets_no_payment_on_behalf(ledger: Ledger) -> None:
    idn = make_id(19)
    enrol(ledger, idn, group="destitute")
    refused(ledger, InvalidInput, "amount", "must equal the tier (10000 fen)",
            lambda: contribute(ledger, idn, 2014, 10000, amount_fen=0, back_payment=True,
                               value_date=date(2016, 3, 1)))
    out = contribute(ledger, idn, 2014, 10000, back_payment=True, value_date=date(2016, 3, 1))
    assert out["on_behalf_fen"] == 0
    p = ledger.participant(idn)
    assert (p.sources["contribution"], p.sources["on_behalf"]) == (10000, 0)
    assert ledger.fund_positions()["1001"] == 10000


@pytest.mark.parametrize(("group", "tier_fen", "paid_fen", "on_behalf_fen"), [
    ("destitute", 10000, 0, 10000),           # 特困: 100% of the lowest tier
    ("destitute", 50000, 40000, 10000),       # a higher tier: the rest is the participant's
    ("severely_disabled", 10000, 0, 10000),
    ("minimum_living", 10000, 5000, 5000),    # 低保: 50% of the lowest tier
    ("minimum_living", 30000, 25000, 5000),
    ("registered_poor", 20000, 15000, 5000),
    ("ordinary", 10000, 10000, 0),
])
def test_hardship_groups_have_part_of_the_lowest_tier_paid_on_their_behalf(
        ledger: Ledger, group: str, tier_fen: int, paid_fen: int, on_behalf_fen: int) -> None:
    idn = make_id(20)
    enrol(ledger, idn, group=group)
    if on_behalf_fen:
        refused(ledger, InvalidInput, "amount",
                f"less the on-behalf part {on_behalf_fen} fen ({group}) = {paid_fen} fen",
                lambda: contribute(ledger, idn, 2016, tier_fen))
    out = contribute(ledger, idn, 2016, tier_fen, amount_fen=paid_fen)
    assert (out["amount_fen"], out["on_behalf_fen"]) == (paid_fen, on_behalf_fen)
    p = ledger.participant(idn)
    assert p.sources["contribution"] == paid_fen
    assert p.sources["on_behalf"] == on_behalf_fen
    assert p.balance_fen == tier_fen
    # Only the participant's own money reaches the income account.
    assert ledger.fund_positions()["1001"] == paid_fen


def test_the_identity_group_in_force_on_the_value_date_decides_the_on_behalf_part(
        ledger: Ledger) -> None:
    idn = make_id(21)
    enrol(ledger, idn)
    ledger.change_identity_group(id_number=idn, group="destitute",
                                 effective_from=date(2017, 1, 1), actor="op1")
    contribute(ledger, idn, 2016, 10000, value_date=date(2016, 12, 31))
    contribute(ledger, idn, 2017, 10000, amount_fen=0, value_date=date(2017, 1, 1))
    p = ledger.participant(idn)
    assert (p.sources["contribution"], p.sources["on_behalf"]) == (10000, 10000)


def test_a_same_day_correction_of_the_identity_group_wins(ledger: Ledger) -> None:
    idn = make_id(22)
    enrol(ledger, idn)
    ledger.change_identity_group(id_number=idn, group="minimum_living",
                                 effective_from=date(2017, 1, 1), actor="op1")
    ledger.change_identity_group(id_number=idn, group="destitute",
                                 effective_from=date(2017, 1, 1), actor="op1")
    p = ledger.participant(idn)
    assert p.identity_group == "destitute"
    assert p.identity_group_on(date(2017, 6, 1)) == "destitute"


# ---- the government's contribution subsidy --------------------------------------------

@pytest.mark.parametrize(("tier_fen", "province", "city", "county"), [
    (10000, 1000, 1000, 1000),
    (20000, 1200, 1100, 1200),
    (50000, 2000, 2000, 2000),
    (150000, 3000, 3000, 3000),
])
def test_the_subsidy_follows_the_tier_and_keeps_each_funding_level_apart(
        ledger: Ledger, tier_fen: int, province: int, city: int, county: int) -> None:
    idn = make_id(30)
    enrol(ledger, idn)
    contribute(ledger, idn, 2016, tier_fen)
    out = ledger.subsidise(id_number=idn, year=2016, value_date=date(2016, 6, 30), actor="fin")
    assert out["amount_fen"] == province + city + county
    assert out["rule_version"] == "v2@2014-07-01"
    p = ledger.participant(idn)
    assert (p.sources["subsidy_province"], p.sources["subsidy_city"],
            p.sources["subsidy_county"]) == (province, city, county)
    assert p.balance_fen == tier_fen + province + city + county
    # A receivable from government, not money in a bank account yet.
    assert ledger.fund_positions()["1002"] == 0


def test_a_subsidy_is_credited_once_per_year(ledger: Ledger) -> None:
    idn = make_id(31)
    enrol(ledger, idn)
    contribute(ledger, idn, 2016, 20000)
    first = ledger.subsidise(id_number=idn, year=2016, value_date=date(2016, 6, 30), actor="fin")
    before = stored(ledger)
    # The retry of the same command is answered from its receipt ...
    again = ledger.subsidise(id_number=idn, year=2016, value_date=date(2016, 6, 30), actor="fin")
    assert again == {**first, "replayed": True}
    assert stored(ledger) == before
    # ... another date for the same year is a conflicting use of the business key ...
    with pytest.raises(IdempotencyConflict):
        ledger.subsidise(id_number=idn, year=2016, value_date=date(2016, 7, 1), actor="fin")
    # ... and under another key the rule itself refuses it.
    refused(ledger, Refused, "year", "subsidy for 2016 was already credited",
            lambda: ledger.subsidise(id_number=idn, year=2016, value_date=date(2016, 7, 1),
                                     actor="fin", idempotency_key="second-try"))
    assert ledger.subsidise_year(year=2016, value_date=date(2016, 7, 1), actor="fin") == {
        "credited": 0, "skipped": 1, "amount_fen": 0}
    assert ledger.participant(idn).balance_fen == 20000 + 3500


def test_no_subsidy_without_a_contribution_for_that_year(ledger: Ledger) -> None:
    idn = make_id(32)
    enrol(ledger, idn)
    refused(ledger, Refused, "year", "no contribution recorded for 2016",
            lambda: ledger.subsidise(id_number=idn, year=2016, value_date=date(2016, 6, 30),
                                     actor="fin"))


def test_the_yearly_subsidy_run_credits_each_contributor_once(ledger: Ledger) -> None:
    a, b, c, d = (make_id(n) for n in (33, 34, 35, 36))
    for idn in (a, b, c, d):
        enrol(ledger, idn)
    contribute(ledger, a, 2016, 20000)
    contribute(ledger, b, 2016, 50000)
    ledger.subsidise(id_number=b, year=2016, value_date=date(2016, 5, 1), actor="fin")
    contribute(ledger, c, 2016, 20000, back_payment=True, value_date=date(2017, 3, 1))
    out = ledger.subsidise_year(year=2016, value_date=date(2016, 6, 30), actor="fin")
    assert out == {"credited": 1, "skipped": 2, "amount_fen": 3500}
    assert [ledger.participant(x).balance_fen for x in (a, b, c, d)] == [
        23500, 56000, 20000, 0]


# ---- pensions -------------------------------------------------------------------------

def pension_ready(ledger: Ledger, n: int, years: int = 15, *, born: date = PENSION_BORN,
                  tier_fen: int = 10000) -> str:
    """A participant born 1959-06-15 with `years` contribution years: 2010-2018 paid
    each year, the rest back-paid in 2019 for the years before 2010."""
    idn = make_id(n, born=born)
    enrol(ledger, idn, enrol_date=date(2010, 2, 1))
    regular = range(2010, 2010 + min(years, 9))
    for y in regular:
        contribute(ledger, idn, y, tier_fen)
    for y in range(2010 - (years - len(regular)), 2010):
        contribute(ledger, idn, y, tier_fen, back_payment=True, value_date=date(2019, 3, 1),
                   receipt_no=f"B-{n}-{y}")
    assert len(ledger.participant(idn).contributed_years) == years
    return idn


def pensioner(ledger: Ledger, n: int) -> str:
    idn = pension_ready(ledger, n)
    ledger.apply_for_pension(id_number=idn, start_month="2019-07", actor="op1")
    ledger.approve_pension(id_number=idn, actor="approver")
    return idn


def test_a_pension_starts_the_month_after_age_60(ledger: Ledger) -> None:
    idn = pension_ready(ledger, 40)
    refused(ledger, Refused, "start_month", "not before 2019-07",
            lambda: ledger.apply_for_pension(id_number=idn, start_month="2019-06", actor="op1"))
    ledger.apply_for_pension(id_number=idn, start_month="2019-07", actor="op1")
    assert ledger.participant(idn).pension_application == ("2019-07", "op1")


def test_a_pension_needs_15_contribution_years(ledger: Ledger) -> None:
    idn = pension_ready(ledger, 41, years=14)
    refused(ledger, Refused, "participant", "14 contribution years; a pension needs 15",
            lambda: ledger.apply_for_pension(id_number=idn, start_month="2019-07",
                                             actor="op1"))


def test_the_applicant_cannot_approve_their_own_application(ledger: Ledger) -> None:
    idn = pension_ready(ledger, 42)
    ledger.apply_for_pension(id_number=idn, start_month="2019-07", actor="op1")
    refused(ledger, Refused, "actor", "op1 recorded this application and may not approve it",
            lambda: ledger.approve_pension(id_number=idn, actor="op1"))
    assert ledger.participant(idn).status == "enrolled"
    ledger.approve_pension(id_number=idn, actor="approver")
    assert ledger.participant(idn).status == "pensioner"


def test_approval_needs_an_application_and_only_one_may_wait(ledger: Ledger) -> None:
    idn = pension_ready(ledger, 43)
    refused(ledger, Refused, "participant", "no pension application is waiting",
            lambda: ledger.approve_pension(id_number=idn, actor="approver"))
    ledger.apply_for_pension(id_number=idn, start_month="2019-07", actor="op1")
    refused(ledger, Refused, "participant", "a pension application is already waiting",
            lambda: ledger.apply_for_pension(id_number=idn, start_month="2019-08",
                                             actor="op2"))


def test_a_pension_needs_bank_details(ledger: Ledger) -> None:
    idn = make_id(44, born=date(1950, 1, 1))
    enrol(ledger, idn, enrol_date=date(2010, 1, 10), bank_account=None)
    refused(ledger, Refused, "bank", "bank details are needed",
            lambda: ledger.apply_for_pension(id_number=idn, start_month="2010-02",
                                             actor="op1"))


def test_the_account_pension_is_the_balance_at_the_start_divided_by_139(ledger: Ledger) -> None:
    idn = pension_ready(ledger, 45)
    ledger.apply_for_pension(id_number=idn, start_month="2019-07", actor="op1")
    # Booked before July 2019: counts. Booked on 1 July: after the start, does not.
    ledger.credit_collective(id_number=idn, year=2019, amount_fen=13900, payer="村委会",
                             receipt_no="C-45-a", value_date=date(2019, 6, 30), actor="op1")
    ledger.credit_collective(id_number=idn, year=2019, amount_fen=5000, payer="村委会",
                             receipt_no="C-45-b", value_date=date(2019, 7, 1), actor="op1")
    out = ledger.approve_pension(id_number=idn, actor="approver")
    # balance at start: 15 x 100.00 + 139.00 = 1639.00 yuan; 163900 / 139 = 1179.14 -> 1179
    assert out["account_pension_fen"] == 1179
    # basic pension of the 2018 rules: 88 central + 30 province + 10 city + 10 county yuan
    assert out["basic_fen"] == 13800
    assert out["rule_version"] == "v3@2018-01-01"
    p = ledger.participant(idn)
    assert p.status == "pensioner"
    assert p.pension is not None
    assert p.pension.account_balance_fen == 163900
    assert p.pension.contribution_years == 15 and not p.pension.transitional


def test_each_year_beyond_15_adds_to_the_basic_pension(ledger: Ledger) -> None:
    idn = pension_ready(ledger, 46, years=17)
    ledger.apply_for_pension(id_number=idn, start_month="2019-07", actor="op1")
    out = ledger.approve_pension(id_number=idn, actor="approver")
    assert out["basic_fen"] == 13800 + 2 * 200
    assert out["account_pension_fen"] == 1223  # 170000 / 139 = 1223.02


def test_people_already_60_when_the_scheme_began_get_the_basic_pension_without_contributing(
        ledger: Ledger) -> None:
    # Transitional: born on or before 1951-07-01 (a parameter of the rules).
    old = make_id(47, born=date(1951, 7, 1))
    enrol(ledger, old, enrol_date=date(2011, 7, 20))
    ledger.apply_for_pension(id_number=old, start_month="2011-08", actor="op1")
    out = ledger.approve_pension(id_number=old, actor="approver")
    assert (out["basic_fen"], out["account_pension_fen"]) == (10500, 0)
    p = ledger.participant(old)
    assert p.pension is not None and p.pension.transitional
    # One day younger: the transitional rule does not apply.
    young = make_id(48, born=date(1951, 7, 2))
    enrol(ledger, young, enrol_date=date(2011, 7, 20))
    refused(ledger, Refused, "participant", "0 contribution years; a pension needs 15 "
            "(no transitional rule applies)",
            lambda: ledger.apply_for_pension(id_number=young, start_month="2011-08",
                                             actor="op1"))


def test_a_pension_does_not_start_before_the_enrolment(ledger: Ledger) -> None:
    idn = make_id(55, born=date(1940, 3, 3))  # transitional, 70 when the scheme began
    enrol(ledger, idn, enrol_date=date(2012, 1, 10))
    refused(ledger, Refused, "start_month", "2012-02",
            lambda: ledger.apply_for_pension(id_number=idn, start_month="2010-01",
                                             actor="op1"))


def test_a_pensioner_no_longer_contributes(ledger: Ledger) -> None:
    idn = pensioner(ledger, 49)
    refused(ledger, Refused, "id_number", "already draws a pension",
            lambda: contribute(ledger, idn, 2020, 10000))


# ---- suspension -----------------------------------------------------------------------

def test_resumption_pays_the_suspended_months_in_arrears(ledger: Ledger) -> None:
    idn = pensioner(ledger, 50)
    out = ledger.suspend(id_number=idn, reason_code="no_proof_of_life", from_month="2020-03",
                         actor="op1")
    assert out["status"] == "suspended"
    out = ledger.resume(id_number=idn, from_month="2020-06", actor="op1")
    assert out["status"] == "pensioner"
    assert out["result"] == {"arrears_months": ["2020-03", "2020-04", "2020-05"]}
    ledger.suspend(id_number=idn, reason_code="death_check", from_month="2020-11", actor="op1")
    out = ledger.resume(id_number=idn, from_month="2021-02", actor="op1")
    assert out["result"]["arrears_months"] == ["2020-11", "2020-12", "2021-01"]


def test_months_in_prison_are_not_paid_in_arrears(ledger: Ledger) -> None:
    idn = pensioner(ledger, 53)
    ledger.suspend(id_number=idn, reason_code="imprisoned", from_month="2020-11", actor="op1")
    out = ledger.resume(id_number=idn, from_month="2021-02", actor="op1")
    assert out["result"] == {"arrears_months": []}
    p = ledger.participant(idn)
    assert p.status == "pensioner"
    assert p.forfeited_months == {"2020-11", "2020-12", "2021-01"}


def test_suspension_rules(ledger: Ledger) -> None:
    contributor = make_id(51)
    enrol(ledger, contributor)
    refused(ledger, Refused, "participant", "only a pensioner being paid can be suspended",
            lambda: ledger.suspend(id_number=contributor, reason_code="imprisoned",
                                   from_month="2020-03", actor="op1"))
    idn = pensioner(ledger, 52)
    refused(ledger, InvalidInput, "reason_code", "must be one of",
            lambda: ledger.suspend(id_number=idn, reason_code="holiday", from_month="2020-03",
                                   actor="op1"))
    refused(ledger, InvalidInput, "from_month", "is not a month in the form YYYY-MM",
            lambda: ledger.suspend(id_number=idn, reason_code="imprisoned",
                                   from_month="2020-13", actor="op1"))
    refused(ledger, Refused, "participant", "not suspended",
            lambda: ledger.resume(id_number=idn, from_month="2020-06", actor="op1"))
    ledger.suspend(id_number=idn, reason_code="imprisoned", from_month="2020-03", actor="op1")
    refused(ledger, Refused, "from_month", "is before the suspension began (2020-03)",
            lambda: ledger.resume(id_number=idn, from_month="2020-02", actor="op1"))
    out = ledger.resume(id_number=idn, from_month="2020-03", actor="op1")
    assert out["result"]["arrears_months"] == []


def test_a_suspension_does_not_begin_before_the_pension(ledger: Ledger) -> None:
    idn = pensioner(ledger, 54)  # paid from 2019-07
    refused(ledger, Refused, "from_month", "2019-07",
            lambda: ledger.suspend(id_number=idn, reason_code="no_proof_of_life",
                                   from_month="2019-05", actor="op1"))


# ---- death and inheritance ------------------------------------------------------------

def funded(ledger: Ledger, n: int, group: str = "ordinary") -> str:
    """Contribution 2016 at tier 200 (on behalf as the group has it), its subsidy of 35.00
    and a collective subsidy of 50.00: 285.00 yuan in the account."""
    idn = make_id(n)
    enrol(ledger, idn, group=group)
    contribute(ledger, idn, 2016, 20000, amount_fen=10000 if group == "destitute" else 20000)
    ledger.subsidise(id_number=idn, year=2016, value_date=date(2016, 6, 30), actor="fin")
    ledger.credit_collective(id_number=idn, year=2016, amount_fen=5000, payer="东村委会",
                             receipt_no=f"C-{n}", value_date=date(2016, 4, 1), actor="op1")
    assert ledger.participant(idn).balance_fen == 28500
    return idn


def test_on_death_the_whole_balance_is_inherited(ledger: Ledger) -> None:
    idn = funded(ledger, 60)
    refused(ledger, Refused, "how", "inheritance needs a recorded death",
            lambda: ledger.settle_balance(id_number=idn, how="inheritance", payee="王小五",
                                          value_date=date(2017, 4, 1), actor="op1"))
    ledger.decease(id_number=idn, date_of_death=date(2017, 3, 1), reported_on=date(2017, 3, 9),
                   actor="op1")
    out = ledger.settle_balance(id_number=idn, how="inheritance", payee="王小五",
                                value_date=date(2017, 4, 1), actor="op1")
    assert out["result"] == {"amount_fen": 28500}
    p = ledger.participant(idn)
    assert p.closed and p.balance_fen == 0
    assert {b.kind for b in p.bookings if b.amount_fen < 0} == {"inheritance"}
    refused(ledger, Refused, "participant", "the account is already settled",
            lambda: ledger.settle_balance(id_number=idn, how="inheritance", payee="王小五",
                                          value_date=date(2017, 4, 2), actor="op1",
                                          idempotency_key="settle-again"))


def test_where_the_rules_exclude_the_subsidy_it_returns_to_the_pool(ledger: Ledger) -> None:
    idn = funded(ledger, 61, group="destitute")
    in_force = ledger.rules_on(date(2017, 1, 1)).parameters
    assert in_force.inherit_subsidy
    ledger.publish_rules(date(2017, 1, 1), in_force.model_copy(update={"inherit_subsidy": False}),
                         "heirs inherit the participant's own money only", actor="admin")
    ledger.decease(id_number=idn, date_of_death=date(2017, 3, 1), reported_on=date(2017, 3, 9),
                   actor="op1")
    out = ledger.settle_balance(id_number=idn, how="inheritance", payee="王小五",
                                value_date=date(2017, 4, 1), actor="op1")
    # contribution 100.00 + collective 50.00 inherited; on-behalf 100.00 and subsidy 35.00 not
    assert out["result"] == {"amount_fen": 15000}
    p = ledger.participant(idn)
    inherited = {b.source: -b.amount_fen for b in p.bookings if b.kind == "inheritance"}
    pooled = {b.source: -b.amount_fen for b in p.bookings if b.kind == "forfeited_to_pool"}
    assert inherited == {"contribution": 10000, "collective": 5000}
    assert pooled == {"on_behalf": 10000, "subsidy_province": 1200, "subsidy_city": 1100,
                      "subsidy_county": 1200}
    assert p.balance_fen == 0


def test_death_rules(ledger: Ledger) -> None:
    idn = funded(ledger, 62)
    refused(ledger, InvalidInput, "date_of_death", "is after the date it was reported",
            lambda: ledger.decease(id_number=idn, date_of_death=date(2017, 3, 10),
                                   reported_on=date(2017, 3, 9), actor="op1"))
    refused(ledger, InvalidInput, "date_of_death", "is before the birth date",
            lambda: ledger.decease(id_number=idn, date_of_death=date(1960, 1, 1),
                                   reported_on=date(2017, 3, 9), actor="op1"))
    ledger.decease(id_number=idn, date_of_death=date(2017, 3, 1), reported_on=date(2017, 3, 9),
                   actor="op1")
    refused(ledger, Refused, "participant", "death is already recorded",
            lambda: ledger.decease(id_number=idn, date_of_death=date(2017, 3, 1),
                                   reported_on=date(2017, 3, 9), actor="op1"))
    refused(ledger, Refused, "participant", "participant is deceased; no money may be booked",
            lambda: ledger.credit_collective(id_number=idn, year=2017, amount_fen=100,
                                             payer="村委会", receipt_no="C-late",
                                             value_date=date(2017, 4, 1), actor="op1"))


# ---- termination and refund -----------------------------------------------------------

def test_a_refund_follows_termination_and_pays_every_source(ledger: Ledger) -> None:
    idn = funded(ledger, 70)
    refused(ledger, Refused, "how", "a refund needs the participant terminated first",
            lambda: ledger.settle_balance(id_number=idn, how="refund", payee="王五",
                                          value_date=date(2017, 4, 1), actor="op1"))
    refused(ledger, Refused, "reason_code", "record the death first",
            lambda: ledger.terminate(id_number=idn, reason_code="death",
                                     effective_date=date(2017, 2, 1), actor="op1"))
    ledger.terminate(id_number=idn, reason_code="emigration", effective_date=date(2017, 2, 1),
                     actor="op1")
    refused(ledger, Refused, "participant", "already terminated",
            lambda: ledger.terminate(id_number=idn, reason_code="emigration",
                                     effective_date=date(2017, 2, 2), actor="op1"))
    out = ledger.settle_balance(id_number=idn, how="refund", payee="王五",
                                value_date=date(2017, 4, 1), actor="op1")
    assert out["status"] == "terminated"
    assert out["result"] == {"amount_fen": 28500}
    assert ledger.participant(idn).balance_fen == 0


def test_settlement_fields_are_validated(ledger: Ledger) -> None:
    idn = funded(ledger, 71)
    ledger.terminate(id_number=idn, reason_code="employee_scheme",
                     effective_date=date(2017, 2, 1), actor="op1")
    refused(ledger, InvalidInput, "how", "must be refund or inheritance",
            lambda: ledger.settle_balance(id_number=idn, how="gift", payee="王五",
                                          value_date=date(2017, 4, 1), actor="op1"))
    refused(ledger, InvalidInput, "payee", "must name who receives the money",
            lambda: ledger.settle_balance(id_number=idn, how="refund", payee=" ",
                                          value_date=date(2017, 4, 1), actor="op1"))


# ---- overpayment ----------------------------------------------------------------------

def test_pension_paid_after_death_is_offset_then_recovered_from_the_family(
        ledger: Ledger) -> None:
    idn = pensioner(ledger, 80)  # 150000 fen at the start; 138.00 + 10.79 yuan a month
    ledger.decease(id_number=idn, date_of_death=date(2020, 3, 10),
                   reported_on=date(2020, 6, 2), actor="op1")
    overpaid = 2 * (13800 + 1079)  # April and May were paid after the death
    ledger.assess_overpayment(id_number=idn, amount_fen=overpaid, months=["2020-04", "2020-05"],
                              reason="paid after death (冒领)", value_date=date(2020, 6, 5),
                              actor="audit", idempotency_key="op-80")
    assert ledger.participant(idn).overpayment_fen == 29758
    # (The months never paid up to the death drew on the account: test_owed_at_death.py.)
    balance = ledger.participant(idn).balance_fen
    refused(ledger, Refused, "participant", "an overpayment of 29758 fen is outstanding",
            lambda: ledger.settle_balance(id_number=idn, how="inheritance", payee="家属",
                                          value_date=date(2020, 6, 6), actor="op1"))
    refused(ledger, Refused, "amount_fen", "exceeds the outstanding overpayment (29758 fen)",
            lambda: ledger.recover_overpayment(id_number=idn, amount_fen=29759,
                                               channel="family", value_date=date(2020, 6, 6),
                                               actor="fin"))
    refused(ledger, InvalidInput, "channel", "must be offset_account or family",
            lambda: ledger.recover_overpayment(id_number=idn, amount_fen=100, channel="salary",
                                               value_date=date(2020, 6, 6), actor="fin"))
    # First against the remaining account balance ...
    ledger.recover_overpayment(id_number=idn, amount_fen=20000, channel="offset_account",
                               value_date=date(2020, 6, 6), actor="fin",
                               idempotency_key="rec-80-1")
    p = ledger.participant(idn)
    assert (p.overpayment_fen, p.balance_fen) == (9758, balance - 20000)
    # ... then from the family, into the expenditure account.
    expenditure = ledger.fund_positions()["1003"]
    ledger.recover_overpayment(id_number=idn, amount_fen=9758, channel="family",
                               value_date=date(2020, 7, 1), actor="fin",
                               idempotency_key="rec-80-2")
    assert ledger.fund_positions()["1003"] == expenditure + 9758
    assert ledger.participant(idn).overpayment_fen == 0
    out = ledger.settle_balance(id_number=idn, how="inheritance", payee="家属",
                                value_date=date(2020, 7, 2), actor="op1")
    assert out["result"] == {"amount_fen": balance - 20000}


def test_an_offset_cannot_take_more_than_the_account_holds(ledger: Ledger) -> None:
    idn = funded(ledger, 81)
    ledger.assess_overpayment(id_number=idn, amount_fen=50000, months=["2017-01"],
                              reason="double receipt", value_date=date(2017, 2, 1), actor="a")
    refused(ledger, Refused, "amount_fen", "exceeds the individual account balance",
            lambda: ledger.recover_overpayment(id_number=idn, amount_fen=28501,
                                               channel="offset_account",
                                               value_date=date(2017, 2, 2), actor="fin"))
    ledger.recover_overpayment(id_number=idn, amount_fen=28500, channel="offset_account",
                               value_date=date(2017, 2, 2), actor="fin")
    p = ledger.participant(idn)
    assert (p.balance_fen, p.overpayment_fen) == (0, 21500)


def test_an_overpayment_names_real_months(ledger: Ledger) -> None:
    idn = funded(ledger, 82)
    refused(ledger, InvalidInput, "months", "is not a month in the form YYYY-MM",
            lambda: ledger.assess_overpayment(id_number=idn, amount_fen=100, months=["2017-1"],
                                              reason="x", value_date=date(2017, 2, 1),
                                              actor="a"))
