"""Bulk CSV imports of participants and contributions, all-or-nothing per file.

Every line is parsed and checked before anything is written. A file with any bad line is
refused whole: ImportRejected lists every bad line with its number, and nothing is stored.
A good file is written in ONE transaction: its events, the hash chain, the participant
register, the booked receipts, the fund's guarded balances and the import's CommandReceipt
(so importing the same file again returns the first result and books nothing).

Contributions take a fast path with no aggregate replay: the participant register, written
beside every participant event, holds what the rules need (version, status, birth date,
identity groups, years contributed). check_contribution, the same function the
one-at-a-time command calls, applies the rules, and the events built are exactly those
Participant.receive_contribution would trigger. The register rows are written back only if
they still hold the version read (the register version check): a participant written to
meanwhile refuses the write, and the import reads the register again and retries.

A big contributions file (PARALLEL_MIN_LINES) is checked by two processes, this one and a
forked child, each taking the participants of its share (share_of) with all their lines in
file order; the child sends its events back, and the write is still this process's one
transaction. What is stored and returned is what one process would make, the events in
another order (this process's share, then the child's).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple, Protocol, cast
from uuid import NAMESPACE_URL, UUID

import orjson
from eventsourcing.domain import datetime_now_with_tzinfo
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.utils import get_topic, resolve_topic

from ledger import resident_id
from ledger.aggregates.command_receipt import MAX_KEY_LEN, CommandReceipt
from ledger.aggregates.participant import (
    BankAccount,
    Participant,
    check_contribution,
    checked_bank_account,
    participant_id,
)
from ledger.application import Ledger, register_row
from ledger.collector import collector_paused
from ledger.errors import (
    ConcurrencyConflict,
    IdempotencyConflict,
    ImportRejected,
    InvalidInput,
    LedgerError,
    NotFound,
    Refused,
)
from ledger.forked import Child, ChildFailed, OwnQueries, Post, can_fork, uuids_of
from ledger.money import parse_yuan
from ledger.postings import guarded_deltas
from ledger.rules import RuleVersion
from ledger.store import (
    MAX_BLOCK_EVENTS,
    BulkEvent,
    EventRow,
    PydanticMapper,
    RegisterRow,
    RegisterYears,
    seal,
    unseal,
)

MAX_LINES = 2_000_000                 # data lines per file
MAX_FILE_BYTES = 512 * 1024 * 1024    # far above 2,000,000 lines of either kind
MAX_ATTEMPTS = 5                      # concurrent writers: re-read and retry this often
CHUNK_LINES = 10_000                  # lines per register read and per progress call
PARALLEL_MIN_LINES = 20_000           # a contributions file this long is checked in 2 processes
SHARES = 2                            # ... by participant: this process and a forked child

PARTICIPANT_COLUMNS = ("id_number", "name", "township", "village", "identity_group",
                       "enrol_date", "account_name", "account_number", "bank_code")
CONTRIBUTION_COLUMNS = ("id_number", "year", "tier", "amount", "channel", "receipt_no",
                        "value_date", "back_payment")

Progress = Callable[[int], None]
Problems = list[tuple[int, str]]


class _BulkRecorder(Protocol):
    def insert_events_bulk(self, stored_events: Sequence[EventRow], *,
                           fund_deltas: dict[str, int], register: Sequence[RegisterRow],
                           register_years: Sequence[RegisterYears],
                           receipts: Sequence[tuple[str, UUID]]) -> int: ...


@dataclass
class _Batch:
    """Everything one import writes, in one transaction."""

    stored: list[EventRow] = field(default_factory=list)
    register: list[RegisterRow] = field(default_factory=list)
    register_years: list[RegisterYears] = field(default_factory=list)
    receipts: list[tuple[str, UUID]] = field(default_factory=list)
    fund_deltas: dict[str, int] = field(default_factory=dict)


# ---- entry points ----------------------------------------------------------------------

def import_participants(ledger: Ledger, path: str | os.PathLike[str], *, actor: str,
                        progress: Progress | None = None,
                        idempotency_key: str | None = None) -> dict[str, Any]:
    """Enrol everyone in a participants CSV, or no one.

    Header: id_number,name,township,village,identity_group,enrol_date,account_name,
    account_number,bank_code (the three bank columns empty together when unknown)."""
    return _run(ledger, str(path), "participants", actor, progress, idempotency_key,
                _participants_batch)


def import_contributions(ledger: Ledger, path: str | os.PathLike[str], *, actor: str,
                         progress: Progress | None = None,
                         idempotency_key: str | None = None) -> dict[str, Any]:
    """Book every contribution in a contributions CSV, or none.

    Header: id_number,year,tier,amount,channel,receipt_no,value_date,back_payment.
    tier and amount are yuan ("500.00"); back_payment is true/false (empty is false)."""
    return _run(ledger, str(path), "contributions", actor, progress, idempotency_key,
                _contributions_batch)


Builder = Callable[[Ledger, str, str, str, datetime, Progress | None],
                   tuple[_Batch, dict[str, Any]]]


def _run(ledger: Ledger, path: str, kind: str, actor: str, progress: Progress | None,
         key: str | None, build: Builder) -> dict[str, Any]:
    data = read_file(path)
    digest = hashlib.sha256(data).hexdigest()
    key = key if key is not None else f"import:{kind}:{digest}"
    if not 0 < len(key) <= MAX_KEY_LEN:
        raise InvalidInput("idempotency_key", f"must be 1 to {MAX_KEY_LEN} characters")
    text = decode_text(path, data)
    del data
    recorder = cast(_BulkRecorder, ledger.recorder)
    # A file makes millions of small objects, none of them cyclic: the cyclic collector
    # would only walk them again and again (it doubled the time to check 100,000 lines).
    # Paused for the import, not switched off for good.
    with collector_paused():
        return _attempts(ledger, path, kind, actor, progress, key, digest, text, recorder, build)


def _attempts(ledger: Ledger, path: str, kind: str, actor: str, progress: Progress | None,
              key: str, digest: str, text: str, recorder: _BulkRecorder,
              build: Builder) -> dict[str, Any]:
    for _attempt in range(MAX_ATTEMPTS):
        earlier = ledger._receipt(key)
        if earlier is not None:
            if earlier.payload_sha256 != digest:
                raise IdempotencyConflict(key)
            return {**earlier.result, "replayed": True}
        batch, result = build(ledger, path, text, actor, datetime_now_with_tzinfo(), progress)
        receipt = CommandReceipt.record(key, f"import-{kind}", digest, result, actor)
        batch.stored.extend(ledger.mapper.to_stored_event(e) for e in receipt.pending_events)
        if len(batch.stored) > MAX_BLOCK_EVENTS:
            # The store chains one write as one block of at most this many events.
            raise InvalidInput("file", f"{path} makes {len(batch.stored)} events; one import "
                               f"writes at most {MAX_BLOCK_EVENTS}: split the file")
        try:
            recorder.insert_events_bulk(batch.stored, fund_deltas=batch.fund_deltas,
                                        register=batch.register,
                                        register_years=batch.register_years,
                                        receipts=batch.receipts)
        except IntegrityError:
            continue  # another writer got there first: re-read the register and decide again
        return {**result, "replayed": False}
    raise ConcurrencyConflict(MAX_ATTEMPTS)


# ---- reading the file ------------------------------------------------------------------

def read_file(path: str) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise InvalidInput("file", f"{path} is {size} bytes; at most {MAX_FILE_BYTES} "
                               "bytes per file: split it")
        with open(path, "rb") as f:
            return f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise InvalidInput("file", f"cannot read {path}: {e.strerror or e}") from None


def decode_text(path: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # a BOM from spreadsheet exports is accepted
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ImportRejected(path, [(line, f"encoding: not UTF-8 text (byte {e.start})")]) from None


def csv_records(path: str, text: str, columns: tuple[str, ...], problems: Problems,
             max_lines: int = MAX_LINES,
             share: int | None = None) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells in the order of `columns`, trimmed) for each data line, or for
    each line of one share of the participants (share_of its first column).
    Lines with the wrong number of cells are reported in `problems` and skipped."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise ImportRejected(path, [(1, "header: the file is empty; expected "
                                        f"{','.join(columns)}")])
    names = [h.strip() for h in header]
    missing = [c for c in columns if c not in names]
    unknown = [n for n in names if n not in columns]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if missing or unknown or repeated:
        rules = ([f"missing column(s) {', '.join(missing)}"] if missing else []) + \
                ([f"unknown column(s) {', '.join(unknown)}"] if unknown else []) + \
                ([f"repeated column(s) {', '.join(repeated)}"] if repeated else [])
        raise ImportRejected(path, [(1, f"header: {'; '.join(rules)} "
                                        f"(expected {','.join(columns)})")])
    order = [names.index(c) for c in columns]
    width = len(columns)
    first = order[0]
    count = 0
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            problems.append((start, f"csv: {e}"))
            continue
        if not cells:
            continue  # a blank line
        count += 1
        if count > max_lines:
            raise InvalidInput("file", f"{path} has more than {max_lines} lines; at most "
                               f"{max_lines} per file: split it")
        if len(cells) != width:
            problems.append((start, f"csv: {len(cells)} column(s) where the header has {width}"))
            continue
        if share is not None and share_of(cells[first].strip()) != share:
            continue
        yield start, [cells[i].strip() for i in order]


def parse_day(text: str, name: str) -> date:
    # date.fromisoformat accepts more than the calendar date form; only YYYY-MM-DD is ours.
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        raise InvalidInput(name, f"{text!r} is not a date in the form YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(name, f"{text!r} is not a real date") from None


def _year(text: str) -> int:
    if len(text) != 4 or not (text.isascii() and text.isdigit()):
        raise InvalidInput("year", f"{text!r} is not a year such as 2024")
    return int(text)


def _flag(text: str, name: str) -> bool:
    value = text.lower()
    if value in ("", "false"):
        return False
    if value == "true":
        return True
    raise InvalidInput(name, f"{text!r} must be true or false (empty means false)")


class _Rules:
    """The rule set read once per attempt; the version in force looked up once per date."""

    def __init__(self, ledger: Ledger, field: str) -> None:
        self.ruleset = ledger.ruleset()
        self.field = field
        self.cache: dict[date, tuple[RuleVersion, str] | Refused] = {}

    def on(self, day: date) -> RuleVersion:
        return self.labelled(day)[0]

    def labelled(self, day: date) -> tuple[RuleVersion, str]:
        """The version in force and its label (a property that formats on every call)."""
        found = self.cache.get(day)
        if found is None:
            try:
                version = self.ruleset.in_force(day, self.field)
                found = (version, version.label)
            except Refused as e:
                found = e
            self.cache[day] = found
        if isinstance(found, Refused):
            raise Refused(found.field, found.rule)  # a fresh error for each line
        return found


def _chunks(records: Iterator[tuple[int, list[str]]]) -> Iterator[list[tuple[int, list[str]]]]:
    chunk: list[tuple[int, list[str]]] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == CHUNK_LINES:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ---- participants ----------------------------------------------------------------------

def _participants_batch(ledger: Ledger, path: str, text: str, actor: str, now: datetime,
                        progress: Progress | None) -> tuple[_Batch, dict[str, Any]]:
    problems: Problems = []
    batch = _Batch()
    rules = _Rules(ledger, "enrol_date")
    first_line: dict[str, int] = {}
    lines = 0
    for chunk in _chunks(csv_records(path, text, PARTICIPANT_COLUMNS, problems)):
        parsed: list[tuple[int, str, list[str]]] = []
        for line_no, cells in chunk:
            try:
                canonical = resident_id.normalise(cells[0])
            except LedgerError as e:
                problems.append((line_no, str(e)))
                continue
            earlier = first_line.setdefault(canonical, line_no)
            if earlier != line_no:
                problems.append((line_no, f"id_number: {resident_id.mask(canonical)} is "
                                          f"already on line {earlier}"))
                continue
            parsed.append((line_no, canonical, cells))
        enrolled = ledger.queries.register_rows([participant_id(c) for _, c, _ in parsed])
        for line_no, canonical, cells in parsed:
            try:
                p = _enrol(canonical, cells, enrolled, rules, actor)
            except LedgerError as e:
                problems.append((line_no, str(e)))
                continue
            if not problems:  # once the file is refused, only checking goes on
                batch.stored.extend(ledger.mapper.to_stored_event(e) for e in p.pending_events)
                batch.register.append(register_row(p))
        lines += len(chunk)
        if progress:
            progress(len(chunk))
    if problems:
        raise ImportRejected(path, sorted(problems))
    return batch, {"lines": lines, "participants": len(batch.register),
                   "events": len(batch.stored)}


def _enrol(canonical: str, cells: list[str], enrolled: dict[UUID, RegisterRow], rules: _Rules,
           actor: str) -> Participant:
    _, name, township, village, group, enrol_text, acc_name, acc_number, bank_code = cells
    if participant_id(canonical) in enrolled:
        raise Refused("id_number", f"{resident_id.mask(canonical)} is already enrolled")
    enrol_date = parse_day(enrol_text, "enrol_date")
    bank_cells = (acc_name, acc_number, bank_code)
    if all(bank_cells):
        bank: BankAccount | None = checked_bank_account(acc_name, acc_number, bank_code)
    elif any(bank_cells):
        raise InvalidInput("bank", "account_name, account_number and bank_code are given "
                                   "together or not at all")
    else:
        bank = None
    return Participant.enrol(
        id_number=canonical, name=name, birth_date=resident_id.birth_date(canonical),
        township=township, village=village, identity_group=group, enrol_date=enrol_date,
        bank=bank, params=rules.on(enrol_date).parameters, actor=actor)


# ---- contributions ---------------------------------------------------------------------

Received = Participant.ContributionReceived
OnBehalf = Participant.PaidOnBehalf
# The fields of each event that vary by line; the rest (timestamp, actor) are the file's.
VARYING: dict[type[Any], frozenset[str]] = {
    Received: frozenset(("value_date", "year", "tier_fen", "amount_fen", "channel",
                         "receipt_no", "back_payment", "rule_version")),
    OnBehalf: frozenset(("value_date", "year", "amount_fen", "identity_group", "rule_version")),
}
CHECK_EVERY = 1000      # lines between checks of the fast mapping against the mapper's
MAX_MEMO = 100_000      # distinct values remembered per memo
RECEIPT_MARK = "\x00receipt_no\x00"  # stands in for the receipt number in a learnt JSON


class _Line(NamedTuple):
    """A contribution line as Participant.receive_contribution takes it."""

    line_no: int
    pid: UUID
    id_number: str
    year: int
    tier_fen: int
    amount_fen: int
    channel: str
    receipt_no: str
    value_date: date
    back_payment: bool


class _Money:
    """The parsed money columns of a line (year, tier, amount, value date, back-payment):
    a file repeats the same few hundred of them a hundred thousand times, so each distinct
    text is parsed once and its parse remembered. Compared and hashed by identity: it keys
    the forms of events, looked up once a line."""

    __slots__ = ("problems", "year", "tier_fen", "amount_fen", "value_date", "back_payment",
                 "rule")

    def __init__(self, year_text: str, tier_text: str, amount_text: str, day_text: str,
                 back_text: str) -> None:
        problems: list[str] = []

        def parse(parse: Callable[[str], Any], text: str) -> Any:
            try:
                return parse(text)
            except LedgerError as e:
                problems.append(str(e))
                return None

        self.year: int = parse(_year, year_text)
        self.tier_fen: int = parse(lambda t: parse_yuan(t, "tier"), tier_text)
        self.amount_fen: int = parse(lambda t: parse_yuan(t, "amount", allow_zero=True),
                                     amount_text)
        self.value_date: date = parse(lambda t: parse_day(t, "value_date"), day_text)
        self.back_payment: bool = parse(lambda t: _flag(t, "back_payment"), back_text)
        self.problems = tuple(problems)   # "field: rule" for each bad column, in order
        # The rule version in force on the value date and its label, once looked up.
        self.rule: tuple[RuleVersion, str] | None = None


class _Person:
    """A participant as the register knows them, advanced line by line through the file."""

    __slots__ = ("pid", "from_version", "version", "status", "birth_date", "groups",
                 "only_group", "years", "year_set", "years_sorted")

    def __init__(self, pid: UUID, version: int, status: str, birth_date: date,
                 groups: list[list[str]], only_group: str | None,
                 contributed_years: str) -> None:
        self.pid = pid
        self.from_version = self.version = version
        self.status = status
        self.birth_date = birth_date
        # [[since, group], ...] sorted by since: ISO dates compare as strings. Shared, read
        # only, by everyone with the same register text (_groups).
        self.groups = groups
        self.only_group = only_group
        self.years: dict[str, list[Any]] = orjson.loads(contributed_years)
        self.year_set = set(map(int, self.years))
        # The register's JSON has its years in order; a later year booked keeps it so.
        self.years_sorted = True

    @classmethod
    def of_register(cls, pid: UUID, version: int, status: str, birth_date: str,
                    identity_groups: str, contributed_years: str) -> _Person:
        """From a register row's columns (store.StoreQueries.register_tuples)."""
        return cls(pid, version, status, _birth_date(birth_date), *_groups(identity_groups),
                   contributed_years)

    def group_on(self, on: date) -> str:
        """Participant.identity_group_on, over the register's JSON."""
        if self.only_group is not None:
            return self.only_group
        day = on.isoformat()
        group = self.groups[0][1]
        for since, g in self.groups:
            if since <= day:
                group = g
        return group

    def book(self, year: int, receipt_no: str, tier_fen: int, back_payment: bool,
             events: int) -> None:
        self.version += events
        if self.years_sorted and self.year_set and year < max(self.year_set):
            self.years_sorted = False
        self.years[str(year)] = [receipt_no, tier_fen, back_payment]
        self.year_set.add(year)

    def register_years(self) -> RegisterYears:
        # The JSON of ledger.application.register_row: years sorted, [receipt, tier, back].
        years = self.years if self.years_sorted else dict(sorted(self.years.items()))
        return RegisterYears(self.pid, self.from_version, self.version,
                             orjson.dumps(years).decode())


