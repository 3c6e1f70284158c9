"""The province-sized paths of the monthly run give exactly what the plain ones give:
DueCalculator what due_for gives, funding's facts after a payment what PensionerFacts gives,
the stored PensionPaid and LinesAdded events what the mapper makes of the validated events;
and funding, which no longer computes again, still refuses a batch that is no longer right
(a pensioner changed since the draft, a rule version published since)."""

from __future__ import annotations

import dataclasses
import re
from datetime import date
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ledger import disbursement
from ledger.aggregates.participant import (
    SOURCES,
    BankAccount,
    Participant,
    basic_pension_components,
)
from ledger.aggregates.payout_batch import BatchLine, PayoutBatch
from ledger.application import Ledger
from ledger.errors import Refused
from ledger.payout import (
    FACT_KEYS,
    DueCalculator,
    PensionerFacts,
    due_for,
    facts_array,
    facts_json,
    facts_of,
    load_facts,
    month_runs,
    payee_json,
)
from ledger.resident_id import mask
from ledger.rules import RuleVersion, sample_county
from ledger.store import PydanticMapper, unseal
from payout_engine import run
from tests.conftest import examples
from tests.helpers import make_id
from tests.test_payout_support import (
    APPROVER,
    FINANCE,
    OPERATOR,
    contributor,
    county_raise,
    draft,
    first_day,
    pay,
    pension_events,
    pid,
    send,
    transitional,
    treasury,
)

RULES = [RuleVersion(version=i, effective_from=d, parameters=p, note=n)
         for i, (d, p, n) in enumerate(sample_county(), start=1)]
MONTHS = [f"{y}-{m:02d}" for y in range(2018, 2023) for m in range(1, 13)]


def rules_on(on: date, upto: int = len(RULES)) -> RuleVersion:
    """The version in force on `on` among the first `upto` published."""
    found = [r for r in RULES[:upto] if r.effective_from <= on]
    assert found
    return max(found, key=lambda r: (r.effective_from, r.version))


def basic_under(upto: int, born: date, years: int, month: str) -> int:
    rules = rules_on(first_day(month), upto)
    return basic_pension_components(rules.parameters, born, month, years).total_fen()


@st.composite
def pensioner_facts(draw: st.DrawFn) -> PensionerFacts:
    start = draw(st.sampled_from(MONTHS[:30]))
    later = [m for m in MONTHS if m >= start]
    through = draw(st.none() | st.sampled_from(later))
    after = [m for m in later if through is None or m > through]
    paid_after = draw(st.frozensets(st.sampled_from(after), max_size=4) if after
                      else st.just(frozenset[str]()))
    forfeited = draw(st.frozensets(st.sampled_from(after), max_size=2) if after
                     else st.just(frozenset[str]())) - paid_after
    born = draw(st.dates(date(1930, 1, 1), date(1962, 12, 31)))
    years = draw(st.integers(0, 40))
    # The basic pension paid for the months paid, as it was rated then: under the rule set
    # as it stood at version `rated` (later versions may have raised some since), now and
    # then a month off (a month rated at no version: the facts of a payment came back), and
    # now and then a month owed again with basic paid for it (its payment came back after
    # a top-up).
    rated = draw(st.integers(0, len(RULES)))
    paid = [m for m in later if (through is not None and m <= through) or m in paid_after]
    basic_paid = {m: basic_under(max(rated, 1), born, years, m) for m in paid}
    for m in draw(st.lists(st.sampled_from(paid), max_size=3) if paid else st.just([])):
        basic_paid[m] += draw(st.integers(-3_000, 3_000))
        rated = 0
    owed_paid = [m for m in after if m not in paid_after and m not in forfeited]
    for m in draw(st.lists(st.sampled_from(owed_paid), max_size=2) if owed_paid
                  else st.just([])):
        basic_paid[m] = draw(st.integers(1, 2_000))
        rated = 0
    sources = draw(st.dictionaries(st.sampled_from(["contribution", "subsidy_province",
                                                    "collective", "on_behalf"]),
                                   st.integers(0, 200_000), max_size=4))
    # A participant's account always holds every source (Participant: dict.fromkeys).
    sources = {**dict.fromkeys(SOURCES, 0), **sources}
    return PensionerFacts(
        participant_id=str(uuid4()), version=draw(st.integers(1, 500)),
        status=draw(st.sampled_from(["pensioner", "pensioner", "suspended", "deceased"])),
        birth_date=born, start_month=start, contribution_years=years,
        account_pension_fen=draw(st.integers(0, 5_000)), sources_fen=sources,
        paid_through=through, paid_after=paid_after, forfeited_after=forfeited,
        payment_hold=draw(st.none() | st.just("AC04")),
        overpayment_fen=draw(st.integers(0, 100_000)),
        bank=BankAccount(account_name="领取人", account_number="6222000012345678",
                         bank_code="102"),
        name="领取人", id_number="110101195003150012", township="城关镇", village="东村",
        basic_paid=month_runs({m: fen for m, fen in basic_paid.items() if fen > 0}),
        rated_version=rated)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(pensioner_facts(), min_size=1, max_size=8), st.sampled_from(MONTHS[12:]),
       st.integers(0, 50))
