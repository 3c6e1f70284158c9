"""Which feed writes a view generation: the projection runner following the notification log
(runner.py), or projection consumers reading the relay's Kafka topics (consumers/consume.py).

Never both: each has its own idea of what it has applied (one log position; a position per
Kafka partition), so two feeds would count events twice. The feed is recorded in the
tracking table, in the rows each feed already locks and reads in its write transactions:

- `<generation>`: the runner's position. A generation fed by Kafka has no such row.
- `<generation>:kafka`: present once consumers feed the generation; its value is the log
  position they took it over at (0 for a generation nobody had fed), the floor of every
  partition's position.
- `<generation>:kafka:n:<topic>:<partition>`: the highest notification id applied from the
  partition; `...:o:<topic>:<partition>`: the Kafka offset to read the partition from.

Consumers claim a generation in one transaction under the registry's exclusive lock: they
delete the runner's row and write the marker. A runner that read its targets before then
finds its row gone when it next writes (the position it checks under lock has moved), rolls
back and resolves its targets again: it then skips the view (following all views) or is
refused (asked for it by name). Consumers refuse a generation the runner has fed (position
above 0) unless told to take it over: they then drop every message up to its position.
"""

from __future__ import annotations

from ledger.errors import Refused
from ledger.projections.store import Tx

KAFKA_MARK = ":kafka"
MAX_KAFKA_ROWS = 100_000  # partitions x views x 2: far more than any deployment has


def kafka_marker(generation_tracking: str) -> str:
    return generation_tracking + KAFKA_MARK


def kafka_partition(generation_tracking: str, topic: str, partition: int) -> str:
    """The tracking row of the highest notification id applied from a partition."""
    assert topic and ":" not in topic and partition >= 0, (topic, partition)
    return f"{generation_tracking}{KAFKA_MARK}:n:{topic}:{partition}"


def kafka_offset(generation_tracking: str, topic: str, partition: int) -> str:
    """The tracking row of the next Kafka offset to read from a partition."""
    assert topic and ":" not in topic and partition >= 0, (topic, partition)
    return f"{generation_tracking}{KAFKA_MARK}:o:{topic}:{partition}"


def kafka_position(tx: Tx, generation_tracking: str) -> int | None:
    """For a generation fed by Kafka, the highest notification id applied from any partition
    (partitions may lag one another, so events below it may still be on their way); None
    for a generation the runner feeds."""
    rows = tx.positions_like(kafka_marker(generation_tracking))
    assert len(rows) <= MAX_KAFKA_ROWS
    floor = rows.get(kafka_marker(generation_tracking))
    if floor is None:
        return None
    applied = f"{generation_tracking}{KAFKA_MARK}:n:"
    return max([floor, *(v for k, v in rows.items() if k.startswith(applied))])


class FedByKafka(Refused):
    """The runner was asked for a view generation that projection consumers feed."""

    def __init__(self, view: str, generation: int) -> None:
        super().__init__("view", f"{view} generation {generation} is fed by Kafka consumers "
                         f"(`pension-ledger consume`), not by the projection runner "
                         f"(`project run`): both would count its events twice. To feed it "
                         f"from the log again, stop the consumers and run `pension-ledger "
                         f"project rebuild --view {view}`")


class FedByLog(Refused):
    """Consumers were pointed at a view generation the projection runner feeds."""

    def __init__(self, view: str, generation: int, position: int) -> None:
        super().__init__("view", f"{view} generation {generation} is fed by the projection "
                         f"runner (`pension-ledger project run`, position {position}), not by "
                         f"Kafka consumers: both would count its events twice. To hand it to "
                         f"the consumers from position {position}, run `pension-ledger consume "
                         f"--take-over` (the runner then leaves it alone)")
