"""What a pensioner is owed for a payout month: pure rules, no storage.

Owed: every month from the start of the pension to the payout month that has not been paid
or forfeited (prison months), so arrears after a resumption and months whose payment the
bank failed are paid with the next run. Nothing is paid while suspended, dead or held for
bad bank details. Each month's basic pension follows the rule version in force that month;
the account part is fixed at approval and drawn from the individual account until it is
empty, then paid by the pooled fund.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import date
from typing import Any
from uuid import UUID

import orjson

from ledger.aggregates.participant import (
    BankAccount,
    Participant,
    basic_pension_components,
    draw_by_source,
    months_between,
    parse_month,
)
from ledger.aggregates.ruleset import RuleSet
from ledger.rules import RuleVersion

MAX_MONTHS_OWED = 600  # a limit on everything: fifty years of arrears


@dataclass(frozen=True)
class PensionerFacts:
    """What the payout run needs to know of one pensioner, kept current on every save."""

    participant_id: str
    version: int
    status: str
    birth_date: date
    start_month: str
    contribution_years: int
    account_pension_fen: int
    sources_fen: dict[str, int]
    # Paid or forfeited in full from the start through paid_through; later months paid or
    # forfeited are listed (few: a failed month paid again later). Kept compact because a
    # province re-reads a million of these every month.
    paid_through: str | None
    paid_after: frozenset[str]
    forfeited_after: frozenset[str]
    payment_hold: str | None
    overpayment_fen: int
    bank: BankAccount | None
    name: str
    id_number: str
    township: str
    village: str


@dataclass(frozen=True)
class Due:
    participant_id: str
    months: tuple[str, ...]
    basic_fen: int
    account_by_source_fen: dict[str, int]
    pooled_account_fen: int
    deduction_fen: int
    amount_fen: int
    rule_versions: tuple[str, ...]

    @property
    def gross_fen(self) -> int:
        return self.basic_fen + sum(self.account_by_source_fen.values()) + self.pooled_account_fen


def facts_of(p: Participant) -> PensionerFacts | None:
    """The payout facts of a participant who has a pension, else None."""
    if p.pension is None:
        return None
    return PensionerFacts(
        participant_id=str(p.id), version=p.version, status=p.status, birth_date=p.birth_date,
        start_month=p.pension.start_month, contribution_years=p.pension.contribution_years,
        account_pension_fen=p.pension.account_pension_fen, sources_fen=dict(p.sources),
        **compact_months(p.pension.start_month, set(p.paid_months), p.forfeited_months),
        payment_hold=p.payment_hold, overpayment_fen=p.overpayment_fen, bank=p.bank,
        name=p.name, id_number=p.id_number, township=p.township, village=p.village)


def next_month(month: str) -> str:
    y, m = parse_month(month, "month")
    return f"{y + (m == 12):04d}-{m % 12 + 1:02d}"


def compact_months(start: str, paid: set[str], forfeited: set[str]) -> dict[str, Any]:
    settled = paid | forfeited
    through = None
    m = start
    while m in settled:
        through = m
        m = next_month(m)
    return {"paid_through": through,
            "paid_after": frozenset(x for x in paid if through is None or x > through),
            "forfeited_after": frozenset(x for x in forfeited if through is None or x > through)}


def months_owed(f: PensionerFacts, period: str) -> list[str]:
    parse_month(period, "period")
    if f.status != "pensioner" or f.payment_hold is not None or period < f.start_month:
        return []
    first = f.start_month if f.paid_through is None else next_month(f.paid_through)
    months = months_between(first, next_month(period))
    assert len(months) <= MAX_MONTHS_OWED, "more months owed than the limit"
    return [m for m in months if m not in f.paid_after and m not in f.forfeited_after]


def owed_at_death(p: Participant, rules_on: Callable[[date], RuleVersion]) -> Due | None:
    """What a dead pensioner was owed and never paid: the months from the start of the
    pension through the month of death (payment stops from the month after), by the same
    rules as the monthly run, as if they were still a pensioner being paid. Months of a
    suspension for imprisonment are forfeited, as a resumption would forfeit them; any
    other suspension (no proof of life, a death check, a bank return) is paid in arrears.
    None when nothing is owed."""
    if p.pension is None or p.date_of_death is None:
        return None
    f = facts_of(p)
    assert f is not None
    period = p.date_of_death.strftime("%Y-%m")
    if p.suspension is not None and p.suspension[0] == "imprisoned":
        period = min(period, previous_month(p.suspension[1]))
    if period < f.start_month:
        return None
    y, m = parse_month(period, "period")
    max_deduction = rules_on(date(y, m, 1)).parameters.overpayment_max_deduction_percent
    alive = replace(f, status="pensioner", payment_hold=None)
    return due_for(alive, period, rules_on, max_deduction)


def previous_month(month: str) -> str:
    y, m = parse_month(month, "month")
    return f"{y - (m == 1):04d}-{(m - 2) % 12 + 1:02d}"


def due_for(f: PensionerFacts, period: str, rules_on: Callable[[date], RuleVersion],
            max_deduction_percent: int) -> Due | None:
    months = months_owed(f, period)
    if not months:
        return None
    basic = 0
    versions: list[str] = []
    for m in months:
        y, mo = parse_month(m, "period")
        rules = rules_on(date(y, mo, 1))
        basic += basic_pension_components(rules.parameters, f.birth_date, m,
                                          f.contribution_years).total_fen()
        if rules.label not in versions:
            versions.append(rules.label)
    return _due(f, months, basic, versions, max_deduction_percent)


def _due(f: PensionerFacts, months: Sequence[str], basic: int, versions: Sequence[str],
         max_deduction_percent: int) -> Due:
    account_due = f.account_pension_fen * len(months)
    balance = sum(f.sources_fen.values())
    drawn = min(account_due, balance)
    by_source = draw_by_source(f.sources_fen, drawn)
    pooled = account_due - drawn
    gross = basic + account_due
    deduction = min(f.overpayment_fen, gross * max_deduction_percent // 100)
    amount = gross - deduction
    assert amount > 0 or gross == 0
    return Due(participant_id=f.participant_id, months=tuple(months), basic_fen=basic,
               account_by_source_fen=by_source, pooled_account_fen=pooled,
               deduction_fen=deduction, amount_fen=amount, rule_versions=tuple(versions))


class DueCalculator:
    """due_for(f, period, ...) for every pensioner of one run, with the same answers
    (a property test holds the two together), remembering what a million pensioners
    repeat: the months from a first month to the period, and each month's basic pension
    by birth date and contribution years (rule version and age extra depend on nothing
    else)."""

    MAX_REMEMBERED = 1_000_000  # entries per table; forgotten all at once past it

    def __init__(self, period: str, rules_on: Callable[[date], RuleVersion],
                 max_deduction_percent: int) -> None:
        parse_month(period, "period")
        self.period = period
        self.stop = next_month(period)
        self.rules_on = rules_on
        self.max_deduction_percent = max_deduction_percent
        self._spans: dict[tuple[str, str], tuple[str, ...]] = {}
        self._basic: dict[tuple[str, date, int], tuple[int, str]] = {}

    @classmethod
    def under(cls, ruleset: RuleSet, period: str) -> DueCalculator:
        """The run's calculation for `period` under `ruleset`: each month's rules those in
        force on its first day (remembered), the deduction limit the payout month's."""
        seen: dict[date, RuleVersion] = {}

        def rules_on(on: date) -> RuleVersion:
            found = seen.get(on)
            if found is None:
                found = seen[on] = ruleset.in_force(on, "period")
            return found

        y, m = parse_month(period, "period")
        return cls(period, rules_on,
                   rules_on(date(y, m, 1)).parameters.overpayment_max_deduction_percent)

    def __call__(self, f: PensionerFacts) -> Due | None:
        if f.status != "pensioner" or f.payment_hold is not None or self.period < f.start_month:
            return None
        span = self._span(f.start_month, f.paid_through)
        months: Sequence[str] = span
        if f.paid_after or f.forfeited_after:
            months = [m for m in span if m not in f.paid_after and m not in f.forfeited_after]
        if not months:
            return None
        basic = 0
        versions: list[str] = []
        for m in months:
            key = (m, f.birth_date, f.contribution_years)
            known = self._basic.get(key)
            if known is None:
                if len(self._basic) >= self.MAX_REMEMBERED:
                    self._basic.clear()
                y, mo = parse_month(m, "period")
                rules = self.rules_on(date(y, mo, 1))
                known = self._basic[key] = (basic_pension_components(
                    rules.parameters, f.birth_date, m, f.contribution_years).total_fen(),
                    rules.label)
            basic += known[0]
            if known[1] not in versions:
                versions.append(known[1])
        return _due(f, months, basic, versions, self.max_deduction_percent)

    def _span(self, start_month: str, paid_through: str | None) -> tuple[str, ...]:
        """Every month from the first not settled through the period (months_owed's
        range before the exceptions are taken out)."""
        key = ("start", start_month) if paid_through is None else ("through", paid_through)
        found = self._spans.get(key)
        if found is None:
            first = start_month if paid_through is None else next_month(paid_through)
            found = tuple(months_between(first, self.stop))
            assert len(found) <= MAX_MONTHS_OWED, "more months owed than the limit"
            if len(self._spans) >= self.MAX_REMEMBERED:
                self._spans.clear()
            self._spans[key] = found
        return found


