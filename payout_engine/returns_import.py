"""What the bank sends back, booked: pain.002 (RJCT -> failed, ACSC -> settled), camt.054 and
camt.053 entries of the fund's expenditure account (a booked debit -> settled, a credit that
returns a payment -> returned), pacs.004 (returned after settlement) and the domestic 回盘
(paid -> settled, failed -> failed).

A file is read and checked whole before anything is booked: an EndToEndId that is not a
payment of a batch, an amount or a total that differs from what was sent, an answer that
contradicts one already booked, or a malformed structure refuses the whole file with an
error that names it. Booking goes through ledger.disbursement.answer_all, one transaction
for the whole file whatever batches it names, keyed by the file's SHA-256: the same file
imported twice books nothing the second time, and answers already booked from another file
(the camt.053 repeats the camt.054) are not booked again.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

from ledger import disbursement, resident_id
from ledger.aggregates.participant import DEATH_CHECK_REASONS, HOLD_REASONS
from ledger.aggregates.payout_batch import MONTHLY_PENSION, Outcome, PayoutBatch
from ledger.application import Ledger
from ledger.collector import collector_paused
from ledger.errors import NotFound, Refused
from ledger.postings import EXPENDITURE, IN_FLIGHT
from payout_engine.bankfiles import (
    AccountStatement,
    BankFile,
    BankFileError,
    DebitCreditNotification,
    DomesticReturn,
    MalformedFile,
    PaymentReturn,
    StatusReport,
    TotalsMismatch,
    check_domestic_return,
    payment_statuses,
    read_return_file,
)
from payout_engine.bankfiles.returns import SETTLED_STATUSES, BankMessage, Entry, Statement
from payout_engine.config import PayoutConfig, load_config

MAX_RETURN_FILE_BYTES = 512 * 1024 * 1024
MAX_LISTED = 1000  # held pensioners, death checks listed in a summary
Kind = Literal["settled", "failed", "returned"]
_E2E = re.compile(r"[PFIRD](\d{4})(\d{2})(\d{2})[0-9A-F]{24}")
_FILE_ID = re.compile(r"PO-(\d{4})(\d{2})-(\d{2})-\d{4}")


class ReturnRefused(Refused):
    """A return file refused whole: nothing of it is booked."""

    def __init__(self, path: str, rule: str) -> None:
        super().__init__("file", f"{path}: {rule}; nothing booked")


@dataclass(frozen=True)
class Answer:
    end_to_end_id: str
    kind: Kind
    amount_fen: int | None
    reason_code: str
    value_date: date


@dataclass
class _BatchAnswers:
    batch: PayoutBatch
    answers: dict[str, list[Answer]] = field(default_factory=dict)


def batch_of(e2e: str) -> tuple[str, int] | None:
    """(period, sequence) encoded in a payout EndToEndId, or None if it is not one."""
    m = _E2E.fullmatch(e2e)
    return None if m is None else (f"{m.group(1)}-{m.group(2)}", int(m.group(3)))


def _day(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text[:10]) if text else None
    except ValueError:
        return None


# ---- from each kind of message to answers ---------------------------------------------------

class _Reader:
    def __init__(self, ledger: Ledger, config: PayoutConfig, where: str) -> None:
        self.ledger = ledger
        self.config = config
        self.where = where
        self.batches: dict[tuple[str, int], PayoutBatch] = {}
        self.pending = 0          # payments reported accepted, not yet settled or failed
        self.not_payouts = 0      # entries of the account that are not payments of a batch
        self.ignored: list[str] = []

    def refuse(self, rule: str) -> ReturnRefused:
        return ReturnRefused(self.where, rule)

    def batch(self, period: str, sequence: int, named_by: str) -> PayoutBatch:
        key = (period, sequence)
        if key not in self.batches:
            try:
                self.batches[key] = disbursement.get_batch(
                    self.ledger, PayoutBatch.id_for(period, sequence))
            except NotFound:
                raise self.refuse(f"{named_by} names batch {period}/{sequence}, which does "
                                  "not exist") from None
        return self.batches[key]

    def sent_file(self, file_id: str) -> BankFile:
        """The file a pain.002 or 回盘 answers, as the draft recorded it."""
        m = _FILE_ID.fullmatch(file_id)
        if m is None:
            raise self.refuse(f"it answers {file_id!r}, which is not a payout file of this "
                              "fund")
        batch = self.batch(f"{m.group(1)}-{m.group(2)}", int(m.group(3)), f"file {file_id}")
        record = next((r for r in batch.comparison.get("files", [])
                       if r["message_id"] == file_id), None)
        if record is None:
            raise self.refuse(f"batch {batch.period}/{batch.sequence} has no file {file_id}")
        first, last = record["first_end_to_end_id"], record["last_end_to_end_id"]
        payments = tuple(sorted((e, line.amount_fen) for e, line in batch.lines.items()
                                if first <= e <= last))
        assert len(payments) == record["nb_of_txs"], "the draft's file record is its lines"
        return BankFile(name=record["name"], content=b"", message_id=file_id,
                        nb_of_txs=record["nb_of_txs"], ctrl_sum_fen=record["ctrl_sum_fen"],
                        payments=payments)

    # -- pain.002 --
    def status_report(self, report: StatusReport) -> list[Answer]:
        sent = self.sent_file(report.original_message_id)
        on = _day(report.created_at)
        if on is None:
            raise self.refuse(f"CreDtTm {report.created_at!r} is not a date and time")
        out = []
        for e2e, (status, reason) in sorted(payment_statuses(report, sent).items()):
            if status in ("RJCT", "CANC"):
                out.append(Answer(e2e, "failed", None, reason or status, on))
            elif status in SETTLED_STATUSES:
                out.append(Answer(e2e, "settled", None, "", on))
            else:
                self.pending += 1
        return out

    # -- camt.054 / camt.053 --
    def entries(self, account: str, entries: Iterable[Entry], fallback: date | None
                ) -> list[Answer]:
        out = []
        for e in entries:
            if e.status != "BOOK":
                self.pending += len(e.transactions) or 1
                continue
            on = e.booking_date or e.value_date or fallback
            payouts = [t for t in e.transactions
                       if t.end_to_end_id and batch_of(t.end_to_end_id) is not None]
            if not payouts:
                if e.credit_debit == "DBIT" and e.end_to_end_ids:
                    raise self.refuse(f"a debit of {e.amount_fen} fen on {account} carries "
                                      f"EndToEndId {e.end_to_end_ids[0]}, which is not a "
                                      "payment of this fund")
                self.not_payouts += 1
                continue
            if e.reversal:
                raise self.refuse(f"entry {e.reference} is a reversal; reversals are "
                                  "booked by hand, not imported")
            if on is None:
                raise self.refuse(f"entry {e.reference} has no booking or value date")
            if len(payouts) != len(e.transactions):
                raise self.refuse(f"entry {e.reference} mixes payouts with other movements")
            single = len(payouts) == 1
            for t in payouts:
                assert t.end_to_end_id is not None
                amount = t.amount_fen if t.amount_fen is not None else (
                    e.amount_fen if single else None)
                if amount is None:
                    raise self.refuse(f"entry {e.reference}: the amount of "
                                      f"{t.end_to_end_id} is not stated")
                if t.credit_debit == "DBIT":
                    out.append(Answer(t.end_to_end_id, "settled", amount, "", on))
                else:
                    out.append(Answer(t.end_to_end_id, "returned", amount,
                                      t.return_reason or "", on))
        return out

    def notification(self, message: DebitCreditNotification) -> list[Answer]:
        out = []
        for n in message.notifications:
            if not self.config.is_fund_account(n.account):
                self.ignored.append(f"notification {n.id} of account {n.account}")
                continue
            out += self.entries(n.account, n.entries, _day(message.created_at))
        return out

    def statement(self, message: AccountStatement) -> tuple[list[Answer], list[Statement]]:
        out, ours = [], []
        for s in message.statements:
            if not self.config.is_fund_account(s.account):
                self.ignored.append(f"statement {s.id} of account {s.account}")
                continue
            ours.append(s)
            out += self.entries(s.account, s.entries, s.to_date or _day(message.created_at))
        return out, ours

    # -- pacs.004 --
    def payment_return(self, message: PaymentReturn) -> list[Answer]:
        out = []
        for t in message.transactions:
            on = t.settlement_date or _day(message.created_at)
            if on is None:
                raise self.refuse(f"the return of {t.original_end_to_end_id} has no date")
            out.append(Answer(t.original_end_to_end_id, "returned", t.returned_amount_fen,
                              t.reason_code or "", on))
        return out

    # -- 回盘 --
    def domestic(self, answer: DomesticReturn) -> list[Answer]:
        check_domestic_return(answer, self.sent_file(answer.file_id))
        return [Answer(r.end_to_end_id, "settled" if r.paid else "failed", r.amount_fen,
                       "" if r.paid else r.reason_code, answer.payment_date)
                for r in answer.results]


# ---- checking answers against the batches ---------------------------------------------------

def _merge(reader: _Reader, answers: list[Answer]) -> dict[tuple[str, int], _BatchAnswers]:
    out: dict[tuple[str, int], _BatchAnswers] = {}
    for a in answers:
        found = batch_of(a.end_to_end_id)
        if found is None:
            raise reader.refuse(f"EndToEndId {a.end_to_end_id} is not a payment of this fund")
        batch = reader.batch(*found, named_by=f"EndToEndId {a.end_to_end_id}")
        line = batch.lines.get(a.end_to_end_id)
        if line is None:
            raise reader.refuse(f"EndToEndId {a.end_to_end_id} is not in batch "
                                f"{batch.period}/{batch.sequence}")
        if a.amount_fen is not None and a.amount_fen != line.amount_fen:
            raise TotalsMismatch(f"{a.end_to_end_id} is {a.amount_fen} fen in the file, "
                                 f"{line.amount_fen} fen was sent")
        out.setdefault(found, _BatchAnswers(batch)).answers.setdefault(
            a.end_to_end_id, []).append(a)
    return out


@dataclass
class _Plan:
    settled: list[Outcome] = field(default_factory=list)
    failed: list[Outcome] = field(default_factory=list)
    returned: list[Outcome] = field(default_factory=list)
    already: int = 0
    dates: list[date] = field(default_factory=list)


def _plan(reader: _Reader, group: _BatchAnswers) -> _Plan:
    """What is new in the file for one batch, given what the batch already knows."""
    batch, plan = group.batch, _Plan()
    where = f"batch {batch.period}/{batch.sequence}"
    if batch.state not in ("exported", "closed"):
        raise reader.refuse(f"{where} is {batch.state}: its files were not exported, so the "
                            "bank cannot answer for them (export it first)")
    for e2e, answers in sorted(group.answers.items()):
        kinds = {a.kind for a in answers}
        if kinds == {"settled", "failed"} or "failed" in kinds and "returned" in kinds:
            raise reader.refuse(f"{e2e} is reported both {' and '.join(sorted(kinds))}")
        now = batch.outcomes.get(e2e)
        amount = batch.lines[e2e].amount_fen
        reason = next((a.reason_code for a in answers if a.reason_code), "")
        on = max(a.value_date for a in answers)
        if "failed" in kinds:
            if now == "failed":
                plan.already += 1
                continue
            if now is not None:
                raise reader.refuse(f"{e2e} is reported failed but is {now} in {where}")
            if batch.state == "closed":
                raise reader.refuse(f"{e2e}: {where} is closed")
            plan.failed.append(Outcome(end_to_end_id=e2e, amount_fen=amount,
                                       reason_code=reason))
        elif "returned" in kinds:
            if now == "returned":
                plan.already += 1
                continue
            if now == "failed":
                raise reader.refuse(f"{e2e} is reported returned but failed in {where}")
            if now is None:  # the return is the first we hear of it: it had settled
                if batch.state == "closed":
                    raise reader.refuse(f"{e2e}: {where} is closed")
                plan.settled.append(Outcome(end_to_end_id=e2e, amount_fen=amount))
            plan.returned.append(Outcome(end_to_end_id=e2e, amount_fen=amount,
                                         reason_code=reason))
        else:
            if now in ("settled", "returned"):
                plan.already += 1
                continue
            if now == "failed":
                raise reader.refuse(f"{e2e} is reported settled but failed in {where}")
            plan.settled.append(Outcome(end_to_end_id=e2e, amount_fen=amount))
        plan.dates.append(on)
    return plan


# ---- the import -------------------------------------------------------------------------

def import_returns(ledger: Ledger, path: str | Path, *, actor: str,
                   config: PayoutConfig | None = None) -> dict[str, Any]:
    """Book one file from the bank. Returns a summary: what was booked per batch, what was
    booked before, pensioners held until their bank details change (AC01/AC04...), pensions
    suspended for a death check (MD07), and the fund account's statement balance."""
    with collector_paused():
        return _import(ledger, path, actor, config or load_config())


