"""A big batch is funded by two processes (ledger.disbursement._Payments.add_in_two): this
one pays the batch's even LinesAdded chunks and a forked child the odd ones. Funding in two
stores exactly what funding in one process stores, in the same order; a child that dies,
fails, hangs or refuses fails the funding whole, and nothing is stored."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from ledger import disbursement, forked
from ledger.aggregates import payout_batch
from ledger.aggregates.participant import Participant
from ledger.application import Ledger
from ledger.audit import verify_chain
from ledger.errors import InvalidInput, Refused
from ledger.forked import ChildFailed
from ledger.resident_id import mask
from ledger.store import copied_part
from payout_engine import run
from tests.test_bulk_import import stored_count
from tests.test_payout_rerating import register_is_a_replay
from tests.test_payout_support import (
    APPROVER,
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

PERIOD = "2020-04"
LINES_PER_CHUNK = 3


@pytest.fixture
def two_processes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Small batches funded in two processes, three lines a LinesAdded event. Returns a file
    to which each chunk paid appends "process-id chunk-size"."""
    monkeypatch.setattr(disbursement, "FUND_IN_TWO_MIN_LINES", 4)
    monkeypatch.setattr(disbursement, "MAX_LINES_PER_EVENT", LINES_PER_CHUNK)
    monkeypatch.setattr(payout_batch, "MAX_LINES_PER_EVENT", LINES_PER_CHUNK)
    log = tmp_path / "chunks.log"
    add_chunk = disbursement._Payments._add_chunk

    def logged(self: Any, lines: list[dict[str, Any]], *args: Any) -> None:
        add_chunk(self, lines, *args)
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {len(lines)}\n")

    monkeypatch.setattr(disbursement._Payments, "_add_chunk", logged)
    return log


def pensioners(ledger: Ledger, arrears: bool = False) -> list[str]:
    """Ten pensioners, two of them with an individual account: 4 chunks of lines. With
    arrears, every other one's pension began two months before PERIOD: their lines pay
    three months."""
    treasury(ledger)
    return ([transitional(ledger, n, start="2020-02" if arrears and n % 2 else PERIOD)
             for n in range(1, 9)]
            + [contributor(ledger, 9, tier_fen=10000), contributor(ledger, 10)])


def approved(ledger: Ledger) -> payout_batch.PayoutBatch:
    batch = draft(ledger, PERIOD)
    run.approve(ledger, batch.id, batch.manifest_sha256, APPROVER)
    return batch


def fund(ledger: Ledger, batch: payout_batch.PayoutBatch) -> dict[str, Any]:
    return run.fund(ledger, batch.id, value_date=first_day(PERIOD), actor=FINANCE)


def payments_in_order(ledger: Ledger) -> list[tuple[UUID, int, dict[str, Any]]]:
    """Every PensionPaid in the notification log's order, without what differs between two
    ledgers (the batch id, the time)."""
    out = []
    for n in ledger.recorder.select_notifications(start=1, limit=10_000):
        if n.topic.endswith("PensionPaid"):
            e = ledger.mapper.to_domain_event(n)
            state = e.model_dump(mode="json", exclude={"timestamp", "batch_id"})
            out.append((n.originator_id, n.originator_version, state))
    return out


def registers(ledger: Ledger) -> tuple[Any, ...]:
    facts = [(row[0], row[1]) for row in ledger.queries.pensioner_rows(10_000)]
    paid = ledger.queries.fetch("SELECT participant_id, month, end_to_end_id FROM "
                                "{p}paid_months ORDER BY 1, 2")
    return facts, sorted((str(p), m, e2e) for p, m, e2e in paid), ledger.fund_positions()


