"""What a view is: tables, the topics it reads, and a function from decoded events (their
stored fields, items.py) to rows to write.

A view never opens a transaction itself; the runner gives it the events of one batch
inside the transaction that also records the view's tracking position, so the rows and
the position are committed together or not at all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

from ledger.projections.items import Item
from ledger.projections.tables import TableSpec

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Write:
    table: str  # a TableSpec name of the view
    rows: list[Row]
    # The rows' keys are new to the table: they can be inserted (a COPY), not merged.
    fresh: bool = False


class View(ABC):
    name: ClassVar[str]
    # Bump when the tables or the meaning of the rows change: a stored generation of an
    # older version must be rebuilt before the runner writes to it again.
    version: ClassVar[int]
    tables: ClassVar[tuple[TableSpec, ...]]

    def table(self, name: str) -> TableSpec:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(name)

    @abstractmethod
    def topics(self) -> frozenset[str]:
        """The event topics this view reads; the runner decodes no others."""

    def missing(self, items: Sequence[Item]) -> dict[str, set[UUID]]:
        """Rows (table -> keys of its first key column) the view must load before apply."""
        return {}

    def load(self, table: str, rows: Sequence[Row]) -> None:
        """Receive the rows asked for by missing()."""
        raise AssertionError(f"{self.name} asked for no rows, got {table}")

    @abstractmethod
    def apply(self, items: Sequence[Item]) -> list[Write]:
        """The rows to merge for these events, in notification order."""

    def forget(self) -> None:
        """Drop anything cached: after a failed transaction the cache may hold rows that
        were never committed."""
        return None

    def after_commit(self) -> None:
        """Called after the batch committed; a chance to bound the cache."""
        return None
