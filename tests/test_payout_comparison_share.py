"""A comparison fed in two parts: the pensioners after a point fed to a copy made before any
(a forked child's, payout_engine.run_in_two), its Share added back. For any month and any
point, the result is the one a single comparison fed every pensioner gives."""

from __future__ import annotations

import copy
import pickle
from typing import Any
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.aggregates.payout_batch import BatchLine
from payout_engine import comparison
from payout_engine.comparison import Comparison, LineSummary, Seen
from tests.conftest import examples

PIDS = [str(UUID(int=n + 1)) for n in range(12)]
STATUSES = ("pensioner", "deceased", "suspended", "terminated")


def line(pid: str, amount_fen: int, months: int, deduction_fen: int) -> BatchLine:
    return BatchLine.trusted({
        "end_to_end_id": f"P{pid}", "participant_id": UUID(pid),
        "months": [f"2026-{m:02d}" for m in range(1, months + 1)],
        "basic_fen": amount_fen, "account_by_source_fen": {}, "pooled_account_fen": 0,
        "deduction_fen": deduction_fen, "amount_fen": amount_fen, "rule_versions": ["r1"],
        "payee_name": "", "account_number": "", "bank_code": "", "id_number": "",
        "account_name": "", "kind": "pension", "register_version": 1, "basic_by_month": {},
        "rerated_fen": {}, "rated_version": 0})




@st.composite
def calls(draw: st.DrawFn) -> list[tuple[str, str, BatchLine | None, bool]]:
    """This month's calls, one a pensioner at most, in any order: (pid, status, the line
    paid or None, excluded)."""
    pids = draw(st.permutations(PIDS))[:draw(st.integers(0, len(PIDS)))]
    return [(pid, draw(st.sampled_from(STATUSES)),
             draw(st.none() | st.builds(line, st.just(pid), st.integers(1, 3000),
                                        st.integers(1, 3), st.sampled_from([0, 0, 100]))),
             draw(st.booleans())) for pid in pids]


previous = st.dictionaries(st.sampled_from(PIDS), st.builds(
    LineSummary, st.integers(1, 3000), st.integers(1, 3), st.integers(1, 3000),
    st.sampled_from([0, 100]), st.just(0), st.just(("r1",))), max_size=12)


def feed(c: Any, fed: list[tuple[str, str, BatchLine | None, bool]]) -> list[str]:
    """Feed the calls; the ids of those not paid."""
    not_paid = []
    for pid, status, paid, excluded in fed:
        seen = Seen(pid, status, None, "2025-12", frozenset(), "2020-01")
        if paid is None:
            c.not_paid(seen, excluded)
            not_paid.append(pid)
        else:
            c.paid(seen, paid)
    return not_paid


@settings(max_examples=examples(200), deadline=None)
@given(calls(), previous, st.integers(0, 12), st.sampled_from([1, 2, 20]))
def test_a_comparison_fed_in_two_parts_is_the_comparison_fed_whole(
        fed: list[Any], before: dict[str, LineSummary], split: int, samples: int) -> None:
    about = {"batch_id": "b", "period": "2026-01", "sequence": 1, "state": "closed"}
    saved = comparison.MAX_SAMPLES
    comparison.MAX_SAMPLES = samples
    try:
        whole = Comparison(about, before.items())
        feed(whole, fed)

        first = Comparison(about, before.items())
        child = copy.deepcopy(first)  # as the fork copies it: before anything is fed
        feed(first, fed[:split])
        not_paid = feed(child, fed[split:])
        first.add(pickle.loads(pickle.dumps(child.share(not_paid))))  # as it is sent

        assert first.summaries == whole.summaries
        assert first.result() == whole.result()
    finally:
        comparison.MAX_SAMPLES = saved
