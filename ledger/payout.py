"""What a pensioner is owed for a payout month: pure rules, no storage.

Owed: every month from the start of the pension to the payout month that has not been paid
or forfeited (prison months), so arrears after a resumption and months whose payment the
bank failed are paid with the next run. Nothing is paid while suspended, dead or held for
bad bank details. Each month's basic pension follows the rule version in force that month;
the account part is fixed at approval and drawn from the individual account until it is
empty, then paid by the pooled fund.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import date
from typing import Any
from uuid import UUID

import orjson

from ledger import jsonbytes
from ledger.aggregates.participant import (
    SOURCES,
    BankAccount,
    Participant,
    add_basic_paid,
    basic_by_month_of,
    basic_pension_components,
    draw_by_source,
    months_between,
    parse_month,
)
from ledger.aggregates.ruleset import RuleSet
from ledger.rules import RuleVersion

MAX_MONTHS_OWED = 600  # a limit on everything: fifty years of arrears
MAX_LOWERED_IDS = 20  # pensioners named when a run finds months paid above the rules


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
    # The basic pension paid by month, as runs of months paid the same ((first, last,
    # fen), in order; a raise or a birthday starts a new run), and the rule-set version as
    # of which every month paid is paid in full (0: check them all).
    basic_paid: list[list[Any]] = field(default_factory=list)  # [[first, last, fen], ...]
    rated_version: int = 0


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
    # The basic pension by owed month when more than one is owed (else {}); top-ups of
    # months paid before, by month (in basic_fen); the rule-set version as of which every
    # month paid will be paid in full once this is.
    basic_by_month: dict[str, int] = field(default_factory=dict)
    rerated_fen: dict[str, int] = field(default_factory=dict)
    rated_version: int = 0

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
        name=p.name, id_number=p.id_number, township=p.township, village=p.village,
        basic_paid=month_runs(p.basic_paid), rated_version=p.rated_version)


def month_runs(by_month: dict[str, int]) -> list[list[Any]]:
    """Months and amounts as runs of consecutive months with the same amount:
    [[first, last, fen], ...] (lists, as the register's JSON reads back)."""
    runs: list[list[Any]] = []
    for m in sorted(by_month):
        extend_runs(runs, m, by_month[m])
    return runs


def extend_runs(runs: list[list[Any]], month: str, fen: int) -> None:
    """Add a month after every month in runs: the last run goes on if it ends the month
    before with the same amount, else a run starts."""
    assert not runs or runs[-1][1] < month, (runs[-1], month)
    if runs and runs[-1][2] == fen and next_month(runs[-1][1]) == month:
        runs[-1][1] = month
    else:
        runs.append([month, month, fen])


def runs_by_month(runs: Sequence[Sequence[Any]]) -> dict[str, int]:
    """month_runs undone."""
    out: dict[str, int] = {}
    for first, last, fen in runs:
        for m in months_between(first, next_month(last)):
            out[m] = fen
    return out


def basic_paid_after(runs: Sequence[Sequence[Any]], months: Sequence[str], basic_fen: int,
                     basic_by_month: dict[str, int], rerated_fen: dict[str, int]
                     ) -> list[list[Any]]:
    """The runs after a payment (Participant.PensionPaid's apply, on the register's form)."""
    if not rerated_fen and months and (not runs or runs[-1][1] < months[0]):
        # Months after every month paid before, no top-up (a first payment, arrears):
        # appended, merged into runs as month_runs would.
        parts = basic_by_month_of(months, basic_fen, basic_by_month, rerated_fen)
        out = [list(r) for r in runs]
        for m in sorted(parts):
            if parts[m]:
                extend_runs(out, m, parts[m])
        return out
    by_month = runs_by_month(runs)
    add_basic_paid(by_month, months, basic_fen, basic_by_month, rerated_fen, 1)
    return month_runs(by_month)


@functools.lru_cache(maxsize=4096)
def next_month(month: str) -> str:
    # Remembered: funding and the run ask it twice a payment, of a few distinct months.
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


def owed_at_death(p: Participant, rules_on: Callable[[date], RuleVersion],
                  ruleset_version: int = 0) -> Due | None:
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
    return due_for(alive, period, rules_on, max_deduction, ruleset_version)


def previous_month(month: str) -> str:
    y, m = parse_month(month, "month")
    return f"{y - (m == 1):04d}-{(m - 2) % 12 + 1:02d}"


def due_for(f: PensionerFacts, period: str, rules_on: Callable[[date], RuleVersion],
            max_deduction_percent: int, ruleset_version: int = 0) -> Due | None:
    """What f is owed for `period`: every month owed, each at the basic pension of the rule
    version in force that month (less any basic already paid for it: a month whose payment
    came back after a top-up), and the top-ups of months paid before whose basic pension a
    rule version published since has raised (调待补发). ruleset_version: the rule set's
    version, recorded as the one every month paid is rated by once this is paid."""
    if f.status != "pensioner" or f.payment_hold is not None or period < f.start_month:
        return None
    months = months_owed(f, period)
    paid = runs_by_month(f.basic_paid)
    labels: dict[str, str] = {}

    def basic_of(m: str) -> int:
        y, mo = parse_month(m, "period")
        rules = rules_on(date(y, mo, 1))
        labels[m] = rules.label
        return basic_pension_components(rules.parameters, f.birth_date, m,
                                        f.contribution_years).total_fen()

    by_month = {m: basic_of(m) - paid.get(m, 0) for m in months}
    owed = set(months)
    rerated = {m: diff for m, fen in sorted(paid.items())
               if m <= period and m not in owed and (diff := basic_of(m) - fen)}
    return _due(f, months, by_month, rerated, labels, max_deduction_percent,
                ruleset_version)


def _due(f: PensionerFacts, months: Sequence[str], by_month: dict[str, int],
         rerated: dict[str, int], labels: dict[str, str], max_deduction_percent: int,
         ruleset_version: int) -> Due | None:
    """The Due of the months owed (their basic pension by month) and the top-ups found.
    Top-ups whose sum is below zero (a version that lowered the basic pension of months
    already paid) are neither paid nor recovered here: the months stay rated as they were,
    and the difference is the office's to assess as an overpayment."""
    rated = ruleset_version
    if sum(rerated.values()) < 0:
        rerated, rated = {}, f.rated_version
    if not months and not rerated:
        return None
    # The rule versions used: the months owed's, in order, then the top-ups'.
    versions: list[str] = []
    for m in [*months, *rerated]:
        if labels[m] not in versions:
            versions.append(labels[m])
    return _assemble(f, months, sum(by_month.values()), versions,
                     dict(by_month) if len(months) > 1 else {}, rerated, rated,
                     max_deduction_percent)


def _assemble(f: PensionerFacts, months: Sequence[str], owed_basic_fen: int,
              versions: list[str], by_month: dict[str, int], rerated: dict[str, int],
              rated: int, max_deduction_percent: int) -> Due:
    """The Due's money: the account part for the months owed (drawn from the account while
    it holds it, then the pool's), and the overpayment deduction within its limit."""
    basic = owed_basic_fen + sum(rerated.values())
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
               deduction_fen=deduction, amount_fen=amount, rule_versions=tuple(versions),
               basic_by_month=by_month, rerated_fen=rerated, rated_version=rated)


