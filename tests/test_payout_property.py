"""Property: whatever happens to the pensioners, to the rules (raises back-dated over months
already paid) and whatever the bank answers, month after month, nobody is paid twice for a
month, and the money paid is exactly what the rules now say is owed for the months paid.
After a last month in which every hold is lifted and every suspension ends, every living
pensioner has been paid every month owed, once, topped up to the rules as they are."""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ledger import disbursement
from ledger.aggregates.participant import Participant
from ledger.application import Ledger
from ledger.errors import LedgerError
from ledger.payout import owed_at_death
from ledger.postings import EXPENDITURE, FISCAL, IN_FLIGHT
from ledger.resident_id import age_on
from payout_engine import returns_import
from payout_engine.bankfiles.domestic import write_domestic_return
from tests.conftest import examples
from tests.test_payout_support import (
    BANK,
    CONFIG,
    OPERATOR,
    account,
    contributor,
    county_raise,
    months_from,
    pacs004,
    pid,
    send,
    transitional,
    treasury,
)

START = "2020-04"
TREASURY_FEN = 10**10
ACTIONS = ("none", "none", "none", "suspend", "prison", "resume", "die", "rebank", "overpay")
ANSWERS = ("settled", "settled", "settled", "AC04", "MD07", "return")


@pytest.fixture(scope="module")
def template() -> Iterator[tuple[Path, list[str]]]:
    """A ledger with five pensioners, made once and copied for every example."""
    where = Path(tempfile.mkdtemp(prefix="payout-property-"))
    ledger = Ledger(str(where / "template.db"), cipher_key="")
    ledger.init()
    treasury(ledger, TREASURY_FEN)
    people = [transitional(ledger, 1, born=date(1950, 3, 15)),
              transitional(ledger, 2, born=date(1940, 5, 2)),     # the age-80 extra
              transitional(ledger, 3, born=date(1950, 4, 1)),     # turns 70 in April 2020
              contributor(ledger, 4, tier_fen=10000),              # a small account
              contributor(ledger, 5)]
    ledger.close()
    yield where / "template.db", people
    shutil.rmtree(where, ignore_errors=True)


def owed_fen(ledger: Ledger, idn: str, month: str) -> int:
    """What the published rules say one month is worth, computed here from the parameters:
    central + province + city + county, the long-contribution extra, the age extra, and the
    account pension fixed at approval."""
    p = ledger.participant(idn)
    assert p.pension is not None
    y, m = int(month[:4]), int(month[5:])
    params = ledger.rules_on(date(y, m, 1)).parameters
    bp = params.basic_pension
    age = age_on(p.birth_date, date(y, m, 1))
    extra = max([a.extra_fen for a in bp.age_extras if age >= a.min_age], default=0)
    years = max(0, p.pension.contribution_years - params.min_contribution_years)
    return (bp.central_fen + bp.province_fen + bp.city_fen + bp.county_fen
            + years * bp.long_contribution_per_year_fen + extra
            + p.pension.account_pension_fen)


def act(ledger: Ledger, idn: str, action: str, period: str, n: int) -> None:
    """Apply an action if the rules allow it (a refused one changes nothing)."""
    y, m = int(period[:4]), int(period[5:])
    try:
        if action == "suspend":
            ledger.suspend(id_number=idn, reason_code="no_proof_of_life", from_month=period,
                           actor=OPERATOR)
        elif action == "prison":
            ledger.suspend(id_number=idn, reason_code="imprisoned", from_month=period,
                           actor=OPERATOR)
        elif action == "resume":
            ledger.resume(id_number=idn, from_month=period, actor=OPERATOR)
        elif action == "die":
            ledger.decease(id_number=idn, date_of_death=date(y, m, 1),
                           reported_on=date(y, m, 2), actor=OPERATOR)
        elif action == "rebank":
            ledger.change_bank_details(id_number=idn, bank=account(100 * m + n),
                                       actor=OPERATOR)
        elif action == "overpay":
            ledger.assess_overpayment(id_number=idn, amount_fen=5_000 + 1_000 * n,
                                      months=[period], reason="paid in error",
                                      value_date=date(y, m, 1), actor=OPERATOR)
    except LedgerError:
        pass


def pay_month(ledger: Ledger, period: str, out: Path, answers: dict[str, str]) -> None:
    """Draft, approve, fund, export; then the bank answers each pensioner's payment:
    settled, failed (AC04 / MD07), or settled and later returned."""
    try:
        batch, files = send(ledger, period, out)
    except LedgerError as e:
        assert "nobody is owed" in str(e)
        return
    fails, returns = {}, {}
    for e2e, line in batch.lines.items():
        answer = answers.get(line.id_number, "settled")
        if answer in ("AC04", "MD07"):
            fails[e2e] = (answer, "failed")
        elif answer == "return":
            returns[e2e] = (line.amount_fen, "AC04")
    for f in files:
        path = f.with_suffix(".ret")
        path.write_bytes(write_domestic_return(f.read_bytes(), fails))
        returns_import.import_returns(ledger, path, actor=BANK, config=CONFIG)
    if returns:
        path = out / f"{period}-pacs004.xml"
        path.write_bytes(pacs004(returns, msg_id=f"RTR-{period}"))
        returns_import.import_returns(ledger, path, actor=BANK, config=CONFIG)
    assert disbursement.get_batch(ledger, batch.id).state == "closed"


# A raise of the county's part published this month, back-dated this many months.
RAISES = (None, None, None, 0, 1, 3)
month_plan = st.tuples(st.lists(st.sampled_from(ACTIONS), min_size=5, max_size=5),
                       st.lists(st.sampled_from(ANSWERS), min_size=5, max_size=5),
                       st.sampled_from(RAISES))


