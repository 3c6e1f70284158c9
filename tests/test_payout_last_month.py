"""Last month's batch, for the comparison, is read by a forked child while the run reads the
register and computes the month (payout_engine.last_month). The comparison is then exactly
the one reading the lines first in this process gives; a child that dies, fails or hangs
fails the run, and nothing is drafted."""

from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ledger import disbursement, forked
from ledger.aggregates import payout_batch
from ledger.application import Ledger
from ledger.forked import ChildFailed
from payout_engine import last_month, run
from payout_engine.comparison import Comparison, DeferredComparison
from tests.test_bulk_import import stored_count
from tests.test_payout_fund_parallel import boom
from tests.test_payout_support import (
    OPERATOR,
    account,
    contributor,
    draft,
    pay,
    pid,
    transitional,
    treasury,
)


@pytest.fixture(autouse=True)
def lines_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Last month's lines read, not their summaries taken from what the draft kept (that is
    tests/test_payout_line_summaries.py)."""
    monkeypatch.setattr(last_month, "_kept", lambda previous, spool: None)


@pytest.fixture
def in_child(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every last month read by a child, three lines a LinesAdded event. Returns a file to
    which each chunk read appends "process-id lines"."""
    monkeypatch.setattr(last_month, "IN_CHILD_MIN_LINES", 1)
    monkeypatch.setattr(disbursement, "MAX_LINES_PER_EVENT", 3)
    monkeypatch.setattr(payout_batch, "MAX_LINES_PER_EVENT", 3)
    log = tmp_path / "chunks.log"
    packed = last_month._packed

    def logged(lines: list[dict[str, Any]]) -> Any:
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {len(lines)}\n")
        return packed(lines)

    monkeypatch.setattr(last_month, "_packed", logged)
    return log


def three_months(ledger: Ledger, out: Path) -> list[dict[str, Any]]:
    """April, May and June of a county where, from one month to the next, pensioners die,
    are suspended, held after a bank's failure, resumed with arrears, start, run out of
    account, and the heirs are paid a funeral grant: the comparisons of May and June."""
    treasury(ledger)
    for n in (1, 2, 3):
        transitional(ledger, n)
    dead, suspended, held, also_dead = (transitional(ledger, n) for n in (4, 5, 6, 9))
    contributor(ledger, 7, tier_fen=10000)
    pay(ledger, "2020-04", out, failures={held: "AC04"})
    ledger.suspend(id_number=suspended, reason_code="no_proof_of_life", from_month="2020-05",
                   actor=OPERATOR)
    for idn in (dead, also_dead):  # two of a reason: its ids are listed in the run's order
        ledger.decease(id_number=idn, date_of_death=date(2020, 4, 20),
                       reported_on=date(2020, 4, 25), actor=OPERATOR)
    ledger.award_funeral_grant(id_number=dead, payee="王小五", payee_account=account(90),
                               value_date=date(2020, 5, 3), actor=OPERATOR)
    transitional(ledger, 8, start="2020-05")
    may = pay(ledger, "2020-05", out)
    ledger.resume(id_number=suspended, from_month="2020-06", actor=OPERATOR)
    june = pay(ledger, "2020-06", out)
    return [may.comparison, june.comparison]


def three_months_afresh(tmp_path: Path) -> list[dict[str, Any]]:
    """three_months' comparisons (without batch ids) in a new SQLite ledger."""
    here = Ledger(str(tmp_path / "here.db"), cipher_key="")
    try:
        here.init()
        return [without_batch_ids(c) for c in three_months(here, tmp_path / "b")]
    finally:
        here.close()


def reasons(comparison: dict[str, Any]) -> set[str]:
    return {r["reason"] for r in comparison["reasons"]}


def without_batch_ids(comparison: dict[str, Any]) -> dict[str, Any]:
    return {**comparison, "previous": {**comparison["previous"], "batch_id": None}}


