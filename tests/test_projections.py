"""Projections on every store (SQLite and PostgreSQL, encryption off and on): incremental
projection == full rebuild == replay of the events and the aggregates."""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path

import pytest

from ledger.application import Ledger
from ledger.errors import NotFound
from ledger.projections import ProjectionRunner, ViewOutOfDate, Views, rebuild
from ledger.projections.connect import store_for
from ledger.projections.store import REGISTRY
from tests.helpers import contribute, enrol, make_id
from tests.test_projections_support import A, D, check_against_replay, scenario, snapshot


def test_incremental_equals_rebuild_equals_replay(ledger: Ledger) -> None:
    # Small batches, run after every command: batches end mid-command and mid-aggregate.
    runner = ProjectionRunner(ledger, batch_size=3)
    scenario(ledger, after=runner.run_until_caught_up)
    incremental = snapshot(ledger)
    check_against_replay(ledger, incremental)

    reports = rebuild(ledger)
    assert {r["view"]: r["generation"] for r in reports} == {
        "balances": 2, "statements": 2, "participants": 2}
    assert snapshot(ledger) == incremental
    # Shared out among three processes by aggregate, then merged: the same views.
    rebuild(ledger, workers=3, batch_size=7)
    assert snapshot(ledger) == incremental
    assert {p["generation"] for p in Views(ledger).positions().values()} == {3}
    # The live runner notices the switch and carries on from the new generation.
    contribute(ledger, A, 2018, 50000, 45000)  # registered poor since 2016-07
    runner.run_until_caught_up()
    assert Views(ledger).statement(A)["contribution_years"] == [2016, 2017, 2018]


def test_fund_balances_as_of_dates_and_by_township(ledger: Ledger) -> None:
    scenario(ledger)
    ProjectionRunner(ledger).run_until_caught_up()
    views = Views(ledger)
    before_sweep = views.fund_balances(date(2016, 3, 30))
    assert before_sweep["income_fen"] == 10000 + 50000 + 15000 + 10000  # D, A, B, E
    assert before_sweep["fiscal_fen"] == 1_000_000
    after = views.fund_balances(date(2016, 4, 1))
    assert (after["income_fen"], after["fiscal_fen"], after["expenditure_fen"]) == (
        25000, 1_000_000 + 60000 - 200_000, 200_000)
    towns = views.fund_balances(date(2016, 3, 31), by="township")["townships"]
    # Contributions count where the contributor enrolled; the sweep belongs to the county.
    assert towns["城关镇"]["income_fen"] == 60000
    assert towns["南镇"]["income_fen"] == 25000
    assert towns["(county)"]["income_fen"] == -60000
    receivables = views.fund_balances(date(2016, 9, 2))["receivables_by_account_fen"]
    assert receivables["1201"] == 20000  # the overpayment assessed on D


def test_statement_of_unknown_participant_is_not_found(ledger: Ledger) -> None:
    with pytest.raises(NotFound):
        Views(ledger).statement(make_id(999))


def test_two_runners_never_count_an_event_twice(ledger: Ledger) -> None:
    first, second = ProjectionRunner(ledger, batch_size=2), ProjectionRunner(ledger, batch_size=5)
    done = threading.Event()
    errors: list[BaseException] = []

    def follow(runner: ProjectionRunner) -> None:
        try:
            while not done.is_set():
                runner.run_until_caught_up()
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=follow, args=(r,)) for r in (first, second)]
    for t in threads:
        t.start()
    try:
        scenario(ledger)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert not errors
    first.run_until_caught_up()
    check_against_replay(ledger, snapshot(ledger))


