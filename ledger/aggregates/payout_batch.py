"""PayoutBatch: one month's pension payments, from draft to closed, every step an event.

drafted (lines, totals, manifest hash) -> approved by a second person, for that exact
manifest hash -> funded (fiscal -> expenditure, reserved in flight) -> exported ->
each payment settled or failed (a settled one may still come back) -> closed.
"""

from __future__ import annotations

import functools
from datetime import date, datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Literal
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger.aggregates.base import Aggregate, Immutable
from ledger.aggregates.participant import ONE_OFF_KINDS
from ledger.errors import InvalidInput, Refused

MAX_LINES_PER_EVENT = 10_000
MAX_LINES = 20_000_000
FILE_FORMATS = ("pain001", "domestic")

BatchState = Literal["drafted", "approved", "funded", "exported", "closed", "cancelled"]
# What a line pays. Funding books each kind as its own participant event: a monthly pension
# is a PensionPaid, a one-off payable (participant.ONE_OFF_KINDS) a OneOffPaid.
MONTHLY_PENSION = "monthly_pension"
LINE_KINDS = (MONTHLY_PENSION, *ONE_OFF_KINDS)
AMOUNT_FEN, KIND, END_TO_END_ID = (attrgetter(name) for name in
                                   ("amount_fen", "kind", "end_to_end_id"))
# The EndToEndId's first letter: a participant's one-offs and pension in the same batch
# must have different ids, and the bank's answers must say which was paid.
E2E_LETTERS = {MONTHLY_PENSION: "P", "funeral_grant": "F", "inheritance": "I", "refund": "R",
               "pension_owed_at_death": "D"}


class BatchLine(Immutable):
    end_to_end_id: str
    participant_id: UUID
    months: list[str]
    basic_fen: int
    account_by_source_fen: dict[str, int]
    pooled_account_fen: int
    deduction_fen: int
    amount_fen: int
    rule_versions: list[str]
    payee_name: str
    account_number: str
    bank_code: str
    id_number: str
    account_name: str = ""  # the account holder (户名) when not the payee (姓名)
    kind: str = MONTHLY_PENSION
    # The pensioner's version in the register the line was computed from: funding pays the
    # line of a pensioner still at that version without computing again, and works out again
    # only the lines of those changed since. 0: unknown (a line drafted before versions were
    # recorded), which funding refuses.
    register_version: int = 0
    # ledger.payout.Due's: the basic pension by month when several are paid, the top-ups
    # of months paid before (in basic_fen), the rule-set version every month paid is then
    # rated by.
    basic_by_month: dict[str, int] = {}
    rerated_fen: dict[str, int] = {}
    rated_version: int = 0


class Outcome(Immutable):
    end_to_end_id: str
    amount_fen: int
    reason_code: str = ""


def end_to_end_id(period: str, sequence: int, participant_id: UUID,
                  kind: str = MONTHLY_PENSION) -> str:
    """Stable across re-runs of the same batch: the same pensioner and month, the same id:
    the kind's letter, the month, the sequence and the first 24 hex digits of the
    participant id (its top 96 bits), upper case. A million a month: the prefix is made
    once, the digits from the id's integer."""
    return _e2e_prefix(period, sequence, kind) + "%024X" % (participant_id.int >> 32)


@functools.lru_cache(maxsize=64)
def _e2e_prefix(period: str, sequence: int, kind: str) -> str:
    return f"{E2E_LETTERS[kind]}{period.replace('-', '')}{sequence:02d}"


