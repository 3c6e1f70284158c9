"""Where the views live: tables beside the events, a registry of generations, tracking.

The store is a subclass of eventsourcing's tracking recorder for the ledger's database
(see store_sqlite.py and store_postgres.py), sharing the ledger's datastore, so a view's
rows and its tracking position are written in one transaction of the same database.

Registry (proj_registry): one row per view naming its active generation and, during a
rebuild, the generation being built. Every write transaction first locks the registry
rows of the views it writes (shared; claiming and switching a generation lock them
exclusively) and the tracking rows it will advance (exclusive), then checks that the
generation and tracking position are those it read the events against; a runner that
finds them moved (another runner, or a rebuild that switched) rolls back and starts again
from the stored position. So an event is never counted twice and never skipped, whatever
crashes or races. On SQLite every such lock is the database's single write lock.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking

from ledger.projections.tables import ColumnType, TableSpec
from ledger.projections.view import Row, View

REGISTRY = "proj_registry"
MAX_FETCH_CHUNK = 500


class StaleTarget(Exception):
    """The generation or position of a view moved since the batch was read."""


@dataclass(frozen=True)
class Registration:
    view: str
    generation: int | None        # active generation, read by queries
    version: int | None           # View.version of the active generation
    building: int | None          # generation being rebuilt, if any
    building_version: int | None


PARTITION_MARK = ":p"


def tracking_name(app_name: str, view: str, generation: int,
                  partition: tuple[int, int] | None = None) -> str:
    """Each view generation tracks its own position; so does each partition of a
    parallel rebuild of it (index, count)."""
    name = f"{app_name}:{view}:g{generation}"
    return name if partition is None else f"{name}{PARTITION_MARK}{partition[0]}of{partition[1]}"


class Tx(ABC):
    """One transaction on the store, in the dialect of its database."""

    types: dict[ColumnType, str]

    def __init__(self, store: ProjectionStore, cursor: Any) -> None:
        self.store = store
        self.cursor = cursor

    # ---- dialect ----------------------------------------------------------------------

    @abstractmethod
    def q(self, name: str) -> str:
        """A table or view name, quoted and qualified."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run a statement written with ? placeholders."""

    @abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Rows of a query written with ? placeholders; dates and ids as the driver
        returns them (see values.py)."""

    @abstractmethod
    def upsert(self, spec: TableSpec, generation: int, rows: Sequence[Row]) -> None:
        """Merge rows (unique by key) into a generation's table by its merge rules."""

    @abstractmethod
    def append(self, spec: TableSpec, generation: int, rows: Sequence[Row]) -> None:
        """Add rows to an append-only table."""

    def write(self, spec: TableSpec, generation: int, rows: Sequence[Row]) -> None:
        if spec.append:
            self.append(spec, generation, rows)
        else:
            self.upsert(spec, generation, rows)

    @abstractmethod
    def fetch(self, spec: TableSpec, generation: int, keys: set[UUID]) -> list[Row]:
        """Rows whose first key column is one of keys."""

    @property
    @abstractmethod
    def tracking_table(self) -> str:
        """The tracking recorder's table, quoted and qualified."""

    # ---- shared -----------------------------------------------------------------------

    def create_registry(self) -> None:
        self.execute(f"CREATE TABLE IF NOT EXISTS {self.q(REGISTRY)} (view TEXT PRIMARY KEY, "
                     f"generation {self.types['int']}, version {self.types['int']}, "
                     f"building {self.types['int']}, building_version {self.types['int']})")

    def registrations(self) -> dict[str, Registration]:
        rows = self.query(f"SELECT view, generation, version, building, building_version "
                          f"FROM {self.q(REGISTRY)}")
        return {r[0]: Registration(*r) for r in rows}

    # Row-lock clauses; SQLite has none (its write lock covers the whole file).
    share_clause = ""
    update_clause = ""

    def lock(self, views: Sequence[str], *, exclusive: bool = False) -> dict[str, Registration]:
        """Lock the registry rows of these views for the rest of the transaction and
        return them. Writers of rows take a shared lock (many runners may write different
        generations or partitions at once); claiming and switching generations take an
        exclusive one, so no writer is ever half-way through a generation being switched.
        On SQLite both are the file's write lock."""
        if exclusive or not self.share_clause:
            for view in sorted(views):
                self.execute(f"UPDATE {self.q(REGISTRY)} SET generation = generation "
                             f"WHERE view = ?", (view,))
            found = self.registrations()
        else:
            marks = ", ".join("?" * len(views))
            rows = self.query(f"SELECT view, generation, version, building, building_version "
                              f"FROM {self.q(REGISTRY)} WHERE view IN ({marks}) "
                              f"ORDER BY view{self.share_clause}", sorted(views))
            found = {r[0]: Registration(*r) for r in rows}
        missing = set(views) - set(found)
        assert not missing, f"views not set up: {missing}"
        return {v: found[v] for v in views}

    def position(self, name: str, *, lock: bool = False) -> int | None:
        """A tracking position; lock=True holds its row until the end of the transaction,
        so two runners of one target take turns and the second finds the position moved."""
        rows = self.query(f"SELECT notification_id FROM {self.tracking_table} "
                          f"WHERE application_name = ?{self.update_clause if lock else ''}",
                          (name,))
        return None if not rows else int(rows[0][0])

    def positions_like(self, prefix: str) -> dict[str, int]:
        rows = self.query(f"SELECT application_name, notification_id FROM {self.tracking_table} "
                          f"WHERE application_name LIKE ?", (prefix + "%",))
        return {r[0]: int(r[1]) for r in rows}

    def untrack(self, name: str) -> None:
        self.execute(f"DELETE FROM {self.tracking_table} WHERE application_name = ?", (name,))

    def track(self, name: str, notification_id: int) -> None:
        # The recorder's own statement: it refuses a position that does not advance.
        self.store._insert_tracking(self.cursor, Tracking(name, notification_id))

    def create_generation(self, view: View, generation: int, app_name: str, *,
                          indexes: bool = True) -> None:
        """The generation's tables at position 0. A rebuild passes indexes=False: filling
        tables and then indexing them once costs less than keeping the secondary indexes
        up to date row by row; create_indexes() adds them before the generation is
        switched to (primary keys are there from the start: merges need them)."""
        for spec in view.tables:
            table = spec.physical(generation)
            columns = ", ".join(f"{c.name} {self.types[c.type]}" for c in spec.columns)
            key = f", PRIMARY KEY ({', '.join(spec.key)})" if spec.key else ""
            self.execute(f"CREATE TABLE IF NOT EXISTS {self.q(table)} ({columns}{key})")
        if indexes:
            self.create_indexes(view, generation)
        name = tracking_name(app_name, view.name, generation)
        if self.position(name) is None:
            self.track(name, 0)

    def create_indexes(self, view: View, generation: int) -> None:
        """The secondary indexes of a generation's tables, those not there yet."""
        for spec in view.tables:
            table = spec.physical(generation)
            for i, index in enumerate(spec.indexes):
                self.execute(f"CREATE INDEX IF NOT EXISTS {self.index_name(table, i)} "
                             f"ON {self.q(table)} ({', '.join(index)})")

    def index_name(self, table: str, i: int) -> str:
        return f"{table}_i{i}"

    def drop_generation(self, view: View, generation: int, app_name: str) -> None:
        for spec in view.tables:
            self.execute(f"DROP TABLE IF EXISTS {self.q(spec.physical(generation))}")
        name = tracking_name(app_name, view.name, generation)
        # Its rebuild partitions (":p...") and Kafka feed (":kafka...", feeds.py) too.
        for row in self.positions_like(name + ":"):
            self.untrack(row)
        self.untrack(name)

    def point_readers(self, view: View, generation: int) -> None:
        """The stable names readers query: a SQL view over the active generation."""
        for spec in view.tables:
            self.execute(f"DROP VIEW IF EXISTS {self.q(spec.name)}")
            self.execute(f"CREATE VIEW {self.q(spec.name)} AS "
                         f"SELECT * FROM {self.q(spec.physical(generation))}")