def _validated_events(c: _Line, version: int, group: str, rule_version: str, actor: str,
                      now: datetime) -> list[Any]:
    """Exactly the events Participant.receive_contribution triggers for the line."""
    out: list[Any] = [Received(
        originator_id=c.pid, originator_version=version + 1, timestamp=now, actor=actor,
        value_date=c.value_date, year=c.year, tier_fen=c.tier_fen, amount_fen=c.amount_fen,
        channel=c.channel, receipt_no=c.receipt_no, back_payment=c.back_payment,
        rule_version=rule_version)]
    on_behalf = c.tier_fen - c.amount_fen
    if on_behalf:
        out.append(OnBehalf(
            originator_id=c.pid, originator_version=version + 2, timestamp=now, actor=actor,
            value_date=c.value_date, year=c.year, amount_fen=on_behalf, identity_group=group,
            rule_version=rule_version))
    return out


class _Form:
    """What lines alike in all but participant and receipt number make: the JSON of the
    ContributionReceived around its receipt number, the PaidOnBehalf's JSON whole (it has no
    field that differs between such lines), and how many lines used it."""

    __slots__ = ("received_head", "received_tail", "on_behalf", "uses")

    def __init__(self, received_head: bytes, received_tail: bytes,
                 on_behalf: bytes | None) -> None:
        self.received_head = received_head
        self.received_tail = received_tail
        self.on_behalf = on_behalf
        self.uses = 0


