"""A big contributions file is checked in two processes (ledger.bulk._check_in_two): the
parent and a forked child, each taking the lines of its share of the participants. What
is stored, returned and refused must be what checking the file in one process gives."""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ledger import bulk, forked, resident_id
from ledger.aggregates.participant import participant_id
from ledger.application import Ledger
from ledger.bulk import CONTRIBUTION_COLUMNS, CheckProcessFailed, import_contributions, share_of
from ledger.errors import ImportRejected, InvalidInput
from tests.helpers import contribute
from tests.test_bulk_import import (
    contribution_line,
    enrol_all,
    person_id,
    problem_lines,
    stored_count,
    write_csv,
    wrong_check_digit,
)

PEOPLE = range(240)
BACK_YEARS = (2013, 2014, 2015)     # back-payments in the same file as the year's line


@pytest.fixture
def two_processes(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Small files checked in two processes, in small chunks, with the fast mapping checked
    often; the lines each share checked, per import."""
    monkeypatch.setattr(bulk, "PARALLEL_MIN_LINES", 10)
    monkeypatch.setattr(bulk, "CHUNK_LINES", 16)
    monkeypatch.setattr(bulk, "CHECK_EVERY", 7)
    seen: list[list[int]] = []
    check_in_two = bulk._check_in_two

    def spy(*args: Any) -> list[bulk._Checked]:
        shares = check_in_two(*args)
        seen.append([s.lines for s in shares])
        return shares

    monkeypatch.setattr(bulk, "_check_in_two", spy)
    return seen


def one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "PARALLEL_MIN_LINES", 10**9)


@pytest.fixture
def other(twin: Ledger) -> Ledger:
    """A second, empty ledger of the same kind (store and encryption) as `ledger`."""
    return twin


def year_file(ledger: Ledger, tmp_path: Path, name: str = "c.csv") -> Path:
    """A year's line for everyone, several back-payments for some (each before or after
    their year's line), and a group change that moves one person's on-behalf part."""
    lines = [contribution_line(ledger, n, 2016) for n in PEOPLE]
    for n in PEOPLE[::9]:
        back = [contribution_line(ledger, n, y, back=True) for y in BACK_YEARS]
        lines[n:n] = back if n % 2 else []
        lines += [] if n % 2 else back
    line = contribution_line(ledger, 3, 2017, tier_fen=10000)
    line[3] = "0.00"   # destitute from 2017: the whole lowest tier on behalf
    lines.append(line)
    return write_csv(tmp_path / name, CONTRIBUTION_COLUMNS, lines)


def set_up(app: Ledger, tmp_path: Path) -> None:
    enrol_all(app, tmp_path, PEOPLE)
    app.change_identity_group(id_number=person_id(3), group="destitute",
                              effective_from=date(2017, 1, 1), actor="op1")


def events(app: Ledger) -> set[tuple[uuid.UUID, int, str, str]]:
    """Every participant's stored events, decoded, but for the time each was recorded."""
    out = set()
    for n in PEOPLE:
        for stored in app.recorder.select_events(participant_id(person_id(n))):
            state = app.mapper.to_domain_event(stored).model_dump(  # type: ignore[attr-defined]
                mode="json", exclude={"timestamp"})
            out.add((stored.originator_id, stored.originator_version, stored.topic,
                     json.dumps(state, sort_keys=True)))
    return out


def receipts(app: Ledger) -> set[tuple[str, uuid.UUID]]:
    rows = app.queries.fetch("SELECT receipt_no, participant_id FROM {p}booked_receipts")
    return {(r[0], r[1] if isinstance(r[1], uuid.UUID) else uuid.UUID(r[1])) for r in rows}


def written_order(app: Ledger, after: int) -> list[tuple[uuid.UUID, int, str]]:
    return [(n.originator_id, n.originator_version, n.topic)
            for n in app.recorder.select_notifications(after + 1, 100_000)]


# ---- the same outcome -----------------------------------------------------------------------

def test_two_processes_store_what_one_process_stores(
        ledger: Ledger, other: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        two_processes: list[list[int]]) -> None:
    for app in (ledger, other):
        set_up(app, tmp_path)
    path = year_file(ledger, tmp_path)
    seen: list[int] = []
    before = stored_count(ledger)

    two = import_contributions(ledger, path, actor="op1", progress=seen.append)
    [shares] = two_processes
    assert min(shares) > 20 and sum(shares) == two["lines"] == sum(seen)
    one_process(monkeypatch)
    one = import_contributions(other, path, actor="op1")

    assert two == one
    assert two["participants"] == len(PEOPLE) and two["events"] > two["lines"]
    assert events(ledger) == events(other)
    assert receipts(ledger) == receipts(other)
    assert ledger.fund_positions() == other.fund_positions()
    for n in PEOPLE:
        pid = participant_id(person_id(n))
        assert ledger.queries.register_row(pid) == other.queries.register_row(pid)
    # Stored as the mapper stores them: encrypted when the ledger has a key.
    cipher = ledger.mapper.cipher
    for n in ledger.recorder.select_notifications(before + 1, 100_000):
        assert (cipher.decrypt(n.state) if cipher else n.state).startswith(b"{")


def test_a_participants_lines_get_consecutive_versions_in_file_order(
        ledger: Ledger, tmp_path: Path, two_processes: list[list[int]]) -> None:
    set_up(ledger, tmp_path)
    import_contributions(ledger, year_file(ledger, tmp_path), actor="op1")

    assert two_processes
    for n in PEOPLE[::9]:
        p = ledger.participant(person_id(n))
        versions = [e.originator_version for e in ledger.events.get(p.id)]
        assert versions == list(range(1, p.version + 1))
        assert sorted(p.contributed_years) == [*BACK_YEARS, 2016]
        row = ledger.queries.register_row(p.id)
        assert row is not None and row.version == p.version
    # The back-payments come before or after the year's line: booked in file order.
    n = PEOPLE[9]
    years = [getattr(e, "year", None) for e in ledger.events.get(participant_id(person_id(n)))
             if type(e).__name__ == "ContributionReceived"]
    assert years == ([*BACK_YEARS, 2016] if n % 2 else [2016, *BACK_YEARS])


def test_the_same_file_is_written_in_the_same_order_every_time(
        sqlite_ledger: Ledger, tmp_path: Path, two_processes: list[list[int]]) -> None:
    again = Ledger(str(tmp_path / "again.db"), cipher_key="")
    again.init()
    try:
        orders = []
        for i, app in enumerate((sqlite_ledger, again)):
            folder = tmp_path / str(i)
            folder.mkdir()
            set_up(app, folder)
            before = stored_count(app)
            import_contributions(app, year_file(app, tmp_path, f"c{i}.csv"), actor="op1")
            orders.append(written_order(app, before))
    finally:
        again.close()
    assert orders[0] == orders[1]
    # The parent's share first, then the child's, each in file order.
    shares = [share_of(person_id(n)) for n in PEOPLE]
    by_pid = {participant_id(person_id(n)): shares[n] for n in PEOPLE}
    sequence = [by_pid[pid] for pid, _, _ in orders[0] if pid in by_pid]
    assert sequence == sorted(sequence) and set(sequence) == {0, 1}


# ---- refused files --------------------------------------------------------------------------

def in_share(share: int, count: int) -> list[int]:
    """People of one share; not 3, whose group changes in 2017."""
    return [n for n in PEOPLE if share_of(person_id(n)) == share and n != 3][:count]


def test_bad_lines_of_both_shares_are_all_reported_as_one_process_reports_them(
        ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        two_processes: list[list[int]]) -> None:
    set_up(ledger, tmp_path)
    zero, one = in_share(0, 16), in_share(1, 16)
    first = write_csv(tmp_path / "first.csv", CONTRIBUTION_COLUMNS,
                      [contribution_line(ledger, zero[0], 2016)])
    import_contributions(ledger, first, actor="op1")
    before = (stored_count(ledger), ledger.fund_positions())

    def line(n: int, receipt: str | None = None, amount: str | None = None) -> list[str]:
        out = contribution_line(ledger, n, 2017)
        out[5] = out[5] if receipt is None else receipt
        out[3] = out[3] if amount is None else amount
        return out

    rows = [line(one[6], "R-late")]                                    # 2: share 1
    rows += [line(n) for n in zero[1:6] + one[1:6]]                    # 3-12: good
    rows += [
        line(one[7], "R-shared"),                 # 13: share 1, the first R-shared
        line(zero[6], "R-shared"),                # 14: share 0's first R-shared: a repeat
        line(zero[7], "R-shared"),                # 15: a repeat of 13, not of 14
        line(one[8], "R-shared"),                 # 16: a repeat of 13
        line(zero[8], "R-other", "1.00"),         # 17: share 0, the first R-other; amount
        line(one[9], "R-other"),                  # 18: share 1's first R-other: a repeat
        line(zero[9], "R-late", "1.00"),          # 19: a repeat of 2 (its amount unchecked)
        line(zero[0], f"R-{zero[0]}-2016"),       # 20: booked by the first file
        [wrong_check_digit(person_id(one[10])), *line(one[10])[1:]],   # 21: check digit
        [person_id(999), *line(one[11])[1:]],                          # 22: nobody enrolled
        [*line(one[12])[:2], "500.005", *line(one[12])[3:]],           # 23: over-precision
        line(one[13])[:7],                                             # 24: a column short
        line(one[1], "R-x"),                      # 25: 2017 for one[1] again (line 8)
    ]
    path = write_csv(tmp_path / "bad.csv", CONTRIBUTION_COLUMNS, rows)

    with pytest.raises(ImportRejected) as two:
        import_contributions(ledger, path, actor="op1")
    assert two_processes, "checked in two processes"
    one_process(monkeypatch)
    with pytest.raises(ImportRejected) as single:
        import_contributions(ledger, path, actor="op1")

    assert two.value.problems == single.value.problems
    assert str(two.value) == str(single.value)
    found = problem_lines(two)
    assert sorted(found) == list(range(14, 26))
    shared = ["receipt_no: receipt R-shared is already on line 13"]
    assert found[14] == shared and found[15] == shared and found[16] == shared
    assert found[17][0].startswith("amount: ")
    assert found[18] == ["receipt_no: receipt R-other is already on line 17"]
    assert found[19] == ["receipt_no: receipt R-late is already on line 2"]
    assert found[20] == [f"receipt_no: receipt R-{zero[0]}-2016 is already booked"]
    assert [m.split(":", 1)[0] for n in range(21, 25) for m in found[n]] == \
        ["id_number", "id_number", "tier", "csv"]
    assert found[25] == [f"year: 2017 for {resident_id.mask(person_id(one[1]))} is already "
                         f"on line 8"]
    assert (stored_count(ledger), ledger.fund_positions()) == before


def test_a_concurrent_write_to_the_childs_share_makes_both_re_read_and_retry(
        sqlite_ledger: Ledger, tmp_path: Path, two_processes: list[list[int]]) -> None:
    set_up(sqlite_ledger, tmp_path)
    path = write_csv(tmp_path / "c.csv", CONTRIBUTION_COLUMNS,
                     [contribution_line(sqlite_ledger, n, 2016) for n in PEOPLE])
    theirs = in_share(1, 1)[0]
    calls: list[int] = []

    def meanwhile(lines: int) -> None:
        # When the file is checked (the child's lines are reported last) and before it is
        # written, another clerk books a back-payment for a participant of the child's share.
        calls.append(lines)
        if sum(calls) == len(PEOPLE):
            contribute(sqlite_ledger, person_id(theirs), 2010, 10000, back_payment=True,
                       value_date=date(2016, 1, 5))

    result = import_contributions(sqlite_ledger, path, actor="op1", progress=meanwhile)

    assert len(two_processes) == 2 and result["lines"] == len(PEOPLE)
    assert sum(calls) == 2 * len(PEOPLE)
    p = sqlite_ledger.participant(person_id(theirs))
    assert sorted(p.contributed_years) == [2010, 2016]
    assert [e.originator_version for e in sqlite_ledger.events.get(p.id)] == \
        list(range(1, p.version + 1))
    row = sqlite_ledger.queries.register_row(p.id)
    assert row is not None and row.version == p.version


# ---- a child that fails ---------------------------------------------------------------------

def in_the_child(monkeypatch: pytest.MonkeyPatch, act: Any) -> None:
    """Make the register read do `act` in the forked child only."""
    parent = os.getpid()
    read_people = bulk._read_people

    def read(*args: Any) -> None:
        if os.getpid() != parent:
            act()
        read_people(*args)

    monkeypatch.setattr(bulk, "_read_people", read)


def boom() -> None:
    raise RuntimeError("boom")


def refuse() -> None:
    raise InvalidInput("channel", "closed for the test")


@pytest.mark.parametrize(("act", "error", "message"), [
    (lambda: os._exit(3), CheckProcessFailed, "died (exit code 3); nothing imported"),
    (boom, CheckProcessFailed, "RuntimeError: boom"),
    (refuse, InvalidInput, "channel: closed for the test"),
], ids=["dies", "raises", "refuses"])
def test_a_child_that_fails_fails_the_import_and_stores_nothing(
        ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        two_processes: list[list[int]], act: Any, error: type[Exception],
        message: str) -> None:
    set_up(ledger, tmp_path)
    path = year_file(ledger, tmp_path)
    before = (stored_count(ledger), ledger.fund_positions())
    in_the_child(monkeypatch, act)

    with pytest.raises(error) as exc:
        import_contributions(ledger, path, actor="op1")

    assert message in str(exc.value)
    if isinstance(exc.value, InvalidInput):   # re-raised as it was raised
        assert (exc.value.field, exc.value.rule) == ("channel", "closed for the test")
    assert (stored_count(ledger), ledger.fund_positions()) == before
    # The parent's connections are untouched by the child: the same file imports after.
    monkeypatch.undo()
    assert import_contributions(ledger, path, actor="op1")["lines"] > len(PEOPLE)


def test_a_child_that_hangs_is_given_up_on(
        sqlite_ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        two_processes: list[list[int]]) -> None:
    set_up(sqlite_ledger, tmp_path)
    path = year_file(sqlite_ledger, tmp_path)
    before = stored_count(sqlite_ledger)
    monkeypatch.setattr(forked, "CHILD_WAIT_S", 1.0)
    in_the_child(monkeypatch, lambda: time.sleep(60))

    start = time.monotonic()
    with pytest.raises(CheckProcessFailed) as exc:
        import_contributions(sqlite_ledger, path, actor="op1")

    assert "gave no answer in 1 s" in str(exc.value)
    assert time.monotonic() - start < 30
    assert stored_count(sqlite_ledger) == before


def test_the_mapping_self_check_runs_in_the_child(
        sqlite_ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        two_processes: list[list[int]]) -> None:
    set_up(sqlite_ledger, tmp_path)
    path = year_file(sqlite_ledger, tmp_path)
    log = tmp_path / "validated.log"
    validated = bulk._ContributionMapper._validated

    def logged(self: bulk._ContributionMapper, *args: Any) -> int:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return validated(self, *args)

    monkeypatch.setattr(bulk._ContributionMapper, "_validated", logged)
    import_contributions(sqlite_ledger, path, actor="op1")

    [(_, child_lines)] = two_processes
    by_process = log.read_text().split()
    child = [pid for pid in by_process if pid != str(os.getpid())]
    # The first line of each form and every CHECK_EVERY-th line, in the child too.
    assert len(child) >= child_lines // bulk.CHECK_EVERY > 5


def test_a_learnt_mapping_that_is_wrong_in_the_child_fails_the_import(
        sqlite_ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        two_processes: list[list[int]]) -> None:
    set_up(sqlite_ledger, tmp_path)
    path = year_file(sqlite_ledger, tmp_path)
    before = stored_count(sqlite_ledger)
    parent = os.getpid()
    learn = bulk._ContributionMapper._learn

    def wrong(self: bulk._ContributionMapper, *args: Any) -> bulk._Form:
        form = learn(self, *args)
        if os.getpid() != parent:    # a JSON the mapper would not make
            form.received_tail += b" "
        return form

    monkeypatch.setattr(bulk._ContributionMapper, "_learn", wrong)
    with pytest.raises(CheckProcessFailed) as exc:
        import_contributions(sqlite_ledger, path, actor="op1")
    assert "AssertionError" in str(exc.value)
    assert stored_count(sqlite_ledger) == before


# ---- which files go to two processes ---------------------------------------------------------

def test_small_files_and_in_memory_stores_are_checked_in_one_process(
        sqlite_ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "PARALLEL_MIN_LINES", 100)
    memory = Ledger(":memory:", cipher_key="")
    try:
        assert bulk._in_two(sqlite_ledger, "line\n" * 100)
        assert not bulk._in_two(sqlite_ledger, "line\n" * 99)
        assert not bulk._in_two(memory, "line\n" * 1000)
    finally:
        memory.close()


def test_a_participant_is_in_one_share_whatever_the_case_of_the_check_letter() -> None:
    id_number = next(person_id(n) for n in PEOPLE if person_id(n).endswith("X"))
    assert share_of(id_number) == share_of(id_number.lower())
    assert {share_of(person_id(n)) for n in PEOPLE} == {0, 1}
