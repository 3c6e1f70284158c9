"""Shared by the projection tests: what the views answer, what replaying the events and
the aggregates answers instead, and a scenario that produces every kind of event."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any
from uuid import UUID

from ledger.aggregates.participant import Participant
from ledger.application import Ledger
from ledger.postings import postings_for
from ledger.projections import Views
from ledger.statement import statement_of
from tests.helpers import bank, contribute, enrol, make_id

AS_OF_DATES: list[date | None] = [None, date(2010, 12, 31), date(2016, 3, 1),
                                  date(2016, 6, 30), date(2016, 12, 31), date(2017, 6, 30)]
REPORT_YEARS = [2010, 2016, 2017, 2020]
COUNTY = "(county)"


def nonzero(accounts: dict[str, int]) -> dict[str, int]:
    return {a: v for a, v in sorted(accounts.items()) if v}


def participant_ids(ledger: Ledger) -> list[UUID]:
    return ledger.queries.all_participant_ids()


# ---- what the views answer ---------------------------------------------------------------

def snapshot(ledger: Ledger) -> dict[str, Any]:
    """Every answer of the views at every test date, positions left out."""
    views = Views(ledger)
    out: dict[str, Any] = {}
    for on in AS_OF_DATES:
        tag = on.isoformat() if on else "now"
        out[f"balances {tag}"] = nonzero(views.balances(on)["accounts"])
        out[f"townships {tag}"] = {t: nonzero(a) for t, a in
                                   views.balances(on, by="township")["townships"].items()
                                   if nonzero(a)}
        fund = views.fund_balances(on)
        fund.pop("position")
        out[f"fund {tag}"] = fund
        trial = views.trial_balance(on)
        assert trial["net_fen"] == 0 and trial["total_debit_fen"] == trial["total_credit_fen"]
        trial.pop("position")
        out[f"trial {tag}"] = trial
        for pid in participant_ids(ledger):
            out[f"statement {pid} {tag}"] = views.statement(pid, on)
    for year in REPORT_YEARS:
        report = views.county_report(year)
        report.pop("position")
        out[f"county {year}"] = report
    out["roster"] = views.roster()
    return out


# ---- what replaying answers --------------------------------------------------------------

def replay_postings(ledger: Ledger) -> list[tuple[date, str, str, int]]:
    """(value_date, account, township, amount) of every posting, from the raw log."""
    out: list[tuple[date, str, str, int]] = []
    townships: dict[UUID, str] = {}
    start = 0
    while True:
        page = ledger.recorder.select_notifications(start, 500, inclusive_of_start=False)
        for n in page:
            event: Any = ledger.mapper.to_domain_event(n)
            if isinstance(event, Participant.Enrolled):
                townships[event.originator_id] = event.township
            for p in postings_for(event):
                out.append((event.value_date, p.account,
                            townships.get(event.originator_id, COUNTY), p.amount_fen))
        if len(page) < 500:
            return out
        start = page[-1].id


def replay_balances(postings: list[tuple[date, str, str, int]], on: date | None,
                    by_township: bool = False) -> dict[str, Any]:
    totals: dict[Any, int] = {}
    for value_date, account, township, amount in postings:
        if on is None or value_date <= on:
            k = (township, account) if by_township else account
            totals[k] = totals.get(k, 0) + amount
    if not by_township:
        return nonzero(totals)
    grouped: dict[str, dict[str, int]] = {}
    for (township, account), amount in totals.items():
        grouped.setdefault(township, {})[account] = amount
    return {t: nonzero(a) for t, a in sorted(grouped.items()) if nonzero(a)}


def replay_paid(ledger: Ledger, people: list[Participant], year: int
                ) -> dict[tuple[str, str], tuple[int, int]]:
    """Pensions paid less reversed, in December and in the whole of `year`, by place."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for p in people:
        for e in ledger.events.get(p.id):
            if isinstance(e, Participant.PensionPaid | Participant.PensionPaymentReversed):
                if e.value_date.year != year:
                    continue
                amount = e.amount_fen if isinstance(e, Participant.PensionPaid) else -e.amount_fen
                month, whole = out.get((p.township, p.village), (0, 0))
                out[(p.township, p.village)] = (month + amount * (e.value_date.month == 12),
                                                whole + amount)
    return out


