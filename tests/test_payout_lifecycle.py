"""A batch's life: drafted once, approved by a second person for its exact manifest hash,
funded once, exported only after funding and only as the approved bytes, answered by the
bank file by file (the same file twice books nothing; a bad file is refused whole)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from uuid import UUID

import pytest

from ledger import disbursement
from ledger.aggregates.participant import Participant
from ledger.aggregates.payout_batch import PayoutBatch
from ledger.application import Ledger
from ledger.errors import Refused
from ledger.postings import EXPENDITURE, FISCAL, IN_FLIGHT
from payout_engine import export, returns_import, run
from payout_engine.bankfiles import MalformedFile, ManifestError, TotalsMismatch
from payout_engine.config import PayoutConfig
from tests.helpers import make_id
from tests.test_payout_support import (
    APPROVER,
    BANK,
    CONFIG,
    FINANCE,
    OPERATOR,
    account,
    draft,
    pacs004,
    pain002,
    pay,
    pension_events,
    pid,
    send,
    transitional,
    treasury,
)


def events_of(ledger: Ledger, batch: PayoutBatch) -> int:
    return len(list(ledger.events.get(batch.id)))


def stored_event_count(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


@pytest.fixture
def three(ledger: Ledger) -> Ledger:
    treasury(ledger)
    for n in (1, 2, 3):
        transitional(ledger, n)
    return ledger


def test_a_month_is_drafted_once_whatever_the_number_of_runs(three: Ledger) -> None:
    first = draft(three, "2020-04")
    events = stored_event_count(three)
    again = draft(three, "2020-04")
    assert (again.id, again.manifest_sha256, again.state) == (first.id, first.manifest_sha256,
                                                              "drafted")
    assert stored_event_count(three) == events
    assert (first.period, first.sequence, first.line_count) == ("2020-04", 1, 3)
    assert first.total_fen == sum(line.amount_fen for line in first.lines.values())
    with pytest.raises(Refused, match="drafted as pain001 files, not domestic"):
        draft(three, "2020-04", file_format="domestic")


def test_the_drafter_cannot_approve_and_only_the_drafted_hash_is_approved(
        three: Ledger) -> None:
    batch = draft(three, "2020-04")
    with pytest.raises(Refused, match="maker-checker"):
        run.approve(three, batch.id, batch.manifest_sha256, OPERATOR)
    with pytest.raises(Refused, match="does not match the drafted batch's manifest"):
        run.approve(three, batch.id, "0" * 64, APPROVER)
    assert disbursement.get_batch(three, batch.id).state == "drafted"
    approved, now = run.approve(three, batch.id, batch.manifest_sha256, APPROVER)
    assert (approved.state, approved.approved_by, now) == ("approved", APPROVER, True)
    again, now = run.approve(three, batch.id, batch.manifest_sha256, APPROVER)
    assert (again.version, now) == (approved.version, False)


def test_funding_moves_the_money_once(three: Ledger) -> None:
    batch = draft(three, "2020-04")
    with pytest.raises(Refused, match="only after approval"):
        run.fund(three, batch.id, value_date=date(2020, 4, 10), actor=FINANCE)
    run.approve(three, batch.id, batch.manifest_sha256, APPROVER)
    before = three.fund_positions()
    first = run.fund(three, batch.id, value_date=date(2020, 4, 10), actor=FINANCE)
    second = run.fund(three, batch.id, value_date=date(2020, 4, 10), actor=FINANCE)
    assert first == {"payments": 3, "total_fen": batch.total_fen}
    assert second["replayed"] is True
    after = three.fund_positions()
    assert before[FISCAL] - after[FISCAL] == after[IN_FLIGHT] == batch.total_fen
    for n in (1, 2, 3):
        assert three.queries.paid_month_count(pid(_id(n))) == 1


def _id(n: int) -> str:
    return make_id(n, born=date(1950, 3, 15))  # as transitional() makes them


def test_export_comes_after_funding_and_writes_only_the_approved_bytes(
        three: Ledger, tmp_path: Path) -> None:
    batch = draft(three, "2020-04", file_format="pain001")
    for step in ("drafted", "approved"):
        with pytest.raises(Refused, match="exported only after the batch is approved and "
                                          "funded"):
            export.export_batch(three, batch.id, tmp_path / "x", file_format="pain001",
                                actor=OPERATOR, config=CONFIG)
        if step == "drafted":
            run.approve(three, batch.id, batch.manifest_sha256, APPROVER)
    assert not (tmp_path / "x").exists()
    run.fund(three, batch.id, value_date=date(2020, 4, 10), actor=FINANCE)
    with pytest.raises(Refused, match="approved as pain001 files, not domestic"):
        export.export_batch(three, batch.id, tmp_path / "x", file_format="domestic",
                            actor=OPERATOR, config=CONFIG)
    # Another debtor account or file size would make other bytes: refused, nothing written.
    other = PayoutConfig(fund_account_number="1000000002")
    with pytest.raises(Refused, match="not the approved"):
        export.export_batch(three, batch.id, tmp_path / "x", file_format="pain001",
                            actor=OPERATOR, config=other)
    assert not (tmp_path / "x").exists()

    out = tmp_path / "out"
    result = export.export_batch(three, batch.id, out, file_format="pain001", actor=OPERATOR,
                                 config=CONFIG)
    assert result.recorded and result.manifest_sha256 == batch.manifest_sha256
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([*result.files, "manifest.json"])
    assert all(os.stat(out / n).st_mode & 0o777 == 0o600 for n in names)
    content = {n: (out / n).read_bytes() for n in names}
    events = events_of(three, batch)

    again = export.export_batch(three, batch.id, out, file_format="pain001", actor=OPERATOR,
                                config=CONFIG)
    assert not again.recorded and events_of(three, batch) == events
    assert {n: (out / n).read_bytes() for n in names} == content
    exported = disbursement.get_batch(three, batch.id)
    assert (exported.state, exported.exported_files) == ("exported", result.files)

    # A file changed on disk after the export is refused by name, never overwritten.
    tampered = out / result.files[0]
    tampered.write_bytes(tampered.read_bytes().replace(b"<Nm>", b"<Nm>X", 1))
    with pytest.raises(ManifestError, match=result.files[0]):
        export.export_batch(three, batch.id, out, file_format="pain001", actor=OPERATOR,
                            config=CONFIG)


def _sent(three: Ledger, tmp_path: Path) -> PayoutBatch:
    batch, _ = send(three, "2020-04", tmp_path, file_format="pain001")
    return batch


def test_the_bank_answers_are_booked_once_per_file(three: Ledger, tmp_path: Path) -> None:
    batch = _sent(three, tmp_path)
    record = batch.comparison["files"][0]
    amounts = {e: line.amount_fen for e, line in batch.lines.items()}
    e1, e2, e3 = sorted(amounts)
    report = tmp_path / "pain002.xml"
    report.write_bytes(pain002(record, {e1: ("ACSC", ""), e2: ("RJCT", "AC04"),
                                        e3: ("ACCP", "")}, amounts))
    summary = returns_import.import_returns(three, report, actor=BANK, config=CONFIG)
    assert summary["batches"][0] | {"batch_id": None} == {
        "batch": "2020-04/1", "batch_id": None, "settled": 1, "failed": 1, "returned": 0,
        "settled_fen": amounts[e1], "failed_fen": amounts[e2], "returned_fen": 0,
        "already_booked": 0, "replayed": False, "answered": 2, "payments": 3,
        "closed": False}
    assert summary["pending"] == 1
    assert [h["end_to_end_id"] for h in summary["held"]] == [e2]
    assert summary["held"][0]["id_number"].count("*") == 8
    positions = three.fund_positions()
    assert positions[EXPENDITURE] == amounts[e2]
    assert positions[IN_FLIGHT] == amounts[e3]

    events = stored_event_count(three)
    again = returns_import.import_returns(three, report, actor=BANK, config=CONFIG)
    assert again["batches"][0]["already_booked"] == 2 and again["batches"][0]["failed"] == 0
    assert stored_event_count(three) == events and three.fund_positions() == positions

    # The last payment settles, then comes back: the deceased holder's pension is suspended.
    settled = tmp_path / "pain002-2.xml"
    settled.write_bytes(pain002(record, {e3: ("ACSC", "")}, amounts, msg_id="BANK-P002-2"))
    closing = returns_import.import_returns(three, settled, actor=BANK, config=CONFIG)
    assert closing["batches"][0]["closed"] is True
    back = tmp_path / "pacs004.xml"
    back.write_bytes(pacs004({e3: (amounts[e3], "MD07")}))
    summary = returns_import.import_returns(three, back, actor=BANK, config=CONFIG)
    assert summary["batches"][0]["returned"] == 1
    assert [d["end_to_end_id"] for d in summary["death_checks"]] == [e3]
    line = batch.lines[e3]
    assert three.repository.get(line.participant_id).status == "suspended"
    assert three.fund_positions()[EXPENDITURE] == amounts[e2] + amounts[e3]
    assert three.fund_positions()[IN_FLIGHT] == 0
    assert returns_import.import_returns(three, back, actor=BANK, config=CONFIG)[
        "batches"][0]["already_booked"] == 1


class _DiskGone(Exception):
    pass


def test_a_return_file_naming_two_batches_is_booked_whole_or_not_at_all(
        three: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two months paid and settled; then the bank returns, in one pacs.004, April's payment
    # to one pensioner and May's to another.
    april = pay(three, "2020-04", tmp_path)
    may = pay(three, "2020-05", tmp_path)
    (e_april, l_april), *_ = sorted(april.lines.items())
    e_may, l_may = next((e, line) for e, line in sorted(may.lines.items())
                        if line.participant_id != l_april.participant_id)
    back = {e_april: (l_april.amount_fen, "AC04"), e_may: (l_may.amount_fen, "AC04")}
    path = tmp_path / "pacs004.xml"
    path.write_bytes(pacs004(back))
    before = (three.fund_positions(), stored_event_count(three))

    # Booking fails when it comes to May's payment (after April's is booked, if each
    # batch had its own transaction).
    read = three.participants_of

    def failing_read(pids: Sequence[UUID]) -> list[Participant]:
        if l_may.participant_id in pids:
            raise _DiskGone
        return read(pids)

    monkeypatch.setattr(three, "participants_of", failing_read)
    with pytest.raises(_DiskGone):
        returns_import.import_returns(three, path, actor=BANK, config=CONFIG)
    monkeypatch.undo()
    # Nothing of the file is booked, for either month.
    assert (three.fund_positions(), stored_event_count(three)) == before
    for b in (april, may):
        assert disbursement.get_batch(three, b.id).outcomes == b.outcomes

    summary = returns_import.import_returns(three, path, actor=BANK, config=CONFIG)
    assert [(x["batch"], x["returned"], x["replayed"]) for x in summary["batches"]] == [
        ("2020-04/1", 1, False), ("2020-05/1", 1, False)]
    after = three.fund_positions()
    assert after[EXPENDITURE] - before[0][EXPENDITURE] == sum(a for a, _ in back.values())
    again = returns_import.import_returns(three, path, actor=BANK, config=CONFIG)
    assert [x["already_booked"] for x in again["batches"]] == [1, 1]
    assert three.fund_positions() == after


@pytest.mark.parametrize("spoil, error, match", [
    ("unknown", MalformedFile, "EndToEndId P20200401F{24} is not in PO-202004-01-0001"),
    ("foreign", Refused, "is not a payout file of this fund"),
    ("ctrl_sum", TotalsMismatch, "OrgnlCtrlSum"),
    ("truncated", MalformedFile, "not well-formed"),
    ("amount", TotalsMismatch, "amount"),
])
def test_a_bad_return_file_is_refused_whole(three: Ledger, tmp_path: Path, spoil: str,
                                            error: type[Exception], match: str) -> None:
    batch = _sent(three, tmp_path)
    record = dict(batch.comparison["files"][0])
    amounts = {e: line.amount_fen for e, line in batch.lines.items()}
    e1, e2, _ = sorted(amounts)
    statuses = {e1: ("ACSC", ""), e2: ("RJCT", "AC04")}
    if spoil == "unknown":
        statuses["P20200401" + "F" * 24] = ("RJCT", "AC01")
        amounts["P20200401" + "F" * 24] = 100
    if spoil == "foreign":
        record["message_id"] = "OTHER-0001"
    body = pain002(record, statuses, amounts,
                   ctrl_sum_fen=1 if spoil == "ctrl_sum" else None)
    if spoil == "truncated":
        body = body[:-40]
    if spoil == "amount":
        body = body.replace(b'Ccy="CNY">', b'Ccy="CNY">1', 1)
    path = tmp_path / "answer.xml"
    path.write_bytes(body)
    positions, events = three.fund_positions(), stored_event_count(three)
    with pytest.raises(error, match=match) as caught:
        returns_import.import_returns(three, path, actor=BANK, config=CONFIG)
    assert "nothing booked" in str(caught.value)
    assert three.fund_positions() == positions and stored_event_count(three) == events
    assert disbursement.get_batch(three, batch.id).outcomes == {}


def test_a_domestic_return_with_wrong_totals_is_refused_whole(
        three: Ledger, tmp_path: Path) -> None:
    from payout_engine.bankfiles.domestic import write_domestic_return

    batch, files = send(three, "2020-04", tmp_path)
    answer = write_domestic_return(files[0].read_bytes(), {})
    spoiled = answer[:-2].rsplit(b"\r\n", 1)
    trailer = spoiled[1]
    bad = spoiled[0] + b"\r\n" + trailer[:1] + b"0000000009" + trailer[11:] + b"\r\n"
    path = tmp_path / "ret.txt"
    path.write_bytes(bad)
    with pytest.raises(TotalsMismatch, match="nothing booked"):
        returns_import.import_returns(three, path, actor=BANK, config=CONFIG)
    assert disbursement.get_batch(three, batch.id).outcomes == {}


def test_a_held_pensioner_is_paid_the_missed_months_once_the_bank_details_change(
        three: Ledger, tmp_path: Path) -> None:
    held = _id(2)
    pay(three, "2020-04", tmp_path, failures={held: "AC04"})
    may = pay(three, "2020-05", tmp_path)
    assert pid(held) not in {line.participant_id for line in may.lines.values()}
    three.change_bank_details(id_number=held, bank=account(22), actor=OPERATOR)
    june = pay(three, "2020-06", tmp_path)
    line = next(line for line in june.lines.values() if line.participant_id == pid(held))
    assert line.months == ["2020-04", "2020-05", "2020-06"]
    assert line.account_number == account(22).account_number
    assert {r["reason"] for r in june.comparison["reasons"]} == {"arrears_paid"}
    assert [type(e).__name__ for e in pension_events(three, held)] == [
        "PensionPaid", "PensionPaymentReversed", "PensionPaid"]
    assert three.queries.paid_month_count(pid(held)) == 3


def test_months_are_run_in_order(three: Ledger, tmp_path: Path) -> None:
    with pytest.raises(Refused, match="nobody is owed a pension for 2020-03"):
        draft(three, "2020-03")
    draft(three, "2020-04", file_format="domestic")
    with pytest.raises(Refused, match="2020-04/1 is drafted but not funded"):
        draft(three, "2020-05")
    pay(three, "2020-04", tmp_path)
    draft(three, "2020-06")
    with pytest.raises(Refused, match="of a later month is already drafted"):
        draft(three, "2020-05")


@pytest.mark.skipif(not hasattr(disbursement, "cancel"),
                    reason="the ledger has no PayoutBatch.Cancelled yet")
def test_a_batch_the_register_outgrew_is_cancelled_and_the_month_drafted_again(
        three: Ledger, tmp_path: Path) -> None:
    first = draft(three, "2020-04", file_format="domestic")
    run.approve(three, first.id, first.manifest_sha256, APPROVER)
    three.decease(id_number=_id(1), date_of_death=date(2020, 3, 20),
                  reported_on=date(2020, 4, 2), actor=OPERATOR)
    with pytest.raises(Refused, match="draft the month again"):
        run.fund(three, first.id, value_date=date(2020, 4, 10), actor=FINANCE)
    run.cancel(three, first.id, "a pensioner died before funding", OPERATOR)
    with pytest.raises(Refused, match="only a drafted or approved batch is cancelled"):
        run.cancel(three, first.id, "again", OPERATOR)
    second = draft(three, "2020-04", file_format="domestic")
    assert (second.sequence, second.line_count) == (2, 2)
    assert draft(three, "2020-04", file_format="domestic").id == second.id
    assert not set(first.lines) & set(second.lines)  # other EndToEndIds, other files
    pay(three, "2020-04", tmp_path)
    assert disbursement.get_batch(three, second.id).state == "closed"
    assert disbursement.get_batch(three, first.id).state == "cancelled"


@pytest.mark.skipif(hasattr(disbursement, "cancel"), reason="the ledger can cancel")
def test_cancelling_says_what_the_ledger_lacks(three: Ledger) -> None:
    batch = draft(three, "2020-04")
    with pytest.raises(Refused, match="PayoutBatch.Cancelled is missing"):
        run.cancel(three, batch.id, "register changed", OPERATOR)
