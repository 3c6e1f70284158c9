"""Last month's batch, read for the comparison beside the month's run.

Its lines' summaries are taken from what its draft kept (payout_engine.line_summaries) when
they are there and hash to what its comparison record says; otherwise read as follows.

The comparison puts every change from last month down to a reason, so it needs last month's
pension lines: at a million pensioners, 525 MB of stored lines to fetch and decode, about
seven seconds in which the run's other work waits. A big batch is read by a forked child
(ledger.forked) over a connection of its own while this process reads the register and
computes the month; the child sends back only what the comparison needs of each line
(LineSummary), packed by columns. The comparison is fed meanwhile through a
DeferredComparison, which keeps the calls; once every line is in (the run asks now and
then: `ready`), they are made on the real Comparison, which is fed directly from then on.
The result is the one reading the lines first would give. A child that dies, fails or
hangs fails the run, and nothing is drafted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

from ledger import disbursement
from ledger.aggregates.payout_batch import MONTHLY_PENSION, PayoutBatch
from ledger.application import Ledger
from ledger.forked import Child, OwnQueries, Post, can_fork
from payout_engine import line_summaries
from payout_engine.comparison import Comparison, DeferredComparison, LineSummary

IN_CHILD_MIN_LINES = 100_000  # lines of last month's batch from which a child reads them

Feed = Comparison | DeferredComparison
Unpacked = tuple[Iterator[tuple[str, LineSummary]], list[tuple[UUID, int]]]


class LastMonth:
    """Last month's standing batch (or None) and the comparison this month's run feeds."""

    def __init__(self, ledger: Ledger, previous: PayoutBatch | None,
                 spool: Path | None = None) -> None:
        """spool: where drafts keep their lines' summaries (PayoutConfig.drafted_files)."""
        self.ledger, self.previous = ledger, previous
        self.lines: dict[str, LineSummary] = {}     # taken from the child so far
        self.one_offs: list[tuple[UUID, int]] = []
        self.made: Comparison | None = None  # once every line is in and the calls made
        self.child: Child | None = None
        self.kept = None if previous is None else _kept(previous, spool)
        if (previous is not None and self.kept is None
                and previous.line_count >= IN_CHILD_MIN_LINES and can_fork(ledger)):
            batch_id, line_count = previous.id, previous.line_count
            self.child = Child("last-month",
                               lambda post: _child(post, ledger, batch_id, line_count),
                               what="the process reading last month's batch",
                               nothing="nothing drafted")

    def feed(self) -> Feed:
        """What the run feeds each pensioner to: the Comparison itself, or, while a child
        reads last month's lines, a DeferredComparison."""
        if self.child is not None:
            return DeferredComparison()
        one_offs: list[tuple[UUID, int]] = []
        lines: Iterable[tuple[str, LineSummary]] = ()
        if self.kept is not None:
            lines, one_offs = self.kept
            self.kept = None
        elif self.previous is not None:
            lines = summaries(disbursement.line_states(self.ledger, self.previous.id),
                              one_offs)
        return Comparison(self._about(), lines, one_offs)

    def comparison(self, fed: Feed) -> Comparison:
        """The Comparison, fed: made now from the child's lines if it was deferred."""
        if isinstance(fed, Comparison):
            return fed
        if self.made is None:
            self._take(wait=True)
            self._made(fed)
        assert self.made is not None
        return self.made

    def ready(self, fed: Feed) -> Feed:
        """What to feed from now on: the Comparison itself once the child has sent every
        line (the calls kept so far made on it), else `fed`. Called now and then during the
        run, so that only the pensioners before then are kept."""
        if isinstance(fed, Comparison):
            return fed
        self._take(wait=False)
        return fed if self.child is None or not self.child.finished else self._made(fed)

    def _take(self, *, wait: bool) -> None:
        assert self.child is not None
        for kind, packed in self.child.messages(wait=wait):
            assert kind == "lines", kind
            lines, one_offs = line_summaries.unpack(packed)
            self.lines.update(lines)
            self.one_offs += one_offs

    def _made(self, fed: DeferredComparison) -> Comparison:
        assert self.child is not None and self.child.finished and self.made is None
        self.made = fed.onto(Comparison(self._about(), self.lines.items(), self.one_offs))
        self.lines, self.one_offs = {}, []
        return self.made

    def close(self) -> None:
        if self.child is not None:
            self.child.close()

    def _about(self) -> dict[str, Any] | None:
        p = self.previous
        return None if p is None else {"batch_id": str(p.id), "period": p.period,
                                       "sequence": p.sequence, "state": p.state}


def summaries(stored: Iterator[dict[str, Any]], one_offs: list[tuple[UUID, int]]
              ) -> Iterator[tuple[str, LineSummary]]:
    """Last month's pension lines for the comparison; its one-off lines go to one_offs."""
    for line in stored:
        if line.get("kind", MONTHLY_PENSION) == MONTHLY_PENSION:
            yield LineSummary.of_stored(line)
        else:
            one_offs.append((UUID(line["participant_id"]), line["amount_fen"]))


def _kept(previous: PayoutBatch, spool: Path | None) -> Unpacked | None:
    """The summaries the batch's draft kept, if they are what its record says."""
    record = previous.comparison.get("line_summaries")
    if not isinstance(record, dict):
        return None  # drafted before summaries were kept
    blob = line_summaries.take(spool, record.get("sha256", ""))
    if blob is None:
        return None
    try:
        return line_summaries.unpack(blob)
    except line_summaries.Malformed:
        return None


def _child(post: Post, ledger: Ledger, batch_id: UUID, line_count: int) -> None:
    """In the forked child: each LinesAdded chunk's summaries, packed (line_summaries.pack:
    pickling a tuple a line would cost more than reading them did), posted as ("lines",
    packed)."""
    queries = OwnQueries(ledger.queries)
    try:
        for chunk_no in range(disbursement.chunks_of(line_count)):
            post(("lines", _packed(disbursement.chunk_lines(ledger, batch_id, chunk_no,
                                                            queries))))
    finally:
        queries.close()


def _packed(lines: list[dict[str, Any]]) -> bytes:
    """A chunk's summaries and one-off payments, packed."""
    one_offs: list[tuple[UUID, int]] = []
    return line_summaries.pack(list(summaries(iter(lines), one_offs)), one_offs)
