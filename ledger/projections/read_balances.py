"""Reading the balances view: account balances, fund balances and the trial balance,
current or as of a value date, for the county or by township."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from ledger.postings import (
    ACCOUNT_NAMES,
    EXPENDITURE,
    FISCAL,
    FIXED_DEPOSITS,
    IN_FLIGHT,
    INCOME,
    OVERPAYMENT_RECEIVABLE,
    SUBSIDY_RECEIVABLE,
)
from ledger.projections.balances import MOVEMENTS
from ledger.projections.store import Tx

By = Literal["township"] | None
COUNTY_LABEL = "(county)"  # movements of the fund itself, which belong to no township
FUND_ACCOUNTS = {"income": INCOME, "fiscal": FISCAL, "fixed_deposits": FIXED_DEPOSITS,
                 "expenditure": EXPENDITURE, "in_flight": IN_FLIGHT}


def account_balances(tx: Tx, as_of: date | None) -> dict[tuple[str, str], int]:
    """(account, township) -> balance in fen. A balance as of D sums whole years before
    D's year, whole months before D's month, and the days of D's month up to D."""
    m = tx.q(MOVEMENTS.name)
    head = f"SELECT account, township, CAST(SUM(amount_fen) AS BIGINT) FROM {m} WHERE "
    tail = " GROUP BY account, township"
    if as_of is None:
        rows = tx.query(head + "grain = 'A'" + tail)
    else:
        year_start = date(as_of.year, 1, 1)
        month_start = as_of.replace(day=1)
        rows = tx.query(
            head + "(grain = 'Y' AND period < ?) OR (grain = 'M' AND period >= ? AND period < ?)"
            " OR (grain = 'D' AND period >= ? AND period <= ?)" + tail,
            (year_start, year_start, month_start, month_start, as_of))
    return {(r[0], r[1]): int(r[2]) for r in rows}


def balances(tx: Tx, as_of: date | None = None, by: By = None) -> dict[str, Any]:
    raw = account_balances(tx, as_of)
    out: dict[str, Any] = {"as_of": as_of.isoformat() if as_of else None}
    if by is None:
        out["accounts"] = _sorted(_sum_by_account(raw))
        return out
    assert by == "township", by
    groups: dict[str, dict[str, int]] = {}
    for (account, township), amount in raw.items():
        group = groups.setdefault(township or COUNTY_LABEL, {})
        group[account] = group.get(account, 0) + amount
    out["by"] = by
    out["townships"] = {t: _sorted(groups[t]) for t in sorted(groups)}
    return out


def fund_balances(tx: Tx, as_of: date | None = None, by: By = None) -> dict[str, Any]:
    """The fund's bank accounts, money in flight and receivables."""
    raw = account_balances(tx, as_of)
    groups: dict[str, dict[str, int]] = {}
    for (account, township), amount in raw.items():
        key = COUNTY_LABEL if by is None else (township or COUNTY_LABEL)
        group = groups.setdefault(key, {})
        group[account] = group.get(account, 0) + amount
    out: dict[str, Any] = {"as_of": as_of.isoformat() if as_of else None}
    if by is None:
        out.update(_fund_figures(groups.get(COUNTY_LABEL, {})))
    else:
        out["by"] = by
        out["townships"] = {t: _fund_figures(groups[t]) for t in sorted(groups)}
    return out


def _fund_figures(accounts: dict[str, int]) -> dict[str, Any]:
    figures: dict[str, Any] = {f"{name}_fen": accounts.get(code, 0)
                               for name, code in FUND_ACCOUNTS.items()}
    receivables = {a: v for a, v in accounts.items()
                   if a == OVERPAYMENT_RECEIVABLE or a.startswith(SUBSIDY_RECEIVABLE + ".")}
    figures["receivables_fen"] = sum(receivables.values())
    figures["receivables_by_account_fen"] = _sorted(receivables)
    return figures


def trial_balance(tx: Tx, as_of: date | None = None) -> dict[str, Any]:
    """Every account with a balance, debit or credit; the two totals must be equal."""
    accounts = _sum_by_account(account_balances(tx, as_of))
    nonzero = [(a, v) for a, v in sorted(accounts.items()) if v]
    debit = sum(v for _, v in nonzero if v > 0)
    credit = -sum(v for _, v in nonzero if v < 0)
    rows = [{"account": a, "name": account_name(a),
             "debit_fen": max(v, 0), "credit_fen": max(-v, 0)} for a, v in nonzero]
    # Postings of every event sum to zero, so the view must too.
    assert debit == credit, f"trial balance does not net to zero: {debit} != {credit}"
    return {"as_of": as_of.isoformat() if as_of else None, "accounts": rows,
            "total_debit_fen": debit, "total_credit_fen": credit, "net_fen": debit - credit}


def account_name(account: str) -> str:
    base, _, sub = account.partition(".")
    name = ACCOUNT_NAMES.get(base, base)
    return f"{name}: {sub}" if sub else name


def _sum_by_account(raw: dict[tuple[str, str], int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for (account, _township), amount in raw.items():
        out[account] = out.get(account, 0) + amount
    return out


def _sorted(accounts: dict[str, int]) -> dict[str, int]:
    # Zero balances are left out: whether a netted-out account has a row at all depends
    # on how the events fell into batches, and the answer must not.
    return {a: accounts[a] for a in sorted(accounts) if accounts[a]}
