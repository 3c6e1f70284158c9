"""The projection store for a ledger: same database, same datastore (pool) as its events."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore

from ledger.projections.store import ProjectionStore

if TYPE_CHECKING:
    from ledger.application import Ledger


def store_for(ledger: Ledger) -> ProjectionStore:
    datastore = ledger.recorder.datastore  # type: ignore[attr-defined]
    if isinstance(datastore, PostgresDatastore):
        from ledger.projections.store_postgres import PostgresProjectionStore
        return PostgresProjectionStore(datastore)
    assert isinstance(datastore, SQLiteDatastore), type(datastore)
    from ledger.projections.store_sqlite import SQLiteProjectionStore
    return SQLiteProjectionStore(datastore)
