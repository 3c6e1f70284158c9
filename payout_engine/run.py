"""The monthly run: every pensioner in the register, what each is owed by the rules in force
each month, the bank files for it, a comparison with last month, and a drafted PayoutBatch.

Idempotent: a month's batch, once drafted, is what the run returns (the draft is one
transaction, so a crash leaves either the whole batch or nothing, and the next run drafts
the same one: the files' creation time is a function of the month, not of the clock).
A drafted or approved batch that is no longer right (the register changed; funding refuses
it) is cancelled, and the next run drafts the month again under the next sequence number.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from ledger import disbursement
from ledger.aggregates.participant import parse_month
from ledger.aggregates.payout_batch import (
    MONTHLY_PENSION,
    BatchLine,
    PayoutBatch,
    end_to_end_id,
)
from ledger.application import Ledger
from ledger.collector import collector_paused
from ledger.errors import InvalidInput, Refused
from ledger.payout import Due, DueCalculator, PensionerFacts, next_month
from payout_engine import drafted_files, line_summaries, run_in_two
from payout_engine.bankfiles import (
    BankFile,
    InvalidInstruction,
    PaymentInstruction,
    build_manifest,
)
from payout_engine.bankfiles.pain001 import Fragment
from payout_engine.comparison import Fed
from payout_engine.config import BEIJING, PayoutConfig, load_config
from payout_engine.export import (
    FILE_FORMATS,
    bank_files,
    file_records,
    instruction,
)
from payout_engine.last_month import Feed, LastMonth

Progress = Callable[[int], None]
F = TypeVar("F", bound=Fed)
MAX_SEQUENCE = 99  # two digits in the EndToEndId
MAX_LISTED_MONTHS = 120  # months one listing of batches covers
LOOK_AROUND_MONTHS = 12  # how far the run looks for unfunded earlier or drafted later months
MAX_EXCLUDED_LISTED = 1000
PROGRESS_EVERY = 10_000

# A batch's state read from its latest event alone. A payment returned after the batch
# closed leaves "answered" here; the full batch says "closed".
_STATE_AFTER = {"Drafted": "drafted", "LinesAdded": "drafted", "Approved": "approved",
                "Cancelled": "cancelled", "Funded": "funded", "Exported": "exported",
                "PaymentsSettled": "answered", "PaymentsFailed": "answered",
                "PaymentsReturned": "answered", "Closed": "closed"}
BATCH_STATES = tuple(dict.fromkeys(_STATE_AFTER.values()))
UNFUNDED = ("drafted", "approved")


def check_period(period: str) -> str:
    return check_month(period, "period")


def check_month(text: str, field: str) -> str:
    y, m = parse_month(text.strip(), field)
    return f"{y:04d}-{m:02d}"


def month_before(period: str) -> str:
    y, m = parse_month(period, "period")
    return f"{y - (m == 1):04d}-{(m - 2) % 12 + 1:02d}"


@dataclass(frozen=True)
class BatchInfo:
    """A batch read from its first and latest events, without its lines."""

    id: UUID
    period: str
    sequence: int
    state: str
    file_format: str
    line_count: int
    total_fen: int
    manifest_sha256: str


def batch_info(ledger: Ledger, batch_id: UUID) -> BatchInfo | None:
    first = ledger.recorder.select_events(batch_id, limit=1)
    if not first:
        return None
    # The latest event's topic says the state; its body (maybe 10,000 lines) is not read.
    last = ledger.recorder.select_events(batch_id, desc=True, limit=1)[0]
    d: Any = ledger.mapper.to_domain_event(first[0])
    return BatchInfo(batch_id, d.period, d.sequence,
                     _STATE_AFTER.get(last.topic.rpartition(".")[2], "answered"),
                     d.file_format, d.line_count, d.total_fen, d.manifest_sha256)


def batches_of(ledger: Ledger, period: str) -> list[BatchInfo]:
    """Every batch of a month, by sequence."""
    out = []
    for sequence in range(1, MAX_SEQUENCE + 1):
        info = batch_info(ledger, PayoutBatch.id_for(period, sequence))
        if info is None:
            break
        out.append(info)
    return out


def batches_between(ledger: Ledger, first: str, last: str) -> list[BatchInfo]:
    """Every batch of the months first..last (YYYY-MM, both included), by month and
    sequence."""
    first, last = check_month(first, "from"), check_month(last, "to")
    if first > last:
        raise InvalidInput("from", f"{first} is after {last}")
    out: list[BatchInfo] = []
    month = first
    for _ in range(MAX_LISTED_MONTHS):
        out += batches_of(ledger, month)
        if month == last:
            return out
        month = next_month(month)
    raise InvalidInput("from", f"{first} to {last} is more than {MAX_LISTED_MONTHS} months")


def live_batch(ledger: Ledger, period: str) -> BatchInfo | None:
    """The month's batch that stands: the latest one not cancelled."""
    live = [b for b in batches_of(ledger, period) if b.state != "cancelled"]
    return live[-1] if live else None


