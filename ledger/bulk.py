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
Participant.receive_contribution would trigger.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import io
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple, Protocol, cast
from uuid import UUID

import orjson
from eventsourcing.domain import datetime_now_with_tzinfo
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.utils import get_topic

from ledger import resident_id
from ledger.aggregates.command_receipt import MAX_KEY_LEN, CommandReceipt
from ledger.aggregates.participant import (
    BankAccount,
    Participant,
    check_contribution,
    participant_id,
)
from ledger.application import Ledger, register_row
from ledger.errors import (
    ConcurrencyConflict,
    IdempotencyConflict,
    ImportRejected,
    InvalidInput,
    LedgerError,
    NotFound,
    Refused,
)
from ledger.money import parse_yuan
from ledger.postings import guarded_deltas
from ledger.rules import RuleVersion
from ledger.store import MAX_BLOCK_EVENTS, PydanticMapper, RegisterRow

MAX_LINES = 2_000_000                 # data lines per file
MAX_FILE_BYTES = 512 * 1024 * 1024    # far above 2,000,000 lines of either kind
MAX_ATTEMPTS = 5                      # concurrent writers: re-read and retry this often
CHUNK_LINES = 10_000                  # lines per register read and per progress call

PARTICIPANT_COLUMNS = ("id_number", "name", "township", "village", "identity_group",
                       "enrol_date", "account_name", "account_number", "bank_code")
CONTRIBUTION_COLUMNS = ("id_number", "year", "tier", "amount", "channel", "receipt_no",
                        "value_date", "back_payment")

Progress = Callable[[int], None]
Problems = list[tuple[int, str]]


class _BulkRecorder(Protocol):
    def insert_events_bulk(self, stored_events: Sequence[StoredEvent], *,
                           fund_deltas: dict[str, int], register: Sequence[RegisterRow],
                           receipts: Sequence[tuple[str, UUID]]) -> int: ...


@dataclass
class _Batch:
    """Everything one import writes, in one transaction."""

    stored: list[StoredEvent] = field(default_factory=list)
    register: list[RegisterRow] = field(default_factory=list)
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
    data = _read(path)
    digest = hashlib.sha256(data).hexdigest()
    key = key if key is not None else f"import:{kind}:{digest}"
    if not 0 < len(key) <= MAX_KEY_LEN:
        raise InvalidInput("idempotency_key", f"must be 1 to {MAX_KEY_LEN} characters")
    text = _decode(path, data)
    del data
    recorder = cast(_BulkRecorder, ledger.recorder)
    # A file makes millions of small objects, none of them cyclic: the cyclic collector
    # would only walk them again and again (it doubled the time to check 100,000 lines).
    # Paused for the import, not switched off for good.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _attempts(ledger, path, kind, actor, progress, key, digest, text, recorder, build)
    finally:
        if paused:
            gc.enable()


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
                                        register=batch.register, receipts=batch.receipts)
        except IntegrityError:
            continue  # another writer got there first: re-read the register and decide again
        return {**result, "replayed": False}
    raise ConcurrencyConflict(MAX_ATTEMPTS)


# ---- reading the file ------------------------------------------------------------------

def _read(path: str) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise InvalidInput("file", f"{path} is {size} bytes; at most {MAX_FILE_BYTES} "
                               "bytes per file: split it")
        with open(path, "rb") as f:
            return f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise InvalidInput("file", f"cannot read {path}: {e.strerror or e}") from None


def _decode(path: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # a BOM from spreadsheet exports is accepted
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ImportRejected(path, [(line, f"encoding: not UTF-8 text (byte {e.start})")]) from None


def _records(path: str, text: str, columns: tuple[str, ...], problems: Problems,
             max_lines: int = MAX_LINES) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells in the order of `columns`, trimmed) for each data line.
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
        yield start, [cells[i].strip() for i in order]


