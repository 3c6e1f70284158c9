"""A month's run compared with the previous month's batch: every change in headcount and in
amount is put down to a reason, and the reasons add up to the whole change.

Reasons, for a pensioner paid now and not last month:
  new_pensioner      the first payment of a pension that starts after last month
  arrears_paid       several months at once (resumed after a suspension, a failed payment
                     paid again once the bank details were fixed, a pension approved
                     with an earlier start)
  payment_resumed    paid again for one month (a hold lifted, a resumption without arrears)
paid last month and not now:
  died, suspended, terminated, held (bank details to fix after a failed payment),
  excluded (unusable bank details: see `excluded`), nothing_owed (every month already paid)
paid in both months with another amount (the first that applies):
  arrears_paid / arrears_ended   more or fewer months than last time
  deduction_started / deduction_ended / deduction_changed   overpayment recovery
  rerated_paid / rerated_ended   top-ups of months paid before, after a rule version
                     raised their basic pension (调待补发), paid now / paid last month
  rule_change        another rule version (the basic pension table changed)
  age_extra          same rules, another basic pension (an age extra began)
  other
and, with the amount unchanged:
  account_exhausted  the individual account ran out: the pool pays the account part now
one-off payments (funeral grant, inheritance, refund), a payment each, not a pensioner:
  one_off_payment    paid in this run
  one_off_paid_before  paid by last month's batch (a one-off is paid once)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol
from uuid import UUID

from ledger.aggregates.payout_batch import BatchLine

MAX_SAMPLES = 20  # participant ids kept per reason, for follow-up


class LineSummary(NamedTuple):
    """What a comparison needs of one payment. A tuple: a million are made from last month's
    lines each run (a frozen dataclass's __init__ took three times as long)."""

    amount_fen: int
    months: int
    basic_fen: int
    deduction_fen: int
    pooled_fen: int
    rule_versions: tuple[str, ...]
    rerated_fen: int = 0

    @classmethod
    def of(cls, line: BatchLine) -> LineSummary:
        return cls(line.amount_fen, len(line.months), line.basic_fen, line.deduction_fen,
                   line.pooled_account_fen, tuple(line.rule_versions),
                   sum(line.rerated_fen.values()))

    @classmethod
    def of_stored(cls, line: dict[str, Any]) -> tuple[str, LineSummary]:
        """A stored line's JSON object (disbursement.line_states), by its participant id
        text: last month's batch is read back without a model or a UUID per line."""
        rerated = line.get("rerated_fen")
        return line["participant_id"], cls(
            line["amount_fen"], len(line["months"]), line["basic_fen"], line["deduction_fen"],
            line["pooled_account_fen"], tuple(line["rule_versions"]),
            sum(rerated.values()) if rerated else 0)


class Pensioner(Protocol):
    """What a comparison reads of a pensioner: ledger.payout.PensionerFacts, or Seen."""

    @property
    def participant_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def payment_hold(self) -> str | None: ...
    @property
    def paid_through(self) -> str | None: ...
    @property
    def paid_after(self) -> frozenset[str]: ...
    @property
    def start_month(self) -> str: ...


class Fed(Protocol):
    """What a run feeds each pensioner to: a Comparison, a DeferredComparison, or what a
    forked child keeps to send (payout_engine.run_in_two)."""

    def paid(self, f: Pensioner, line: BatchLine) -> None: ...
    def not_paid(self, f: Pensioner, excluded: bool = False) -> None: ...


class Seen(NamedTuple):
    """What a comparison reads of a pensioner, kept instead of the whole PensionerFacts
    while the comparison waits for last month's lines (DeferredComparison)."""

    participant_id: str
    status: str
    payment_hold: str | None
    paid_through: str | None
    paid_after: frozenset[str]
    start_month: str

    @classmethod
    def of(cls, f: Pensioner) -> Seen:
        return cls(f.participant_id, f.status, f.payment_hold, f.paid_through, f.paid_after,
                   f.start_month)


@dataclass
class _Tally:
    headcount: int = 0
    payments: int = 0
    amount_fen: int = 0
    samples: list[str] = field(default_factory=list)


class Comparison:
    """Fed one pensioner at a time (a province has a million), then `result()`."""

    def __init__(self, previous: dict[str, Any] | None,
                 previous_lines: Iterable[tuple[str, LineSummary]] = (),
                 previous_one_offs: Iterable[tuple[UUID, int]] = ()) -> None:
        """previous_lines: (participant id text, summary) of each pension line of last
        month's batch; previous_one_offs: (participant id, amount) of each of its one-off
        lines."""
        self.previous = previous
        self._prev: dict[str, LineSummary] = dict(previous_lines)
        self._prev_one_offs = list(previous_one_offs)
        self._prev_count = len(self._prev) + len(self._prev_one_offs)
        self._prev_total = (sum(s.amount_fen for s in self._prev.values())
                            + sum(a for _, a in self._prev_one_offs))
        self._prev_pooled = sum(s.pooled_fen for s in self._prev.values())
        self._count = self._total = self._pooled = 0
        self._tallies: dict[str, _Tally] = {}
        self._lowered: dict[str, Any] = {"pensioners": 0, "amount_fen": 0,
                                         "participant_ids": []}
        # This month's, in the order fed: what next month's comparison reads of this one
        # (payout_engine.line_summaries).
        self.summaries: list[tuple[str, LineSummary]] = []

    def lowered(self, pensioners: int, amount_fen: int, participant_ids: list[str]) -> None:
        """Pensioners whose months paid hold more basic pension than the rules now give (a
        version lowered it): not recovered by the run, listed for the office to assess."""
        self._lowered = {"pensioners": pensioners, "amount_fen": amount_fen,
                         "participant_ids": participant_ids[:MAX_SAMPLES]}

    def one_off(self, line: BatchLine) -> None:
        """A one-off payment in this run: paid once, so never a change from last month."""
        self._count += 1
        self._total += line.amount_fen
        self._add("one_off_payment", line.participant_id, 1, line.amount_fen)

    def _add(self, reason: str, pid: UUID | str, headcount: int, amount_fen: int) -> None:
        t = self._tallies.setdefault(reason, _Tally())
        t.headcount += headcount
        t.payments += 1
        t.amount_fen += amount_fen
        if len(t.samples) < MAX_SAMPLES:
            t.samples.append(str(pid))

    def paid(self, f: Pensioner, line: BatchLine) -> None:
        """A pensioner with a payment in this run."""
        self._count += 1
        self._total += line.amount_fen
        self._pooled += line.pooled_account_fen
        now = LineSummary.of(line)
        self.summaries.append((f.participant_id, now))
        before = self._prev.pop(f.participant_id, None)
        if before is None:
            if self.previous is None:
                reason = "no_previous_batch"
            elif (f.paid_through is None and not f.paid_after
                  and f.start_month > self.previous["period"]):
                reason = "new_pensioner"  # never paid, and not yet due last month
            elif len(line.months) > 1:
                reason = "arrears_paid"
            else:
                reason = "payment_resumed"
            self._add(reason, line.participant_id, 1, line.amount_fen)
            return
        delta = now.amount_fen - before.amount_fen
        if delta:
            self._add(_changed(before, now), line.participant_id, 0, delta)
        elif now.pooled_fen and not before.pooled_fen:
            self._add("account_exhausted", line.participant_id, 0, 0)

    def not_paid(self, f: Pensioner, excluded: bool = False) -> None:
        """A pensioner in the register with no payment in this run."""
        pid = f.participant_id
        before = self._prev.pop(pid, None)
        if before is None:
            return
        if excluded:
            reason = "excluded"
        elif f.status == "deceased":
            reason = "died"
        elif f.status in ("suspended", "terminated"):
            reason = f.status
        elif f.payment_hold is not None:
            reason = "held"
        else:
            reason = "nothing_owed"
        self._add(reason, pid, -1, -before.amount_fen)

    def result(self) -> dict[str, Any]:
        for pid, before in self._prev.items():  # paid last month, gone from the register
            self._add("not_in_register", pid, -1, -before.amount_fen)
        self._prev.clear()
        for one_off_pid, amount in self._prev_one_offs:
            self._add("one_off_paid_before", one_off_pid, -1, -amount)
        self._prev_one_offs.clear()
        reasons: list[dict[str, Any]] = [
            {"reason": r, "headcount": t.headcount, "payments": t.payments,
             "amount_fen": t.amount_fen, "participant_ids": t.samples}
            for r, t in sorted(self._tallies.items())]
        head_change = self._count - self._prev_count
        amount_change = self._total - self._prev_total
        # Every change is explained, to the person and to the fen.
        assert sum(t.headcount for t in self._tallies.values()) == head_change
        assert sum(t.amount_fen for t in self._tallies.values()) == amount_change
        return {
            "previous": self.previous,
            "headcount": {"previous": self._prev_count, "current": self._count,
                          "change": head_change},
            "amount": {"previous_fen": self._prev_total, "current_fen": self._total,
                       "change_fen": amount_change},
            "from_pool": {"previous_fen": self._prev_pooled, "current_fen": self._pooled},
            "reasons": reasons,
            "paid_above_the_rules": self._lowered,
        }


class DeferredComparison:
    """A Comparison's calls for this month's pensioners, kept in order until last month's
    lines are in (a forked child reads them meanwhile: payout_engine.last_month), then made
    on the Comparison in that order, so that it ends exactly as if fed one by one."""

    def __init__(self) -> None:
        # (Seen, line) for paid, (Seen, excluded) for not_paid.
        self._calls: list[tuple[Seen, BatchLine | bool]] = []
        self._lowered: tuple[int, int, list[str]] | None = None

    def paid(self, f: Pensioner, line: BatchLine) -> None:
        self._calls.append((Seen.of(f), line))

    def not_paid(self, f: Pensioner, excluded: bool = False) -> None:
        self._calls.append((Seen.of(f), excluded))

    def lowered(self, pensioners: int, amount_fen: int, participant_ids: list[str]) -> None:
        self._lowered = (pensioners, amount_fen, participant_ids)

    def onto(self, comparison: Comparison) -> Comparison:
        """The calls made on `comparison` (fresh: nothing fed yet), which is returned."""
        assert not comparison._tallies and not comparison._count, "already fed"
        for seen, outcome in self._calls:
            if type(outcome) is bool:
                comparison.not_paid(seen, outcome)
            else:
                assert isinstance(outcome, BatchLine)
                comparison.paid(seen, outcome)
        self._calls.clear()
        if self._lowered is not None:
            comparison.lowered(*self._lowered)
        return comparison


def _changed(before: LineSummary, now: LineSummary) -> str:
    if now.rerated_fen != before.rerated_fen:
        return "rerated_paid" if now.rerated_fen > before.rerated_fen else "rerated_ended"
    if now.months != before.months:
        return "arrears_paid" if now.months > before.months else "arrears_ended"
    if now.deduction_fen != before.deduction_fen:
        if not before.deduction_fen:
            return "deduction_started"
        return "deduction_ended" if not now.deduction_fen else "deduction_changed"
    if now.rule_versions != before.rule_versions:
        return "rule_change"
    if now.basic_fen != before.basic_fen:
        return "age_extra"
    return "other"