@pytest.mark.parametrize("arrears", [False, True], ids=["one-month", "arrears"])
def test_funding_in_two_stores_what_one_process_stores(
        ledger: Ledger, twin: Ledger, two_processes: Path,
        monkeypatch: pytest.MonkeyPatch, arrears: bool) -> None:
    people = pensioners(ledger, arrears)
    assert pensioners(twin, arrears) == people
    batch = approved(ledger)
    assert any(len(line.months) == 3 for line in batch.lines.values()) is arrears
    assert batch.line_count == 10 and len(batch.lines) == 10

    assert fund(ledger, batch) == {"payments": 10, "total_fen": batch.total_fen}

    chunks = [line.split() for line in two_processes.read_text().splitlines()]
    # Chunks 0 and 2 (3 lines each) here, 1 and 3 (3 lines, then 1) in the child.
    mine = [int(size) for process, size in chunks if process == str(os.getpid())]
    theirs = [int(size) for process, size in chunks if process != str(os.getpid())]
    assert mine == [3, 3] and sorted(theirs) == [1, 3]

    monkeypatch.setattr(disbursement, "FUND_IN_TWO_MIN_LINES", 10**9)
    two_processes.write_text("")
    fund(twin, approved(twin))
    assert {line.split()[0] for line in two_processes.read_text().splitlines()} == {
        str(os.getpid())}

    paid = payments_in_order(ledger)
    assert len(paid) == 10
    assert paid == payments_in_order(twin)
    assert registers(ledger) == registers(twin)
    for idn in people:
        register_is_a_replay(ledger, idn)
    assert disbursement.get_batch(ledger, batch.id, lines=False).state == "funded"


def test_a_line_no_longer_owed_in_either_share_refuses_the_batch(
        ledger: Ledger, two_processes: Path) -> None:
    people = pensioners(ledger)
    batch = approved(ledger)
    order = [line.id_number for line in batch.lines.values()]
    # The first line of chunk 1 (the child's) and of chunk 2 (this process's).
    theirs, mine = order[LINES_PER_CHUNK], order[2 * LINES_PER_CHUNK]
    for idn in (mine, theirs):
        ledger.suspend(id_number=idn, reason_code="no_proof_of_life", from_month=PERIOD,
                       actor=OPERATOR)
    before = (stored_count(ledger), ledger.fund_positions())

    with pytest.raises(Refused) as exc:
        fund(ledger, batch)

    message = str(exc.value)
    assert "2 line(s) no longer owed" in message
    # Listed in the batch's order, whichever process found them.
    assert message.index(mask(theirs)) < message.index(mask(mine))
    assert (stored_count(ledger), ledger.fund_positions()) == before
    assert set(people) >= {mine, theirs}


def boom() -> None:
    raise RuntimeError("boom")


def refuse() -> None:
    raise InvalidInput("bank_code", "closed for the test")


def in_the_child(monkeypatch: pytest.MonkeyPatch, act: Any) -> Any:
    """act() in the child before it pays its first chunk; returns the original _add_chunk."""
    parent = os.getpid()
    add_chunk = disbursement._Payments._add_chunk

    def acting(self: Any, *args: Any) -> None:
        if os.getpid() != parent:
            act()
        add_chunk(self, *args)

    monkeypatch.setattr(disbursement._Payments, "_add_chunk", acting)
    return add_chunk


@pytest.mark.parametrize(("act", "error", "message"), [
    (lambda: os._exit(3), ChildFailed, "died (exit code 3); nothing funded"),
    (boom, ChildFailed, "RuntimeError: boom"),
    (refuse, InvalidInput, "bank_code: closed for the test"),
], ids=["dies", "raises", "refuses"])
def test_a_child_that_fails_fails_the_funding_and_stores_nothing(
        ledger: Ledger, two_processes: Path, monkeypatch: pytest.MonkeyPatch, act: Any,
        error: type[Exception], message: str) -> None:
    pensioners(ledger)
    batch = approved(ledger)
    before = (stored_count(ledger), ledger.fund_positions(), registers(ledger))
    add_chunk = in_the_child(monkeypatch, act)

    with pytest.raises(error) as exc:
        fund(ledger, batch)

    assert message in str(exc.value)
    if isinstance(exc.value, InvalidInput):  # re-raised as it was raised
        assert (exc.value.field, exc.value.rule) == ("bank_code", "closed for the test")
    assert (stored_count(ledger), ledger.fund_positions(), registers(ledger)) == before
    assert disbursement.get_batch(ledger, batch.id, lines=False).state == "approved"
    # The parent's connections are untouched by the child: funding again pays the batch.
    monkeypatch.setattr(disbursement._Payments, "_add_chunk", add_chunk)
    assert fund(ledger, batch)["payments"] == 10


