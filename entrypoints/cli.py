"""The `pension-ledger` command: the ledger's commands plus the payout engine's."""

from __future__ import annotations

from typing import Annotated

import typer

from ledger.application import Ledger
from ledger.cli import app, settings_of
from payout_engine.commands import register as register_payout


def _ledger(ctx: typer.Context) -> Ledger:
    return settings_of(ctx).ledger()


register_payout(app, _ledger)


@app.command("serve")
def serve_cmd(ctx: typer.Context,
              host: Annotated[str, typer.Option("--host", help="Address to listen on.")
                              ] = "127.0.0.1",
              port: Annotated[int, typer.Option("--port", help="Port (0: any free one).")
                              ] = 8080) -> None:
    """The views over HTTP, read only, as JSON (balances, statements, roster, county
    report), kept up to date by a projection runner following the log. Ctrl-C stops it."""
    from entrypoints.http_api import serve

    if not 0 <= port <= 65_535:
        typer.echo("pension-ledger: invalid input: port: must be 0 to 65535", err=True)
        raise typer.Exit(2)
    try:
        serve(_ledger(ctx), host, port, lambda url: typer.echo(f"serving {url}", err=True))
    except KeyboardInterrupt:
        typer.echo("stopped", err=True)


def main() -> None:
    app(prog_name="pension-ledger")


if __name__ == "__main__":
    main()