def find_batch(ledger: Ledger, ref: str) -> UUID:
    """A batch named by its id or as PERIOD/SEQUENCE (2026-11/1), or PERIOD for the month's
    standing batch."""
    text = ref.strip()
    try:
        return UUID(text)
    except ValueError:
        pass
    period_text, _, seq_text = text.partition("/")
    period = check_period(period_text)
    if not seq_text:
        info = live_batch(ledger, period)
        if info is None:
            raise Refused("batch", f"no batch for {period}")
        return info.id
    if not seq_text.isdigit() or not 1 <= int(seq_text) <= MAX_SEQUENCE:
        raise InvalidInput("batch", f"{ref!r}: the sequence is 1 to {MAX_SEQUENCE}")
    return PayoutBatch.id_for(period, int(seq_text))


@dataclass
class RunTimings:
    """Seconds spent in each part of a run (for the benchmark and the progress report)."""

    parts: dict[str, float] = field(default_factory=dict)

    def add(self, part: str, seconds: float) -> None:
        self.parts[part] = self.parts.get(part, 0.0) + seconds


def _check_order(ledger: Ledger, period: str) -> None:
    """Months are paid in order: no earlier month left unfunded, no later month drafted.
    Otherwise two batches would claim the same owed months."""
    before = period
    for _ in range(LOOK_AROUND_MONTHS):
        before = month_before(before)
        for b in batches_of(ledger, before):
            if b.state in UNFUNDED:
                raise Refused("period", f"batch {b.period}/{b.sequence} is {b.state} but not "
                              f"funded: fund or cancel it before running {period}")
    after = period
    for _ in range(LOOK_AROUND_MONTHS):
        after = next_month(after)
        later = live_batch(ledger, after)
        if later is not None:
            raise Refused("period", f"batch {later.period}/{later.sequence} of a later month "
                          f"is already drafted; months are run in order")


def _previous(ledger: Ledger, period: str) -> PayoutBatch | None:
    """Last month's standing batch, without its lines (they are read as stored)."""
    info = live_batch(ledger, month_before(period))
    return None if info is None else disbursement.get_batch(ledger, info.id, lines=False)


def timed(it: Iterator[tuple[UUID, PensionerFacts]], timings: RunTimings
          ) -> Iterator[tuple[UUID, PensionerFacts]]:
    """The pensioners of `it`, the time spent reading them added to read_register."""
    while True:
        t = time.perf_counter()
        item = next(it, None)
        timings.add("read_register", time.perf_counter() - t)
        if item is None:
            return
        yield item


def run_month(ledger: Ledger, period: str, *, actor: str, file_format: str = "pain001",
              execution_date: date | None = None, progress: Progress | None = None,
              config: PayoutConfig | None = None, today: date | None = None,
              timings: RunTimings | None = None) -> PayoutBatch:
    """Draft the month's batch, or return the one already drafted."""
    # No cyclic collection while a million objects are made (ledger.collector).
    with collector_paused():
        return _run_month(ledger, period, actor=actor, file_format=file_format,
                          execution_date=execution_date, progress=progress, config=config,
                          today=today, timings=timings)


