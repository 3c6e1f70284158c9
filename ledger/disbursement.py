"""The ledger's side of paying pensions: draft, approve, fund, answer, close a PayoutBatch.

Funding is the step that moves money: in ONE transaction it appropriates the batch total
fiscal -> expenditure, reserves it in flight, and books every pensioner's PensionPaid event
(the individual account and the pool give up what is paid). It reads the registers rather
than replaying a million aggregates and computes nothing again: each line names the register
version of the pensioner it was computed from. A pensioner changed since then is worked out
again, and their line paid only if it is still exactly what is owed. The paid_months key
makes paying anyone twice for a month impossible even if a line slipped through. A crash
before the commit leaves nothing; running it again does it all once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import datetime_now_with_tzinfo
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.utils import get_topic

from ledger import resident_id
from ledger.aggregates.base import Immutable
from ledger.aggregates.command_receipt import CommandReceipt
from ledger.aggregates.participant import SOURCES, Participant
from ledger.aggregates.payout_batch import (
    MAX_LINES_PER_EVENT,
    MONTHLY_PENSION,
    BatchLine,
    Outcome,
    PayoutBatch,
)
from ledger.application import MAX_ATTEMPTS, Ledger, register_row
from ledger.errors import ConcurrencyConflict, NotFound, Refused
from ledger.forked import Child, OwnQueries, Post, can_fork, uuids_of
from ledger.payout import (
    FACT_BASIC_PAID,
    FACT_FORFEITED_AFTER,
    FACT_KEYS,
    FACT_OVERPAYMENT,
    FACT_PAID_AFTER,
    FACT_PAID_THROUGH,
    FACT_RATED_VERSION,
    FACT_SOURCES,
    FACT_VERSION,
    DueCalculator,
    basic_paid_after,
    compact_months,
    extend_runs,
    facts_array,
    facts_json,
    facts_of,
    load_facts,
    next_month,
    pack_facts,
)
from ledger.postings import guarded_deltas
from ledger.store import (
    OneOffRow,
    PensionerRow,
    PydanticMapper,
    RegisterRow,
    RegisterVersion,
    StoreQueries,
    copied_part,
    seal,
    unseal,
)
from ledger.streamed_write import BulkWrite, bulk_write

Progress = Callable[[int], None]

LINES_TOPIC = get_topic(PayoutBatch.LinesAdded)
PAID_TOPIC = get_topic(Participant.PensionPaid)
EVENTS_PER_READ = 10  # batch events read at a time: at most 100,000 lines in memory as bytes
REGISTER_CHUNK = 10_000  # pensioners per register read while funding
MAX_BATCHES_PER_FILE = 100  # batches one bank file may answer for
MAX_LISTED_CHANGED = 20  # lines named when funding refuses a batch no longer owed
CHECK_EVERY = 1000  # payments between checks of the fast encoding against the mapper's
FUND_IN_TWO_MIN_LINES = 100_000  # a batch this big is funded by two processes
# This process pays one LinesAdded chunk of every FUND_ROUND, the child the others. This
# process also takes in the child's results and sends every chunk to the store: with 3 (the
# child paying two of every three) funding took 53-62 s at a million against 49 s with 2.
FUND_ROUND = 2
# The PensionPaid fields taken from each line; the others (timestamp, actor, value_date)
# are the same for the whole batch.
PAID_VARYING = frozenset({"batch_id", "end_to_end_id", "months", "basic_fen",
                          "account_by_source_fen", "pooled_account_fen", "deduction_fen",
                          "amount_fen", "rule_version", "basic_by_month", "rerated_fen",
                          "rated_version"})
_NO_PAYEE = orjson.dumps({"name": "", "id_number": "", "bank": None})


# ---- reading a batch ------------------------------------------------------------------

class _LinesState(Immutable):
    """A stored LinesAdded event's state, validated from its JSON in one pass (pydantic's
    validate_json takes about half the time of orjson.loads and a model per line)."""

    timestamp: datetime
    actor: str
    chunk_no: int
    lines: list[BatchLine]


assert set(_LinesState.model_fields) == (
    set(PayoutBatch.LinesAdded.model_fields) - {"originator_id", "originator_version"})


class LinesNotRead(dict[str, BatchLine]):
    """The lines of a batch read without them (approve, export's record): any use is a bug,
    not an empty batch (close() would otherwise find no payment pending)."""

    def _refuse(self, *_: Any, **__: Any) -> Any:
        raise AssertionError("the batch was read without its lines")

    __getitem__ = __contains__ = __iter__ = __len__ = get = values = items = keys = _refuse


def _batch_events(ledger: Ledger, batch_id: UUID, after: int = 0,
                  through: int | None = None) -> Iterator[StoredEvent]:
    """The batch's stored events after version `after` (through `through`), a page at a
    time."""
    while True:
        page = ledger.queries.events_after(batch_id, after, through, limit=EVENTS_PER_READ)
        yield from page
        if len(page) < EVENTS_PER_READ:
            return
        after = page[-1].originator_version


def chunks_of(line_count: int) -> int:
    """How many LinesAdded events the draft wrote: they are versions 2 .. 1 + this."""
    return -(-line_count // MAX_LINES_PER_EVENT)


def get_batch(ledger: Ledger, batch_id: UUID, *, lines: bool = True) -> PayoutBatch:
    """The batch from its events. lines=False does not read its LinesAdded events (a
    million lines are 500 MB to fetch and seconds to decode; approving, funding or recording
    an export needs none of them)."""
    if not lines:
        return _batch_without_lines(ledger, batch_id)
    batch: Any = None
    for stored in _batch_events(ledger, batch_id):
        if stored.topic == LINES_TOPIC:
            s = _LinesState.model_validate_json(unseal(ledger.mapper, stored.state))
            event: Any = PayoutBatch.LinesAdded(
                originator_id=batch_id, originator_version=stored.originator_version,
                timestamp=s.timestamp, actor=s.actor, chunk_no=s.chunk_no, lines=s.lines)
        else:
            event = ledger.mapper.to_domain_event(stored)
        batch = event.mutate(batch)
    if batch is None:
        raise NotFound("batch", str(batch_id))
    result: PayoutBatch = batch
    return result


def _batch_without_lines(ledger: Ledger, batch_id: UUID) -> PayoutBatch:
    first = ledger.recorder.select_events(batch_id, limit=1)
    if not first:
        raise NotFound("batch", str(batch_id))
    drafted: Any = ledger.mapper.to_domain_event(first[0])
    batch: Any = drafted.mutate(None)
    # The draft writes the LinesAdded events right after Drafted, in one transaction.
    batch.version = 1 + chunks_of(batch.line_count)
    for stored in _batch_events(ledger, batch_id, after=batch.version):
        assert stored.topic != LINES_TOPIC, "lines after the drafted ones"
        event: Any = ledger.mapper.to_domain_event(stored)
        batch = event.mutate(batch)
    batch.lines = LinesNotRead()
    result: PayoutBatch = batch
    return result


def line_states(ledger: Ledger, batch_id: UUID) -> Iterator[dict[str, Any]]:
    """The batch's lines as their stored JSON objects, in order, without a model per line
    (what funding, the export and next month's comparison read)."""
    first = ledger.recorder.select_events(batch_id, limit=1)
    if not first:
        raise NotFound("batch", str(batch_id))
    drafted: Any = ledger.mapper.to_domain_event(first[0])
    chunks = 0
    for stored in _batch_events(ledger, batch_id, after=1, through=1 + chunks_of(
            drafted.line_count)):
        chunks += 1
        yield from _stored_lines(ledger, stored.topic, stored.state)
    assert chunks == chunks_of(drafted.line_count)


def chunk_lines(ledger: Ledger, batch_id: UUID, chunk_no: int,
                queries: StoreQueries | None = None) -> list[dict[str, Any]]:
    """The lines of one of the batch's LinesAdded events (version 2 + chunk_no) as stored
    JSON, read through the ledger's queries or through `queries` (a forked child's own)."""
    version = 2 + chunk_no
    [stored] = (queries or ledger.queries).events_after(batch_id, version - 1, version)
    return _stored_lines(ledger, stored.topic, stored.state)


def _stored_lines(ledger: Ledger, topic: str, state: bytes) -> list[dict[str, Any]]:
    """The lines of one stored LinesAdded event, as their JSON objects."""
    assert topic == LINES_TOPIC, topic
    lines: list[dict[str, Any]] = orjson.loads(unseal(ledger.mapper, state))["lines"]
    return lines


# ---- draft ----------------------------------------------------------------------------

def draft(ledger: Ledger, *, period: str, sequence: int, file_format: str,
          created_at: datetime, execution_date: date, lines: list[BatchLine],
          manifest_sha256: str, comparison: dict[str, Any], actor: str,
          rules_version: int = 0) -> PayoutBatch:
    """Store the drafted batch in one transaction and return it as drafted (not read back:
    its lines are the ones given). Each event goes to the store as soon as it is mapped: on
    PostgreSQL, a million lines' events are stored while the next are mapped."""
    batch = PayoutBatch.draft(period=period, sequence=sequence, file_format=file_format,
                              created_at=created_at, execution_date=execution_date, lines=lines,
                              manifest_sha256=manifest_sha256, comparison=comparison,
                              actor=actor, rules_version=rules_version)
    try:
        with bulk_write(ledger.recorder) as write:
            for stored in _stored_batch_events(ledger, batch.collect_events()):
                write.add([stored])
            write.finish([])
    except IntegrityError:
        raise Refused("period", f"batch {period}/{sequence} was already drafted") from None
    return batch


def _stored_batch_events(ledger: Ledger, events: Sequence[Any]) -> Iterator[StoredEvent]:
    """The mapper's stored events, with each LinesAdded's lines dumped straight from the
    validated lines' fields by orjson (about a fifth of the time of pydantic's JSON dump).
    The first LinesAdded is also mapped by the mapper, and must match byte for byte."""
    fast = type(ledger.mapper) is PydanticMapper  # another mapper maps in its own way
    checked = False
    for e in events:
        if type(e) is not PayoutBatch.LinesAdded or not fast:
            yield ledger.mapper.to_stored_event(e)
            continue
        head = e.model_dump(mode="json", exclude={"originator_id", "originator_version",
                                                   "lines"})
        plain = ledger.mapper.transcoder.encode(
            {**head, "lines": [line.__dict__ for line in e.lines]})
        if checked:
            yield StoredEvent(e.originator_id, e.originator_version, LINES_TOPIC,
                              seal(ledger.mapper, plain))
            continue
        assert list(PayoutBatch.LinesAdded.model_fields)[-1] == "lines"
        mapped = ledger.mapper.to_stored_event(e)
        assert plain == unseal(ledger.mapper, mapped.state), \
            "LinesAdded: fast encoding differs"
        checked = True
        yield mapped


def approve(ledger: Ledger, batch_id: UUID, manifest_sha256: str, actor: str) -> PayoutBatch:
    return _batch_step(ledger, batch_id, lambda b: b.approve(manifest_sha256, actor),
                       lines=False)


# ---- fund -----------------------------------------------------------------------------

def fund(ledger: Ledger, batch_id: UUID, *, value_date: date, actor: str,
         progress: Progress | None = None) -> dict[str, int]:
    """Appropriate, reserve in flight and book every payment, all at once.

    Nothing is computed again for a pensioner still at the register version their line was
    computed from, while the rule set is at the drafted version; otherwise the line is worked
    out again, and paid as drafted only if that is still exactly what is owed. A line no
    longer owed refuses the batch whole (it is cancelled and the month drafted again)."""
    for _ in range(MAX_ATTEMPTS):
        batch = get_batch(ledger, batch_id, lines=False)
        if batch.state != "approved":
            raise Refused("batch", f"batch is {batch.state}; funds move only after approval")
        rules_version = ledger.ruleset().version
        reference = f"PAYOUT-{batch.period}-{batch.sequence:02d}"
        fund_agg = ledger.fund()
        fund_agg.transfer(from_account="fiscal", to_account="expenditure",
                          amount_fen=batch.total_fen, value_date=value_date,
                          reference=reference, actor=actor)
        batch.fund(value_date, reference, actor)
        money = [*fund_agg.collect_events(), *batch.collect_events()]
        stored = [ledger.mapper.to_stored_event(e) for e in money]
        payments = _Payments(ledger, batch, value_date, actor, rules_version)
        try:
            # Each chunk of payments is sent to the store as soon as it is made (on
            # PostgreSQL, stored while the next is made), all in one transaction.
            with bulk_write(ledger.recorder) as write:
                payments.write = write
                write.add(stored)
                if _in_two(ledger, batch):
                    payments.add_in_two(progress)
                else:
                    payments.add_all(line_states(ledger, batch_id), progress)
                one_off_events = payments.pay_one_offs()
                payments.refuse_lines_no_longer_owed()
                assert (payments.count == batch.line_count
                        and payments.total_fen == batch.total_fen)
                write.finish(
                    payments.one_off_stored, fund_deltas=guarded_deltas(money + one_off_events),
                    register=payments.register, pensioners=payments.one_off_pensioners,
                    one_offs=payments.one_offs)
        except IntegrityError:
            continue  # someone wrote in between: read again and decide again
        return {"payments": payments.count, "total_fen": batch.total_fen}
    raise ConcurrencyConflict(MAX_ATTEMPTS)


def _in_two(ledger: Ledger, batch: PayoutBatch) -> bool:
    """Whether to fund the batch in two processes: big, in two LinesAdded events or more,
    and a child can be forked (ledger.forked.can_fork)."""
    return (batch.line_count >= FUND_IN_TWO_MIN_LINES and chunks_of(batch.line_count) >= 2
            and can_fork(ledger))


def _childs(chunks: int) -> list[int]:
    """The chunk numbers a forked child pays (add_in_two): all but each FUND_ROUND-th."""
    return [n for n in range(chunks) if n % FUND_ROUND]


class _Payments:
    """Everything funding writes for the batch's lines: a PensionPaid per line, the
    pensioner's participant-register version and register facts at the next version, and
    the paid-months keys.

    PensionPaid's stored JSON is learnt from the mapper's own output for the first line;
    later lines replace only the fields that vary by line (PAID_VARYING). The first line
    and every CHECK_EVERY-th are also made the validated way (the pydantic event through
    the mapper, the facts through PensionerFacts) and must match byte for byte."""

    def __init__(self, ledger: Ledger, batch: PayoutBatch, value_date: date, actor: str,
                 rules_version: int) -> None:
        self.ledger, self.batch, self.value_date, self.actor = ledger, batch, value_date, actor
        # A rule version published since the draft (a batch drafted before versions were
        # kept has 0): every line is worked out again under the rules as they are now.
        self.rules_changed = rules_version != batch.rules_version
        self.rules_note = (f" (rule set version {batch.rules_version} when drafted, now "
                           f"{rules_version})" if self.rules_changed else "")
        self.batch_id = str(batch.id)
        self.now = datetime_now_with_tzinfo()
        self.fast = type(ledger.mapper) is PydanticMapper
        self.template: dict[str, Any] | None = None
        self.write: BulkWrite | None = None  # where each chunk's payments are sent
        self.stored: list[StoredEvent] = []
        self.register_versions: list[RegisterVersion] = []
        self.pensioners: list[PensionerRow] = []
        # One-off payments', written when every line is paid.
        self.one_off_stored: list[StoredEvent] = []
        self.register: list[RegisterRow] = []
        self.one_off_pensioners: list[PensionerRow] = []
        self.paid_add: list[tuple[UUID, str, str]] = []
        self.one_offs: list[OneOffRow] = []
        self.one_off_lines: list[dict[str, Any]] = []  # in batch order
        self.count = 0
        self.total_fen = 0
        self.seen: set[bytes] = set()  # the participant ids paid, as 16 bytes
        self.no_longer_owed: list[str] = []  # changed since the draft: why, by line
        self.due_for: DueCalculator | None = None  # made for the first of those

    def add_all(self, lines: Iterator[dict[str, Any]], progress: Progress | None) -> None:
        chunk: list[dict[str, Any]] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) == REGISTER_CHUNK:
                self._add_and_send(chunk, progress)
                chunk = []
        if chunk:
            self._add_and_send(chunk, progress)

    def _add_and_send(self, chunk: list[dict[str, Any]], progress: Progress | None) -> None:
        before = self._marks()
        self._add_chunk(chunk)
        self._send(self._since(before))
        if progress:
            progress(len(chunk))

    def _since(self, before: tuple[int, ...]) -> dict[str, list[Any]]:
        """What _add appended since the marks `before`, by output."""
        return {name: getattr(self, name)[start:]
                for name, start in zip(self._OUTPUTS, before, strict=True)}

    def _send(self, part: dict[str, list[Any]]) -> None:
        """A chunk's payments to the write; chunks are sent in the batch's order."""
        assert self.write is not None
        self.write.add(part["stored"], register_versions=part["register_versions"],
                       pensioners=part["pensioners"], paid_months_add=part["paid_add"])

    # What _add appends to, line by line: a share's results are these lists' slices.
    _OUTPUTS = ("stored", "register_versions", "pensioners", "paid_add", "no_longer_owed",
                "one_off_lines")

    def add_in_two(self, progress: Progress | None) -> None:
        """add_all shared with a forked child (ledger.forked): of the batch's LinesAdded
        events, this process pays one in every FUND_ROUND and the child the others, each
        chunk by the same _add_chunk; the child reads its lines and register rows over a
        connection of its own and sends back what it paid. Each chunk is sent to the write
        once every chunk before it has been, so the stored events are those one process
        would store, in its order. A child that dies, fails or hangs fails the funding,
        and nothing is stored.

        On PostgreSQL the child sends its chunks ready to store (ledger.store.copied_part:
        rows in the binary COPY format and the events' hashes), this process only passing
        them on. It gives its events the notification ids they will have: the pension lines
        come before any one-off line in a batch (PayoutBatch.draft), so every chunk with a
        pension line follows chunks of MAX_LINES_PER_EVENT pension lines each, one event
        each. The write refuses a part out of place."""
        write = self.write
        assert write is not None
        chunks = chunks_of(self.batch.line_count)
        assert MAX_LINES_PER_EVENT <= REGISTER_CHUNK and chunks >= 2
        if self.due_for is None:  # made here: the child may not read the rule set
            self.due_for = DueCalculator.under(self.ledger.ruleset(), self.batch.period)
        base_id = write.next_id()  # the first pension event's, or None
        child = Child("fund-share", lambda post: self._child_share(post, chunks, base_id),
                      what="the process funding half the batch", nothing="nothing funded")
        parts: dict[int, dict[str, Any]] = {}
        sent = 0  # chunks sent to the write, in order
        refusing = False  # a line no longer owed: the batch is refused, nothing more sent

        def send_ready() -> None:
            nonlocal sent, refusing
            while sent in parts:
                part = parts[sent]
                refusing = refusing or bool(part["no_longer_owed"])
                if not refusing:
                    if "copied" in part:
                        write.add_copied(part["copied"])
                    else:
                        self._send(part)
                sent += 1

        try:
            def take(wait: bool) -> None:
                for kind, *body in child.messages(wait=wait):
                    assert kind in ("paid", "copied"), kind
                    chunk_no, line_count, count, total_fen, result = body
                    parts[chunk_no] = (self._unpacked(result) if kind == "paid"
                                       else self._taken(result))
                    self.count += count
                    self.total_fen += total_fen
                    if progress:
                        progress(line_count)
                    send_ready()

            for chunk_no in range(0, chunks, FUND_ROUND):
                before = self._marks()
                lines = chunk_lines(self.ledger, self.batch.id, chunk_no)
                self._add_chunk(lines)
                parts[chunk_no] = self._since(before)
                if progress:
                    progress(len(lines))
                send_ready()
                take(wait=False)
            take(wait=True)
        finally:
            child.close()
        assert sent == chunks
        assert sorted(parts) == list(range(chunks))
        paid = len(self.register_versions)  # this process's
        for chunk_no in _childs(chunks):
            blob = parts[chunk_no]["paid_ids"]
            self.seen.update(blob[i:i + 16] for i in range(0, len(blob), 16))
            paid += len(blob) // 16
        # Each share holds one line per pensioner (_add); together, too.
        assert len(self.seen) == paid, "a pensioner with two lines"
        for name in ("no_longer_owed", "one_off_lines"):
            setattr(self, name, [x for chunk_no in range(chunks) for x in parts[chunk_no][name]])

    def _marks(self) -> tuple[int, ...]:
        return tuple(len(getattr(self, name)) for name in self._OUTPUTS)

    def _child_share(self, post: Post, chunks: int, base_id: int | None) -> None:
        """In the forked child: pay its chunks (_childs), posting each one's results, ready
        to store when the write gave base_id (the id of chunk 0's first event)."""
        queries = OwnQueries(self.ledger.queries)
        try:
            for chunk_no in _childs(chunks):
                before, count, total_fen = self._marks(), self.count, self.total_fen
                lines = chunk_lines(self.ledger, self.batch.id, chunk_no, queries)
                self._add_chunk(lines, queries)
                if base_id is None:
                    post(("paid", chunk_no, len(lines), self.count - count,
                          self.total_fen - total_fen, self._packed(before)))
                else:
                    post(("copied", chunk_no, len(lines), self.count - count,
                          self.total_fen - total_fen,
                          self._copied(before, base_id + chunk_no * MAX_LINES_PER_EVENT)))
        finally:
            queries.close()

    def _copied(self, before: tuple[int, ...], first_id: int) -> tuple[Any, ...]:
        """The results since `before`, ready to store (copied_part) with their events from
        first_id on; the participant ids paid as 16 bytes each."""
        part = self._since(before)
        versions = part["register_versions"]
        return (copied_part(first_id, part["stored"], versions, part["pensioners"],
                            part["paid_add"]),
                b"".join([v.participant_id.bytes for v in versions]),
                part["no_longer_owed"], part["one_off_lines"])

    @staticmethod
    def _taken(copied: tuple[Any, ...]) -> dict[str, Any]:
        part, paid_ids, no_longer_owed, one_offs = copied
        return {"copied": part, "paid_ids": paid_ids, "no_longer_owed": no_longer_owed,
                "one_off_lines": one_offs}

    def _packed(self, before: tuple[int, ...]) -> tuple[Any, ...]:
        """The results since `before`, by columns, participant ids as their 16 bytes."""
        stored, versions, pensioners, paid, no_longer_owed, one_offs = (
            getattr(self, name)[start:] for name, start in zip(self._OUTPUTS, before,
                                                                strict=True))
        assert all(s.topic == PAID_TOPIC for s in stored)
        ids = b"".join([s.originator_id.bytes for s in stored])

        def ids_of(pids: list[UUID]) -> bytes | None:
            # None: the stored events' ids, as usual (one event, version and facts row per
            # pensioner paid, and one month each), sent and made into UUIDs once.
            blob = b"".join([pid.bytes for pid in pids])
            return None if blob == ids else blob

        return (ids, [s.originator_version for s in stored], [s.state for s in stored],
                ids_of([v.participant_id for v in versions]),
                [(v.from_version, v.version) for v in versions],
                ids_of([r.participant_id for r in pensioners]),
                [r.facts for r in pensioners],
                ids_of([pid for pid, _, _ in paid]),
                [(month, e2e) for _, month, e2e in paid], no_longer_owed, one_offs)

    def _unpacked(self, packed: tuple[Any, ...]) -> dict[str, list[Any]]:
        (stored_ids, stored_versions, states, version_ids, versions, pensioner_ids, facts,
         paid_ids, paid, no_longer_owed, one_offs) = packed
        ids: dict[bytes, UUID] = {}
        stored_pids = uuids_of(stored_ids, ids)

        def pids(blob: bytes | None) -> list[UUID]:
            return stored_pids if blob is None else uuids_of(blob, ids)

        return {
            "stored": [StoredEvent(pid, v, PAID_TOPIC, state) for pid, v, state in zip(
                stored_pids, stored_versions, states, strict=True)],
            "register_versions": [RegisterVersion(pid, old, new) for pid, (old, new) in zip(
                pids(version_ids), versions, strict=True)],
            "pensioners": [PensionerRow(pid, text, None) for pid, text in zip(
                pids(pensioner_ids), facts, strict=True)],
            "paid_add": [(pid, month, e2e) for pid, (month, e2e) in zip(
                pids(paid_ids), paid, strict=True)],
            "no_longer_owed": no_longer_owed, "one_off_lines": one_offs,
            "paid_ids": stored_ids if version_ids is None else version_ids}

    def refuse_lines_no_longer_owed(self) -> None:
        """After every line is added: refuse the batch whole if any is no longer owed."""
        if self.no_longer_owed:
            count = len(self.no_longer_owed)
            listed = "; ".join(self.no_longer_owed[:MAX_LISTED_CHANGED])
            more = f" and {count - MAX_LISTED_CHANGED} more" if count > MAX_LISTED_CHANGED else ""
            raise Refused("batch", f"{count} line(s) no longer owed as drafted, after "
                          f"changes since the draft{self.rules_note}: {listed}{more}; cancel "
                          "the batch and draft the month again")

    def _add_chunk(self, lines: list[dict[str, Any]], queries: StoreQueries | None = None
                   ) -> None:
        """Pay a chunk of lines, reading their register rows through queries (a forked
        child's own; by default the ledger's)."""
        queries = queries or self.ledger.queries
        current = _facts_of(queries, [line["participant_id"] for line in lines])
        changed = [line for line in lines
                   if not self._add(line, current.get(line["participant_id"]))]
        if changed:
            # Who is to be paid now, for those changed since the draft (personal data,
            # otherwise not read by funding).
            payees = _register_column(queries, "payee",
                                      [line["participant_id"] for line in changed])
            for line in changed:
                pid_text = line["participant_id"]
                assert self._add(line, current[pid_text], bytes(payees[pid_text][1]))

    def _still_owed(self, line: dict[str, Any], facts_text: str, payee: bytes | None) -> str:
        """Why the pensioner is no longer owed exactly what the line pays, to the account it
        names; "" if they still are (year-end interest was credited, say, or a rule version
        takes effect after the month). What is owed is worked out again, by the run's own
        calculation, from the facts and rules as they are now. payee None: the pensioner is
        at the drafted version, so the payee is as drafted."""
        f = load_facts(UUID(line["participant_id"]), facts_text,
                       _NO_PAYEE if payee is None else self.ledger.open_personal(payee))
        if self.due_for is None:
            self.due_for = DueCalculator.under(self.ledger.ruleset(), self.batch.period)
        due = self.due_for(f)
        if due is None or due.amount_fen <= 0:
            hold = f", held: {f.payment_hold}" if f.payment_hold else ""
            return f"now {f.status}{hold}: owed nothing for {self.batch.period}"
        if payee is not None and (f.bank is None or (
                f.name, f.id_number, f.bank.account_name, f.bank.account_number,
                f.bank.bank_code) != (line["payee_name"], line["id_number"],
                                      line["account_name"], line["account_number"],
                                      line["bank_code"])):
            return "new payee or bank details"
        # The amounts, not the rule versions' labels: a version published since with the
        # same figures for these months changes nothing paid.
        owed = (list(due.months), due.basic_fen, due.pooled_account_fen, due.deduction_fen,
                due.amount_fen, due.basic_by_month, due.rerated_fen)
        drafted = (line["months"], line["basic_fen"], line["pooled_account_fen"],
                   line["deduction_fen"], line["amount_fen"], line.get("basic_by_month", {}),
                   line.get("rerated_fen", {}))
        if owed != drafted:
            return (f"now owed {due.amount_fen} fen for {', '.join(due.months)}; the line "
                    f"pays {line['amount_fen']} fen for {', '.join(line['months'])}")
        # The same draw on the account; its split by source may differ (interest credited
        # since changes the mix) and is kept as drafted while every source still holds it.
        split: dict[str, int] = line["account_by_source_fen"]
        assert sum(split.values()) == sum(due.account_by_source_fen.values())
        if any(amount > f.sources_fen.get(source, 0) for source, amount in split.items()):
            return "the individual account no longer holds what the line draws"
        return ""

    def _add(self, line: dict[str, Any], row: tuple[UUID, str] | None,
             payee: bytes | None = None) -> bool:
        """Pay one line, given the pensioner's register row (id, facts). False, doing
        nothing, for a pensioner changed since the draft when their payee is not given: the
        caller reads the payees of those and adds them again."""
        e2e: str = line["end_to_end_id"]
        pid_text: str = line["participant_id"]
        kind = line.get("kind", MONTHLY_PENSION)
        if kind != MONTHLY_PENSION:
            # Few a month: paid through the aggregate once every line is read.
            self.count += 1
            self.total_fen += line["amount_fen"]
            self.one_off_lines.append(line)
            return True
        if row is None:
            raise Refused("batch", f"{e2e}: the pensioner is not in the register as "
                          "drafted; cancel the batch and draft the month again")
        pid, facts_text = row
        facts = facts_array(facts_text)
        drafted = line.get("register_version", 0)  # 0: drafted before versions were kept
        at: int = facts[FACT_VERSION]
        if at != drafted:
            if payee is None and drafted:
                return False
            # Paid as drafted only if that is still exactly what is owed (decision 11).
            why = (self._still_owed(line, facts_text, payee) if payee is not None
                   else "drafted before register versions were kept")
        elif self.rules_changed:
            why = self._still_owed(line, facts_text, None)
        else:
            why = ""
        if why:
            self.no_longer_owed.append(_named(line, why))
            return True
        # One line per pensioner: each is paid at the version after the one read.
        key = pid.bytes
        assert key not in self.seen, f"{pid_text} has two lines"
        self.seen.add(key)
        version = at + 1
        self.count += 1
        self.total_fen += line["amount_fen"]
        check = self.count % CHECK_EVERY == 1
        self.stored.append(self._paid_event(line, pid, version, check))
        # The participant register's row moves to the same version, written only if it is
        # still at the drafted one (the facts and the row are written together, so they
        # agree; a writer in between makes the whole funding start again).
        self.register_versions.append(RegisterVersion(pid, at, version))
        after = _facts_after(facts, line, version)
        if check:
            slow = _facts_after_validated(pid, facts_text, line, version)
            assert after == slow, ("facts after payment differ", after, slow)
        self.pensioners.append(PensionerRow(pid, after, None))
        self.paid_add += [(pid, m, e2e) for m in line["months"]]
        return True

    def pay_one_offs(self) -> list[Any]:
        """OneOffPaid for each one-off line still owed as drafted (the same amount, payable
        now, to the same payee and account), through the participant aggregate, with the
        participant's register rows and one-off rows after it. Returns the domain events
        (their stored form is in self.one_off_stored)."""
        events: list[Any] = []
        by_participant: dict[UUID, list[dict[str, Any]]] = {}
        for line in self.one_off_lines:
            by_participant.setdefault(UUID(line["participant_id"]), []).append(line)
        for pid, lines in by_participant.items():
            if pid.bytes in self.seen:
                # The run drafts no one-off beside a pension line (one version each).
                raise Refused("batch", f"{lines[0]['end_to_end_id']}: a one-off beside a "
                              "pension line; cancel the batch and draft the month again")
            try:
                p: Participant = self.ledger.repository.get(pid)
            except AggregateNotFoundError:
                raise Refused("batch", f"{lines[0]['end_to_end_id']}: no such participant"
                              ) from None
            owed = [(line, _one_off_owed(p, line)) for line in lines]
            self.no_longer_owed += [_named(line, why) for line, why in owed if why]
            if any(why for _, why in owed):
                continue
            for line in lines:
                p.pay_one_off(kind=line["kind"], batch_id=self.batch.id,
                              end_to_end_id=line["end_to_end_id"],
                              amount_fen=line["amount_fen"], value_date=self.value_date,
                              actor=self.actor)
            paid = p.collect_events()
            events += paid
            self.one_off_stored += [self.ledger.mapper.to_stored_event(e) for e in paid]
            self.register.append(register_row(p))
            f = facts_of(p)
            if f is not None:  # a deceased pensioner's facts carry the version funding checks
                self.one_off_pensioners.append(self.ledger.pensioner_row(f))
            self.one_offs += self.ledger.one_off_rows(p)
        return events

    def _paid_event(self, line: dict[str, Any], pid: UUID, version: int,
                    check: bool) -> StoredEvent:
        values = {"batch_id": self.batch_id, "end_to_end_id": line["end_to_end_id"],
                  "months": line["months"], "basic_fen": line["basic_fen"],
                  "account_by_source_fen": line["account_by_source_fen"],
                  "pooled_account_fen": line["pooled_account_fen"],
                  "deduction_fen": line["deduction_fen"], "amount_fen": line["amount_fen"],
                  "rule_version": ";".join(line["rule_versions"]),
                  # A line drafted before these were kept has none of them.
                  "basic_by_month": line.get("basic_by_month", {}),
                  "rerated_fen": line.get("rerated_fen", {}),
                  "rated_version": line.get("rated_version", 0)}
        if self.template is None or check or not self.fast:
            event = Participant.PensionPaid(
                originator_id=pid, originator_version=version, timestamp=self.now,
                actor=self.actor, value_date=self.value_date, **values)
            mapped = self.ledger.mapper.to_stored_event(event)
            if self.fast:
                plain = unseal(self.ledger.mapper, mapped.state)
                if self.template is None:
                    template: dict[str, Any] = orjson.loads(plain)
                    # A field added to the event would otherwise be copied to every payment.
                    assert set(template) == PAID_VARYING | {"timestamp", "actor",
                                                            "value_date"}, sorted(template)
                    self.template = template
                fast = self.ledger.mapper.transcoder.encode({**self.template, **values})
                assert fast == plain, ("PensionPaid: fast encoding differs", fast, plain)
            return mapped
        plain = self.ledger.mapper.transcoder.encode({**self.template, **values})
        return StoredEvent(pid, version, PAID_TOPIC, seal(self.ledger.mapper, plain))


def _facts_of(q: StoreQueries, pid_texts: list[str]) -> dict[str, tuple[UUID, str]]:
    """Pensioner-register facts (JSON, with the version) by participant id text, with the
    id as a UUID (made once, here), read in one query; the payee is not read (funding
    writes no personal data).

    A batch's pension lines come in participant id order, so a chunk of them is read as one
    range of the primary key (measured at 200,000 pensioners: 0.9 s against 1.5 s for the
    same rows by a list of ids); the range also holds pensioners not paid this month, which
    are passed over. A chunk out of order (the one-off lines after the pensions) is read by
    its list of ids."""
    assert 0 < len(pid_texts) <= REGISTER_CHUNK
    in_order = all(a < b for a, b in zip(pid_texts, pid_texts[1:], strict=False))
    columns = "SELECT participant_id, facts FROM {p}pensioner_register "
    if in_order:
        first, last = pid_texts[0], pid_texts[-1]
        bounds: tuple[Any, Any] = ((UUID(first), UUID(last)) if q.is_postgres
                                   else (UUID(first).hex, UUID(last).hex))
        rows = q.fetch(columns + "WHERE participant_id >= ? AND participant_id <= ?", bounds)
    else:
        return _register_column(q, "facts", pid_texts)
    return _by_id_text(rows)


def _by_id_text(rows: list[tuple[Any, ...]]) -> dict[str, tuple[UUID, Any]]:
    """(participant id, value) rows by the id's text, each with the id as a UUID."""
    out = {}
    for pid, value in rows:
        u = pid if isinstance(pid, UUID) else UUID(pid)
        out[str(u)] = (u, value)
    return out


def _register_column(q: StoreQueries, column: str, pid_texts: list[str]
                     ) -> dict[str, tuple[UUID, Any]]:
    """One column of the pensioner register by participant id text (with the id as a
    UUID), for a list of ids read in one query."""
    assert column in ("facts", "payee") and 0 < len(pid_texts) <= REGISTER_CHUNK
    columns = f"SELECT participant_id, {column} FROM {{p}}pensioner_register "
    if q.is_postgres:
        # One text parameter the server parses: psycopg would dump a list of 10,000 UUIDs
        # element by element in Python.
        rows = q.fetch(columns + "WHERE participant_id = ANY(?::uuid[])",
                       ("{" + ",".join(pid_texts) + "}",))
    else:
        marks = ",".join("?" * len(pid_texts))
        rows = q.fetch(columns + f"WHERE participant_id IN ({marks})",
                       [UUID(t).hex for t in pid_texts])
    return _by_id_text(rows)


def _named(line: dict[str, Any], why: str) -> str:
    """A line no longer owed, as the refusal lists it: the payment, whose (masked), why."""
    return f"{line['end_to_end_id']} ({resident_id.mask(line['id_number'])}: {why})"


def _one_off_owed(p: Participant, line: dict[str, Any]) -> str:
    """Why a one-off line is no longer owed as drafted; "" if it is."""
    kind = line["kind"]
    payable = p.payables.get(kind)
    if payable is None or payable.paid_by is not None or payable.hold is not None:
        return f"no {kind} is owed and payable now"
    if payable.amount_fen != line["amount_fen"]:
        return f"the {kind} owed is now {payable.amount_fen} fen"
    account = payable.payee_account
    if account is None or (payable.payee, account.account_name, account.account_number,
                           account.bank_code) != (line["payee_name"], line["account_name"],
                                                  line["account_number"], line["bank_code"]):
        return "new payee or bank details"
    return ""


SOURCE_PLACE = {source: i for i, source in enumerate(SOURCES)}


def _facts_after(facts: list[Any], line: dict[str, Any], version: int) -> str:
    """The register facts after the line is paid, as ledger.payout.facts_json writes them
    (only the paid fields change). `facts` is the caller's own facts_array of the stored
    text, and may be changed. The usual month is done on the array itself (a million
    payments a month); any other through the facts as a dict."""
    months: list[str] = line["months"]
    through = facts[FACT_PAID_THROUGH]
    runs: list[list[Any]] = facts[FACT_BASIC_PAID]
    if (through is not None and not facts[FACT_PAID_AFTER] and not facts[FACT_FORFEITED_AFTER]
            and len(months) == 1 and months[0] == next_month(through)
            and not line.get("rerated_fen") and (not runs or runs[-1][1] < months[0])):
        # The next month after everything settled, its basic pension continuing the last
        # run of months paid the same (the month before), or starting one.
        sources: list[int] = facts[FACT_SOURCES]
        for src, amt in line["account_by_source_fen"].items():
            place = SOURCE_PLACE[src]
            sources[place] -= amt
            assert sources[place] >= 0, (src, sources[place])
        facts[FACT_OVERPAYMENT] -= line["deduction_fen"]
        assert facts[FACT_OVERPAYMENT] >= 0
        extend_runs(runs, months[0], line["basic_fen"])
        facts[FACT_VERSION] = version
        facts[FACT_PAID_THROUGH] = months[0]
        facts[FACT_RATED_VERSION] = line.get("rated_version", 0) or facts[FACT_RATED_VERSION]
        text: str = orjson.dumps(facts).decode()
        return text
    return _facts_after_any(dict(zip(FACT_KEYS, facts[1:], strict=True)), line, version)


def _facts_after_any(facts: dict[str, Any], line: dict[str, Any], version: int) -> str:
    """_facts_after of any payment (months after a gap, several months, top-ups), the
    facts given as a dict keyed by FACT_KEYS (their sources_fen a list in SOURCES' order)."""
    d = dict(facts)
    sources = dict(zip(SOURCES, d["sources_fen"], strict=True))
    for src, amt in line["account_by_source_fen"].items():
        sources[src] -= amt
        assert sources[src] >= 0, (src, sources[src])
    overpayment = d["overpayment_fen"] - line["deduction_fen"]
    assert overpayment >= 0
    months: list[str] = line["months"]
    paid = set(d["paid_after"]) | set(months)
    forfeited = set(d["forfeited_after"])
    if d["paid_through"] is not None:
        # Everything up to paid_through is settled; only the months after it are compacted.
        compact = compact_months(next_month(d["paid_through"]), paid, forfeited)
        if compact["paid_through"] is None:
            compact["paid_through"] = d["paid_through"]
    else:
        compact = compact_months(d["start_month"], paid, forfeited)
    d.update(version=version, sources_fen=sources, overpayment_fen=overpayment,
             paid_through=compact["paid_through"], paid_after=sorted(compact["paid_after"]),
             forfeited_after=sorted(compact["forfeited_after"]))
    d["basic_paid"] = basic_paid_after(d["basic_paid"], months, line["basic_fen"],
                                       line.get("basic_by_month", {}),
                                       line.get("rerated_fen", {}))
    d["rated_version"] = line.get("rated_version", 0) or d["rated_version"]
    return pack_facts(d)


def _facts_after_validated(pid: UUID, facts_text: str, line: dict[str, Any],
                           version: int) -> str:
    """_facts_after the long way, through PensionerFacts (the check of the fast way)."""
    import dataclasses

    f = load_facts(pid, facts_text, _NO_PAYEE)
    sources = dict(f.sources_fen)
    for src, amt in line["account_by_source_fen"].items():
        sources[src] -= amt
    paid = set(f.paid_after) | set(line["months"])
    if f.paid_through is not None:
        compact = compact_months(next_month(f.paid_through), paid, set(f.forfeited_after))
        if compact["paid_through"] is None:
            compact["paid_through"] = f.paid_through
    else:
        compact = compact_months(f.start_month, paid, set(f.forfeited_after))
    return facts_json(dataclasses.replace(
        f, version=version, sources_fen=sources,
        overpayment_fen=f.overpayment_fen - line["deduction_fen"], **compact,
        basic_paid=basic_paid_after(f.basic_paid, line["months"], line["basic_fen"],
                                    line.get("basic_by_month", {}),
                                    line.get("rerated_fen", {})),
        rated_version=line.get("rated_version", 0) or f.rated_version))


@dataclass(frozen=True)
class BatchAnswers:
    """What one bank file says about one batch's payments."""

    batch_id: UUID
    value_date: date
    settled: Sequence[Outcome] = ()
    failed: Sequence[Outcome] = ()
    returned: Sequence[Outcome] = ()


def answer_all(ledger: Ledger, answers: Sequence[BatchAnswers], *, file_sha256: str,
               actor: str) -> dict[UUID, dict[str, Any]]:
    """Book the bank's answers of one file, for every batch it names, in one transaction.
    A failed or returned payment gives the money back to the expenditure account and the
    months back to the pensioner (owed again). The same file (by its SHA-256) booked twice
    changes nothing the second time: each batch keeps a receipt of the file."""
    assert 0 < len(answers) <= MAX_BATCHES_PER_FILE
    assert len({a.batch_id for a in answers}) == len(answers), "a batch named twice"
    for _ in range(MAX_ATTEMPTS):
        results: dict[UUID, dict[str, Any]] = {}
        to_save: list[Any] = []
        receipts: list[CommandReceipt] = []
        participants: dict[UUID, Participant] = {}  # one aggregate each, across batches
        for a in answers:
            key = f"bank-answer:{a.batch_id}:{file_sha256}"
            earlier = ledger._receipt(key)
            if earlier is not None:
                results[a.batch_id] = {**earlier.result, "replayed": True}
                continue
            batch = get_batch(ledger, a.batch_id)
            _book(ledger, batch, a, participants, file_sha256, actor)
            result = {"settled": len(a.settled), "failed": len(a.failed),
                      "returned": len(a.returned)}
            receipts.append(CommandReceipt.record(key, "bank-answer", file_sha256, result,
                                                  actor))
            to_save.append(batch)
            results[a.batch_id] = result
        if not to_save:
            return results
        try:
            ledger._save(*to_save, *participants.values(), *receipts)
        except IntegrityError:
            continue
        return results
    raise ConcurrencyConflict(MAX_ATTEMPTS)


def _book(ledger: Ledger, batch: PayoutBatch, a: BatchAnswers,
          participants: dict[UUID, Participant], file_sha256: str, actor: str) -> None:
    if a.settled:
        batch.settle(list(a.settled), a.value_date, file_sha256, actor)
    if a.failed:
        batch.fail(list(a.failed), a.value_date, file_sha256, actor)
    if a.returned:
        batch.returned(list(a.returned), a.value_date, file_sha256, actor)
    # The participants whose payments came back, read together (a province's file may
    # fail thousands).
    unread = list(dict.fromkeys(
        pid for o in [*a.failed, *a.returned]
        if (pid := batch.lines[o.end_to_end_id].participant_id) not in participants))
    participants.update((p.id, p) for p in ledger.participants_of(unread))
    for outcome, after in [(o, False) for o in a.failed] + [(o, True) for o in a.returned]:
        line = batch.lines[outcome.end_to_end_id]
        p = participants[line.participant_id]
        if line.kind != MONTHLY_PENSION:
            # The aggregate holds it on AC01/AC04/MD07...; the register row follows.
            p.reverse_one_off(kind=line.kind, end_to_end_id=line.end_to_end_id,
                              reason_code=outcome.reason_code, after_settlement=after,
                              value_date=a.value_date, actor=actor)
            continue
        p.trigger_event(Participant.PensionPaymentReversed, value_date=a.value_date,
                        end_to_end_id=line.end_to_end_id, months=line.months,
                        basic_fen=line.basic_fen,
                        account_by_source_fen=line.account_by_source_fen,
                        pooled_account_fen=line.pooled_account_fen,
                        deduction_fen=line.deduction_fen, amount_fen=line.amount_fen,
                        reason_code=outcome.reason_code, after_settlement=after,
                        basic_by_month=line.basic_by_month, rerated_fen=line.rerated_fen,
                        actor=actor)
    for outcome in [*a.failed, *a.returned]:
        # A dead pensioner's month sent back by the bank (an account closed at death: MD07)
        # is owed to the heirs, not to the next run (which pays the living only).
        p = participants[batch.lines[outcome.end_to_end_id].participant_id]
        if p.status == "deceased":
            ledger.settle_owed_at_death(p, a.value_date, actor)


def _batch_step(ledger: Ledger, batch_id: UUID, step: Callable[[PayoutBatch], None],
                *, lines: bool = True) -> PayoutBatch:
    for _ in range(MAX_ATTEMPTS):
        batch = get_batch(ledger, batch_id, lines=lines)
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
        file_format, manifest_sha256, files, actor), lines=False)


def close(ledger: Ledger, batch_id: UUID, actor: str) -> PayoutBatch:
    return _batch_step(ledger, batch_id, lambda b: b.close(actor))


def cancel(ledger: Ledger, batch_id: UUID, *, reason: str, actor: str) -> PayoutBatch:
    """Set aside a drafted or approved batch: the month is drafted again under the next
    sequence number (payout_engine.run.run_month)."""
    return _batch_step(ledger, batch_id, lambda b: b.cancel(reason, actor), lines=False)