def _import(ledger: Ledger, path: str | Path, actor: str, config: PayoutConfig
            ) -> dict[str, Any]:
    where = str(path)
    p = Path(path)
    if not p.is_file():
        raise NotFound("file", where)
    if p.stat().st_size > MAX_RETURN_FILE_BYTES:
        raise ReturnRefused(where, f"more than {MAX_RETURN_FILE_BYTES} bytes")
    data = p.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    reader = _Reader(ledger, config, where)
    try:
        message = read_return_file(data)
        kind, answers, statements = _answers(reader, message)
        groups = _merge(reader, answers)
        plans = {key: _plan(reader, g) for key, g in sorted(groups.items())}
    except BankFileError as e:
        kind_of = (TotalsMismatch if isinstance(e, TotalsMismatch) else
                   MalformedFile if isinstance(e, MalformedFile) else BankFileError)
        raise kind_of(f"{where}: {e}; nothing booked") from None

    if len(plans) > disbursement.MAX_BATCHES_PER_FILE:
        raise ReturnRefused(where, f"answers for {len(plans)} batches, more than the "
                            f"{disbursement.MAX_BATCHES_PER_FILE} one file may")

    # Everything is checked: now book every batch's answers in one transaction (idempotent
    # by the file's hash), so a crash leaves the whole file booked or none of it.
    summary: dict[str, Any] = {"file": where, "sha256": sha, "message": kind,
                               "batches": [], "held": [], "death_checks": [],
                               "pending": reader.pending, "not_payouts": reader.not_payouts,
                               "ignored": reader.ignored}
    to_book = [disbursement.BatchAnswers(groups[key].batch.id, max(plan.dates), plan.settled,
                                         plan.failed, plan.returned)
               for key, plan in plans.items() if plan.settled or plan.failed or plan.returned]
    booked_by_batch = (disbursement.answer_all(ledger, to_book, file_sha256=sha, actor=actor)
                       if to_book else {})
    for key, plan in plans.items():
        batch = groups[key].batch
        booked: dict[str, Any] = booked_by_batch.get(
            batch.id, {"settled": 0, "failed": 0, "returned": 0})
        summary["batches"].append(_batch_summary(ledger, batch, plan, booked, actor))
        for o in [*plan.failed, *plan.returned]:
            _flag(summary, batch, o)
    if statements:
        summary["statements"] = _statements(ledger, statements)
    return summary


