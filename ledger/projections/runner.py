"""The projection runner: reads the notification log in order, a window of notification
ids at a time (a batch), and writes every view's rows for the batch and its tracking
position in one transaction.

Exactly once: the transaction first locks the views' registry rows (shared: a switch of
generations waits for it) and each view's tracking row (exclusive: a second runner of the
same view waits), checks that the generation and stored position are the ones the batch
was read against, then advances the position (eventsourcing's _insert_tracking) and
writes the rows. A crash before the commit loses the whole batch, which is read again on
restart; a crash after it loses nothing. A second runner, or a rebuild switching
generations, shows up as a moved position: the batch is rolled back, caches are dropped
and the runner continues from what is stored.

The next batch is read and decoded while the last one is written (pipeline.py).

Following: on PostgreSQL the runner LISTENs on the channel the event recorder NOTIFYs on,
and still polls every poll_interval_s, so a lost notification delays it, never stalls it.
SQLite has no notifications: the runner polls (or the CLI runs it after each command).

A view generation fed by Kafka consumers (feeds.py) is not the runner's: following every
view, it passes over it; asked for it by name, it refuses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from threading import Event
from typing import TYPE_CHECKING

from eventsourcing.persistence import IntegrityError, OperationalError

from ledger.collector import collector_paused
from ledger.errors import Refused
from ledger.projections.catalogue import make_views
from ledger.projections.connect import store_for
from ledger.projections.feeds import FedByKafka, kafka_marker
from ledger.projections.items import Decoder, Item
from ledger.projections.pipeline import run_pipelined
from ledger.projections.reader import MAX_WINDOW, head_of, reader_for
from ledger.projections.store import Registration, StaleTarget, Tx, tracking_name
from ledger.projections.view import View
from ledger.projections.wakeup import wakeup_for

if TYPE_CHECKING:
    from ledger.application import Ledger

# Batches are windows of notification ids (reader.py).
DEFAULT_BATCH_SQLITE = 1_000      # short write transactions: commands share the file lock
DEFAULT_BATCH_POSTGRES = 10_000
# A rebuild's batches are larger: its movements net over more events before they are
# merged (the upserts of a 10,000-event batch had nearly as many rows as events), and
# each batch pays a transaction and a fetch per table once. Measured on the 100,000-event
# bench store: 16,000 events/s with 10,000, 38,000 with 100,000. Memory: about 3 KB a
# decoded event, for the batch being written and the one decoded meanwhile (peak RSS
# 0.6 GB with 50,000 on the 1M-event store, 1.1 GB with 100,000).
DEFAULT_BATCH_REBUILD_POSTGRES = 50_000
MAX_BATCH = 100_000
MAX_RETRIES = 20                  # conflicts in a row before the runner gives up
RETRY_SLEEP_S = 0.05
MAX_PARTITIONS = 64


class ViewOutOfDate(Refused):
    def __init__(self, view: str, stored: int | None, code: int) -> None:
        super().__init__("view", f"the stored {view} view is version {stored}, this program "
                         f"writes version {code}: run `pension-ledger project rebuild "
                         f"--view {view}` first")


@dataclass(frozen=True)
class Partition:
    """One of `count` runners of a parallel rebuild: the aggregates whose id modulo count
    is `index`, up to notification `stop`."""

    index: int
    count: int
    stop: int

    def __post_init__(self) -> None:
        assert 0 <= self.index < self.count <= MAX_PARTITIONS and self.stop >= 0


@dataclass
class Target:
    """One view generation the runner writes, and the position it has committed."""

    view: View
    generation: int
    tracking: str
    position: int


def write_rows(tx: Tx, view: View, generation: int, items: Sequence[Item]) -> None:
    """A view's rows for these items, in notification order, written into a generation's
    tables inside tx: first the rows the view asks to see (View.missing), then its writes.
    The caller records the position the rows bring the generation to, in the same tx."""
    for table, keys in view.missing(items).items():
        view.load(table, tx.fetch(view.table(table), generation, keys))
    for write in view.apply(items):
        if write.rows:
            spec = view.table(write.table)
            if write.fresh:
                tx.append(spec, generation, write.rows)
            else:
                tx.write(spec, generation, write.rows)


class ProjectionRunner:
    def __init__(self, ledger: Ledger, views: Sequence[str] | None = None, *,
                 batch_size: int | None = None, building: bool = False,
                 partition: Partition | None = None) -> None:
        """building=False follows the active generations (what queries read);
        building=True fills the generations a rebuild is preparing, and with a partition
        only its share of them (see rebuild.py)."""
        assert partition is None or building, "only a rebuild runs in partitions"
        self.ledger = ledger
        self.store = store_for(ledger)
        self.store.setup(make_views(ledger), ledger.name)
        self.views = make_views(ledger, views)
        # Following every view (views=None), those fed by Kafka consumers are passed over;
        # views named are refused if consumers feed them.
        self._every_view = views is None
        self._passed_over: list[str] = []
        self.building = building
        self.partition = partition
        self._shard = None if partition is None else (partition.index, partition.count)
        is_sqlite = type(self.store).__name__.startswith("SQLite")
        self.batch_size = batch_size or (
            DEFAULT_BATCH_SQLITE if is_sqlite
            else DEFAULT_BATCH_REBUILD_POSTGRES if building else DEFAULT_BATCH_POSTGRES)
        assert 0 < self.batch_size <= MAX_BATCH <= MAX_WINDOW
        self._read = reader_for(ledger)
        self._decoder = Decoder(ledger.mapper, set().union(*(v.topics() for v in self.views)))
        self._targets: list[Target] | None = None
        self.conflicts = 0  # batches rolled back because a position moved under us

    # ---- running ----------------------------------------------------------------------

    def run_until_caught_up(self, *, stop: Event | None = None,
                            progress: Callable[[int], None] | None = None) -> int:
        """Process the log up to its head as it is now, a window of batch_size
        notification ids at a time. Returns how many notifications were committed."""
        total = 0
        retries = 0
        if self._passed_over:
            self._targets = None  # a rebuild may since have handed one back to the log
        with collector_paused():
            while stop is None or not stop.is_set():
                try:
                    committed, caught_up = self._session(stop, progress)
                except (StaleTarget, IntegrityError, OperationalError):
                    # Moved under us (another runner, a switch) or the SQLite file was
                    # busy: that batch was not committed; start again from what is stored.
                    self._forget()
                    self.conflicts += 1
                    retries += 1
                    if retries > MAX_RETRIES:
                        raise RuntimeError(f"projection runner: {retries} conflicting "
                                           "batches in a row; is another runner stuck?"
                                           ) from None
                    time.sleep(RETRY_SLEEP_S * retries)
                    continue
                except BaseException:
                    self._forget()
                    raise
                retries = 0
                total += committed
                if caught_up:
                    break
        return total

    def _session(self, stop: Event | None,
                 progress: Callable[[int], None] | None) -> tuple[int, bool]:
        """Batches from the stored positions, the next one read and decoded while the
        last one is written: (notifications committed, caught up?)."""
        targets = self.targets()
        committed = 0
        caught_up = False
        if not targets:
            return 0, True

        def batches() -> Iterator[tuple[int, int, list[Item]]]:
            nonlocal caught_up
            start = min(t.position for t in targets)
            head = self._head()
            while start < head and (stop is None or not stop.is_set()):
                end = min(start + self.batch_size, head)
                notifications = self._read(start, end)
                count = len(notifications)
                items = self._decoder.decode(notifications, self._shard)
                del notifications  # the stored bytes: only the decoded items are kept
                yield count, end, items
                start = end
            caught_up = start >= head

        def commit(batch: tuple[int, int, list[Item]]) -> None:
            nonlocal committed
            count, last, items = batch
            self._commit(targets, items, last)
            committed += count
            if progress:
                progress(count)

        run_pipelined(batches(), commit)
        return committed, caught_up

    def run(self, stop: Event | None = None, *, poll_interval_s: float = 1.0) -> None:
        """Follow the log until stop is set."""
        stop = stop or Event()
        with wakeup_for(self.ledger, poll_interval_s) as wakeup:
            while not stop.is_set():
                self.run_until_caught_up(stop=stop)
                wakeup.wait(stop)

    def positions(self) -> dict[str, int]:
        return {t.view.name: t.position for t in self.targets()}

    # ---- one batch --------------------------------------------------------------------

    def step(self) -> tuple[int, bool]:
        """Read and project one window, on this thread: (notifications read, committed?)."""
        try:
            targets = self.targets()
        except StaleTarget:
            self._forget()
            self.conflicts += 1
            return 0, False
        if not targets:
            return 0, True
        start = min(t.position for t in targets)
        head = self._head()
        if start >= head:
            return 0, True
        end = min(start + self.batch_size, head)
        notifications = self._read(start, end)
        try:
            with collector_paused():
                items = self._decoder.decode(notifications, self._shard)
                self._commit(targets, items, end)
        except (StaleTarget, IntegrityError, OperationalError):
            self._forget()
            self.conflicts += 1
            return len(notifications), False
        except BaseException:
            self._forget()
            raise
        return len(notifications), True

    def _head(self) -> int:
        head = head_of(self.ledger)
        return head if self.partition is None else min(head, self.partition.stop)

    def _commit(self, targets: list[Target], items: list[Item], last: int) -> None:
        """One transaction: the batch's rows for every target and their positions."""
        with self.store.transaction() as tx:
            self._write(tx, targets, items, last)
        for t in targets:
            t.position = max(t.position, last)
            t.view.after_commit()

    def _write(self, tx: Tx, targets: list[Target], items: list[Item], last: int) -> None:
        registrations = tx.lock([t.view.name for t in targets])
        for t in targets:
            reg = registrations[t.view.name]
            generation = reg.building if self.building else reg.generation
            if generation != t.generation or tx.position(t.tracking, lock=True) != t.position:
                raise StaleTarget(t.view.name)
        first = items[0][0] if items else last
        for t in targets:
            if t.position >= last:
                continue
            mine = items if t.position < first else [
                i for i in items if i[0] > t.position]
            tx.track(t.tracking, last)
            write_rows(tx, t.view, t.generation, mine)

    # ---- targets ----------------------------------------------------------------------

    def targets(self) -> list[Target]:
        if self._targets is None:
            self._targets = self._resolve()
        return self._targets

    def _resolve(self) -> list[Target]:
        registrations = self.store.registrations()
        targets: list[Target] = []
        fed_by_kafka = self._fed_by_kafka(registrations)
        self._passed_over = []
        for view in self.views:
            reg = registrations[view.name]
            if self.building:
                generation, version = reg.building, reg.building_version
                if generation is None:
                    raise Refused("view", f"no rebuild of {view.name} is in progress")
            else:
                generation, version = reg.generation, reg.version
            assert generation is not None
            if view.name in fed_by_kafka:
                if not self._every_view:
                    raise FedByKafka(view.name, generation)
                self._passed_over.append(view.name)
                continue
            if version != view.version:
                raise ViewOutOfDate(view.name, version, view.version)
            name = tracking_name(self.ledger.name, view.name, generation, self._shard)
            targets.append(Target(view, generation, name, 0))
        positions = self.store.positions([t.tracking for t in targets])
        for t in targets:
            position = positions[t.tracking]
            if position is None and not self.building:
                # A rebuild switched the view and dropped this generation between the two
                # reads: resolve again (a follower must not die of it).
                raise StaleTarget(t.view.name)
            if position is None:  # its generation was dropped by a rebuild that took over
                raise Refused("view", f"{t.tracking} is no longer being built (another "
                              "rebuild took it over)")
            t.position = position
        return targets

    def _fed_by_kafka(self, registrations: dict[str, Registration]) -> set[str]:
        """The views whose active generation Kafka consumers feed (never the building one:
        consumers feed active generations only)."""
        if self.building:
            return set()
        markers = {view.name: kafka_marker(tracking_name(self.ledger.name, view.name, g))
                   for view in self.views
                   if (g := registrations[view.name].generation) is not None}
        found = self.store.positions(list(markers.values()))
        return {name for name, marker in markers.items() if found[marker] is not None}

    @property
    def passed_over(self) -> list[str]:
        """The views last found fed by Kafka consumers, which this runner leaves alone."""
        return list(self._passed_over)

    def _forget(self) -> None:
        for view in self.views:
            view.forget()
        self._targets = None