FormKey = tuple[_Money, str, str, str]   # money columns, channel, identity group, rule label


class _ContributionMapper:
    """The stored events of a contribution line, byte for byte what ledger.mapper makes of
    _validated_events, without building and dumping a pydantic model per event (measured:
    about 6 µs an event that way, under 1 µs this way).

    The JSON of each event class is learnt from the mapper's own output for the first line
    of each form (the columns but participant and receipt number); later lines of the form
    splice their receipt number into it. The first line of a form and every CHECK_EVERY-th
    line are also mapped the validated way and must match. Guarded fund deltas are computed
    with ledger.postings once per form (the fund's bank accounts never depend on who paid or
    on the receipt number) and summed."""

    def __init__(self, ledger: Ledger, actor: str, now: datetime) -> None:
        self.mapper = ledger.mapper
        self.fast = type(self.mapper) is PydanticMapper  # another mapper: the validated way
        self.transcoder = self.mapper.transcoder
        self.sealed = bool(self.mapper.compressor or self.mapper.cipher)
        self.actor, self.now = actor, now
        self.received_topic = get_topic(Received)
        self.on_behalf_topic = get_topic(OnBehalf)
        self.templates: dict[type[Any], dict[str, Any]] = {}
        self.forms: dict[FormKey, _Form] = {}
        self.deltas: dict[FormKey, dict[str, int]] = {}
        self.lines = 0

    def add(self, person: _Person, money: _Money, channel: str, receipt_no: str, group: str,
            label: str, stored: list[EventRow]) -> int:
        """Append the line's stored events; how many there are."""
        key = (money, channel, group, label)
        form = self.forms.get(key)
        self.lines += 1
        if form is None or self.lines % CHECK_EVERY == 1 or not self.fast:
            return self._validated(key, form, person, receipt_no, stored)
        form.uses += 1
        pid, version = person.pid, person.version
        state = form.received_head + orjson.dumps(receipt_no) + form.received_tail
        on_behalf = form.on_behalf
        if self.sealed:
            state = seal(self.mapper, state)
            on_behalf = None if on_behalf is None else seal(self.mapper, on_behalf)
        stored.append(BulkEvent(pid, version + 1, self.received_topic, state))
        if on_behalf is None:
            return 1
        stored.append(BulkEvent(pid, version + 2, self.on_behalf_topic, on_behalf))
        return 2

    def _validated(self, key: FormKey, form: _Form | None, person: _Person, receipt_no: str,
                   stored: list[EventRow]) -> int:
        money, channel, group, label = key
        line = _Line(0, person.pid, "", money.year, money.tier_fen, money.amount_fen, channel,
                     receipt_no, money.value_date, money.back_payment)
        events = _validated_events(line, person.version, group, label, self.actor, self.now)
        mapped = [self.mapper.to_stored_event(e) for e in events]
        if key not in self.deltas:
            self.deltas[key] = guarded_deltas(events)
        if self.fast and form is None:
            form = self.forms[key] = self._learn(key, mapped)  # may end the fast way
        if self.fast:
            assert form is not None
            # The learnt JSON must make exactly what the mapper made of this line.
            assert unseal(self.mapper, mapped[0].state) == (
                form.received_head + orjson.dumps(receipt_no) + form.received_tail)
            second = unseal(self.mapper, mapped[1].state) if len(mapped) > 1 else None
            assert second == form.on_behalf
        elif form is None:
            form = self.forms[key] = _Form(b"", b"", None)
        form.uses += 1
        stored.extend(mapped)
        return len(mapped)

    def _learn(self, key: FormKey, mapped: list[StoredEvent]) -> _Form:
        money, channel, group, label = key
        for s in mapped:
            cls = resolve_topic(s.topic)
            if cls not in self.templates:
                state = unseal(self.mapper, s.state)
                template: dict[str, Any] = self.transcoder.decode(state)
                # A field added to the event would otherwise be copied from this line to all.
                assert set(template) == VARYING[cls] | {"timestamp", "actor"}, sorted(template)
                self.templates[cls] = template
        day = money.value_date.isoformat()
        received = self.transcoder.encode({
            **self.templates[Received], "value_date": day, "year": money.year,
            "tier_fen": money.tier_fen, "amount_fen": money.amount_fen, "channel": channel,
            "receipt_no": RECEIPT_MARK, "back_payment": money.back_payment,
            "rule_version": label})
        head, mark, tail = received.partition(orjson.dumps(RECEIPT_MARK))
        if not mark or orjson.dumps(RECEIPT_MARK) in tail:
            # Another field holds the mark's text (an actor named so, say): the receipt
            # number's place is not known, so every line is mapped the validated way.
            self.fast = False
            return _Form(b"", b"", None)
        on_behalf = None
        if len(mapped) > 1:
            on_behalf = self.transcoder.encode({
                **self.templates[OnBehalf], "value_date": day, "year": money.year,
                "amount_fen": money.tier_fen - money.amount_fen, "identity_group": group,
                "rule_version": label})
        return _Form(head, tail, on_behalf)

    def fund_deltas(self) -> dict[str, int]:
        """ledger.postings.guarded_deltas of every event added, summed form by form."""
        total: dict[str, int] = {}
        for key, form in self.forms.items():
            for account, delta in self.deltas[key].items():
                total[account] = total.get(account, 0) + delta * form.uses
        return {account: delta for account, delta in total.items() if delta}


