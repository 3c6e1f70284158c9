"""Idempotency: the same key with the same payload returns the first result and books
nothing; the same key with another payload is a conflict. A retry never books twice."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from ledger.application import Ledger
from ledger.errors import IdempotencyConflict, InvalidInput, Refused
from tests.helpers import contribute, enrol, make_id, stored

X_ID = "11010519491231002X"



def test_a_repeated_contribution_returns_the_first_result_and_books_nothing(
        ledger: Ledger) -> None:
    idn = make_id(1)
    enrol(ledger, idn)
    first = contribute(ledger, idn, 2016, 50000)
    assert "replayed" not in first
    before = stored(ledger)
    again = contribute(ledger, idn, 2016, 50000)
    assert again == {**first, "replayed": True}
    assert stored(ledger) == before
    assert ledger.participant(idn).sources["contribution"] == 50000


def test_the_receipt_number_is_the_business_key_of_a_contribution(ledger: Ledger) -> None:
    a, b = make_id(2), make_id(3)
    enrol(ledger, a)
    enrol(ledger, b)
    contribute(ledger, a, 2016, 50000, receipt_no="BANK-7")
    before = stored(ledger)
    # The same receipt with another amount, year or participant is not a retry.
    for change in ({"tier_fen": 20000}, {"year": 2017}):
        kwargs = {"tier_fen": 50000, "year": 2016, **change}
        with pytest.raises(IdempotencyConflict) as e:
            contribute(ledger, a, receipt_no="BANK-7", **kwargs)  # type: ignore[arg-type]
        assert e.value.field == "idempotency_key"
        assert "'contribution:BANK-7' was already used with a different payload" in str(e.value)
    with pytest.raises(IdempotencyConflict):
        contribute(ledger, b, 2016, 50000, receipt_no="BANK-7")
    # Under a key of its own, the receipt is still refused: it is booked fund-wide.
    with pytest.raises(Refused) as refused:
        contribute(ledger, b, 2016, 50000, receipt_no="BANK-7", idempotency_key="b-2016")
    assert refused.value.field == "receipt_no"
    assert refused.value.rule == "receipt BANK-7 is already booked"
    # A collective subsidy cannot reuse it either.
    with pytest.raises(Refused) as refused:
        ledger.credit_collective(id_number=b, year=2016, amount_fen=100, payer="村委会",
                                 receipt_no="BANK-7", value_date=date(2016, 4, 1), actor="op1")
    assert refused.value.field == "receipt_no"
    assert stored(ledger) == before
    assert ledger.participant(b).balance_fen == 0


def test_a_refused_command_leaves_no_receipt_so_the_corrected_command_can_use_the_key(
        ledger: Ledger) -> None:
    idn = make_id(4)
    enrol(ledger, idn)
    with pytest.raises(InvalidInput):
        contribute(ledger, idn, 2016, 50000, amount_fen=40000, idempotency_key="k-4")
    out = contribute(ledger, idn, 2016, 50000, idempotency_key="k-4")
    assert "replayed" not in out
    assert ledger.participant(idn).balance_fen == 50000


def test_a_replay_returns_the_first_result_even_after_the_account_changed(
        ledger: Ledger) -> None:
    idn = make_id(5)
    enrol(ledger, idn)
    first = contribute(ledger, idn, 2016, 20000)
    ledger.subsidise(id_number=idn, year=2016, value_date=date(2016, 6, 30), actor="fin")
    contribute(ledger, idn, 2017, 20000)
    assert contribute(ledger, idn, 2016, 20000) == {**first, "replayed": True}


def test_a_key_used_by_one_command_conflicts_with_any_other_command(ledger: Ledger) -> None:
    idn = make_id(6)
    enrol(ledger, idn, idempotency_key="shared")
    before = stored(ledger)
    with pytest.raises(IdempotencyConflict):
        contribute(ledger, idn, 2016, idempotency_key="shared")
    assert stored(ledger) == before


@pytest.mark.parametrize("key", ["", "k" * 201])
def test_an_idempotency_key_is_1_to_200_characters(ledger: Ledger, key: str) -> None:
    before = stored(ledger)
    with pytest.raises(InvalidInput) as e:
        enrol(ledger, make_id(7), idempotency_key=key)
    assert e.value.field == "idempotency_key"
    assert e.value.rule == "must be 1 to 200 characters"
    assert stored(ledger) == before


def _commands(ledger: Ledger) -> list[tuple[str, Callable[[], dict[str, Any]],
                                            Callable[[], dict[str, Any]]]]:
    """(name, command, the same key with another payload), in an order that works."""
    idn = make_id(8, born=date(1950, 1, 1))
    return [
        ("enrol", lambda: enrol(ledger, idn, enrol_date=date(2010, 1, 10), idempotency_key="e"),
         lambda: enrol(ledger, idn, enrol_date=date(2010, 1, 11), idempotency_key="e")),
        ("contribute", lambda: contribute(ledger, idn, 2010, 10000),
         lambda: contribute(ledger, idn, 2010, 20000)),
        ("subsidise", lambda: ledger.subsidise(id_number=idn, year=2010,
                                               value_date=date(2010, 6, 30), actor="fin"),
         lambda: ledger.subsidise(id_number=idn, year=2010, value_date=date(2010, 7, 1),
                                  actor="fin")),
        ("collective", lambda: ledger.credit_collective(
            id_number=idn, year=2010, amount_fen=3000, payer="村委会", receipt_no="C-8",
            value_date=date(2010, 4, 1), actor="op1"),
         lambda: ledger.credit_collective(
            id_number=idn, year=2010, amount_fen=3001, payer="村委会", receipt_no="C-8",
            value_date=date(2010, 4, 1), actor="op1")),
        ("group", lambda: ledger.change_identity_group(
            id_number=idn, group="minimum_living", effective_from=date(2011, 1, 1), actor="op1",
            idempotency_key="g"),
         lambda: ledger.change_identity_group(
            id_number=idn, group="destitute", effective_from=date(2011, 1, 1), actor="op1",
            idempotency_key="g")),
        ("apply", lambda: ledger.apply_for_pension(id_number=idn, start_month="2011-01",
                                                   actor="op1", idempotency_key="ap"),
         lambda: ledger.apply_for_pension(id_number=idn, start_month="2011-02", actor="op1",
                                          idempotency_key="ap")),
        ("approve", lambda: ledger.approve_pension(id_number=idn, actor="approver",
                                                   idempotency_key="av"),
         lambda: ledger.approve_pension(id_number=make_id(9), actor="approver",
                                        idempotency_key="av")),
        ("suspend", lambda: ledger.suspend(id_number=idn, reason_code="no_proof_of_life",
                                           from_month="2012-03", actor="op1",
                                           idempotency_key="s"),
         lambda: ledger.suspend(id_number=idn, reason_code="imprisoned", from_month="2012-03",
                                actor="op1", idempotency_key="s")),
        ("resume", lambda: ledger.resume(id_number=idn, from_month="2012-06", actor="op1",
                                         idempotency_key="r"),
         lambda: ledger.resume(id_number=idn, from_month="2012-07", actor="op1",
                               idempotency_key="r")),
        ("decease", lambda: ledger.decease(id_number=idn, date_of_death=date(2013, 1, 5),
                                           reported_on=date(2013, 3, 1), actor="op1",
                                           idempotency_key="d"),
         lambda: ledger.decease(id_number=idn, date_of_death=date(2013, 1, 6),
                                reported_on=date(2013, 3, 1), actor="op1",
                                idempotency_key="d")),
        ("assess", lambda: ledger.assess_overpayment(
            id_number=idn, amount_fen=500, months=["2013-02"], reason="paid after death",
            value_date=date(2013, 3, 2), actor="audit", idempotency_key="o"),
         lambda: ledger.assess_overpayment(
            id_number=idn, amount_fen=600, months=["2013-02"], reason="paid after death",
            value_date=date(2013, 3, 2), actor="audit", idempotency_key="o")),
        ("recover", lambda: ledger.recover_overpayment(
            id_number=idn, amount_fen=500, channel="offset_account", value_date=date(2013, 3, 3),
            actor="fin", idempotency_key="rc"),
         lambda: ledger.recover_overpayment(
            id_number=idn, amount_fen=500, channel="family", value_date=date(2013, 3, 3),
            actor="fin", idempotency_key="rc")),
        ("settle", lambda: ledger.settle_balance(id_number=idn, how="inheritance", payee="家属",
                                                 value_date=date(2013, 3, 4), actor="op1",
                                                 idempotency_key="st"),
         lambda: ledger.settle_balance(id_number=idn, how="inheritance", payee="另一家属",
                                       value_date=date(2013, 3, 4), actor="op1",
                                       idempotency_key="st")),
        ("treasury", lambda: ledger.receive_treasury_funds(
            amount_fen=9000, level="central", purpose="basic_pension", value_date=date(2013, 1, 2),
            reference="T-8", actor="fin"),
         lambda: ledger.receive_treasury_funds(
            amount_fen=9000, level="province", purpose="basic_pension",
            value_date=date(2013, 1, 2), reference="T-8", actor="fin")),
        ("sweep", lambda: ledger.sweep(amount_fen=10000, value_date=date(2013, 1, 31),
                                       reference="S-8", actor="fin"),
         lambda: ledger.sweep(amount_fen=10001, value_date=date(2013, 1, 31), reference="S-8",
                              actor="fin")),
        ("appropriate", lambda: ledger.appropriate(amount_fen=19000,
                                                   value_date=date(2013, 2, 1), reference="A-8",
                                                   actor="fin"),
         lambda: ledger.appropriate(amount_fen=1, value_date=date(2013, 2, 1), reference="A-8",
                                    actor="fin")),
        ("bank-interest", lambda: ledger.earn_bank_interest(
            account="expenditure", amount_fen=7, value_date=date(2013, 3, 21), reference="I-8",
            actor="fin"),
         lambda: ledger.earn_bank_interest(
            account="income", amount_fen=7, value_date=date(2013, 3, 21), reference="I-8",
            actor="fin")),
        ("publish-rules", lambda: ledger.publish_rules(
            date(2014, 1, 1), ledger.rules_on(date(2013, 1, 1)).parameters, "same again",
            actor="admin", idempotency_key="pr"),
         lambda: ledger.publish_rules(
            date(2014, 1, 2), ledger.rules_on(date(2013, 1, 1)).parameters, "same again",
            actor="admin", idempotency_key="pr")),
    ]


def test_every_keyed_command_replays_its_first_result_and_refuses_a_changed_payload(
        ledger: Ledger) -> None:
    """Each command of the ledger, in turn: run it, retry it, then reuse its key wrongly."""
    for name, command, conflicting in _commands(ledger):
        first = command()
        before = stored(ledger)
        assert command() == {**first, "replayed": True}, name
        assert stored(ledger) == before, name
        with pytest.raises(IdempotencyConflict):
            conflicting()
        assert stored(ledger) == before, name


def test_a_retry_that_spells_the_same_id_differently_is_still_the_same_command(
        ledger: Ledger) -> None:
    enrol(ledger, X_ID, enrol_date=date(2010, 1, 10))
    first = ledger.decease(id_number=X_ID, date_of_death=date(2013, 1, 5),
                           reported_on=date(2013, 3, 1), actor="op1", idempotency_key="d")
    before = stored(ledger)
    again = ledger.decease(id_number=X_ID.lower(), date_of_death=date(2013, 1, 5),
                           reported_on=date(2013, 3, 1), actor="op1", idempotency_key="d")
    assert again == {**first, "replayed": True}
    assert stored(ledger) == before


def test_contribute_treats_the_same_id_spelled_differently_as_the_same_command(
        ledger: Ledger) -> None:
    enrol(ledger, X_ID, enrol_date=date(2010, 1, 10))
    first = contribute(ledger, X_ID, 2010, 10000, receipt_no="R-X")
    again = contribute(ledger, " " + X_ID.lower(), 2010, 10000, receipt_no="R-X")
    assert again == {**first, "replayed": True}