def _answers(reader: _Reader, message: BankMessage | DomesticReturn
             ) -> tuple[str, list[Answer], list[Statement]]:
    if isinstance(message, StatusReport):
        return message.message_name, reader.status_report(message), []
    if isinstance(message, DebitCreditNotification):
        return message.message_name, reader.notification(message), []
    if isinstance(message, AccountStatement):
        answers, statements = reader.statement(message)
        return message.message_name, answers, statements
    if isinstance(message, PaymentReturn):
        return message.message_name, reader.payment_return(message), []
    return "domestic 回盘", reader.domestic(message), []


def _batch_summary(ledger: Ledger, batch: PayoutBatch, plan: _Plan, booked: dict[str, Any],
                   actor: str) -> dict[str, Any]:
    answered = set(batch.outcomes) | {o.end_to_end_id for o in
                                      [*plan.settled, *plan.failed, *plan.returned]}
    closed = batch.state == "closed"
    if not closed and len(answered) == batch.line_count:
        disbursement.close(ledger, batch.id, actor)  # every payment answered
        closed = True
    return {"batch": f"{batch.period}/{batch.sequence}", "batch_id": str(batch.id),
            "settled": len({o.end_to_end_id for o in plan.settled}
                           - {o.end_to_end_id for o in plan.returned}),
            "failed": len(plan.failed), "returned": len(plan.returned),
            "settled_fen": sum(o.amount_fen for o in plan.settled),
            "failed_fen": sum(o.amount_fen for o in plan.failed),
            "returned_fen": sum(o.amount_fen for o in plan.returned),
            "already_booked": plan.already, "replayed": bool(booked.get("replayed")),
            "answered": len(answered), "payments": batch.line_count, "closed": closed}


