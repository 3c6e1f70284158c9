"""The parallel phase of a rebuild: the log up to its head when the phase starts, split by
aggregate id among `workers` processes.

Decoding is most of a rebuild's cost and Python decodes on one core per process, so the
work is shared out the way the distributed deployment shares it among consumers: by
aggregate, so each participant's events stay in order in one partition. Each partition
tracks its own position (its own tracking row, written in the same transaction as its
rows), so a partition is exactly-once like any runner. When every partition has reached
the head, one transaction replaces their positions by the generation's single position,
from which the ordinary runner catches up and the rebuild switches. A crash in this phase
leaves partition rows behind; the next rebuild then starts the generation afresh.

Views must be indifferent to the order of different aggregates' events for this to hold:
balances and statements are sums, participants are rows per participant.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ledger.projections.connect import store_for
from ledger.projections.runner import Partition, ProjectionRunner
from ledger.projections.store import tracking_name

if TYPE_CHECKING:
    from ledger.application import Ledger

MAX_WORKERS = 16


def build_in_parallel(ledger: Ledger, generations: dict[str, int], workers: int, *,
                      batch_size: int | None = None,
                      progress: Callable[[int], None] | None = None) -> int:
    """Fill the building generations up to the current head with `workers` processes;
    returns the position they were left at."""
    assert 1 < workers <= MAX_WORKERS
    store = store_for(ledger)
    app = ledger.name
    names = sorted(generations)
    head = ledger.recorder.max_notification_id() or 0
    with store.transaction() as tx:
        tx.lock(names, exclusive=True)
        starts = {n: tx.position(tracking_name(app, n, generations[n])) or 0 for n in names}
        for n in names:
            for k in range(workers):
                name = tracking_name(app, n, generations[n], (k, workers))
                if tx.position(name) is None:
                    tx.track(name, starts[n])
    if min(starts.values()) < head:
        _run_partitions(ledger, names, workers, head, batch_size, progress)
    with store.transaction() as tx:
        tx.lock(names, exclusive=True)
        for n in names:
            main = tracking_name(app, n, generations[n])
            for k in range(workers):
                name = tracking_name(app, n, generations[n], (k, workers))
                position = tx.position(name)
                assert position == max(head, starts[n]), (name, position, head)
                tx.untrack(name)
            if starts[n] < head:
                tx.track(main, head)
    return head


def _run_partitions(ledger: Ledger, names: Sequence[str], workers: int, head: int,
                    batch_size: int | None, progress: Callable[[int], None] | None) -> None:
    # Spawned, not forked: a fork would share the parent's pool connections and threads.
    context = multiprocessing.get_context("spawn")
    key = ledger.env.get("CIPHER_KEY") or ""
    children = [context.Process(target=run_partition, name=f"rebuild-partition-{k}",
                                args=(ledger.url, key, list(names), k, workers, head,
                                      batch_size))
                for k in range(1, workers)]
    for child in children:
        child.start()
    try:
        ProjectionRunner(ledger, names, batch_size=batch_size, building=True,
                         partition=Partition(0, workers, head)
                         ).run_until_caught_up(progress=progress)
    finally:
        for child in children:
            child.join()
    failed = [child.name for child in children if child.exitcode != 0]
    if failed:
        raise RuntimeError(f"rebuild: {', '.join(failed)} failed; run the rebuild again "
                           "(it starts the generation afresh)")


def run_partition(url: str, cipher_key: str, names: list[str], index: int, count: int,
                  stop: int, batch_size: int | None) -> None:
    """A child process: one partition of the building generations."""
    from ledger.application import Ledger

    class ExistingStore(Ledger):
        # The parent created every table. Children creating them again at once collide
        # in PostgreSQL's catalog (the recorder's CREATE OR REPLACE FUNCTION fails with
        # "tuple concurrently updated").
        env = {**Ledger.env, "CREATE_TABLE": "no"}
        name = Ledger.name  # the same event store, tables and tracking names

    ledger = ExistingStore(url, cipher_key=cipher_key)
    try:
        ProjectionRunner(ledger, names, batch_size=batch_size, building=True,
                         partition=Partition(index, count, stop)).run_until_caught_up()
    finally:
        ledger.close()