def test_the_calculator_owes_what_due_for_owes(facts: list[PensionerFacts], period: str,
                                              percent: int) -> None:
    """With the published versions it checks only the months a version published after a
    pensioner's rating can change; without them, every month paid. Both owe what due_for,
    which checks every month, owes."""
    quick = DueCalculator(period, rules_on, percent, versions=RULES,
                          ruleset_version=len(RULES))
    thorough = DueCalculator(period, rules_on, percent)
    for f in facts * 2:  # the second time from what it remembered
        owed = due_for(f, period, rules_on, percent, len(RULES))
        assert quick(f) == owed
        assert thorough(f) == due_for(f, period, rules_on, percent)


@settings(max_examples=examples(200), deadline=None)
@given(pensioner_facts(), st.data())
def test_the_runs_lines_are_the_lines_validation_makes(f: PensionerFacts,
                                                      data: st.DataObject) -> None:
    """The run makes its lines without pydantic's validation (a million a month): each is
    the model validation makes of the same values, field for field and byte for byte."""
    period = data.draw(st.sampled_from([m for m in MONTHS if m >= f.start_month]))
    due = due_for(dataclasses.replace(f, status="pensioner", payment_hold=None), period,
                  rules_on, 20)
    if due is None or due.amount_fen <= 0:
        return
    pid = UUID(f.participant_id)
    line = run.line_of(period, 1, pid, f, due)
    validated = BatchLine(**line.__dict__)
    assert line == validated and type(line) is BatchLine
    assert list(line.__dict__) == list(validated.__dict__) == list(BatchLine.model_fields)
    assert line.model_dump_json() == validated.model_dump_json()
    assert line.model_fields_set == validated.model_fields_set
    assert BatchLine.model_validate_json(line.model_dump_json()) == line
    with pytest.raises(ValidationError):
        line.amount_fen = 1  # frozen, as a validated line is
    # Read back from its stored facts, the pensioner's bank account is the model too.
    back = load_facts(pid, facts_json(f), payee_json(f))
    assert back.bank == f.bank and back.bank is not None
    assert back.bank.model_dump_json() == BankAccount(**back.bank.__dict__).model_dump_json()


def test_a_trusted_model_takes_every_field_in_order() -> None:
    """Immutable.trusted refuses values that are not exactly the fields, in order."""
    values = {"account_name": "领取人", "account_number": "6222000012345678",
              "bank_code": "102"}
    assert BankAccount.trusted(dict(values)) == BankAccount(**values)
    # The field names' set the trusted models share stays theirs when one is copied.
    a, b = BankAccount.trusted(dict(values)), BankAccount.trusted(dict(values))
    c = a.model_copy(update={"bank_code": "103"})
    assert c.bank_code == "103" and a == b == BankAccount(**values)
    assert a.model_fields_set == b.model_fields_set == set(values)
    for wrong in ({k: values[k] for k in reversed(values)},
                  {k: v for k, v in values.items() if k != "bank_code"},
                  {**values, "extra": "x"}):
        with pytest.raises(AssertionError):
            BankAccount.trusted(wrong)


