"""The monthly run in two processes: a forked child reads and computes the last part of the
register (by participant id) while this process does the first.

Reading the register and computing a million pensioners is most of a month's run, all
Python, on one core; a machine has two. The child (ledger.forked) reads its rows over a
connection of its own, computes each pensioner by the same code (run.compute_into) and
sends back, a page at a time, what this process needs of each in the cheapest form to
pickle: the line's values as a tuple (its participant id as 16 bytes), the payment's
pain.001 fragment (the payment's checks ran in the child, as they run here) and what the
comparison reads of the pensioner (comparison.Seen). This process makes each line again
without validating it (Immutable.trusted: the values were made by the same code), feeds
the comparison in the register's order once its own part is done, and writes the files
from its own payments and the child's fragments. The batch is the one a single process
drafts, line for line and byte for byte.

Only for pain.001: a domestic file numbers each record within its file, so its records
cannot be made ahead. A child that dies, fails or hangs fails the run, and nothing is
drafted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

from ledger.aggregates.payout_batch import BatchLine
from ledger.application import Ledger
from ledger.forked import Child, OwnQueries, Post, can_fork
from ledger.payout import DueCalculator
from payout_engine.bankfiles.pain001 import Fragment, fragment
from payout_engine.comparison import Fed, Pensioner, Seen

IN_TWO_MIN_PENSIONERS = 100_000  # pensioners in the register from which a child computes
CHILD_SHARE_PERCENT = 50  # of the participant ids, the highest, the child's part
_LINE_FIELDS = tuple(BatchLine.model_fields)
_ID_AT = _LINE_FIELDS.index("participant_id")
# A pensioner as the comparison sees them (Seen's fields), and None if paid (their line is
# the page's next), else whether excluded.
Call = tuple[tuple[Any, ...], bool | None]
F = TypeVar("F", bound=Fed)


def can_run_in_two(ledger: Ledger, file_format: str) -> UUID | None:
    """The participant id from which a child computes the month, or None: one process
    (a small register, a domestic file, no fork)."""
    if (file_format != "pain001" or not can_fork(ledger)
            or not ledger.queries.holds_pensioners(IN_TWO_MIN_PENSIONERS)):
        return None
    return split_id(CHILD_SHARE_PERCENT)


def split_id(percent: int) -> UUID:
    """The id above which lie `percent` of the participant ids. They are spread evenly:
    each is a hash of the resident's ID number (participant.participant_id, uuid5), so
    the parts are the shares of a county's pensioners to within a fraction of a percent
    (counting them, and finding the id by its rank, took three seconds at a million)."""
    assert 0 < percent < 100
    return UUID(int=(1 << 128) * (100 - percent) // 100)


class ChildPart:
    """The child computing the register's pensioners from `from_id`, and what it sent."""

    def __init__(self, ledger: Ledger, period: str, sequence: int, due_for: DueCalculator,
                 from_id: UUID, progress: Callable[[int], None] | None) -> None:
        self.progress = progress
        # Each page's lines (as values) and comparison calls, until this process's own part
        # is done: its pensioners come first in the comparison.
        self.pages: list[tuple[list[tuple[Any, ...]], list[Call]]] = []
        self.fragments: list[Fragment] = []
        self.excluded: list[dict[str, str]] = []
        self.lowered: tuple[int, int, list[str]] = (0, 0, [])
        self.timings: dict[str, float] = {}
        self.waited_s = 0.0  # for the child's pages, once this process's part was done
        self.child = Child(
            "run-part",
            lambda post: _child_part(post, ledger, period, sequence, due_for, from_id),
            what="the process computing part of the month", nothing="nothing drafted")

    def take(self) -> None:
        """Keep the pages the child has sent so far."""
        for message in self.child.messages(wait=False):
            self._keep(message)

    def _keep(self, message: tuple[Any, ...]) -> None:
        kind, *body = message
        if kind == "page":
            read, line_values, fragments, calls, excluded = body
            self.pages.append((line_values, calls))
            self.fragments += fragments
            self.excluded += excluded
            if self.progress is not None:
                self.progress(read)
        else:
            assert kind == "end", kind
            self.lowered, self.timings = body

    def finish(self, comparison: F) -> tuple[list[BatchLine], F]:
        """Once this process's own part is done: the child's lines, made again here, and
        the comparison fed its pensioners after this process's own, in the register's
        order. Each page is taken in as it comes, while the child computes the next."""
        lines: list[BatchLine] = []
        messages = self.child.messages(wait=True)
        while True:
            for line_values, calls in self.pages:
                page_lines = _lines(line_values)
                comparison = _feed(comparison, calls, page_lines)
                lines += page_lines
            self.pages = []
            t = time.perf_counter()
            message = next(messages, None)
            self.waited_s += time.perf_counter() - t
            if message is None:
                return lines, comparison
            self._keep(message)

    def close(self) -> None:
        self.child.close()


def _lines(line_values: list[tuple[Any, ...]]) -> list[BatchLine]:
    """The child's lines made again here."""
    out = []
    for values in line_values:
        fields = dict(zip(_LINE_FIELDS, values, strict=True))
        fields["participant_id"] = UUID(bytes=fields["participant_id"])
        out.append(BatchLine.trusted(fields))
    return out


def _feed(comparison: F, calls: list[Call], lines: list[BatchLine]) -> F:
    """The child's pensioners fed to the comparison, in order; lines: those paid, in order."""
    paid = iter(lines)
    for seen, excluded in calls:
        if excluded is None:
            comparison.paid(Seen._make(seen), next(paid))
        else:
            comparison.not_paid(Seen._make(seen), excluded)
    assert next(paid, None) is None, "a line the comparison was not told of"
    return comparison


class _Recorded:
    """The comparison's calls, kept as tuples to send (what the child feeds)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def paid(self, f: Pensioner, line: BatchLine) -> None:
        self.calls.append((tuple(Seen.of(f)), None))

    def not_paid(self, f: Pensioner, excluded: bool = False) -> None:
        self.calls.append((tuple(Seen.of(f)), excluded))


def _child_part(post: Post, ledger: Ledger, period: str, sequence: int,
                due_for: DueCalculator, from_id: UUID) -> None:
    """In the forked child: compute the month for the pensioners from `from_id`, posting
    each page's results."""
    from payout_engine import run  # the run imports this module

    queries = OwnQueries(ledger.queries)
    try:
        out = run.Computed()
        recorded = _Recorded()
        timings = run.RunTimings()
        sent = 0

        def send(fed: _Recorded) -> _Recorded:
            nonlocal sent
            post(("page", out.read - sent, [_values(line) for line in out.lines],
                  [fragment(p) for p in out.payments], recorded.calls, out.excluded))
            sent = out.read
            # Emptied in place (compute_into appends to these very lists); post pickled them.
            for sent_list in (out.lines, out.payments, out.excluded, recorded.calls):
                sent_list.clear()
            return fed

        rows = ledger.pensioners_by_id(from_id=from_id, queries=queries)
        run.compute_into(out, run.timed(rows, timings), due_for, period, sequence,
                         recorded, timings, send)
        send(recorded)
        post(("end", (due_for.lowered_count, due_for.lowered_fen, due_for.lowered_ids),
              timings.parts))
    finally:
        queries.close()


def _values(line: BatchLine) -> tuple[Any, ...]:
    values = list(line.__dict__.values())
    values[_ID_AT] = values[_ID_AT].bytes  # a UUID pickles several times slower
    return tuple(values)
