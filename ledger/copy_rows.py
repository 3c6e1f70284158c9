"""Rows made ready for PostgreSQL's binary COPY away from the connection that sends them.

Funding a province's month in two processes (ledger.disbursement) writes everything through
one transaction in this process. The child's half of the rows used to come back as Python
values, to be made into objects here and formatted here by psycopg: a fifth of this
process's time, while the child sat idle. The child now formats its rows itself, in the
format `COPY ... FROM STDIN (FORMAT BINARY)` reads, and this process sends the bytes as
they are (`BulkTransaction.add_copied`).

The format (PostgreSQL's documentation, "COPY", Binary Format): after the file header, each
row is a 16-bit count of fields, then each field as a 32-bit length and its bytes in the
type's binary form; the file ends with a 16-bit -1. Only the types the bulk write's tables
use are made here: uuid, int8, text and bytea.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)  # no flags, no extension
TRAILER = struct.pack("!h", -1)
MAX_FIELDS = 16

_UUID_LEN = struct.pack("!i", 16)
_INT8 = struct.Struct("!iq")
_LEN = struct.Struct("!i")


def _uuid(value: UUID) -> bytes:
    return _UUID_LEN + value.bytes


def _int8(value: int) -> bytes:
    return _INT8.pack(8, value)


def _text(value: str) -> bytes:
    data = value.encode()
    return _LEN.pack(len(data)) + data


def _bytea(value: bytes) -> bytes:
    return _LEN.pack(len(value)) + value


FIELD: dict[str, Callable[[Any], bytes]] = {
    "uuid": _uuid, "int8": _int8, "text": _text, "bytea": _bytea}


@dataclass(frozen=True)
class CopyData:
    """`count` rows in the binary COPY format, without the header and trailer; for rows
    keyed by participant id, the least and greatest of them (an UPDATE from these rows
    reads only that range of the register)."""

    data: bytes
    count: int
    least_id: UUID | None = None
    greatest_id: UUID | None = None

    def whole(self) -> bytes:
        """What a COPY FROM STDIN (FORMAT BINARY) is sent."""
        return SIGNATURE + self.data + TRAILER


def copy_rows(types: Sequence[str], rows: Iterable[Sequence[Any]], *,
              keyed: bool = False) -> CopyData:
    """The rows in the binary COPY format, each field by its type (FIELD); keyed: the first
    field is a participant id, and the least and greatest are kept."""
    assert 0 < len(types) <= MAX_FIELDS and all(t in FIELD for t in types), types
    makers = [FIELD[t] for t in types]
    head = struct.pack("!h", len(types))
    parts: list[bytes] = []
    append = parts.append
    count = 0
    least: UUID | None = None
    greatest: UUID | None = None
    for row in rows:
        assert len(row) == len(makers), row
        append(head)
        for make, value in zip(makers, row, strict=True):
            append(make(value))
        count += 1
        if keyed:
            key = row[0]
            if least is None or key < least:
                least = key
            if greatest is None or key > greatest:
                greatest = key
    return CopyData(b"".join(parts), count, least, greatest)
