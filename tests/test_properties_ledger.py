"""Property tests: random sequences of commands against a real store.

For any sequence of commands (enrolments, contributions of random tiers and years,
back-payments, subsidies, reversals of contributions and subsidies, collective subsidies,
identity-group changes, interest runs, treasury money, sweeps, appropriations, bank
interest, pensions, suspensions, deaths, terminations, settlements, overpayments), at every
step:
  - every stored event's postings sum to zero;
  - the fund's guarded positions are never negative and equal the sum of the postings;
  - each individual account's balance equals the sum of its sources, each source equals
    the participant's sub-ledger postings, and no source is negative;
and at the end:
  - replaying a participant's events up to each version gives exactly the state the live
    aggregate had when that version was saved;
  - retrying any subset of the successful commands with the same keys changes nothing.

Each example gets a fresh store: a new SQLite file, or a new PostgreSQL schema (fewer
examples there, to keep the suite fast).
"""

from __future__ import annotations

import copy
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from ledger.aggregates.participant import Participant, on_behalf_fen
from ledger.application import Ledger
from ledger.errors import LedgerError
from ledger.postings import GUARDED_ACCOUNTS, postings_for
from ledger.rules import IDENTITY_GROUPS
from tests.conftest import PG_DSN, TEST_CIPHER_KEY, examples, require_postgres
from tests.helpers import bank, make_id

SQLITE_EXAMPLES = 40
POSTGRES_EXAMPLES = 8
MIN_COMMANDS = 8
MAX_COMMANDS = 30

# Three residents: two born 1960, one born 1950 (old enough for the transitional pension).
IDS = [make_id(901, born=date(1960, 2, 14)), make_id(902, born=date(1960, 8, 1)),
       make_id(903, born=date(1950, 3, 3))]
YEARS = list(range(2015, 2021))
TIERS = [10000, 20000, 30000, 50000, 100000, 150000, 60000]
FUND_MOVES = [("central", "basic_pension"), ("province", "contribution_subsidy"),
              ("county", "contribution_subsidy"), ("city", "on_behalf")]

who = st.integers(0, len(IDS) - 1)
year = st.sampled_from(YEARS)
month = st.integers(1, 12)
small_fen = st.integers(1, 60000)


def ym(y: int, m: int) -> str:
    return f"{y:04d}-{m:02d}"


command = st.one_of(
    st.tuples(st.just("contribute"), who, year, st.sampled_from(TIERS), month,
              st.integers(0, 3), st.integers(0, 9)),
    st.tuples(st.just("contribute"), who, year, st.sampled_from(TIERS), month,
              st.just(0), st.just(1)),
    st.tuples(st.just("subsidise"), who, year, month),
    st.tuples(st.just("reverse"), who, year, month),
    st.tuples(st.just("reverse_subsidy"), who, year, month),
    st.tuples(st.just("subsidise_year"), year),
    st.tuples(st.just("collective"), who, year, small_fen, month),
    st.tuples(st.just("group"), who, st.sampled_from(IDENTITY_GROUPS), year),
    st.tuples(st.just("interest"), year),
    st.tuples(st.just("treasury"), st.sampled_from(FUND_MOVES), st.integers(1, 500000), year),
    st.tuples(st.just("sweep"), st.integers(1, 200000), year),
    st.tuples(st.just("appropriate"), st.integers(1, 200000), year),
    st.tuples(st.just("bank_interest"), st.sampled_from(["income", "fiscal", "expenditure"]),
              st.integers(1, 2000), year),
    st.tuples(st.just("apply"), who, year, month),
    st.tuples(st.just("approve"), who),
    st.tuples(st.just("pension"), st.sampled_from([0, 2, 2]), year, month),
    st.tuples(st.just("pension"), st.just(2), year, month),
    st.tuples(st.just("suspend"), st.sampled_from([0, 2, 2]), year, month),
    st.tuples(st.just("resume"), st.sampled_from([0, 2, 2]), year, month),
    st.tuples(st.just("decease"), who, year, month),
    st.tuples(st.just("terminate"), who,
              st.sampled_from(["emigration", "employee_scheme", "transfer_out", "death"]), year),
    st.tuples(st.just("settle"), who, st.sampled_from(["refund", "inheritance"]), year),
    st.tuples(st.just("assess"), who, small_fen, year),
    st.tuples(st.just("recover"), who, small_fen, st.sampled_from(["offset_account", "family"]),
              year),
    st.tuples(st.just("enrol"), who, st.sampled_from(IDENTITY_GROUPS), year),
)


