"""JSON bytes of exactly their own size.

orjson.dumps writes into a bytes object of at least 4 KiB and does not shrink it: a 400-byte
event state kept in memory holds 4 KiB (8 KiB once an object has a few nested ones). Kept by
the million (a province's funding holds every PensionPaid it writes; a rebuild, a batch of
view rows), that was most of the payout run's memory: 1,000,000 payments held 4-8 GB.
A copy of the right size costs less than the pages the large ones touch."""

from __future__ import annotations

from typing import Any

import orjson


def dumps(obj: Any) -> bytes:
    """orjson.dumps(obj), in a bytes object of its own length."""
    return memoryview(orjson.dumps(obj)).tobytes()