def _line_for(f: PensionerFacts, data: st.DataObject) -> dict[str, Any] | None:
    """A stored line's paid fields for what f is owed in a month drawn from data (None if
    nothing is owed)."""
    period = data.draw(st.sampled_from([m for m in MONTHS if m >= f.start_month]))
    due = due_for(dataclasses.replace(f, status="pensioner", payment_hold=None), period,
                  rules_on, 20)
    if due is None:
        return None
    return {"months": list(due.months), "basic_fen": due.basic_fen,
            "account_by_source_fen": due.account_by_source_fen,
            "deduction_fen": due.deduction_fen, "basic_by_month": due.basic_by_month,
            "rerated_fen": due.rerated_fen, "rated_version": due.rated_version}


@settings(max_examples=examples(200), deadline=None)
@given(pensioner_facts(), st.data())
def test_facts_after_a_payment_are_what_the_facts_model_writes(f: PensionerFacts,
                                                              data: st.DataObject) -> None:
    line = _line_for(f, data)
    if line is None:
        return
    text = facts_json(f)
    fast = disbursement._facts_after(facts_array(text), line, f.version + 1)
    slow = disbursement._facts_after_validated(UUID(f.participant_id), text, line,
                                               f.version + 1)
    assert fast == slow


@settings(max_examples=examples(100), deadline=None)
@given(pensioner_facts())
def test_facts_read_back_are_the_facts_written(f: PensionerFacts) -> None:
    back = load_facts(f.participant_id, facts_json(f), payee_json(f))
    assert back == f and type(back) is PensionerFacts
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.version = 1  # type: ignore[misc]


def _as_object(text: str) -> str:
    """The facts as they were stored before the array: one JSON object, keys in order."""
    d = dict(zip(FACT_KEYS, facts_array(text)[1:], strict=True))
    d["sources_fen"] = dict(zip(SOURCES, d["sources_fen"], strict=True))
    return orjson.dumps(d).decode()


@settings(max_examples=examples(100), deadline=None)
@given(pensioner_facts(), st.data())
def test_facts_stored_as_an_object_read_and_paid_as_the_array(f: PensionerFacts,
                                                              data: st.DataObject) -> None:
    """A register written before the array keeps working: each row is read as it is, and
    rewritten as an array by its next payment."""
    text = facts_json(f)
    old = _as_object(text)
    assert old.startswith("{") and text.startswith("[") and len(text) < len(old)
    assert load_facts(f.participant_id, old, payee_json(f)) == f
    # Older still: no basic paid nor rated version kept. Each read has its own list of
    # runs (funding extends it in place).
    older = orjson.dumps({k: v for k, v in orjson.loads(old).items()
                          if k not in ("basic_paid", "rated_version")}).decode()
    first, second = facts_array(older), facts_array(older)
    assert first[-2:] == second[-2:] == [[], 0] and first[-2] is not second[-2]
    line = _line_for(f, data)
    if line is None:
        return
    pid = UUID(f.participant_id)
    after = disbursement._facts_after(facts_array(old), line, f.version + 1)
    assert after.startswith("[")
    assert after == disbursement._facts_after_validated(pid, old, line, f.version + 1)
    assert after == disbursement._facts_after(facts_array(text), line, f.version + 1)


@settings(max_examples=examples(10), deadline=None)
@given(pensioner_facts())
def test_facts_of_an_unknown_format_are_refused(f: PensionerFacts) -> None:
    text = facts_json(f)
    for bad in ("[2" + text[2:], text[:-1] + ',0]'):
        with pytest.raises(ValueError, match="unknown format"):
            facts_array(bad)
        with pytest.raises(ValueError, match="unknown format"):
            load_facts(f.participant_id, bad, payee_json(f))


def _stored_equal_to_the_mapper(ledger: Ledger, ids: list[UUID], topic_end: str) -> int:
    """Every stored event of `ids` with that topic decodes to an event the mapper stores
    with the same bytes (compared in the clear: the cipher's nonce differs)."""
    mapper = ledger.mapper
    assert type(mapper) is PydanticMapper
    n = 0
    for i in ids:
        for stored in ledger.recorder.select_events(i):
            if not stored.topic.endswith(topic_end):
                continue
            again = mapper.to_stored_event(mapper.to_domain_event(stored))
            assert unseal(mapper, again.state) == unseal(mapper, stored.state)
            n += 1
    return n


