"""Table specifications of the views, independent of the database.

A view's rows live in physical tables named `<table>_g<generation>`; readers query a
SQL view named `<table>` that points at the active generation, so a rebuild can fill
fresh tables and switch in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ColumnType = Literal["uuid", "text", "date", "int", "bytes"]
# How a written row merges with a row of the same key: "add" sums (movements),
# "set" replaces (the latest state of a participant). Append-only tables have no key:
# every write adds rows, and readers sum them.
Merge = Literal["key", "add", "set"]

MAX_GENERATION = 1_000_000


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    merge: Merge = "set"


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]
    # Secondary indexes, each a tuple of column names.
    indexes: tuple[tuple[str, ...], ...] = ()
    # Rows are only ever inserted, never merged: the cheapest write there is, a COPY.
    # With a key, inserting a row twice is an error (the runner rolls the batch back).
    append: bool = False

    def __post_init__(self) -> None:
        assert self.name.isidentifier() and self.name.startswith("proj_"), self.name
        has_key = any(c.merge == "key" for c in self.columns)
        assert has_key or self.append, f"{self.name}: merged rows need a key"
        if self.append:
            assert all(c.merge != "add" for c in self.columns), self.name
        names = [c.name for c in self.columns]
        assert len(set(names)) == len(names), f"duplicate column in {self.name}"
        for index in self.indexes:
            assert set(index) <= set(names), (self.name, index)

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.merge == "key")

    def physical(self, generation: int) -> str:
        assert 0 < generation <= MAX_GENERATION
        return f"{self.name}_g{generation}"


def key(name: str, type_: ColumnType) -> Column:
    return Column(name, type_, "key")


def add(name: str) -> Column:
    return Column(name, "int", "add")


def col(name: str, type_: ColumnType) -> Column:
    return Column(name, type_, "set")