class ProjectionStore(ABC):
    """Mixed into the dialect's tracking recorder (store_sqlite.py, store_postgres.py)."""

    datastore: Any

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Tx]:
        """A write transaction, committed on normal exit, rolled back on error."""

    @abstractmethod
    def reading(self) -> AbstractContextManager[Tx]:
        """A read-only transaction with one consistent snapshot."""

    @abstractmethod
    def _insert_tracking(self, c: Any, tracking: Tracking) -> None:
        """The tracking recorder's insert, inside our transaction."""

    @abstractmethod
    def create_table(self) -> None:
        """The tracking recorder's tables."""

    def setup(self, views: Sequence[View], app_name: str) -> None:
        """Create what is missing: registry, tracking table, and generation 1 of each view
        never set up (empty, at position 0, active at once; the runner fills it)."""
        self.create_table()
        with self.transaction() as tx:
            tx.create_registry()
        for view in views:
            with self.transaction() as tx:
                if view.name in tx.registrations():
                    continue
                tx.create_generation(view, 1, app_name)
                tx.point_readers(view, 1)
                tx.execute(f"INSERT INTO {tx.q(REGISTRY)} VALUES (?, 1, ?, NULL, NULL)",
                           (view.name, view.version))

    def registrations(self) -> dict[str, Registration]:
        with self.reading() as tx:
            return tx.registrations()

    def positions(self, names: Sequence[str]) -> dict[str, int | None]:
        with self.reading() as tx:
            return {n: tx.position(n) for n in names}


def chunks(keys: set[UUID], size: int = MAX_FETCH_CHUNK) -> Iterator[list[UUID]]:
    ordered = sorted(keys)
    for i in range(0, len(ordered), size):
        yield ordered[i:i + size]
