"""The `pension-ledger` command: the ledger's commands plus the payout engine's."""

from __future__ import annotations

from typing import Annotated

import typer

from ledger.application import Ledger
from ledger.cli import app, audit_app, guarded, register_demo_payout, settings_of
from payout_engine.commands import register as register_payout
from payout_engine.commands import register_audit
from payout_engine.demo import DemoPayouts


def _ledger(ctx: typer.Context) -> Ledger:
    return settings_of(ctx).ledger()


register_payout(app, _ledger)
register_audit(audit_app, _ledger)
register_demo_payout(DemoPayouts)


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

    from kafka.admin import KafkaAdminClient

    from consumers.relay import Relay, create_topics, relay_producer

    if not 1 <= partitions <= 1_000:
        typer.echo("pension-ledger: invalid input: partitions: must be 1 to 1000", err=True)
        raise typer.Exit(2)
    brokers = [s.strip() for s in servers.split(",") if s.strip()]
    admin = KafkaAdminClient(bootstrap_servers=brokers)
    created = create_topics(admin, prefix, partitions)
    admin.close()
    if created:
        typer.echo(f"created topics {', '.join(created)}", err=True)
    relay = Relay(_ledger(ctx), relay_producer(brokers), prefix=prefix)
    if not follow:
        sent = relay.run_once()
        typer.echo(f"published {sent} events; position {relay.position()}", err=True)
        return
    typer.echo(f"following the log from position {relay.position()}", err=True)
    try:
        relay.run(Event())
    except KeyboardInterrupt:
        typer.echo(f"stopped at position {relay.position()}", err=True)


@app.command("consume")
@guarded
def consume_cmd(ctx: typer.Context,
                servers: Annotated[str, typer.Option(
                    "--bootstrap-servers", "--brokers", envvar="KAFKA_BOOTSTRAP_SERVERS",
                    help="Kafka brokers, host:port[,host:port].")],
                group: Annotated[str, typer.Option(
                    "--group", help="The consumer group; its members share the partitions.")
                ] = "pension-projections",
                prefix: Annotated[str, typer.Option(
                    "--prefix", help="The relay's topics: <prefix>.participant, ...")
                ] = "pension",
                once: Annotated[bool, typer.Option(
                    "--once", help="Stop once caught up (a poll brings nothing).")] = False,
                take_over: Annotated[bool, typer.Option(
                    "--take-over", help="Feed views the projection runner has fed, from its "
                    "position; it then leaves them alone.")] = False,
                max_poll_records: Annotated[int, typer.Option(
                    "--max-poll-records", help="Records a poll, hence a transaction.")
                ] = 2_000,
                max_poll_interval_ms: Annotated[int, typer.Option(
                    "--max-poll-interval-ms", help="Longest time between polls before the "
                    "group gives this member's partitions away; also how long a rebalance "
                    "waits for members to join.")] = 60_000,
                ) -> None:
    """Feed the views from the relay's Kafka topics, as a member of a consumer group: each
    poll's rows and per-partition positions in one PostgreSQL transaction, so a message
    delivered or published again changes nothing."""
    from threading import Event

    from consumers.consume import MAX_BATCH, ProjectionConsumer, consumer_config
    from consumers.relay import MAX_PREFIX_CHARS
    from ledger.errors import InvalidInput

    brokers = [s.strip() for s in servers.split(",") if s.strip()]
    if not brokers:
        raise InvalidInput("bootstrap_servers", "must name at least one broker, host:port")
    if not group.strip():
        raise InvalidInput("group", "must not be empty")
    if not (0 < len(prefix) <= MAX_PREFIX_CHARS
            and prefix.replace("-", "").replace("_", "").replace(".", "").isalnum()):
        raise InvalidInput("prefix", f"1 to {MAX_PREFIX_CHARS} letters, digits, '.', '_' "
                           "or '-', as given to the relay")
    if not 1 <= max_poll_records <= MAX_BATCH:
        raise InvalidInput("max_poll_records", f"must be 1 to {MAX_BATCH}")
    if not 1_000 <= max_poll_interval_ms <= 3_600_000:
        raise InvalidInput("max_poll_interval_ms", "must be 1000 to 3600000")
    consumer = ProjectionConsumer(
        _ledger(ctx), consumer_config(brokers, group, max_poll_records=max_poll_records,
                                      max_poll_interval_ms=max_poll_interval_ms),
        prefix=prefix, take_over=take_over)
    views = ", ".join(f.view.name for f in consumer.feeds())

    def report(verb: str) -> None:
        positions = [p for by_partition in consumer.positions().values()
                     for p in by_partition.values()]
        typer.echo(f"{verb} {consumer.applied} events to {views} ({consumer.dropped} seen "
                   f"before, dropped); highest notification applied "
                   f"{max(positions, default=0)}", err=True)

    try:
        if once:
            consumer.run_until_caught_up()
            report("applied")
            return
        typer.echo(f"consuming {', '.join(consumer.topics)} in group {group}", err=True)
        consumer.run(Event())
    except KeyboardInterrupt:
        report("stopped: applied")
    finally:
        consumer.close()


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