def _date(text: str, name: str) -> date:
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
    for chunk in _chunks(_records(path, text, PARTICIPANT_COLUMNS, problems)):
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
    enrol_date = _date(enrol_text, "enrol_date")
    bank_cells = (acc_name, acc_number, bank_code)
    if all(bank_cells):
        bank: BankAccount | None = BankAccount(account_name=acc_name, account_number=acc_number,
                                               bank_code=bank_code)
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
MAX_MEMO = 100_000      # distinct values remembered per column


class _Line(NamedTuple):
    line_no: int
    pid: UUID
    id_number: str      # as given, upper-cased: the canonical form if the participant exists
    year: int
    tier_fen: int
    amount_fen: int
    channel: str
    receipt_no: str
    value_date: date
    back_payment: bool


class _Problem(str):
    """A field's problem, "field: rule", remembered in place of its value."""


class _Column:
    """One column's parser, remembering what it parsed: a file repeats the same few tiers,
    amounts, years and dates a hundred thousand times."""

    __slots__ = ("parse", "seen")

    def __init__(self, parse: Callable[[str], Any]) -> None:
        self.parse = parse
        self.seen: dict[str, Any] = {}

    def __call__(self, text: str) -> Any:
        try:
            return self.seen[text]
        except KeyError:
            pass
        try:
            value = self.parse(text)
        except LedgerError as e:
            value = _Problem(e)
        if len(self.seen) < MAX_MEMO:
            self.seen[text] = value
        return value


class _Person:
    """A participant as the register knows them, advanced line by line through the file."""

    __slots__ = ("row", "version", "birth_date", "groups", "only_group", "years", "year_set",
                 "touched")

    def __init__(self, row: RegisterRow) -> None:
        self.row = row
        self.version = row.version
        self.birth_date = date.fromisoformat(row.birth_date)
        # [[since, group], ...] sorted by since: ISO dates compare as strings.
        self.groups: list[list[str]] = orjson.loads(row.identity_groups)
        self.only_group: str | None = self.groups[0][1] if len(self.groups) == 1 else None
        self.years: dict[str, list[Any]] = orjson.loads(row.contributed_years)
        self.year_set = {int(y) for y in self.years}
        self.touched = False

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

    def book(self, c: _Line, events: int) -> None:
        self.version += events
        self.years[str(c.year)] = [c.receipt_no, c.tier_fen, c.back_payment]
        self.year_set.add(c.year)
        self.touched = True

    def register_row(self) -> RegisterRow:
        # The JSON of ledger.application.register_row: years sorted, [receipt, tier, back].
        years = orjson.dumps(dict(sorted(self.years.items()))).decode()
        return RegisterRow(participant_id=self.row.participant_id, version=self.version,
                           status=self.row.status, birth_date=self.row.birth_date,
                           identity_groups=self.row.identity_groups, contributed_years=years)


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


