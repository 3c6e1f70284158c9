"""CommandReceipt: the record that a command with an idempotency key was carried out.

Saved in the same transaction as the command's own events, so a retry either finds the
receipt (and returns the first result) or finds nothing was stored at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger.aggregates.base import Aggregate

MAX_KEY_LEN = 200


class CommandReceipt(Aggregate):
    if TYPE_CHECKING:  # state set by the events' apply(); not constructor fields
        key: str
        payload_sha256: str
        result: dict[str, Any]

    @staticmethod
    def id_for(key: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"pension-ledger:command:{key}")

    class Recorded(Aggregate.Created):
        key: str
        command: str
        payload_sha256: str
        result: dict[str, Any]

        def apply(self, r: Any) -> None:
            r.key = self.key
            r.command = self.command
            r.payload_sha256 = self.payload_sha256
            r.result = self.result

    @classmethod
    def record(cls, key: str, command: str, payload_sha256: str, result: dict[str, Any],
               actor: str) -> CommandReceipt:
        assert 0 < len(key) <= MAX_KEY_LEN
        return cls._create(cls.Recorded, id=cls.id_for(key), key=key, command=command,
                           payload_sha256=payload_sha256, result=result, actor=actor)
