"""RuleSet: the county's effective-dated parameters, as events."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger.aggregates.base import Aggregate
from ledger.errors import Refused
from ledger.rules import Parameters, RuleVersion, in_force

MAX_RULE_VERSIONS = 10_000


class RuleSet(Aggregate):
    if TYPE_CHECKING:  # state set by the events' apply(); not constructor fields
        versions: list[RuleVersion]

    @staticmethod
    def id_for(name: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"pension-ledger:ruleset:{name}")

    class Opened(Aggregate.Created):
        name: str

        def apply(self, agg: Any) -> None:
            agg.name = self.name
            agg.versions = []

    class VersionPublished(Aggregate.Event):
        version: int
        effective_from: date
        parameters: Parameters
        note: str = ""

        def apply(self, agg: Any) -> None:
            agg.versions.append(RuleVersion(version=self.version,
                                            effective_from=self.effective_from,
                                            parameters=self.parameters, note=self.note))

    @classmethod
    def open(cls, name: str, actor: str) -> RuleSet:
        return cls._create(cls.Opened, id=cls.id_for(name), name=name, actor=actor)

    def publish(self, effective_from: date, parameters: Parameters, note: str, actor: str) -> int:
        if len(self.versions) >= MAX_RULE_VERSIONS:
            raise Refused("rules", f"at most {MAX_RULE_VERSIONS} versions")
        version = len(self.versions) + 1
        self.trigger_event(self.VersionPublished, version=version, effective_from=effective_from,
                           parameters=parameters, note=note, actor=actor)
        return version

    def in_force(self, on: date, field: str = "value_date") -> RuleVersion:
        v = in_force(self.versions, on)
        if v is None:
            raise Refused(field, f"no rule version is in force on {on.isoformat()}")
        return v
