"""A big register's month is computed in two processes: a forked child reads and computes the
pensioners from a participant id on (payout_engine.run_in_two). The batch is the one a
single process drafts, line for line, file byte for file byte, comparison for comparison;
a child that dies, fails or hangs fails the run, and nothing is drafted."""

from __future__ import annotations

import os
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import disbursement, forked
from ledger.application import Ledger
from ledger.forked import ChildFailed
from payout_engine import comparison, drafted_files, export, last_month, run, run_in_two
from payout_engine.bankfiles.pain001 import fragment, write_pain001
from tests.helpers import make_id
from tests.test_bankfiles_pain001 import FUND, HEADER, pension
from tests.test_bulk_import import stored_count
from tests.test_payout_fund_parallel import boom
from tests.test_payout_support import (
    APPROVER,
    CONFIG,
    FINANCE,
    OPERATOR,
    account,
    contributor,
    draft,
    first_day,
    pid,
    transitional,
    treasury,
)

PENSIONERS = 12


@pytest.fixture
def child_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every run in two processes, whatever the register's size. Returns a file to which the
    child appends "process-id participant-id" for each line it makes."""
    monkeypatch.setattr(run_in_two, "IN_TWO_MIN_PENSIONERS", 1)
    monkeypatch.setattr(run, "PROGRESS_EVERY", 3)  # several pages from the child
    log = tmp_path / "child.log"
    values = run_in_two._values

    def logged(line: Any) -> Any:
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {line.participant_id}\n")
        return values(line)

    monkeypatch.setattr(run_in_two, "_values", logged)
    return log


def county(ledger: Ledger) -> list[str]:
    """Pensioners paid in April; by May one has died, one is suspended, one has unusable
    bank details, one starts, and a funeral grant is owed to the heirs."""
    treasury(ledger)
    people = [transitional(ledger, n) for n in range(1, PENSIONERS + 1)]
    people.append(contributor(ledger, 40, tier_fen=10000))
    people.append(transitional(ledger, 41, start="2020-05"))
    return people


def may(ledger: Ledger, people: list[str]) -> Any:
    """April drafted, approved and funded; the changes; May drafted."""
    april = draft(ledger, "2020-04")
    run.approve(ledger, april.id, april.manifest_sha256, APPROVER)
    run.fund(ledger, april.id, value_date=first_day("2020-04"), actor=FINANCE)
    ledger.decease(id_number=people[0], date_of_death=date(2020, 4, 20),
                   reported_on=date(2020, 4, 25), actor=OPERATOR)
    ledger.suspend(id_number=people[5], reason_code="no_proof_of_life", from_month="2020-05",
                   actor=OPERATOR)
    ledger.award_funeral_grant(id_number=people[0], payee="王小五", payee_account=account(90),
                               value_date=date(2020, 5, 3), actor=OPERATOR)
    return april, draft(ledger, "2020-05")


def lines_of(batch: Any) -> list[dict[str, Any]]:
    return [line.model_dump(mode="json") for line in batch.lines.values()]


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    previous = record["previous"]
    return {**record, "previous": previous and {**previous, "batch_id": None}}


@pytest.mark.parametrize(("last_month_read", "samples"), [("before", comparison.MAX_SAMPLES),
                                                         ("meanwhile", 1)])
def test_a_month_computed_in_two_processes_is_the_month_computed_in_one(
        ledger: Ledger, twin: Ledger, child_log: Path, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path, last_month_read: str, samples: int) -> None:
    """Last month's lines read before the month is computed, or meanwhile by another child
    (payout_engine.last_month); with the samples of each reason cut short, they are the
    first pensioners', as in one process."""
    monkeypatch.setattr(comparison, "MAX_SAMPLES", samples)
    if last_month_read == "meanwhile":
        monkeypatch.setattr(last_month, "IN_CHILD_MIN_LINES", 1)
        monkeypatch.setattr(last_month, "_kept", lambda previous, spool: None)
    people = county(ledger)
    in_two = may(ledger, people)

    made_by = [line.split() for line in child_log.read_text().splitlines()]
    assert made_by and {process for process, _ in made_by} != {str(os.getpid())}
    by_child = {participant for _, participant in made_by}
    # The child's part is the pensioners from an id on: the upper half here.
    ids = sorted(str(pid(idn)) for idn in people)
    assert 0 < len(by_child & set(ids)) < len(ids)

    monkeypatch.setattr(run_in_two, "IN_TWO_MIN_PENSIONERS", 10**9)
    child_log.write_text("")
    in_one = may(twin, county(twin))
    assert child_log.read_text() == ""

    for two, one in zip(in_two, in_one, strict=True):
        assert lines_of(two) == lines_of(one)
        assert two.manifest_sha256 == one.manifest_sha256
        assert (two.line_count, two.total_fen) == (one.line_count, one.total_fen)
        assert comparable(two.comparison) == comparable(one.comparison)
    reasons = {r["reason"] for r in in_two[1].comparison["reasons"]}
    assert reasons >= {"died", "suspended", "new_pensioner", "one_off_payment"}
    # As stored, too: read back, the batch is the one drafted.
    assert lines_of(disbursement.get_batch(ledger, in_two[1].id)) == lines_of(in_two[1])


