"""The views there are, and the names people use for them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ledger.errors import InvalidInput
from ledger.projections.balances import BalancesView
from ledger.projections.participants import ParticipantsView
from ledger.projections.statements import StatementsView
from ledger.projections.view import View

if TYPE_CHECKING:
    from ledger.application import Ledger

VIEW_NAMES = ("balances", "statements", "participants")
# What people ask for, and the view that answers it.
ALIASES = {
    "trial-balance": "balances",
    "roster": "participants",
    "county": "participants",
}


def resolve_names(names: Iterable[str] | None = None) -> list[str]:
    if names is None:
        return list(VIEW_NAMES)
    out: list[str] = []
    for name in names:
        canonical = ALIASES.get(name, name)
        if canonical not in VIEW_NAMES:
            known = ", ".join([*VIEW_NAMES, *ALIASES])
            raise InvalidInput("view", f"no view named {name!r} (known: {known})")
        if canonical not in out:
            out.append(canonical)
    return out


def make_view(name: str, ledger: Ledger) -> View:
    if name == "balances":
        return BalancesView()
    if name == "statements":
        return StatementsView()
    if name == "participants":
        return ParticipantsView(ledger.mapper.cipher)
    raise InvalidInput("view", f"no view named {name!r}")


def make_views(ledger: Ledger, names: Iterable[str] | None = None) -> list[View]:
    return [make_view(n, ledger) for n in resolve_names(names)]
