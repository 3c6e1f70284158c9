"""Concurrent writers: optimistic concurrency (a version clash makes the command reload
and decide again), never last-write-wins; the fund guard holds across writers.

Each thread has a Ledger of its own on the same store, as separate processes would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import pytest

from ledger.aggregates.command_receipt import CommandReceipt
from ledger.application import Ledger
from ledger.errors import ConcurrencyConflict, Refused
from ledger.postings import postings_for
from ledger.store import InsufficientFunds
from tests.helpers import contribute, enrol, make_id

THREAD_TIMEOUT_S = 60


@contextmanager
def ledgers(ledger_url: tuple[str, str | None], n: int) -> Iterator[list[Ledger]]:
    url, key = ledger_url
    apps = [Ledger(url, cipher_key=key) for _ in range(n)]
    try:
        yield apps
    finally:
        for app in apps:
            app.close()


def race(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Start every job at the same moment, each on a thread; return result or exception."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = jobs[i]()
        except Exception as e:  # noqa: BLE001 - the test inspects every outcome
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(THREAD_TIMEOUT_S)
        assert not t.is_alive(), "a writer hung"
    return results


def as_a_client_would(command: Callable[[], Any]) -> Any:
    """A client retries a command the ledger gave up on (ConcurrencyConflict)."""
    for _ in range(20):
        try:
            return command()
        except ConcurrencyConflict:
            continue
    raise AssertionError("the ledger kept conflicting")


def posted_balances(ledger: Ledger) -> dict[str, int]:
    totals: dict[str, int] = {}
    for n in ledger.recorder.select_notifications(start=1, limit=1_000_000):
        for p in postings_for(ledger.mapper.to_domain_event(n)):
            totals[p.account] = totals.get(p.account, 0) + p.amount_fen
    return totals


# ---- one participant, two writers -----------------------------------------------------

def test_a_writer_that_read_a_stale_participant_reloads_and_tries_again(
        ledger: Ledger, ledger_url: tuple[str, str | None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    idn = make_id(1)
    enrol(ledger, idn)
    real_rules_on = ledger.rules_on
    reads: list[date] = []
    with ledgers(ledger_url, 1) as (other,):
        def meanwhile_another_writer(on: date, field: str = "value_date") -> Any:
            reads.append(on)
            if len(reads) == 1:  # after this command loaded the participant, before it saves
                contribute(other, idn, 2017, 20000)
            return real_rules_on(on, field)

        monkeypatch.setattr(ledger, "rules_on", meanwhile_another_writer)
        out = contribute(ledger, idn, 2016, 50000)
    assert len(reads) == 2, "the version clash made the command run again on fresh state"
    assert "replayed" not in out
    p = ledger.participant(idn)
    assert sorted(p.contributed_years) == [2016, 2017]
    assert p.sources["contribution"] == 70000
    assert p.version == 3
    assert ledger.fund_positions()["1001"] == 70000


def test_the_loser_of_a_race_for_the_same_year_is_refused_on_its_retry(
        ledger: Ledger, ledger_url: tuple[str, str | None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    idn = make_id(2)
    enrol(ledger, idn)
    real_rules_on = ledger.rules_on
    with ledgers(ledger_url, 1) as (other,):
        def meanwhile(on: date, field: str = "value_date") -> Any:
            monkeypatch.setattr(ledger, "rules_on", real_rules_on)
            contribute(other, idn, 2016, 20000, receipt_no="R-other")
            return real_rules_on(on, field)

        monkeypatch.setattr(ledger, "rules_on", meanwhile)
        with pytest.raises(Refused) as e:
            contribute(ledger, idn, 2016, 50000, receipt_no="R-mine")
    assert e.value.field == "year"
    p = ledger.participant(idn)
    assert p.contributed_years[2016][0] == "R-other"
    assert ledger.fund_positions()["1001"] == 20000


def test_a_retry_racing_the_original_gets_the_first_result(
        ledger: Ledger, ledger_url: tuple[str, str | None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    idn = make_id(3)
    enrol(ledger, idn)
    real_participant = ledger.participant
    with ledgers(ledger_url, 1) as (original,):
        def original_commits_first(id_number: str) -> Any:
            monkeypatch.setattr(ledger, "participant", real_participant)
            contribute(original, idn, 2016, 50000)  # the same command, the same receipt
            return real_participant(id_number)

        monkeypatch.setattr(ledger, "participant", original_commits_first)
        out = contribute(ledger, idn, 2016, 50000)
    assert out["replayed"] is True
    assert ledger.participant(idn).sources["contribution"] == 50000


def test_two_ledgers_racing_on_one_participant_lose_no_write(
        ledger: Ledger, ledger_url: tuple[str, str | None]) -> None:
    idn = make_id(4)
    enrol(ledger, idn)
    with ledgers(ledger_url, 2) as (a, b):
        def contributions() -> list[Any]:
            return [as_a_client_would(lambda y=y: contribute(a, idn, y, 10000))  # type: ignore[misc]
                    for y in range(2015, 2021)]

        def collectives() -> list[Any]:
            return [as_a_client_would(lambda i=i: b.credit_collective(  # type: ignore[misc]
                id_number=idn, year=2016, amount_fen=100 + i, payer="村委会",
                receipt_no=f"C-{i}", value_date=date(2016, 5, 1), actor="op2"))
                for i in range(6)]

        outcomes = race([contributions, collectives])
    for outcome in outcomes:
        assert not isinstance(outcome, Exception), repr(outcome)
        assert all("replayed" not in r for r in outcome)
    p = ledger.participant(idn)
    assert sorted(p.contributed_years) == list(range(2015, 2021))
    assert p.sources == {**p.sources, "contribution": 60000, "collective": 600 + 15}
    assert p.version == 1 + 6 + 6
    assert ledger.fund_positions()["1001"] == 60000 + 615
    assert posted_balances(ledger)["1001"] == 60000 + 615


def test_the_same_command_sent_by_two_writers_at_once_is_booked_once(
        ledger: Ledger, ledger_url: tuple[str, str | None]) -> None:
    idn = make_id(5)
    enrol(ledger, idn)
    with ledgers(ledger_url, 3) as apps:
        outcomes = race([lambda app=app: contribute(app, idn, 2016, 50000)  # type: ignore[misc]
                         for app in apps])
    booked = [o for o in outcomes if isinstance(o, dict) and "replayed" not in o]
    replayed = [o for o in outcomes if isinstance(o, dict) and o.get("replayed")]
    # Exactly one booked it; the others were answered from its receipt.
    assert len(booked) == 1
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert len(replayed) == len(outcomes) - 1
    for r in replayed:
        assert r == {**booked[0], "replayed": True}
    p = ledger.participant(idn)
    assert p.sources["contribution"] == 50000
    assert p.version == 2
    assert ledger.fund_positions()["1001"] == 50000


def test_two_enrolments_of_one_resident_at_once_make_one_participant(
        ledger: Ledger, ledger_url: tuple[str, str | None]) -> None:
    idn = make_id(6)
    with ledgers(ledger_url, 2) as apps:
        outcomes = race([lambda app=app, n=n: enrol(app, idn, name=f"王{n}")  # type: ignore[misc]
                         for n, app in enumerate(apps)])
    wins = [o for o in outcomes if isinstance(o, dict)]
    losses = [o for o in outcomes if isinstance(o, Exception)]
    assert len(wins) == 1 and len(losses) == 1
    assert isinstance(losses[0], Refused) and losses[0].field == "id_number"
    assert ledger.participant(idn).version == 1


# ---- the fund guard -------------------------------------------------------------------

def test_concurrent_sweeps_beyond_the_income_balance_cannot_overdraw_it(
        ledger: Ledger, ledger_url: tuple[str, str | None]) -> None:
    for n in (7, 8):
        enrol(ledger, make_id(n))
        contribute(ledger, make_id(n), 2016, 50000)
    assert ledger.fund_positions()["1001"] == 100000
    with ledgers(ledger_url, 5) as apps:
        outcomes = race([lambda app=app, i=i: as_a_client_would(  # type: ignore[misc]
            lambda: app.sweep(amount_fen=30000, value_date=date(2016, 4, 1),
                              reference=f"S-{i}", actor="fin"))
            for i, app in enumerate(apps)])
    swept = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(swept) == 3, outcomes  # 3 x 300.00 fit in 1,000.00; a 4th does not
    assert len(refused) == 2
    for e in refused:
        assert isinstance(e, InsufficientFunds) and e.field == "amount", repr(e)
    positions = ledger.fund_positions()
    assert positions["1001"] == 10000 and positions["1002"] == 90000
    posted = posted_balances(ledger)
    assert (posted["1001"], posted["1002"]) == (10000, 90000)
    assert len(ledger.fund().references) == 3


def test_the_guard_holds_for_writers_that_share_no_aggregate(
        ledger: Ledger, ledger_url: tuple[str, str | None]) -> None:
    """Optimistic concurrency cannot help writers of different aggregates: the guarded
    balance itself must be checked and changed inside each write transaction."""
    enrol(ledger, make_id(9))
    contribute(ledger, make_id(9), 2016, 50000)  # 500.00 yuan in the income account

    def withdraw(app: Ledger, i: int) -> int:
        # A write that touches an aggregate of its own and takes 200.00 from income.
        receipt = CommandReceipt.record(f"guard-{i}", "test", "0" * 64, {}, actor="test")
        stored = [app.mapper.to_stored_event(e) for e in receipt.collect_events()]
        app.recorder.insert_events(stored, fund_deltas={"1001": -20000})
        return i

    with ledgers(ledger_url, 6) as apps:
        outcomes = race([lambda app=app, i=i: withdraw(app, i)  # type: ignore[misc]
                         for i, app in enumerate(apps)])
    done = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(done) == 2 and len(refused) == 4, outcomes
    assert all(isinstance(e, InsufficientFunds) for e in refused), refused
    assert ledger.fund_positions()["1001"] == 10000
    # The refused writes stored nothing, not even their receipts.
    for i in range(6):
        stored_events = ledger.recorder.select_events(CommandReceipt.id_for(f"guard-{i}"))
        assert len(stored_events) == (1 if i in done else 0)