class DueCalculator:
    """due_for(f, period, ...) for every pensioner of one run, with the same answers
    (a property test holds the two together), remembering what a million pensioners
    repeat: the months from a first month to the period, and each month's basic pension
    by birth date and contribution years (rule version and age extra depend on nothing
    else)."""

    MAX_REMEMBERED = 1_000_000  # entries per table; forgotten all at once past it

    def __init__(self, period: str, rules_on: Callable[[date], RuleVersion],
                 max_deduction_percent: int, *, versions: Sequence[RuleVersion] = (),
                 ruleset_version: int = 0) -> None:
        parse_month(period, "period")
        self.period = period
        self.stop = next_month(period)
        self.rules_on = rules_on
        self.max_deduction_percent = max_deduction_percent
        # The published versions (to know which months a version published after a
        # pensioner's rating can change); without them every month paid is checked.
        self.versions = tuple(versions)
        self.ruleset_version = ruleset_version
        self._spans: dict[tuple[str, str], tuple[str, ...]] = {}
        self._basic: dict[tuple[str, date, int], tuple[int, str]] = {}
        self._check_from: dict[int, str | None] = {}
        # Pensioners whose months paid hold more basic pension than the rules now give (a
        # version lowered it), which no run recovers: how many, how much, a few ids.
        self.lowered_count = self.lowered_fen = 0
        self.lowered_ids: list[str] = []

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
                   rules_on(date(y, m, 1)).parameters.overpayment_max_deduction_percent,
                   versions=ruleset.versions, ruleset_version=len(ruleset.versions))

    def __call__(self, f: PensionerFacts) -> Due | None:
        if f.status != "pensioner" or f.payment_hold is not None or self.period < f.start_month:
            return None
        span = self._span(f.start_month, f.paid_through)
        months: Sequence[str] = span
        if f.paid_after or f.forfeited_after:
            months = [m for m in span if m not in f.paid_after and m not in f.forfeited_after]
        runs = f.basic_paid
        rerated: dict[str, int] = {}
        rerated_labels: list[str] = []
        rated = self.ruleset_version
        # Rated under every version published: nothing to compare (one look-up).
        if runs and (f.rated_version != rated or not self.versions):
            since = self._first_changed(f.rated_version)
            if since is not None and runs[-1][1] >= since:
                rerated, rerated_labels = self._rerated(f, months, since)
            if rerated and (net := sum(rerated.values())) < 0:
                rerated, rerated_labels, rated = {}, [], f.rated_version
                self.lowered_count += 1
                self.lowered_fen += -net
                if len(self.lowered_ids) < MAX_LOWERED_IDS:
                    self.lowered_ids.append(f.participant_id)
        if not months and not rerated:
            return None
        # A month owed with basic pension already paid for it: one whose payment came back
        # after a top-up (rare).
        paid = runs_by_month(runs) if runs and months and runs[-1][1] >= months[0] else None
        basic = 0
        versions: list[str] = []
        by_month: dict[str, int] = {}
        remembered = self._basic
        for m in months:
            known = remembered.get((m, f.birth_date, f.contribution_years))
            fen, label = known if known is not None else self._basic_of(m, f)
            if paid is not None:
                fen -= paid.get(m, 0)
            basic += fen
            if len(months) > 1:
                by_month[m] = fen
            if label not in versions:
                versions.append(label)
        for label in rerated_labels:
            if label not in versions:
                versions.append(label)
        return _assemble(f, months, basic, versions, by_month, rerated, rated,
                         self.max_deduction_percent)

    def _basic_of(self, m: str, f: PensionerFacts) -> tuple[int, str]:
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
        return known

    def _first_changed(self, rated_version: int) -> str | None:
        """The first month whose rules a version published after rated_version can change
        (a month before every such version's effective date keeps the version it had);
        None if none was published since. Without the versions: every month."""
        if not self.versions:
            return ""
        if rated_version not in self._check_from:
            later = [v.effective_from for v in self.versions if v.version > rated_version]
            self._check_from[rated_version] = (min(later).strftime("%Y-%m") if later
                                               else None)
        return self._check_from[rated_version]

    def _rerated(self, f: PensionerFacts, months: Sequence[str], since: str
                 ) -> tuple[dict[str, int], list[str]]:
        """Top-ups of months paid from `since` through the period, and their versions."""
        owed = set(months)
        rerated: dict[str, int] = {}
        labels: list[str] = []
        for first, last, fen in f.basic_paid:
            if last < since:
                continue
            for m in months_between(max(first, since), next_month(min(last, self.period))):
                if m in owed:
                    continue
                now, label = self._basic_of(m, f)
                if now != fen:
                    rerated[m] = now - fen
                    labels.append(label)
        return dict(sorted(rerated.items())), labels

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