def test_the_files_made_in_two_processes_are_exported_byte_for_byte(
        sqlite_ledger: Ledger, child_log: Path, tmp_path: Path) -> None:
    treasury(sqlite_ledger)
    for n in range(1, PENSIONERS + 1):
        transitional(sqlite_ledger, n)
    batch = draft(sqlite_ledger, "2020-04")
    assert child_log.read_text()
    run.approve(sqlite_ledger, batch.id, batch.manifest_sha256, APPROVER)
    run.fund(sqlite_ledger, batch.id, value_date=first_day("2020-04"), actor=FINANCE)
    # Made again from the stored lines (not taken from the draft's kept files), they hash
    # to the approved manifest: export refuses them otherwise.
    drafted_files.discard(CONFIG.drafted_files(), batch.manifest_sha256)
    result = export.export_batch(sqlite_ledger, batch.id, tmp_path / "out",
                                 file_format="pain001", actor=OPERATOR, config=CONFIG)
    assert result.manifest_sha256 == batch.manifest_sha256
    assert result.payments == PENSIONERS


def act_in_child(monkeypatch: pytest.MonkeyPatch, act: Any) -> None:
    """`act` in the child as it sends its first line, with every run in two processes."""
    monkeypatch.setattr(run_in_two, "IN_TWO_MIN_PENSIONERS", 1)
    parent, values = os.getpid(), run_in_two._values

    def acting(line: Any) -> Any:
        if os.getpid() != parent:
            act()
        return values(line)

    monkeypatch.setattr(run_in_two, "_values", acting)


@pytest.mark.parametrize(("act", "message"), [
    (lambda: os._exit(3), "the process computing part of the month (pid "),
    (boom, "RuntimeError: boom"),
    (lambda: time.sleep(60), "gave no answer in 1 s"),
], ids=["dies", "raises", "hangs"])
def test_a_child_that_fails_fails_the_run_and_drafts_nothing(
        sqlite_ledger: Ledger, monkeypatch: pytest.MonkeyPatch, act: Any,
        message: str) -> None:
    treasury(sqlite_ledger)
    people = [transitional(sqlite_ledger, n) for n in range(1, PENSIONERS + 1)]
    before = stored_count(sqlite_ledger)
    values, wait_s = run_in_two._values, forked.CHILD_WAIT_S
    act_in_child(monkeypatch, act)
    monkeypatch.setattr(forked, "CHILD_WAIT_S", 1.0)

    start = time.monotonic()
    with pytest.raises(ChildFailed) as exc:
        draft(sqlite_ledger, "2020-04")
    assert message in str(exc.value) and "nothing drafted" in str(exc.value)
    assert time.monotonic() - start < 30
    assert stored_count(sqlite_ledger) == before
    assert run.batches_of(sqlite_ledger, "2020-04") == []

    # The parent's connections are untouched by the child: the run drafts the month.
    monkeypatch.setattr(run_in_two, "_values", values)
    monkeypatch.setattr(forked, "CHILD_WAIT_S", wait_s)
    batch = draft(sqlite_ledger, "2020-04")
    assert sorted(line.participant_id for line in batch.lines.values()) == sorted(
        pid(idn) for idn in people)