def _run_month(ledger: Ledger, period: str, *, actor: str, file_format: str,
               execution_date: date | None, progress: Progress | None,
               config: PayoutConfig | None, today: date | None,
               timings: RunTimings | None) -> PayoutBatch:
    started = time.perf_counter()
    period = check_period(period)
    if file_format not in FILE_FORMATS:
        raise InvalidInput("format", f"must be one of {', '.join(FILE_FORMATS)}")
    existing = live_batch(ledger, period)
    if existing is not None:
        if existing.file_format != file_format:
            raise Refused("format", f"batch {period}/{existing.sequence} is drafted as "
                          f"{existing.file_format} files, not {file_format}")
        return disbursement.get_batch(ledger, existing.id)
    sequence = len(batches_of(ledger, period)) + 1
    if sequence > MAX_SEQUENCE:
        raise Refused("period", f"{period} has had {MAX_SEQUENCE} batches")
    _check_order(ledger, period)
    config = config or load_config()
    timings = timings if timings is not None else RunTimings()
    today = today or datetime.now(BEIJING).date()
    execution = execution_date or config.execution_date(period)
    if execution > config.payday_of(period):
        raise InvalidInput("execution_date", f"{execution.isoformat()} is after payday "
                           f"{config.payday_of(period).isoformat()}")
    created_at = config.created_at(period, today)

    t = time.perf_counter()
    timings.add("checks", t - started)
    # What last month's batch paid each pensioner, for the comparison: taken from what its
    # draft kept (payout_engine.line_summaries), else its lines read, a big batch's by a
    # forked child while the month is computed (payout_engine.last_month).
    last_month = LastMonth(ledger, _previous(ledger, period), config.drafted_files())
    try:
        fed = last_month.feed()
        timings.add("previous_batch", time.perf_counter() - t)
        rules_version = ledger.ruleset().version
        computed, fed = _compute(ledger, period, sequence, fed, progress, timings,
                                 last_month, file_format=file_format)
        lines, payments, excluded = computed.lines, computed.payments, computed.excluded
        t = time.perf_counter()
        one_off_lines = _one_off_lines(ledger, period, sequence, execution, lines, payments,
                                       excluded)
        timings.add("one_offs", time.perf_counter() - t)
        if not lines:
            raise Refused("period", f"nobody is owed a pension for {period} "
                          f"({len(excluded)} excluded for their bank details): no batch "
                          "drafted")
        # The files first: last month's lines may still be being read.
        t = time.perf_counter()
        files = bank_files(period=period, sequence=sequence, file_format=file_format,
                           created_at=created_at, execution_date=execution, payments=payments,
                           config=config, made=computed.fragments)
        manifest = build_manifest(files)
        timings.add("files", time.perf_counter() - t)
        t = time.perf_counter()
        comparison = last_month.comparison(fed)
        for line in one_off_lines:
            comparison.one_off(line)
        timings.add("previous_batch", time.perf_counter() - t)
    finally:
        t = time.perf_counter()
        last_month.close()
        timings.add("child_exit", time.perf_counter() - t)
    t = time.perf_counter()
    record = comparison.result()
    record["excluded"] = {"count": len(excluded), "listed": excluded[:MAX_EXCLUDED_LISTED]}
    record["files"] = file_records(files, manifest)
    record["file_settings"] = config.file_settings()
    timings.add("files", time.perf_counter() - t)
    # What next month's comparison reads of this batch, kept beside its files.
    t = time.perf_counter()
    summaries = line_summaries.pack(
        comparison.summaries, [(line.participant_id, line.amount_fen) for line in one_off_lines])
    record["line_summaries"] = {"sha256": line_summaries.sha256(summaries),
                                "lines": len(comparison.summaries)}
    timings.add("line_summaries", time.perf_counter() - t)

    t = time.perf_counter()
    spool = config.drafted_files()
    # The files and summaries are kept (written: the interpreter's lock is let go) while
    # the draft's events are made and stored, and removed if another run's batch stands.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="keep-files") as keeper:
        kept = keeper.submit(_keep, spool, manifest.hash, files, summaries)
        batch = None
        try:
            batch = _draft_or_theirs(ledger, period, sequence, file_format, created_at,
                                     execution, lines, manifest.hash, record, actor,
                                     rules_version)
        finally:
            timings.add("draft_events", time.perf_counter() - t)
            t = time.perf_counter()
            kept.result()
            if batch is None or batch.manifest_sha256 != manifest.hash:
                drafted_files.discard(spool, manifest.hash)
    timings.add("keep_files", time.perf_counter() - t)
    return batch


