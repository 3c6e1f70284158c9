"""From the notification log to what the views consume: the decoded event and its postings.

Decoding is the expensive step, so it happens once per notification for all views, and
only for the events some view needs: every participant's event (the participants view),
and any other event that can post, which is any event with a value date (a posting counts
as of its value date). Command receipts, rule versions and a payout batch's lines are
skipped without being decrypted or parsed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from eventsourcing.persistence import Mapper
from eventsourcing.utils import get_topic, resolve_topic

from ledger.aggregates.participant import Participant
from ledger.postings import Posting, postings_for
from ledger.projections.reader import Stored

PARTICIPANT_TOPIC_PREFIX = get_topic(Participant) + "."


class Item(NamedTuple):  # a tuple: the cheapest record to build, once an event
    notification_id: int
    event: Any
    postings: list[Posting]
    participant: bool  # a Participant's event (not the fund's or a payout batch's)


def decode(mapper: Mapper[Any], notifications: Sequence[Stored],
           partition: tuple[int, int] | None = None) -> list[Item]:
    """Items of the notifications; with partition (index, count) only of the aggregates
    in that partition (by id), so that each aggregate's events stay in order in one."""
    items: list[Item] = []
    for n in notifications:
        if partition is not None and n.originator_id.int % partition[1] != partition[0]:
            continue
        whose = _OWNERS.get(n.topic)
        if whose is None:
            whose = _OWNERS[n.topic] = owner(n.topic)
        if whose == OTHER:
            continue
        event = mapper.to_domain_event(n)  # type: ignore[arg-type]
        postings = postings_for(event) if whose != PARTICIPANT_NO_MONEY else []
        items.append(Item(n.id, event, postings, whose != MONEY))
    return items


# What a topic's events are to the views (decided once per topic).
PARTICIPANT_MONEY, PARTICIPANT_NO_MONEY, MONEY, OTHER = 1, 2, 3, 4
_OWNERS: dict[str, int] = {}


def owner(topic: str) -> int:
    moves_money = "value_date" in getattr(resolve_topic(topic), "model_fields", {})
    if topic.startswith(PARTICIPANT_TOPIC_PREFIX):
        return PARTICIPANT_MONEY if moves_money else PARTICIPANT_NO_MONEY
    return MONEY if moves_money else OTHER