def _flag(summary: dict[str, Any], batch: PayoutBatch, o: Outcome) -> None:
    line = batch.lines[o.end_to_end_id]
    item = {"participant_id": str(line.participant_id),
            "id_number": resident_id.mask(line.id_number), "end_to_end_id": o.end_to_end_id,
            "reason_code": o.reason_code, "months": line.months, "kind": line.kind}
    if line.kind != MONTHLY_PENSION:
        # A one-off's payee, not the pensioner, is wrong or dead: the payable waits for
        # `pensioner payee`.
        if (o.reason_code in HOLD_REASONS + DEATH_CHECK_REASONS
                and len(summary["held"]) < MAX_LISTED):
            summary["held"].append({**item, "action": f"{line.kind} held until the payee's "
                                    "details change"})
    elif o.reason_code in HOLD_REASONS and len(summary["held"]) < MAX_LISTED:
        summary["held"].append({**item, "action": "next payment held until the bank "
                                "details change"})
    elif o.reason_code in DEATH_CHECK_REASONS and len(summary["death_checks"]) < MAX_LISTED:
        summary["death_checks"].append({**item, "action": "pension suspended; death check "
                                        "opened"})


def _statements(ledger: Ledger, statements: list[Statement]) -> list[dict[str, Any]]:
    positions = ledger.fund_positions()
    return [{"statement": s.id, "account": s.account, "to_date": s.to_date,
             "opening_fen": s.opening_fen, "closing_fen": s.closing_fen,
             "ledger_expenditure_fen": positions[EXPENDITURE],
             "ledger_in_flight_fen": positions[IN_FLIGHT]} for s in statements]
