"""The fund's expenditure account at the bank beside the ledger, statement by statement.

Each camt.053 end-of-day statement of the expenditure account (基金支出户) gives the bank's
closing balance on its closing date. The ledger's view of the same money on that value date
is the expenditure account (1003) plus what is in flight at the bank (1101: sent, not yet
debited by the bank). They agree to the fen once every answer of the bank up to that date
is booked (`payout import-returns`); a difference is money the ledger has not been told of,
or has booked that the bank has not.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

from ledger.application import Ledger
from ledger.errors import InvalidInput, NotFound
from ledger.postings import EXPENDITURE, IN_FLIGHT
from payout_engine.bankfiles import BankFileError
from payout_engine.bankfiles.returns import AccountStatement, Statement, parse_bank_message
from payout_engine.config import PayoutConfig

MAX_FILES = 1_000
MAX_FILE_BYTES = 64 * 1024 * 1024


def fund_statements(paths: Iterable[str | Path], config: PayoutConfig) -> list[Statement]:
    """The statements of the fund's expenditure account in the camt.053 files, by closing
    date (other accounts' statements are passed over)."""
    found: list[Statement] = []
    for count, path in enumerate(paths, start=1):
        if count > MAX_FILES:
            raise InvalidInput("file", f"more than {MAX_FILES} statement files at once")
        p = Path(path)
        if not p.is_file():
            raise NotFound("file", str(p))
        if p.stat().st_size > MAX_FILE_BYTES:
            raise InvalidInput("file", f"{p}: more than {MAX_FILE_BYTES} bytes")
        try:
            message = parse_bank_message(p.read_bytes())
        except BankFileError as e:
            raise InvalidInput("file", f"{p}: {e}") from None
        if not isinstance(message, AccountStatement):
            raise InvalidInput("file", f"{p}: a {message.message_name}, not a camt.053 "
                                       "statement")
        for s in message.statements:
            if not config.is_fund_account(s.account):
                continue
            if s.to_date is None:
                raise InvalidInput("file", f"{p}: statement {s.id} has no closing date")
            found.append(s)
    return sorted(found, key=lambda s: (s.to_date or date.min, s.id))


def reconcile(ledger: Ledger, statements: list[Statement]) -> dict[str, Any]:
    """Each statement's closing balance beside the ledger's expenditure and in-flight
    balances as of its closing date (from the views, brought up to date first: by the
    runner, or, where Kafka consumers feed the balances view, as far as they have applied,
    which the result says)."""
    from ledger.projections import ProjectionRunner, Views

    runner = ProjectionRunner(ledger)  # every view: it passes over those consumers feed
    runner.run_until_caught_up()
    views = Views(ledger)
    rows = []
    for s in statements:
        assert s.to_date is not None
        raw = views.balances(s.to_date)["accounts"]
        expenditure, in_flight = raw.get(EXPENDITURE, 0), raw.get(IN_FLIGHT, 0)
        ledger_fen = expenditure + in_flight
        rows.append({"statement": s.id, "account": s.account,
                     "closing_date": s.to_date.isoformat(), "bank_closing_fen": s.closing_fen,
                     "ledger_expenditure_fen": expenditure, "ledger_in_flight_fen": in_flight,
                     "difference_fen": s.closing_fen - ledger_fen,
                     "agrees": s.closing_fen == ledger_fen})
    return {"statements": rows, "agree": all(r["agrees"] for r in rows),
            "balances_fed_by": "kafka" if "balances" in runner.passed_over else "log"}