def test_a_child_that_hangs_is_given_up_on(
        sqlite_ledger: Ledger, two_processes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pensioners(sqlite_ledger)
    batch = approved(sqlite_ledger)
    before = stored_count(sqlite_ledger)
    monkeypatch.setattr(forked, "CHILD_WAIT_S", 1.0)
    in_the_child(monkeypatch, lambda: time.sleep(60))

    start = time.monotonic()
    with pytest.raises(ChildFailed) as exc:
        fund(sqlite_ledger, batch)

    assert "the process funding half the batch" in str(exc.value)
    assert "gave no answer in 1 s; nothing funded" in str(exc.value)
    assert time.monotonic() - start < 30
    assert stored_count(sqlite_ledger) == before


def test_the_fast_encoding_is_checked_in_the_child_too(
        sqlite_ledger: Ledger, two_processes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child's payments are made the validated way for its first line and compared:
    a wrong fast encoding there fails the funding."""
    pensioners(sqlite_ledger)
    batch = approved(sqlite_ledger)
    before = stored_count(sqlite_ledger)
    parent = os.getpid()
    facts_after = disbursement._facts_after

    def wrong(*args: Any) -> str:
        text = facts_after(*args)
        return text + " " if os.getpid() != parent else text

    monkeypatch.setattr(disbursement, "_facts_after", wrong)
    with pytest.raises(ChildFailed) as exc:
        fund(sqlite_ledger, batch)
    assert "facts after payment differ" in str(exc.value)
    assert stored_count(sqlite_ledger) == before


def test_small_batches_and_in_memory_stores_are_funded_in_one_process(
        sqlite_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(disbursement, "FUND_IN_TWO_MIN_LINES", 20_001)
    memory = Ledger(":memory:", cipher_key="")
    try:
        def batch_of(lines: int) -> Any:
            return type("Batch", (), {"line_count": lines})()

        assert disbursement._in_two(sqlite_ledger, batch_of(20_001))
        assert not disbursement._in_two(sqlite_ledger, batch_of(20_000))
        assert not disbursement._in_two(memory, batch_of(10**6))
        # One LinesAdded event: nothing to share.
        monkeypatch.setattr(disbursement, "FUND_IN_TWO_MIN_LINES", 2)
        assert not disbursement._in_two(sqlite_ledger, batch_of(
            disbursement.MAX_LINES_PER_EVENT))
    finally:
        memory.close()


def test_payments_of_the_child_are_the_participants_events(
        sqlite_ledger: Ledger, two_processes: Path) -> None:
    people = pensioners(sqlite_ledger)
    batch = approved(sqlite_ledger)
    fund(sqlite_ledger, batch)
    for idn in people:
        events = sqlite_ledger.events.get(pid(idn))
        [paid] = [e for e in events if isinstance(e, Participant.PensionPaid)]
        assert paid.batch_id == batch.id and paid.months == [PERIOD]
        assert paid.value_date == date(2020, 4, 1)


def may_with_one_offs(ledger: Ledger) -> payout_batch.PayoutBatch:
    """Twelve pensioners paid in April; one dies at its end, and May's batch pays the other
    eleven and two one-offs to the heirs: 13 lines, chunks of 3, 3, 3, 3 and 1. The pensions
    end in chunk 3 (the child's), the one-offs after them."""
    people = pensioners(ledger) + [transitional(ledger, n) for n in (11, 12)]
    april = approved(ledger)
    fund(ledger, april)
    dead = people[8]  # with an individual account: its balance is inherited
    ledger.decease(id_number=dead, date_of_death=date(2020, 4, 30),
                   reported_on=date(2020, 5, 2), actor=OPERATOR)
    heir = account(90)
    ledger.award_funeral_grant(id_number=dead, payee="王小五", payee_account=heir,
                               value_date=date(2020, 5, 3), actor=OPERATOR)
    ledger.settle_balance(id_number=dead, how="inheritance", payee="王小五",
                          payee_account=heir, value_date=date(2020, 5, 3), actor=OPERATOR)
    may = draft(ledger, "2020-05")
    run.approve(ledger, may.id, may.manifest_sha256, APPROVER)
    return may


def test_one_offs_after_the_pensions_are_funded_in_two_as_in_one(
        ledger: Ledger, twin: Ledger, two_processes: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # On PostgreSQL the child's chunks come ready to store, with the event ids it gave
    # them: one where the pensions end has fewer events than lines, and the write checks
    # each chunk's first id against its own count.
    may = may_with_one_offs(ledger)
    kinds = [line.kind for line in may.lines.values()]
    assert len(kinds) == 13 and kinds[11:] == ["funeral_grant", "inheritance"]
    two_processes.write_text("")

    paid = run.fund(ledger, may.id, value_date=first_day("2020-05"), actor=FINANCE)

    assert paid == {"payments": 13, "total_fen": may.total_fen}
    chunks = [line.split() for line in two_processes.read_text().splitlines()]
    theirs = sorted(int(size) for process, size in chunks if process != str(os.getpid()))
    assert theirs == [3, 3]  # chunks 1 and 3
    monkeypatch.setattr(disbursement, "FUND_IN_TWO_MIN_LINES", 10**9)
    twin_may = may_with_one_offs(twin)
    run.fund(twin, twin_may.id, value_date=first_day("2020-05"), actor=FINANCE)
    assert payments_in_order(ledger) == payments_in_order(twin)
    assert registers(ledger) == registers(twin)
    assert ledger.open_one_offs() == [] == twin.open_one_offs()
    for books in (ledger, twin):
        report = verify_chain(books)
        assert report.ok, report.problems


@pytest.fixture
def pg_ledger(pg_url: str) -> Iterator[Ledger]:
    app = Ledger(pg_url, cipher_key="")
    app.init()
    yield app
    app.close()


def test_a_chunk_made_ready_out_of_place_fails_the_funding_and_stores_nothing(
        pg_ledger: Ledger, two_processes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Were a batch's chunks not what funding takes them for, the child's events would carry
    # ids the write has not reached: refused whole, not stored under the wrong ids.
    pensioners(pg_ledger)
    batch = approved(pg_ledger)
    before = (stored_count(pg_ledger), pg_ledger.fund_positions(), registers(pg_ledger))
    monkeypatch.setattr(disbursement, "copied_part",
                        lambda first_id, *rows: copied_part(first_id + 1, *rows))

    with pytest.raises(AssertionError, match="a copied part out of place"):
        fund(pg_ledger, batch)

    assert (stored_count(pg_ledger), pg_ledger.fund_positions(), registers(pg_ledger)) == before
    monkeypatch.setattr(disbursement, "copied_part", copied_part)
    assert fund(pg_ledger, batch)["payments"] == 10
    assert verify_chain(pg_ledger).ok


def test_a_batch_with_a_one_off_before_a_pension_is_not_drafted(
        sqlite_ledger: Ledger, two_processes: Path) -> None:
    lines = list(may_with_one_offs(sqlite_ledger).lines.values())
    with pytest.raises(Refused) as exc:
        payout_batch.PayoutBatch.draft(
            period="2020-06", sequence=1, file_format="pain001",
            created_at=datetime(2020, 6, 1, tzinfo=UTC), execution_date=date(2020, 6, 5),
            lines=[lines[-1], *lines[:-1]], manifest_sha256="0" * 64, comparison={},
            actor=OPERATOR)
    assert (exc.value.field, exc.value.rule) == (
        "lines", "the monthly pensions come first, then the one-off payments")
