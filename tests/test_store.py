"""The event store and what rides along in the same transaction: the hash chain, the
guarded fund positions, the participant register, booked receipts; encryption at rest."""

from __future__ import annotations

import glob
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from eventsourcing.cipher import AESCipher

from ledger.aggregates.participant import BankAccount, participant_id
from ledger.application import Ledger
from ledger.audit import verify_chain
from ledger.errors import NotFound, Refused
from ledger.postings import GUARDED_ACCOUNTS, postings_for
from ledger.store import (
    DEFAULT_SQLITE_PATH,
    GENESIS_SHA256,
    block_sha256,
    event_sha256,
    resolve_url,
    store_env,
)
from tests.conftest import TEST_CIPHER_KEY
from tests.helpers import contribute, enrol, make_id

NAME = "李秀英"
BANK_NUMBER = "6217000012345678901"
PENSIONER_NAME = "欧阳建国"
PENSIONER_BANK = "6228480012345678"
PENSIONER_ID = make_id(9, born=date(1940, 3, 3))


def notifications(ledger: Ledger) -> list[Any]:
    return list(ledger.recorder.select_notifications(start=1, limit=1_000_000))


def execute(ledger: Ledger, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Write to the store behind the ledger's back (an attacker, or a careless DBA)."""
    sql = sql.replace("{p}", ledger.queries.prefix)
    if ledger.queries.is_postgres:
        sql = sql.replace("?", "%s")
    with ledger.recorder.datastore.transaction(commit=True) as c:
        c.execute(sql, params)


def busy_county(ledger: Ledger) -> str:
    """A little of everything: enrolment, contributions, on-behalf, subsidy, collective,
    interest, treasury money, sweeps, appropriation, bank interest, death and inheritance."""
    a, b = make_id(1), make_id(2)
    enrol(ledger, a, name=NAME, bank_account=BankAccount(
        account_name=NAME, account_number=BANK_NUMBER, bank_code="105"))
    enrol(ledger, b, group="minimum_living")
    contribute(ledger, a, 2016, 50000)
    contribute(ledger, b, 2016, 20000, amount_fen=15000)
    ledger.subsidise_year(year=2016, value_date=date(2016, 6, 30), actor="fin")
    ledger.credit_collective(id_number=a, year=2016, amount_fen=4000, payer="东村委会",
                             receipt_no="C-1", value_date=date(2016, 4, 1), actor="op1")
    ledger.receive_treasury_funds(amount_fen=900000, level="central", purpose="basic_pension",
                                  value_date=date(2016, 2, 1), reference="T-1", actor="fin")
    ledger.receive_treasury_funds(amount_fen=9500, level="county", purpose="contribution_subsidy",
                                  value_date=date(2016, 7, 1), reference="T-2", actor="fin")
    ledger.sweep(amount_fen=60000, value_date=date(2016, 5, 1), reference="S-1", actor="fin")
    ledger.appropriate(amount_fen=300000, value_date=date(2016, 5, 2), reference="A-1",
                       actor="fin")
    ledger.earn_bank_interest(account="income", amount_fen=37, value_date=date(2016, 6, 21),
                              reference="I-1", actor="fin")
    ledger.credit_interest(year=2016, today=date(2017, 1, 3), actor="fin")
    ledger.decease(id_number=b, date_of_death=date(2017, 2, 1), reported_on=date(2017, 2, 9),
                   actor="op1")
    ledger.assess_overpayment(id_number=b, amount_fen=700, months=["2017-02"], reason="x",
                              value_date=date(2017, 2, 10), actor="audit", idempotency_key="o")
    ledger.recover_overpayment(id_number=b, amount_fen=700, channel="family",
                               value_date=date(2017, 2, 11), actor="fin", idempotency_key="r")
    ledger.settle_balance(id_number=b, how="inheritance", payee="家属",
                          value_date=date(2017, 2, 12), actor="op1")
    # and a pensioner, who is also in the payout's pensioner register
    enrol(ledger, PENSIONER_ID, name=PENSIONER_NAME, enrol_date=date(2015, 1, 10),
          bank_account=BankAccount(account_name=PENSIONER_NAME, account_number=PENSIONER_BANK,
                                   bank_code="103"))
    ledger.apply_for_pension(id_number=PENSIONER_ID, start_month="2015-02", actor="op1")
    ledger.approve_pension(id_number=PENSIONER_ID, actor="approver")
    return a


def secrets_of(idn: str) -> list[bytes]:
    return [s.encode() for s in (NAME, idn, BANK_NUMBER, PENSIONER_NAME, PENSIONER_ID,
                                 PENSIONER_BANK)]


# ---- the hash chain -------------------------------------------------------------------

def test_every_block_links_to_the_block_before_it(ledger: Ledger) -> None:
    busy_county(ledger)
    blocks = ledger.queries.chain_blocks()
    assert len(blocks) > 15
    prev = GENESIS_SHA256
    for expected_no, (block_no, first, last, count, digest, prev_sha, block_sha) in enumerate(
            blocks, start=1):
        assert block_no == expected_no
        assert prev_sha == prev, f"block {block_no} does not link to block {block_no - 1}"
        assert block_sha256(block_no, first, last, count, digest, prev_sha) == block_sha
        prev = block_sha


def test_each_block_covers_exactly_its_notification_ids(ledger: Ledger) -> None:
    busy_county(ledger)
    notes = notifications(ledger)
    by_id = {n.id: n for n in notes}
    covered: list[int] = []
    last_seen = 0
    for _, first, last, count, digest, _, _ in ledger.queries.chain_blocks():
        assert last_seen < first <= last
        mine = [n for i, n in by_id.items() if first <= i <= last]
        assert len(mine) == count
        recomputed = _digest(mine)
        assert recomputed == digest
        covered += [n.id for n in mine]
        last_seen = last
    assert covered == [n.id for n in notes], "every stored event is in exactly one block"


def _digest(notes: list[Any]) -> str:
    import hashlib

    h = hashlib.sha256()
    for n in sorted(notes, key=lambda n: n.id):
        h.update(event_sha256(n.id, n.originator_id, n.originator_version, n.topic, n.state))
    return h.hexdigest()


def test_one_write_transaction_is_one_block(ledger: Ledger) -> None:
    idn = make_id(3)
    enrol(ledger, idn, group="destitute")
    blocks, top = len(ledger.queries.chain_blocks()), ledger.recorder.max_notification_id()
    contribute(ledger, idn, 2016, 20000, amount_fen=10000)
    block = ledger.queries.chain_blocks(after_block=blocks)
    assert len(block) == 1
    _, first, last, count, _, _, _ = block[0]
    # the contribution, the payment on behalf and the command receipt, together
    assert count == 3
    assert (first, last) == (top + 1, ledger.recorder.max_notification_id())


def test_a_refused_write_adds_no_block(ledger: Ledger) -> None:
    blocks = ledger.queries.chain_blocks()
    with pytest.raises(Refused):
        ledger.sweep(amount_fen=1, value_date=date(2016, 5, 1), reference="S-1", actor="fin")
    assert ledger.queries.chain_blocks() == blocks
    assert verify_chain(ledger).ok


def test_an_altered_event_no_longer_matches_its_block(ledger: Ledger) -> None:
    busy_county(ledger)
    report = verify_chain(ledger)
    assert report.ok, report.problems
    victim = notifications(ledger)[-5]
    block = next(b for b in ledger.queries.chain_blocks() if b[1] <= victim.id <= b[2])
    state = bytes(victim.state)
    forged = state[:-1] + bytes([state[-1] ^ 1])  # one bit of one stored event
    assert forged != bytes(victim.state)
    id_column = "notification_id" if ledger.queries.is_postgres else "rowid"
    execute(ledger, f"UPDATE {{p}}{ledger.recorder.events_table_name} SET state = ? "
                    f"WHERE {id_column} = ?", (forged, victim.id))
    mine = [n for n in notifications(ledger) if block[1] <= n.id <= block[2]]
    assert _digest(mine) != block[4]
    report = verify_chain(ledger)
    assert not report.ok
    assert any(f"block {block[0]}" in p for p in report.problems), report.problems


def test_the_chain_verifies_from_the_database_alone_without_the_key(
        ledger: Ledger, ledger_url: tuple[str, str | None]) -> None:
    busy_county(ledger)
    url, _ = ledger_url
    auditor = Ledger(url, cipher_key="")
    try:
        report = verify_chain(auditor)
        assert report.ok, report.problems
        assert report.events == len(notifications(ledger))
    finally:
        auditor.close()


# ---- the guarded fund positions -------------------------------------------------------

def test_fund_positions_agree_with_the_postings_of_every_stored_event(ledger: Ledger) -> None:
    busy_county(ledger)
    totals: dict[str, int] = {}
    money_events = 0
    for n in notifications(ledger):
        postings = postings_for(ledger.mapper.to_domain_event(n))
        assert sum(p.amount_fen for p in postings) == 0
        money_events += bool(postings)
        for p in postings:
            totals[p.account] = totals.get(p.account, 0) + p.amount_fen
    assert money_events > 15
    positions = ledger.fund_positions()
    assert positions == {a: totals.get(a, 0) for a in GUARDED_ACCOUNTS}
    # and by hand: income 500 + 150 + 40 + 0.37 - 600 swept; fiscal 9000 + 95 + 600 - 3000;
    # expenditure 3000 + 7 recovered from the family
    assert positions == {"1001": 50000 + 15000 + 4000 + 37 - 60000,
                         "1002": 900000 + 9500 + 60000 - 300000,
                         "1003": 300000 + 700, "1004": 0, "1101": 0}
    assert sum(totals.values()) == 0


def test_the_individual_sub_ledger_agrees_with_each_participants_sources(
        ledger: Ledger) -> None:
    a = busy_county(ledger)
    by_participant: dict[Any, dict[str, int]] = {}
    for n in notifications(ledger):
        for p in postings_for(ledger.mapper.to_domain_event(n)):
            if p.account.startswith("2001."):
                src = p.account.removeprefix("2001.")
                acc = by_participant.setdefault(p.participant_id, {})
                acc[src] = acc.get(src, 0) - p.amount_fen
    for idn in (a, make_id(2), PENSIONER_ID):
        live = ledger.participant(idn)
        posted = by_participant.get(live.id, {})
        assert {s: v for s, v in live.sources.items() if v or s in posted} == posted
    assert sum(by_participant[participant_id(make_id(2))].values()) == 0  # settled


# ---- what else rides along -------------------------------------------------------------

def test_the_register_row_is_written_with_the_participants_events(ledger: Ledger) -> None:
    idn = make_id(4)
    enrol(ledger, idn)
    contribute(ledger, idn, 2016, 20000)
    contribute(ledger, idn, 2013, 20000, back_payment=True, value_date=date(2017, 3, 1),
               receipt_no="B-4")
    p = ledger.participant(idn)
    row = ledger.queries.register_row(p.id)
    assert row is not None
    assert (row.version, row.status, row.birth_date) == (p.version, "enrolled", "1970-05-17")
    assert orjson.loads(row.contributed_years) == {
        "2013": ["B-4", 20000, True], "2016": [f"R-{idn[-6:]}-2016", 20000, False]}
    assert ledger.queries.participants_contributed(2016) == [p.id]
    assert ledger.queries.participants_contributed(2015) == []
    ledger.decease(id_number=idn, date_of_death=date(2018, 1, 1), reported_on=date(2018, 1, 2),
                   actor="op1")
    row = ledger.queries.register_row(p.id)
    assert row is not None and row.status == "deceased"


def test_receipt_numbers_are_booked_fund_wide(ledger: Ledger) -> None:
    idn = make_id(5)
    enrol(ledger, idn)
    contribute(ledger, idn, 2016, receipt_no="BANK-5")
    assert ledger.queries.receipt_owner("BANK-5") == participant_id(idn)
    assert ledger.queries.receipt_owner("BANK-6") is None
    assert ledger.queries.receipts_booked(["BANK-5", "BANK-6"]) == {"BANK-5"}


# ---- encryption at rest ---------------------------------------------------------------

def everything_stored(ledger: Ledger) -> bytes:
    """Every value of every table of the store, as bytes."""
    if ledger.queries.is_postgres:
        schema = ledger.recorder.datastore.schema
        tables = [r[0] for r in ledger.queries.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
            (schema,))]
    else:
        tables = [r[0] for r in ledger.queries.fetch(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert ledger.recorder.events_table_name in tables and "participant_register" in tables
    out = []
    for t in tables:
        for row in ledger.queries.fetch(f'SELECT * FROM {{p}}"{t}"'):
            for v in row:
                out.append(bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode())
    return b"\n".join(out)


def test_personal_data_is_not_in_plain_text_when_encryption_is_on(
        ledger: Ledger, ledger_url: tuple[str, str | None]) -> None:
    idn = busy_county(ledger)
    _, key = ledger_url
    secrets = secrets_of(idn)
    dump = everything_stored(ledger)
    if key:
        for secret in secrets:
            assert secret not in dump, secret.decode()
    else:  # the control: without a key they are there to be found
        for secret in secrets:
            assert secret in dump, secret.decode()
    # Either way the ledger reads it back.
    p = ledger.participant(idn)
    assert (p.name, p.id_number) == (NAME, idn)
    assert p.bank is not None and p.bank.account_number == BANK_NUMBER


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain-control"])
def test_the_sqlite_file_holds_no_personal_data_when_encrypted(tmp_path: Any,
                                                               encrypted: bool) -> None:
    path = str(tmp_path / "county.db")
    app = Ledger(path, cipher_key=TEST_CIPHER_KEY if encrypted else "")
    try:
        app.init()
        idn = busy_county(app)
    finally:
        app.close()
    raw = b"".join(Path(f).read_bytes() for f in glob.glob(path + "*"))  # with -wal, -shm
    assert len(raw) > 10_000
    for secret in secrets_of(idn):
        assert (secret in raw) is not encrypted, secret.decode()


def test_encrypted_events_need_the_right_key(ledger: Ledger,
                                             ledger_url: tuple[str, str | None]) -> None:
    url, key = ledger_url
    idn = make_id(6)
    enrol(ledger, idn, name=NAME)
    same = Ledger(url, cipher_key=key)
    try:
        assert same.participant(idn).name == NAME
    finally:
        same.close()
    if not key:
        return
    wrong = Ledger(url, cipher_key=AESCipher.create_key(num_bytes=32))
    try:
        with pytest.raises(ValueError, match="MAC check failed"):
            wrong.participant(idn)
    finally:
        wrong.close()


def test_events_survive_the_round_trip_through_the_store(ledger: Ledger) -> None:
    busy_county(ledger)
    for n in notifications(ledger):
        event = ledger.mapper.to_domain_event(n)
        again = ledger.mapper.to_domain_event(ledger.mapper.to_stored_event(event))
        assert again == event
        assert type(again) is type(event)


# ---- configuration ----------------------------------------------------------------------

def test_a_path_selects_sqlite_and_a_url_selects_postgresql() -> None:
    env = store_env("/tmp/x/ledger.db", cipher_key="")
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite"
    assert env["SQLITE_DBNAME"] == "/tmp/x/ledger.db"
    assert "CIPHER_TOPIC" not in env
    env = store_env("postgresql://alice:s%40cret@db.example:6543/pension?schema=county_a",
                    cipher_key="")
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"], env["POSTGRES_DBNAME"]) == (
        "db.example", "6543", "pension")
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == ("alice", "s@cret")
    assert env["POSTGRES_SCHEMA"] == "county_a"


def test_the_cipher_key_turns_encryption_on(monkeypatch: pytest.MonkeyPatch) -> None:
    key = AESCipher.create_key(num_bytes=32)
    env = store_env("/tmp/x/ledger.db", cipher_key=key)
    assert env["CIPHER_TOPIC"] == "eventsourcing.cipher:AESCipher"
    assert env["CIPHER_KEY"] == key
    monkeypatch.setenv("CIPHER_KEY", key)
    assert store_env("/tmp/x/ledger.db")["CIPHER_KEY"] == key
    assert "CIPHER_KEY" not in store_env("/tmp/x/ledger.db", cipher_key="")  # explicitly off


def test_the_database_is_the_flag_then_the_environment_then_the_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    assert resolve_url(None) == DEFAULT_SQLITE_PATH
    monkeypatch.setenv("LEDGER_DATABASE_URL", "/srv/county.db")
    assert resolve_url(None) == "/srv/county.db"
    assert resolve_url("other.db") == "other.db"


def test_stray_process_variables_do_not_reconfigure_the_store(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSISTENCE_MODULE", "eventsourcing.popo")
    monkeypatch.setenv("CIPHER_TOPIC", "no.such:Cipher")
    app = Ledger(str(tmp_path / "l.db"), cipher_key="")
    try:
        app.init()
        assert type(app.recorder).__name__ == "LedgerSQLiteRecorder"
        assert app.mapper.cipher is None
    finally:
        app.close()


def test_participants_of_replays_each_participant_as_the_repository_does(
        ledger: Ledger) -> None:
    """A year-wide command reads a chunk of participants in one query: each must come out
    exactly as repository.get replays it, in the order asked, events of others kept apart."""
    ids = [make_id(n) for n in range(1, 5)]
    for n, idn in enumerate(ids):
        enrol(ledger, idn, enrol_date=date(2019 + n % 2, 2, 1))
        for year in range(2020, 2023 - n % 2):
            contribute(ledger, idn, year)
    ledger.subsidise_year(year=2020, value_date=date(2020, 12, 1), actor="op1")
    ledger.credit_interest(year=2021, today=date(2022, 1, 5), actor="op1")
    pids = [participant_id(i) for i in reversed(ids)]

    replayed = ledger.participants_of(pids)

    assert [p.id for p in replayed] == pids
    for p in replayed:
        one = ledger.repository.get(p.id)
        assert p.version == one.version > 5
        assert vars(p) == vars(one)
        assert p.interest_years == one.interest_years and p.interest_years


def test_participants_of_names_a_participant_not_stored(ledger: Ledger) -> None:
    enrol(ledger, make_id(1))
    with pytest.raises(NotFound):
        ledger.participants_of([participant_id(make_id(1)), participant_id(make_id(2))])