# The facts are one JSON array, fields in FACT_KEYS' order and the account's sources in
# SOURCES' order, behind a format number. Every month's funding rewrites every pensioner's
# row, and PostgreSQL's time for that grows with the row: 1,000,000 rows took 16-19 s at 600
# bytes, 9-10 s at 270 and 6.4 s at 130 (UPDATE ... FROM a temporary table, one machine).
# The keys were 230 of the 460 bytes of a pensioner's facts as an object.
FACTS_FORMAT = 1
FACT_KEYS = ("version", "status", "birth_date", "start_month", "contribution_years",
             "account_pension_fen", "sources_fen", "paid_through", "paid_after",
             "forfeited_after", "payment_hold", "overpayment_fen", "township", "village",
             "basic_paid", "rated_version")
# Places in the stored array (pack_facts: FACTS_FORMAT, then FACT_KEYS' values) of the
# facts that facts_array fills in and funding changes in place.
FACT_VERSION, FACT_SOURCES, FACT_PAID_THROUGH, FACT_PAID_AFTER, FACT_FORFEITED_AFTER = (
    1 + FACT_KEYS.index(k) for k in ("version", "sources_fen", "paid_through", "paid_after",
                                     "forfeited_after"))
FACT_OVERPAYMENT, FACT_BASIC_PAID, FACT_RATED_VERSION = (
    1 + FACT_KEYS.index(k) for k in ("overpayment_fen", "basic_paid", "rated_version"))


