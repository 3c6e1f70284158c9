"""The projection store on SQLite: the views in the ledger's own database file."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from typing import Any
from uuid import UUID

from eventsourcing.sqlite import SQLiteDatastore, SQLiteTrackingRecorder

from ledger.projections.store import ProjectionStore, Tx, chunks
from ledger.projections.tables import ColumnType, TableSpec
from ledger.projections.view import Row


def _adapt(value: Any) -> Any:
    if isinstance(value, UUID):
        return value.hex  # as the ledger's own SQLite tables store ids
    if isinstance(value, date):
        return value.isoformat()
    return value


_CONVERT: dict[ColumnType, Callable[[Any], Any]] = {
    # An id is a UUID, or its 16 bytes (items.StoredRow).
    "uuid": lambda v: None if v is None else v.hex() if isinstance(v, bytes) else v.hex,
    "date": lambda v: None if v is None else v.isoformat(),
    "text": lambda v: v,
    "int": lambda v: v,
    "bytes": lambda v: v,
}


class SQLiteTx(Tx):
    types: dict[ColumnType, str] = {"uuid": "TEXT", "text": "TEXT", "date": "TEXT",
                                    "int": "INTEGER", "bytes": "BLOB"}

    def q(self, name: str) -> str:
        return f'"{name}"'

    @property
    def tracking_table(self) -> str:
        return "tracking"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.cursor.execute(sql, [_adapt(p) for p in params])

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self.cursor.execute(sql, [_adapt(p) for p in params])
        return [tuple(r) for r in self.cursor.fetchall()]

    def upsert(self, spec: TableSpec, generation: int, rows: Sequence[Row]) -> None:
        if not rows:
            return
        names = [c.name for c in spec.columns]
        updates = [f"{c.name} = {c.name} + excluded.{c.name}" if c.merge == "add"
                   else f"{c.name} = excluded.{c.name}"
                   for c in spec.columns if c.merge != "key"]
        action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
        sql = (f"INSERT INTO {self.q(spec.physical(generation))} ({', '.join(names)}) "
               f"VALUES ({', '.join('?' * len(names))}) "
               f"ON CONFLICT ({', '.join(spec.key)}) {action}")
        converters = [_CONVERT[c.type] for c in spec.columns]
        self.cursor.executemany(sql, [[f(v) for f, v in zip(converters, row, strict=True)]
                                      for row in rows])

    def append(self, spec: TableSpec, generation: int, rows: Sequence[Row]) -> None:
        names = [c.name for c in spec.columns]
        converters = [_CONVERT[c.type] for c in spec.columns]
        self.cursor.executemany(
            f"INSERT INTO {self.q(spec.physical(generation))} ({', '.join(names)}) "
            f"VALUES ({', '.join('?' * len(names))})",
            [[f(v) for f, v in zip(converters, row, strict=True)] for row in rows])

    def fetch(self, spec: TableSpec, generation: int, keys: set[UUID]) -> list[Row]:
        out: list[Row] = []
        first = spec.key[0]
        for part in chunks(keys):
            out += self.query(f"SELECT * FROM {self.q(spec.physical(generation))} "
                              f"WHERE {first} IN ({', '.join('?' * len(part))})", part)
        return out


class SQLiteProjectionStore(SQLiteTrackingRecorder, ProjectionStore):
    def __init__(self, datastore: SQLiteDatastore) -> None:
        super().__init__(datastore)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.datastore.transaction(commit=True) as c:
            yield SQLiteTx(self, c)

    @contextmanager
    def reading(self) -> Iterator[Tx]:
        with self.datastore.transaction(commit=False) as c:
            yield SQLiteTx(self, c)
