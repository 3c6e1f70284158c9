"""`payout ...`: the monthly run on the command line.

    payout run --period 2026-11 [--format pain001|domestic] [--execution-date D]
    payout approve BATCH --manifest-hash H
    payout fund BATCH [--date D]
    payout export BATCH --format pain001|domestic --out DIR
    payout import-returns FILE
    payout show BATCH [--json]
    payout list [--from YYYY-MM] [--to YYYY-MM] [--state STATE] [--json]
    payout reconcile CAMT053_FILE... [--json]
    payout close BATCH
    payout cancel BATCH --reason TEXT

BATCH is the batch id, PERIOD/SEQUENCE (2026-11/1), or PERIOD for the month's standing batch.
`register(app, get_ledger)` adds the group to a typer app; the acting person comes from the
app's settings (`ctx.find_root().obj.actor`, as the main CLI keeps them) or LEDGER_ACTOR.
Refusals (ledger rules, bank file checks) print one message naming the field and the rule on
stderr and exit 2, with nothing stored. Personal data is masked: ID first 6 + last 4,
account numbers last 4.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, ParamSpec

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ledger import resident_id
from ledger.application import Ledger
from ledger.collector import collector_paused
from ledger.errors import InvalidInput, LedgerError, NotFound
from ledger.money import format_yuan
from payout_engine import export as export_module
from payout_engine import returns_import, run
from payout_engine.bankfiles import BankFileError
from payout_engine.config import BEIJING, load_config

P = ParamSpec("P")
EXIT_REFUSED = 2
EXIT_DIFFERS = 3  # payout reconcile: the bank and the ledger disagree
MAX_FAILED_SHOWN = 50
GetLedger = Callable[[typer.Context], Ledger]

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (amounts in integer fen).")]
BatchArg = Annotated[str, typer.Argument(help="Batch id, PERIOD/SEQUENCE (2026-11/1) or "
                                              "PERIOD.")]
FormatOpt = Annotated[str, typer.Option("--format", help="pain001 or domestic.")]


# ---- output -----------------------------------------------------------------------------

def _err(message: str) -> None:
    Console(stderr=True, highlight=False).print(
        f"[bold red]pension-ledger payout:[/] {escape(message)}", soft_wrap=True)


def mask_account(number: str) -> str:
    return "*" * max(0, len(number) - 4) + number[-4:]


def _mask(obj: Any, unmask: bool) -> Any:
    if unmask:
        return obj
    if isinstance(obj, dict):
        return {k: (mask_account(v) if k == "account_number" and isinstance(v, str) else
                    resident_id.mask(v) if k == "id_number" and isinstance(v, str)
                    and "*" not in v else _mask(v, unmask)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_mask(v, unmask) for v in obj]
    return obj


def _options(ctx: typer.Context) -> tuple[str, bool, bool]:
    """(actor, json, unmask) from the app's settings, if it keeps any."""
    settings = ctx.find_root().obj
    actor = getattr(settings, "actor", None) or os.environ.get("LEDGER_ACTOR") or "operator"
    return (str(actor), bool(getattr(settings, "json", False)),
            bool(getattr(settings, "unmask", False)))


DRIFT_HINT_MIN_PENSIONERS = 100_000  # below it, the registers' order on disk costs little


def _hint_maintain(ledger: Ledger) -> None:
    """After a big funding: say so on stderr if the registers have drifted from id order on
    disk (decision #41), which an office only learns of from funding growing slower."""
    if not ledger.queries.holds_pensioners(DRIFT_HINT_MIN_PENSIONERS):
        return
    drifted = ledger.registers_drifted()
    if drifted:
        Console(stderr=True, highlight=False).print(
            f"note: {', '.join(drifted)} no longer in participant-id order on disk; funding "
            "rewrites every row each month and takes longer so (about a fifth at a million "
            "pensioners): run `pension-ledger maintain` out of hours")


