"""Pydantic events on eventsourcing aggregates (the pattern of eventsourcing's aggregate8).

Events are frozen pydantic models; they are dumped with model_dump(mode="json") so Decimal,
date and UUID values become strings and never floats.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, Self
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

    @classmethod
    def trusted(cls, values: dict[str, Any]) -> Self:
        """The model of `values` that this code computed, or read back from what it stored,
        without pydantic's validation: the payout run makes a million lines a month, and
        validating each cost more than computing it. `values` holds every field, in the
        order the model declares them (its JSON is dumped from them), of the declared types:
        the caller answers for that. Equal to cls(**values)."""
        assert tuple(values) == _field_names(cls), (tuple(values), cls.__name__)
        model = cls.__new__(cls)
        # What pydantic's own model_construct sets (it takes several times as long). One
        # set of field names shared by every such model, not one each (2 KB apiece at a
        # million lines): the models are frozen, and model_copy copies it before adding.
        object.__setattr__(model, "__dict__", values)
        object.__setattr__(model, "__pydantic_fields_set__", _field_set(cls))
        object.__setattr__(model, "__pydantic_extra__", None)
        object.__setattr__(model, "__pydantic_private__", None)
        return model


@functools.cache
def _field_names(cls: type[BaseModel]) -> tuple[str, ...]:
    return tuple(cls.model_fields)


@functools.cache
def _field_set(cls: type[BaseModel]) -> set[str]:
    return set(cls.model_fields)


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
