"""A fine for obtaining the pension by fraud (冒领, 骗取社会保险待遇): two to five times what was
obtained, on money first assessed as an overpayment; the treasury's money, kept in memorandum
accounts that net to zero and never touch the fund's own."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.aggregates.participant import fine_bounds_fen
from ledger.application import Ledger
from ledger.errors import IdempotencyConflict, InvalidInput, Refused
from ledger.postings import FINES_DUE_TO_TREASURY, FINES_RECEIVABLE, postings_for
from ledger.projections import ProjectionRunner, Views
from tests.helpers import enrol, make_id, refused
from tests.test_cli import ok
from tests.test_cli import refused as cli_refused

ID = make_id(1, date(1950, 2, 2))


def overpaid(ledger: Ledger, amount_fen: int = 30_000) -> None:
    """A pensioner's family kept collecting after the death: amount_fen assessed."""
    enrol(ledger, ID)
    ledger.assess_overpayment(id_number=ID, amount_fen=amount_fen, months=["2024-04"],
                              reason="paid after death, concealed", value_date=date(2024, 5, 6),
                              actor="op1")


def fine(ledger: Ledger, amount_fen: int = 60_000, defrauded_fen: int = 30_000,
         decision_no: str = "人社罚〔2024〕7号", **kw: Any) -> dict[str, Any]:
    return ledger.impose_fine(id_number=ID, amount_fen=amount_fen, defrauded_fen=defrauded_fen,
                              decision_no=decision_no,
                              value_date=kw.pop("value_date", date(2024, 6, 1)), actor="op1",
                              **kw)


def test_a_fine_is_owed_to_the_treasury_until_paid_and_never_touches_the_fund(
        ledger: Ledger) -> None:
    overpaid(ledger)
    before = ledger.fund_positions()
    assert fine(ledger)["result"] == {"fines_outstanding_fen": 60_000}
    paid = ledger.pay_fine(id_number=ID, amount_fen=20_000, reference="国库-001",
                           value_date=date(2024, 7, 1), actor="op1")
    assert paid["result"] == {"fines_outstanding_fen": 40_000}
    assert ledger.fund_positions() == before
    p = ledger.participant(ID)
    assert (p.fines_outstanding_fen, p.overpayment_fen) == (40_000, 30_000)
    imposed, part = [e for e in ledger.events.get(p.id)
                     if type(e).__name__ in ("FineImposed", "FinePaid")]
    assert sorted((x.account, x.amount_fen) for x in postings_for(imposed)) == [
        (FINES_RECEIVABLE, 60_000), (FINES_DUE_TO_TREASURY, -60_000)]
    assert sorted((x.account, x.amount_fen) for x in postings_for(part)) == [
        (FINES_RECEIVABLE, -20_000), (FINES_DUE_TO_TREASURY, 20_000)]

    ProjectionRunner(ledger).run_until_caught_up()
    views = Views(ledger)
    assert views.balances(date(2024, 6, 30))["accounts"][FINES_RECEIVABLE] == 60_000
    assert views.balances()["accounts"][FINES_RECEIVABLE] == 40_000
    assert views.trial_balance()["net_fen"] == 0


@pytest.mark.parametrize("fine_fen", [60_000, 100_000, 150_000])
def test_two_to_five_times_what_was_obtained_is_a_lawful_fine(ledger: Ledger,
                                                              fine_fen: int) -> None:
    overpaid(ledger)
    assert fine(ledger, amount_fen=fine_fen)["result"]["fines_outstanding_fen"] == fine_fen


