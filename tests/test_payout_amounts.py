"""What the monthly run pays each pensioner: the basic pension of the rule version in force
each month, the account pension drawn from the individual account by source and from the
pool once the account is empty, arrears after a resumption, nothing while suspended, dead
or held, and overpayments recovered by deduction. Each line names its rule versions."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from ledger import disbursement
from ledger.aggregates.payout_batch import BatchLine, PayoutBatch
from ledger.application import Ledger
from ledger.postings import EXPENDITURE, FISCAL, IN_FLIGHT
from payout_engine import run
from tests.test_payout_support import (
    APPROVER,
    FINANCE,
    OPERATOR,
    contributor,
    draft,
    first_day,
    net_paid_months,
    pay,
    pension_events,
    pid,
    transitional,
    treasury,
)

# The sample county's monthly basic pension, in fen: central + province 3000 + city 1000
# + county 1000, + 10 yuan from age 70 and 20 from age 80 (no long-contribution extra for
# transitional pensioners, who contributed no years).
BASIC_2020 = 9300 + 5000
BASIC_2024 = 12300 + 5000
AGE_70 = 1000


def line_of(batch: PayoutBatch, idn: str) -> BatchLine:
    lines = [line for line in batch.lines.values() if line.participant_id == pid(idn)]
    assert len(lines) == 1, f"{idn} has {len(lines)} lines"
    return lines[0]


def test_arrears_across_a_rule_change_pay_each_month_by_its_own_rules(
        ledger: Ledger, tmp_path: Path) -> None:
    treasury(ledger)
    a = transitional(ledger, 1, start="2023-10")      # 73 years old: the age-70 extra
    pay(ledger, "2023-10", tmp_path)
    ledger.suspend(id_number=a, reason_code="no_proof_of_life", from_month="2023-11",
                   actor=OPERATOR)
    ledger.resume(id_number=a, from_month="2024-02", actor=OPERATOR)

    batch = draft(ledger, "2024-02")
    line = line_of(batch, a)
    assert line.months == ["2023-11", "2023-12", "2024-01", "2024-02"]
    assert line.basic_fen == 2 * (BASIC_2020 + AGE_70) + 2 * (BASIC_2024 + AGE_70)
    assert line.rule_versions == ["v4@2020-01-01", "v5@2024-01-01"]
    assert line.amount_fen == line.basic_fen

    # Funding books exactly the drafted line, naming the same rule versions.
    before = ledger.fund_positions()
    run.approve(ledger, batch.id, batch.manifest_sha256, APPROVER)
    run.fund(ledger, batch.id, value_date=date(2024, 2, 10), actor=FINANCE)
    after = ledger.fund_positions()
    assert before[FISCAL] - after[FISCAL] == batch.total_fen
    assert after[IN_FLIGHT] - before[IN_FLIGHT] == batch.total_fen
    assert after[EXPENDITURE] == before[EXPENDITURE]
    paid = pension_events(ledger, a)[-1]
    assert paid.months == line.months
    assert paid.rule_version == "v4@2020-01-01;v5@2024-01-01"
    assert net_paid_months(ledger, a) == ["2023-10", "2023-11", "2023-12", "2024-01",
                                          "2024-02"]


def test_the_account_part_is_drawn_from_each_source_in_proportion(
        ledger: Ledger, tmp_path: Path) -> None:
    treasury(ledger)
    idn = contributor(ledger, 2, start="2020-04")
    p = ledger.participant(idn)
    # The pension was approved on 750,000 fen of contributions: 5,396 fen a month.
    assert p.pension is not None and p.pension.account_pension_fen == 5396
    for year in range(2010, 2020):  # subsidies credited late still count once paid out
        ledger.subsidise(id_number=idn, year=year, value_date=date(2020, 3, 1), actor=OPERATOR)
    sources = dict(ledger.participant(idn).sources)
    balance = sum(sources.values())
    assert sources["contribution"] == 750_000 and balance > 750_000

    batch = draft(ledger, "2020-04")
    line = line_of(batch, idn)
    drawn = line.account_by_source_fen
    assert sum(drawn.values()) == 5396 and line.pooled_account_fen == 0
    assert set(drawn) == {s for s, a in sources.items() if a}
    for source, amount in drawn.items():  # each source gives its share, to the fen
        assert abs(amount * balance - 5396 * sources[source]) < balance
    assert line.amount_fen == 14300 + 5396
    run.approve(ledger, batch.id, batch.manifest_sha256, APPROVER)
    run.fund(ledger, batch.id, value_date=date(2020, 4, 10), actor=FINANCE)
    after = ledger.participant(idn).sources
    assert {s: sources[s] - after[s] for s in sources if sources[s] != after[s]} == drawn


def test_once_the_account_is_empty_the_pool_pays_the_account_part(
        ledger: Ledger, tmp_path: Path) -> None:
    treasury(ledger)
    idn = contributor(ledger, 3, start="2020-04", tier_fen=10000)
    pension = ledger.participant(idn).pension
    assert pension is not None
    monthly = pension.account_pension_fen
    assert monthly == 1079  # 150,000 fen / 139
    # An overpayment offset against the account leaves 2,000 fen in it.
    ledger.assess_overpayment(id_number=idn, amount_fen=148_000, months=["2020-01"],
                              reason="double receipt", value_date=date(2020, 3, 1),
                              actor=OPERATOR)
    ledger.recover_overpayment(id_number=idn, amount_fen=148_000, channel="offset_account",
                               value_date=date(2020, 3, 2), actor=OPERATOR)
    assert ledger.participant(idn).balance_fen == 2000

    batch = pay(ledger, "2020-05", tmp_path)        # April and May: 2,158 fen owed
    line = line_of(batch, idn)
    assert line.account_by_source_fen == {"contribution": 2000}
    assert line.pooled_account_fen == 2 * monthly - 2000
    assert line.amount_fen == 2 * (14300 + monthly)
    assert ledger.participant(idn).balance_fen == 0

    june = draft(ledger, "2020-06")
    line = line_of(june, idn)
    assert line.account_by_source_fen == {} and line.pooled_account_fen == monthly
    assert line.amount_fen == 14300 + monthly  # the pensioner sees no difference


def test_suspended_months_are_paid_in_arrears_and_prison_months_never(
        ledger: Ledger, tmp_path: Path) -> None:
    treasury(ledger)
    unverified = transitional(ledger, 4)
    prisoner = transitional(ledger, 5)
    pay(ledger, "2020-04", tmp_path)
    ledger.suspend(id_number=unverified, reason_code="no_proof_of_life", from_month="2020-05",
                   actor=OPERATOR)
    ledger.suspend(id_number=prisoner, reason_code="imprisoned", from_month="2020-05",
                   actor=OPERATOR)
    ledger.resume(id_number=unverified, from_month="2020-08", actor=OPERATOR)
    ledger.resume(id_number=prisoner, from_month="2020-08", actor=OPERATOR)
    batch = draft(ledger, "2020-08")
    assert line_of(batch, unverified).months == [
        "2020-05", "2020-06", "2020-07", "2020-08"]
    assert line_of(batch, unverified).amount_fen == 4 * (BASIC_2020 + AGE_70)
    assert line_of(batch, prisoner).months == ["2020-08"]
    assert line_of(batch, prisoner).amount_fen == BASIC_2020 + AGE_70


def test_nobody_suspended_dead_or_held_is_paid(ledger: Ledger, tmp_path: Path) -> None:
    treasury(ledger)
    suspended, dead, held, paid = (transitional(ledger, n) for n in (6, 7, 8, 9))
    pay(ledger, "2020-04", tmp_path, failures={held: "AC04"})
    ledger.suspend(id_number=suspended, reason_code="no_proof_of_life", from_month="2020-05",
                   actor=OPERATOR)
    ledger.decease(id_number=dead, date_of_death=date(2020, 4, 20),
                   reported_on=date(2020, 4, 25), actor=OPERATOR)
    batch = draft(ledger, "2020-05")
    assert [line.participant_id for line in batch.lines.values()] == [pid(paid)]
    reasons = {r["reason"]: (r["headcount"], r["amount_fen"])
               for r in batch.comparison["reasons"]}
    assert reasons == {"suspended": (-1, -(BASIC_2020 + AGE_70)),
                       "died": (-1, -(BASIC_2020 + AGE_70)),
                       "held": (-1, -(BASIC_2020 + AGE_70))}


def test_an_overpayment_is_recovered_by_deductions_of_at_most_half(
        ledger: Ledger, tmp_path: Path) -> None:
    treasury(ledger)
    idn = transitional(ledger, 10)
    monthly = BASIC_2020 + AGE_70                     # 15,300 fen
    pay(ledger, "2020-04", tmp_path)
    ledger.assess_overpayment(id_number=idn, amount_fen=20_000, months=["2019-12"],
                              reason="paid after a death was misreported",
                              value_date=date(2020, 4, 20), actor=OPERATOR)
    deductions = []
    reasons = []
    for month in ("2020-05", "2020-06", "2020-07", "2020-08"):
        batch = pay(ledger, month, tmp_path)
        line = line_of(batch, idn)
        deductions.append(line.deduction_fen)
        assert line.amount_fen == monthly - line.deduction_fen
        reasons.append([r["reason"] for r in batch.comparison["reasons"]])
    assert deductions == [monthly // 2, monthly // 2, 20_000 - monthly // 2 * 2, 0]
    assert reasons == [["deduction_started"], [], ["deduction_changed"], ["deduction_ended"]]
    assert ledger.participant(idn).overpayment_fen == 0


def test_each_line_and_each_payment_names_its_rule_version(
        ledger: Ledger, tmp_path: Path) -> None:
    treasury(ledger)
    people = [transitional(ledger, 11), contributor(ledger, 12)]
    batch = pay(ledger, "2020-04", tmp_path)
    for line in batch.lines.values():
        assert line.rule_versions == ["v4@2020-01-01"]
    for idn in people:
        assert [e.rule_version for e in pension_events(ledger, idn)] == ["v4@2020-01-01"]
    assert disbursement.get_batch(ledger, batch.id).state == "closed"
    assert first_day("2020-04") == date(2020, 4, 1)


def test_the_comparison_puts_every_change_down_to_a_reason(
        ledger: Ledger, tmp_path: Path) -> None:
    treasury(ledger)
    steady = transitional(ledger, 13, start="2023-11")                 # 73: age-70 extra
    turning_80 = transitional(ledger, 14, born=date(1944, 1, 10), start="2023-11")
    emptied = contributor(ledger, 15, start="2023-11", tier_fen=10000)
    # The account holds exactly one month of its 1,079 fen pension.
    ledger.assess_overpayment(id_number=emptied, amount_fen=148_921, months=["2023-01"],
                              reason="double receipt", value_date=date(2023, 10, 1),
                              actor=OPERATOR)
    ledger.recover_overpayment(id_number=emptied, amount_fen=148_921,
                               channel="offset_account", value_date=date(2023, 10, 2),
                               actor=OPERATOR)
    pay(ledger, "2023-11", tmp_path)
    december = pay(ledger, "2023-12", tmp_path)
    assert {r["reason"] for r in december.comparison["reasons"]} == {"account_exhausted"}
    assert line_of(december, emptied).pooled_account_fen == 1079

    newcomer = transitional(ledger, 16, start="2024-01")
    january = pay(ledger, "2024-01", tmp_path)
    reasons = {r["reason"]: r for r in january.comparison["reasons"]}
    assert set(reasons) == {"rule_change", "new_pensioner"}
    assert reasons["rule_change"]["payments"] == 3
    assert reasons["rule_change"]["amount_fen"] == 3 * (BASIC_2024 - BASIC_2020)
    assert reasons["new_pensioner"]["participant_ids"] == [str(pid(newcomer))]
    assert january.comparison["headcount"] == {"previous": 3, "current": 4, "change": 1}

    february = pay(ledger, "2024-02", tmp_path)
    assert [(r["reason"], r["amount_fen"], r["participant_ids"])
            for r in february.comparison["reasons"]] == [
        ("age_extra", 2000 - AGE_70, [str(pid(turning_80))])]
    assert february.comparison["amount"]["change_fen"] == 2000 - AGE_70
    assert line_of(february, steady).amount_fen == BASIC_2024 + AGE_70
