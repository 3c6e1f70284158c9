"""A drafted batch's lines: what PayoutBatch.draft refuses, for any list of lines.

The rules, restated here one line at a time: every amount above zero, every kind known,
the monthly pensions before any one-off payment, no end-to-end id twice. A batch drafted
holds every line by its end-to-end id, and its total is their sum.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import disbursement
from ledger.aggregates import payout_batch
from ledger.aggregates.participant import ONE_OFF_KINDS
from ledger.aggregates.payout_batch import LINE_KINDS, MONTHLY_PENSION, BatchLine, PayoutBatch
from ledger.application import Ledger
from ledger.errors import Refused
from tests.conftest import examples
from tests.test_bulk_import import stored_count

KINDS = (*LINE_KINDS, "bonus")  # "bonus": a kind no batch pays


def line(e2e: str, amount_fen: int, kind: str) -> BatchLine:
    return BatchLine.trusted({
        "end_to_end_id": e2e, "participant_id": UUID(int=len(e2e)), "months": ["2026-01"],
        "basic_fen": amount_fen, "account_by_source_fen": {}, "pooled_account_fen": 0,
        "deduction_fen": 0, "amount_fen": amount_fen, "rule_versions": ["r1"],
        "payee_name": "张三", "account_number": "6222000000000001", "bank_code": "ICBC",
        "id_number": "", "account_name": "", "kind": kind, "register_version": 1,
        "basic_by_month": {}, "rerated_fen": {}, "rated_version": 0})


def draft(lines: list[BatchLine]) -> PayoutBatch:
    return PayoutBatch.draft(
        period="2026-01", sequence=1, file_format="pain001",
        created_at=datetime(2026, 1, 1, tzinfo=UTC), execution_date=date(2026, 1, 5),
        lines=lines, manifest_sha256="0" * 64, comparison={}, actor="maker")


def first_broken_rule(lines: list[BatchLine]) -> str | None:
    """The rule the lines break that draft checks first, by a loop over the lines."""
    if any(x.amount_fen <= 0 for x in lines):
        return "every payment in a batch must be greater than zero"
    if any(x.kind not in LINE_KINDS for x in lines):
        return f"a line's kind is one of {', '.join(LINE_KINDS)}"
    seen_one_off = False
    for x in lines:
        if x.kind != MONTHLY_PENSION:
            seen_one_off = True
        elif seen_one_off:
            return "the monthly pensions come first, then the one-off payments"
    if len({x.end_to_end_id for x in lines}) != len(lines):
        return "an end-to-end id appears twice"
    return None


lines_drawn = st.lists(st.builds(
    line, st.sampled_from([f"PAY-202601-{n:06d}" for n in range(12)]),
    st.integers(min_value=-2, max_value=50_000),
    st.sampled_from(KINDS) | st.just(MONTHLY_PENSION)), max_size=12)


@settings(max_examples=examples(300), deadline=None)
@given(lines_drawn)
def test_a_batch_is_drafted_exactly_when_its_lines_keep_every_rule(
        lines: list[BatchLine]) -> None:
    broken = first_broken_rule(lines)
    if broken is not None:
        with pytest.raises(Refused) as exc:
            draft(lines)
        assert (exc.value.field, exc.value.rule) == ("lines", broken)
        return
    batch = draft(lines)
    assert batch.lines == {x.end_to_end_id: x for x in lines}
    assert list(batch.lines) == [x.end_to_end_id for x in lines]  # in the drafted order
    assert batch.total_fen == sum(x.amount_fen for x in lines)
    assert batch.line_count == len(lines)


def test_each_rule_refuses_by_name() -> None:
    pension = [line(f"PAY-202601-{n:06d}", 100, MONTHLY_PENSION) for n in range(3)]
    one_off = line("FUN-202601-000001", 500, ONE_OFF_KINDS[0])
    cases = [
        ([*pension, line("PAY-202601-000009", 0, MONTHLY_PENSION)],
         "every payment in a batch must be greater than zero"),
        ([*pension, line("PAY-202601-000009", 10, "bonus")],
         f"a line's kind is one of {', '.join(LINE_KINDS)}"),
        ([pension[0], one_off, pension[1]],
         "the monthly pensions come first, then the one-off payments"),
        ([*pension, pension[1]], "an end-to-end id appears twice"),
    ]
    for lines, rule in cases:
        with pytest.raises(Refused) as exc:
            draft(lines)
        assert (exc.value.field, exc.value.rule) == ("lines", rule)
    assert draft([*pension, one_off]).total_fen == 800


def test_a_batch_drafted_twice_is_refused_the_second_time_and_nothing_more_is_stored(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of one month at once: the second draft's events are refused whole by the
    store (the batch's id is the month's and sequence's), however many were sent before
    the refusal was seen, and the run takes the batch that stands."""
    monkeypatch.setattr(payout_batch, "MAX_LINES_PER_EVENT", 2)  # several LinesAdded events
    lines = [line(f"E{n:03d}", 100 + n, MONTHLY_PENSION) for n in range(9)]
    kw: dict[str, Any] = dict(
        period="2026-01", sequence=1, file_format="pain001",
        created_at=datetime(2026, 1, 1, tzinfo=UTC), execution_date=date(2026, 1, 5),
        manifest_sha256="0" * 64, comparison={}, actor="maker")
    first = disbursement.draft(ledger, lines=lines, **kw)
    stored = stored_count(ledger)
    with pytest.raises(Refused, match="batch 2026-01/1 was already drafted"):
        disbursement.draft(ledger, lines=lines[:4], **{**kw, "manifest_sha256": "1" * 64})
    assert stored_count(ledger) == stored
    again = disbursement.get_batch(ledger, first.id)
    assert again.manifest_sha256 == "0" * 64
    assert [x.end_to_end_id for x in again.lines.values()] == [x.end_to_end_id for x in lines]


@settings(max_examples=examples(200), deadline=None)
@given(participant_id=st.uuids(), year=st.integers(2000, 2099), month=st.integers(1, 12),
       sequence=st.integers(1, 99), kind=st.sampled_from(LINE_KINDS))
def test_an_end_to_end_id_is_the_kind_month_sequence_and_the_id_s_first_24_hex_digits(
        participant_id: UUID, year: int, month: int, sequence: int, kind: str) -> None:
    period = f"{year}-{month:02d}"
    restated = (f"{payout_batch.E2E_LETTERS[kind]}{year}{month:02d}{sequence:02d}"
                f"{participant_id.hex[:24].upper()}")
    assert payout_batch.end_to_end_id(period, sequence, participant_id, kind) == restated
    assert len(restated) <= 35  # pain.001's Max35Text