@st.composite
def scripts(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """Everyone enrolled first (in a random identity group), then random commands."""
    groups = draw(st.lists(st.sampled_from(IDENTITY_GROUPS), min_size=3, max_size=3))
    prefix: list[tuple[Any, ...]] = [("enrol", i, g, 2015) for i, g in enumerate(groups)]
    prefix.append(("contribute", 0, 2015, 50000, 3, 0, 1))  # always some money
    return prefix + draw(st.lists(command, min_size=MIN_COMMANDS, max_size=MAX_COMMANDS))


def perform(ledger: Ledger, step: int, cmd: tuple[Any, ...],
            memo: dict[int, Any]) -> Callable[[], Any]:
    """The ledger call for a command. Every call carries a key (or a business key) of its
    step, so running it again is a retry; memo keeps what the first run computed, so a
    retry sends exactly the same payload."""
    key = f"step-{step}"
    kind = cmd[0]
    if kind == "enrol":
        _, i, group, y = cmd
        return lambda: ledger.enrol(id_number=IDS[i], name=f"居民{i}", township="城关镇",
                                    village="东村", identity_group=group,
                                    enrol_date=date(y, 1, 10),
                                    bank=None if i == 1 else bank(i),  # 1 has no bank account
                                    actor="op1", idempotency_key=key)
    if kind == "contribute":
        _, i, y, tier, m, back_by, exact = cmd
        value_date = date(y + back_by, m, 1)

        def contribute() -> Any:
            amount = tier
            if exact and step in memo:
                amount = memo[step]
            elif exact:  # pay what the rules ask, less the on-behalf part
                p = ledger.participant(IDS[i])
                if not back_by:
                    params = ledger.rules_on(value_date).parameters
                    amount = tier - on_behalf_fen(params, p.identity_group_on(value_date), tier)
                memo[step] = amount
            return ledger.contribute(id_number=IDS[i], year=y, tier_fen=tier, amount_fen=amount,
                                     channel="bank", receipt_no=f"R-{step}",
                                     value_date=value_date, back_payment=back_by > 0,
                                     actor="op1")
        return contribute
    if kind == "subsidise":
        _, i, y, m = cmd
        return lambda: ledger.subsidise(id_number=IDS[i], year=y, value_date=date(y, m, 28),
                                        actor="fin", idempotency_key=key)
    if kind == "subsidise_year":
        return lambda: ledger.subsidise_year(year=cmd[1], value_date=date(cmd[1], 12, 1),
                                             actor="fin", chunk_size=2)
    if kind == "collective":
        _, i, y, amount, m = cmd
        return lambda: ledger.credit_collective(id_number=IDS[i], year=y, amount_fen=amount,
                                                payer="村委会", receipt_no=f"C-{step}",
                                                value_date=date(y, m, 15), actor="op1")
    if kind == "group":
        _, i, group, y = cmd
        return lambda: ledger.change_identity_group(id_number=IDS[i], group=group,
                                                    effective_from=date(y, 1, 1), actor="op1",
                                                    idempotency_key=key)
    if kind == "interest":
        return lambda: ledger.credit_interest(year=cmd[1], today=date(cmd[1] + 1, 1, 2),
                                              actor="fin", chunk_size=2)
    if kind == "treasury":
        _, (level, purpose), amount, y = cmd
        return lambda: ledger.receive_treasury_funds(amount_fen=amount, level=level,
                                                     purpose=purpose, value_date=date(y, 2, 1),
                                                     reference=f"T-{step}", actor="fin")
    if kind in ("sweep", "appropriate"):
        _, amount, y = cmd
        move = ledger.sweep if kind == "sweep" else ledger.appropriate
        return lambda: move(amount_fen=amount, value_date=date(y, 5, 1),
                            reference=f"M-{step}", actor="fin")
    if kind == "bank_interest":
        _, account, amount, y = cmd
        return lambda: ledger.earn_bank_interest(account=account, amount_fen=amount,
                                                 value_date=date(y, 6, 21),
                                                 reference=f"I-{step}", actor="fin")
    if kind == "reverse":  # a contribution booked in error
        _, i, y, m = cmd
        return lambda: ledger.reverse_contribution(id_number=IDS[i], year=y,
                                                   reason="booked in error",
                                                   value_date=date(y, m, 25), actor="fin",
                                                   idempotency_key=key)
    if kind == "reverse_subsidy":
        _, i, y, m = cmd
        return lambda: ledger.reverse_subsidy(id_number=IDS[i], year=y,
                                              reason="credited in error",
                                              value_date=date(y, m, 26), actor="fin",
                                              idempotency_key=key)
    if kind == "apply":
        _, i, y, m = cmd
        return lambda: ledger.apply_for_pension(id_number=IDS[i], start_month=ym(y, m),
                                                actor="op1", idempotency_key=key)
    if kind == "approve":
        return lambda: ledger.approve_pension(id_number=IDS[cmd[1]], actor="approver",
                                              idempotency_key=key)
    if kind == "pension":  # an application and its approval by someone else
        _, i, y, m = cmd

        def pension() -> Any:
            ledger.apply_for_pension(id_number=IDS[i], start_month=ym(y, m), actor="op1",
                                     idempotency_key=f"{key}-apply")
            return ledger.approve_pension(id_number=IDS[i], actor="approver",
                                          idempotency_key=key)
        return pension
    if kind == "suspend":
        _, i, y, m = cmd
        return lambda: ledger.suspend(id_number=IDS[i], reason_code="no_proof_of_life",
                                      from_month=ym(y, m), actor="op1", idempotency_key=key)
    if kind == "resume":
        _, i, y, m = cmd
        return lambda: ledger.resume(id_number=IDS[i], from_month=ym(y, m), actor="op1",
                                     idempotency_key=key)
    if kind == "decease":
        _, i, y, m = cmd
        return lambda: ledger.decease(id_number=IDS[i], date_of_death=date(y, m, 1),
                                      reported_on=date(y, m, 20), actor="op1",
                                      idempotency_key=key)
    if kind == "terminate":
        _, i, reason, y = cmd
        return lambda: ledger.terminate(id_number=IDS[i], reason_code=reason,
                                        effective_date=date(y, 9, 1), actor="op1",
                                        idempotency_key=key)
    if kind == "settle":
        _, i, how, y = cmd
        return lambda: ledger.settle_balance(id_number=IDS[i], how=how, payee="家属",
                                             value_date=date(y, 10, 1), actor="op1",
                                             idempotency_key=key)
    if kind == "assess":
        _, i, amount, y = cmd
        return lambda: ledger.assess_overpayment(id_number=IDS[i], amount_fen=amount,
                                                 months=[ym(y, 3)], reason="paid after death",
                                                 value_date=date(y, 11, 1), actor="audit",
                                                 idempotency_key=key)
    if kind == "recover":
        _, i, amount, channel, y = cmd
        return lambda: ledger.recover_overpayment(id_number=IDS[i], amount_fen=amount,
                                                  channel=channel, value_date=date(y, 11, 2),
                                                  actor="fin", idempotency_key=key)
    raise AssertionError(kind)


# ---- the invariants -------------------------------------------------------------------

class Books:
    """The postings of every stored event, read incrementally from the notification log."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.after = 0
        self.totals: dict[str, int] = {}
        self.sub_ledger: dict[tuple[Any, str], int] = {}
        self.money_events = 0

    def catch_up(self) -> None:
        while True:
            page = self.ledger.recorder.select_notifications(start=self.after + 1, limit=500)
            if not page:
                return
            for n in page:
                postings = postings_for(self.ledger.mapper.to_domain_event(n))
                assert sum(p.amount_fen for p in postings) == 0, (n.topic, postings)
                self.money_events += bool(postings)
                for p in postings:
                    self.totals[p.account] = self.totals.get(p.account, 0) + p.amount_fen
                    if p.account.startswith("2001."):
                        k = (p.participant_id, p.account.removeprefix("2001."))
                        self.sub_ledger[k] = self.sub_ledger.get(k, 0) - p.amount_fen
                self.after = n.id


def check_books(ledger: Ledger, books: Books) -> None:
    books.catch_up()
    positions = ledger.fund_positions()
    assert all(v >= 0 for v in positions.values()), positions
    assert positions == {a: books.totals.get(a, 0) for a in GUARDED_ACCOUNTS}
    for idn in IDS:
        try:
            p = ledger.participant(idn)
        except LedgerError:
            continue
        assert all(v >= 0 for v in p.sources.values()), p.sources
        st_ = ledger.statement(idn)
        assert st_["balance_fen"] == sum(p.sources.values()) == sum(st_["sources_fen"].values())
        assert st_["sources_fen"] == p.sources
        for source, amount in p.sources.items():
            assert books.sub_ledger.get((p.id, source), 0) == amount, (source, amount)
        assert sum(b.amount_fen for b in p.bookings) == p.balance_fen


def state(p: Participant) -> dict[str, Any]:
    return copy.deepcopy({k: v for k, v in vars(p).items() if k != "_pending_events"})


def snapshot(ledger: Ledger) -> tuple[Any, ...]:
    balances = []
    for idn in IDS:
        try:
            p = ledger.participant(idn)
            balances.append((p.version, dict(p.sources), p.overpayment_fen, p.status))
        except LedgerError:
            balances.append(None)
    return (ledger.recorder.max_notification_id(), ledger.fund_positions(), tuple(balances),
            len(ledger.queries.chain_blocks()))


def run_script(ledger: Ledger, script: list[tuple[Any, ...]], data: st.DataObject) -> None:
    live: dict[tuple[Any, int], dict[str, Any]] = {}
    real_save = ledger._save

    def saving(*aggregates: Any) -> None:
        real_save(*aggregates)
        for a in aggregates:
            if isinstance(a, Participant):
                live[(a.id, a.version)] = state(a)

    ledger._save = saving  # type: ignore[method-assign]
    books = Books(ledger)
    done: list[tuple[int, Any]] = []
    outcomes = []
    memo: dict[int, Any] = {}
    for step, cmd in enumerate(script):
        try:
            result = perform(ledger, step, cmd, memo)()
        except LedgerError as e:
            outcomes.append(f"{cmd[0]}: {e}")
        else:
            outcomes.append(f"{cmd[0]}: ok")
            if cmd[0] not in ("interest", "subsidise_year"):  # batch runs have no key
                done.append((step, result))
        check_books(ledger, books)
    note("\n".join(outcomes))
    assert books.money_events > 0

    # Replay equals the live aggregate at every saved version.
    assert live
    for (pid, version), expected in live.items():
        replayed = ledger.repository.get(pid, version=version)
        assert replayed.version == version
        assert state(replayed) == expected, (pid, version)

    # Retrying successful commands with the same keys changes nothing.
    retries = data.draw(st.lists(st.sampled_from(done), max_size=8), label="retries")
    before = snapshot(ledger)
    for step, first in retries:
        again = perform(ledger, step, script[step], memo)()
        assert again == {**first, "replayed": True}, (script[step], first, again)
    assert snapshot(ledger) == before
    ledger._save = real_save  # type: ignore[method-assign]


# ---- on SQLite and PostgreSQL ---------------------------------------------------------

@contextmanager
def fresh_sqlite(encrypted: bool) -> Iterator[Ledger]:
    with tempfile.TemporaryDirectory() as tmp:
        app = Ledger(f"{tmp}/ledger.db", cipher_key=TEST_CIPHER_KEY if encrypted else "")
        try:
            app.init()
            yield app
        finally:
            app.close()


@contextmanager
def fresh_postgres(encrypted: bool) -> Iterator[Ledger]:
    schema = f"p_{uuid.uuid4().hex[:12]}"
    app = Ledger(f"{PG_DSN}?schema={schema}", cipher_key=TEST_CIPHER_KEY if encrypted else "")
    try:
        app.init()
        yield app
    finally:
        app.close()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@settings(max_examples=examples(SQLITE_EXAMPLES), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(script=scripts(), encrypted=st.booleans(), data=st.data())
def test_random_command_sequences_keep_the_books_on_sqlite(
        script: list[tuple[Any, ...]], encrypted: bool, data: st.DataObject) -> None:
    with fresh_sqlite(encrypted) as ledger:
        run_script(ledger, script, data)


@settings(max_examples=examples(POSTGRES_EXAMPLES), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(script=scripts(), encrypted=st.booleans(), data=st.data())
def _postgres_property(script: list[tuple[Any, ...]], encrypted: bool,
                       data: st.DataObject) -> None:
    with fresh_postgres(encrypted) as ledger:
        run_script(ledger, script, data)


def test_random_command_sequences_keep_the_books_on_postgres() -> None:
    require_postgres()
    _postgres_property()
