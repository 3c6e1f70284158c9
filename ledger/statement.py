"""A participant's statement (对账单): each source, contributions and interest by year,
pension history; as of any value date."""

from __future__ import annotations

from datetime import date
from typing import Any

from ledger import resident_id
from ledger.aggregates.participant import SOURCES, Participant


def statement_of(p: Participant, as_of: date | None = None, *, unmasked: bool = False
                 ) -> dict[str, Any]:
    on = as_of or date.max
    sources = p.balance_on(on)
    contributions: dict[int, dict[str, Any]] = {}
    interest: dict[int, int] = {}
    for b in p.bookings:
        if b.value_date > on:
            continue
        if b.kind in ("contribution", "back_payment", "on_behalf", "subsidy", "collective",
                      "reversed"):
            year_row = contributions.setdefault(b.value_date.year, dict.fromkeys(SOURCES[:-1], 0))
            year_row[b.source] += b.amount_fen
        if b.kind == "interest":
            interest[b.value_date.year] = interest.get(b.value_date.year, 0) + b.amount_fen
    pension = None
    if p.pension is not None:
        pension = {"start_month": p.pension.start_month,
                   "basic_fen": p.pension.basic.total_fen(),
                   "basic_components_fen": p.pension.basic.model_dump(),
                   "account_pension_fen": p.pension.account_pension_fen,
                   "account_balance_at_start_fen": p.pension.account_balance_fen,
                   "rule_version": p.pension.rule_version}
    total = sum(sources.values())
    assert total == sum(sources[s] for s in SOURCES)
    return {
        "id_number": p.id_number if unmasked else resident_id.mask(p.id_number),
        "name": p.name,
        "township": p.township,
        "village": p.village,
        "status": p.status,
        "identity_group": p.identity_group_on(on) if as_of else p.identity_group,
        "as_of": as_of.isoformat() if as_of else None,
        "balance_fen": total,
        "sources_fen": sources,
        "contribution_years": sorted(y for y in p.contributed_years),
        "booked_by_year_fen": {str(y): v for y, v in sorted(contributions.items())},
        "interest_by_year_fen": {str(y): v for y, v in sorted(interest.items())},
        "pension": pension,
        "date_of_death": p.date_of_death.isoformat() if p.date_of_death else None,
        "overpayment_outstanding_fen": p.overpayment_fen,
    }
