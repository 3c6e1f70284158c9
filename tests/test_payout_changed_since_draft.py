"""Property: whatever happens to the pensioners and the rules between the approval of a
month's batch and its funding, funding pays the batch exactly when every line is still what
is owed (the same months and amount, to the same account) by the pensioner as they are now;
otherwise it is refused whole, naming each line no longer owed, and nothing is stored. When
it pays, each pensioner's registers agree with a replay of their events."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ledger import disbursement
from ledger.application import Ledger
from ledger.errors import LedgerError, Refused
from ledger.payout import due_for, facts_of
from payout_engine import run
from tests.conftest import examples
from tests.test_payout_support import (
    APPROVER,
    FINANCE,
    OPERATOR,
    account,
    contributor,
    county_raise,
    draft,
    pid,
    transitional,
    treasury,
)

PERIOD = "2020-04"
# Changes that leave the lines owed come up more often, so that some batches are funded.
CHANGES = ("none", "none", "none", "interest", "interest", "same_bank", "raise_next_year",
           "die", "suspend", "rebank", "overpay", "raise_now")


@pytest.fixture(scope="module")
def template() -> Iterator[tuple[Path, list[str]]]:
    """Four pensioners (two with an individual account), made once, copied per example."""
    where = Path(tempfile.mkdtemp(prefix="changed-since-draft-"))
    ledger = Ledger(str(where / "template.db"), cipher_key="")
    ledger.init()
    treasury(ledger)
    people = [transitional(ledger, 1), transitional(ledger, 2, born=date(1940, 5, 2)),
              contributor(ledger, 3, tier_fen=10000), contributor(ledger, 4)]
    ledger.close()
    yield where / "template.db", people
    shutil.rmtree(where, ignore_errors=True)


def change(ledger: Ledger, idn: str, what: str, n: int) -> None:
    """One change to a pensioner after the approval (a refused one changes nothing)."""
    try:
        if what == "interest":
            ledger.credit_interest(year=2019, today=date(2020, 4, 3), actor=FINANCE)
        elif what == "die":
            ledger.decease(id_number=idn, date_of_death=date(2020, 3 + n % 2, 20),
                           reported_on=date(2020, 4, 5), actor=OPERATOR)
        elif what == "suspend":
            ledger.suspend(id_number=idn, reason_code="no_proof_of_life", from_month=PERIOD,
                           actor=OPERATOR)
        elif what == "rebank":
            ledger.change_bank_details(id_number=idn, bank=account(500 + n), actor=OPERATOR)
        elif what == "same_bank":
            # Details entered again unchanged: a new version, the same account.
            ledger.change_bank_details(id_number=idn, bank=account(n + 1), actor=OPERATOR)
        elif what in ("raise_now", "raise_next_year"):
            # A rule version: the county's part raised from this month, or from next year.
            county_raise(ledger, date(2020, 4, 1) if what == "raise_now" else date(2021, 1, 1),
                         100 * (n + 1), what)
        elif what == "overpay":
            ledger.assess_overpayment(id_number=idn, amount_fen=3_000, months=["2020-03"],
                                      reason="paid in error", value_date=date(2020, 4, 4),
                                      actor=OPERATOR)
    except LedgerError:
        pass


def still_owed(ledger: Ledger, idn: str, line: object) -> bool:
    """What a draft made now would pay this pensioner, from a replay of their events."""
    f = facts_of(ledger.participant(idn))
    assert f is not None
    rules = ledger.rules_on(date(2020, 4, 1))
    due = due_for(f, PERIOD, lambda on: ledger.rules_on(on),
                  rules.parameters.overpayment_max_deduction_percent)
    if due is None or due.amount_fen <= 0 or f.bank is None:
        return False
    return (list(due.months), due.amount_fen, f.bank.account_number) == (
        line.months, line.amount_fen, line.account_number)  # type: ignore[attr-defined]


@settings(max_examples=examples(40), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(changes=st.lists(st.sampled_from(CHANGES), min_size=4, max_size=4))
def test_funding_pays_exactly_when_every_line_is_still_owed(
        template: tuple[Path, list[str]], changes: list[str]) -> None:
    path, people = template
    where = Path(tempfile.mkdtemp(prefix="changed-example-"))
    shutil.copy(path, where / "ledger.db")
    ledger = Ledger(str(where / "ledger.db"), cipher_key="")
    try:
        batch = draft(ledger, PERIOD)
        run.approve(ledger, batch.id, batch.manifest_sha256, APPROVER)
        for n, (idn, what) in enumerate(zip(people, changes, strict=True)):
            change(ledger, idn, what, n)
        lines = {line.id_number: (e2e, line) for e2e, line in batch.lines.items()}
        owed = {idn: still_owed(ledger, idn, lines[idn][1]) for idn in people}
        before = ledger.recorder.max_notification_id()

        try:
            run.fund(ledger, batch.id, value_date=date(2020, 4, 10), actor=FINANCE)
        except Refused as e:
            event("refused")
            assert not all(owed.values()), str(e)
            assert ledger.recorder.max_notification_id() == before
            for idn in people:
                named = lines[idn][0] in str(e)
                assert named == (not owed[idn]), (idn, str(e))
            return
        event("funded")
        assert all(owed.values()), owed
        assert disbursement.get_batch(ledger, batch.id, lines=False).state == "funded"
        registered = {f.participant_id: f for f in ledger.pensioners()}
        for idn in people:
            p = ledger.participant(idn)
            assert registered[str(p.id)] == facts_of(p)
            assert ledger.queries.register_row(pid(idn)).version == p.version  # type: ignore[union-attr]
            assert ledger.queries.paid_month_count(pid(idn)) == 1
    finally:
        ledger.close()
        shutil.rmtree(where, ignore_errors=True)
