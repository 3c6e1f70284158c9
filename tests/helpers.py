"""Builders shared by the tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ledger import resident_id
from ledger.aggregates.participant import BankAccount
from ledger.application import Ledger
from ledger.errors import LedgerError


def make_id(n: int, born: date = date(1970, 5, 17), area: str = "110101") -> str:
    return resident_id.make(area, born, n % 1000)


def bank(n: int = 1) -> BankAccount:
    return BankAccount(account_name=f"持卡人{n}", account_number=f"62220000{n:08d}",
                       bank_code="102")


def enrol(ledger: Ledger, id_number: str, *, group: str = "ordinary",
          enrol_date: date = date(2015, 1, 10), **kw: Any) -> dict[str, Any]:
    return ledger.enrol(id_number=id_number, name=kw.pop("name", "王五"),
                        township=kw.pop("township", "城关镇"), village=kw.pop("village", "东村"),
                        identity_group=group, enrol_date=enrol_date,
                        bank=kw.pop("bank_account", bank()), actor=kw.pop("actor", "op1"), **kw)


def contribute(ledger: Ledger, id_number: str, year: int, tier_fen: int = 50000,
               amount_fen: int | None = None, **kw: Any) -> dict[str, Any]:
    return ledger.contribute(id_number=id_number, year=year, tier_fen=tier_fen,
                             amount_fen=tier_fen if amount_fen is None else amount_fen,
                             channel=kw.pop("channel", "bank"),
                             receipt_no=kw.pop("receipt_no", f"R-{id_number[-6:]}-{year}"),
                             value_date=kw.pop("value_date", date(year, 3, 1)),
                             actor=kw.pop("actor", "op1"), **kw)


def stored(ledger: Ledger) -> tuple[Any, ...]:
    """What a refused command must leave unchanged: events, fund positions, chain blocks."""
    return (ledger.recorder.max_notification_id(), ledger.fund_positions(),
            len(ledger.queries.chain_blocks()))


def refused(ledger: Ledger, error: type[LedgerError], field: str, rule: str,
            command: Callable[[], Any]) -> LedgerError:
    """Run a command that must be refused: check the error and that nothing was stored."""
    before = stored(ledger)
    with pytest.raises(error) as e:
        command()
    assert getattr(e.value, "field", None) == field, str(e.value)
    assert rule in e.value.rule, e.value.rule  # type: ignore[attr-defined]
    assert stored(ledger) == before
    return e.value


def ledger_file(folder: Path, fill: Callable[[Ledger], Any]) -> str:
    """A set-up SQLite ledger in `folder`, filled by fill(ledger) and closed: its path, for
    tests of the command line."""
    db = str(folder / "ledger.db")
    ledger = Ledger(db, cipher_key="")
    try:
        ledger.init()
        fill(ledger)
    finally:
        ledger.close()
    return db