@dataclass
class _Checked:
    """What checking some of a file's lines makes: all of them, or one worker's share."""

    problems: Problems = field(default_factory=list)
    # Each receipt number's first line here (of the lines that got as far as its check), and
    # the later lines naming it again: reported when the shares are put together, where the
    # first line in the whole file is known.
    receipt_line: dict[str, int] = field(default_factory=dict)
    repeats: list[tuple[int, str]] = field(default_factory=list)
    stored: list[EventRow] = field(default_factory=list)
    receipts: list[tuple[str, UUID]] = field(default_factory=list)
    register_years: list[RegisterYears] = field(default_factory=list)
    fund_deltas: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    participants: int = 0
    events: int = 0
    amount_fen: int = 0
    on_behalf_fen: int = 0


class _Reads(Protocol):
    """The reads a check makes: ledger.queries, or a forked child's own connection."""

    def register_tuples(self, keys: Sequence[bytes]) -> list[
            tuple[bytes, UUID, int, str, str, str, str]]: ...
    def receipts_booked(self, receipt_nos: Sequence[str]) -> set[str]: ...


def _contributions_batch(ledger: Ledger, path: str, text: str, actor: str, now: datetime,
                         progress: Progress | None) -> tuple[_Batch, dict[str, Any]]:
    rules = _Rules(ledger, "value_date")
    mapper = _ContributionMapper(ledger, actor, now)
    if _in_two(ledger, text):
        shares = _check_in_two(ledger, path, text, rules, mapper, progress)
    else:
        shares = [_check_lines(_Checked(), ledger.queries, path, text, None, rules, mapper,
                               progress)]
    return _merged(path, shares)


