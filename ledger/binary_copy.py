"""Rows for PostgreSQL's binary COPY, packed a chunk at a time.

psycopg's `copy.write_row` formats a row in C, but its Python layers cost about 3 µs a
row. Funding a province's month sends four million rows (the payments' events, the
participant register's versions, the pensioner register's facts, the paid months) from the
thread holding its transaction, which competes for the interpreter with the thread making
the next chunk: about 12 s of it at a million pensioners. Here a row is one struct call
and its values' bytes, joined once for the chunk.

Each function returns the rows of a COPY ... FROM STDIN (FORMAT BINARY) of the columns
named, without the stream's signature and trailer (`stream` adds them); every value is
NOT NULL. tests/test_binary_copy.py writes each by COPY and reads it back.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any
from uuid import UUID

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
UUID_BYTES = 16
INT8_BYTES = 8

# A row: its field count (int16), then each field's length (int32) and bytes.
_ID_INT8_INT8 = struct.Struct("!hi16siqiq")
_ID_TEXT = struct.Struct("!hi16si")
_LENGTH = struct.Struct("!i")
_EVENT_HEAD = struct.Struct("!hi16siqi")  # id, version, the topic's length
_EVENT_ID = struct.Struct("!iq")          # the notification id, last


def stream(rows: bytes) -> bytes:
    """A whole COPY stream of rows packed here."""
    return SIGNATURE + rows + TRAILER


def ids_versions(rows: Sequence[tuple[UUID, int, int]]) -> bytes:
    """(uuid, int8, int8): the participant register's versions (id, from, to)."""
    pack = _ID_INT8_INT8.pack
    return b"".join([pack(3, UUID_BYTES, pid.bytes, INT8_BYTES, a, INT8_BYTES, b)
                     for pid, a, b in rows])


def ids_texts(rows: Sequence[tuple[UUID, str]]) -> bytes:
    """(uuid, text): the pensioner register's facts."""
    pack = _ID_TEXT.pack
    parts: list[bytes] = []
    for pid, text in rows:
        data = text.encode()
        parts += (pack(2, UUID_BYTES, pid.bytes, len(data)), data)
    return b"".join(parts)


def ids_two_texts(rows: Sequence[tuple[UUID, str, str]]) -> bytes:
    """(uuid, text, text): the paid months (id, month, end-to-end id)."""
    pack, length = _ID_TEXT.pack, _LENGTH.pack
    parts: list[bytes] = []
    for pid, first, second in rows:
        a, b = first.encode(), second.encode()
        parts += (pack(3, UUID_BYTES, pid.bytes, len(a)), a, length(len(b)), b)
    return b"".join(parts)


def events(rows: Sequence[Any], first_id: int) -> bytes:
    """(uuid, int8, text, bytea, int8): stored events (originator_id, originator_version,
    topic, state) with their notification ids, first_id on, one after another."""
    head, length, tail = _EVENT_HEAD.pack, _LENGTH.pack, _EVENT_ID.pack
    topics: dict[str, bytes] = {}
    parts: list[bytes] = []
    nid = first_id
    for s in rows:
        topic = topics.get(s.topic)
        if topic is None:
            topic = topics[s.topic] = s.topic.encode()
        state = s.state
        parts += (head(5, UUID_BYTES, s.originator_id.bytes, INT8_BYTES, s.originator_version,
                       len(topic)), topic, length(len(state)), state,
                  tail(INT8_BYTES, nid))
        nid += 1
    return b"".join(parts)
