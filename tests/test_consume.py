"""Projection consumers against a real Kafka-protocol broker (conftest's `broker`: tansu) and
the real PostgreSQL: the views they fill from the relay's topics are the views a rebuild from
the log fills, whatever is delivered twice (a relay that crashed before recording its
position, Kafka reading again), however they are killed, and however many share the group;
and they never feed a view the projection runner feeds, nor it theirs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka.admin import KafkaAdminClient
from typer.testing import CliRunner

from consumers import relay as relay_module
from consumers.consume import ProjectionConsumer, consumer_config
from consumers.relay import Relay, create_topics, kafka_topic, relay_producer
from ledger.application import Ledger
from ledger.errors import Refused
from ledger.projections import ProjectionRunner, Views, rebuild
from ledger.projections.catalogue import make_views
from ledger.projections.connect import store_for
from ledger.projections.feeds import FedByKafka, FedByLog, kafka_marker
from tests.conftest import TEST_CIPHER_KEY
from tests.helpers import contribute, enrol, make_id
from tests.test_projections_support import check_against_replay, scenario, snapshot

REPO = Path(__file__).resolve().parent.parent
PARTITIONS = 3
# Small, so that tansu (which waits this long for members to join a rebalance) forms groups
# quickly; a test batch takes far less.
MAX_POLL_INTERVAL_MS = 1_500
WAIT_S = 30.0
_names = iter(range(1_000))


@pytest.fixture
def ledger(pg_url: str) -> Iterator[Ledger]:
    """A set-up ledger on PostgreSQL, encrypted at rest: the broker holds ciphertext."""
    app = Ledger(pg_url, cipher_key=TEST_CIPHER_KEY)
    app.init()
    yield app
    app.close()


@pytest.fixture
def prefix(broker: str) -> str:
    """Topics of this test's own, PARTITIONS partitions each."""
    name = f"c{next(_names)}"
    admin = KafkaAdminClient(bootstrap_servers=broker)
    create_topics(admin, name, PARTITIONS)
    admin.close()
    return name


def history(ledger: Ledger, out: Path) -> None:
    """Enrolments, contributions, subsidies, treasury receipts, sweeps and appropriations,
    interest, pensions approved, suspended and resumed, a death and its overpayment,
    settlements (the projections' scenario), and a month of pensions paid through the
    bank."""
    from tests.test_payout_support import pay, transitional, treasury

    scenario(ledger)
    treasury(ledger)
    for n in (21, 22, 23):
        transitional(ledger, n)
    pay(ledger, "2020-04", out)


def relay(ledger: Ledger, broker: str, prefix: str) -> int:

    producer = relay_producer(broker)
    try:
        return Relay(ledger, producer, prefix=prefix).run_once()
    finally:
        producer.close()


def consumer(ledger: Ledger, broker: str, prefix: str, group: str | None = None,
             **kw: Any) -> ProjectionConsumer:
    return ProjectionConsumer(ledger, consumer_config(
        [broker], group or f"g-{prefix}", max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
        max_poll_records=kw.pop("max_poll_records", 500)), prefix=prefix, **kw)


def consume(ledger: Ledger, broker: str, prefix: str, **kw: Any) -> ProjectionConsumer:
    """A consumer run until caught up, then closed."""
    c = consumer(ledger, broker, prefix, **kw)
    try:
        c.run_until_caught_up()
    finally:
        c.close()
    return c


def consumed_ids(ledger: Ledger, prefix: str, first: int = 1, last: int | None = None
                 ) -> list[int]:
    """The notifications first to last (the head) that are on the topics the views read
    (command receipts and rule versions are not)."""
    topics = {kafka_topic(prefix, t) for v in make_views(ledger) for t in v.topics()}
    last = last or ledger.recorder.max_notification_id() or 0
    return [n.id for n in ledger.recorder.select_notifications(first, last - first + 1,
                                                               stop=last)
            if kafka_topic(prefix, n.topic) in topics]


