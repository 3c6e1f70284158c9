"""From the notification log to what the views consume: each event's fields and postings.

The views trust what is stored: an event was validated when it was written, and the log
is append-only (the hash chain proves it), so here a stored state is only decrypted,
decompressed and JSON-decoded into a plain dict; no pydantic model, no aggregate event,
no date parsing (value dates stay ISO strings, which compare and group as dates do).
Fields a class declares with a default may be missing from states stored before the field
was added: views read those with .get().

Only the topics some view asked for are decoded (View.topics); the rest (command receipts,
rule versions, a payout batch's lines) are passed over without being decrypted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from eventsourcing.persistence import Mapper

from ledger.postings import PARTICIPANT, RULES, Entry

# A stored event as the reader returns it: (notification_id, originator_id as its 16
# bytes, originator_version, topic, state bytes). Ids stay bytes all the way to the views'
# rows (the stores write them into uuid columns as they are): building a UUID object
# costs a Python call, and reading one from PostgreSQL cost 2 us a row of the 5 us of
# reading it (measured on the 1M-event bench store).
StoredRow = tuple[int, bytes, int, str, bytes]
NO_POSTINGS: tuple[Entry, ...] = ()


# One decoded event, a plain tuple (the cheapest record to build, once an event):
# (notification_id, originator_id, originator_version, topic,
#  fields: the stored state as JSON decoded it,
#  postings: ledger.postings Entries (account, amount_fen, participant_id or None),
#  participant: a Participant's event, not the fund's or a payout batch's).
Item = tuple[int, bytes, int, str, dict[str, Any], Sequence[Entry], bool]


def partition_of(originator_id: bytes, count: int) -> int:
    """The partition of an aggregate among count (by its id: UUID.int modulo count)."""
    return int.from_bytes(originator_id, "big") % count


def kind_of(topic: str) -> str:
    """The event class's own name, e.g. "ContributionReceived"."""
    return topic.rpartition(".")[2]


class Decoder:
    """Items of the notifications whose topics are in `topics`, for views that trust the
    store. mapper gives the store's cipher and compressor (both optional)."""

    def __init__(self, mapper: Mapper[Any], topics: Iterable[str]) -> None:
        self.cipher = mapper.cipher
        self.compressor = mapper.compressor
        self.topics = frozenset(topics)
        self.participant = frozenset(t for t in self.topics if t.startswith(PARTICIPANT))

    def decode(self, rows: Sequence[StoredRow],
               partition: tuple[int, int] | None = None) -> list[Item]:
        """With partition (index, count), only the aggregates in that partition (by id), so
        each aggregate's events stay in order in one."""
        topics, participant, rules = self.topics, self.participant, RULES
        cipher, compressor = self.cipher, self.compressor
        loads = orjson.loads
        items: list[Item] = []
        append = items.append
        for nid, oid, version, topic, state in rows:
            if topic not in topics:
                continue
            if partition is not None and partition_of(oid, partition[1]) != partition[0]:
                continue
            if cipher is not None:
                state = cipher.decrypt(state)
            if compressor is not None:
                state = compressor.decompress(state)
            fields = loads(state)
            rule = rules.get(topic)
            if rule is None:
                postings: Sequence[Entry] = NO_POSTINGS
            else:
                # entries_of() without its per-event sum: the balances view asserts that
                # each batch's postings net to zero, which they do only if every event's do.
                postings = [p for p in rule(fields, oid) if p[1]]
            append((nid, oid, version, topic, fields, postings, topic in participant))
        return items