def replay_county(people: list[Participant], year: int) -> dict[tuple[str, str], tuple[int, ...]]:
    on = date(year, 12, 31)
    out: dict[tuple[str, str], tuple[int, ...]] = {}
    for p in people:
        ends = [d for d in (p.date_of_death, p.termination[1] if p.termination else None) if d]
        alive = not ends or min(ends) > on
        pension_from = (date.fromisoformat(p.pension.start_month + "-01")
                        if p.pension is not None else None)
        enrolled = p.enrol_date <= on and alive and (pension_from is None or pension_from > on)
        pensioner = pension_from is not None and pension_from <= on and alive
        contributing = enrolled and year in p.contributed_years
        before = out.get((p.township, p.village), (0, 0, 0))
        out[(p.township, p.village)] = (before[0] + enrolled, before[1] + contributing,
                                        before[2] + pensioner)
    return out


def check_against_replay(ledger: Ledger, answers: dict[str, Any]) -> None:
    """The views' answers equal replaying the events and the aggregates."""
    postings = replay_postings(ledger)
    people: list[Participant] = [ledger.repository.get(pid) for pid in participant_ids(ledger)]
    for on in AS_OF_DATES:
        tag = on.isoformat() if on else "now"
        balances = answers[f"balances {tag}"]
        assert balances == replay_balances(postings, on), tag
        assert answers[f"townships {tag}"] == replay_balances(postings, on, True), tag
        # The individual accounts of the aggregates add up to the sub-ledger accounts.
        for source in ("contribution", "subsidy_province", "on_behalf", "interest"):
            held = sum(p.balance_on(on or date.max)[source] for p in people)
            assert -balances.get(f"2001.{source}", 0) == held, (tag, source)
        for p in people:
            assert answers[f"statement {p.id} {tag}"] == statement_of(p, on), (tag, p.id)
    # The guarded bank balances kept by the command path agree with the view.
    fund = answers["fund now"]
    positions = ledger.fund_positions()
    assert (fund["income_fen"], fund["fiscal_fen"], fund["fixed_deposits_fen"],
            fund["expenditure_fen"], fund["in_flight_fen"]) == (
        positions["1001"], positions["1002"], positions["1004"], positions["1003"],
        positions["1101"])
    for year in REPORT_YEARS:
        report = answers[f"county {year}"]
        got = {(t["township"], v["village"]): (v["enrolled"], v["contributing"], v["pensioners"])
               for t in report["townships"] for v in t["villages"]}
        assert got == replay_county(people, year), year
        paid = {(t["township"], v["village"]): (v["paid_in_month_fen"], v["paid_in_year_fen"])
                for t in report["townships"] for v in t["villages"]}
        expected = replay_paid(ledger, people, year)
        assert {k: v for k, v in paid.items() if v != (0, 0)} == expected, year
    expected_roster = sorted(
        (str(p.id), p.status, p.pension.start_month,
         p.pension.basic.total_fen() + p.pension.account_pension_fen,
         p.bank.account_number[-4:] if p.bank else None, p.payment_hold,
         max(p.paid_months) if p.paid_months else None)
        for p in people if p.pension is not None)
    got_roster = sorted((r["participant_id"], r["status"], r["start_month"], r["monthly_fen"],
                         r["bank_last4"], r["payment_hold"], r["last_paid_month"])
                        for r in answers["roster"])
    assert got_roster == expected_roster


# ---- a scenario with every kind of event ---------------------------------------------------

A, B, C, D, E = (make_id(1, date(1970, 5, 17)), make_id(2, date(1975, 1, 1)),
                 make_id(3, date(1950, 3, 3)), make_id(4, date(1949, 8, 8)),
                 make_id(5, date(1980, 2, 2)))


