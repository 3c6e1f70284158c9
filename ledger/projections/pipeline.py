"""Two stages on two threads: the caller's thread produces batches (reads and decodes the
next page) while a worker thread consumes the previous one (its write transaction).

The database does its part of a write (the upserts, the commit) without holding Python's
lock, so reading and decoding the next batch meanwhile hides most of the writing. Batches
are consumed one at a time in order, and the first error on either side stops both and
is raised in the caller's thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from queue import Full, Queue
from threading import Thread
from typing import TypeVar

T = TypeVar("T")
# Batches decoded ahead of the writer: enough to keep it busy, little to throw away when
# a conflict makes the runner start again, and little memory (a rebuild's batch is
# 50,000 decoded events; with two queued a 1M-event rebuild peaked at 1.3 GB).
DEPTH = 1
PUT_TIMEOUT_S = 0.1
_END = object()


def run_pipelined(produce: Iterator[T], consume: Callable[[T], None]) -> None:
    handoff: Queue[object] = Queue(maxsize=DEPTH)
    failures: list[BaseException] = []

    def work() -> None:
        try:
            while True:
                batch = handoff.get()
                if batch is _END:
                    return
                consume(batch)  # type: ignore[arg-type]
        except BaseException as e:  # handed to the caller's thread below
            failures.append(e)

    worker = Thread(target=work, name="projection-writer", daemon=True)
    worker.start()
    try:
        for batch in produce:
            if not _put(handoff, batch, worker, failures):
                break
    finally:
        _put(handoff, _END, worker, failures)
        worker.join()
    if failures:
        raise failures[0]


def _put(handoff: Queue[object], item: object, worker: Thread,
         failures: list[BaseException]) -> bool:
    """Hand over unless the worker has stopped; never blocks on a dead worker."""
    while worker.is_alive() and not failures:
        try:
            handoff.put(item, timeout=PUT_TIMEOUT_S)
            return True
        except Full:
            continue
    return False