def _print(ctx: typer.Context, json_out: bool, payload: dict[str, Any], title: str) -> None:
    _, as_json, unmask = _options(ctx)
    shown = _mask(payload, unmask)
    if json_out or as_json:
        sys.stdout.write(orjson.dumps(shown, option=orjson.OPT_INDENT_2, default=str).decode()
                         + "\n")
        return
    table = Table(title=escape(title), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for k, v in shown.items():
        if k in ("comparison", "held", "death_checks", "failed_payments",
                 "batches", "statements"):
            continue
        table.add_row(escape(k), escape(_cell(k, v)))
    console = Console(highlight=False, soft_wrap=False)
    console.print(table)
    reasons = (shown.get("comparison") or {}).get("reasons") or []
    if reasons:
        t = Table(title="Changes since the previous month", title_justify="left")
        for col in ("reason", "headcount", "payments", "amount (yuan)"):
            t.add_column(col, justify="left" if col == "reason" else "right")
        for r in reasons:
            t.add_row(escape(r["reason"]), f"{r['headcount']:+d}", str(r["payments"]),
                      format_yuan(r["amount_fen"]))
        console.print(t)
    above = (shown.get("comparison") or {}).get("paid_above_the_rules") or {}
    if above.get("pensioners"):
        # A rule version lowered months already paid: not recovered by the run.
        console.print(f"Paid above the rules as they now stand: {above['pensioners']} "
                      f"pensioner(s), {format_yuan(above['amount_fen'])} yuan, not recovered "
                      "by the run (assess it: pensioner overpayment)")
    for key, heading in (("batches", "Booked"), ("held", "Held until bank details change"),
                         ("death_checks", "Suspended for a death check"),
                         ("failed_payments", "Failed or returned payments"),
                         ("statements", "Fund account statements")):
        rows = shown.get(key) or []
        if rows:
            t = Table(title=heading, title_justify="left")
            cols = list(rows[0])
            for col in cols:
                t.add_column(col)
            for row in rows:
                t.add_row(*(escape(_cell(c, row.get(c))) for c in cols))
            console.print(t)


def _cell(key: str, value: Any) -> str:
    if key.endswith("_fen") and isinstance(value, int) and not isinstance(value, bool):
        return format_yuan(value) + " yuan"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(k, v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "-" if value is None else str(value)


@contextmanager
def _progress(description: str) -> Iterator[Callable[[int], None]]:
    console = Console(stderr=True)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}"),
                   TimeElapsedColumn(), console=console, disable=not console.is_terminal)
    with bar:
        task = bar.add_task(description, total=None)
        yield lambda n: bar.advance(task, n)


def guarded(fn: Callable[P, None]) -> Callable[P, None]:
    """Refusals exit 2 with one message naming the field and the rule."""
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            with collector_paused():  # a batch of a million lines is read in most commands
                fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit, KeyboardInterrupt):
            raise
        except LedgerError as e:
            kind = ("invalid input" if isinstance(e, InvalidInput) else
                    "not found" if isinstance(e, NotFound) else "refused")
            _err(_masked_text(f"{kind}: {e}"))
            raise typer.Exit(EXIT_REFUSED) from None
        except BankFileError as e:
            field = getattr(e, "file_name", None)
            _err(_masked_text(f"bank file refused ({type(e).__name__}"
                              f"{', ' + field if field else ''}): {e}"))
            raise typer.Exit(EXIT_REFUSED) from None
        except ValidationError as e:
            err = e.errors()[0]
            _err(f"invalid input: {'.'.join(str(x) for x in err['loc'])}: {err['msg']}")
            raise typer.Exit(EXIT_REFUSED) from None
    return wrapper


_ID_TOKEN = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dX](?![0-9A-Za-z])")


def _masked_text(text: str) -> str:
    return _ID_TOKEN.sub(lambda m: resident_id.mask(m.group(0)), text)