def _check_lines(out: _Checked, reads: _Reads, path: str, text: str, share: int | None,
                 rules: _Rules, mapper: _ContributionMapper,
                 progress: Progress | None) -> _Checked:
    """Check the file's lines, or only those of one share of its participants (share_of),
    and make their events, in file order, into `out`. Each participant's lines are all in
    one share, so a share versions and books them exactly as the whole file would."""
    problems = out.problems
    # The file's own problems (CSV, cell counts) are reported by share 0 (or the whole).
    records = csv_records(path, text, CONTRIBUTION_COLUMNS, problems if not share else [],
                       share=share)
    moneys: dict[tuple[str, str, str, str, str], _Money] = {}
    # Keyed by the ID text, not the UUID: a str caches its hash, a UUID computes it each time.
    people: dict[str, _Person | None] = {}       # None: not enrolled
    year_line: dict[tuple[str, int], int] = {}
    receipt_line, repeats = out.receipt_line, out.repeats
    stored, receipts = out.stored, out.receipts
    lines = events = amount_fen = on_behalf_fen = 0
    for chunk in _chunks(records):
        parsed: list[tuple[int, str, _Money, str, str]] = []
        for line_no, cells in chunk:
            id_text, year_text, tier_text, amount_text, channel, receipt_no, day_text, \
                back_text = cells
            texts = (year_text, tier_text, amount_text, day_text, back_text)
            money = moneys.get(texts)
            if money is None:
                money = _Money(*texts)
                if len(moneys) < MAX_MEMO:
                    moneys[texts] = money
            if money.problems:
                # The ID is checked here too, so a line's problems are reported all at once.
                try:
                    resident_id.normalise(id_text)
                except LedgerError as e:
                    problems.append((line_no, str(e)))
                problems.extend((line_no, m) for m in money.problems)
                continue
            # Only canonical IDs are ever enrolled, so the upper-cased text finds the
            # participant exactly when it is a valid ID; the full check runs for IDs the
            # register lacks.
            id_number = id_text.upper()
            # Repeats within the file: the first line stands, the later ones are reported.
            earlier = year_line.setdefault((id_number, money.year), line_no)
            if earlier != line_no:
                problems.append((line_no, f"year: {money.year} for "
                                          f"{resident_id.mask(id_number)} is already on line "
                                          f"{earlier}"))
                continue
            if receipt_line.setdefault(receipt_no, line_no) != line_no:
                repeats.append((line_no, receipt_no))
                continue
            parsed.append((line_no, id_number, money, channel, receipt_no))
        _read_people(reads, people, parsed)
        booked = reads.receipts_booked([p[4] for p in parsed])
        for line_no, id_number, money, channel, receipt_no in parsed:
            person = people[id_number]
            if person is None:
                problems.append((line_no, _unknown(id_number)))
                continue
            try:
                rule = money.rule
                if rule is None:
                    rule = money.rule = rules.labelled(money.value_date)
                version, label = rule
                group = person.only_group or person.group_on(money.value_date)
                check_contribution(
                    status=person.status, birth_date=person.birth_date,
                    contributed_years=person.year_set, receipts=booked, identity_group=group,
                    year=money.year, tier_fen=money.tier_fen, amount_fen=money.amount_fen,
                    channel=channel, receipt_no=receipt_no, value_date=money.value_date,
                    back_payment=money.back_payment, rules=version)
            except LedgerError as e:
                problems.append((line_no, str(e)))
                continue
            if problems or repeats:
                continue  # the file is refused: keep checking, stop building
            added = mapper.add(person, money, channel, receipt_no, group, label, stored)
            person.book(money.year, receipt_no, money.tier_fen, money.back_payment, added)
            receipts.append((receipt_no, person.pid))
            events += added
            amount_fen += money.amount_fen
            on_behalf_fen += money.tier_fen - money.amount_fen
        lines += len(chunk)
        if progress:
            progress(len(chunk))
    if not (problems or repeats):
        touched = [p for p in people.values() if p is not None and p.version != p.from_version]
        out.register_years = [p.register_years() for p in touched]
        out.participants = len(touched)
        out.fund_deltas = mapper.fund_deltas()
    out.lines, out.events, out.amount_fen, out.on_behalf_fen = \
        lines, events, amount_fen, on_behalf_fen
    return out


