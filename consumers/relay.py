"""The relay: the event store's notification log, published to Kafka.

One topic per kind of aggregate (`<prefix>.participant`, `<prefix>.fund`, `<prefix>.payout_batch`,
...), keyed by the aggregate's id, so every aggregate's events stay in order on one partition
however many partitions a topic has. The value is the event as stored (ciphertext when the
ledger encrypts at rest: the broker never holds personal data in clear); headers say the
event's notification id, class topic and version.

At least once: a window of notifications is sent, every send acknowledged by the broker
(acks=all), and only then is the relay's position recorded (a tracking row beside the
views'). A crash in between sends the window again on restart; consumers drop what they
have seen by its notification id. Nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from threading import Event
from typing import TYPE_CHECKING, Any

from ledger.projections.connect import store_for
from ledger.projections.reader import head_of, reader_for
from ledger.projections.wakeup import wakeup_for

if TYPE_CHECKING:
    from ledger.application import Ledger

WINDOW = 5_000           # notifications sent before the broker must acknowledge them all
ACK_TIMEOUT_S = 60.0     # how long the broker may take to acknowledge a window
MAX_PREFIX_CHARS = 100


# The aggregates' modules: one topic each (ledger/aggregates/).
STREAMS = ("participant", "fund", "payout_batch", "ruleset", "command_receipt")


def relay_producer(bootstrap_servers: str | list[str]) -> Any:
    """The relay's Kafka producer: every send acknowledged by all in-sync replicas, one
    request in flight per broker, and idempotent (explicitly, so a broker or setting that
    cannot give it is an error, not a silent downgrade): its retries neither duplicate nor
    reorder a partition's messages, so on a partition the notification ids only rise,
    except where the relay itself sends a window again (decision 24)."""
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all",
                         max_in_flight_requests_per_connection=1, enable_idempotence=True)


def create_topics(admin: Any, prefix: str, partitions: int) -> list[str]:
    """Create the relay's topics that do not exist yet (a kafka.admin.KafkaAdminClient);
    returns the names created."""
    from kafka.admin import NewTopic

    assert 1 <= partitions <= 1_000
    existing = set(admin.list_topics())
    wanted = [f"{prefix}.{s}" for s in STREAMS if f"{prefix}.{s}" not in existing]
    if wanted:
        admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1)
                             for t in wanted])
    return wanted


def kafka_topic(prefix: str, event_topic: str) -> str:
    """'ledger.aggregates.participant:Participant.ContributionReceived' ->
    '<prefix>.participant': the aggregate's module names its stream."""
    stream = event_topic.partition(":")[0].rpartition(".")[2]
    assert stream in STREAMS, event_topic
    return f"{prefix}.{stream}"


class Relay:
    def __init__(self, ledger: Ledger, producer: Any, *, prefix: str = "pension",
                 name: str = "kafka") -> None:
        """producer: a kafka.KafkaProducer (acks="all"), or anything with its send() and
        flush()."""
        assert 0 < len(prefix) <= MAX_PREFIX_CHARS and prefix.replace("-", "").replace(
            "_", "").replace(".", "").isalnum(), prefix
        self.ledger = ledger
        self.producer = producer
        self.prefix = prefix
        self.tracking = f"relay:{name}"
        self.store = store_for(ledger)
        self.store.create_table()
        self._read = reader_for(ledger)

    def position(self) -> int:
        return self.store.positions([self.tracking])[self.tracking] or 0

    def run_once(self, progress: Callable[[int], None] | None = None) -> int:
        """Publish everything after the recorded position up to the log's head as it is
        now; returns how many events were sent."""
        sent = 0
        start, head = self.position(), head_of(self.ledger)
        while start < head:
            stop = min(start + WINDOW, head)
            rows = self._read(start, stop)
            futures = [self.producer.send(
                kafka_topic(self.prefix, topic), key=oid, value=state,
                headers=[("notification_id", str(nid).encode()),
                         ("topic", topic.encode()), ("version", str(version).encode())])
                for nid, oid, version, topic, state in rows]
            self.producer.flush(timeout=ACK_TIMEOUT_S)
            for f in futures:
                f.get(timeout=ACK_TIMEOUT_S)  # raises if the broker did not take one
            with self.store.transaction() as tx:
                tx.track(self.tracking, stop)
            sent += len(rows)
            if progress:
                progress(len(rows))
            start = stop
        return sent

    def run(self, stop: Event, *, poll_interval_s: float = 1.0) -> None:
        """Follow the log until stop is set (LISTEN with a poll on PostgreSQL, a poll on
        SQLite)."""
        with wakeup_for(self.ledger, poll_interval_s) as wakeup:
            while not stop.is_set():
                self.run_once()
                wakeup.wait(stop)
