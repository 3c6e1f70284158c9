"""Rebuild a view from the event store into fresh tables; switch only once caught up.

Queries keep reading the active generation while the new one fills. The switch is one
transaction: under the view's registry lock, if the new generation's position has reached
the active one's, the registry and the readers' SQL views point to the new generation and
the old tables are dropped. The new generation's secondary indexes are built once it has
caught up, not kept up row by row while it fills. A rebuild that crashes is resumed by
the next rebuild (same generation, from its tracking position); one whose view version
is out of date is dropped and started again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ledger.errors import Refused
from ledger.projections.catalogue import make_view, make_views, resolve_names
from ledger.projections.connect import store_for
from ledger.projections.parallel import build_in_parallel
from ledger.projections.runner import ProjectionRunner
from ledger.projections.store import PARTITION_MARK, REGISTRY, ProjectionStore, tracking_name
from ledger.projections.view import View

if TYPE_CHECKING:
    from ledger.application import Ledger

MAX_SWITCH_ATTEMPTS = 100


def rebuild(ledger: Ledger, views: Iterable[str] | None = None, *,
            batch_size: int | None = None, workers: int = 1,
            progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Rebuild the named views (all by default) in one pass over the log; with workers
    > 1, that pass is shared among processes (parallel.py; of use on PostgreSQL only, as
    SQLite has one writer). One by default: on the 2-core test machine, shared with PostgreSQL,
    two workers were slower (bench/projections.py --workers)."""
    started = time.perf_counter()
    store = store_for(ledger)
    store.setup(make_views(ledger), ledger.name)
    names = resolve_names(views)
    generations = {name: claim(store, make_view(name, ledger), ledger.name) for name in names}
    if workers > 1:
        build_in_parallel(ledger, generations, workers, batch_size=batch_size,
                          progress=progress)
    events = 0
    switched: dict[str, int] = {}
    indexed: set[str] = set()
    for _attempt in range(MAX_SWITCH_ATTEMPTS):
        remaining = [n for n in names if n not in switched]
        runner = ProjectionRunner(ledger, remaining, batch_size=batch_size, building=True)
        events += runner.run_until_caught_up(progress=progress)
        for view in runner.views:
            if view.name not in indexed:
                # Once, after the bulk of the log: outside the switch's exclusive lock,
                # so the live runner keeps writing while the indexes are built.
                with store.transaction() as tx:
                    tx.create_indexes(view, generations[view.name])
                indexed.add(view.name)
        for view in runner.views:
            position = switch(store, view, generations[view.name], ledger.name)
            if position is not None:
                switched[view.name] = position
        if len(switched) == len(names):
            break
    else:
        raise Refused("view", f"the live runner kept ahead of the rebuild of "
                      f"{sorted(set(names) - set(switched))} for {MAX_SWITCH_ATTEMPTS} attempts")
    seconds = round(time.perf_counter() - started, 3)
    return [{"view": name, "generation": generations[name], "position": switched[name],
             "notifications": events, "seconds": seconds} for name in names]


def claim(store: ProjectionStore, view: View, app_name: str) -> int:
    """The generation to build: the one a crashed rebuild left, or a new one."""
    with store.transaction() as tx:
        reg = tx.lock([view.name], exclusive=True)[view.name]
        if (reg.building is not None and reg.building_version == view.version
                and not tx.positions_like(
                    tracking_name(app_name, view.name, reg.building) + PARTITION_MARK)):
            return reg.building
        if reg.building is not None:
            tx.drop_generation(view, reg.building, app_name)
        generation = max(reg.generation or 0, reg.building or 0) + 1
        tx.create_generation(view, generation, app_name, indexes=False)
        tx.execute(f"UPDATE {tx.q(REGISTRY)} SET building = ?, building_version = ? "
                   f"WHERE view = ?", (generation, view.version, view.name))
        return generation


def switch(store: ProjectionStore, view: View, generation: int, app_name: str) -> int | None:
    """Make the built generation active if it has caught up with the active one.
    Returns its position, or None when it must catch up further first."""
    with store.transaction() as tx:
        reg = tx.lock([view.name], exclusive=True)[view.name]
        if reg.building != generation:
            raise Refused("view", f"{view.name}: another rebuild took over generation "
                          f"{reg.building}")
        position = tx.position(tracking_name(app_name, view.name, generation))
        assert position is not None
        if reg.generation is not None:
            active = tx.position(tracking_name(app_name, view.name, reg.generation)) or 0
            if position < active:
                return None
        tx.execute(f"UPDATE {tx.q(REGISTRY)} SET generation = ?, version = ?, building = NULL, "
                   f"building_version = NULL WHERE view = ?",
                   (generation, view.version, view.name))
        tx.create_indexes(view, generation)  # there already, unless a crash came between
        tx.point_readers(view, generation)
        if reg.generation is not None:
            tx.drop_generation(view, reg.generation, app_name)
        return position