def test_rebuild_switches_under_a_following_runner(ledger: Ledger) -> None:
    for n in range(1, 6):
        idn = make_id(n)
        enrol(ledger, idn)
        contribute(ledger, idn, 2016)
    stop = threading.Event()
    runner = ProjectionRunner(ledger, batch_size=4)
    follower = threading.Thread(target=runner.run, args=(stop,),
                                kwargs={"poll_interval_s": 0.05})
    follower.start()
    try:
        rebuild(ledger, ["balances", "roster"], batch_size=3)
        for n in range(1, 6):
            contribute(ledger, make_id(n), 2017)
        rebuild(ledger, ["trial-balance"])
    finally:
        stop.set()
        follower.join()
    runner.run_until_caught_up()
    positions = Views(ledger).positions()
    assert positions["balances"]["generation"] == 3
    assert positions["participants"]["generation"] == 2
    assert positions["statements"]["generation"] == 1
    assert all(p["behind"] == 0 and p["building"] is None for p in positions.values())
    assert Views(ledger).balances()["accounts"]["1001"] == 10 * 50000


def test_a_follower_resolves_again_when_a_switch_drops_its_generation_between_reads(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebuild may switch a view, and drop the generation it replaced, between the
    follower's read of the registrations and its read of their positions: the follower
    then finds no position for what it follows. It resolves its targets again, as for any
    batch that moved under it; it does not stop."""
    enrol(ledger, A)
    runner = ProjectionRunner(ledger)
    positions = runner.store.positions
    dropped = []

    def dropped_once(names: list[str]) -> dict[str, int | None]:
        found = positions(names)
        followed = [n for n in names if n.endswith(":participants:g1")]
        if followed and not dropped:  # the positions of the generations followed
            dropped.append(followed[0])
            return dict.fromkeys(found)
        return found

    monkeypatch.setattr(runner.store, "positions", dropped_once)
    runner.run_until_caught_up()
    assert dropped and runner.conflicts == 1
    assert Views(ledger).positions()["participants"]["behind"] == 0


def test_a_view_of_another_version_is_refused_until_rebuilt(ledger: Ledger) -> None:
    enrol(ledger, A)
    ProjectionRunner(ledger).run_until_caught_up()
    store = store_for(ledger)
    with store.transaction() as tx:
        tx.execute(f"UPDATE {tx.q(REGISTRY)} SET version = 0 WHERE view = 'statements'")
    with pytest.raises(ViewOutOfDate, match="rebuild --view statements"):
        ProjectionRunner(ledger).run_until_caught_up()
    rebuild(ledger, ["statements"])
    contribute(ledger, A, 2016)
    ProjectionRunner(ledger).run_until_caught_up()
    assert Views(ledger).statement(A)["balance_fen"] == 50000


def test_a_crashed_rebuild_resumes_its_generation(ledger: Ledger) -> None:
    for n in range(1, 4):
        enrol(ledger, make_id(n))
        contribute(ledger, make_id(n), 2016)
    ProjectionRunner(ledger).run_until_caught_up()
    expected = snapshot(ledger)
    from ledger.projections.rebuild import claim

    store = store_for(ledger)
    view = ProjectionRunner(ledger, ["participants"]).views[0]
    generation = claim(store, view, ledger.name)
    partial = ProjectionRunner(ledger, ["participants"], batch_size=2, building=True)
    partial.step()  # then the process "dies"
    assert Views(ledger).positions()["participants"]["building"] == generation
    reports = rebuild(ledger, ["participants"])
    assert reports[0]["generation"] == generation
    assert reports[0]["notifications"] < Views(ledger).positions()["participants"]["position"]
    assert snapshot(ledger) == expected


def test_deceased_pensioner_in_roster_and_statement(ledger: Ledger) -> None:
    scenario(ledger)
    ProjectionRunner(ledger).run_until_caught_up()
    views = Views(ledger)
    roster = {r["id_number"]: r for r in views.roster()}
    assert {r["status"] for r in roster.values()} == {"pensioner", "deceased"}
    assert views.roster(status="deceased")[0]["date_of_death"] == "2016-07-15"
    statement = views.statement(D, unmasked=True)
    assert statement["id_number"] == D and statement["balance_fen"] == 0
    assert statement["overpayment_outstanding_fen"] == 0


def test_gaps_in_the_log_are_passed_over(ledger: Ledger) -> None:
    enrol(ledger, A)
    # A refused insert (a version already stored) still takes sequence values on
    # PostgreSQL, leaving a gap in the notification ids.
    from eventsourcing.persistence import IntegrityError

    first = ledger.recorder.select_notifications(0, 1)[0]
    for _ in range(3):
        with pytest.raises(IntegrityError):
            ledger.recorder.insert_events([first])
    contribute(ledger, A, 2016)
    runner = ProjectionRunner(ledger, batch_size=2)
    runner.run_until_caught_up()
    head = ledger.recorder.max_notification_id()
    assert Views(ledger).positions()["balances"]["position"] == head
    assert Views(ledger).statement(A)["balance_fen"] == 50000


def test_the_collector_is_paused_while_projecting_and_resumed_after() -> None:
    import gc

    from ledger.collector import collector_paused

    assert gc.isenabled()
    with collector_paused():
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer runner is still projecting
    assert gc.isenabled()
    gc.disable()  # someone else turned it off: it stays off
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_what_a_paused_job_made_is_left_in_the_oldest_generation() -> None:
    """Left in the youngest, the objects a job made with the collector paused would all be
    walked by the first collection after it (seconds for a month's million lines)."""
    import gc

    from ledger.collector import collector_paused

    assert gc.isenabled()
    with collector_paused():
        kept = [{"n": [n]} for n in range(10_000)]
    assert all(gc.is_tracked(d) for d in kept)
    young = {id(o) for generation in (0, 1) for o in gc.get_objects(generation=generation)}
    assert not any(id(d) in young for d in kept)
    assert sum(1 for o in gc.get_objects(generation=2) if o is kept) == 1


def test_pensions_paid_and_answered_by_the_bank(ledger: Ledger, tmp_path: Path) -> None:
    from ledger.resident_id import mask
    from tests.test_payout_support import pay, transitional, treasury

    treasury(ledger)
    paid, held, dead = (transitional(ledger, n) for n in (1, 2, 3))
    runner = ProjectionRunner(ledger, batch_size=5)
    pay(ledger, "2020-04", tmp_path)
    runner.run_until_caught_up()
    # Account closed (a hold until the details change) and holder deceased (death check).
    pay(ledger, "2020-05", tmp_path, failures={held: "AC04", dead: "MD07"})
    runner.run_until_caught_up()
    answers = snapshot(ledger)
    check_against_replay(ledger, answers)
    rebuild(ledger)
    assert snapshot(ledger) == answers

    roster = {r["id_number"]: r for r in Views(ledger).roster()}
    assert roster[mask(paid)]["last_paid_month"] == "2020-05"
    assert (roster[mask(held)]["last_paid_month"], roster[mask(held)]["payment_hold"]) == (
        "2020-04", "AC04")
    assert (roster[mask(dead)]["status"], roster[mask(dead)]["suspended_from"]) == (
        "suspended", "2020-05")
    may = Views(ledger).county_report(2020, as_of=date(2020, 5, 31))["county"]
    april = Views(ledger).county_report(2020, as_of=date(2020, 4, 30))["county"]
    monthly = roster[mask(paid)]["monthly_fen"]
    assert april["paid_in_month_fen"] == 3 * monthly
    assert may["paid_in_month_fen"] == monthly  # two of three came back
    assert may["paid_in_year_fen"] == 4 * monthly
    trial = Views(ledger).trial_balance()
    assert trial["net_fen"] == 0
    assert "2301" not in {a["account"] for a in trial["accounts"]}  # settled or returned


def test_of_two_group_changes_from_the_same_day_the_later_stands(ledger: Ledger) -> None:
    idn = make_id(70)
    enrol(ledger, idn)
    # The last recorded is neither first nor last by name.
    for group in ("destitute", "ordinary", "minimum_living"):
        ledger.change_identity_group(id_number=idn, group=group,
                                     effective_from=date(2016, 3, 1), actor="op1")
    ProjectionRunner(ledger).run_until_caught_up()
    assert ledger.participant(idn).identity_group == "minimum_living"
    assert Views(ledger).statement(idn)["identity_group"] == "minimum_living"
