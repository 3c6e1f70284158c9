"""Reading the participants and statements views: a participant's statement, the county
report, the pensioner roster."""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import Cipher

from ledger.aggregates.participant import SOURCES
from ledger.errors import NotFound
from ledger.projections.participants import PAYMENTS, PEOPLE, YEARS, Person, unseal
from ledger.projections.statements import STATEMENT_ROWS
from ledger.projections.store import Tx
from ledger.projections.values import as_date

# Event kinds that book money into the account, counted in "booked by year".
INFLOW_KINDS = ("ContributionReceived", "PaidOnBehalf", "SubsidyCredited",
                "CollectiveSubsidyCredited", "ContributionReversed",  # a reversal nets
                "SubsidyReversed")
INTEREST_KINDS = ("InterestCredited", "InterestReversed")  # a reversal nets the year
MAX_ROSTER_ROWS = 10_000_000


def person(tx: Tx, pid: UUID) -> Person | None:
    rows = tx.query(f"SELECT * FROM {tx.q(PEOPLE.name)} WHERE participant_id = ?", (pid,))
    return Person.from_row(rows[0]) if rows else None


def statement(tx: Tx, cipher: Cipher | None, pid: UUID, masked_id: str,
              as_of: date | None = None, *, unmasked: bool = False) -> dict[str, Any]:
    """The same statement as ledger.statement.statement_of, from the views."""
    p = person(tx, pid)
    if p is None:
        raise NotFound("id_number", masked_id)
    sql = (f"SELECT source, value_date, kind, amount_fen FROM {tx.q(STATEMENT_ROWS.name)} "
           f"WHERE participant_id = ?")
    rows = tx.query(sql + " AND value_date <= ?", (pid, as_of)) if as_of else tx.query(sql, (pid,))
    sources = dict.fromkeys(SOURCES, 0)
    booked: dict[int, dict[str, int]] = {}
    interest: dict[int, int] = {}
    for source, value_date, kind, amount in rows:
        year = as_date(value_date).year  # type: ignore[union-attr]
        sources[source] += amount
        if kind in INFLOW_KINDS:
            year_row = booked.setdefault(year, dict.fromkeys(SOURCES[:-1], 0))
            year_row[source] += amount
        elif kind in INTEREST_KINDS:
            interest[year] = interest.get(year, 0) + amount
    years = [r[0] for r in tx.query(f"SELECT year FROM {tx.q(YEARS.name)} "
                                    f"WHERE participant_id = ? GROUP BY year "
                                    f"HAVING SUM(bookings) > 0 ORDER BY year", (pid,))]
    pii = unseal(cipher, p.pii)
    groups = orjson.loads(p.identity_groups)
    return {
        "id_number": pii["id_number"] if unmasked else p.id_masked,
        "name": pii["name"],
        "township": p.township,
        "village": p.village,
        "status": p.status,
        "identity_group": group_on(groups, as_of) if as_of else groups[-1][1],
        "as_of": as_of.isoformat() if as_of else None,
        "balance_fen": sum(sources.values()),
        "sources_fen": sources,
        "contribution_years": [int(y) for y in years],
        "booked_by_year_fen": {str(y): v for y, v in sorted(booked.items())},
        "interest_by_year_fen": {str(y): v for y, v in sorted(interest.items())},
        "pension": _pension(p),
        "date_of_death": p.date_of_death.isoformat() if p.date_of_death else None,
        "overpayment_outstanding_fen": p.overpayment_fen,
    }


def group_on(groups: list[list[str]], on: date) -> str:
    group = groups[0][1]
    for since, g in groups:
        if since <= on.isoformat():
            group = g
    return group


def _pension(p: Person) -> dict[str, Any] | None:
    if p.pension is None:
        return None
    full = orjson.loads(p.pension)
    keys = ("start_month", "basic_fen", "basic_components_fen", "account_pension_fen",
            "account_balance_at_start_fen", "rule_version")
    return {k: full[k] for k in keys}