class _ContributionMapper:
    """The stored events of a contribution line, byte for byte what ledger.mapper makes of
    _validated_events, without building and dumping a pydantic model per event (measured:
    about 6 µs an event that way, 1 µs this way).

    The JSON of each event class is learnt from the mapper's own output for the first line
    that has it; later lines replace only the fields that vary by line. The first line and
    every CHECK_EVERY-th are also mapped the validated way and must match. Guarded fund
    deltas are computed with ledger.postings for each distinct money shape (the fund's bank
    accounts never depend on who paid or on the receipt number) and summed."""

    def __init__(self, ledger: Ledger, actor: str, now: datetime) -> None:
        self.mapper = ledger.mapper
        self.fast = type(self.mapper) is PydanticMapper  # another mapper: the validated way
        self.encode = self.mapper.transcoder.encode
        self.compressor = self.mapper.compressor
        self.cipher = self.mapper.cipher
        self.actor, self.now = actor, now
        self.topics = {cls: get_topic(cls) for cls in VARYING}
        self.templates: dict[type[Any], dict[str, Any]] = {}
        self.deltas: dict[tuple[Any, ...], dict[str, int]] = {}
        self.uses: dict[tuple[Any, ...], int] = {}
        self.lines = 0

    def add(self, c: _Line, version: int, group: str, rule_version: str,
            stored: list[StoredEvent]) -> int:
        """Append the line's stored events; how many there are."""
        day = c.value_date.isoformat()
        shapes: list[tuple[type[Any], dict[str, Any]]] = [(Received, {
            "value_date": day, "year": c.year, "tier_fen": c.tier_fen,
            "amount_fen": c.amount_fen, "channel": c.channel, "receipt_no": c.receipt_no,
            "back_payment": c.back_payment, "rule_version": rule_version})]
        on_behalf = c.tier_fen - c.amount_fen
        if on_behalf:
            shapes.append((OnBehalf, {"value_date": day, "year": c.year, "amount_fen": on_behalf,
                                      "identity_group": group, "rule_version": rule_version}))
        money = (c.value_date, c.year, c.tier_fen, c.amount_fen, c.channel, c.back_payment,
                 group, rule_version)
        uses = self.uses.get(money)
        self.uses[money] = (uses or 0) + 1
        self.lines += 1
        learnt = Received in self.templates and (not on_behalf or OnBehalf in self.templates)
        if uses is None or self.lines % CHECK_EVERY == 1 or not self.fast or not learnt:
            events = _validated_events(c, version, group, rule_version, self.actor, self.now)
            if uses is None:
                self.deltas[money] = guarded_deltas(events)
            mapped = [self.mapper.to_stored_event(e) for e in events]
            if self.fast:
                for (cls, values), s in zip(shapes, mapped, strict=True):
                    self._learn(cls, values, s.state)
            stored.extend(mapped)
            return len(mapped)
        for cls, values in shapes:
            version += 1
            state = self.encode({**self.templates[cls], **values})
            if self.compressor:
                state = self.compressor.compress(state)
            if self.cipher:
                state = self.cipher.encrypt(state)
            stored.append(StoredEvent(c.pid, version, self.topics[cls], state))
        return len(shapes)

    def fund_deltas(self) -> dict[str, int]:
        """ledger.postings.guarded_deltas of every event added, summed shape by shape."""
        total: dict[str, int] = {}
        for money, uses in self.uses.items():
            for account, delta in self.deltas[money].items():
                total[account] = total.get(account, 0) + delta * uses
        return {account: delta for account, delta in total.items() if delta}

    def _learn(self, cls: type[Any], values: dict[str, Any], stored_state: bytes) -> None:
        if self.cipher:
            stored_state = self.cipher.decrypt(stored_state)
        if self.compressor:
            stored_state = self.compressor.decompress(stored_state)
        if cls not in self.templates:
            template: dict[str, Any] = self.mapper.transcoder.decode(stored_state)
            # A field added to the event would otherwise be copied from this line to all.
            assert set(template) == VARYING[cls] | {"timestamp", "actor"}, sorted(template)
            self.templates[cls] = template
        fast = self.encode({**self.templates[cls], **values})
        assert fast == stored_state, (cls.__name__, fast, stored_state)


def _parse_line(line_no: int, cells: list[str], columns: _Columns,
                problems: Problems) -> _Line | None:
    id_text, year_text, tier_text, amount_text, channel, receipt_no, day_text, back_text = cells
    year = columns.year(year_text)
    tier_fen = columns.tier(tier_text)
    amount_fen = columns.amount(amount_text)
    value_date = columns.value_date(day_text)
    back_payment = columns.back_payment(back_text)
    if (type(year) is _Problem or type(tier_fen) is _Problem or type(amount_fen) is _Problem
            or type(value_date) is _Problem or type(back_payment) is _Problem):
        # The ID is checked here too, so a line's problems are reported all at once.
        try:
            resident_id.normalise(id_text)
        except LedgerError as e:
            problems.append((line_no, str(e)))
        problems.extend((line_no, v) for v in (year, tier_fen, amount_fen, value_date,
                                               back_payment) if type(v) is _Problem)
        return None
    # Only canonical IDs are ever enrolled, so the upper-cased text finds the participant
    # exactly when it is a valid ID; the full check runs for IDs the register lacks.
    id_number = id_text.upper()
    return _Line(line_no, participant_id(id_number), id_number, year, tier_fen, amount_fen,
                 channel, receipt_no, value_date, back_payment)


