"""The projection store on PostgreSQL: the views in the ledger's schema."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg.rows import tuple_row

from ledger.projections.store import ProjectionStore, Tx
from ledger.projections.tables import ColumnType, TableSpec
from ledger.projections.view import Row, View
from ledger.store import setup_lock

TRACKING_TABLE = "proj_tracking"
# Rows per statement: arrays this long are still cheap to send and bound the memory.
MAX_ROWS_PER_STATEMENT = 50_000
# The longest pause between two statements of a write transaction: a rebuild's batch
# (100,000 events) is projected in Python between its fetch and its writes, which on a
# busy machine takes longer than the store's idle-in-transaction timeout (5 s).
WRITE_IDLE_LIMIT_S = 120
COPY_TYPES: dict[ColumnType, str] = {"uuid": "uuid", "text": "text", "date": "date",
                                     "int": "int8", "bytes": "bytea"}


class PostgresTx(Tx):
    types: dict[ColumnType, str] = {"uuid": "uuid", "text": "text", "date": "date",
                                    "int": "bigint", "bytes": "bytea"}
    share_clause = " FOR SHARE"
    update_clause = " FOR UPDATE"

    def q(self, name: str) -> str:
        schema = self.store.datastore.schema
        assert '"' not in schema and '"' not in name
        return f'"{schema}"."{name}"'

    @property
    def tracking_table(self) -> str:
        return self.q(TRACKING_TABLE)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.cursor.execute(sql.replace("?", "%s"), params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self.cursor.execute(sql.replace("?", "%s"), params)
        return list(self.cursor.fetchall())

    def upsert(self, spec: TableSpec, generation: int, rows: Sequence[Row]) -> None:
        names = [c.name for c in spec.columns]
        updates = [f"{c.name} = t.{c.name} + EXCLUDED.{c.name}" if c.merge == "add"
                   else f"{c.name} = EXCLUDED.{c.name}"
                   for c in spec.columns if c.merge != "key"]
        action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
        # One statement per chunk: the rows travel as one array per column.
        arrays = ", ".join(f"%b::{self.types[c.type]}[]" for c in spec.columns)
        sql = (f"INSERT INTO {self.q(spec.physical(generation))} AS t ({', '.join(names)}) "
               f"SELECT * FROM unnest({arrays}) ON CONFLICT ({', '.join(spec.key)}) {action}")
        # Ids given as bytes (items.StoredRow) travel as UUIDs: there is no cast from
        # bytea[] to uuid[]. Upserted rows are few (movements and changed participants).
        uuids = [i for i, c in enumerate(spec.columns) if c.type == "uuid"]
        if uuids and rows and any(isinstance(rows[0][i], bytes) for i in uuids):
            rows = [tuple(UUID(bytes=v) if i in uuids and isinstance(v, bytes) else v
                          for i, v in enumerate(row)) for row in rows]
        # In key order: writers adding to the same rows then lock them in the same order
        # and wait for each other instead of deadlocking.
        width = len(spec.key)
        rows = sorted(rows, key=lambda row: row[:width])
        for i in range(0, len(rows), MAX_ROWS_PER_STATEMENT):
            part = rows[i:i + MAX_ROWS_PER_STATEMENT]
            self.cursor.execute(sql, [list(column) for column in zip(*part, strict=True)])

    def append(self, spec: TableSpec, generation: int, rows: Sequence[Row]) -> None:
        names = ", ".join(c.name for c in spec.columns)
        types = [COPY_TYPES[c.type] for c in spec.columns]
        if rows:
            # An id given as its 16 bytes is sent as bytea: in the binary COPY format a
            # uuid is those 16 bytes, so the server reads it as the uuid it is, and the
            # client skips psycopg's UUID dumper (a Python call a value).
            types = ["bytea" if t == "uuid" and isinstance(v, bytes) else t
                     for t, v in zip(types, rows[0], strict=True)]
        with self.cursor.copy(f"COPY {self.q(spec.physical(generation))} ({names}) "
                              f"FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)

    def fetch(self, spec: TableSpec, generation: int, keys: set[UUID]) -> list[Row]:
        ordered = sorted(keys)
        out: list[Row] = []
        for i in range(0, len(ordered), MAX_ROWS_PER_STATEMENT):
            out += self.query(f"SELECT * FROM {self.q(spec.physical(generation))} "
                              f"WHERE {spec.key[0]} = ANY(?::uuid[])",
                              (ordered[i:i + MAX_ROWS_PER_STATEMENT],))
        return out


class PostgresProjectionStore(PostgresTrackingRecorder, ProjectionStore):
    def __init__(self, datastore: PostgresDatastore) -> None:
        super().__init__(datastore, tracking_table_name=TRACKING_TABLE)

    def setup(self, views: Sequence[View], app_name: str) -> None:
        # Consumers and runners started together: one sets the views up, the others then
        # find them there.
        with self.datastore.get_connection() as conn, setup_lock(conn, self.datastore.schema):
            super().setup(views, app_name)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with (self.datastore.get_connection() as conn, conn.transaction(),
              conn.cursor(row_factory=tuple_row) as cur):
            cur.execute(f"SET LOCAL idle_in_transaction_session_timeout = "
                        f"'{WRITE_IDLE_LIMIT_S}s'")
            yield PostgresTx(self, cur)

    @contextmanager
    def reading(self) -> Iterator[Tx]:
        with (self.datastore.get_connection() as conn, conn.transaction(force_rollback=True),
              conn.cursor(row_factory=tuple_row) as cur):
            # Several queries of one answer (a statement) must see one position.
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield PostgresTx(self, cur)