def _draft_or_theirs(ledger: Ledger, period: str, sequence: int, file_format: str,
                     created_at: datetime, execution: date, lines: list[BatchLine],
                     manifest_sha256: str, record: dict[str, Any], actor: str,
                     rules_version: int) -> PayoutBatch:
    """The batch drafted, or the one another run drafted first (theirs stands)."""
    try:
        return disbursement.draft(
            ledger, period=period, sequence=sequence, file_format=file_format,
            created_at=created_at, execution_date=execution, lines=lines,
            manifest_sha256=manifest_sha256, comparison=record, actor=actor,
            rules_version=rules_version)
    except Refused:
        info = live_batch(ledger, period)
        if info is None:
            raise
        return disbursement.get_batch(ledger, info.id)


def _keep(spool: Path | None, manifest_sha256: str, files: list[BankFile],
          summaries: bytes) -> None:
    drafted_files.keep(spool, manifest_sha256, files)
    line_summaries.keep(spool, summaries)


@dataclass
class Computed:
    """What computing the month for some of the register's pensioners gives."""

    lines: list[BatchLine] = field(default_factory=list)
    payments: list[PaymentInstruction] = field(default_factory=list)
    excluded: list[dict[str, str]] = field(default_factory=list)
    # The child's payments (run_in_two), made into pain.001 fragments already: the files
    # sort them in with `payments` by end-to-end id.
    fragments: list[Fragment] = field(default_factory=list)
    read: int = 0  # pensioners read


def _compute(ledger: Ledger, period: str, sequence: int, comparison: Feed,
             progress: Progress | None, timings: RunTimings,
             last_month: LastMonth | None = None, *, file_format: str = "pain001"
             ) -> tuple[Computed, Feed]:
    """The month for every pensioner of the register: this process's part of them, and a
    forked child's when the register is big (payout_engine.run_in_two). Returns the lines,
    payments (the child's as pain.001 fragments) and exclusions in the register's order, and
    the comparison fed with every pensioner (last_month: what it compares with, read
    meanwhile)."""
    t = time.perf_counter()
    due_for = DueCalculator.under(ledger.ruleset(), period)
    from_id = run_in_two.can_run_in_two(ledger, file_format)
    part = (None if from_id is None else
            run_in_two.ChildPart(ledger, period, sequence, due_for, from_id, progress))
    timings.add("split", time.perf_counter() - t)
    out = Computed()

    def page(fed: Feed) -> Feed:
        if progress is not None:
            progress(PROGRESS_EVERY)
        if part is not None:
            part.take()
        # Last month's lines may be in by now: compare directly from here on.
        return fed if last_month is None else last_month.ready(fed)

    try:
        pensioners = timed(ledger.pensioners_by_id(below_id=from_id), timings)
        comparison = compute_into(out, pensioners, due_for, period, sequence, comparison,
                                  timings, page)
        if progress is not None:
            progress(out.read % PROGRESS_EVERY)
        lowered = (due_for.lowered_count, due_for.lowered_fen, due_for.lowered_ids)
        if part is not None:
            t = time.perf_counter()
            lines, comparison = part.finish(comparison)
            timings.add("child_results", time.perf_counter() - t - part.waited_s)
            timings.add("wait_for_child", part.waited_s)
            out.lines += lines
            out.excluded += part.excluded
            out.fragments = part.fragments
            count, fen, ids = part.lowered
            lowered = (lowered[0] + count, lowered[1] + fen, lowered[2] + ids)
            for name, seconds in part.timings.items():
                timings.add(f"child_{name}", seconds)
    finally:
        if part is not None:
            t = time.perf_counter()
            part.close()
            timings.add("child_exit", time.perf_counter() - t)
    comparison.lowered(*lowered)
    return out, comparison


