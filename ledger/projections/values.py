"""Values as they come back from either database: SQLite gives text, PostgreSQL gives
dates and UUIDs; queries normalise with these."""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID


def as_date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def as_uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def as_bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)
