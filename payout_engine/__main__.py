"""`python -m payout_engine payout ...`: the payout commands on their own, for operators'
scripts and for tests that kill the process (the main CLI, `pension-ledger payout ...`,
offers the same commands).

    python -m payout_engine [--db URL] [--actor NAME] payout run --period 2026-11
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated

import typer

from ledger.application import Ledger
from payout_engine.commands import register


@dataclass
class Settings:
    db: str | None
    actor: str
    json: bool = False
    unmask: bool = False
    ledger: Ledger | None = None

    def get(self) -> Ledger:
        if self.ledger is None:
            self.ledger = Ledger(self.db, cipher_key=os.environ.get("CIPHER_KEY"))
        return self.ledger

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None


app = typer.Typer(name="payout-engine", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)


@app.callback()
def main_options(ctx: typer.Context,
                 db: Annotated[str | None, typer.Option(
                     "--db", help="SQLite path or postgresql:// URL (env "
                     "LEDGER_DATABASE_URL).")] = None,
                 actor: Annotated[str, typer.Option("--actor", envvar="LEDGER_ACTOR",
                                                    help="Who is acting.")] = "operator"
                 ) -> None:
    settings = Settings(db=db, actor=actor.strip())
    ctx.obj = settings
    ctx.call_on_close(settings.close)


def _ledger(ctx: typer.Context) -> Ledger:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings.get()


register(app, _ledger)

if __name__ == "__main__":
    app(prog_name="payout-engine")
