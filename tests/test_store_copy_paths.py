"""The PostgreSQL recorder writes large ride-along sets (register, receipts, pensioner facts,
paid months) by binary COPY and small ones by unnest. With the threshold at one row every
write takes the COPY path; the books must come out the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger import store
from ledger.application import Ledger
from ledger.postings import EXPENDITURE, FISCAL, IN_FLIGHT
from tests.conftest import TEST_CIPHER_KEY
from tests.test_payout_support import (
    net_paid_months,
    pay,
    pid,
    transitional,
    treasury,
)


@pytest.fixture(params=["plain", "encrypted"])
def pg_ledger(pg_url: str, request: pytest.FixtureRequest) -> Iterator[Ledger]:
    app = Ledger(pg_url, cipher_key=TEST_CIPHER_KEY if request.param == "encrypted" else "")
    app.init()
    yield app
    app.close()


@pytest.fixture
def copy_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "COPY_MIN_ROWS", 1)


def test_funding_and_returns_by_copy_book_the_same(pg_ledger: Ledger, copy_everything: None,
                                                    tmp_path: Path) -> None:
    ledger = pg_ledger
    treasury(ledger)
    ids = [transitional(ledger, n) for n in (1, 2, 3)]
    before = ledger.fund_positions()
    batch = pay(ledger, "2026-01", tmp_path, failures={ids[1]: "AC01"})
    assert batch.state == "closed"
    paid = [net_paid_months(ledger, idn) for idn in ids]
    assert paid[0] and paid[0][-1] == "2026-01" and paid[2] == paid[0] and paid[1] == []
    # the register's facts (written by COPY) agree with the events
    facts = {f.participant_id: f for f in ledger.pensioners()}
    assert facts[str(pid(ids[0]))].paid_through == "2026-01"
    assert facts[str(pid(ids[1]))].paid_through is None
    assert facts[str(pid(ids[1]))].payment_hold == "AC01"
    after = ledger.fund_positions()
    failed_fen = sum(line.amount_fen for line in batch.lines.values()
                     if line.id_number == ids[1])
    assert failed_fen > 0
    assert after.get(IN_FLIGHT, 0) == 0
    assert before[FISCAL] - after[FISCAL] == batch.total_fen
    assert after.get(EXPENDITURE, 0) - before.get(EXPENDITURE, 0) == failed_fen