def pack_facts(d: dict[str, Any]) -> str:
    """The stored text of facts given as a dict keyed by FACT_KEYS (its sources_fen keyed
    by SOURCES, in that order). Written out field by field: a million a month."""
    sources: dict[str, int] = d["sources_fen"]
    assert tuple(sources) == SOURCES, tuple(sources)
    return orjson.dumps([
        FACTS_FORMAT, d["version"], d["status"], d["birth_date"], d["start_month"],
        d["contribution_years"], d["account_pension_fen"], list(sources.values()),
        d["paid_through"], d["paid_after"], d["forfeited_after"], d["payment_hold"],
        d["overpayment_fen"], d["township"], d["village"], d["basic_paid"],
        d["rated_version"]]).decode()


def facts_json(f: PensionerFacts) -> str:
    return pack_facts({
        "version": f.version, "status": f.status, "birth_date": f.birth_date.isoformat(),
        "start_month": f.start_month, "contribution_years": f.contribution_years,
        "account_pension_fen": f.account_pension_fen, "sources_fen": f.sources_fen,
        "paid_through": f.paid_through, "paid_after": sorted(f.paid_after),
        "forfeited_after": sorted(f.forfeited_after),
        "payment_hold": f.payment_hold, "overpayment_fen": f.overpayment_fen,
        "township": f.township, "village": f.village,
        "basic_paid": f.basic_paid, "rated_version": f.rated_version,
    })


def payee_json(f: PensionerFacts) -> bytes:
    return jsonbytes.dumps({"name": f.name, "id_number": f.id_number,
                            "bank": f.bank.model_dump() if f.bank else None})


_FACT_FIELDS = tuple(f.name for f in fields(PensionerFacts))


def _bank(stored: dict[str, str]) -> BankAccount:
    """The payee's bank account as payee_json stored it, from a validated BankAccount: not
    validated again (the payment instruction made from it checks every field)."""
    return BankAccount.trusted({
        "account_name": stored["account_name"], "account_number": stored["account_number"],
        "bank_code": stored["bank_code"]})


def facts_array(text: str) -> list[Any]:
    """The stored facts as the array pack_facts writes (facts stored as an object, before
    the array, turned into it: basic_paid and rated_version may be missing from them)."""
    stored = orjson.loads(text)
    if type(stored) is dict:
        r: list[Any] = [FACTS_FORMAT, *(stored.get(k) for k in FACT_KEYS)]
        r[FACT_SOURCES] = [stored["sources_fen"][s] for s in SOURCES]
        # Facts written before these were kept: no basic paid known (a list of its own:
        # funding extends it), every month checked.
        if "basic_paid" not in stored:
            r[FACT_BASIC_PAID] = []
        if "rated_version" not in stored:
            r[FACT_RATED_VERSION] = 0
    else:
        r = stored
    if r[0] != FACTS_FORMAT or len(r) != len(FACT_KEYS) + 1:
        raise ValueError(f"pensioner facts of an unknown format: {text[:40]!r}")
    return r


def load_facts(participant_id: UUID | str, facts: str, payee: bytes) -> PensionerFacts:
    """A register row's facts. Read by index from the stored array (FACT_KEYS' order):
    a million rows a month, and a dict of them first costs a fifth of reading a row."""
    r = facts_array(facts)
    who: dict[str, Any] = orjson.loads(payee)
    values = {
        "participant_id": str(participant_id), "version": r[1], "status": r[2],
        "birth_date": date.fromisoformat(r[3]), "start_month": r[4],
        "contribution_years": r[5], "account_pension_fen": r[6],
        "sources_fen": dict(zip(SOURCES, r[7], strict=True)), "paid_through": r[8],
        "paid_after": frozenset(r[9]), "forfeited_after": frozenset(r[10]),
        "payment_hold": r[11], "overpayment_fen": r[12],
        "bank": _bank(who["bank"]) if who["bank"] else None,
        "name": who["name"], "id_number": who["id_number"], "township": r[13],
        "village": r[14], "basic_paid": r[15], "rated_version": r[16]}
    # The frozen dataclass's __init__ sets its 20 fields one object.__setattr__ at a time:
    # a third of reading a million pensioners. The values are the fields, so set them at
    # once (the instance stays frozen).
    f = object.__new__(PensionerFacts)
    f.__dict__.update(values)
    assert len(values) == len(_FACT_FIELDS)
    return f
