"""CLI commands of the projections, registered on the main `pension-ledger` app:

    balances [--as-of DATE] [--by township] [--fund] [--json]
    trial-balance [--as-of DATE] [--json]
    roster [--status STATUS] [--json]
    report county [--year YEAR] [--as-of DATE] [--json]
    project run [--follow] [--poll-interval-s S]
    project rebuild [--view NAME]...
    project status [--json]

Queries first bring the views up to date (cheap when they are), unless --no-refresh.
Money is shown in yuan on screen and in integer fen in --json.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from threading import Event
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ledger.errors import InvalidInput, LedgerError
from ledger.money import format_yuan
from ledger.projections.api import Views
from ledger.projections.parallel import MAX_WORKERS
from ledger.projections.read_balances import By, account_name
from ledger.projections.rebuild import rebuild
from ledger.projections.runner import ProjectionRunner

if TYPE_CHECKING:
    from ledger.application import Ledger

GetLedger = Callable[[], "Ledger"]


def parse_date(text: str | None, field: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(field, f"{text!r} is not a date in the form YYYY-MM-DD") from None


def emit_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


@contextmanager
def user_errors() -> Iterator[None]:
    """A ledger error is the user's to fix: its message, and exit status 2."""
    try:
        yield
    except LedgerError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


def _views(get_ledger: GetLedger, refresh: bool) -> Views:
    ledger = get_ledger()
    if refresh:
        ProjectionRunner(ledger).run_until_caught_up()
    return Views(ledger)


def _money_table(title: str, rows: list[tuple[str, str, int]]) -> Table:
    table = Table(title=title)
    table.add_column("account")
    table.add_column("name")
    table.add_column("balance (yuan)", justify="right")
    for account, name, fen in rows:
        table.add_row(account, name, format_yuan(fen))
    return table