def consumed_events(ledger: Ledger, prefix: str, first: int = 1, last: int | None = None
                    ) -> int:
    return len(consumed_ids(ledger, prefix, first, last))


def rebuilt(ledger: Ledger) -> dict[str, Any]:
    """The views' answers after a rebuild from the log."""
    rebuild(ledger)
    return snapshot(ledger)


def feeds(ledger: Ledger) -> set[str]:
    return {p["feed"] for p in Views(ledger).positions().values()}


def test_consumed_views_equal_a_rebuild_from_the_log(ledger: Ledger, broker: str, prefix: str,
                                                     tmp_path: Path) -> None:
    history(ledger, tmp_path)
    head = ledger.recorder.max_notification_id()
    assert relay(ledger, broker, prefix) == head

    c = consume(ledger, broker, prefix)
    assert (c.applied, c.dropped) == (consumed_events(ledger, prefix), 0)
    positions = Views(ledger).positions()
    assert {p["feed"] for p in positions.values()} == {"kafka"}
    last = consumed_ids(ledger, prefix)[-1]
    assert {p["position"] for p in positions.values()} == {last}
    consumed = snapshot(ledger)
    check_against_replay(ledger, consumed)
    assert consumed["roster"] and any(r["last_paid_month"] == "2020-04"
                                      for r in consumed["roster"])
    assert rebuilt(ledger) == consumed