def test_stored_payments_and_lines_are_the_mappers_bytes(ledger: Ledger,
                                                         tmp_path: Path) -> None:
    treasury(ledger)
    people = [transitional(ledger, n) for n in range(1, 4)] + [contributor(ledger, 9)]
    batch, _ = send(ledger, "2020-04", tmp_path)
    assert _stored_equal_to_the_mapper(ledger, [pid(p) for p in people], "PensionPaid") == 4
    assert _stored_equal_to_the_mapper(ledger, [batch.id], "LinesAdded") == 1
    for line in batch.lines.values():
        assert line.register_version > 0 and line.kind == "monthly_pension"
        assert line.rule_versions  # every line names the rule version it used
    paid = [e for p in people for e in ledger.events.get(pid(p))
            if isinstance(e, Participant.PensionPaid)]
    assert sorted(e.end_to_end_id for e in paid) == sorted(batch.lines)
    for e in paid:
        line = batch.lines[e.end_to_end_id]
        assert (e.amount_fen, e.months, e.rule_version) == (
            line.amount_fen, line.months, ";".join(line.rule_versions))
        assert e.originator_version == line.register_version + 1
    # The register was written at the new versions: the next month is drafted from it.
    may = draft(ledger, "2020-05")
    assert {line.register_version for line in may.lines.values()} == {
        ledger.queries.register_row(pid(p)).version for p in people}  # type: ignore[union-attr]


def test_a_batch_read_without_its_lines_refuses_any_use_of_them(ledger: Ledger) -> None:
    treasury(ledger)
    transitional(ledger, 1)
    batch = draft(ledger, "2020-04")
    bare = disbursement.get_batch(ledger, batch.id, lines=False)
    full = disbursement.get_batch(ledger, batch.id)
    assert (bare.version, bare.state, bare.line_count) == (full.version, "drafted", 1)
    assert list(full.lines) == list(batch.lines)
    with pytest.raises(AssertionError, match="without its lines"):
        list(bare.lines)
    with pytest.raises(AssertionError, match="without its lines"):
        bare.lines.get("x")


def test_funding_refuses_a_pensioner_changed_since_the_draft(ledger: Ledger,
                                                           tmp_path: Path) -> None:
    treasury(ledger)
    idn = transitional(ledger, 1)
    transitional(ledger, 2)
    batch = draft(ledger, "2020-04")
    run.approve(ledger, batch.id, batch.manifest_sha256, APPROVER)
    # New bank details change nothing owed, but the line would send the money to the old
    # account: the version differs, so funding refuses.
    ledger.change_bank_details(id_number=idn, bank=BankAccount(
        account_name="领取人1", account_number="6222999900000001", bank_code="102"),
        actor=OPERATOR)
    before = ledger.recorder.max_notification_id()
    e2e = next(e for e, line in batch.lines.items() if line.id_number == idn)
    with pytest.raises(Refused, match=f"1 line.*no longer owed.*since the draft.*{e2e} "
                       rf"\({re.escape(mask(idn))}: new payee or bank details\)"
                       ".*draft the month again"):
        run.fund(ledger, batch.id, value_date=date(2020, 4, 10), actor=FINANCE)
    assert ledger.recorder.max_notification_id() == before  # nothing written
    assert ledger.queries.paid_month_count(pid(idn)) == 0


def test_funding_pays_lines_still_owed_after_year_end_interest(ledger: Ledger) -> None:
    """Interest credited between the draft and the funding moves every pensioner to a new
    version but changes nothing a line pays: the batch is funded as drafted and approved,
    each payment at the version after the interest, the registers agreeing with a replay."""
    treasury(ledger)
    people = [contributor(ledger, 1), transitional(ledger, 2)]
    batch = draft(ledger, "2020-04")
    run.approve(ledger, batch.id, batch.manifest_sha256, APPROVER)
    ledger.credit_interest(year=2019, today=date(2020, 4, 2), actor=FINANCE)
    after_interest = {idn: ledger.participant(idn) for idn in people}
    lines = {line.id_number: line for line in batch.lines.values()}
    for idn in people:
        assert after_interest[idn].version > lines[idn].register_version
    assert after_interest[people[0]].interest_years[2019] > 0

    run.fund(ledger, batch.id, value_date=date(2020, 4, 10), actor=FINANCE)

    registered = {f.participant_id: f for f in ledger.pensioners()}
    for idn in people:
        p = ledger.participant(idn)
        paid = pension_events(ledger, idn)
        assert len(paid) == 1
        assert paid[0].originator_version == after_interest[idn].version + 1 == p.version
        assert paid[0].amount_fen == lines[idn].amount_fen
        assert paid[0].account_by_source_fen == lines[idn].account_by_source_fen
        assert ledger.queries.register_row(p.id).version == p.version
        assert registered[str(p.id)] == facts_of(p)
        assert ledger.queries.paid_month_count(p.id) == 1
    assert disbursement.get_batch(ledger, batch.id, lines=False).state == "funded"