def register(app: typer.Typer, get_ledger: GetLedger) -> None:
    console = Console()

    @app.command("balances")
    def balances(as_of: str | None = typer.Option(None, "--as-of", help="value date YYYY-MM-DD"),
                 by: str | None = typer.Option(None, "--by", help="township"),
                 fund: bool = typer.Option(False, "--fund", help="only the fund's accounts"),
                 as_json: bool = typer.Option(False, "--json"),
                 refresh: bool = typer.Option(True, "--refresh/--no-refresh")) -> None:
        """Account balances, current or as of a value date, for the county or by township."""
        with user_errors():
            on = parse_date(as_of, "as_of")
            if by not in (None, "township"):
                raise InvalidInput("by", "must be township")
            views = _views(get_ledger, refresh)
            group: By = "township" if by else None
            data = views.fund_balances(on, group) if fund else views.balances(on, group)
        if as_json:
            emit_json(data)
            return
        title = f"balances as of {data['as_of'] or 'now'} (position {data['position']})"
        if fund:
            groups = data["townships"] if by else {"county": data}
            for name, figures in groups.items():
                console.print(_money_table(f"{title} {name}", [
                    (k.removesuffix("_fen"), "", v) for k, v in figures.items()
                    if k.endswith("_fen") and isinstance(v, int)]))
            return
        groups = data["townships"] if by else {"": data["accounts"]}
        for name, accounts in groups.items():
            console.print(_money_table(f"{title} {name}".strip(),
                                       [(a, account_name(a), v) for a, v in accounts.items()]))

    @app.command("trial-balance")
    def trial_balance(as_of: str | None = typer.Option(None, "--as-of"),
                      as_json: bool = typer.Option(False, "--json"),
                      refresh: bool = typer.Option(True, "--refresh/--no-refresh")) -> None:
        """Every account, debit and credit; the totals are equal."""
        with user_errors():
            data = _views(get_ledger, refresh).trial_balance(parse_date(as_of, "as_of"))
        if as_json:
            emit_json(data)
            return
        table = Table(title=f"trial balance as of {data['as_of'] or 'now'}")
        for name in ("account", "name", "debit (yuan)", "credit (yuan)"):
            table.add_column(name, justify="right" if "yuan" in name else "left")
        for r in data["accounts"]:
            table.add_row(r["account"], r["name"], format_yuan(r["debit_fen"]),
                          format_yuan(r["credit_fen"]))
        table.add_row("", "total", format_yuan(data["total_debit_fen"]),
                      format_yuan(data["total_credit_fen"]))
        console.print(table)

    @app.command("roster")
    def roster(status: str | None = typer.Option(None, "--status"),
               as_json: bool = typer.Option(False, "--json"),
               refresh: bool = typer.Option(True, "--refresh/--no-refresh")) -> None:
        """The pensioner roster the payout engine pays from (IDs masked)."""
        with user_errors():
            rows = _views(get_ledger, refresh).roster(status)
        if as_json:
            emit_json(rows)
            return
        table = Table(title=f"pensioner roster ({len(rows)})")
        for name in ("id", "township", "village", "status", "from", "monthly (yuan)", "bank"):
            table.add_column(name)
        for r in rows:
            table.add_row(r["id_number"], r["township"], r["village"], r["status"],
                          r["start_month"], format_yuan(r["monthly_fen"]),
                          f"…{r['bank_last4']}" if r["bank_last4"] else "")
        console.print(table)

    report_app = typer.Typer(help="Reports from the projections.", no_args_is_help=True)
    app.add_typer(report_app, name="report")

    @report_app.command("county")
    def county(year: int = typer.Option(date.today().year, "--year"),
               as_of: str | None = typer.Option(None, "--as-of"),
               as_json: bool = typer.Option(False, "--json"),
               refresh: bool = typer.Option(True, "--refresh/--no-refresh")) -> None:
        """Enrolled, contributing and coverage, pensioners: by township and village."""
        with user_errors():
            data = _views(get_ledger, refresh).county_report(year, parse_date(as_of, "as_of"))
        if as_json:
            emit_json(data)
            return
        table = Table(title=f"county report {year} (as of {data['as_of']})")
        for name in ("township", "village", "enrolled", "contributing", "coverage",
                     "pensioners"):
            table.add_column(name)

        def add(t: str, v: str, f: dict[str, Any]) -> None:
            table.add_row(t, v, str(f["enrolled"]), str(f["contributing"]), f["coverage"],
                          str(f["pensioners"]))

        for t in data["townships"]:
            for v in t["villages"]:
                add(t["township"], v["village"], v)
            add(t["township"], "(all)", t)
        add("(county)", "", data["county"])
        console.print(table)

    project_app = typer.Typer(help="The projection runner and its views.",
                              no_args_is_help=True)
    app.add_typer(project_app, name="project")

    @project_app.command("run")
    def run(follow: bool = typer.Option(False, "--follow", help="keep following the log"),
            poll_interval_s: float = typer.Option(1.0, "--poll-interval-s")) -> None:
        """Bring the views up to date (and with --follow keep them so until Ctrl-C)."""
        with user_errors():
            if not 0 < poll_interval_s <= 3600:
                raise InvalidInput("poll_interval_s", "must be in (0, 3600]")
            runner = ProjectionRunner(get_ledger())
            if not follow:
                n = runner.run_until_caught_up()
                typer.echo(f"projected {n} notifications; positions {runner.positions()}")
                if runner.passed_over:
                    typer.echo(f"left to the Kafka consumers (`consume`) that feed them: "
                               f"{', '.join(runner.passed_over)}")
                return
            stop = Event()
            try:
                runner.run(stop, poll_interval_s=poll_interval_s)
            except KeyboardInterrupt:
                stop.set()

    @project_app.command("rebuild")
    def rebuild_cmd(view: Annotated[list[str] | None, typer.Option(
            "--view", help="balances, statements, participants (roster, county)")] = None,
                    workers: int = typer.Option(1, "--workers", help="processes sharing "
                                                "the pass (PostgreSQL)")) -> None:
        """Rebuild views from the event store into fresh tables; switch once caught up."""
        with user_errors():
            ledger = get_ledger()
            head = ledger.recorder.max_notification_id() or 0
            with Progress(console=Console(stderr=True)) as progress:
                task = progress.add_task("rebuilding", total=head)
                if not 1 <= workers <= MAX_WORKERS:
                    raise InvalidInput("workers", f"must be 1 to {MAX_WORKERS}")
                reports = rebuild(ledger, view or None, workers=workers,
                                  progress=lambda n: progress.advance(task, n))
        for r in reports:
            typer.echo(f"{r['view']}: generation {r['generation']} at position "
                       f"{r['position']} ({r['notifications']} notifications, "
                       f"{r['seconds']} s)")

    @project_app.command("status")
    def status(as_json: bool = typer.Option(False, "--json")) -> None:
        """Each view's generation, position and how far behind the log it is."""
        with user_errors():
            data = Views(get_ledger()).positions()
        if as_json:
            emit_json(data)
            return
        for name, p in data.items():
            typer.echo(f"{name}: generation {p['generation']}, position {p['position']}, "
                       f"behind {p['behind']}"
                       + (f", rebuilding generation {p['building']}" if p["building"] else "")
                       + (", fed by Kafka consumers" if p["feed"] == "kafka" else ""))
