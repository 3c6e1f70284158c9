"""Python's cyclic garbage collector, paused while a big job makes millions of objects.

Projecting, a bulk import and a month's payout make no reference cycles (rows are tuples,
dicts and strings, freed by reference counting; a 100,000-event rebuild with the collector
off left 0 unreachable objects), yet with the collector on, every few thousand allocations
start a collection and the older generations' collections walk every decoded event of the
batch and every object kept. Measured on the 100,000-event bench store: decoding cost
8.7 us an event with relaxed thresholds (10,000, 10, 100), 5.9 us paused. The collector
runs again as soon as the job returns (a follower returns each time it catches up).

What the job made and still holds is moved to the oldest generation as the collector
resumes (gc.freeze then gc.unfreeze: two list splices). Left in the youngest, every one of
them would be walked by the first collection after: 2.6 s for a month's batch of a million
lines, just returned by the run.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# The collector is global to the process: the first runner in pauses it, the last one
# out resumes it (if it was running before), however runners on several threads overlap.
_lock = threading.Lock()
_inside = 0
_was_enabled = gc.isenabled()


@contextmanager
def collector_paused() -> Iterator[None]:
    global _inside, _was_enabled
    with _lock:
        if _inside == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0 and _was_enabled:
                gc.freeze()
                gc.unfreeze()
                gc.enable()