def test_a_small_register_a_domestic_file_or_an_in_memory_store_is_run_here(
        sqlite_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    treasury(sqlite_ledger)
    for n in range(1, 4):
        transitional(sqlite_ledger, n)
    monkeypatch.setattr(run_in_two, "IN_TWO_MIN_PENSIONERS", 4)
    assert run_in_two.can_run_in_two(sqlite_ledger, "pain001") is None
    monkeypatch.setattr(run_in_two, "IN_TWO_MIN_PENSIONERS", 3)
    assert run_in_two.can_run_in_two(sqlite_ledger, "pain001") is not None
    assert run_in_two.can_run_in_two(sqlite_ledger, "domestic") is None
    memory = Ledger(":memory:", cipher_key="")
    try:
        memory.init()
        treasury(memory)
        for n in range(1, 4):
            transitional(memory, n)
        assert run_in_two.can_run_in_two(memory, "pain001") is None
    finally:
        memory.close()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(percent=st.integers(1, 99), chunk=st.integers(1, 5))
def test_the_two_parts_of_the_register_are_every_pensioner_once(
        sqlite_ledger: Ledger, percent: int, chunk: int) -> None:
    q = sqlite_ledger.queries
    if not q.holds_pensioners(1):
        for n in range(1, 8):
            transitional(sqlite_ledger, n)
    from_id = run_in_two.split_id(percent)
    everyone = [pid for pid, _, _ in q.pensioner_rows(chunk)]
    below = [pid for pid, _, _ in q.pensioner_rows(chunk, below_id=from_id)]
    above = [pid for pid, _, _ in q.pensioner_rows(chunk, from_id=from_id)]
    assert len(everyone) == 7
    assert below + above == everyone == sorted(everyone)
    assert all(pid < from_id for pid in below) and all(pid >= from_id for pid in above)


def test_the_child_s_part_is_its_share_of_the_ids() -> None:
    """Participant ids are hashes of ID numbers: a share of the id space holds that share
    of a county's pensioners, near enough."""
    ids = [pid(make_id(n, born=date(1950, 1, 1) + timedelta(days=n // 1000)))
           for n in range(20_000)]
    assert len(set(ids)) == len(ids)
    for percent in (10, 50, 55, 90):
        above = sum(1 for i in ids if i >= run_in_two.split_id(percent))
        assert abs(above / len(ids) - percent / 100) < 0.02, (percent, above)
    assert run_in_two.split_id(50) == UUID("80000000-0000-0000-0000-000000000000")


@settings(max_examples=30, deadline=None)
@given(amounts=st.lists(st.integers(1, 10**8), min_size=1, max_size=40),
       ahead=st.data(), max_txs=st.integers(1, 12))
def test_fragments_made_ahead_give_the_files_of_the_payments(
        amounts: list[int], ahead: st.DataObject, max_txs: int) -> None:
    payments = [pension(n, amount) for n, amount in enumerate(amounts)]
    made_ahead = ahead.draw(st.lists(st.sampled_from(range(len(payments))), unique=True))
    here = [p for n, p in enumerate(payments) if n not in made_ahead]
    made = [fragment(payments[n]) for n in sorted(made_ahead)]
    assert write_pain001(HEADER, FUND, here, made=made, max_txs_per_file=max_txs) == \
        write_pain001(HEADER, FUND, payments, max_txs_per_file=max_txs)