def test_a_window_relayed_twice_and_messages_read_again_count_once(
        ledger: Ledger, broker: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    scenario(ledger)
    head = ledger.recorder.max_notification_id()
    assert head is not None
    monkeypatch.setattr(relay_module, "WINDOW", 10)
    crashing = Relay(ledger, relay_producer(broker), prefix=prefix)
    real_transaction = crashing.store.transaction
    windows = 0

    def crash_on_the_third_window() -> Any:
        nonlocal windows
        windows += 1
        if windows == 3:
            raise ConnectionError("relay killed")  # sent, acknowledged, position not recorded
        return real_transaction()

    monkeypatch.setattr(crashing.store, "transaction", crash_on_the_third_window)
    with pytest.raises(ConnectionError):
        crashing.run_once()
    crashing.producer.close()
    first = consume(ledger, broker, prefix)  # notifications 1 to 30, the third window once
    assert (first.applied, first.dropped) == (consumed_events(ledger, prefix, 1, 30), 0)

    assert relay(ledger, broker, prefix) == head - 20  # the restarted relay: 21 onwards
    second = consume(ledger, broker, prefix)
    # The third window's events came again and were dropped.
    assert (second.applied, second.dropped) == (consumed_events(ledger, prefix, 31),
                                                consumed_events(ledger, prefix, 21, 30))
    # Kafka delivering everything again (as to a member whose offsets were lost).
    monkeypatch.setattr(ProjectionConsumer, "_seek_to_stored", lambda self: [
        self.consumer.seek(tp, 0) for tp in self.consumer.assignment()])
    again = consume(ledger, broker, prefix)
    assert (again.applied, again.dropped) == (0, first.applied + second.applied
                                              + second.dropped)
    consumed = snapshot(ledger)
    check_against_replay(ledger, consumed)
    assert rebuilt(ledger) == consumed


# A consumer in a process of its own, dawdling inside each write transaction so that kills
# land there as well as between polls.
CHILD = r"""
import sys, time
import ledger.projections.store_postgres
from consumers.consume import ProjectionConsumer, consumer_config
from ledger.application import Ledger
from ledger.projections.store import Tx
from threading import Event

url, key, broker, prefix, interval = sys.argv[1:6]
for cls in Tx.__subclasses__():
    for name in ("track", "upsert", "append"):
        def slow(self, *args, _write=getattr(cls, name), **kwargs):
            _write(self, *args, **kwargs)
            time.sleep(0.003)
        setattr(cls, name, slow)
consumer = ProjectionConsumer(Ledger(url, cipher_key=key), consumer_config(
    [broker], "g-" + prefix, max_poll_records=4, max_poll_interval_ms=int(interval)),
    prefix=prefix)
print("ready", flush=True)
consumer.run(Event())
"""


def offsets_stored(ledger: Ledger) -> int:
    """Records the balances view's consumers have committed, over all partitions."""
    store = store_for(ledger)
    with store.reading() as tx:
        generation = tx.registrations()["balances"].generation
        rows = tx.positions_like(kafka_marker(f"{ledger.name}:balances:g{generation}") + ":o:")
    return sum(rows.values())


def test_a_killed_consumer_restarts_to_the_same_views(ledger: Ledger, broker: str,
                                                      prefix: str, tmp_path: Path) -> None:
    scenario(ledger)
    for n in range(30, 70):
        enrol(ledger, make_id(n), village=f"村{n % 3}")
        contribute(ledger, make_id(n), 2016)
    relay(ledger, broker, prefix)
    total = consumed_events(ledger, prefix)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    kills = 0
    for _attempt in range(3):
        child = subprocess.Popen([sys.executable, "-c", CHILD, ledger.url, TEST_CIPHER_KEY,
                                  broker, prefix, str(MAX_POLL_INTERVAL_MS)], cwd=REPO,
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready", child.communicate()[1]
        before = offsets_stored(ledger)
        deadline = time.monotonic() + WAIT_S
        while offsets_stored(ledger) < min(before + 30, total) and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        if child.returncode == -signal.SIGKILL and before < offsets_stored(ledger) < total:
            kills += 1
        if kills == 2:
            break
    assert kills >= 2, "too few kills landed while the consumer was working"

    c = consume(ledger, broker, prefix)
    assert c.applied < total  # only what the killed ones left
    consumed = snapshot(ledger)
    check_against_replay(ledger, consumed)
    assert rebuilt(ledger) == consumed


def test_the_runner_and_the_consumers_never_feed_the_same_view(
        ledger: Ledger, broker: str, prefix: str, tmp_path: Path) -> None:
    sqlite = Ledger(str(tmp_path / "ledger.db"), cipher_key="")
    with pytest.raises(Refused) as no_sqlite:
        consumer(sqlite, broker, prefix)
    assert no_sqlite.value.field == "db" and "PostgreSQL" in no_sqlite.value.rule
    sqlite.close()

    scenario(ledger)
    runner = ProjectionRunner(ledger)
    half = runner.run_until_caught_up()
    with pytest.raises(FedByLog) as fed_by_log:
        consumer(ledger, broker, prefix)
    assert "`pension-ledger project run`" in str(fed_by_log.value)
    assert "--take-over" in str(fed_by_log.value)
    assert feeds(ledger) == {"log"}  # refused whole: nothing claimed

    # Handed over: a runner that read its targets before then is refused when it next writes.
    named = ProjectionRunner(ledger, ["balances"])
    named.targets()
    enrol(ledger, make_id(80))
    contribute(ledger, make_id(80), 2016)
    relay(ledger, broker, prefix)
    taken = consume(ledger, broker, prefix, take_over=True)
    assert feeds(ledger) == {"kafka"}
    assert taken.applied == 2 and taken.dropped == consumed_events(ledger, prefix) - 2
    with pytest.raises(FedByKafka) as fed_by_kafka:
        named.run_until_caught_up()
    assert "`pension-ledger consume`" in str(fed_by_kafka.value)
    assert "project rebuild --view balances" in str(fed_by_kafka.value)
    with pytest.raises(FedByKafka):
        ProjectionRunner(ledger, ["statements"]).run_until_caught_up()
    # Following every view, the runner leaves the consumers' ones alone.
    contribute(ledger, make_id(80), 2017)
    assert runner.run_until_caught_up() == 0 and runner.passed_over == [
        "balances", "statements", "participants"]
    assert half > 0

    # A rebuild makes the view the runner's again; consumers then refuse it until told to
    # take it over.
    relay(ledger, broker, prefix)
    rebuild(ledger, ["balances"])
    assert Views(ledger).positions()["balances"]["feed"] == "log"
    contribute(ledger, make_id(80), 2018)
    relay(ledger, broker, prefix)
    # The group's offsets pass the contribution (a member feeding statements only) ...
    statements = consume(ledger, broker, prefix, views=["statements"])
    assert statements.applied == 2  # both contributions
    with pytest.raises(FedByLog):
        consume(ledger, broker, prefix)
    # ... yet the balances taken over from the rebuild's position get it: read from the
    # offsets the database holds for them (none: from the beginning).
    taken = consume(ledger, broker, prefix, take_over=True)
    # 2017 to participants; 2018 to participants and balances (checked below).
    assert (taken.applied, feeds(ledger)) == (2, {"kafka"})
    consumed = snapshot(ledger)
    check_against_replay(ledger, consumed)
    assert rebuilt(ledger) == consumed


def test_the_consume_command(ledger: Ledger, broker: str, prefix: str) -> None:
    import entrypoints.cli  # noqa: F401  (adds consume to the app)
    from ledger.cli import app
    from tests.test_cli import ENV

    scenario(ledger)
    relay(ledger, broker, prefix)
    ProjectionRunner(ledger, ["participants"]).run_until_caught_up()
    args = ["--db", ledger.url, "consume", "--brokers", broker, "--prefix", prefix,
            "--group", f"g-{prefix}", "--once", "--max-poll-interval-ms",
            str(MAX_POLL_INTERVAL_MS)]
    env = {**ENV, "CIPHER_KEY": TEST_CIPHER_KEY}
    no_topics = CliRunner().invoke(app, [*args, "--prefix", "nosuch"], env=env)
    assert no_topics.exit_code == 2 and "the relay creates them" in no_topics.stderr
    too_few = CliRunner().invoke(app, [*args, "--max-poll-records", "0"], env=env)
    assert too_few.exit_code == 2 and "max_poll_records: must be 1 to" in too_few.stderr
    refused = CliRunner().invoke(app, args, env=env)
    assert refused.exit_code == 2, (refused.stderr, refused.exception)
    assert "refused: view: participants generation 1 is fed by the projection runner" in (
        " ".join(refused.stderr.split()))
    done = CliRunner().invoke(app, [*args, "--take-over"], env=env)
    assert done.exit_code == 0, (done.stderr, done.exception)
    assert f"applied {consumed_events(ledger, prefix)} events to balances, statements, " \
           "participants (0 seen before, dropped)" in done.stderr
    again = CliRunner().invoke(app, args, env=env)
    assert again.exit_code == 0 and "applied 0 events" in again.stderr
    status = CliRunner().invoke(app, ["--db", ledger.url, "project", "status"], env=env)
    assert status.stdout.count("fed by Kafka consumers") == 3


def test_a_group_of_two_shares_the_partitions(ledger: Ledger, broker: str, prefix: str) -> None:
    members = [consumer(ledger, broker, prefix) for _ in range(2)]
    stop = threading.Event()
    threads = [threading.Thread(target=m.run, args=(stop,)) for m in members]
    for t in threads:
        t.start()
    try:
        everything = {(t, p) for t in members[0].topics for p in range(PARTITIONS)}
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            shares = [{(tp.topic, tp.partition) for tp in m.consumer.assignment()}
                      for m in members]
            if all(shares) and shares[0] | shares[1] == everything:
                break
            time.sleep(0.05)
        assert all(shares) and not shares[0] & shares[1], shares
        scenario(ledger)
        for n in range(30, 50):
            enrol(ledger, make_id(n), township=f"镇{n % 4}")
            contribute(ledger, make_id(n), 2016)
        relay(ledger, broker, prefix)
        total = consumed_events(ledger, prefix)
        while sum(m.applied for m in members) < total and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=WAIT_S)
        for m in members:
            m.close()
    assert [m.applied > 0 for m in members] == [True, True]
    assert sum(m.applied for m in members) == total
    consumed = snapshot(ledger)
    check_against_replay(ledger, consumed)
    assert rebuilt(ledger) == consumed
