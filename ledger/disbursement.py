"""The ledger's side of paying pensions: draft, approve, fund, answer, close a PayoutBatch.

Funding is the step that moves money: in ONE transaction it appropriates the batch total
fiscal -> expenditure, reserves it in flight, and books every pensioner's PensionPaid event
(the individual account and the pool give up what is paid). It reads the pensioner register
rather than replaying a million aggregates, checks every line against it, and the
paid_months key makes paying anyone twice for a month impossible even if a line slipped
through. A crash before the commit leaves nothing; running it again does it all once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import datetime_now_with_tzinfo
from eventsourcing.persistence import IntegrityError

from ledger.aggregates.command_receipt import CommandReceipt
from ledger.aggregates.participant import Participant
from ledger.aggregates.payout_batch import BatchLine, Outcome, PayoutBatch
from ledger.application import MAX_ATTEMPTS, Ledger
from ledger.errors import ConcurrencyConflict, NotFound, Refused
from ledger.payout import PensionerFacts, compact_months, due_for, next_month
from ledger.postings import guarded_deltas

Progress = Callable[[int], None]


def get_batch(ledger: Ledger, batch_id: UUID) -> PayoutBatch:
    try:
        batch: PayoutBatch = ledger.repository.get(batch_id)
    except AggregateNotFoundError:
        raise NotFound("batch", str(batch_id)) from None
    return batch


def draft(ledger: Ledger, *, period: str, sequence: int, file_format: str,
          created_at: datetime, execution_date: date, lines: list[BatchLine],
          manifest_sha256: str, comparison: dict[str, Any], actor: str) -> PayoutBatch:
    batch = PayoutBatch.draft(period=period, sequence=sequence, file_format=file_format,
                              created_at=created_at, execution_date=execution_date, lines=lines,
                              manifest_sha256=manifest_sha256, comparison=comparison,
                              actor=actor)
    events = batch.collect_events()
    stored = [ledger.mapper.to_stored_event(e) for e in events]
    try:
        ledger.recorder.insert_events_bulk(stored)  # type: ignore[attr-defined]
    except IntegrityError:
        raise Refused("period", f"batch {period}/{sequence} was already drafted") from None
    return get_batch(ledger, batch.id)


def approve(ledger: Ledger, batch_id: UUID, manifest_sha256: str, actor: str) -> PayoutBatch:
    return _batch_step(ledger, batch_id, lambda b: b.approve(manifest_sha256, actor))


def fund(ledger: Ledger, batch_id: UUID, *, value_date: date, actor: str,
         progress: Progress | None = None) -> dict[str, int]:
    """Appropriate, reserve in flight and book every payment, all at once."""
    for _ in range(MAX_ATTEMPTS):
        batch = get_batch(ledger, batch_id)
        if batch.state != "approved":
            raise Refused("batch", f"batch is {batch.state}; funds move only after approval")
        reference = f"PAYOUT-{batch.period}-{batch.sequence:02d}"
        fund_agg = ledger.fund()
        fund_agg.transfer(from_account="fiscal", to_account="expenditure",
                          amount_fen=batch.total_fen, value_date=value_date,
                          reference=reference, actor=actor)
        batch.fund(value_date, reference, actor)
        money = [*fund_agg.collect_events(), *batch.collect_events()]
        paid, register, pensioners, paid_add = _pension_events(
            ledger, batch, value_date, actor, progress)
        stored = [ledger.mapper.to_stored_event(e) for e in money]
        stored += [ledger.mapper.to_stored_event(e) for e in paid]
        try:
            ledger.recorder.insert_events_bulk(  # type: ignore[attr-defined]
                stored, fund_deltas=guarded_deltas(money), register=register,
                pensioners=pensioners, paid_months_add=paid_add)
        except IntegrityError:
            continue  # someone wrote in between: read again and decide again
        return {"payments": len(paid), "total_fen": batch.total_fen}
    raise ConcurrencyConflict(MAX_ATTEMPTS)


def _pension_events(ledger: Ledger, batch: PayoutBatch, value_date: date, actor: str,
                    progress: Progress | None) -> tuple[list[Any], list[Any], list[Any],
                                                        list[tuple[UUID, str, str]]]:
    lines = sorted(batch.lines.values(), key=lambda line: line.participant_id)
    pids = [line.participant_id for line in lines]
    facts = _facts_for(ledger, pids)
    registers = ledger.queries.register_rows(pids)
    rules = ledger.ruleset()
    # The deduction limit of the payout month: the one the draft computed the lines with.
    y, m = (int(x) for x in batch.period.split("-"))
    params = rules.in_force(date(y, m, 1)).parameters
    now = datetime_now_with_tzinfo()
    events: list[Any] = []
    register_rows = []
    pensioner_rows = []
    paid_add: list[tuple[UUID, str, str]] = []
    for n, line in enumerate(lines, 1):
        f = facts.get(line.participant_id)
        reg = registers.get(line.participant_id)
        if f is None or reg is None or reg.version != f.version:
            raise Refused("batch", f"{line.end_to_end_id}: the pensioner is not in the "
                          "register as drafted; draft the month again")
        due = due_for(f, batch.period, rules.in_force,
                      params.overpayment_max_deduction_percent)
        if due is None or not _same(due, line):
            raise Refused("batch", f"{line.end_to_end_id}: the pensioner's entitlement "
                          "changed since the draft; draft the month again")
        version = f.version + 1
        events.append(Participant.PensionPaid(
            originator_id=line.participant_id, originator_version=version, timestamp=now,
            actor=actor, value_date=value_date, batch_id=batch.id,
            end_to_end_id=line.end_to_end_id, months=line.months, basic_fen=line.basic_fen,
            account_by_source_fen=line.account_by_source_fen,
            pooled_account_fen=line.pooled_account_fen, deduction_fen=line.deduction_fen,
            amount_fen=line.amount_fen, rule_version=";".join(line.rule_versions)))
        register_rows.append(dataclasses.replace(reg, version=version))
        pensioner_rows.append(ledger.pensioner_row(_after_payment(f, line, version),
                                                   with_payee=False))
        paid_add += [(line.participant_id, m, line.end_to_end_id) for m in line.months]
        if progress and n % 10_000 == 0:
            progress(10_000)
    if progress:
        progress(len(lines) % 10_000)
    return events, register_rows, pensioner_rows, paid_add


def _facts_for(ledger: Ledger, pids: Sequence[UUID]) -> dict[UUID, PensionerFacts]:
    wanted = set(pids)
    return {UUID(f.participant_id): f for f in ledger.pensioners()
            if UUID(f.participant_id) in wanted}


def _same(due: Any, line: BatchLine) -> bool:
    return (list(due.months) == line.months and due.basic_fen == line.basic_fen
            and due.account_by_source_fen == line.account_by_source_fen
            and due.pooled_account_fen == line.pooled_account_fen
            and due.deduction_fen == line.deduction_fen and due.amount_fen == line.amount_fen)


def _after_payment(f: PensionerFacts, line: BatchLine, version: int) -> PensionerFacts:
    sources = dict(f.sources_fen)
    for src, amt in line.account_by_source_fen.items():
        sources[src] -= amt
        assert sources[src] >= 0
    paid = set(f.paid_after) | set(line.months)
    forfeited = set(f.forfeited_after)
    if f.paid_through is not None:
        # Everything up to paid_through is settled; only the months after it are compacted.
        compact = compact_months(next_month(f.paid_through), paid, forfeited)
        if compact["paid_through"] is None:
            compact["paid_through"] = f.paid_through
    else:
        compact = compact_months(f.start_month, paid, forfeited)
    return dataclasses.replace(f, version=version, sources_fen=sources,
                               overpayment_fen=f.overpayment_fen - line.deduction_fen,
                               **compact)


def answer(ledger: Ledger, batch_id: UUID, *, settled: Sequence[Outcome] = (),
           failed: Sequence[Outcome] = (), returned: Sequence[Outcome] = (),
           value_date: date, file_sha256: str, actor: str) -> dict[str, Any]:
    """Book the bank's answers. A failed or returned payment gives the money back to the
    expenditure account and the months back to the pensioner (owed again). The same file
    (by its SHA-256) booked twice changes nothing the second time."""
    key = f"bank-answer:{batch_id}:{file_sha256}"
    for _ in range(MAX_ATTEMPTS):
        earlier = ledger._receipt(key)
        if earlier is not None:
            return {**earlier.result, "replayed": True}
        batch = get_batch(ledger, batch_id)
        if settled:
            batch.settle(list(settled), value_date, file_sha256, actor)
        if failed:
            batch.fail(list(failed), value_date, file_sha256, actor)
        if returned:
            batch.returned(list(returned), value_date, file_sha256, actor)
        participants = []
        for outcome, after in [(o, False) for o in failed] + [(o, True) for o in returned]:
            line = batch.lines[outcome.end_to_end_id]
            p: Participant = ledger.repository.get(line.participant_id)
            p.trigger_event(Participant.PensionPaymentReversed, value_date=value_date,
                            end_to_end_id=line.end_to_end_id, months=line.months,
                            basic_fen=line.basic_fen,
                            account_by_source_fen=line.account_by_source_fen,
                            pooled_account_fen=line.pooled_account_fen,
                            deduction_fen=line.deduction_fen, amount_fen=line.amount_fen,
                            reason_code=outcome.reason_code, after_settlement=after,
                            actor=actor)
            participants.append(p)
        result = {"settled": len(settled), "failed": len(failed), "returned": len(returned)}
        receipt = CommandReceipt.record(key, "bank-answer", file_sha256, result, actor)
        try:
            ledger._save(batch, *participants, receipt)
        except IntegrityError:
            continue
        return result
    raise ConcurrencyConflict(MAX_ATTEMPTS)


def _batch_step(ledger: Ledger, batch_id: UUID, step: Callable[[PayoutBatch], None]
                ) -> PayoutBatch:
    for _ in range(MAX_ATTEMPTS):
        batch = get_batch(ledger, batch_id)
        step(batch)
        try:
            ledger._save(batch)
        except IntegrityError:
            continue
        return batch
    raise ConcurrencyConflict(MAX_ATTEMPTS)


def mark_exported(ledger: Ledger, batch_id: UUID, *, file_format: str, manifest_sha256: str,
                  files: list[str], actor: str) -> PayoutBatch:
    """Record that the approved files were written (again, after a crash: no new event)."""
    return _batch_step(ledger, batch_id, lambda b: b.mark_exported(
        file_format, manifest_sha256, files, actor))


def close(ledger: Ledger, batch_id: UUID, actor: str) -> PayoutBatch:
    return _batch_step(ledger, batch_id, lambda b: b.close(actor))


def cancel(ledger: Ledger, batch_id: UUID, *, reason: str, actor: str) -> PayoutBatch:
    """Set aside a drafted or approved batch: the month is drafted again under the next
    sequence number (payout_engine.run.run_month)."""
    return _batch_step(ledger, batch_id, lambda b: b.cancel(reason, actor))