@settings(max_examples=examples(30), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plan=st.lists(month_plan, min_size=1, max_size=4))
# Always: a raise back-dated over a month everyone was paid, and one whose payment with its
# top-up the bank then sends back.
@example(plan=[(["none"] * 5, ["settled"] * 5, None), (["none"] * 5, ["settled"] * 5, 1)])
@example(plan=[(["none"] * 5, ["settled"] * 5, None),
               (["none"] * 5, ["AC04", "return", "settled", "MD07", "settled"], 1),
               (["none", "rebank", "none", "none", "none"], ["settled"] * 5, None)])
def test_nobody_is_paid_twice_and_everyone_is_paid_what_is_owed(
        template: tuple[Path, list[str]],
        plan: list[tuple[list[str], list[str], int | None]]) -> None:
    path, people = template
    where = Path(tempfile.mkdtemp(prefix="payout-example-"))
    try:
        shutil.copy(path, where / "ledger.db")
        ledger = Ledger(str(where / "ledger.db"), cipher_key="")
        periods = months_from(START, "2020-12")[:len(plan) + 1]
        forfeited: dict[str, set[str]] = {idn: set() for idn in people}
        prison: dict[str, str] = {}
        for i, (period, (actions, answers, back)) in enumerate(zip(periods, plan,
                                                                       strict=False)):
            if back is not None:
                since = periods[max(0, i - back)]
                county_raise(ledger, date(int(since[:4]), int(since[5:]), 1), 500 + 100 * i,
                             f"county raise from {since}, published in {period}")
            for n, (idn, action) in enumerate(zip(people, actions, strict=True)):
                before = ledger.participant(idn).status
                act(ledger, idn, action, period, n)
                after = ledger.participant(idn)
                if action == "prison" and after.status == "suspended" != before:
                    prison[idn] = period
                if action == "resume" and before == "suspended" and idn in prison:
                    forfeited[idn] |= set(months_from(prison.pop(idn), period)[:-1])
            pay_month(ledger, period, where, dict(zip(people, answers, strict=True)))

        # A last month: every suspension ends, every hold is lifted, the bank pays everyone.
        last = periods[len(plan)]
        for n, idn in enumerate(people):
            p = ledger.participant(idn)
            if p.status == "suspended":
                if idn in prison:
                    forfeited[idn] |= set(months_from(prison.pop(idn), last)[:-1])
                ledger.resume(id_number=idn, from_month=last, actor=OPERATOR)
            p = ledger.participant(idn)
            if p.payment_hold and p.status != "deceased":
                ledger.change_bank_details(id_number=idn, bank=account(9000 + n),
                                           actor=OPERATOR)
        pay_month(ledger, last, where, {})

        sent = 0
        for idn in people:
            events = [e for e in ledger.events.get(pid(idn)) if isinstance(
                e, Participant.PensionPaid | Participant.PensionPaymentReversed)]
            paid = Counter(m for e in events if isinstance(e, Participant.PensionPaid)
                           for m in e.months)
            back = Counter(m for e in events if isinstance(e, Participant.PensionPaymentReversed)
                           for m in e.months)
            assert all(paid[m] - back[m] in (0, 1) for m in paid), "a month paid twice"
            net = sorted(m for m in paid if paid[m] > back[m])
            at_death = [e for e in ledger.events.get(pid(idn))
                        if isinstance(e, Participant.PensionOwedAtDeath)]
            settled = sorted(m for e in at_death for m in e.months)
            assert not set(settled) & set(net), "a month paid and owed at death"
            assert ledger.queries.paid_month_count(pid(idn)) == len(net) + len(settled)
            reversed_ids = {e.end_to_end_id for e in events
                            if isinstance(e, Participant.PensionPaymentReversed)}
            kept = [e for e in events if isinstance(e, Participant.PensionPaid)
                    and e.end_to_end_id not in reversed_ids]
            assert sorted(m for e in kept for m in e.months) == net
            p = ledger.participant(idn)
            # The money paid, to the pensioner and to the heirs (with the overpayment
            # recovered from it), is what the rules now owe for the months paid. A dead
            # pensioner's months raised after the death are still owed, to the heirs:
            # owed_at_death says so (and `audit anomalies` lists it).
            still = owed_at_death(p, ledger.rules_on) if p.status == "deceased" else None
            assert sum(e.amount_fen + e.deduction_fen for e in [*kept, *at_death]) + (
                0 if still is None else still.amount_fen + still.deduction_fen) == sum(
                owed_fen(ledger, idn, m) for m in net + settled)
            assert still is None or not still.months  # only top-ups are left owed
            sent += sum(e.amount_fen for e in kept)
            owed = [m for m in months_from(START, last) if m not in forfeited[idn]]
            if p.status == "pensioner":
                assert net == owed
            else:
                # Every month up to and including the month of death is paid or owed to
                # the heirs; none after it; none of a prison term.
                assert p.status == "deceased" and p.date_of_death is not None
                death_month = p.date_of_death.strftime("%Y-%m")
                until_death = [m for m in owed if m <= death_month
                               and (idn not in prison or m < prison[idn])]
                assert sorted(net + settled) == until_death
        positions = ledger.fund_positions()
        assert positions[IN_FLIGHT] == 0
        # Appropriated = paid out for good + what came back to the expenditure account.
        assert TREASURY_FEN - positions[FISCAL] == sent + positions[EXPENDITURE]
        ledger.close()
    finally:
        shutil.rmtree(where, ignore_errors=True)
