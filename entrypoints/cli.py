"""The `pension-ledger` command: the ledger's commands plus the payout engine's."""

from __future__ import annotations

import typer

from ledger.application import Ledger
from ledger.cli import app, settings_of
from payout_engine.commands import register as register_payout


def _ledger(ctx: typer.Context) -> Ledger:
    return settings_of(ctx).ledger()


register_payout(app, _ledger)


def main() -> None:
    app(prog_name="pension-ledger")


if __name__ == "__main__":
    main()
