"""The fund's bank accounts at the bank beside the ledger, statement by statement.

Each camt.053 end-of-day statement of one of the fund's three accounts gives the bank's
closing balance on its closing date. The ledger's view of the same money on that value date:
- the expenditure account (基金支出户): 1003 plus what is in flight at the bank (1101: sent,
  not yet debited by the bank). They agree to the fen once every answer of the bank up to
  that date is booked (`payout import-returns`);
- the income account (基金收入户): 1001;
- the fiscal special account (财政专户): 1002, its demand balance. Its fixed deposits (1004)
  are certificates of their own, not in the account's statement.
A difference is money the ledger has not been told of, or has booked that the bank has not.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

from ledger.application import Ledger
from ledger.errors import InvalidInput, NotFound
from ledger.postings import EXPENDITURE, FISCAL, IN_FLIGHT, INCOME
from payout_engine.bankfiles import BankFileError
from payout_engine.bankfiles.returns import AccountStatement, Statement, parse_bank_message
from payout_engine.config import PayoutConfig

MAX_FILES = 1_000
MAX_FILE_BYTES = 64 * 1024 * 1024
FUND_ACCOUNTS = ("income", "fiscal", "expenditure")
# The ledger's accounts that hold what the bank's statement of each account shows.
LEDGER_ACCOUNTS = {"income": (INCOME,), "fiscal": (FISCAL,),
                   "expenditure": (EXPENDITURE, IN_FLIGHT)}


def fund_statements(paths: Iterable[str | Path], config: PayoutConfig,
                    accounts: Iterable[str] = ("expenditure",)) -> list[Statement]:
    """The statements of the fund's `accounts` (of FUND_ACCOUNTS) in the camt.053 files, by
    closing date (other accounts' statements are passed over)."""
    wanted = set(accounts)
    assert wanted <= set(FUND_ACCOUNTS), wanted
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
            if config.fund_account_of(s.account) not in wanted:
                continue
            if s.to_date is None:
                raise InvalidInput("file", f"{p}: statement {s.id} has no closing date")
            found.append(s)
    return sorted(found, key=lambda s: (s.to_date or date.min, s.id))


def reconcile(ledger: Ledger, statements: list[Statement],
              config: PayoutConfig | None = None) -> dict[str, Any]:
    """Each statement's closing balance beside the ledger's balances of the same money as
    of its closing date (from the views, brought up to date first: by the runner, or, where
    Kafka consumers feed the balances view, as far as they have applied, which the result
    says). Without a config every statement is the expenditure account's."""
    from ledger.projections import ProjectionRunner, Views

    runner = ProjectionRunner(ledger)  # every view: it passes over those consumers feed
    runner.run_until_caught_up()
    views = Views(ledger)
    rows = []
    for s in statements:
        assert s.to_date is not None
        kind = "expenditure" if config is None else config.fund_account_of(s.account)
        assert kind in LEDGER_ACCOUNTS, (s.account, kind)
        raw = views.balances(s.to_date)["accounts"]
        parts = {a: raw.get(a, 0) for a in LEDGER_ACCOUNTS[kind]}
        ledger_fen = sum(parts.values())
        row: dict[str, Any] = {
            "statement": s.id, "account": s.account, "fund_account": kind,
            "closing_date": s.to_date.isoformat(), "bank_closing_fen": s.closing_fen,
            "ledger_fen": ledger_fen, "ledger_accounts_fen": parts,
            "difference_fen": s.closing_fen - ledger_fen, "agrees": s.closing_fen == ledger_fen}
        if kind == "expenditure":
            row["ledger_expenditure_fen"] = parts[EXPENDITURE]
            row["ledger_in_flight_fen"] = parts[IN_FLIGHT]
        rows.append(row)
    return {"statements": rows, "agree": all(r["agrees"] for r in rows),
            "balances_fed_by": "kafka" if "balances" in runner.passed_over else "log"}


MAX_READ_ATTEMPTS = 5


def internal_checks(ledger: Ledger) -> dict[str, Any]:
    """The fund's accounts against each other, inside the ledger: the guarded balances the
    commands keep (written with the events) against the balances view read from the events,
    account by account, at one position of the log; and the trial balance, which nets to
    zero when every event's postings do."""
    from ledger.postings import ACCOUNT_NAMES, GUARDED_ACCOUNTS
    from ledger.projections import ProjectionRunner, Views

    runner = ProjectionRunner(ledger)
    views = Views(ledger)
    for _attempt in range(MAX_READ_ATTEMPTS):
        head = ledger.recorder.max_notification_id() or 0
        runner.run_until_caught_up()
        positions = ledger.fund_positions()
        balances = views.balances()
        if (ledger.recorder.max_notification_id() or 0) == head:
            break   # nothing written between the two reads: they are of one position
    else:
        raise NotFound("position", f"the log moved on during {MAX_READ_ATTEMPTS} reads; "
                                   "try again when fewer commands are being run")
    behind = head - (balances["position"] or 0)
    rows = [{"account": a, "name": ACCOUNT_NAMES[a], "guarded_fen": positions[a],
             "view_fen": balances["accounts"].get(a, 0),
             "difference_fen": positions[a] - balances["accounts"].get(a, 0)}
            for a in GUARDED_ACCOUNTS]
    trial = views.trial_balance()
    return {"position": head, "view_behind_by": behind, "accounts": rows,
            "trial_balance_net_fen": trial["net_fen"],
            "agree": behind == 0 and all(r["difference_fen"] == 0 for r in rows)
            and trial["net_fen"] == 0}
