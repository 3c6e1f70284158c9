"""What finance staff, auditors and the payout engine ask the views.

Every answer says the notification position its view had reached ("position"), so a
reader can tell how fresh it is; `ProjectionRunner(ledger).run_until_caught_up()` first
makes it current.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any
from uuid import UUID

from ledger import resident_id
from ledger.aggregates.participant import participant_id
from ledger.projections import read_balances, read_people
from ledger.projections.catalogue import VIEW_NAMES, make_views
from ledger.projections.connect import store_for
from ledger.projections.feeds import kafka_marker, kafka_position
from ledger.projections.read_balances import By
from ledger.projections.store import Tx, tracking_name

if TYPE_CHECKING:
    from ledger.application import Ledger


class Views:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.store = store_for(ledger)
        self.store.setup(make_views(ledger), ledger.name)
        self._cipher = ledger.mapper.cipher

    def _position(self, tx: Tx, view: str) -> int:
        """The runner's position; for a view fed by Kafka consumers, the highest
        notification id they applied (feeds.kafka_position)."""
        reg = tx.registrations()[view]
        assert reg.generation is not None
        name = tracking_name(self.ledger.name, view, reg.generation)
        position = tx.position(name)
        if position is None:
            position = kafka_position(tx, name)
        return position or 0

    # ---- money ------------------------------------------------------------------------

    def balances(self, as_of: date | None = None, by: By = None) -> dict[str, Any]:
        """Every posting account's balance (2001.<source> summed over participants)."""
        with self.store.reading() as tx:
            return {**read_balances.balances(tx, as_of, by),
                    "position": self._position(tx, "balances")}

    def fund_balances(self, as_of: date | None = None, by: By = None) -> dict[str, Any]:
        """Income, fiscal special and expenditure accounts, in flight, receivables."""
        with self.store.reading() as tx:
            return {**read_balances.fund_balances(tx, as_of, by),
                    "position": self._position(tx, "balances")}

    def trial_balance(self, as_of: date | None = None) -> dict[str, Any]:
        with self.store.reading() as tx:
            return {**read_balances.trial_balance(tx, as_of),
                    "position": self._position(tx, "balances")}

    # ---- people -----------------------------------------------------------------------

    def statement(self, participant: str | UUID, as_of: date | None = None, *,
                  unmasked: bool = False) -> dict[str, Any]:
        """By resident ID number or participant id; equal to ledger.statement(...)."""
        if isinstance(participant, UUID):
            pid, masked = participant, str(participant)
        else:
            canonical = resident_id.normalise(participant)
            pid, masked = participant_id(canonical), resident_id.mask(canonical)
        with self.store.reading() as tx:
            return read_people.statement(tx, self._cipher, pid, masked, as_of,
                                         unmasked=unmasked)

    def county_report(self, year: int, as_of: date | None = None) -> dict[str, Any]:
        with self.store.reading() as tx:
            return {**read_people.county_report(tx, year, as_of),
                    "position": self._position(tx, "participants")}

    def roster(self, status: str | None = None) -> list[dict[str, Any]]:
        with self.store.reading() as tx:
            return read_people.roster(tx, status)

    # ---- the views themselves ---------------------------------------------------------

    def positions(self) -> dict[str, dict[str, Any]]:
        """Per view: active generation, its position, how far behind the log it is, the
        generation being rebuilt, if any, and its feed: "log" (the projection runner) or
        "kafka" (projection consumers; position and behind are then those of the partition
        furthest ahead)."""
        head = self.ledger.recorder.max_notification_id() or 0
        out: dict[str, dict[str, Any]] = {}
        with self.store.reading() as tx:
            registrations = tx.registrations()
            for view in VIEW_NAMES:
                reg = registrations[view]
                position = self._position(tx, view)
                assert reg.generation is not None
                kafka = tx.position(kafka_marker(tracking_name(
                    self.ledger.name, view, reg.generation))) is not None
                out[view] = {"generation": reg.generation, "position": position,
                             "behind": max(head - position, 0), "building": reg.building,
                             "feed": "kafka" if kafka else "log"}
        return out
