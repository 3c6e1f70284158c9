"""Pydantic events on eventsourcing aggregates (the pattern of eventsourcing's aggregate8).

Events are frozen pydantic models; they are dumped with model_dump(mode="json") so Decimal,
date and UUID values become strings and never floats.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import (
    BaseAggregate,
    CanInitAggregate,
    CanMutateAggregate,
    datetime_now_with_tzinfo,
)
from pydantic import BaseModel, ConfigDict, Field


class Immutable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DomainEvent(Immutable):
    originator_id: UUID
    originator_version: int
    # The recorded time: when the ledger learned of the event. Money events carry their
    # own value_date as well (when it counts in the books).
    timestamp: datetime = Field(default_factory=datetime_now_with_tzinfo)
    actor: str = "system"


class Aggregate(BaseAggregate[UUID]):
    class Event(DomainEvent, CanMutateAggregate[UUID]):
        def apply(self, aggregate: Any) -> None:
            """Each event class says how it changes its aggregate."""

    class Created(Event, CanInitAggregate[UUID]):
        originator_topic: str