@pytest.mark.parametrize(("change", "error", "field", "rule"), [
    ({"amount_fen": 59_999}, Refused, "fine",
     "two to five times what was obtained: 600.00 to 1500.00 yuan for 300.00 yuan"),
    ({"amount_fen": 150_001}, Refused, "fine", "600.00 to 1500.00 yuan"),
    # 600.00 assessed, a fine on 300.00 of it already.
    ({"defrauded_fen": 30_001, "amount_fen": 90_000}, Refused, "defrauded",
     "300.01 yuan is more than the 300.00 yuan assessed and not fined yet"),
    ({"decision_no": "D-0"}, Refused, "decision_no", "decision D-0 is already booked"),
    ({"decision_no": " "}, InvalidInput, "decision_no", "must be 1 to 64 characters"),
    ({"amount_fen": 0}, InvalidInput, "fine", "must be greater than zero"),
    ({"defrauded_fen": -1}, InvalidInput, "defrauded", "must not be negative"),
])
def test_a_fine_out_of_bounds_is_refused_and_nothing_is_stored(
        ledger: Ledger, change: dict[str, Any], error: type[Exception], field: str,
        rule: str) -> None:
    overpaid(ledger, 60_000)
    fine(ledger, decision_no="D-0", defrauded_fen=30_000, amount_fen=60_000)
    refused(ledger, error, field, rule, lambda: fine(ledger, **change))  # type: ignore[arg-type]


def test_a_fine_needs_an_overpayment_assessed_first(ledger: Ledger) -> None:
    enrol(ledger, ID)
    refused(ledger, Refused, "defrauded", "assessed first as an overpayment",
            lambda: fine(ledger))


def test_more_than_is_outstanding_cannot_be_paid(ledger: Ledger) -> None:
    overpaid(ledger)
    fine(ledger)
    refused(ledger, Refused, "amount", "exceeds the fines outstanding (600.00 yuan)",
            lambda: ledger.pay_fine(id_number=ID, amount_fen=60_001, reference="国库-1",
                                    value_date=date(2024, 7, 1), actor="op1"))


def test_the_treasurys_receipt_books_once(ledger: Ledger) -> None:
    overpaid(ledger)
    fine(ledger)
    first = ledger.pay_fine(id_number=ID, amount_fen=10_000, reference="国库-1",
                            value_date=date(2024, 7, 1), actor="op1")
    again = ledger.pay_fine(id_number=ID, amount_fen=10_000, reference="国库-1",
                            value_date=date(2024, 7, 1), actor="op1")
    assert again == {**first, "replayed": True}
    assert ledger.participant(ID).fines_outstanding_fen == 50_000
    with pytest.raises(IdempotencyConflict):
        ledger.pay_fine(id_number=ID, amount_fen=20_000, reference="国库-1",
                        value_date=date(2024, 7, 1), actor="op1")


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10**9), st.integers(0, 6 * 10**9))
def test_a_fine_is_lawful_exactly_from_two_to_five_times(defrauded: int, fine_fen: int) -> None:
    least, most = fine_bounds_fen(defrauded)
    assert (least <= fine_fen <= most) == (2 * defrauded <= fine_fen <= 5 * defrauded)
    assert least == 2 * defrauded and most == 5 * defrauded


def test_the_command_line_records_a_fine_and_its_payment(tmp_path: Path) -> None:
    db = str(tmp_path / "ledger.db")
    ok(db, "init")
    ok(db, "enrol", "--id", ID, "--name", "王五", "--township", "城关镇", "--village", "东村",
       "--date", "2015-01-10", "--group", "ordinary", "--account-name", "王五",
       "--account-number", "6222000012345678", "--bank-code", "102")
    ok(db, "pensioner", "overpayment", "--id", ID, "--amount", "600.00", "--months", "2024-04",
       "--reason", "paid after death", "--date", "2024-05-06")
    imposed = ok(db, "pensioner", "fine", "--id", ID, "--fine", "900.00", "--defrauded",
                 "300.00", "--decision", "D-1", "--date", "2024-06-01")
    assert imposed["result"] == {"fines_outstanding_fen": 90_000}
    assert "fine: a fine for fraud is two to five times" in cli_refused(
        db, "pensioner", "fine", "--id", ID, "--fine", "1500.01", "--defrauded", "300.00",
        "--decision", "D-2", "--date", "2024-06-01")
    paid = ok(db, "pensioner", "fine-paid", "--id", ID, "--amount", "900.00", "--reference",
              "国库-9", "--date", "2024-07-01")
    assert paid["result"] == {"fines_outstanding_fen": 0}
    history = ok(db, "--role", "auditor", "audit", "history", ID)
    assert [e["event"] for e in history["events"]][-2:] == ["FineImposed", "FinePaid"]
    assert json.dumps(history["events"][-1]["postings_fen"]) == json.dumps(
        {"9001": -90_000, "9002": 90_000})
