"""The projections' trusting decoder: stored states read as plain dicts give the same
postings as the domain events the write side posts (one set of rules, two forms of an
event), on every store, encrypted and plain; and a rebuilt generation gets its indexes."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import orjson
from eventsourcing.utils import get_topic, resolve_topic
from hypothesis import given
from hypothesis import strategies as st

from ledger.aggregates.fund import Fund
from ledger.aggregates.participant import SOURCES
from ledger.aggregates.participant import Participant as P
from ledger.aggregates.payout_batch import Outcome
from ledger.aggregates.payout_batch import PayoutBatch as B
from ledger.application import Ledger
from ledger.postings import RULES, entries_of, postings_for
from ledger.projections import ProjectionRunner, rebuild
from ledger.projections.catalogue import make_views
from ledger.projections.connect import store_for
from ledger.projections.items import Decoder
from ledger.projections.reader import reader_for
from ledger.store import OrjsonTranscoder, PydanticMapper
from tests.test_projections_support import scenario

NOW = datetime(2025, 1, 20, 8, 0, tzinfo=UTC)


def test_every_rule_names_a_money_event_class() -> None:
    for topic in RULES:
        cls = resolve_topic(topic)  # a typo in a topic would never match a stored event
        assert get_topic(cls) == topic
        assert "value_date" in cls.model_fields, topic  # postings count as of it


def as_stored(event: Any) -> dict[str, Any]:
    """The fields of an event as the store keeps them (ledger.store.PydanticMapper)."""
    stored = PydanticMapper(transcoder=OrjsonTranscoder()).to_stored_event(event)
    decoded: dict[str, Any] = orjson.loads(stored.state)
    return decoded


amounts = st.integers(0, 10_000_000)
by_source = st.dictionaries(st.sampled_from(SOURCES), amounts, max_size=len(SOURCES))
days = st.dates(date(2010, 1, 1), date(2030, 12, 31))
accounts = st.sampled_from(["income", "fiscal", "expenditure"])


def head(version: int = 2) -> dict[str, Any]:
    return {"originator_id": uuid4(), "originator_version": version, "timestamp": NOW,
            "actor": "test"}


money_events = st.one_of(
    st.builds(lambda a, d, y: P.ContributionReceived(
        **head(), value_date=d, year=y, tier_fen=a, amount_fen=a, channel="bank",
        receipt_no="R1", rule_version="v1"), amounts, days, st.integers(2010, 2030)),
    st.builds(lambda a, d, lv: P.SubsidyCredited(
        **head(), value_date=d, year=2020, level=lv, amount_fen=a, rule_version="v1"),
        amounts, days, st.sampled_from(["province", "city", "county"])),
    st.builds(lambda a, d: P.PaidOnBehalf(
        **head(), value_date=d, year=2020, amount_fen=a, identity_group="destitute",
        rule_version="v1"), amounts, days),
    st.builds(lambda a, d: P.InterestCredited(
        **head(), value_date=d, year=2020, rate=Decimal("0.0175"), amount_fen=a,
        rule_version="v1"),
        amounts, days),
    st.builds(lambda how, paid, lost, d: P.BalanceSettled(
        **head(), value_date=d, how=how, by_source_fen=paid, forfeited_by_source_fen=lost,
        payee="heir"), st.sampled_from(["refund", "inheritance"]), by_source, by_source, days),
    st.builds(lambda ch, srcs, d: P.OverpaymentRecovered(
        **head(), value_date=d, amount_fen=sum(srcs.values()), channel=ch,
        by_source_fen=srcs if ch == "offset_account" else {}),
        st.sampled_from(["offset_account", "family"]), by_source, days),
    st.builds(lambda srcs, basic, pooled, ded, d: P.PensionPaid(
        **head(), value_date=d, batch_id=uuid4(), end_to_end_id="E1", months=["2020-01"],
        basic_fen=basic, account_by_source_fen=srcs, pooled_account_fen=pooled,
        deduction_fen=ded, amount_fen=basic + sum(srcs.values()) + pooled - ded,
        rule_version="v1"), by_source, amounts, amounts, amounts, days),
    st.builds(lambda outs, d, kind: kind(
        **head(), value_date=d, source_file_sha256="0" * 64,
        items=[Outcome(end_to_end_id=f"E{i}", amount_fen=a) for i, a in enumerate(outs)]),
        st.lists(amounts, max_size=5), days,
        st.sampled_from([B.PaymentsSettled, B.PaymentsFailed, B.PaymentsReturned])),
    st.builds(lambda a, d: B.Funded(**head(), total_fen=a, value_date=d, reference="F1"),
              amounts, days),
    st.builds(lambda a, d, purpose, level: Fund.TreasuryFundsReceived(
        **head(), amount_fen=a, value_date=d, reference="T1", level=level, purpose=purpose),
        amounts, days, st.sampled_from(["basic_pension", "on_behalf", "contribution_subsidy"]),
        st.sampled_from(["central", "province", "county"])),
    st.builds(lambda a, d, frm, to: Fund.Transferred(
        **head(), amount_fen=a, value_date=d, reference="S1", from_account=frm, to_account=to,
        kind="sweep"), amounts, days, accounts, accounts),
    st.builds(lambda a, d, acc: Fund.BankInterestEarned(
        **head(), amount_fen=a, value_date=d, reference="I1", account=acc),
        amounts, days, accounts),
)


@given(event=money_events)
def test_a_stored_state_posts_what_its_event_posts(event: Any) -> None:
    expected = postings_for(event)
    got = entries_of(get_topic(type(event)), as_stored(event), event.originator_id)
    assert got == expected
    assert all(amount for _, amount, _ in got)  # zero postings are left out
    assert sum(amount for _, amount, _ in got) == 0


def stored_rows(ledger: Ledger) -> list[tuple[int, bytes, int, str, bytes]]:
    head_id = ledger.recorder.max_notification_id() or 0
    rows = list(reader_for(ledger)(0, head_id))
    assert [r[0] for r in rows] == sorted(r[0] for r in rows) and len(rows) > 30
    return rows


def test_the_decoder_posts_what_the_events_post_on_every_store(ledger: Ledger) -> None:
    scenario(ledger)
    rows = stored_rows(ledger)
    topics = set().union(*(v.topics() for v in make_views(ledger)))
    items = {item[0]: item for item in Decoder(ledger.mapper, topics).decode(rows)}
    skipped = 0
    for nid, oid, version, topic, _state in rows:
        event: Any = ledger.mapper.to_domain_event(
            ledger.recorder.select_notifications(nid, 1)[0])
        if topic not in topics:
            assert nid not in items  # not decrypted, not decoded
            assert postings_for(event) == []
            skipped += 1
            continue
        item_id, item_oid, item_version, item_topic, fields, postings, participant = items[nid]
        assert (item_oid, item_version, item_topic) == (oid, version, topic)
        # Ids are the stored 16 bytes here, UUIDs in the events.
        assert [(a, amt, None if who is None else UUID(bytes=who))  # type: ignore[arg-type]
                for a, amt, who in postings] == postings_for(event)
        assert participant == isinstance(event, P.Event)
        # The stored fields are the event's, in JSON form (dates as ISO strings).
        assert fields == event.model_dump(mode="json",
                                          exclude={"originator_id", "originator_version"})
    assert skipped  # the fund's opening, rule versions, command receipts
    assert len(items) == len(rows) - skipped


def test_a_partition_decodes_only_its_aggregates(ledger: Ledger) -> None:
    scenario(ledger)
    rows = stored_rows(ledger)
    decoder = Decoder(ledger.mapper, set(RULES))
    whole = decoder.decode(rows)
    parts = [decoder.decode(rows, (k, 3)) for k in range(3)]
    assert sorted(i[0] for part in parts for i in part) == [i[0] for i in whole]
    for k, part in enumerate(parts):
        assert all(UUID(bytes=i[1]).int % 3 == k for i in part)


def index_names(ledger: Ledger) -> set[str]:
    store = store_for(ledger)
    with store.reading() as tx:
        if type(store).__name__.startswith("SQLite"):
            rows = tx.query("SELECT name FROM sqlite_master WHERE type = 'index'")
        else:
            rows = tx.query("SELECT indexname FROM pg_indexes WHERE schemaname = ?",
                            (store.datastore.schema,))
    return {r[0] for r in rows}


def test_a_rebuilt_generation_is_indexed_before_queries_read_it(ledger: Ledger) -> None:
    scenario(ledger)
    ProjectionRunner(ledger).run_until_caught_up()  # generation 1, set up with its indexes
    views = make_views(ledger)
    expected_g1 = {f"{spec.physical(1)}_i{i}" for v in views for spec in v.tables
                   for i in range(len(spec.indexes))}
    assert expected_g1 and expected_g1 <= index_names(ledger)
    rebuild(ledger)  # generation 2 is filled without them, indexed, then switched to
    names = index_names(ledger)
    assert {n.replace("_g1_", "_g2_") for n in expected_g1} <= names
    assert not expected_g1 & names  # dropped with the old generation's tables