def _merged(path: str, shares: list[_Checked]) -> tuple[_Batch, dict[str, Any]]:
    """One file's batch and result from its shares' checks (in share order), or
    ImportRejected with every bad line of them all."""
    # A receipt number's first line in the file, where a share's first is not the file's.
    first: dict[str, int] = {}
    for i, share in enumerate(shares):
        for other in shares[i + 1:]:
            for receipt_no in share.receipt_line.keys() & other.receipt_line.keys():
                line_no = min(share.receipt_line[receipt_no], other.receipt_line[receipt_no])
                first[receipt_no] = min(first.get(receipt_no, line_no), line_no)
    # A share's first line of a receipt an earlier line names is a repeat too. It went
    # through checks the whole file would not have made (it stops at the receipt): only
    # its repeat is reported.
    late = {line_no: receipt_no for share in shares
            for receipt_no in first.keys() & share.receipt_line.keys()
            if (line_no := share.receipt_line[receipt_no]) != first[receipt_no]}
    problems = [p for share in shares for p in share.problems if p[0] not in late]
    for share in shares:
        problems += [(line_no, f"receipt_no: receipt {receipt_no} is already on line "
                               f"{first.get(receipt_no) or share.receipt_line[receipt_no]}")
                     for line_no, receipt_no in share.repeats]
    problems += [(line_no, f"receipt_no: receipt {receipt_no} is already on line "
                           f"{first[receipt_no]}") for line_no, receipt_no in late.items()]
    if problems:
        raise ImportRejected(path, sorted(problems))
    batch = _Batch()
    fund_deltas: dict[str, int] = {}
    for share in shares:
        batch.stored += share.stored
        batch.register_years += share.register_years
        batch.receipts += share.receipts
        for account, delta in share.fund_deltas.items():
            fund_deltas[account] = fund_deltas.get(account, 0) + delta
    batch.fund_deltas = {account: delta for account, delta in fund_deltas.items() if delta}
    return batch, {"lines": sum(s.lines for s in shares),
                   "participants": sum(s.participants for s in shares),
                   "events": sum(s.events for s in shares),
                   "amount_fen": sum(s.amount_fen for s in shares),
                   "on_behalf_fen": sum(s.on_behalf_fen for s in shares)}