def county_report(tx: Tx, year: int, as_of: date | None = None) -> dict[str, Any]:
    """Enrolled (contributing age), contributing in `year`, coverage, pensioners, and
    pensions paid in the month and the year; by township and village, as of the end of
    `year` (or as_of)."""
    on = as_of or date(year, 12, 31)
    alive = "(p.ended_on IS NULL OR p.ended_on > ?)"
    enrolled = f"p.enrol_date <= ? AND {alive} AND (p.pension_from IS NULL OR p.pension_from > ?)"
    rows = tx.query(
        f"SELECT p.township, p.village, "
        f"SUM(CASE WHEN {enrolled} THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN {enrolled} AND y.participant_id IS NOT NULL THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN p.pension_from <= ? AND {alive} THEN 1 ELSE 0 END) "
        f"FROM {tx.q(PEOPLE.name)} p LEFT JOIN (SELECT participant_id FROM "
        f"{tx.q(YEARS.name)} WHERE year = ? GROUP BY participant_id "
        f"HAVING SUM(bookings) > 0) y ON y.participant_id = p.participant_id "
        f"GROUP BY p.township, p.village ORDER BY p.township, p.village",
        (on, on, on, on, on, on, on, on, year))
    paid = _paid(tx, on)
    county = _figures(0, 0, 0, 0, 0)
    townships: dict[str, dict[str, Any]] = {}
    for township, village, n_enrolled, n_contributing, n_pensioners in rows:
        counts = (int(n_enrolled), int(n_contributing), int(n_pensioners),
                  *paid.get((township, village), (0, 0)))
        t = townships.setdefault(township, {"township": township, **_figures(0, 0, 0, 0, 0),
                                            "villages": []})
        t["villages"].append({"village": village, **_figures(*counts)})
        _add(t, counts)
        _add(county, counts)
    return {"year": year, "as_of": on.isoformat(), "county": county,
            "townships": list(townships.values())}


def _paid(tx: Tx, on: date) -> dict[tuple[str, str], tuple[int, int]]:
    """Pensions paid out (less what came back) in on's month and in its year up to on,
    by township and village: cash, by the value date of the payment."""
    year_start, month_start = date(on.year, 1, 1), on.replace(day=1)
    rows = tx.query(
        f"SELECT p.township, p.village, "
        f"CAST(SUM(CASE WHEN m.value_date >= ? THEN m.amount_fen ELSE 0 END) AS BIGINT), "
        f"CAST(SUM(m.amount_fen) AS BIGINT) "
        f"FROM {tx.q(PAYMENTS.name)} m JOIN {tx.q(PEOPLE.name)} p "
        f"ON p.participant_id = m.participant_id "
        f"WHERE m.value_date >= ? AND m.value_date <= ? GROUP BY p.township, p.village",
        (month_start, year_start, on))
    return {(r[0], r[1]): (int(r[2]), int(r[3])) for r in rows}


def _figures(enrolled: int, contributing: int, pensioners: int, paid_month_fen: int,
             paid_year_fen: int) -> dict[str, Any]:
    # Coverage in basis points, integer: 9800 is 98.00%.
    bp = contributing * 10_000 // enrolled if enrolled else 0
    return {"enrolled": enrolled, "contributing": contributing, "coverage_bp": bp,
            "coverage": f"{bp // 100}.{bp % 100:02d}%", "pensioners": pensioners,
            "paid_in_month_fen": paid_month_fen, "paid_in_year_fen": paid_year_fen}


def _add(figures: dict[str, Any], counts: tuple[int, ...]) -> None:
    keys = ("enrolled", "contributing", "pensioners", "paid_in_month_fen", "paid_in_year_fen")
    figures.update(_figures(*(figures[k] + c for k, c in zip(keys, counts, strict=True))))


def roster(tx: Tx, status: str | None = None) -> list[dict[str, Any]]:
    """Everyone whose pension was approved: what the payout engine pays from."""
    sql = f"SELECT * FROM {tx.q(PEOPLE.name)} WHERE pension IS NOT NULL"
    params: tuple[Any, ...] = ()
    if status is not None:
        sql += " AND status = ?"
        params = (status,)
    rows = tx.query(sql + " ORDER BY township, village, participant_id", params)
    assert len(rows) <= MAX_ROSTER_ROWS
    out = []
    for row in rows:
        p = Person.from_row(row)
        assert p.pension is not None
        pension = orjson.loads(p.pension)
        out.append({
            "participant_id": str(p.participant_id),
            "id_number": p.id_masked,
            "township": p.township,
            "village": p.village,
            "status": p.status,
            "start_month": pension["start_month"],
            "basic_components_fen": pension["basic_components_fen"],
            "basic_fen": pension["basic_fen"],
            "account_pension_fen": pension["account_pension_fen"],
            "monthly_fen": pension["basic_fen"] + pension["account_pension_fen"],
            "rule_version": pension["rule_version"],
            "suspended_from": p.suspended_from,
            "date_of_death": p.date_of_death.isoformat() if p.date_of_death else None,
            "bank_ref": p.bank_ref,
            "bank_last4": p.bank_last4,
            "payment_hold": p.payment_hold,
            "last_paid_month": p.last_paid_month,
        })
    return out