def compute_into(out: Computed, pensioners: Iterator[tuple[UUID, PensionerFacts]],
                 due_for: DueCalculator, period: str, sequence: int, comparison: F,
                 timings: RunTimings, page: Callable[[F], F]) -> F:
    """Each pensioner's line and payment (or why there is none) into `out`, and each fed to
    the comparison, in the register's order; page(comparison) after every PROGRESS_EVERY
    pensioners gives what to feed from then on. Returns that."""
    # Funding works out again, by the same calculation, only the lines of pensioners changed
    # since (or all of them after a new rule version).
    lines, payments, excluded = out.lines, out.payments, out.excluded
    n = out.read
    t_compute = 0.0
    for pid, f in pensioners:
        t = time.perf_counter()
        n += 1
        if n % PROGRESS_EVERY == 0:
            out.read = n
            comparison = page(comparison)
        due = due_for(f)
        if due is None or due.amount_fen <= 0:
            comparison.not_paid(f)
            t_compute += time.perf_counter() - t
            continue
        why = None
        if f.bank is None:
            why = "no bank details"
        else:
            line = line_of(period, sequence, pid, f, due)
            try:
                payment = instruction(period, line)
            except InvalidInstruction as e:
                # One unusable record does not stop a county's payroll: the months stay owed
                # and are paid once the details are corrected.
                why = str(e)
        if why is not None:
            excluded.append({"participant_id": f.participant_id, "reason": why})
            comparison.not_paid(f, excluded=True)
        else:
            lines.append(line)
            payments.append(payment)
            comparison.paid(f, line)
        t_compute += time.perf_counter() - t
    out.read = n
    timings.add("compute", t_compute)
    return comparison


def line_of(period: str, sequence: int, pid: UUID, f: PensionerFacts, due: Due) -> BatchLine:
    """The batch line paying `due` to the pensioner of facts `f` (who has bank details).
    Every value is of its field's type by construction (Due, PensionerFacts), and the
    payee's fields are checked by instruction() as the line is made into a payment: a
    million lines a month are not validated again (Immutable.trusted)."""
    assert f.bank is not None and due.amount_fen > 0
    return BatchLine.trusted({
        "end_to_end_id": end_to_end_id(period, sequence, pid), "participant_id": pid,
        "months": list(due.months), "basic_fen": due.basic_fen,
        "account_by_source_fen": due.account_by_source_fen,
        "pooled_account_fen": due.pooled_account_fen, "deduction_fen": due.deduction_fen,
        "amount_fen": due.amount_fen, "rule_versions": list(due.rule_versions),
        "payee_name": f.name, "account_number": f.bank.account_number,
        "bank_code": f.bank.bank_code, "id_number": f.id_number,
        "account_name": f.bank.account_name, "kind": MONTHLY_PENSION,
        "register_version": f.version, "basic_by_month": due.basic_by_month,
        "rerated_fen": due.rerated_fen, "rated_version": due.rated_version})