class PayoutBatch(Aggregate):
    if TYPE_CHECKING:  # state set by the events' apply(); not constructor fields
        period: str
        sequence: int
        state: BatchState
        lines: dict[str, BatchLine]
        outcomes: dict[str, str]
        drafted_by: str
        manifest_sha256: str
        file_format: str
        created_at: datetime
        execution_date: date
        line_count: int
        total_fen: int
        comparison: dict[str, Any]
        rules_version: int
        approved_by: str | None
        exported_files: list[str]

    @staticmethod
    def id_for(period: str, sequence: int) -> UUID:
        return uuid5(NAMESPACE_URL, f"pension-ledger:payout:{period}:{sequence}")

    class Drafted(Aggregate.Created):
        period: str
        sequence: int
        file_format: str
        created_at: datetime          # fixed here so re-exports give the same bytes
        execution_date: date
        line_count: int
        total_fen: int
        manifest_sha256: str
        comparison: dict[str, Any]
        # The rule set's version the lines were computed with: a rule version published
        # after the draft may change what is owed, so funding then refuses the batch.
        rules_version: int = 0

        def apply(self, b: Any) -> None:
            b.period = self.period
            b.sequence = self.sequence
            b.file_format = self.file_format
            b.created_at = self.created_at
            b.execution_date = self.execution_date
            b.line_count = self.line_count
            b.total_fen = self.total_fen
            b.manifest_sha256 = self.manifest_sha256
            b.comparison = self.comparison
            b.rules_version = self.rules_version
            b.drafted_by = self.actor
            b.state = "drafted"
            b.lines = {}
            b.outcomes = {}
            b.approved_by = None
            b.exported_files = []

    class LinesAdded(Aggregate.Event):
        chunk_no: int
        lines: list[BatchLine]

        def apply(self, b: Any) -> None:
            count = len(b.lines)
            b.lines.update(zip(map(END_TO_END_ID, self.lines), self.lines, strict=True))
            assert len(b.lines) == count + len(self.lines), "an end-to-end id twice"

    class Approved(Aggregate.Event):
        manifest_sha256: str

        def apply(self, b: Any) -> None:
            b.state = "approved"
            b.approved_by = self.actor

    class Funded(Aggregate.Event):
        total_fen: int
        value_date: date
        reference: str

        def apply(self, b: Any) -> None:
            b.state = "funded"

    class Exported(Aggregate.Event):
        file_format: str
        manifest_sha256: str
        files: list[str]

        def apply(self, b: Any) -> None:
            b.state = "exported"
            b.exported_files = self.files

    class PaymentsSettled(Aggregate.Event):
        items: list[Outcome]
        value_date: date
        source_file_sha256: str

        def apply(self, b: Any) -> None:
            for o in self.items:
                b.outcomes[o.end_to_end_id] = "settled"

    class PaymentsFailed(Aggregate.Event):
        items: list[Outcome]
        value_date: date
        source_file_sha256: str

        def apply(self, b: Any) -> None:
            for o in self.items:
                b.outcomes[o.end_to_end_id] = "failed"

    class PaymentsReturned(Aggregate.Event):
        items: list[Outcome]
        value_date: date
        source_file_sha256: str

        def apply(self, b: Any) -> None:
            for o in self.items:
                b.outcomes[o.end_to_end_id] = "returned"

    class Cancelled(Aggregate.Event):
        reason: str

        def apply(self, b: Any) -> None:
            b.state = "cancelled"

    class Closed(Aggregate.Event):
        settled_fen: int
        failed_fen: int
        returned_fen: int

        def apply(self, b: Any) -> None:
            b.state = "closed"

    # ---- commands -----------------------------------------------------------------

    @classmethod
    def draft(cls, *, period: str, sequence: int, file_format: str, created_at: datetime,
              execution_date: date, lines: list[BatchLine], manifest_sha256: str,
              comparison: dict[str, Any], actor: str, rules_version: int = 0) -> PayoutBatch:
        if file_format not in FILE_FORMATS:
            raise InvalidInput("format", f"must be one of {', '.join(FILE_FORMATS)}")
        if len(lines) > MAX_LINES:
            raise Refused("lines", f"a batch holds at most {MAX_LINES} payments")
        # Each check over a million lines a month, by map and the built-ins (in C): by
        # generators they took 4-5 s of a month's run on a slow machine.
        amounts = list(map(AMOUNT_FEN, lines))
        if amounts and min(amounts) <= 0:
            raise Refused("lines", "every payment in a batch must be greater than zero")
        kinds = list(map(KIND, lines))
        if not set(kinds) <= set(LINE_KINDS):
            raise Refused("lines", f"a line's kind is one of {', '.join(LINE_KINDS)}")
        pensions = kinds.count(MONTHLY_PENSION)
        if kinds[:pensions].count(MONTHLY_PENSION) != pensions:
            # Funding gives each LinesAdded chunk's payments their event ids from this order
            # (ledger.disbursement._Payments.add_in_two).
            raise Refused("lines", "the monthly pensions come first, then the one-off payments")
        if len(set(map(END_TO_END_ID, lines))) != len(lines):
            raise Refused("lines", "an end-to-end id appears twice")
        total = sum(amounts)
        batch = cls._create(cls.Drafted, id=cls.id_for(period, sequence), period=period,
                            sequence=sequence, file_format=file_format, created_at=created_at,
                            execution_date=execution_date, line_count=len(lines),
                            total_fen=total, manifest_sha256=manifest_sha256,
                            comparison=comparison, rules_version=rules_version,
                            actor=actor)
        for i in range(0, len(lines), MAX_LINES_PER_EVENT):
            batch.trigger_event(cls.LinesAdded, chunk_no=i // MAX_LINES_PER_EVENT,
                                lines=lines[i:i + MAX_LINES_PER_EVENT], actor=actor)
        return batch

    def approve(self, manifest_sha256: str, actor: str) -> None:
        if self.state != "drafted":
            raise Refused("batch", f"batch is {self.state}; only a drafted batch is approved")
        if actor == self.drafted_by:
            raise Refused("actor", f"{actor} drafted this batch and may not approve it "
                          "(maker-checker)")
        if manifest_sha256 != self.manifest_sha256:
            raise Refused("manifest_hash", "does not match the drafted batch's manifest: "
                          "approve the exact files you checked")
        self.trigger_event(self.Approved, manifest_sha256=manifest_sha256, actor=actor)

    def fund(self, value_date: date, reference: str, actor: str) -> None:
        if self.state != "approved":
            raise Refused("batch", f"batch is {self.state}; funds move only after approval")
        self.trigger_event(self.Funded, total_fen=self.total_fen, value_date=value_date,
                           reference=reference, actor=actor)

    def mark_exported(self, file_format: str, manifest_sha256: str, files: list[str],
                      actor: str) -> None:
        if self.state not in ("funded", "exported"):
            raise Refused("batch", f"batch is {self.state}; export follows funding")
        if manifest_sha256 != self.manifest_sha256:
            raise Refused("manifest_hash", "the files differ from the approved manifest")
        if self.state == "funded":
            self.trigger_event(self.Exported, file_format=file_format,
                               manifest_sha256=manifest_sha256, files=files, actor=actor)

    def _check_outcomes(self, items: list[Outcome], allowed_from: tuple[str | None, ...],
                        states: tuple[str, ...] = ("exported",)) -> None:
        if self.state not in states:
            raise Refused("batch", f"batch is {self.state}; the bank has no payment of it "
                          "to answer for")
        for o in items:
            line = self.lines.get(o.end_to_end_id)
            if line is None:
                raise Refused("end_to_end_id", f"{o.end_to_end_id} is not in batch "
                              f"{self.period}/{self.sequence}")
            if o.amount_fen != line.amount_fen:
                raise Refused("amount", f"{o.end_to_end_id}: the bank reports {o.amount_fen} "
                              f"fen, the batch sent {line.amount_fen} fen")
            if self.outcomes.get(o.end_to_end_id) not in allowed_from:
                raise Refused("end_to_end_id", f"{o.end_to_end_id} is already "
                              f"{self.outcomes.get(o.end_to_end_id)}")

    def settle(self, items: list[Outcome], value_date: date, file_sha256: str,
               actor: str) -> None:
        self._check_outcomes(items, (None,))
        self.trigger_event(self.PaymentsSettled, items=items, value_date=value_date,
                           source_file_sha256=file_sha256, actor=actor)

    def fail(self, items: list[Outcome], value_date: date, file_sha256: str,
             actor: str) -> None:
        self._check_outcomes(items, (None,))
        self.trigger_event(self.PaymentsFailed, items=items, value_date=value_date,
                           source_file_sha256=file_sha256, actor=actor)

    def returned(self, items: list[Outcome], value_date: date, file_sha256: str,
                 actor: str) -> None:
        # A settled payment can come back after the batch closed (account closed, holder
        # deceased): it stays reversible.
        self._check_outcomes(items, ("settled",), states=("exported", "closed"))
        self.trigger_event(self.PaymentsReturned, items=items, value_date=value_date,
                           source_file_sha256=file_sha256, actor=actor)

    def cancel(self, reason: str, actor: str) -> None:
        """Set aside before any money moved; the month is drafted again."""
        if self.state not in ("drafted", "approved"):
            raise Refused("batch", f"batch is {self.state}; only a drafted or approved batch "
                          "is cancelled (a funded one has moved the money)")
        if not reason.strip() or len(reason) > 500:
            raise InvalidInput("reason", "must be 1 to 500 characters")
        self.trigger_event(self.Cancelled, reason=reason.strip(), actor=actor)

    def close(self, actor: str) -> None:
        if self.state != "exported":
            raise Refused("batch", f"batch is {self.state}; only an exported batch closes")
        pending = [e for e in self.lines if e not in self.outcomes]
        if pending:
            raise Refused("batch", f"{len(pending)} payment(s) have no answer from the bank")
        sums = {"settled": 0, "failed": 0, "returned": 0}
        for e2e, outcome in self.outcomes.items():
            sums[outcome] += self.lines[e2e].amount_fen
        self.trigger_event(self.Closed, settled_fen=sums["settled"], failed_fen=sums["failed"],
                           returned_fen=sums["returned"], actor=actor)
