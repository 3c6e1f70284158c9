"""A pension approved in error is revoked before anything was paid on it: the participant
is enrolled again, leaves the register the payout run reads, and may apply and be approved
again. Once a month is paid the approval stands."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from ledger.application import Ledger
from ledger.errors import InvalidInput, LedgerError, Refused
from ledger.projections import ProjectionRunner, Views
from tests.helpers import make_id, refused
from tests.test_payout_support import (
    APPROVER,
    OPERATOR,
    draft,
    pay,
    pid,
    transitional,
    treasury,
)


def registered(ledger: Ledger) -> list[str]:
    return [f.id_number for f in ledger.pensioners()]


def rostered(ledger: Ledger) -> dict[str, str]:
    """The projections' pensioner roster, brought up to date: participant id -> status."""
    ProjectionRunner(ledger).run_until_caught_up()
    return {r["participant_id"]: r["status"] for r in Views(ledger).roster()}


def test_a_pension_approved_in_error_is_revoked_and_approved_again(ledger: Ledger) -> None:
    treasury(ledger)
    idn, other = transitional(ledger, 1), transitional(ledger, 2)
    assert sorted(registered(ledger)) == sorted([idn, other])

    r = ledger.revoke_pension(id_number=idn, reason="approved from the wrong start month",
                              actor=APPROVER)

    p = ledger.participant(idn)
    assert r["participant_id"] == str(p.id)
    assert (p.status, p.pension) == ("enrolled", None)
    assert registered(ledger) == [other]  # the payout run no longer sees them
    batch = draft(ledger, "2020-04")
    assert [line.id_number for line in batch.lines.values()] == [other]
    assert rostered(ledger) == {str(pid(other)): "pensioner"}

    # Applied for and approved again, from the right month.
    ledger.apply_for_pension(id_number=idn, start_month="2020-05", actor=OPERATOR)
    ledger.approve_pension(id_number=idn, actor=APPROVER)
    p = ledger.participant(idn)
    assert p.status == "pensioner" and p.pension is not None
    assert p.pension.start_month == "2020-05"
    assert sorted(registered(ledger)) == sorted([idn, other])
    assert rostered(ledger) == {str(pid(idn)): "pensioner", str(pid(other)): "pensioner"}
    assert Views(ledger).statement(idn)["pension"]["start_month"] == "2020-05"


def test_an_approval_stands_once_a_month_is_paid(ledger: Ledger, tmp_path: Path) -> None:
    treasury(ledger)
    idn = transitional(ledger, 1)
    pay(ledger, "2020-04", tmp_path)
    error = refused(ledger, Refused, "participant", "1 month(s) were paid on this approval",
                    lambda: ledger.revoke_pension(id_number=idn, reason="wrong", actor=APPROVER))
    assert "2020-04 to 2020-04" in str(error)
    assert ledger.queries.paid_month_count(pid(idn)) == 1
    assert registered(ledger) == [idn]


@pytest.mark.parametrize("reason", ["", "   ", "x" * 201])
def test_a_revocation_says_why(ledger: Ledger, reason: str) -> None:
    idn = transitional(ledger, 1)
    refused(ledger, InvalidInput, "reason", "must say why",
            lambda: ledger.revoke_pension(id_number=idn, reason=reason, actor=APPROVER))


def test_only_a_pension_being_paid_is_revoked(ledger: Ledger) -> None:
    idn = transitional(ledger, 1)
    ledger.suspend(id_number=idn, reason_code="no_proof_of_life", from_month="2020-04",
                   actor=OPERATOR)
    refused(ledger, Refused, "participant", "participant is suspended",
            lambda: ledger.revoke_pension(id_number=idn, reason="wrong", actor=APPROVER))
    ledger.resume(id_number=idn, from_month="2020-04", actor=OPERATOR)
    ledger.revoke_pension(id_number=idn, reason="wrong", actor=APPROVER)
    with pytest.raises(LedgerError, match="participant is enrolled"):
        ledger.revoke_pension(id_number=idn, reason="again", actor=APPROVER)
    assert ledger.participant(idn).status == "enrolled"
    assert date(2020, 4, 1)  # the dates above are months of 2020


def test_pensioner_revoke_on_the_command_line(tmp_path: Path) -> None:
    from tests.helpers import ledger_file
    from tests.test_cli import ok
    from tests.test_cli import refused as refused_cli

    idn = make_id(1, born=date(1950, 3, 15))
    db = ledger_file(tmp_path, lambda ledger: transitional(ledger, 1))
    assert refused_cli(db, "pensioner", "revoke", "--id", idn, "--reason", "",
                       actor=APPROVER).startswith("pension-ledger: invalid input: reason:")
    result = ok(db, "pensioner", "revoke", "--id", idn, "--reason", "wrong start month",
                actor=APPROVER)
    assert result["participant_id"] == str(pid(idn))
    assert "participant is enrolled" in refused_cli(
        db, "pensioner", "revoke", "--id", idn, "--reason", "again", actor=APPROVER)
