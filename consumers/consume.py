"""Projection consumers: the views fed from the relay's Kafka topics (relay.py) instead of
the notification log, in a consumer group (the distributed deployment of DESIGN.md).

Each poll's records are turned into the items the projection runner makes of the log (a
stored event rebuilt from the headers' topic and version, the key's aggregate id and the
value's stored bytes, decoded by items.Decoder), and one PostgreSQL transaction writes every
view's rows for them (runner.write_rows) together with, per view generation and partition,
the highest notification id applied and the next Kafka offset to read (tracking rows,
feeds.py).

Exactly once per view, topic and partition: the transaction locks the partition's tracking
row and drops every record whose notification id is not above it. That drops Kafka's
redeliveries (a consumer that died before its offsets were committed, a rebalance) and the
relay's re-sent windows (at least once, decision 22) alike. A second consumer given the same
partition during a rebalance waits for the lock and then finds the position moved. Offsets
are committed to Kafka only after the database has committed, and only to save reading
again: on every assignment a consumer seeks to the offsets the database holds.

Per-partition order is enough. The relay keys every message by its aggregate, so each
aggregate's events are in order on one partition; different aggregates' events reach the
views in any order, and the views are indifferent to that order (balances and statements
are sums, the participants view a row per participant), as the parallel rebuild relies on
too (parallel.py). A batch's items are still sorted by notification id before the views see
them, like a window of the log.

The projection runner and the consumers never feed the same view generation (feeds.py):
consumers claim the active generation of each view they feed, refusing one the runner has
fed unless told to take it over.

Assumed of the topics: they keep every message (or at least every message after the
position consumers take a view over at), and partitions are not added while consumers lag
(an aggregate's later events would go to another partition and could overtake its earlier
ones).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from threading import Event
from typing import TYPE_CHECKING, Any, NamedTuple

from eventsourcing.persistence import IntegrityError, OperationalError
from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError

from consumers.relay import MAX_PREFIX_CHARS, kafka_topic
from ledger.collector import collector_paused
from ledger.errors import InvalidInput, Refused
from ledger.projections.catalogue import make_views
from ledger.projections.connect import store_for
from ledger.projections.feeds import FedByLog, kafka_marker, kafka_offset, kafka_partition
from ledger.projections.items import Decoder, Item, StoredRow
from ledger.projections.runner import ViewOutOfDate, write_rows
from ledger.projections.store import StaleTarget, Tx, tracking_name
from ledger.projections.store_postgres import PostgresProjectionStore
from ledger.projections.view import View

if TYPE_CHECKING:
    from ledger.application import Ledger

MAX_POLL_RECORDS = 2_000      # records a poll, hence a transaction, by default
MAX_BATCH = 50_000            # the most records a poll may bring (memory, transaction size)
POLL_TIMEOUT_MS = 500         # "caught up" means a poll this long brought nothing
MAX_POLL_INTERVAL_MS = 60_000
SESSION_TIMEOUT_MS = 10_000
JOIN_TIMEOUT_S = 120.0        # how long run_until_caught_up waits to be given partitions
MAX_RETRIES = 20              # conflicting transactions in a row before giving up
RETRY_SLEEP_S = 0.05
KEY_BYTES = 16                # the relay's key: the aggregate's UUID as its bytes

Partition = tuple[str, int]   # (Kafka topic, partition)


def consumer_config(bootstrap_servers: Sequence[str], group: str, *,
                    max_poll_records: int = MAX_POLL_RECORDS,
                    max_poll_interval_ms: int = MAX_POLL_INTERVAL_MS) -> dict[str, Any]:
    """A KafkaConsumer's settings for a projection consumer. max_poll_interval_ms bounds the
    time between two polls (a batch's transaction must fit in it) and is how long brokers
    wait for members to join a rebalance."""
    assert bootstrap_servers and group
    assert 0 < max_poll_records <= MAX_BATCH
    assert 1_000 <= max_poll_interval_ms <= 3_600_000
    session_ms = min(SESSION_TIMEOUT_MS, max_poll_interval_ms)
    return {"bootstrap_servers": list(bootstrap_servers), "group_id": group,
            # The database holds the offsets that count; Kafka's are committed by hand,
            # after the database (never ahead of it).
            "enable_auto_commit": False,
            # An offset the broker no longer has: read from the oldest it keeps.
            "auto_offset_reset": "earliest",
            # The relay creates the topics with their partitions; a consumer asking first
            # must not create them with the broker's defaults.
            "allow_auto_create_topics": False,
            "max_poll_records": max_poll_records,
            "max_poll_interval_ms": max_poll_interval_ms,
            "session_timeout_ms": session_ms,
            "heartbeat_interval_ms": max(session_ms // 3, 100)}


@dataclass
class Feed:
    """A view generation these consumers feed, and the log position they took it over at
    (every partition's position starts there)."""

    view: View
    generation: int
    tracking: str       # the generation's tracking name (store.tracking_name)
    floor: int


class Record(NamedTuple):
    notification_id: int
    offset: int
    row: StoredRow


def stored_row(record: Any) -> Record:
    """The stored event a relay message carries (relay.Relay.run_once writes them)."""
    headers = {name: value for name, value in record.headers or ()}
    missing = {"notification_id", "topic", "version"} - set(headers)
    if missing or not isinstance(record.key, bytes) or len(record.key) != KEY_BYTES:
        raise ValueError(f"{record.topic}:{record.partition}@{record.offset} is not a relay "
                         f"message (headers missing: {sorted(missing)}, key {record.key!r})")
    nid = int(headers["notification_id"])
    assert nid > 0, nid
    return Record(nid, record.offset, (nid, record.key, int(headers["version"]),
                                       headers["topic"].decode(), record.value))


class _Reseek(ConsumerRebalanceListener):  # type: ignore[misc]
    """Notes an assignment; the consumer seeks to the stored offsets on its own thread
    (the callback runs on the client's event loop and must return promptly)."""

    def __init__(self, owner: ProjectionConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.owner._assigned()


class ProjectionConsumer:
    """One member of a consumer group feeding the views from the relay's topics."""

    def __init__(self, ledger: Ledger, consumer: KafkaConsumer | Mapping[str, Any], *,
                 prefix: str = "pension", views: Sequence[str] | None = None,
                 take_over: bool = False) -> None:
        """consumer: a kafka.KafkaConsumer not yet subscribed, with a group and
        enable_auto_commit=False (see consumer_config), or its settings; closed if this
        refuses. take_over: feed view generations the projection runner has fed, from its
        position (refused otherwise)."""
        store = store_for(ledger)
        if not isinstance(store, PostgresProjectionStore):
            raise Refused("db", "projection consumers need PostgreSQL (a postgresql:// URL "
                          "in --db or LEDGER_DATABASE_URL): they write the views and their "
                          "Kafka positions in one transaction of the database the views "
                          "live in; this ledger is a SQLite file")
        assert 0 < len(prefix) <= MAX_PREFIX_CHARS, prefix
        self.ledger = ledger
        self.store = store
        store.setup(make_views(ledger), ledger.name)
        self.views = make_views(ledger, views)
        assert self.views, "no views to feed"
        self.take_over = take_over
        self._decoder = Decoder(ledger.mapper, set().union(*(v.topics() for v in self.views)))
        self.topics = sorted({kafka_topic(prefix, t) for t in self._decoder.topics})
        self._feeds: list[Feed] | None = None
        if isinstance(consumer, Mapping):
            consumer = KafkaConsumer(**consumer)
        self.consumer = consumer
        try:
            config = consumer.config
            if config.get("group_id") is None or config.get("enable_auto_commit"):
                raise ValueError("a projection consumer needs a group_id and "
                                 "enable_auto_commit=False (consumer_config)")
            missing = sorted(set(self.topics) - set(consumer.topics()))
            if missing:
                raise InvalidInput("prefix", f"the brokers have no topics "
                                   f"{', '.join(missing)}: the relay creates them "
                                   f"(`pension-ledger relay`)")
            self.feeds()  # claimed now, so a refusal comes before joining the group
        except BaseException:
            consumer.close()
            raise
        self._seen: dict[str, int] = {}  # partition tracking row -> position we left it at
        self._joined = False
        self._reseek = False
        self.applied = 0        # records applied to the views
        self.dropped = 0        # records seen before (redelivered, or re-sent by the relay)
        self.conflicts = 0      # transactions rolled back and started again
        self._retries = 0       # conflicts in a row
        self.offset_commit_failures = 0
        consumer.subscribe(self.topics, listener=_Reseek(self))

    # ---- running ----------------------------------------------------------------------

    def run(self, stop: Event) -> None:
        """Consume until stop is set."""
        while not stop.is_set():
            self.poll_once()

    def run_until_caught_up(self, *, stop: Event | None = None,
                            join_timeout_s: float = JOIN_TIMEOUT_S) -> int:
        """Consume until a poll brings nothing and every partition assigned to this member
        is read to its end; returns how many records were applied."""
        before = self.applied
        deadline = time.monotonic() + join_timeout_s
        while stop is None or not stop.is_set():
            if self.poll_once():
                continue
            if self._joined and not self._reseek:
                if self._caught_up():
                    break
            elif time.monotonic() > deadline:
                raise RuntimeError(f"consume: no partitions assigned after {join_timeout_s} s "
                                   f"(group {self.consumer.config['group_id']}); are the "
                                   f"brokers up?")
        return self.applied - before

    def poll_once(self, timeout_ms: int = POLL_TIMEOUT_MS) -> int:
        """One poll and its transaction; returns how many records the poll brought."""
        polled = self.consumer.poll(timeout_ms=timeout_ms)
        if self._reseek:
            # Assigned during this poll: what it brought was fetched from Kafka's committed
            # offsets, not from the database's. Read again from the database's.
            self._reseek = False
            self._seek_to_stored()
            return sum(len(records) for records in polled.values())
        if not polled:
            return 0
        batch = {(tp.topic, tp.partition): [stored_row(r) for r in records]
                 for tp, records in polled.items() if records}
        count = sum(len(records) for records in batch.values())
        try:
            with collector_paused():
                self._commit(batch)
        except (StaleTarget, IntegrityError, OperationalError):
            # Moved under us (another member of the group, a rebuild that switched, a
            # deadlock): nothing was committed. Start again from what is stored.
            self._forget()
            self.conflicts += 1
            self._retries += 1
            if self._retries > MAX_RETRIES:
                raise RuntimeError(f"consume: {self._retries} conflicting transactions in a "
                                   "row; is another consumer stuck?") from None
            time.sleep(RETRY_SLEEP_S * self._retries)
            self._seek_to_stored()
            return count
        except BaseException:
            self._forget()
            raise
        self._retries = 0
        self._commit_offsets(batch)
        return count

    def close(self) -> None:
        self.consumer.close()

    # ---- one batch --------------------------------------------------------------------

    def _commit(self, batch: dict[Partition, list[Record]]) -> None:
        feeds = self.feeds()
        with self.store.transaction() as tx:
            left, applied = self._write(tx, feeds, batch)
        self._seen.update(left)
        self.applied += applied
        self.dropped += sum(len(records) for records in batch.values()) - applied
        for f in feeds:
            f.view.after_commit()

    def _write(self, tx: Tx, feeds: list[Feed], batch: dict[Partition, list[Record]]
               ) -> tuple[dict[str, int], int]:
        """The batch's rows for every feed and their partitions' positions, in tx: (the
        positions left, how many records were new to some feed)."""
        registrations = tx.lock([f.view.name for f in feeds])
        for f in feeds:
            if registrations[f.view.name].generation != f.generation:
                raise StaleTarget(f.view.name)  # a rebuild switched generations
        stored = lock_positions(tx, {
            name: value for f in feeds for (topic, p) in batch
            for name, value in ((kafka_partition(f.tracking, topic, p), f.floor),
                                (kafka_offset(f.tracking, topic, p), 0))})
        # Decode once for every feed: the records above the lowest feed's position.
        decoded: dict[Partition, list[Item]] = {}
        highest: dict[Partition, int] = {}
        applied = 0
        for (topic, p), records in batch.items():
            high = min(stored[kafka_partition(f.tracking, topic, p)] for f in feeds)
            kept: list[StoredRow] = []
            for r in records:
                # In offset order a partition's notification ids rise, except where the relay
                # sent a window again or Kafka delivered again: those are not above the high.
                if r.notification_id > high:
                    kept.append(r.row)
                    high = r.notification_id
            applied += len(kept)
            decoded[(topic, p)] = self._decoder.decode(kept)
            highest[(topic, p)] = high
        left: dict[str, int] = {}
        for f in feeds:
            mine: list[Item] = []
            cached = True
            for (topic, p), items in decoded.items():
                name = kafka_partition(f.tracking, topic, p)
                position = stored[name]
                # Rows the view cached for this partition's aggregates are current only if
                # nobody else wrote the partition since this consumer last did.
                cached = cached and self._seen.get(name) == position
                mine += [i for i in items if i[0] > position]
                left[name] = max(position, highest[(topic, p)])
                if left[name] > position:
                    tx.track(name, left[name])
                offset = kafka_offset(f.tracking, topic, p)
                after = batch[(topic, p)][-1].offset + 1
                if after > stored[offset]:  # not if a member that lost it wrote it since
                    tx.track(offset, after)
            if not cached:
                f.view.forget()
            mine.sort(key=itemgetter(0))
            write_rows(tx, f.view, f.generation, mine)
        return left, applied

    def _commit_offsets(self, batch: dict[Partition, list[Record]]) -> None:
        """Kafka's committed offsets, after the database's: they only save reading again."""
        try:
            self.consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(
                records[-1].offset + 1, "", -1) for (topic, p), records in batch.items()})
        except KafkaError:
            # A rebalance took the partitions meanwhile: the database has the offsets.
            self.offset_commit_failures += 1

    # ---- partitions -------------------------------------------------------------------

    def _assigned(self) -> None:
        self._joined = True
        self._reseek = True

    def _seek_to_stored(self) -> None:
        """Every assigned partition, from the lowest offset any feed has stored for it (the
        beginning where none has)."""
        assigned = list(self.consumer.assignment())
        if not assigned:
            return
        feeds = self.feeds()
        with self.store.reading() as tx:
            offsets: dict[str, int] = {}
            for f in feeds:
                offsets.update(tx.positions_like(kafka_marker(f.tracking) + ":o:"))
        for tp in assigned:
            self.consumer.seek(tp, min(offsets.get(kafka_offset(f.tracking, tp.topic,
                                                                tp.partition), 0)
                                       for f in feeds))

    def _caught_up(self) -> bool:
        assigned = list(self.consumer.assignment())
        if not assigned:
            return True  # the group's other members have every partition
        ends = self.consumer.end_offsets(assigned)
        return all(self.consumer.position(tp) >= ends[tp] for tp in assigned)

    # ---- feeds ------------------------------------------------------------------------

    def feeds(self) -> list[Feed]:
        if self._feeds is None:
            self._feeds = self._claim()
        return self._feeds

    def _claim(self) -> list[Feed]:
        """The active generation of each view, claimed for Kafka consumers in one
        transaction (feeds.py): all of them or, refused, none."""
        feeds: list[Feed] = []
        with self.store.transaction() as tx:
            registrations = tx.lock([v.name for v in self.views], exclusive=True)
            for view in self.views:
                reg = registrations[view.name]
                assert reg.generation is not None
                if reg.version != view.version:
                    raise ViewOutOfDate(view.name, reg.version, view.version)
                name = tracking_name(self.ledger.name, view.name, reg.generation)
                floor = tx.position(kafka_marker(name))
                if floor is None:
                    floor = tx.position(name) or 0
                    if floor > 0 and not self.take_over:
                        raise FedByLog(view.name, reg.generation, floor)
                    # The runner's row goes: a runner about to write finds it gone.
                    tx.untrack(name)
                    tx.track(kafka_marker(name), floor)
                feeds.append(Feed(view, reg.generation, name, floor))
        return feeds

    def positions(self) -> dict[str, dict[str, int]]:
        """Per view, the highest notification id applied from each partition."""
        out: dict[str, dict[str, int]] = {}
        with self.store.reading() as tx:
            for f in self.feeds():
                prefix = kafka_marker(f.tracking) + ":n:"
                out[f.view.name] = {k.removeprefix(prefix): v for k, v in
                                    sorted(tx.positions_like(prefix).items())}
        return out

    def _forget(self) -> None:
        for view in self.views:
            view.forget()
        self._feeds = None
        self._seen.clear()


def lock_positions(tx: Tx, initial: dict[str, int]) -> dict[str, int]:
    """Tracking rows, created at their initial value where missing and locked for the rest
    of the transaction, in name order (so members of the group never deadlock on them).
    PostgreSQL's SQL: consumers run on PostgreSQL only."""
    names = sorted(initial)
    assert names and len(names) <= MAX_BATCH
    tx.execute(f"INSERT INTO {tx.tracking_table} (application_name, notification_id) "
               f"VALUES {', '.join(['(?, ?)'] * len(names))} "
               f"ON CONFLICT (application_name) DO NOTHING",
               [v for n in names for v in (n, initial[n])])
    rows = tx.query(f"SELECT application_name, notification_id FROM {tx.tracking_table} "
                    f"WHERE application_name = ANY(?) ORDER BY application_name FOR UPDATE",
                    (names,))
    found = {str(r[0]): int(r[1]) for r in rows}
    assert set(found) == set(names), set(names) - set(found)
    return found