# ---- the pensioner register's row: facts (no personal data) and payee (personal) ------

def facts_json(f: PensionerFacts) -> str:
    return orjson.dumps({
        "version": f.version, "status": f.status, "birth_date": f.birth_date.isoformat(),
        "start_month": f.start_month, "contribution_years": f.contribution_years,
        "account_pension_fen": f.account_pension_fen, "sources_fen": f.sources_fen,
        "paid_through": f.paid_through, "paid_after": sorted(f.paid_after),
        "forfeited_after": sorted(f.forfeited_after),
        "payment_hold": f.payment_hold, "overpayment_fen": f.overpayment_fen,
        "township": f.township, "village": f.village,
    }).decode()


def payee_json(f: PensionerFacts) -> bytes:
    return orjson.dumps({"name": f.name, "id_number": f.id_number,
                         "bank": f.bank.model_dump() if f.bank else None})


_FACT_FIELDS = tuple(f.name for f in fields(PensionerFacts))


def load_facts(participant_id: UUID | str, facts: str, payee: bytes) -> PensionerFacts:
    d: dict[str, Any] = orjson.loads(facts)
    who: dict[str, Any] = orjson.loads(payee)
    values = {
        "participant_id": str(participant_id), "version": d["version"], "status": d["status"],
        "birth_date": date.fromisoformat(d["birth_date"]), "start_month": d["start_month"],
        "contribution_years": d["contribution_years"],
        "account_pension_fen": d["account_pension_fen"], "sources_fen": d["sources_fen"],
        "paid_through": d["paid_through"], "paid_after": frozenset(d["paid_after"]),
        "forfeited_after": frozenset(d["forfeited_after"]),
        "payment_hold": d["payment_hold"], "overpayment_fen": d["overpayment_fen"],
        "bank": BankAccount.model_validate(who["bank"]) if who["bank"] else None,
        "name": who["name"], "id_number": who["id_number"], "township": d["township"],
        "village": d["village"]}
    # The frozen dataclass's __init__ sets its 20 fields one object.__setattr__ at a time:
    # a third of reading a million pensioners. The values are the fields, so set them at
    # once (the instance stays frozen).
    f = object.__new__(PensionerFacts)
    f.__dict__.update(values)
    assert len(values) == len(_FACT_FIELDS)
    return f