def test_funding_refuses_a_pensioner_who_died_since_the_draft(ledger: Ledger) -> None:
    """The death settles the month into the heirs' payable: the line would pay it twice."""
    treasury(ledger)
    idn = transitional(ledger, 1)
    transitional(ledger, 2)
    batch = draft(ledger, "2020-04")
    run.approve(ledger, batch.id, batch.manifest_sha256, APPROVER)
    ledger.decease(id_number=idn, date_of_death=date(2020, 4, 3), reported_on=date(2020, 4, 6),
                   actor=OPERATOR)
    before = ledger.recorder.max_notification_id()
    e2e = next(e for e, line in batch.lines.items() if line.id_number == idn)
    with pytest.raises(Refused, match=f"{e2e} \\({re.escape(mask(idn))}: now deceased: "
                       "owed nothing for 2020-04\\)"):
        run.fund(ledger, batch.id, value_date=date(2020, 4, 10), actor=FINANCE)
    assert ledger.recorder.max_notification_id() == before
    run.cancel(ledger, batch.id, "a death since the draft", OPERATOR)
    again = draft(ledger, "2020-04")
    assert [line.id_number for line in again.lines.values()] == [make_id(2, date(1950, 3, 15))]


def test_funding_refuses_a_batch_drafted_before_a_rule_version(ledger: Ledger) -> None:
    treasury(ledger)
    transitional(ledger, 1)
    batch = draft(ledger, "2020-04")
    run.approve(ledger, batch.id, batch.manifest_sha256, APPROVER)
    county_raise(ledger, date(2020, 4, 1), 500, "county raise")
    with pytest.raises(Refused, match="rule set version.*draft the month again"):
        run.fund(ledger, batch.id, value_date=date(2020, 4, 10), actor=FINANCE)
    run.cancel(ledger, batch.id, "rules changed", OPERATOR)
    again = draft(ledger, "2020-04")
    assert again.sequence == 2
    assert [line.basic_fen for line in again.lines.values()] == [
        line.basic_fen + 500 for line in batch.lines.values()]


def test_funding_pays_a_batch_as_drafted_when_a_rule_version_takes_effect_later(
        ledger: Ledger) -> None:
    """A rule version published since the draft, in force only after the month (next year's
    raise), changes no line: the batch is funded as drafted and approved."""
    treasury(ledger)
    transitional(ledger, 1)
    contributor(ledger, 2)
    batch = draft(ledger, "2020-04")
    run.approve(ledger, batch.id, batch.manifest_sha256, APPROVER)
    county_raise(ledger, date(2021, 1, 1), 500, "next year's county raise")

    run.fund(ledger, batch.id, value_date=date(2020, 4, 10), actor=FINANCE)

    for line in batch.lines.values():
        paid = pension_events(ledger, line.id_number)
        assert [(e.months, e.amount_fen) for e in paid] == [(line.months, line.amount_fen)]


def test_a_batch_is_paid_once_month_after_month_through_the_fast_path(
        ledger: Ledger, tmp_path: Path) -> None:
    treasury(ledger)
    people = [transitional(ledger, n) for n in range(1, 3)]
    for period in ("2020-04", "2020-05", "2020-06"):
        pay(ledger, period, tmp_path)
    for p in people:
        assert ledger.queries.paid_month_count(pid(p)) == 3
    batch = PayoutBatch.id_for("2020-06", 1)
    assert disbursement.get_batch(ledger, batch).state == "closed"