class _Columns:
    def __init__(self) -> None:
        self.year = _Column(_year)
        self.tier = _Column(lambda t: parse_yuan(t, "tier"))
        self.amount = _Column(lambda t: parse_yuan(t, "amount", allow_zero=True))
        self.value_date = _Column(lambda t: _date(t, "value_date"))
        self.back_payment = _Column(lambda t: _flag(t, "back_payment"))


def _contributions_batch(ledger: Ledger, path: str, text: str, actor: str, now: datetime,
                         progress: Progress | None) -> tuple[_Batch, dict[str, Any]]:
    problems: Problems = []
    batch = _Batch()
    rules = _Rules(ledger, "value_date")
    mapper = _ContributionMapper(ledger, actor, now)
    columns = _Columns()
    # Keyed by the ID text, not the UUID: a str caches its hash, a UUID computes it each time.
    people: dict[str, _Person | None] = {}       # None: not enrolled
    year_line: dict[tuple[str, int], int] = {}
    receipt_line: dict[str, int] = {}
    lines = events = amount_fen = on_behalf_fen = 0
    for chunk in _chunks(_records(path, text, CONTRIBUTION_COLUMNS, problems)):
        parsed: list[_Line] = []
        for line_no, cells in chunk:
            c = _parse_line(line_no, cells, columns, problems)
            if c is None:
                continue
            # Repeats within the file: the first line stands, the later ones are reported.
            earlier = year_line.setdefault((c.id_number, c.year), line_no)
            if earlier != line_no:
                problems.append((line_no, f"year: {c.year} for {resident_id.mask(c.id_number)} "
                                          f"is already on line {earlier}"))
                continue
            earlier = receipt_line.setdefault(c.receipt_no, line_no)
            if earlier != line_no:
                problems.append((line_no, f"receipt_no: receipt {c.receipt_no} is already on "
                                          f"line {earlier}"))
                continue
            parsed.append(c)
        unseen = {c.id_number: c.pid for c in parsed if c.id_number not in people}
        rows = ledger.queries.register_rows(list(unseen.values()))
        for id_number, pid in unseen.items():
            row = rows.get(pid)
            people[id_number] = _Person(row) if row is not None else None
        booked = ledger.queries.receipts_booked([c.receipt_no for c in parsed])
        for c in parsed:
            person = people[c.id_number]
            if person is None:
                problems.append((c.line_no, _unknown(c.id_number)))
                continue
            try:
                version, label = rules.labelled(c.value_date)
                group = person.group_on(c.value_date)
                check_contribution(
                    status=person.row.status, birth_date=person.birth_date,
                    contributed_years=person.year_set, receipts=booked, identity_group=group,
                    year=c.year, tier_fen=c.tier_fen, amount_fen=c.amount_fen,
                    channel=c.channel, receipt_no=c.receipt_no, value_date=c.value_date,
                    back_payment=c.back_payment, rules=version)
            except LedgerError as e:
                problems.append((c.line_no, str(e)))
                continue
            if problems:
                continue  # the file is refused: keep checking, stop building
            added = mapper.add(c, person.version, group, label, batch.stored)
            person.book(c, added)
            batch.receipts.append((c.receipt_no, c.pid))
            events += added
            amount_fen += c.amount_fen
            on_behalf_fen += c.tier_fen - c.amount_fen
        lines += len(chunk)
        if progress:
            progress(len(chunk))
    if problems:
        raise ImportRejected(path, sorted(problems))
    touched = [p for p in people.values() if p is not None and p.touched]
    batch.register = [p.register_row() for p in touched]
    batch.fund_deltas = mapper.fund_deltas()
    return batch, {"lines": lines, "participants": len(touched), "events": events,
                   "amount_fen": amount_fen, "on_behalf_fen": on_behalf_fen}


def _unknown(id_number: str) -> str:
    """Why the register has no such participant: a malformed ID, or nobody enrolled."""
    try:
        canonical = resident_id.normalise(id_number)
    except LedgerError as e:
        return str(e)
    return str(NotFound("id_number", resident_id.mask(canonical)))
