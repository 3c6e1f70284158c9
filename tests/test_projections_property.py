"""Property: for random sequences of commands, projected incrementally at random points,
the views equal a full rebuild and a replay of the events and the aggregates, at every
as-of date, and the trial balance nets to zero."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.aggregates.participant import Participant, on_behalf_fen
from ledger.application import Ledger
from ledger.errors import InvalidInput, NotFound, Refused
from ledger.projections import ProjectionRunner, rebuild
from tests.conftest import PG_DSN, examples
from tests.helpers import bank, contribute, enrol, make_id
from tests.test_projections_support import check_against_replay, snapshot

# Two born before the transitional date (pension without contributions), three younger.
PEOPLE = [make_id(1, date(1950, 2, 2)), make_id(2, date(1951, 3, 3)),
          make_id(3, date(1970, 5, 17)), make_id(4, date(1975, 1, 1)),
          make_id(5, date(1980, 2, 2))]
TOWNS = [("城关镇", "东村"), ("城关镇", "西村"), ("南镇", "北村")]
GROUPS = ["ordinary", "minimum_living", "destitute"]
DATES = [date(2015, 3, 1), date(2016, 1, 31), date(2016, 3, 1), date(2016, 6, 30),
         date(2016, 12, 31), date(2017, 6, 30), date(2018, 2, 1)]
TIERS = [10000, 20000, 50000]

who = st.integers(0, len(PEOPLE) - 1)
when = st.sampled_from(DATES)
amount = st.integers(1, 300_000)
small = st.integers(1, 60_000)
# Commands that only make sense after others come as chains, so that most succeed.
commands = st.one_of(
    st.tuples(st.just("contribute"), who, when, st.sampled_from(TIERS), st.booleans()),
    st.tuples(st.just("collective"), who, when, amount),
    st.tuples(st.just("reverse"), who, st.sampled_from([2015, 2016, 2017]), when),
    st.tuples(st.just("reverse_subsidy"), who, st.sampled_from([2015, 2016, 2017]), when),
    st.tuples(st.just("interest"), st.sampled_from([2015, 2016, 2017])),
    st.tuples(st.just("treasury"), amount, st.sampled_from(["basic_pension", "on_behalf"]),
              when),
    st.tuples(st.just("transfer"), st.sampled_from(["sweep", "appropriate"]), small, when),
    st.tuples(st.just("bank_interest"), st.sampled_from(["income", "fiscal", "expenditure"]),
              amount, when),
    # A fixed deposit of the fiscal account, and maybe its withdrawal (refused before it
    # was placed) with the interest the bank paid.
    st.tuples(st.just("deposit"), small, when, st.sampled_from([3, 12]),
              st.none() | when, st.integers(0, 5_000)),
    st.tuples(st.just("pension"), st.integers(0, 1), st.booleans(), st.booleans()),
    # An approval made in error, revoked (refused once a month was paid or if suspended).
    st.tuples(st.just("revoke"), st.integers(0, 1)),
    st.tuples(st.just("death"), who, when, st.integers(0, 30_000),
              st.sampled_from(["offset_account", "family"]), st.booleans()),
    # A fine for fraud on what was overpaid and not fined yet, part of it paid.
    st.tuples(st.just("fine"), who, when, st.integers(2, 5)),
    st.tuples(st.just("leave"), who, when, st.booleans()),
    st.tuples(st.just("group"), who, st.sampled_from(GROUPS), when),
    st.tuples(st.just("bank"), who),
    st.tuples(st.just("project")),
)


def run(ledger: Ledger, runner: ProjectionRunner, counter: list[int],
        command: tuple[Any, ...]) -> None:
    counter[0] += 1
    ref = f"R{counter[0]}"
    name, *args = command
    op, boss = "op1", "boss1"
    if name == "project":
        runner.run_until_caught_up()
    elif name == "enrol":
        township, village = TOWNS[args[1]]
        enrol(ledger, PEOPLE[args[0]], group=args[2], township=township, village=village,
              enrol_date=date(2014, 1, 10))
    elif name == "contribute":
        idn, on, tier, subsidise = PEOPLE[args[0]], args[1], args[2], args[3]
        p: Participant = ledger.participant(idn)
        params = ledger.rules_on(on).parameters
        due = tier - on_behalf_fen(params, p.identity_group_on(on), tier)
        contribute(ledger, idn, on.year, tier, due, value_date=on, receipt_no=ref)
        if subsidise:
            ledger.subsidise(id_number=idn, year=on.year, value_date=date(on.year, 12, 1),
                             actor=op)
    elif name == "reverse":  # booked in error; refused once built on, or swept
        ledger.reverse_contribution(id_number=PEOPLE[args[0]], year=args[1],
                                    reason="entered twice", value_date=args[2], actor=op)
    elif name == "reverse_subsidy":
        ledger.reverse_subsidy(id_number=PEOPLE[args[0]], year=args[1],
                               reason="credited in error", value_date=args[2], actor=op)
    elif name == "collective":
        ledger.credit_collective(id_number=PEOPLE[args[0]], year=args[1].year,
                                 amount_fen=args[2], payer="村委会", receipt_no=ref,
                                 value_date=args[1], actor=op)
    elif name == "interest":
        ledger.credit_interest(year=args[0], today=date(args[0] + 1, 1, 5), actor=op)
    elif name == "treasury":
        ledger.receive_treasury_funds(amount_fen=args[0], level="county", purpose=args[1],
                                      value_date=args[2], reference=ref, actor=op)
    elif name == "transfer":
        getattr(ledger, args[0])(amount_fen=args[1], value_date=args[2], reference=ref,
                                 actor=op)
    elif name == "bank_interest":
        ledger.earn_bank_interest(account=args[0], amount_fen=args[1], value_date=args[2],
                                  reference=ref, actor=op)
    elif name == "deposit":
        ledger.place_fixed_deposit(deposit_no=ref, amount_fen=args[0], term_months=args[2],
                                   annual_rate=Decimal("0.0175"), value_date=args[1],
                                   reference=ref, actor=op)
        if args[3] is not None:
            ledger.withdraw_fixed_deposit(deposit_no=ref, interest_fen=args[4],
                                          value_date=args[3], reference=ref + "W", actor=op)
    elif name == "pension":  # only the two born before the transitional date qualify
        idn, suspend, resume = PEOPLE[args[0]], args[1], args[2]
        ledger.apply_for_pension(id_number=idn, start_month="2016-01", actor=op)
        ledger.approve_pension(id_number=idn, actor=boss)
        if suspend:
            ledger.suspend(id_number=idn, reason_code="no_proof_of_life",
                           from_month="2016-05", actor=op)
            if resume:
                ledger.resume(id_number=idn, from_month="2016-08", actor=op)
    elif name == "revoke":
        ledger.revoke_pension(id_number=PEOPLE[args[0]], reason="wrong start month",
                              actor=boss)
    elif name == "death":
        idn, on, overpaid, channel, settle = PEOPLE[args[0]], *args[1:]
        ledger.decease(id_number=idn, date_of_death=on, reported_on=on, actor=op)
        if overpaid:
            ledger.assess_overpayment(id_number=idn, amount_fen=overpaid, months=["2016-08"],
                                      reason="paid after death", value_date=on, actor=op)
            balance = ledger.participant(idn).balance_fen
            ledger.recover_overpayment(
                id_number=idn, amount_fen=min(overpaid, balance) if
                channel == "offset_account" and balance else overpaid,
                channel=channel if balance else "family", value_date=on, actor=op)
        if settle:
            ledger.settle_balance(id_number=idn, how="inheritance", payee="heir",
                                  value_date=on, actor=op)
    elif name == "fine":
        idn, on, multiple = PEOPLE[args[0]], args[1], args[2]
        p = ledger.participant(idn)
        base = p.overpaid_fen - p.fined_fen
        ledger.impose_fine(id_number=idn, amount_fen=multiple * base, defrauded_fen=base,
                           decision_no=ref, value_date=on, actor=op)
        ledger.pay_fine(id_number=idn, amount_fen=base, reference=ref, value_date=on, actor=op)
    elif name == "leave":
        idn, on, settle = PEOPLE[args[0]], args[1], args[2]
        ledger.terminate(id_number=idn, reason_code="emigration", effective_date=on, actor=op)
        if settle:
            ledger.settle_balance(id_number=idn, how="refund", payee="self", value_date=on,
                                  actor=op)
    elif name == "group":
        ledger.change_identity_group(id_number=PEOPLE[args[0]], group=args[1],
                                     effective_from=args[2], actor=op)
    elif name == "bank":
        ledger.change_bank_details(id_number=PEOPLE[args[0]], bank=bank(counter[0]), actor=op)
    else:
        raise AssertionError(name)


@contextmanager
def fresh_ledger(store: str, key: str | None, tmp_path: Path) -> Iterator[Ledger]:
    """Each example gets a store of its own, like the fixture gives each test."""
    if store == "sqlite":
        url = str(tmp_path / f"{uuid.uuid4().hex}.db")
    else:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        url = f"{PG_DSN}?schema={schema}"
    ledger = Ledger(url, cipher_key=key)
    try:
        ledger.init()
        yield ledger
    finally:
        ledger.close()
        if store == "postgres":
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@settings(max_examples=examples(12), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(script=st.lists(commands, min_size=10, max_size=30),
       batch_size=st.integers(1, 8))
def test_views_equal_rebuild_and_replay(ledger_url: tuple[str, str | None], tmp_path: Path,
                                        script: list[tuple[Any, ...]],
                                        batch_size: int) -> None:
    url, key = ledger_url
    store = "sqlite" if not url.startswith("postgresql://") else "postgres"
    with fresh_ledger(store, key, tmp_path) as ledger:
        runner = ProjectionRunner(ledger, batch_size=batch_size)
        counter = [0]
        for everyone in range(len(PEOPLE)):  # most commands need someone enrolled
            run(ledger, runner, counter,
                ("enrol", everyone, everyone % 3, GROUPS[everyone % len(GROUPS)]))
        for command in script:
            # A refused command stores nothing; the views must agree.
            with contextlib.suppress(Refused, InvalidInput, NotFound):
                run(ledger, runner, counter, command)
        runner.run_until_caught_up()
        incremental = snapshot(ledger)
        check_against_replay(ledger, incremental)
        rebuild(ledger, batch_size=max(batch_size * 7, 10))
        assert snapshot(ledger) == incremental
