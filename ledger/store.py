"""The event store and what is written in the same transaction as the events.

eventsourcing's recorders, extended so that one transaction holds:
  - the events themselves;
  - a block of the hash chain over the stored events (tamper evidence);
  - the guarded balances of the fund's bank accounts (never below zero);
  - the participant register: version, status and contribution years of each
    participant, so a bulk import validates 100,000 lines without replaying them;
  - booked receipt numbers, unique across the whole fund.
Store selection: LEDGER_DATABASE_URL (or --db) is a SQLite path or a postgresql:// URL.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from queue import Full, Queue
from threading import Event, Thread
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import unquote, urlparse
from uuid import UUID

import orjson
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    Mapper,
    OperationalError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import get_topic, resolve_topic, retry
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composable, Identifier, Literal
from pydantic import BaseModel

from ledger import jsonbytes
from ledger.copy_rows import CopyData, copy_rows
from ledger.errors import Refused
from ledger.postings import ACCOUNT_NAMES, GUARDED_ACCOUNTS

DEFAULT_SQLITE_PATH = "./var/ledger.db"
GENESIS_SHA256 = "0" * 64
MAX_BLOCK_EVENTS = 1_000_000
BULK_IDLE_LIMIT_S = 300  # the longest pause between two statements of a bulk transaction
COPY_MIN_ROWS = 1_000  # ride-along rows from which PostgreSQL writes them by binary COPY
HASH_SLICE = 2_000     # events sent by COPY before hashing them into the chain


# ---- transcoding (eventsourcing's aggregate8 pattern) --------------------------------

class OrjsonTranscoder(Transcoder):
    def encode(self, obj: Any) -> bytes:
        return jsonbytes.dumps(obj)  # kept by the million in bulk writes: its own size

    def decode(self, data: bytes) -> Any:
        return orjson.loads(data)


class PydanticMapper(Mapper[UUID]):
    """Pydantic events dumped with mode="json": Decimal and dates become strings."""

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        topic = get_topic(domain_event.__class__)
        state = domain_event.model_dump(mode="json",
                                        exclude={"originator_id", "originator_version"})
        return StoredEvent(originator_id=domain_event.originator_id,
                           originator_version=domain_event.originator_version,
                           topic=topic, state=seal(self, self.transcoder.encode(state)))

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        state = self.transcoder.decode(unseal(self, stored_event.state))
        cls: type[BaseModel] = resolve_topic(stored_event.topic)
        return cls(originator_id=stored_event.originator_id,
                   originator_version=stored_event.originator_version, **state)



def seal(mapper: Mapper[Any], plain: bytes) -> bytes:
    """Encoded state as stored: compressed, then encrypted, as the store is set up. The fast
    encoders (bulk import, funding) build the JSON themselves and seal it here."""
    if mapper.compressor:
        plain = mapper.compressor.compress(plain)
    if mapper.cipher:
        plain = mapper.cipher.encrypt(plain)
    return plain


def unseal(mapper: Mapper[Any], state: bytes) -> bytes:
    """The encoded (JSON) state of a stored event."""
    if mapper.cipher:
        state = mapper.cipher.decrypt(state)
    if mapper.compressor:
        state = mapper.compressor.decompress(state)
    return state


# ---- what rides along with the events ------------------------------------------------

class EventRow(Protocol):
    """What a bulk write needs of an event: eventsourcing's StoredEvent, or a BulkEvent."""

    @property
    def originator_id(self) -> UUID | str: ...
    @property
    def originator_version(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def state(self) -> bytes: ...


class BulkEvent(NamedTuple):
    """A stored event as a bulk import makes it: a tuple is made in a third of the time
    of eventsourcing's frozen StoredEvent, and a file makes a hundred thousand."""

    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes


class RegisterYears(NamedTuple):
    """A contribution import's change to a register row: the new version and contribution
    years, written only if the row is still at from_version (else IntegrityError: another
    writer got there first)."""

    participant_id: UUID
    from_version: int
    version: int
    contributed_years: str    # JSON {year: [receipt, tier_fen, back_payment]}


class RegisterVersion(NamedTuple):
    """Funding's change to a register row: only the version moves (a PensionPaid changes
    nothing else the participant register keeps), and only if the row is still at
    from_version (else IntegrityError)."""

    participant_id: UUID
    from_version: int
    version: int


@dataclass(frozen=True)
class RideAlong:
    """What a write stores beside its events, in the same transaction: the fund's guarded
    balances and the write side's registers. Recorders take these as keyword arguments of
    insert_events (eventsourcing passes them through) and of insert_events_bulk."""

    fund_deltas: dict[str, int] = field(default_factory=dict)
    register: Sequence[RegisterRow] = ()
    register_years: Sequence[RegisterYears] = ()
    register_versions: Sequence[RegisterVersion] = ()
    receipts: Sequence[tuple[str, UUID]] = ()
    pensioners: Sequence[PensionerRow] = ()
    pensioners_removed: Sequence[UUID] = ()  # pensions revoked
    paid_months_add: Sequence[tuple[UUID, str, str]] = ()
    paid_months_remove: Sequence[tuple[UUID, str]] = ()
    one_offs: Sequence[OneOffRow] = ()

    @classmethod
    def of(cls, kwargs: dict[str, Any]) -> RideAlong:
        """The ride-along rows among a write's keyword arguments (others are eventsourcing's
        own and are passed over)."""
        return cls(**{k: v for k, v in kwargs.items() if k in _RIDE_ALONG_FIELDS and v})


@dataclass(frozen=True)
class RegisterRow:
    participant_id: UUID
    version: int
    status: str
    birth_date: str
    identity_groups: str      # JSON [[since, group], ...]
    contributed_years: str    # JSON {year: [receipt, tier_fen, back_payment]}


@dataclass(frozen=True)
class PensionerRow:
    """What the payout run reads of a pensioner. facts: JSON with no personal data;
    payee: name, ID number and bank details (encrypted when a cipher key is set), or None
    to leave the stored payee as it is."""

    participant_id: UUID
    facts: str
    payee: bytes | None


@dataclass(frozen=True)
class OneOffRow:
    """A one-off payable as the payout run reads it (ledger/aggregates/participant.Payable).
    payee: JSON of the payee's name and account, encrypted when a cipher key is set."""

    participant_id: UUID
    kind: str
    amount_fen: int
    paid_by: str | None
    hold: str | None
    payee: bytes


_RIDE_ALONG_FIELDS = frozenset(f.name for f in fields(RideAlong))


class InsufficientFunds(Refused):
    pass


def event_sha256(notification_id: int, originator_id: Any, version: int, topic: str,
                 state: bytes) -> bytes:
    """The hash of one stored event, over exactly what is stored (ciphertext when
    encrypted), so an auditor can verify from the database alone, without the key."""
    oid = (originator_id.hex if isinstance(originator_id, UUID)
           else str(originator_id).replace("-", ""))
    head = f"{notification_id}|{oid}|{version}|{topic}|".encode()
    # A value altered by hand may come back as text rather than bytes: hash it all the same.
    body = state.encode("utf-8", "surrogateescape") if isinstance(state, str) else bytes(state)
    return hashlib.sha256(head + body).digest()


def block_sha256(block_no: int, first_id: int, last_id: int, count: int, events_sha256: str,
                 prev_sha256: str) -> str:
    text = f"{block_no}|{first_id}|{last_id}|{count}|{events_sha256}|{prev_sha256}"
    return hashlib.sha256(text.encode()).hexdigest()


def events_digest(rows: Iterable[tuple[int, Any, int, str, bytes]]) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    for row in rows:
        h.update(event_sha256(*row))
        n += 1
    return h.hexdigest(), n


class ChainBlock(NamedTuple):
    first_id: int
    last_id: int
    event_count: int
    events_sha256: str


class ChainHasher:
    """The hash chain's blocks over events stored with the contiguous notification ids
    first_id, first_id + 1, ...: fed in that order, a slice at a time (so a bulk write can
    hash what it has just sent while the server stores it), at most MAX_BLOCK_EVENTS
    events a block. The digests of events_digest."""

    def __init__(self, first_id: int) -> None:
        self.closed: list[ChainBlock] = []
        self.first = self.next_id = first_id
        self.hash = hashlib.sha256()

    def add(self, events: Sequence[EventRow]) -> None:
        self.add_hashes(event_hashes(self.next_id, events))

    def add_hashes(self, hashes: bytes) -> None:
        """The next events by their event_hashes, made elsewhere (copied_part)."""
        assert len(hashes) % EVENT_HASH_LEN == 0
        room = self.first + MAX_BLOCK_EVENTS - self.next_id
        count = len(hashes) // EVENT_HASH_LEN
        if count > room:
            self.add_hashes(hashes[:room * EVENT_HASH_LEN])
            self.add_hashes(hashes[room * EVENT_HASH_LEN:])
            return
        if not count:
            return
        self.hash.update(hashes)
        self.next_id += count
        if self.next_id - self.first == MAX_BLOCK_EVENTS:
            self._close()

    def blocks(self) -> list[ChainBlock]:
        if self.next_id > self.first:
            self._close()
        return self.closed

    def _close(self) -> None:
        self.closed.append(ChainBlock(self.first, self.next_id - 1, self.next_id - self.first,
                                      self.hash.hexdigest()))
        self.first, self.hash = self.next_id, hashlib.sha256()



EVENT_HASH_LEN = 32


def event_hashes(first_id: int, events: Sequence[EventRow]) -> bytes:
    """event_sha256 of each event, stored with the ids first_id, first_id + 1, ...,
    one after another: what the chain's block hashes over them. Without a tuple and a call
    per event (a million a month's funding)."""
    if not events:
        return b""
    # The shortcut below must hash exactly what an auditor's event_sha256 hashes.
    e = events[0]
    reference = event_sha256(first_id, e.originator_id, e.originator_version, e.topic, e.state)
    sha256 = hashlib.sha256
    topics: dict[str, bytes] = {}
    out: list[bytes] = []
    append = out.append
    nid, last_id, oid = first_id, None, b""
    for s in events:
        topic = topics.get(s.topic)
        if topic is None:
            topic = topics[s.topic] = s.topic.encode()
        if s.originator_id is not last_id:  # an aggregate's events come one after another
            last_id = s.originator_id
            oid = _hex(last_id).replace("-", "").encode()
        append(sha256(b"%d|%s|%d|%s|%s" % (nid, oid, s.originator_version, topic,
                                           s.state)).digest())
        nid += 1
    assert out[0] == reference
    return b"".join(out)


def chain_blocks(first_id: int, events: Sequence[EventRow]) -> list[ChainBlock]:
    """ChainHasher's blocks over events stored with ids from first_id on."""
    hasher = ChainHasher(first_id)
    hasher.add(events)
    return hasher.blocks()


def recorded_blocks(recorded: list[tuple[int, StoredEvent]]) -> list[ChainBlock]:
    """The chain's blocks over events with the notification ids they were given."""
    out: list[ChainBlock] = []
    # A write larger than a block (a bulk import) is chained as several blocks.
    for i in range(0, len(recorded), MAX_BLOCK_EVENTS):
        block = recorded[i:i + MAX_BLOCK_EVENTS]
        digest, n = events_digest((i, s.originator_id, s.originator_version, s.topic, s.state)
                                  for i, s in block)
        out.append(ChainBlock(block[0][0], block[-1][0], n, digest))
    return out


def _hex(originator_id: UUID | str) -> str:
    return originator_id.hex if isinstance(originator_id, UUID) else originator_id


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _guard_message(account: str, balance: int, delta: int) -> str:
    from ledger.money import format_yuan

    return (f"would take the {ACCOUNT_NAMES.get(account, account)} below zero "
            f"(balance {format_yuan(balance)} yuan, change {format_yuan(delta)} yuan)")


# ---- SQLite -------------------------------------------------------------------------

SQLITE_EXTRA_TABLES = [
    "CREATE TABLE IF NOT EXISTS event_chain (block_no INTEGER PRIMARY KEY, "
    "first_notification_id INTEGER NOT NULL, last_notification_id INTEGER NOT NULL, "
    "event_count INTEGER NOT NULL, events_sha256 TEXT NOT NULL, prev_sha256 TEXT NOT NULL, "
    "block_sha256 TEXT NOT NULL, recorded_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS fund_positions (account TEXT PRIMARY KEY, "
    "balance_fen INTEGER NOT NULL CHECK (balance_fen >= 0))",
    "CREATE TABLE IF NOT EXISTS participant_register (participant_id TEXT PRIMARY KEY, "
    "version INTEGER NOT NULL, status TEXT NOT NULL, birth_date TEXT NOT NULL, "
    "identity_groups TEXT NOT NULL, contributed_years TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS booked_receipts (receipt_no TEXT PRIMARY KEY, "
    "participant_id TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS pensioner_register (participant_id TEXT PRIMARY KEY, "
    "facts TEXT NOT NULL, payee BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS paid_months (participant_id TEXT NOT NULL, month TEXT NOT NULL, "
    "end_to_end_id TEXT NOT NULL, PRIMARY KEY (participant_id, month))",
    "CREATE TABLE IF NOT EXISTS one_off_register (participant_id TEXT NOT NULL, "
    "kind TEXT NOT NULL, amount_fen INTEGER NOT NULL, paid_by TEXT, hold TEXT, "
    "payee BLOB NOT NULL, PRIMARY KEY (participant_id, kind))",
]


class LedgerSQLiteRecorder(SQLiteApplicationRecorder):
    def construct_create_table_statements(self) -> list[str]:
        return super().construct_create_table_statements() + SQLITE_EXTRA_TABLES

    def _insert_events(self, c: Any, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        assert ids is not None
        self._ride_along(c, list(zip(ids, stored_events, strict=True)), **kwargs)
        return ids

    def insert_events_bulk(self, stored_events: Sequence[EventRow], **kwargs: Any) -> int:
        """One transaction, executemany: the bulk import path."""
        assert stored_events
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {self.events_table_name}")
            before = c.fetchone()[0]
            c.executemany(self.insert_events_statement,
                          [(_hex(s.originator_id), s.originator_version, s.topic, s.state)
                           for s in stored_events])
            c.execute(f"SELECT MAX(rowid) FROM {self.events_table_name}")
            assert c.fetchone()[0] == before + len(stored_events), \
                "rowids must be contiguous in one transaction"
            self._write_ride_along(c, **kwargs)
            self._append_blocks(c, chain_blocks(before + 1, stored_events))
        return len(stored_events)

    def _ride_along(self, c: Any, recorded: list[tuple[int, StoredEvent]],
                    **kwargs: Any) -> None:
        self._write_ride_along(c, **kwargs)
        self._chain(c, recorded)

    def _write_ride_along(self, c: Any, **kwargs: Any) -> None:
        ride = RideAlong.of(kwargs)
        for account, delta in sorted(ride.fund_deltas.items()):
            assert account in GUARDED_ACCOUNTS
            c.execute("SELECT balance_fen FROM fund_positions WHERE account=?", (account,))
            row = c.fetchone()
            balance = row[0] if row else 0
            if balance + delta < 0:
                raise InsufficientFunds("amount", _guard_message(account, balance, delta))
            if row:
                c.execute("UPDATE fund_positions SET balance_fen = balance_fen + ? "
                          "WHERE account = ?", (delta, account))
            else:
                c.execute("INSERT INTO fund_positions VALUES (?, ?)", (account, delta))
        if ride.register:
            c.executemany(
                "INSERT INTO participant_register VALUES (?,?,?,?,?,?) ON CONFLICT(participant_id) "
                "DO UPDATE SET version=excluded.version, status=excluded.status, "
                "identity_groups=excluded.identity_groups, "
                "contributed_years=excluded.contributed_years",
                [(r.participant_id.hex, r.version, r.status, r.birth_date, r.identity_groups,
                  r.contributed_years) for r in ride.register])
        if ride.register_years:
            c.executemany("UPDATE participant_register SET version=?, contributed_years=? "
                          "WHERE participant_id=? AND version=?",
                          [(r.version, r.contributed_years, r.participant_id.hex, r.from_version)
                           for r in ride.register_years])
            # eventsourcing's cursor wrapper hides rowcount; the sqlite3 cursor has it.
            if c.sqlite_cursor.rowcount != len(ride.register_years):
                raise IntegrityError("participant_register: a row changed since it was read")
        if ride.register_versions:
            c.executemany("UPDATE participant_register SET version=? "
                          "WHERE participant_id=? AND version=?",
                          [(r.version, r.participant_id.hex, r.from_version)
                           for r in ride.register_versions])
            if c.sqlite_cursor.rowcount != len(ride.register_versions):
                raise IntegrityError("participant_register: a row changed since it was read")
        if ride.receipts:
            c.executemany("INSERT INTO booked_receipts VALUES (?, ?)",
                          [(no, pid.hex) for no, pid in ride.receipts])
        for r in ride.pensioners:
            if r.payee is None:
                c.execute("UPDATE pensioner_register SET facts=? WHERE participant_id=?",
                          (r.facts, r.participant_id.hex))
            else:
                c.execute("INSERT INTO pensioner_register VALUES (?,?,?) ON CONFLICT"
                          "(participant_id) DO UPDATE SET facts=excluded.facts, "
                          "payee=excluded.payee", (r.participant_id.hex, r.facts, r.payee))
        if ride.pensioners_removed:
            c.executemany("DELETE FROM pensioner_register WHERE participant_id=?",
                          [(pid.hex,) for pid in ride.pensioners_removed])
        if ride.paid_months_remove:
            c.executemany("DELETE FROM paid_months WHERE participant_id=? AND month=?",
                          [(pid.hex, m) for pid, m in ride.paid_months_remove])
        if ride.paid_months_add:
            # A plain INSERT: paying one pensioner twice for a month violates the key.
            c.executemany("INSERT INTO paid_months VALUES (?,?,?)",
                          [(pid.hex, m, e2e) for pid, m, e2e in ride.paid_months_add])
        if ride.one_offs:
            c.executemany("INSERT INTO one_off_register VALUES (?,?,?,?,?,?) ON CONFLICT"
                          "(participant_id, kind) DO UPDATE SET amount_fen=excluded.amount_fen, "
                          "paid_by=excluded.paid_by, hold=excluded.hold, payee=excluded.payee",
                          [(r.participant_id.hex, r.kind, r.amount_fen, r.paid_by, r.hold,
                            r.payee) for r in ride.one_offs])

    def _chain(self, c: Any, recorded: list[tuple[int, StoredEvent]]) -> None:
        self._append_blocks(c, recorded_blocks(recorded))

    def _append_blocks(self, c: Any, blocks: list[ChainBlock]) -> None:
        for first, last, n, digest in blocks:
            c.execute("SELECT block_no, block_sha256 FROM event_chain "
                      "ORDER BY block_no DESC LIMIT 1")
            row = c.fetchone()
            block_no, prev = (row[0] + 1, row[1]) if row else (1, GENESIS_SHA256)
            c.execute("INSERT INTO event_chain VALUES (?,?,?,?,?,?,?,?)",
                      (block_no, first, last, n, digest, prev,
                       block_sha256(block_no, first, last, n, digest, prev), _now()))


# ---- PostgreSQL ---------------------------------------------------------------------

class LedgerPostgresRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: Any, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        # NOTIFY channels belong to the database, not the schema: name ours after both.
        self.channel_name = f"{self.datastore.schema}_{self.channel_name}"[:63]
        schema = Identifier(self.datastore.schema)
        self.sql_create_statements.extend([
            # A month's batch stores its lines as 5 MB events (a province's: 100 of them);
            # PostgreSQL's default compression (pglz) took 4.1 s to write 527 MB of them,
            # lz4 1.2 s, for about the same size (86 MB against 80). Where the server has
            # lz4; once (the ALTER locks the table, and every start runs these).
            # Before PostgreSQL 14 there is no choice, nor attcompression: it is read by
            # EXECUTE, so that the block still compiles there.
            SQL("DO $$ DECLARE method text; BEGIN "
                "IF current_setting('server_version_num')::int >= 140000 THEN "
                "IF 'lz4' = ANY (SELECT unnest(enumvals) FROM pg_settings "
                "WHERE name = 'default_toast_compression') THEN "
                "EXECUTE 'SELECT attcompression::text FROM pg_attribute "
                "WHERE attrelid = $1::regclass AND attname = ''state''' "
                "INTO method USING {t}::text; "
                "IF method IS DISTINCT FROM 'l' THEN "
                "ALTER TABLE {s}.{e} ALTER COLUMN state SET COMPRESSION lz4; "
                "END IF; END IF; END IF; END $$").format(
                    s=schema, e=Identifier(self.events_table_name),
                    t=Literal(f'"{self.datastore.schema}"."{self.events_table_name}"')),
            SQL("CREATE TABLE IF NOT EXISTS {s}.event_chain (block_no bigint PRIMARY KEY, "
                "first_notification_id bigint NOT NULL, last_notification_id bigint NOT NULL, "
                "event_count integer NOT NULL, events_sha256 text NOT NULL, "
                "prev_sha256 text NOT NULL, block_sha256 text NOT NULL, "
                "recorded_at text NOT NULL)").format(s=schema),
            SQL("CREATE TABLE IF NOT EXISTS {s}.fund_positions (account text PRIMARY KEY, "
                "balance_fen bigint NOT NULL CHECK (balance_fen >= 0))").format(s=schema),
            SQL("CREATE TABLE IF NOT EXISTS {s}.participant_register (participant_id uuid "
                "PRIMARY KEY, version bigint NOT NULL, status text NOT NULL, "
                "birth_date text NOT NULL, identity_groups text NOT NULL, "
                "contributed_years text NOT NULL) "
                # Half-full pages: a year's import rewrites every row, and with room on its
                # page the new version is a HOT update that leaves the index alone (measured:
                # 100,000 rows in about half the time).
                "WITH (fillfactor = 50)").format(s=schema),
            SQL("CREATE TABLE IF NOT EXISTS {s}.booked_receipts (receipt_no text PRIMARY KEY, "
                "participant_id uuid NOT NULL)").format(s=schema),
            # Room on each page: every month's funding rewrites every pensioner's facts, which
            # carry no index, so the new row versions can be HOT updates.
            SQL("CREATE TABLE IF NOT EXISTS {s}.pensioner_register (participant_id uuid "
                "PRIMARY KEY, facts text NOT NULL, payee bytea NOT NULL) "
                "WITH (fillfactor = 70)").format(s=schema),
            SQL("CREATE TABLE IF NOT EXISTS {s}.paid_months (participant_id uuid NOT NULL, "
                "month text NOT NULL, end_to_end_id text NOT NULL, "
                "PRIMARY KEY (participant_id, month))").format(s=schema),
            SQL("CREATE TABLE IF NOT EXISTS {s}.one_off_register (participant_id uuid NOT NULL, "
                "kind text NOT NULL, amount_fen bigint NOT NULL, paid_by text, hold text, "
                "payee bytea NOT NULL, PRIMARY KEY (participant_id, kind))").format(s=schema),
        ])
        self._schema = schema

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        """One plain transaction. eventsourcing's own pipelined insert catches exceptions
        inside the transaction block and commits anyway, which would let a refused write
        (the fund guard) commit its events: here any exception rolls everything back."""
        if not stored_events:
            return []
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            self._lock_table(curs)
            self._notify_channel(curs)
            curs.execute(self.insert_events_statement, (
                [self.construct_pg_stored_event(s.originator_id, s.originator_version, s.topic,
                                                s.state) for s in stored_events],))
            ids = [row["notification_id"] for row in curs.fetchall()]
            assert len(ids) == len(stored_events)
            self._ride_along(curs, list(zip(ids, stored_events, strict=True)), **kwargs)
        return ids

    def insert_events_bulk(self, stored_events: Sequence[EventRow], **kwargs: Any) -> int:
        """Binary COPY of the events under the same table lock as ordinary inserts, and
        their ride-along rows, in one transaction (a BulkTransaction of one part)."""
        assert stored_events
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            write = BulkTransaction(self, curs)
            write.add(stored_events, **kwargs)
            return write.finish()

    def _ride_along(self, curs: Any, recorded: list[tuple[int, StoredEvent]],
                    **kwargs: Any) -> None:
        self._write_ride_along(curs, **kwargs)
        self._append_blocks(curs, recorded_blocks(recorded))

    def _write_ride_along(self, curs: Any, **kwargs: Any) -> None:
        ride = RideAlong.of(kwargs)
        s = self._schema
        for account, delta in sorted(ride.fund_deltas.items()):
            assert account in GUARDED_ACCOUNTS
            curs.execute(SQL("SELECT balance_fen FROM {s}.fund_positions WHERE account=%s")
                         .format(s=s), (account,))
            row = curs.fetchone()
            balance = row["balance_fen"] if row else 0
            if balance + delta < 0:
                raise InsufficientFunds("amount", _guard_message(account, balance, delta))
            if row:
                curs.execute(SQL("UPDATE {s}.fund_positions SET balance_fen = balance_fen + %s "
                                 "WHERE account = %s").format(s=s), (delta, account))
            else:
                curs.execute(SQL("INSERT INTO {s}.fund_positions VALUES (%s, %s)").format(s=s),
                             (account, delta))
        upsert_register = SQL(
            "ON CONFLICT (participant_id) DO UPDATE SET version=excluded.version, "
            "status=excluded.status, identity_groups=excluded.identity_groups, "
            "contributed_years=excluded.contributed_years")
        if len(ride.register) >= COPY_MIN_ROWS:
            # A bulk write: binary COPY. psycopg dumps a text[] parameter element by element
            # in Python (most of a 100,000-line import); COPY formats rows in C.
            _temp_table(curs, "register_in", SQL("LIKE {s}.participant_register").format(s=s))
            with curs.copy("COPY register_in FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["uuid", "int8", "text", "text", "text", "text"])
                for r in ride.register:
                    copy.write_row((r.participant_id, r.version, r.status, r.birth_date,
                                    r.identity_groups, r.contributed_years))
            curs.execute(SQL("INSERT INTO {s}.participant_register SELECT * FROM register_in "
                             "{u}").format(s=s, u=upsert_register))
        elif ride.register:
            rows = ride.register
            curs.execute(
                SQL("INSERT INTO {s}.participant_register SELECT * FROM unnest("
                    "%b::uuid[], %b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[]) "
                    "{u}").format(s=s, u=upsert_register),
                ([r.participant_id for r in rows], [r.version for r in rows],
                 [r.status for r in rows], [r.birth_date for r in rows],
                 [r.identity_groups for r in rows], [r.contributed_years for r in rows]))
        if ride.register_years:
            self._guarded_register_update(curs, ride.register_years, ("contributed_years",))
        if ride.register_versions:
            self._guarded_register_update(curs, ride.register_versions, ())
        if len(ride.receipts) >= COPY_MIN_ROWS:
            with curs.copy(SQL("COPY {s}.booked_receipts (receipt_no, participant_id) "
                               "FROM STDIN (FORMAT BINARY)").format(s=s)) as copy:
                copy.set_types(["text", "uuid"])
                for receipt_no, pid in ride.receipts:
                    copy.write_row((receipt_no, pid))
        elif ride.receipts:
            curs.execute(SQL("INSERT INTO {s}.booked_receipts SELECT * FROM unnest("
                             "%b::text[], %b::uuid[])").format(s=s),
                         ([r[0] for r in ride.receipts], [r[1] for r in ride.receipts]))
        full = [r for r in ride.pensioners if r.payee is not None]
        facts_only = [r for r in ride.pensioners if r.payee is None]
        if full:
            curs.execute(SQL("INSERT INTO {s}.pensioner_register SELECT * FROM unnest("
                             "%b::uuid[], %b::text[], %b::bytea[]) ON CONFLICT (participant_id) "
                             "DO UPDATE SET facts=excluded.facts, payee=excluded.payee")
                         .format(s=s), ([r.participant_id for r in full],
                                        [r.facts for r in full], [r.payee for r in full]))
        if len(facts_only) >= COPY_MIN_ROWS:
            # A month's funding rewrites every pensioner's facts: binary COPY, then one UPDATE.
            self._update_facts(curs, [(r.participant_id, r.facts) for r in facts_only])
        elif facts_only:
            curs.execute(SQL("UPDATE {s}.pensioner_register AS r SET facts = v.facts FROM "
                             "unnest(%b::uuid[], %b::text[]) AS v(id, facts) "
                             "WHERE r.participant_id = v.id").format(s=s),
                         ([r.participant_id for r in facts_only], [r.facts for r in facts_only]))
            _check_updated(curs, len(facts_only), "pensioner_register")
        if ride.pensioners_removed:
            curs.execute(SQL("DELETE FROM {s}.pensioner_register WHERE participant_id = "
                             "ANY(%b::uuid[])").format(s=s), (list(ride.pensioners_removed),))
        if ride.paid_months_remove:
            removed = ride.paid_months_remove
            curs.execute(SQL("DELETE FROM {s}.paid_months AS p USING unnest(%b::uuid[], "
                             "%b::text[]) AS v(id, month) WHERE p.participant_id = v.id "
                             "AND p.month = v.month").format(s=s),
                         ([r[0] for r in removed], [r[1] for r in removed]))
        if len(ride.paid_months_add) >= COPY_MIN_ROWS:
            self._add_paid_months(curs, ride.paid_months_add)
        elif ride.paid_months_add:
            added = ride.paid_months_add
            # A plain INSERT: paying one pensioner twice for a month violates the key.
            curs.execute(SQL("INSERT INTO {s}.paid_months SELECT * FROM unnest(%b::uuid[], "
                             "%b::text[], %b::text[])").format(s=s),
                         ([r[0] for r in added], [r[1] for r in added], [r[2] for r in added]))
        if ride.one_offs:
            offs = ride.one_offs
            # A few a month: unnest is enough.
            curs.execute(SQL("INSERT INTO {s}.one_off_register SELECT * FROM unnest("
                             "%b::uuid[], %b::text[], %b::bigint[], %b::text[], %b::text[], "
                             "%b::bytea[]) ON CONFLICT (participant_id, kind) DO UPDATE SET "
                             "amount_fen=excluded.amount_fen, paid_by=excluded.paid_by, "
                             "hold=excluded.hold, payee=excluded.payee").format(s=s),
                         ([r.participant_id for r in offs], [r.kind for r in offs],
                          [r.amount_fen for r in offs], [r.paid_by for r in offs],
                          [r.hold for r in offs], [r.payee for r in offs]))

    def _guarded_register_update(self, curs: Any, rows: Sequence[tuple[Any, ...]] | CopyData,
                                 columns: tuple[str, ...]) -> None:
        """Rows (participant_id, from_version, version, *columns) set version and columns
        of register rows still at from_version; IntegrityError unless every row was."""
        assert all(c in ("contributed_years",) for c in columns)
        s = self._schema
        names = ("participant_id", "from_version", "version", *columns)
        types = ("uuid", "bigint", "bigint", *("text" for _ in columns))
        assigned = SQL(", ").join(SQL("{c} = u.{c}").format(c=Identifier(c))
                                  for c in ("version", *columns))
        update = SQL("UPDATE {s}.participant_register AS r SET {a} FROM {u} "
                     "WHERE r.participant_id = u.participant_id "
                     "AND r.version = u.from_version")
        if isinstance(rows, CopyData) or len(rows) >= COPY_MIN_ROWS:
            temp = "register_" + "_".join(columns or ("version",)) + "_in"
            _temp_table(curs, temp, SQL(", ").join(SQL("{} " + t).format(Identifier(n))
                                                   for n, t in zip(names, types, strict=True)))
            _copy_in(curs, SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(Identifier(temp)),
                     [*REGISTER_VERSION_TYPES, *("text" for _ in columns)], rows)
            curs.execute(update.format(s=s, a=assigned, u=SQL("{} AS u").format(Identifier(temp)))
                         + SQL(" AND r.participant_id BETWEEN %s AND %s"), _key_range(rows))
        else:
            assert not isinstance(rows, CopyData)
            arrays = SQL(", ").join(SQL("%b::" + t + "[]") for t in types)
            curs.execute(update.format(s=s, a=assigned, u=SQL("unnest({}) AS u({})").format(
                arrays, SQL(", ").join(Identifier(n) for n in names))),
                [[r[i] for r in rows] for i in range(len(names))])
        # The register version check: someone wrote to one of these participants since the
        # rows were read (the events' key catches the same; this is the cheap place to see it).
        _check_updated(curs, _row_count(rows), "participant_register")

    def _update_facts(self, curs: Any, rows: Sequence[tuple[UUID, str]] | CopyData) -> None:
        """Rows (participant_id, facts) set the facts of those pensioners: by binary COPY,
        then one UPDATE; IntegrityError unless every pensioner is in the register."""
        _temp_table(curs, "pensioner_facts_in", SQL("id uuid, facts text"))
        _copy_in(curs, "COPY pensioner_facts_in FROM STDIN (FORMAT BINARY)",
                 PENSIONER_FACTS_TYPES, rows)
        curs.execute(SQL("UPDATE {s}.pensioner_register AS r SET facts = v.facts FROM "
                         "pensioner_facts_in AS v WHERE r.participant_id = v.id "
                         "AND r.participant_id BETWEEN %s AND %s").format(s=self._schema),
                     _key_range(rows))
        _check_updated(curs, _row_count(rows), "pensioner_register")

    def _add_paid_months(self, curs: Any,
                         rows: Sequence[tuple[UUID, str, str]] | CopyData) -> None:
        # COPY, like a plain INSERT, violates the key if anyone is paid twice for a month.
        _copy_in(curs, SQL("COPY {s}.paid_months (participant_id, month, end_to_end_id) "
                           "FROM STDIN (FORMAT BINARY)").format(s=self._schema),
                 PAID_MONTH_TYPES, rows)

    def _write_copied(self, curs: Any, part: CopiedPart) -> None:
        """The ride-along rows of a part made ready elsewhere, as _write_ride_along writes
        the same rows given as values."""
        if part.register_versions.count:
            self._guarded_register_update(curs, part.register_versions, ())
        if part.pensioner_facts.count:
            self._update_facts(curs, part.pensioner_facts)
        if part.paid_months_add.count:
            self._add_paid_months(curs, part.paid_months_add)

    def _append_blocks(self, curs: Any, blocks: list[ChainBlock]) -> None:
        for first, last, n, digest in blocks:
            curs.execute(SQL("SELECT block_no, block_sha256 FROM {s}.event_chain "
                             "ORDER BY block_no DESC LIMIT 1").format(s=self._schema))
            row = curs.fetchone()
            block_no, prev = ((row["block_no"] + 1, row["block_sha256"]) if row
                              else (1, GENESIS_SHA256))
            curs.execute(SQL("INSERT INTO {s}.event_chain VALUES (%s,%s,%s,%s,%s,%s,%s,%s)")
                         .format(s=self._schema),
                         (block_no, first, last, n, digest, prev,
                          block_sha256(block_no, first, last, n, digest, prev), _now()))


def _temp_table(curs: Any, name: str, columns: Composable) -> None:
    """An empty temporary table for a bulk write's rows: made once a transaction, emptied
    each time (a streamed write fills it once a chunk)."""
    curs.execute(SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DROP").format(
        Identifier(name), columns))
    curs.execute(SQL("TRUNCATE {}").format(Identifier(name)))


def _copy_in(curs: Any, statement: Composable | str, types: Sequence[str],
             rows: Sequence[Sequence[Any]] | CopyData) -> None:
    """COPY the rows in, by psycopg's binary formatting, or as made ready elsewhere
    (CopyData, with the same types: ledger.copy_rows)."""
    with curs.copy(statement) as copy:
        if isinstance(rows, CopyData):
            copy.write(rows.whole())
            return
        copy.set_types(list(types))
        write_row = copy.write_row
        for row in rows:
            write_row(row)


def _row_count(rows: Sequence[Any] | CopyData) -> int:
    return rows.count if isinstance(rows, CopyData) else len(rows)


def _key_range(rows: Sequence[Sequence[Any]] | CopyData) -> tuple[UUID, UUID]:
    """The least and greatest participant id (each row's first field) among the rows."""
    if isinstance(rows, CopyData):
        assert rows.least_id is not None and rows.greatest_id is not None
        return rows.least_id, rows.greatest_id
    return _id_range([r[0] for r in rows])


def _id_range(ids: Sequence[UUID]) -> tuple[UUID, UUID]:
    """The range of a register's key the rows lie in: an UPDATE bounded by it reads only
    that range (a chunk of a batch, in participant id order), not the whole register."""
    return min(ids), max(ids)


def _check_updated(curs: Any, expected: int, table: str) -> None:
    if curs.rowcount != expected:
        raise IntegrityError(f"{table}: a row changed since it was read")


# The binary COPY columns' types of what a bulk write stores, in the order of the rows.
EVENT_COPY_TYPES = ("uuid", "int8", "text", "bytea", "int8")  # ..., notification_id
REGISTER_VERSION_TYPES = ("uuid", "int8", "int8")  # participant_id, from_version, version
PENSIONER_FACTS_TYPES = ("uuid", "text")  # participant_id, facts
PAID_MONTH_TYPES = ("uuid", "text", "text")  # participant_id, month, end_to_end_id


@dataclass(frozen=True)
class CopiedPart:
    """A part of a bulk write made ready in another process (copied_part): what
    BulkTransaction.add would send for the same events and ride-along rows, already in
    the binary COPY format, and the events' hashes for the chain."""

    first_id: int  # the notification id its first event was given
    events: CopyData
    event_hashes: bytes
    register_versions: CopyData
    pensioner_facts: CopyData
    paid_months_add: CopyData


def copied_part(first_id: int, events: Sequence[EventRow],
                register_versions: Sequence[RegisterVersion] = (),
                pensioners: Sequence[PensionerRow] = (),
                paid_months_add: Sequence[tuple[UUID, str, str]] = ()) -> CopiedPart:
    """The events, stored with the notification ids from first_id on, and their
    ride-along rows (facts-only pensioner rows) as a CopiedPart."""
    assert all(r.payee is None for r in pensioners), "a part carries facts only"
    nid = range(first_id, first_id + len(events))
    return CopiedPart(
        first_id,
        copy_rows(EVENT_COPY_TYPES, [(e.originator_id, e.originator_version, e.topic, e.state, i)
                                     for e, i in zip(events, nid, strict=True)]),
        event_hashes(first_id, events),
        copy_rows(REGISTER_VERSION_TYPES, register_versions, keyed=True),
        copy_rows(PENSIONER_FACTS_TYPES, [(r.participant_id, r.facts) for r in pensioners],
                  keyed=True),
        copy_rows(PAID_MONTH_TYPES, paid_months_add))


def compress_wal(curs: Any) -> bool:
    """Have this transaction's WAL full-page images compressed with lz4, where the server
    has lz4 and this role may set wal_compression (PostgreSQL 15 on: a superuser, or a role
    granted SET on it): a month's funding writes about 2 GB of WAL, much of it whole pages
    again after each checkpoint (decision #45). Returns whether it is set."""
    if curs.connection.info.server_version < 150000:
        return False
    curs.execute("SELECT 'lz4' = ANY(enumvals) AND has_parameter_privilege("
                 "'wal_compression', 'SET') AS can FROM pg_settings "
                 "WHERE name = 'wal_compression'")
    row = curs.fetchone()
    if row is None or not row["can"]:
        return False
    curs.execute("SET LOCAL wal_compression = lz4")
    return True


class BulkTransaction:
    """One bulk write's statements, on a cursor in its transaction: the events by binary
    COPY, each part's ride-along rows after its events, and at the end the sequence set past
    the last id and the chain's blocks. `add` may be called once (insert_events_bulk) or once
    a chunk (ledger.streamed_write), each part's events after the last's.

    Under the events table's EXCLUSIVE lock no other writer takes notification ids until
    this one commits: the ids from the first nextval on are this write's, contiguous, and
    written with the rows, so the chain is hashed while the server is still storing them."""

    def __init__(self, recorder: LedgerPostgresRecorder, curs: Any) -> None:
        self.recorder, self.curs = recorder, curs
        self.table = SQL("{s}.{t}").format(s=recorder._schema,
                                           t=Identifier(recorder.events_table_name))
        self.table_name = self.table.as_string(curs.connection)
        self.copy_events = SQL("COPY {t} (originator_id, originator_version, topic, state, "
                               "notification_id) FROM STDIN (FORMAT BINARY)").format(t=self.table)
        # Python prepares a million rows between two statements of this transaction
        # (funding a province): more than eventsourcing's 5 s idle-in-transaction limit.
        curs.execute(f"SET LOCAL idle_in_transaction_session_timeout = '{BULK_IDLE_LIMIT_S}s'")
        # A chunk's register UPDATE is costed above jit_above_cost: compiling it took 9 ms
        # of its 80-100 (a month's funding, 100 chunks), for a plan that runs once.
        curs.execute("SET LOCAL jit = off")
        compress_wal(curs)
        recorder._lock_table(curs)
        recorder._notify_channel(curs)
        curs.execute("SELECT nextval(pg_get_serial_sequence(%s, 'notification_id')) AS first",
                     (self.table_name,))
        row = curs.fetchone()
        assert row is not None
        self.first_id: int = row["first"]
        self.next_id: int = self.first_id
        self.chain = ChainHasher(self.first_id)

    @property
    def count(self) -> int:
        return self.next_id - self.first_id

    def add(self, events: Sequence[EventRow], **ride_along: Any) -> None:
        if events:
            with self.curs.copy(self.copy_events) as copy:
                copy.set_types(list(EVENT_COPY_TYPES))
                write_row = copy.write_row
                nid = self.next_id
                for i in range(0, len(events), HASH_SLICE):
                    part = events[i:i + HASH_SLICE]
                    for s in part:
                        write_row((s.originator_id, s.originator_version, s.topic, s.state,
                                   nid))
                        nid += 1
                    self.chain.add(part)  # while the server stores what was just sent
            self.next_id = nid
        self.recorder._write_ride_along(self.curs, **ride_along)

    def add_copied(self, part: CopiedPart) -> None:
        """add() for a part made ready elsewhere: its events must be the next ones."""
        if part.events.count:
            assert part.first_id == self.next_id, ("a copied part out of place",
                                                   part.first_id, self.next_id)
            with self.curs.copy(self.copy_events) as copy:
                copy.write(part.events.whole())
            self.chain.add_hashes(part.event_hashes)
            self.next_id += part.events.count
            assert self.chain.next_id == self.next_id
        self.recorder._write_copied(self.curs, part)

    def finish(self) -> int:
        """The sequence past the last id and the chain's blocks; the count of events."""
        assert self.count > 0
        self.curs.execute("SELECT setval(pg_get_serial_sequence(%s, 'notification_id'), %s)",
                          (self.table_name, self.next_id - 1))
        self.recorder._append_blocks(self.curs, self.chain.blocks())
        return self.count


T = TypeVar("T")
_READ_AHEAD_PUT_S = 0.1
_LOWEST_ID = UUID(int=0)  # every participant id is at or above it
_NO_MORE = object()


def read_ahead(pages: Iterator[T]) -> Iterator[T]:
    """The pages of `pages`, each fetched on a thread while the caller works on the one
    before (the database's part of a fetch runs outside Python's lock). At most one page
    waits; an error in the fetching is raised in the caller; closing the iterator early
    stops the fetching."""
    handoff: Queue[object] = Queue(maxsize=1)
    stop = Event()
    failures: list[BaseException] = []

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=_READ_AHEAD_PUT_S)
                return True
            except Full:
                continue
        return False

    def fetch() -> None:
        try:
            for page in pages:
                if not put(page):
                    return
        except BaseException as e:  # raised in the caller's thread below
            failures.append(e)
        put(_NO_MORE)

    thread = Thread(target=fetch, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _NO_MORE:
                if failures:
                    raise failures[0]
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


# ---- configuration ------------------------------------------------------------------

def resolve_url(db: str | None = None) -> str:
    return db or os.environ.get("LEDGER_DATABASE_URL") or DEFAULT_SQLITE_PATH


def store_env(url: str, cipher_key: str | None = None) -> dict[str, str]:
    """eventsourcing environment for a SQLite path or a postgresql:// URL."""
    env: dict[str, str] = {
        "TRANSCODER_TOPIC": get_topic(OrjsonTranscoder),
        "MAPPER_TOPIC": get_topic(PydanticMapper),
    }
    key = cipher_key if cipher_key is not None else os.environ.get("CIPHER_KEY")
    if key:
        env["CIPHER_TOPIC"] = "eventsourcing.cipher:AESCipher"
        env["CIPHER_KEY"] = key
    if url.startswith(("postgresql://", "postgres://")):
        u = urlparse(url)
        env.update({
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "APPLICATION_RECORDER_TOPIC": get_topic(LedgerPostgresRecorder),
            "POSTGRES_DBNAME": u.path.lstrip("/") or "postgres",
            "POSTGRES_HOST": u.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(u.port or 5432),
            "POSTGRES_USER": unquote(u.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(u.password or ""),
            "POSTGRES_LOCK_TIMEOUT": "10",
            "POSTGRES_POOL_SIZE": "4",
        })
        query = dict(p.split("=", 1) for p in u.query.split("&") if "=" in p)
        if "schema" in query:
            env["POSTGRES_SCHEMA"] = query["schema"]
        return env
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    if path != ":memory:" and not path.startswith("file:"):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    env.update({
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "APPLICATION_RECORDER_TOPIC": get_topic(LedgerSQLiteRecorder),
        "SQLITE_DBNAME": path,
        "SQLITE_LOCK_TIMEOUT": "10",
    })
    return env


def autocommit_connection(recorder: Any, connect_timeout_s: int) -> Any:
    """A psycopg connection of its own to the PostgreSQL recorder's database, in autocommit
    (outside the recorder's pool: a forked child's, or one for statements that run outside
    a transaction block)."""
    import psycopg

    pool = recorder.datastore.pool
    kwargs = {k: v for k, v in pool.kwargs.items() if k != "row_factory"}
    return psycopg.connect(pool.conninfo, autocommit=True, connect_timeout=connect_timeout_s,
                           **kwargs)


@contextmanager
def setup_lock(conn: Any, schema: str) -> Iterator[None]:
    """One process at a time creates a schema's tables. Processes started together (the
    services of a deployment) would run the same CREATE ... IF NOT EXISTS at once, and
    PostgreSQL fails all but one of them ("tuple concurrently updated", a duplicate key in
    its catalogue). `conn` is in autocommit: the lock is its session's, held until
    released, whatever transactions the set-up runs on other connections."""
    key = f"pension-ledger:setup:{schema}"
    conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))


# ---- reading what rides along -------------------------------------------------------

MAX_EVENTS_OF_IDS = 10_000  # aggregates per events_of read
MAX_EVENTS_AFTER = 1_000  # events per events_after read


class StoreQueries:
    """Plain SQL reads of the tables written beside the events."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self.is_postgres = isinstance(recorder, LedgerPostgresRecorder)
        self.prefix = (f'"{recorder.datastore.schema}".' if self.is_postgres else "")

    @staticmethod
    @contextmanager
    def setting_up(env: dict[str, str]) -> Iterator[None]:
        """Create the schema if need be, and hold the schema's set-up lock (setup_lock)
        while the caller creates its tables."""
        import psycopg

        schema = env.get("POSTGRES_SCHEMA", "public")
        conn = psycopg.connect(host=env["POSTGRES_HOST"], port=int(env["POSTGRES_PORT"]),
                               dbname=env["POSTGRES_DBNAME"], user=env["POSTGRES_USER"],
                               password=env["POSTGRES_PASSWORD"] or None, autocommit=True)
        with conn, setup_lock(conn, schema):
            conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {0}").format(Identifier(schema)))
            yield

    def fetch(self, sql: str, params: Sequence[Any] = (), *, binary: bool = False
              ) -> list[tuple[Any, ...]]:
        """The rows of a read; binary=True has PostgreSQL send the results in binary (a
        bytea arrives as its bytes rather than as hex text to decode: a 5 MB event state
        took 12 ms against 55-63 ms)."""
        sql = sql.replace("{p}", self.prefix)
        if self.is_postgres:
            # Binary parameters: a text-format list parameter is quoted element by element
            # in Python (register_rows of 100,000 ids: 1.0 s, 0.6 s this way).
            with self.recorder.datastore.get_connection() as conn, \
                    conn.cursor(binary=binary, row_factory=tuple_row) as curs:
                curs.execute(sql.replace("?", "%b"), params)
                rows: list[tuple[Any, ...]] = curs.fetchall()
                return rows
        with self.recorder.datastore.transaction(commit=False) as c:
            c.execute(sql, params)
            return [tuple(r) for r in c.fetchall()]

    def _id(self, pid: UUID) -> Any:
        return pid if self.is_postgres else pid.hex

    def _uuid(self, value: Any) -> UUID:
        return value if isinstance(value, UUID) else UUID(value)

    def fund_positions(self) -> dict[str, int]:
        rows = self.fetch("SELECT account, balance_fen FROM {p}fund_positions")
        out = dict.fromkeys(GUARDED_ACCOUNTS, 0)
        out.update({a: int(b) for a, b in rows})
        return out

    def register_row(self, pid: UUID) -> RegisterRow | None:
        rows = self.fetch("SELECT * FROM {p}participant_register WHERE participant_id = ?",
                          (self._id(pid),))
        return self._row(rows[0]) if rows else None

    def _row(self, r: tuple[Any, ...]) -> RegisterRow:
        return RegisterRow(self._uuid(r[0]), int(r[1]), r[2], r[3], r[4], r[5])

    def register_rows(self, pids: Sequence[UUID]) -> dict[UUID, RegisterRow]:
        out: dict[UUID, RegisterRow] = {}
        for i in range(0, len(pids), 10_000):
            part = list(pids[i:i + 10_000])
            if self.is_postgres:
                rows = self.fetch("SELECT * FROM {p}participant_register "
                                  "WHERE participant_id = ANY(?)", (part,))
            else:
                marks = ",".join("?" * len(part))
                rows = self.fetch(f"SELECT * FROM participant_register WHERE participant_id "
                                  f"IN ({marks})", [p.hex for p in part])
            for r in rows:
                row = self._row(r)
                out[row.participant_id] = row
        return out

    def register_rows_where(self, statuses: Sequence[str], groups: Sequence[str],
                            page_size: int = 10_000) -> Iterator[RegisterRow]:
        """Register rows whose status is one of `statuses`, or whose identity groups name
        one of `groups` (ever: the JSON text is matched), in participant id order, read a
        page at a time (an audit of a province reads millions)."""
        assert statuses and 0 < page_size <= 100_000
        assert all(g.isidentifier() for g in groups), groups  # safe inside a LIKE pattern
        where = (f"(status IN ({','.join('?' * len(statuses))})"
                 + "".join(" OR identity_groups LIKE ?" for _ in groups) + ")")
        params: list[Any] = [*statuses, *(f'%"{g}"%' for g in groups)]
        after: Any = None
        while True:
            page = self.fetch(
                "SELECT * FROM {p}participant_register WHERE " + where
                + ("" if after is None else " AND participant_id > ?")
                + f" ORDER BY participant_id LIMIT {page_size}",
                params + ([] if after is None else [after]))
            for r in page:
                yield self._row(r)
            if len(page) < page_size:
                return
            after = page[-1][0]

    def register_tuples(self, keys: Sequence[bytes]) -> list[
            tuple[bytes, UUID, int, str, str, str, str]]:
        """The register rows of the participants whose ids are `keys` (each the 16 bytes of
        a UUID), as plain tuples: (key, participant_id, version, status, birth_date,
        identity_groups, contributed_years). A bulk import reads a row for every line: the
        keys go as one bytea, where a uuid[] parameter is dumped element by element in
        Python."""
        assert all(len(k) == 16 for k in keys[:1])
        out: list[tuple[bytes, UUID, int, str, str, str, str]] = []
        for i in range(0, len(keys), 10_000):
            part = keys[i:i + 10_000]
            if self.is_postgres:
                out += self.fetch(
                    "SELECT uuid_send(participant_id), * FROM {p}participant_register "
                    "WHERE participant_id = ANY(ARRAY(SELECT encode(substr(?, n * 16 + 1, 16), "
                    "'hex')::uuid FROM generate_series(0, ? - 1) AS n))",
                    (b"".join(part), len(part)))
            else:
                marks = ",".join("?" * len(part))
                out += [(bytes.fromhex(r[0]), UUID(r[0]), *r[1:]) for r in self.fetch(
                    f"SELECT * FROM participant_register WHERE participant_id IN ({marks})",
                    [k.hex() for k in part])]
        return out

    def events_of(self, pids: Sequence[UUID]) -> dict[UUID, list[StoredEvent]]:
        """Every stored event of each aggregate in `pids`, in version order, in one read: a
        year-wide command replays thousands of participants, and the repository reads them
        one query each (most of the command's time)."""
        assert len(pids) <= MAX_EVENTS_OF_IDS, len(pids)
        out: dict[UUID, list[StoredEvent]] = {pid: [] for pid in pids}
        if not pids:
            return out
        columns = f"SELECT originator_id, originator_version, topic, state FROM {self._events()} "
        if self.is_postgres:
            rows = self.fetch(columns + "WHERE originator_id = ANY(?) "
                              "ORDER BY originator_id, originator_version", (list(pids),),
                              binary=True)
        else:
            marks = ",".join("?" * len(pids))
            rows = self.fetch(columns + f"WHERE originator_id IN ({marks}) "
                              "ORDER BY originator_id, originator_version",
                              [pid.hex for pid in pids])
        for oid, version, topic, state in rows:
            pid = self._uuid(oid)
            out[pid].append(StoredEvent(originator_id=pid, originator_version=version,
                                        topic=topic, state=bytes(state)))
        return out

    def events_after(self, originator_id: UUID, after: int = 0, through: int | None = None,
                     limit: int = MAX_EVENTS_AFTER) -> list[StoredEvent]:
        """An aggregate's stored events after version `after` (through `through`), in
        version order, at most `limit`: the recorder's select_events, with the states read
        as binary (a payout batch's LinesAdded events are 5 MB each)."""
        assert 0 < limit <= MAX_EVENTS_AFTER, limit
        where = "WHERE originator_id = ? AND originator_version > ? "
        params: list[Any] = [self._id(originator_id), after]
        if through is not None:
            where += "AND originator_version <= ? "
            params.append(through)
        rows = self.fetch(f"SELECT originator_version, topic, state FROM {self._events()} {where}"
                          f"ORDER BY originator_version LIMIT {int(limit)}", params,
                          binary=True)
        return [StoredEvent(originator_id=originator_id, originator_version=version,
                            topic=topic, state=bytes(state)) for version, topic, state in rows]

    def _events(self) -> str:
        """The events table as a statement names it ({p} is the schema on PostgreSQL)."""
        table: str = self.recorder.events_table_name
        assert table.replace("_", "").isalnum(), table  # safe to name in a statement
        return '{p}"' + table + '"' if self.is_postgres else table

    def receipt_owner(self, receipt_no: str) -> UUID | None:
        rows = self.fetch("SELECT participant_id FROM {p}booked_receipts WHERE receipt_no = ?",
                          (receipt_no,))
        return self._uuid(rows[0][0]) if rows else None

    def receipts_booked(self, receipt_nos: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(receipt_nos), 10_000):
            part = list(receipt_nos[i:i + 10_000])
            if self.is_postgres:
                rows = self.fetch("SELECT receipt_no FROM {p}booked_receipts "
                                  "WHERE receipt_no = ANY(?)", (part,))
            else:
                marks = ",".join("?" * len(part))
                rows = self.fetch(f"SELECT receipt_no FROM booked_receipts WHERE receipt_no "
                                  f"IN ({marks})", part)
            found.update(r[0] for r in rows)
        return found

    def all_participant_ids(self) -> list[UUID]:
        rows = self.fetch("SELECT participant_id FROM {p}participant_register "
                          "ORDER BY participant_id")
        return [self._uuid(r[0]) for r in rows]

    def participants_contributed(self, year: int) -> list[UUID]:
        # contributed_years is JSON keyed by year; a LIKE on the key is exact enough
        # because keys are 4-digit years in quotes.
        rows = self.fetch("SELECT participant_id FROM {p}participant_register "
                          "WHERE contributed_years LIKE ? ORDER BY participant_id",
                          (f'%"{year}":%',))
        return [self._uuid(r[0]) for r in rows]

    def chain_blocks(self, after_block: int = 0, limit: int = 10_000) -> list[tuple[Any, ...]]:
        return self.fetch("SELECT block_no, first_notification_id, last_notification_id, "
                          "event_count, events_sha256, prev_sha256, block_sha256 "
                          "FROM {p}event_chain WHERE block_no > ? ORDER BY block_no LIMIT ?",
                          (after_block, limit))

    def pensioner_rows(self, chunk_size: int = 10_000, *, from_id: UUID | None = None,
                       below_id: UUID | None = None) -> Iterator[tuple[UUID, str, bytes]]:
        """(participant id, facts JSON, payee bytes), in id order, a chunk at a time; only
        ids from `from_id` and below `below_id` when given. On PostgreSQL the next chunk is
        fetched while the caller works on this one."""
        assert 0 < chunk_size <= 100_000
        pages = self._pensioner_pages(chunk_size, from_id, below_id)
        for rows in read_ahead(pages) if self.is_postgres else pages:
            for pid, facts, payee in rows:
                yield self._uuid(pid), facts, bytes(payee)

    def _pensioner_pages(self, chunk_size: int, from_id: UUID | None, below_id: UUID | None
                         ) -> Iterator[list[tuple[Any, ...]]]:
        below = "" if below_id is None else " AND participant_id < ?"
        tail = () if below_id is None else (self._id(below_id),)
        after: Any = None
        while True:
            if after is None:
                rows = self.fetch("SELECT participant_id, facts, payee FROM {p}pensioner_register "
                                  f"WHERE participant_id >= ?{below} ORDER BY participant_id "
                                  "LIMIT ?", (self._id(from_id or _LOWEST_ID), *tail, chunk_size))
            else:
                rows = self.fetch("SELECT participant_id, facts, payee FROM {p}pensioner_register "
                                  f"WHERE participant_id > ?{below} ORDER BY participant_id "
                                  "LIMIT ?", (after, *tail, chunk_size))
            if not rows:
                return
            yield rows
            after = rows[-1][0]

    def holds_pensioners(self, at_least: int) -> bool:
        """Whether the pensioner register holds `at_least` rows (counted no further)."""
        assert at_least > 0
        [(count,)] = self.fetch("SELECT COUNT(*) FROM (SELECT 1 FROM {p}pensioner_register "
                                "LIMIT ?) AS r", (at_least,))
        return int(count) >= at_least

    def paid_month_count(self, participant_id: UUID) -> int:
        rows = self.fetch("SELECT COUNT(*) FROM {p}paid_months WHERE participant_id = ?",
                          (self._id(participant_id),))
        return int(rows[0][0])

    def open_one_offs(self) -> list[tuple[UUID, str, int, bytes]]:
        """(participant id, kind, amount, payee bytes) of each one-off payable neither sent
        to the bank nor held, by participant id and kind."""
        rows = self.fetch("SELECT participant_id, kind, amount_fen, payee FROM "
                          "{p}one_off_register WHERE paid_by IS NULL AND hold IS NULL "
                          "ORDER BY participant_id, kind")
        return [(self._uuid(pid), kind, int(amount), bytes(payee))
                for pid, kind, amount, payee in rows]

    def one_off_rows(self, participant_id: UUID) -> list[tuple[str, int, str | None,
                                                               str | None]]:
        """(kind, amount, paid_by, hold) of a participant's one-off payables."""
        rows = self.fetch("SELECT kind, amount_fen, paid_by, hold FROM {p}one_off_register "
                          "WHERE participant_id = ? ORDER BY kind", (self._id(participant_id),))
        return [(k, int(a), by, h) for k, a, by, h in rows]
