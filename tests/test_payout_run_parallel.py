"""A big register is computed by two processes (payout_engine.run._compute_in_two): this one
takes the pensioners of the lower half of participant ids, a forked child those of the upper
half. The batch drafted is the one a single process drafts: the same lines in the same
order, the same files and manifest hash, the same comparison with last month. A child that
dies, fails, hangs or refuses fails the run, and nothing is drafted."""

from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ledger.application import Ledger
from ledger.errors import InvalidInput
from ledger.forked import ChildFailed
from payout_engine import run
from tests.test_bulk_import import stored_count
from tests.test_payout_support import (
    FINANCE,
    OPERATOR,
    contributor,
    county_raise,
    draft,
    pay,
    pid,
    transitional,
    treasury,
)


@pytest.fixture
def two_processes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Small registers computed in two processes, messages every 2 pensioners. Returns a
    file to which each pensioner taken appends "process-id participant-id"."""
    monkeypatch.setattr(run, "RUN_IN_TWO_MIN_PENSIONERS", 2)
    monkeypatch.setattr(run, "PROGRESS_EVERY", 2)
    log = tmp_path / "taken.log"
    take = run._Drafting.take

    def logged(self: run._Drafting, f: Any) -> None:
        take(self, f)
        with open(log, "a") as out:
            out.write(f"{os.getpid()} {f.participant_id}\n")

    monkeypatch.setattr(run._Drafting, "take", logged)
    return log


def pensioners(ledger: Ledger) -> list[str]:
    treasury(ledger)
    return ([transitional(ledger, n) for n in range(1, 11)]
            + [contributor(ledger, 11, tier_fen=10000), contributor(ledger, 12)])


def changes(ledger: Ledger, people: list[str]) -> None:
    """After April: a suspension and a death on each side of the split, an overpayment, and
    a rule version lowering the basic pension from April (months paid above the rules)."""
    lower = [idn for idn in people if pid(idn) < run.SHARE_SPLIT]
    upper = [idn for idn in people if pid(idn) >= run.SHARE_SPLIT]
    assert len(lower) >= 3 and len(upper) >= 3, "both processes have pensioners"
    for side in (lower, upper):
        ledger.suspend(id_number=side[0], reason_code="no_proof_of_life",
                       from_month="2020-05", actor=OPERATOR)
        ledger.decease(id_number=side[1], date_of_death=date(2020, 4, 20),
                       reported_on=date(2020, 5, 3), actor=OPERATOR)
    ledger.assess_overpayment(id_number=upper[2], amount_fen=3_000, months=["2020-04"],
                              reason="paid in error", value_date=date(2020, 5, 4),
                              actor=FINANCE)
    county_raise(ledger, date(2020, 4, 1), -100, "lowered from April")


def drafted(ledger: Ledger, period: str, progress: list[int] | None = None) -> Any:
    batch = draft(ledger, period, file_format="domestic",
                  progress=None if progress is None else progress.append)
    return (batch.manifest_sha256, list(batch.lines), [line.model_dump() for line in
                                                       batch.lines.values()],
            batch.comparison, batch.total_fen)


def test_a_run_in_two_drafts_what_one_process_drafts(
        ledger: Ledger, twin: Ledger, two_processes: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    people = pensioners(ledger)
    assert pensioners(twin) == people
    april = drafted(ledger, "2020-04")
    taken = [line.split() for line in two_processes.read_text().splitlines()]
    assert {p for p, _ in taken} - {str(os.getpid())}, "the child took some pensioners"
    assert sorted(f for _, f in taken) == sorted(str(pid(idn)) for idn in people)
    for process, participant in taken:
        upper = participant >= str(run.SHARE_SPLIT)
        assert (process != str(os.getpid())) == upper

    monkeypatch.setattr(run, "RUN_IN_TWO_MIN_PENSIONERS", 10**9)
    assert drafted(twin, "2020-04") == april
    monkeypatch.setattr(run, "RUN_IN_TWO_MIN_PENSIONERS", 2)

    for app in (ledger, twin):
        pay(app, "2020-04", tmp_path / str(id(app)))
        changes(app, people)
    progress: list[int] = []
    may = drafted(ledger, "2020-05", progress)
    assert sum(progress) == len(people)
    monkeypatch.setattr(run, "RUN_IN_TWO_MIN_PENSIONERS", 10**9)
    assert drafted(twin, "2020-05") == may
    reasons = {r["reason"]: r for r in may[3]["reasons"]}
    assert reasons["suspended"]["headcount"] == -2 and reasons["died"]["headcount"] == -2
    assert "deduction_started" in reasons
    lowered = may[3]["paid_above_the_rules"]
    # Everyone paid in April and paid now (not the suspended, not the dead), on both sides
    # of the split.
    assert lowered["pensioners"] == len(people) - 4 and lowered["amount_fen"] == 100 * 8
    assert {p >= str(run.SHARE_SPLIT) for p in lowered["participant_ids"]} == {True, False}


def boom() -> None:
    raise RuntimeError("boom")


def refuse() -> None:
    raise InvalidInput("bank", "closed for the test")


def in_the_child(monkeypatch: pytest.MonkeyPatch, act: Any) -> Any:
    """act() in the child before it takes its first pensioner; returns the original take."""
    parent = os.getpid()
    take = run._Drafting.take

    def acting(self: run._Drafting, f: Any) -> None:
        if os.getpid() != parent:
            act()
        take(self, f)

    monkeypatch.setattr(run._Drafting, "take", acting)
    return take


@pytest.mark.parametrize(("act", "error", "message"), [
    (lambda: os._exit(3), ChildFailed, "died (exit code 3); nothing drafted"),
    (boom, ChildFailed, "RuntimeError: boom"),
    (refuse, InvalidInput, "bank: closed for the test"),
], ids=["dies", "raises", "refuses"])
def test_a_child_that_fails_fails_the_run_and_drafts_nothing(
        ledger: Ledger, two_processes: Path, monkeypatch: pytest.MonkeyPatch, act: Any,
        error: type[Exception], message: str) -> None:
    pensioners(ledger)
    before = stored_count(ledger)
    take = in_the_child(monkeypatch, act)

    with pytest.raises(error) as exc:
        draft(ledger, "2020-04")

    assert message in str(exc.value)
    assert stored_count(ledger) == before
    assert run.live_batch(ledger, "2020-04") is None
    # The parent's connections are untouched by the child: the run drafts the month after.
    monkeypatch.setattr(run._Drafting, "take", take)
    assert draft(ledger, "2020-04").line_count == 12


def test_a_child_that_hangs_is_given_up_on(
        sqlite_ledger: Ledger, two_processes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pensioners(sqlite_ledger)
    before = stored_count(sqlite_ledger)
    monkeypatch.setattr(run, "CHILD_WAIT_S", 1.0)
    in_the_child(monkeypatch, lambda: time.sleep(60))

    start = time.monotonic()
    with pytest.raises(ChildFailed) as exc:
        draft(sqlite_ledger, "2020-04")

    assert "the process computing half the run" in str(exc.value)
    assert "gave no answer in 1 s; nothing drafted" in str(exc.value)
    assert time.monotonic() - start < 30
    assert stored_count(sqlite_ledger) == before


def test_small_registers_and_in_memory_stores_are_computed_in_one_process(
        sqlite_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    pensioners(sqlite_ledger)
    monkeypatch.setattr(run, "RUN_IN_TWO_MIN_PENSIONERS", 12)
    assert run._in_two(sqlite_ledger)
    monkeypatch.setattr(run, "RUN_IN_TWO_MIN_PENSIONERS", 13)
    assert not run._in_two(sqlite_ledger)
    memory = Ledger(":memory:", cipher_key="")
    try:
        memory.init()
        pensioners(memory)
        monkeypatch.setattr(run, "RUN_IN_TWO_MIN_PENSIONERS", 1)
        assert not run._in_two(memory)
    finally:
        memory.close()


def test_the_register_is_read_by_halves(sqlite_ledger: Ledger) -> None:
    people = pensioners(sqlite_ledger)
    everyone = [f.participant_id for f in sqlite_ledger.pensioners(chunk_size=5)]
    lower = [f.participant_id for f in sqlite_ledger.pensioners(chunk_size=5,
                                                                stop=run.SHARE_SPLIT)]
    upper = [f.participant_id for f in sqlite_ledger.pensioners(chunk_size=5,
                                                                start=run.SHARE_SPLIT)]
    assert everyone == sorted(str(pid(idn)) for idn in people) == lower + upper
    assert lower and upper