def test_the_comparison_read_by_a_child_is_the_one_read_here(
        ledger: Ledger, twin: Ledger, in_child: Path, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    by_child = three_months(ledger, tmp_path / "a")

    chunks = [line.split() for line in in_child.read_text().splitlines()]
    assert chunks and str(os.getpid()) not in {process for process, _ in chunks}
    # April's 8 lines, read by May's run, and May's 6 (5 pensions and the funeral grant),
    # read by June's: three a LinesAdded event.
    assert [int(n) for _, n in chunks] == [3, 3, 2, 3, 3]
    assert reasons(by_child[0]) >= {"died", "suspended", "new_pensioner", "one_off_payment"}
    died = [r for r in by_child[0]["reasons"] if r["reason"] == "died"]
    assert died[0]["headcount"] == -2 and len(died[0]["participant_ids"]) == 2
    assert reasons(by_child[1]) >= {"arrears_paid", "one_off_paid_before"}

    monkeypatch.setattr(last_month, "IN_CHILD_MIN_LINES", 10**9)
    in_child.write_text("")
    here = three_months(twin, tmp_path / "b")
    assert in_child.read_text() == ""
    assert [without_batch_ids(c) for c in by_child] == [without_batch_ids(c) for c in here]


def test_the_run_compares_directly_once_the_lines_are_in(
        sqlite_ledger: Ledger, in_child: Path, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """The run asks every PROGRESS_EVERY pensioners whether last month's lines are in: from
    then on it feeds the Comparison itself, after the calls kept before."""
    monkeypatch.setattr(run, "PROGRESS_EVERY", 2)
    ready = last_month.LastMonth.ready
    switched: list[int] = []

    def waiting(self: last_month.LastMonth, fed: Any) -> Any:
        if self.child is not None and not self.child.finished:
            self._take(wait=True)  # the child is done by the first question
        now = ready(self, fed)
        if now is not fed:
            switched.append(len(switched))
        return now

    monkeypatch.setattr(last_month.LastMonth, "ready", waiting)
    by_child = three_months(sqlite_ledger, tmp_path / "a")
    assert switched == [0, 1]  # in May's run and in June's

    monkeypatch.setattr(last_month, "IN_CHILD_MIN_LINES", 10**9)
    assert [without_batch_ids(c) for c in by_child] == three_months_afresh(tmp_path)


def act_in_child(monkeypatch: pytest.MonkeyPatch, act: Any) -> None:
    """`act` in the child as it packs its first chunk."""
    parent = os.getpid()
    packed = last_month._packed

    def acting(lines: list[dict[str, Any]]) -> Any:
        if os.getpid() != parent:
            act()
        return packed(lines)

    monkeypatch.setattr(last_month, "_packed", acting)


@pytest.mark.parametrize(("act", "message"), [
    (lambda: os._exit(3), "the process reading last month's batch (pid "),
    (boom, "RuntimeError: boom"),
], ids=["dies", "raises"])
def test_a_child_that_fails_fails_the_run_and_drafts_nothing(
        sqlite_ledger: Ledger, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, act: Any,
        message: str) -> None:
    monkeypatch.setattr(last_month, "IN_CHILD_MIN_LINES", 1)
    treasury(sqlite_ledger)
    people = [transitional(sqlite_ledger, n) for n in (1, 2)]
    pay(sqlite_ledger, "2020-04", tmp_path)
    before = stored_count(sqlite_ledger)
    packed = last_month._packed
    act_in_child(monkeypatch, act)

    with pytest.raises(ChildFailed) as exc:
        draft(sqlite_ledger, "2020-05")

    assert message in str(exc.value) and "nothing drafted" in str(exc.value)
    assert stored_count(sqlite_ledger) == before
    assert run.batches_of(sqlite_ledger, "2020-05") == []
    # The parent's connections are untouched by the child: the run drafts the month.
    monkeypatch.setattr(last_month, "_packed", packed)
    batch = draft(sqlite_ledger, "2020-05")
    assert sorted(line.participant_id for line in batch.lines.values()) == sorted(
        pid(idn) for idn in people)
    assert batch.comparison["headcount"] == {"previous": 2, "current": 2, "change": 0}


def test_a_child_that_hangs_is_given_up_on(
        sqlite_ledger: Ledger, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(last_month, "IN_CHILD_MIN_LINES", 1)
    monkeypatch.setattr(forked, "CHILD_WAIT_S", 1.0)
    treasury(sqlite_ledger)
    transitional(sqlite_ledger, 1)
    pay(sqlite_ledger, "2020-04", tmp_path)
    before = stored_count(sqlite_ledger)
    act_in_child(monkeypatch, lambda: time.sleep(60))

    start = time.monotonic()
    with pytest.raises(ChildFailed) as exc:
        draft(sqlite_ledger, "2020-05")

    assert "gave no answer in 1 s; nothing drafted" in str(exc.value)
    assert time.monotonic() - start < 30
    assert stored_count(sqlite_ledger) == before


def test_a_small_batch_or_an_in_memory_store_is_read_here(
        sqlite_ledger: Ledger, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    treasury(sqlite_ledger)
    transitional(sqlite_ledger, 1)
    april = pay(sqlite_ledger, "2020-04", tmp_path)
    assert april.line_count == 1

    def fed(ledger: Ledger) -> Any:
        month = last_month.LastMonth(ledger, april)
        try:
            return month.feed()
        finally:
            month.close()

    monkeypatch.setattr(last_month, "IN_CHILD_MIN_LINES", 2)
    assert type(fed(sqlite_ledger)) is Comparison
    monkeypatch.setattr(last_month, "IN_CHILD_MIN_LINES", 1)
    assert type(fed(sqlite_ledger)) is DeferredComparison
    memory = Ledger(":memory:", cipher_key="")
    try:
        month = last_month.LastMonth(memory, april)
        assert month.child is None  # nothing a child could open
        month.close()
    finally:
        memory.close()
    # No batch last month: nothing to read.
    assert type(last_month.LastMonth(sqlite_ledger, None).feed()) is Comparison