def _read_people(reads: _Reads, people: dict[str, _Person | None],
                 parsed: list[tuple[int, str, _Money, str, str]]) -> None:
    """The register rows of the chunk's participants not read before."""
    unseen: dict[bytes, str] = {}
    for _, id_number, _, _, _ in parsed:
        if id_number not in people:
            people[id_number] = None    # until the register says otherwise
            unseen[participant_key(id_number)] = id_number
    if unseen:
        key, id_number = next(iter(unseen.items()))
        assert UUID(bytes=key) == participant_id(id_number), "participant_key is participant_id"
    for row in reads.register_tuples(list(unseen)):
        people[unseen[row[0]]] = _Person.of_register(*row[1:])


# ---- checking a big file in two processes ----------------------------------------------

def share_of(id_text: str) -> int:
    """Which of the two processes checks a line, by its participant (the upper-cased ID text,
    as the check keys participants): all of one participant's lines go to one process, which
    versions them in file order."""
    return zlib.crc32(id_text.upper().encode()) % SHARES


def _in_two(ledger: Ledger, text: str) -> bool:
    """Whether to check the file in two processes: a big file, and a child can be forked
    (ledger.forked.can_fork)."""
    if text.count("\n") < PARALLEL_MIN_LINES:    # lines, counted without parsing
        return False
    return can_fork(ledger)


class CheckProcessFailed(ChildFailed):
    """The second process checking a big file died, failed or hung: nothing was imported."""


def _check_in_two(ledger: Ledger, path: str, text: str, rules: _Rules,
                  mapper: _ContributionMapper, progress: Progress | None) -> list[_Checked]:
    """Share 1 checked by a forked child (ledger.forked), share 0 by this process meanwhile.
    The child inherits the file, the rules and the mapper (with its key) and reads the
    register over a connection of its own. It sends each chunk's events as it goes, taken in
    between this process's own chunks."""
    child = Child("bulk-check", lambda post: _child(post, ledger, path, text, rules, mapper),
                  what="the process checking half the file", nothing="nothing imported",
                  error=CheckProcessFailed)
    theirs = _FromChild(child, progress)
    try:
        def between(lines: int) -> None:
            if progress:
                progress(lines)
            theirs.take(wait=False)

        mine = _check_lines(_Checked(), ledger.queries, path, text, 0, rules, mapper, between)
        theirs.take(wait=True)
    finally:
        child.close()
    return [mine, theirs.checked]


