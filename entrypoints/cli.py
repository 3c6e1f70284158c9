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


@app.command("relay")
def relay_cmd(ctx: typer.Context,
              servers: Annotated[str, typer.Option(
                  "--bootstrap-servers", envvar="KAFKA_BOOTSTRAP_SERVERS",
                  help="Kafka brokers, host:port[,host:port].")],
              prefix: Annotated[str, typer.Option(
                  "--prefix", help="Topics are <prefix>.participant, <prefix>.fund, ...")
              ] = "pension",
              partitions: Annotated[int, typer.Option(
                  "--partitions", help="Partitions of each topic it creates.")] = 6,
              follow: Annotated[bool, typer.Option(
                  "--follow", help="Keep publishing new events until Ctrl-C.")] = False
              ) -> None:
    """Publish the event store's notification log to Kafka: a topic per kind of aggregate,
    keyed by aggregate, at least once, from where it last stopped."""
    from threading import Event

    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient

    from consumers.relay import Relay, create_topics

    if not 1 <= partitions <= 1_000:
        typer.echo("pension-ledger: invalid input: partitions: must be 1 to 1000", err=True)
        raise typer.Exit(2)
    brokers = [s.strip() for s in servers.split(",") if s.strip()]
    admin = KafkaAdminClient(bootstrap_servers=brokers)
    created = create_topics(admin, prefix, partitions)
    admin.close()
    if created:
        typer.echo(f"created topics {', '.join(created)}", err=True)
    relay = Relay(_ledger(ctx), KafkaProducer(bootstrap_servers=brokers, acks="all",
                                              max_in_flight_requests_per_connection=1),
                  prefix=prefix)
    if not follow:
        sent = relay.run_once()
        typer.echo(f"published {sent} events; position {relay.position()}", err=True)
        return
    typer.echo(f"following the log from position {relay.position()}", err=True)
    try:
        relay.run(Event())
    except KeyboardInterrupt:
        typer.echo(f"stopped at position {relay.position()}", err=True)


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
        serve(_ledger(ctx), host, port, lambda url: typer.echo(f"serving {url}", err=True),
              lambda problem: typer.echo(f"pension-ledger serve: {problem}", err=True))
    except KeyboardInterrupt:
        typer.echo("stopped", err=True)


def main() -> None:
    app(prog_name="pension-ledger")


if __name__ == "__main__":
    main()