def scenario(ledger: Ledger, after: Callable[[], object] = lambda: None) -> None:
    """Calls after() between commands, so a test can project incrementally."""
    fin, op, boss = "fin1", "op1", "boss1"
    steps: list[Callable[[], Any]] = [
        lambda: enrol(ledger, D, enrol_date=date(2010, 1, 10), township="南镇", village="北村"),
        lambda: contribute(ledger, D, 2010, 10000),
        lambda: enrol(ledger, A),
        lambda: enrol(ledger, B, group="minimum_living", township="南镇", village="西村"),
        lambda: enrol(ledger, C, enrol_date=date(2010, 1, 10), township="南镇", village="北村"),
        lambda: enrol(ledger, E, village="西村"),
        lambda: ledger.receive_treasury_funds(amount_fen=1_000_000, level="central",
                                              purpose="basic_pension",
                                              value_date=date(2016, 1, 5), reference="T1",
                                              actor=fin),
        lambda: ledger.receive_treasury_funds(amount_fen=50_000, level="province",
                                              purpose="contribution_subsidy",
                                              value_date=date(2016, 6, 30), reference="T2",
                                              actor=fin),
        lambda: contribute(ledger, A, 2016, 50000),
        lambda: contribute(ledger, B, 2016, 20000, 15000),
        lambda: contribute(ledger, E, 2016, 10000),
        lambda: ledger.subsidise(id_number=A, year=2016, value_date=date(2016, 6, 30), actor=op),
        lambda: ledger.subsidise(id_number=B, year=2016, value_date=date(2016, 6, 30), actor=op),
        lambda: ledger.sweep(amount_fen=60000, value_date=date(2016, 3, 31), reference="S1",
                             actor=fin),
        lambda: ledger.appropriate(amount_fen=200_000, value_date=date(2016, 4, 1),
                                   reference="P1", actor=fin),
        lambda: ledger.earn_bank_interest(account="income", amount_fen=123,
                                          value_date=date(2016, 6, 30), reference="I1",
                                          actor=fin),
        lambda: ledger.apply_for_pension(id_number=C, start_month="2016-01", actor=op),
        lambda: ledger.approve_pension(id_number=C, actor=boss),
        lambda: ledger.apply_for_pension(id_number=D, start_month="2016-01", actor=op),
        lambda: ledger.approve_pension(id_number=D, actor=boss),
        lambda: ledger.suspend(id_number=C, reason_code="no_proof_of_life", from_month="2016-06",
                               actor=op),
        lambda: ledger.resume(id_number=C, from_month="2016-09", actor=op),
        lambda: ledger.decease(id_number=D, date_of_death=date(2016, 7, 15),
                               reported_on=date(2016, 9, 1), actor=op),
        lambda: ledger.assess_overpayment(id_number=D, amount_fen=20000,
                                          months=["2016-08", "2016-09"], reason="paid after death",
                                          value_date=date(2016, 9, 2), actor=op),
        lambda: ledger.recover_overpayment(id_number=D, amount_fen=5000, channel="offset_account",
                                           value_date=date(2016, 9, 3), actor=op),
        lambda: ledger.recover_overpayment(id_number=D, amount_fen=15000, channel="family",
                                           value_date=date(2016, 10, 3), actor=op),
        lambda: ledger.credit_interest(year=2016, today=date(2017, 1, 5), actor=fin),
        lambda: ledger.settle_balance(id_number=D, how="inheritance", payee="heir",
                                      value_date=date(2017, 2, 1), actor=op),
        lambda: contribute(ledger, A, 2017, 50000),
        lambda: ledger.credit_collective(id_number=A, year=2017, amount_fen=10000, payer="东村",
                                         receipt_no="C-A-2017", value_date=date(2017, 4, 1),
                                         actor=op),
        lambda: ledger.terminate(id_number=E, reason_code="emigration",
                                 effective_date=date(2017, 6, 1), actor=op),
        lambda: ledger.settle_balance(id_number=E, how="refund", payee="E",
                                      value_date=date(2017, 6, 2), actor=op),
        lambda: ledger.change_identity_group(id_number=A, group="registered_poor",
                                             effective_from=date(2016, 7, 1), actor=op),
        lambda: ledger.change_bank_details(id_number=C, bank=bank(33), actor=op),
    ]
    for step in steps:
        step()
        after()