def _date(text: str | None, field: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(field, f"{text!r} is not a date in the form YYYY-MM-DD") from None


# ---- what each command shows ------------------------------------------------------------

def batch_payload(batch: Any, *, lines: bool = False) -> dict[str, Any]:
    sums = {"settled": 0, "failed": 0, "returned": 0}
    counts = dict.fromkeys(sums, 0)
    for e2e, outcome in batch.outcomes.items():
        sums[outcome] += batch.lines[e2e].amount_fen
        counts[outcome] += 1
    failed = [{"end_to_end_id": e2e, "outcome": outcome,
               "id_number": batch.lines[e2e].id_number,
               "account_number": batch.lines[e2e].account_number}
              for e2e, outcome in sorted(batch.outcomes.items()) if outcome != "settled"]
    comparison = {k: v for k, v in batch.comparison.items()
                  if k not in ("files", "file_settings")}
    payload: dict[str, Any] = {
        "batch_id": str(batch.id), "batch": f"{batch.period}/{batch.sequence}",
        "period": batch.period, "sequence": batch.sequence, "state": batch.state,
        "format": batch.file_format, "drafted_by": batch.drafted_by,
        "approved_by": batch.approved_by, "created_at": batch.created_at.isoformat(),
        "execution_date": batch.execution_date.isoformat(), "line_count": batch.line_count,
        "total_fen": batch.total_fen, "manifest_sha256": batch.manifest_sha256,
        "files": [f["name"] for f in batch.comparison.get("files", [])],
        "exported_files": batch.exported_files,
        "outcomes": {"pending": batch.line_count - len(batch.outcomes),
                     **{k: counts[k] for k in counts},
                     **{f"{k}_fen": sums[k] for k in sums}},
        "comparison": comparison,
        "failed_payments": failed[:MAX_FAILED_SHOWN],
    }
    if lines:
        payload["lines"] = [line.model_dump(mode="json") for line in batch.lines.values()]
    return payload


# ---- the commands -----------------------------------------------------------------------

def register(app: typer.Typer, get_ledger: GetLedger) -> None:
    """Add the `payout` command group to `app`; `get_ledger(ctx)` gives the ledger."""
    payout = typer.Typer(no_args_is_help=True,
                         help="Monthly pension run: draft, approve, fund, export, returns.")
    app.add_typer(payout, name="payout")

    @payout.command("run")
    @guarded
    def run_cmd(ctx: typer.Context,
                period: Annotated[str, typer.Option("--period", help="Payout month YYYY-MM.")],
                file_format: FormatOpt = "pain001",
                execution_date: Annotated[str | None, typer.Option(
                    "--execution-date", help="Bank execution date YYYY-MM-DD (default: "
                    "PAYOUT_EXECUTION_OFFSET_DAYS working days before payday).")] = None,
                json_out: JsonFlag = False) -> None:
        """Draft the month's batch (or show the one already drafted)."""
        actor, _, _ = _options(ctx)
        ledger = get_ledger(ctx)
        before = run.live_batch(ledger, run.check_period(period))
        with _progress("pensioners") as advance:
            batch = run.run_month(ledger, period, actor=actor, file_format=file_format,
                                  execution_date=_date(execution_date, "execution_date"),
                                  progress=advance)
        payload = batch_payload(batch)
        payload["drafted_now"] = before is None
        _print(ctx, json_out, payload, f"payout batch {batch.period}/{batch.sequence}")

    @payout.command("approve")
    @guarded
    def approve_cmd(ctx: typer.Context, batch: BatchArg,
                    manifest_hash: Annotated[str, typer.Option(
                        "--manifest-hash", help="The manifest SHA-256 you checked.")],
                    json_out: JsonFlag = False) -> None:
        """Approve the batch's exact files (a second person: never the drafter)."""
        actor, _, _ = _options(ctx)
        ledger = get_ledger(ctx)
        b, approved_now = run.approve(ledger, run.find_batch(ledger, batch),
                                      manifest_hash.strip().lower(), actor)
        _print(ctx, json_out, {"batch_id": str(b.id), "batch": f"{b.period}/{b.sequence}",
                               "state": b.state, "approved_by": b.approved_by,
                               "manifest_sha256": b.manifest_sha256,
                               "approved_now": approved_now}, "batch approved")

    @payout.command("fund")
    @guarded
    def fund_cmd(ctx: typer.Context, batch: BatchArg,
                 on: Annotated[str | None, typer.Option(
                     "--date", help="Value date YYYY-MM-DD (default today).")] = None,
                 json_out: JsonFlag = False) -> None:
        """Move the money fiscal -> expenditure, reserve it in flight, book every payment."""
        actor, _, _ = _options(ctx)
        ledger = get_ledger(ctx)
        batch_id = run.find_batch(ledger, batch)
        value_date = _date(on, "date") or datetime.now(BEIJING).date()
        with _progress("payments") as advance:
            result = run.fund(ledger, batch_id, value_date=value_date, actor=actor,
                              progress=advance)
        _print(ctx, json_out, {"batch_id": str(batch_id), **result,
                               "value_date": value_date.isoformat()}, "batch funded")
        _hint_maintain(ledger)

    @payout.command("export")
    @guarded
    def export_cmd(ctx: typer.Context, batch: BatchArg, file_format: FormatOpt,
                   out: Annotated[Path, typer.Option("--out", help="Directory to write to.")],
                   json_out: JsonFlag = False) -> None:
        """Write the approved files (atomic, 0600, SHA-256 manifest) of a funded batch."""
        actor, _, _ = _options(ctx)
        ledger = get_ledger(ctx)
        result = export_module.export_batch(ledger, run.find_batch(ledger, batch), out,
                                            file_format=file_format, actor=actor)
        _print(ctx, json_out, result.as_dict(), "files exported")

    @payout.command("import-returns")
    @guarded
    def import_cmd(ctx: typer.Context,
                   file: Annotated[Path, typer.Argument(help="A pain.002, camt.054, "
                                                             "camt.053, pacs.004 or 回盘.")],
                   json_out: JsonFlag = False) -> None:
        """Book what the bank sent back; the same file twice books nothing."""
        actor, _, _ = _options(ctx)
        summary = returns_import.import_returns(get_ledger(ctx), file, actor=actor)
        _print(ctx, json_out, summary, f"bank answer {summary['message']}")

    @payout.command("reconcile")
    @guarded
    def reconcile_cmd(ctx: typer.Context,
                      files: Annotated[list[Path], typer.Argument(
                          help="camt.053 statements of the fund's accounts.")],
                      json_out: JsonFlag = False) -> None:
        """The bank's closing balance of each of the fund's accounts (income, fiscal special,
        expenditure), statement by statement, beside the ledger's on that date. Exit 3 if
        any differs."""
        from payout_engine.reconcile import FUND_ACCOUNTS, fund_statements, reconcile

        config = load_config()
        report = reconcile(get_ledger(ctx), fund_statements(files, config, FUND_ACCOUNTS),
                           config)
        _, as_json, _ = _options(ctx)
        if json_out or as_json:
            sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            render_statements(report)
        if not report["agree"]:
            raise typer.Exit(EXIT_DIFFERS)

    @payout.command("show")
    @guarded
    def show_cmd(ctx: typer.Context, batch: BatchArg, json_out: JsonFlag = False) -> None:
        """A batch: state, totals, files, manifest hash, comparison, outcomes."""
        ledger = get_ledger(ctx)
        from ledger import disbursement

        b = disbursement.get_batch(ledger, run.find_batch(ledger, batch))
        _print(ctx, json_out, batch_payload(b), f"payout batch {b.period}/{b.sequence}")

    @payout.command("list")
    @guarded
    def list_cmd(ctx: typer.Context,
                 first: Annotated[str | None, typer.Option(
                     "--from", help="First month YYYY-MM (default: 11 months before --to).")
                 ] = None,
                 last: Annotated[str | None, typer.Option(
                     "--to", help="Last month YYYY-MM (default: this month).")] = None,
                 state: Annotated[str | None, typer.Option(
                     "--state", help="Only batches in this state (drafted, approved, funded, "
                     "exported, answered, closed, cancelled).")] = None,
                 json_out: JsonFlag = False) -> None:
        """The batches of a range of months: state, payments, total, manifest hash."""
        ledger = get_ledger(ctx)
        last = run.check_month(last or datetime.now(BEIJING).strftime("%Y-%m"), "to")
        if first is None:
            first = last
            for _ in range(11):
                first = run.month_before(first)
        if state is not None and state not in run.BATCH_STATES:
            raise InvalidInput("state", f"must be one of {', '.join(run.BATCH_STATES)}")
        found = [b for b in run.batches_between(ledger, first, last)
                 if state is None or b.state == state]
        rows: list[dict[str, Any]] = [
            {"batch": f"{b.period}/{b.sequence}", "batch_id": str(b.id), "state": b.state,
             "format": b.file_format, "payments": b.line_count, "total_fen": b.total_fen,
             "manifest_sha256": b.manifest_sha256} for b in found]
        _, as_json, _ = _options(ctx)
        if json_out or as_json:
            sys.stdout.write(orjson.dumps({"from": first, "to": last, "batches": rows},
                                          option=orjson.OPT_INDENT_2).decode() + "\n")
            return
        t = Table(title=escape(f"payout batches {first} to {last}"), title_justify="left")
        for col in ("batch", "state", "format", "payments", "total (yuan)", "manifest"):
            t.add_column(col, justify="right" if col in ("payments", "total (yuan)")
                         else "left")
        for r in rows:
            t.add_row(escape(r["batch"]), r["state"], r["format"], f"{r['payments']:,}",
                      format_yuan(r["total_fen"]), r["manifest_sha256"][:16])
        Console(highlight=False, soft_wrap=False).print(t)
        if not rows:
            Console(highlight=False).print("no batches")

    @payout.command("close")
    @guarded
    def close_cmd(ctx: typer.Context, batch: BatchArg, json_out: JsonFlag = False) -> None:
        """Close a batch whose every payment the bank has answered."""
        actor, _, _ = _options(ctx)
        ledger = get_ledger(ctx)
        from ledger import disbursement

        b = disbursement.close(ledger, run.find_batch(ledger, batch), actor)
        _print(ctx, json_out, {"batch_id": str(b.id), "batch": f"{b.period}/{b.sequence}",
                               "state": b.state}, "batch closed")

    @payout.command("cancel")
    @guarded
    def cancel_cmd(ctx: typer.Context, batch: BatchArg,
                   reason: Annotated[str, typer.Option("--reason", help="Why it is set aside.")],
                   json_out: JsonFlag = False) -> None:
        """Set aside a drafted or approved batch; the next run drafts the month again."""
        actor, _, _ = _options(ctx)
        ledger = get_ledger(ctx)
        b = run.cancel(ledger, run.find_batch(ledger, batch), reason, actor)
        _print(ctx, json_out, {"batch_id": str(b.id), "batch": f"{b.period}/{b.sequence}",
                               "state": b.state}, "batch cancelled")


def render_statements(report: dict[str, Any]) -> None:
    """payout/audit reconcile's statements as a table."""
    t = Table(title="the fund's accounts: bank vs ledger, yuan", title_justify="left")
    for col in ("statement", "account", "closing date", "bank", "ledger", "difference", ""):
        t.add_column(col, justify="right" if col in ("bank", "ledger", "difference")
                     else "left")
    for r in report["statements"]:
        parts = " + ".join(r["ledger_accounts_fen"])
        t.add_row(escape(r["statement"]), f"{r['fund_account']} ({parts})", r["closing_date"],
                  format_yuan(r["bank_closing_fen"]), format_yuan(r["ledger_fen"]),
                  format_yuan(r["difference_fen"]), "agrees" if r["agrees"] else "DIFFERS")
    Console(highlight=False, soft_wrap=False).print(t)
    if not report["statements"]:
        Console(highlight=False).print("no statement of the fund's accounts in these files")
    if report["balances_fed_by"] == "kafka":
        Console(highlight=False).print("the ledger's side is the balances view as far as the "
                                       "Kafka consumers have applied the log")


def register_audit(audit: typer.Typer, get_ledger: GetLedger) -> None:
    """Add `reconcile` to the audit group `audit`."""

    @audit.command("reconcile")
    @guarded
    def audit_reconcile_cmd(ctx: typer.Context,
                            files: Annotated[list[Path] | None, typer.Argument(
                                help="camt.053 statements of the fund's accounts.")] = None,
                            json_out: JsonFlag = False) -> None:
        """The fund's accounts against each other and against the bank: the guarded
        balances the commands keep beside the balances view, the trial balance, and each
        statement of the income, fiscal special and expenditure accounts beside the ledger
        on its closing date. Exit 3 if anything differs."""
        from payout_engine.reconcile import (
            FUND_ACCOUNTS,
            fund_statements,
            internal_checks,
            reconcile,
        )

        ledger = get_ledger(ctx)
        config = load_config()
        statements = fund_statements(files or [], config, FUND_ACCOUNTS)
        internal = internal_checks(ledger)
        report = {"internal": internal, **reconcile(ledger, statements, config)}
        report["agree"] = internal["agree"] and report["agree"]
        _, as_json, _ = _options(ctx)
        if json_out or as_json:
            sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            t = Table(title=f"the fund's accounts in the ledger at position "
                            f"{internal['position']}: guarded balances vs the balances view, "
                            "yuan", title_justify="left")
            for col in ("account", "guarded", "view", "difference"):
                t.add_column(col, justify="left" if col == "account" else "right")
            for r in internal["accounts"]:
                t.add_row(f"{r['account']} {escape(r['name'])}", format_yuan(r["guarded_fen"]),
                          format_yuan(r["view_fen"]), format_yuan(r["difference_fen"]))
            console = Console(highlight=False, soft_wrap=False)
            console.print(t)
            console.print(f"trial balance nets to {format_yuan(internal['trial_balance_net_fen'])}"
                          + (f"; the view is {internal['view_behind_by']} events behind the log"
                             if internal["view_behind_by"] else ""))
            if statements:
                render_statements(report)
            console.print("agrees" if report["agree"] else "DIFFERS")
        if not report["agree"]:
            raise typer.Exit(EXIT_DIFFERS)