def _child(post: Post, ledger: Ledger, path: str, text: str, rules: _Rules,
           mapper: _ContributionMapper) -> None:
    """Check share 1; post ("rows", lines, events and receipts) for each chunk, then
    ("checked", the rest)."""
    out = _Checked()
    sent = [0, 0]   # events and receipts sent

    def chunk_done(lines: int) -> None:
        stored, receipts = out.stored[sent[0]:], out.receipts[sent[1]:]
        sent[:] = len(out.stored), len(out.receipts)
        post(("rows", lines, *_rows_packed(stored, receipts)))

    queries = OwnQueries(ledger.queries)
    try:
        _check_lines(out, queries, path, text, 1, rules, mapper, chunk_done)
    finally:
        queries.close()
    years = out.register_years
    post(("checked", out.problems, out.receipt_line, out.repeats, out.fund_deltas,
          (out.lines, out.participants, out.events, out.amount_fen, out.on_behalf_fen),
          b"".join([y.participant_id.bytes for y in years]),
          [(y.from_version, y.version, y.contributed_years) for y in years]))


RowsPacked = tuple[bytes, list[int], list[str], list[bytes], list[str], bytes]


def _rows_packed(stored: list[EventRow], receipts: list[tuple[str, UUID]]) -> RowsPacked:
    """Events and receipts as the child sends them: by columns, and participant ids as
    their 16 bytes (pickling a UUID, or a tuple an event, costs several times more)."""
    return (b"".join([cast(UUID, e.originator_id).bytes for e in stored]),
            [e.originator_version for e in stored], [e.topic for e in stored],
            [e.state for e in stored], [receipt_no for receipt_no, _ in receipts],
            b"".join([pid.bytes for _, pid in receipts]))


class _FromChild:
    """What the child sent, put back together: its share's _Checked."""

    def __init__(self, child: Child, progress: Progress | None) -> None:
        self.child, self.progress = child, progress
        self.checked = _Checked()
        # One UUID per participant, shared by their events (the chain hasher compares ids
        # by identity), receipts and register row.
        self.ids: dict[bytes, UUID] = {}

    def take(self, *, wait: bool) -> None:
        """Take what the child has sent; with wait, until its last message (at most
        forked.CHILD_WAIT_S between two)."""
        for kind, *body in self.child.messages(wait=wait):
            self._took(kind, *body)

    def _took(self, kind: str, *body: Any) -> None:
        c = self.checked
        if kind == "rows":
            lines, event_pids, versions, topics, states, receipt_nos, receipt_pids = body
            c.stored += map(BulkEvent, self._uuids(event_pids), versions, topics, states)
            c.receipts += zip(receipt_nos, self._uuids(receipt_pids), strict=True)
            if self.progress:
                self.progress(lines)
        else:
            assert kind == "checked", kind
            c.problems, c.receipt_line, c.repeats, c.fund_deltas, counts, pids, years = body
            c.lines, c.participants, c.events, c.amount_fen, c.on_behalf_fen = counts
            c.register_years = [RegisterYears(pid, old, new, text) for pid, (old, new, text)
                                in zip(self._uuids(pids), years, strict=True)]

    def _uuids(self, blob: bytes) -> list[UUID]:
        return uuids_of(blob, self.ids)


@functools.lru_cache(maxsize=MAX_MEMO)
def _birth_date(text: str) -> date:
    """A register's birth date, parsed once per distinct date (a county has ~30,000)."""
    return date.fromisoformat(text)


@functools.lru_cache(maxsize=MAX_MEMO)
def _groups(text: str) -> tuple[list[list[str]], str | None]:
    """A register's identity groups ([[since, group], ...]) and the only group when there is
    one, parsed once per distinct text: most participants have one group since the day they
    enrolled, and a county enrols on a few thousand days. Shared: never changed in place."""
    groups: list[list[str]] = orjson.loads(text)
    return groups, groups[0][1] if len(groups) == 1 else None


_PARTICIPANT_NAME = NAMESPACE_URL.bytes + b"pension-ledger:participant:"


def participant_key(id_number: str) -> bytes:
    """The 16 bytes of participant_id(id_number), without making a UUID: uuid5 is SHA-1 of
    namespace and name with the version and variant bits set (RFC 4122, 4.3). Checked
    against participant_id once a chunk."""
    key = bytearray(hashlib.sha1(_PARTICIPANT_NAME + id_number.encode()).digest()[:16])
    key[6] = (key[6] & 0x0F) | 0x50
    key[8] = (key[8] & 0x3F) | 0x80
    return bytes(key)


def _unknown(id_number: str) -> str:
    """Why the register has no such participant: a malformed ID, or nobody enrolled."""
    try:
        canonical = resident_id.normalise(id_number)
    except LedgerError as e:
        return str(e)
    return str(NotFound("id_number", resident_id.mask(canonical)))