def _one_off_lines(ledger: Ledger, period: str, sequence: int, on: date,
                   lines: list[BatchLine], payments: list[PaymentInstruction],
                   excluded: list[dict[str, str]]) -> list[BatchLine]:
    """A line for each open one-off payable (ledger.open_one_offs: neither sent nor held),
    added to lines and payments (or to excluded); returns the lines added, for the
    comparison. Few a month, so each participant is read whole (its ID number and
    version)."""
    added: list[BatchLine] = []
    open_ = ledger.open_one_offs()
    if not open_:
        return added
    rule_version = ledger.ruleset().in_force(on, "execution_date").label
    with_pension = {line.participant_id for line in lines}
    participants: dict[UUID, Any] = {}
    for o in open_:
        why = None
        if o.participant_id in with_pension:
            # Funding books one line per participant at the drafted version + 1 by the fast
            # path; the one-off waits for the next run.
            why = f"{o.kind}: paid by the next run (a pension line for this participant)"
        elif o.payee_account is None:
            why = f"{o.kind}: no payee account"
        if why is None:
            p = participants.get(o.participant_id)
            if p is None:
                p = participants[o.participant_id] = ledger.repository.get(o.participant_id)
            assert o.payee_account is not None
            line = BatchLine(
                end_to_end_id=end_to_end_id(period, sequence, o.participant_id, o.kind),
                participant_id=o.participant_id, months=[], basic_fen=0,
                account_by_source_fen={}, pooled_account_fen=0, deduction_fen=0,
                amount_fen=o.amount_fen, rule_versions=[rule_version], payee_name=o.payee,
                account_number=o.payee_account.account_number,
                bank_code=o.payee_account.bank_code, id_number=p.id_number,
                account_name=o.payee_account.account_name, kind=o.kind,
                register_version=p.version)
            try:
                payment = instruction(period, line)
            except InvalidInstruction as e:
                why = f"{o.kind}: {e}"
        if why is not None:
            # Stays owed (the register row is untouched) until the details are corrected.
            excluded.append({"participant_id": str(o.participant_id), "reason": why})
            continue
        lines.append(line)
        payments.append(payment)
        added.append(line)
    return added


# ---- the rest of the lifecycle, each step safe to repeat after a crash ---------------------

def approve(ledger: Ledger, batch_id: UUID, manifest_sha256: str, actor: str
            ) -> tuple[PayoutBatch, bool]:
    """Approve the batch's exact manifest hash (maker-checker in the ledger). Returns the
    batch and whether this call approved it (False: it was approved already, for this hash)."""
    # No collection from the first line on: a drafted batch of a million lines still in
    # memory makes each one walk twenty million objects (seconds).
    with collector_paused():
        info = batch_info(ledger, batch_id)
        if info is None:
            raise Refused("batch", f"no batch {batch_id}")
        if info.state not in ("drafted", "cancelled") and manifest_sha256 == info.manifest_sha256:
            return disbursement.get_batch(ledger, batch_id, lines=False), False
        return disbursement.approve(ledger, batch_id, manifest_sha256, actor), True


def fund(ledger: Ledger, batch_id: UUID, *, value_date: date, actor: str,
         progress: Progress | None = None) -> dict[str, Any]:
    """Move the money and book every payment, in one transaction; once only."""
    with collector_paused():  # from the first line on, as in approve
        info = batch_info(ledger, batch_id)
        if info is None:
            raise Refused("batch", f"no batch {batch_id}")
        if info.state not in UNFUNDED and info.state != "cancelled":
            return {"payments": info.line_count, "total_fen": info.total_fen,
                    "replayed": True}
        return disbursement.fund(ledger, batch_id, value_date=value_date, actor=actor,
                                 progress=progress)


def cancel(ledger: Ledger, batch_id: UUID, reason: str, actor: str,
           config: PayoutConfig | None = None) -> PayoutBatch:
    """Set aside a drafted or approved batch so the month can be drafted again (next
    sequence). Needs PayoutBatch.Cancelled and disbursement.cancel in the ledger."""
    step = getattr(disbursement, "cancel", None)
    if step is None:
        raise Refused("batch", "the ledger cannot cancel a batch yet (PayoutBatch.Cancelled "
                      "is missing)")
    batch: PayoutBatch = step(ledger, batch_id, reason=reason, actor=actor)
    drafted_files.discard((config or load_config()).drafted_files(), batch.manifest_sha256)
    return batch
