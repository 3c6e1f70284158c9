"""`pension-ledger`: the command line.

Thin on purpose: parse and check the input at the edge (yuan strings into integer fen,
ISO dates, months), call one Ledger method, print the result (a table, or JSON with --json).
Personal data is masked in every output unless an auditor or admin asks for --unmask.

Exit status: 0 done; 2 bad input or refused by the rules (nothing stored); 1 unexpected
failure; 3 the audit found the hash chain broken.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec

import orjson
import typer
from pydantic import BaseModel, ConfigDict, ValidationError
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from typer.core import TyperGroup

from ledger import resident_id
from ledger.aggregates.fund import parse_rate_percent
from ledger.errors import (
    ConcurrencyConflict,
    IdempotencyConflict,
    ImportRejected,
    InvalidInput,
    LedgerError,
    NotFound,
    Refused,
)
from ledger.money import format_yuan, parse_yuan
from ledger.postings import ACCOUNT_NAMES, GUARDED_ACCOUNTS
from ledger.projections.commands import register as register_projections
from ledger.rules import Parameters

if TYPE_CHECKING:
    from ledger.application import Ledger

P = ParamSpec("P")
EXIT_REFUSED = 2
EXIT_UNEXPECTED = 1
EXIT_CHAIN_BROKEN = 3
MAX_RULES_FILE_BYTES = 1024 * 1024
DEMO_DEFAULT_DB = "./var/demo.db"


class Role(StrEnum):
    operator = "operator"
    approver = "approver"
    finance = "finance"
    auditor = "auditor"
    admin = "admin"


UNMASK_ROLES = (Role.auditor, Role.admin)


@dataclass
class Settings:
    """What the global options decided, and the one Ledger built from them."""

    db: str | None
    json: bool
    actor: str
    key: str | None
    role: Role
    unmask: bool
    _ledger: Ledger | None = None

    @property
    def url(self) -> str:
        from ledger.store import resolve_url

        return resolve_url(self.db)

    def ledger(self) -> Ledger:
        """The composition root: the store from --db / LEDGER_DATABASE_URL, encryption at
        rest from CIPHER_KEY. Built once, on first use, so --help never opens a database."""
        if self._ledger is None:
            from ledger.application import Ledger

            self._ledger = Ledger(self.url, cipher_key=os.environ.get("CIPHER_KEY"))
        return self._ledger

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None


# ---- output -----------------------------------------------------------------------------

def out_console() -> Console:
    # Made per use so that a replaced sys.stdout (tests, pipes) is honoured.
    return Console(highlight=False, soft_wrap=False)


def err_console() -> Console:
    return Console(stderr=True, highlight=False)


_ID_TOKEN = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")


def mask_account(number: str) -> str:
    """Bank account numbers: only the last 4 digits are shown."""
    return "*" * max(0, len(number) - 4) + number[-4:]


def mask_text(text: str) -> str:
    """Mask every valid resident ID inside free text (error lines, notes)."""
    def one(m: re.Match[str]) -> str:
        token = m.group(0).upper()
        return resident_id.mask(token) if resident_id.check_digit(token[:17]) == token[17] \
            else m.group(0)
    return _ID_TOKEN.sub(one, text)


def redact(obj: Any, unmask: bool = False) -> Any:
    """The output form of a result: resident IDs first 6 + last 4, bank accounts last 4."""
    if unmask:
        return obj
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if k == "account_number" and isinstance(v, str):
                out[k] = mask_account(v)
            elif k == "id_number" and isinstance(v, str) and "*" not in v:
                out[k] = resident_id.mask(v) if len(v) == 18 else mask_text(v)
            else:
                out[k] = redact(v)
        return out
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return mask_text(obj)
    return obj


def safe_url(url: str) -> str:
    """A database URL fit to print: any password replaced."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def dump_json(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2, default=str).decode()


def _is_fen(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def flatten(obj: dict[str, Any], prefix: str = "", money: bool = False
            ) -> list[tuple[str, str]]:
    """Rows of (field, value) for a result; *_fen values shown as yuan."""
    rows: list[tuple[str, str]] = []
    for k, v in obj.items():
        is_money = money or k.endswith("_fen")
        label = prefix + (k.removesuffix("_fen") if k.endswith("_fen") else k)
        if isinstance(v, dict):
            rows += flatten(v, label + ".", is_money)
        elif is_money and _is_fen(v):
            rows.append((label + " (yuan)", format_yuan(v)))
        elif isinstance(v, list | tuple):
            rows.append((label, ", ".join(str(x) for x in v)))
        elif v is None:
            rows.append((label, "-"))
        else:
            rows.append((label, str(v)))
    return rows


def print_result(settings: Settings, result: dict[str, Any], title: str) -> None:
    shown = redact(result, settings.unmask)
    if settings.json:
        sys.stdout.write(dump_json(shown) + "\n")
        return
    table = Table(title=escape(title), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for k, v in flatten(shown):
        table.add_row(escape(k), escape(v))
    out_console().print(table)


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr (stdout stays clean for --json), advanced by n."""
    console = err_console()
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=console, transient=False,
                   disable=not console.is_terminal)
    with bar:
        task = bar.add_task(description, total=total)

        def advance(n: int) -> None:
            bar.advance(task, n)
        yield advance


# ---- errors -----------------------------------------------------------------------------

def _kind(e: BaseException) -> str:
    if isinstance(e, ImportRejected):
        return "import rejected"
    if isinstance(e, InvalidInput | ValidationError):
        return "invalid input"
    if isinstance(e, NotFound):
        return "not found"
    if isinstance(e, Refused):
        return "refused"
    if isinstance(e, IdempotencyConflict | ConcurrencyConflict):
        return "conflict"
    return "error"


def error_text(e: BaseException) -> str:
    """One message naming the field and the rule (ImportRejected: every bad line)."""
    if isinstance(e, ValidationError):
        lines = [f"{'.'.join(str(p) for p in err['loc']) or 'input'}: {err['msg']}"
                 for err in e.errors()]
        body = lines[0] if len(lines) == 1 else "\n  " + "\n  ".join(lines)
    else:
        body = str(e)
    return mask_text(f"{_kind(e)}: {body}")


def report(e: BaseException) -> None:
    err_console().print(f"[bold red]pension-ledger:[/] {escape(error_text(e))}", soft_wrap=True)


def _undecodable(e: BaseException) -> bool:
    # Encrypted events read without the key fail in the JSON decoder; with the wrong key,
    # in the cipher's MAC check.
    return isinstance(e, orjson.JSONDecodeError) or "MAC check failed" in str(e)


def guarded(fn: Callable[P, None]) -> Callable[P, None]:
    """Ledger errors and validation errors exit 2 with one message; anything else exits 1."""
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit, KeyboardInterrupt):
            raise
        except (LedgerError, ValidationError) as e:
            report(e)
            raise typer.Exit(EXIT_REFUSED) from None
        except Exception as e:
            if os.environ.get("LEDGER_DEBUG"):
                traceback.print_exc()
            hint = ("\nThe stored events cannot be decoded: is CIPHER_KEY the key this "
                    "database was written with?" if _undecodable(e) else "")
            err_console().print(f"[bold red]pension-ledger: unexpected error:[/] "
                                f"{escape(mask_text(f'{type(e).__name__}: {e}'))}{hint}"
                                "\n(set LEDGER_DEBUG=1 to see the traceback)", soft_wrap=True)
            raise typer.Exit(EXIT_UNEXPECTED) from None
    return wrapper


# ---- parsing at the edge ----------------------------------------------------------------

def parse_date(text: str, field: str) -> date:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
        raise InvalidInput(field, f"{text!r} is not a date in the form YYYY-MM-DD")
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(field, f"{text!r} is not a real date") from None


CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "UTC+08:00")


def parse_moment(text: str, field: str) -> datetime:
    """An ISO 8601 date and time; without an offset it is China Standard Time (UTC+8)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(field, f"{text!r} is not a date and time such as "
                                  "2026-03-31T18:00 or 2026-03-31T18:00+08:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=CHINA_STANDARD_TIME)


def parse_month_text(text: str, field: str) -> str:
    from ledger.aggregates.participant import parse_month

    y, m = parse_month(text.strip(), field)
    return f"{y:04d}-{m:02d}"


def parse_year(value: int, field: str = "year") -> int:
    if not 1900 <= value <= 2200:
        raise InvalidInput(field, f"{value} is not a year between 1900 and 2200")
    return value


def bank_account(account_name: str | None, account_number: str | None,
                 bank_code: str | None, required: bool) -> Any:
    from ledger.aggregates.participant import checked_bank_account

    given = [v for v in (account_name, account_number, bank_code) if v]
    if not given and not required:
        return None
    if len(given) != 3:
        raise InvalidInput("account", "--account-name, --account-number and --bank-code are "
                           "given together" + ("" if required else " or not at all"))
    assert account_name and account_number and bank_code
    return checked_bank_account(account_name, account_number, bank_code)


class RulesFile(BaseModel):
    """The file `rules publish` reads."""

    model_config = ConfigDict(extra="forbid")
    effective_from: date
    parameters: Parameters
    note: str = ""


# ---- the app ----------------------------------------------------------------------------

GLOBAL_VALUE_OPTIONS = ("--db", "--actor", "--key", "--role")
GLOBAL_FLAGS = ("--unmask",)  # --json is an option of every command as well


def hoist_global_options(args: list[str]) -> list[str]:
    """Move the global options to the front, so `pension-ledger demo --db x.db` means the
    same as `pension-ledger --db x.db demo`."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_VALUE_OPTIONS:
            take = 1 if "=" in arg else 2
            front.extend(args[i:i + take])
            i += take
            continue
        (front if arg in GLOBAL_FLAGS else rest).append(arg)
        i += 1
    return front + rest


class GlobalOptionsAnywhere(TyperGroup):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args))


app = typer.Typer(name="pension-ledger", cls=GlobalOptionsAnywhere, no_args_is_help=True,
                  add_completion=False,
                  pretty_exceptions_enable=False,
                  help="Fund ledger of a county residents' basic pension "
                       "(城乡居民基本养老保险).")
rules_app = typer.Typer(no_args_is_help=True, help="The county's effective-dated rules.")
pensioner_app = typer.Typer(no_args_is_help=True,
                            help="Pensions: apply, approve, suspend, resume, death, settlement.")
import_app = typer.Typer(no_args_is_help=True, help="Bulk CSV imports, all-or-nothing per file.")
audit_app = typer.Typer(no_args_is_help=True, help="Auditors' checks.")
deposit_app = typer.Typer(no_args_is_help=True,
                          help="The fiscal special account's fixed deposits (定期存款).")
app.add_typer(rules_app, name="rules")
app.add_typer(pensioner_app, name="pensioner")
app.add_typer(import_app, name="import")
app.add_typer(audit_app, name="audit")
app.add_typer(deposit_app, name="deposit")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (amounts in integer fen).")]
IdOpt = Annotated[str, typer.Option("--id", help="18-digit resident ID.")]
DateOpt = Annotated[str, typer.Option("--date", help="Value date, YYYY-MM-DD.")]
AmountOpt = Annotated[str, typer.Option("--amount", help="Yuan, e.g. 500.00 (never a float).")]
RefOpt = Annotated[str, typer.Option("--reference", help="Bank reference; books once.")]


# The settings of the command line being run (one per process), for current_ledger().
_RUNNING: list[Settings] = []


def settings_of(ctx: typer.Context, json_out: bool = False) -> Settings:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings), "the root callback sets the settings"
    if json_out:
        settings.json = True
    return settings


@app.callback()
def main_options(
    ctx: typer.Context,
    db: Annotated[str | None, typer.Option(
        "--db", help="SQLite path or postgresql:// URL (env LEDGER_DATABASE_URL; "
                     "default ./var/ledger.db).")] = None,
    json_out: JsonFlag = False,
    actor: Annotated[str, typer.Option("--actor", envvar="LEDGER_ACTOR",
                                       help="Who is acting (recorded on every event).")
                     ] = "operator",
    key: Annotated[str | None, typer.Option(
        "--key", help="Idempotency key: a retry with the same key books nothing twice.")
    ] = None,
    role: Annotated[Role, typer.Option("--role", help="Your role.")] = Role.operator,
    unmask: Annotated[bool, typer.Option(
        "--unmask", help="Show full ID and account numbers (auditor or admin only).")] = False,
) -> None:
    if unmask and role not in UNMASK_ROLES:
        report(InvalidInput("unmask", "needs --role auditor or admin"))
        raise typer.Exit(EXIT_REFUSED)
    if not actor.strip() or len(actor) > 100:
        report(InvalidInput("actor", "must be 1 to 100 characters"))
        raise typer.Exit(EXIT_REFUSED)
    settings = Settings(db=db, json=json_out, actor=actor.strip(), key=key, role=role,
                        unmask=unmask)
    ctx.obj = settings
    _RUNNING[:] = [settings]
    ctx.call_on_close(settings.close)


# ---- set-up and rules -------------------------------------------------------------------

@app.command()
def keygen() -> None:
    """Print a new key for CIPHER_KEY (AES-256). Keep it outside the database: without it an
    encrypted store cannot be read."""
    from eventsourcing.cipher import AESCipher

    typer.echo(AESCipher.create_key(num_bytes=32))


@app.command()
@guarded
def init(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Open the fund and the sample county's rule set (idempotent)."""
    st = settings_of(ctx, json_out)
    print_result(st, {**st.ledger().init(actor=st.actor), "db": safe_url(st.url)},
                 "ledger ready")


@app.command()
@guarded
def maintain(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Put the registers funding rewrites every month back in participant-id order on disk
    where they have drifted from it, else vacuum them (PostgreSQL; nothing on SQLite). Run
    it after a first load and once a year, out of hours: it locks each register while it
    rewrites it."""
    st = settings_of(ctx, json_out)
    done = st.ledger().keep_registers_in_order()
    if st.json:
        sys.stdout.write(dump_json({"registers": done}) + "\n")
        return
    if not done:
        out_console().print("nothing to do: the registers of a SQLite store are in key order")
        return
    table = Table(title="Registers", title_justify="left")
    for column in ("register", "order before", "done", "order after", "seconds"):
        table.add_column(column)
    for u in done:
        table.add_row(u["table"], _order(u["order_before"]),
                      "put in id order" if u["clustered"] else "vacuumed",
                      _order(u["order_after"]), f"{u['seconds']:.1f}")
    out_console().print(table)


def _order(order: float | None) -> str:
    return "-" if order is None else f"{order:.2f}"


def rules_payload(ledger: Ledger, on: date) -> dict[str, Any]:
    version = ledger.rules_on(on, "on")
    return {"on": on.isoformat(), "in_force": version.label,
            "rule": version.model_dump(mode="json"),
            "versions": [{"label": v.label, "note": v.note}
                         for v in ledger.ruleset().versions]}


@rules_app.command("show")
@guarded
def rules_show(ctx: typer.Context,
               on: Annotated[str | None, typer.Option("--on", help="YYYY-MM-DD; default today.")
                             ] = None,
               json_out: JsonFlag = False) -> None:
    """The rule version in force on a date, and every version published."""
    st = settings_of(ctx, json_out)
    day = parse_date(on, "on") if on else date.today()
    payload = rules_payload(st.ledger(), day)
    if st.json:
        sys.stdout.write(dump_json(payload) + "\n")
        return
    render_rules(out_console(), payload)


def render_rules(console: Console, payload: dict[str, Any]) -> None:
    rule = payload["rule"]
    params = rule["parameters"]
    console.print(f"[bold]Rule {escape(payload['in_force'])}[/] in force on {payload['on']}: "
                  f"{escape(rule['note'])}")
    console.print("Contribution tiers (yuan): "
                  + ", ".join(format_yuan(t) for t in params["contribution_tiers_fen"]))
    table = Table(title="Contribution subsidy (缴费补贴) by level, yuan", title_justify="left")
    for col in ("from tier", "province", "city", "county", "total"):
        table.add_column(col, justify="right")
    for s in params["subsidy_schedule"]:
        table.add_row(format_yuan(s["min_tier_fen"]), format_yuan(s["province_fen"]),
                      format_yuan(s["city_fen"]), format_yuan(s["county_fen"]),
                      format_yuan(s["province_fen"] + s["city_fen"] + s["county_fen"]))
    console.print(table)
    console.print("Paid on behalf (代缴), % of the lowest tier: " + ", ".join(
        f"{g} {p}%" for g, p in params["on_behalf_percent"].items()))
    bp = params["basic_pension"]
    console.print("Basic pension a month (yuan): " + ", ".join(
        f"{lvl} {format_yuan(bp[f'{lvl}_fen'])}" for lvl in ("central", "province", "city",
                                                               "county"))
        + f"; per year beyond the minimum {format_yuan(bp['long_contribution_per_year_fen'])}")
    console.print("Interest rates: " + ", ".join(
        f"{y} {r}" for y, r in sorted(params["interest_rates"].items())[-5:]) + " ...")
    console.print(f"Divisor {params['account_divisor']}, rounding {params['rounding']}, "
                  f"pension age {params['pension_age']}, minimum years "
                  f"{params['min_contribution_years']}, inherit subsidy "
                  f"{params['inherit_subsidy']}")
    versions = Table(title="Versions published", title_justify="left")
    versions.add_column("version")
    versions.add_column("note")
    for v in payload["versions"]:
        versions.add_row(escape(v["label"]), escape(v["note"]))
    console.print(versions)


@rules_app.command("publish")
@guarded
def rules_publish(ctx: typer.Context,
                  file: Annotated[Path, typer.Argument(
                      help="JSON: {effective_from, parameters, note}.")],
                  json_out: JsonFlag = False) -> None:
    """Publish a new rule version from a JSON file."""
    st = settings_of(ctx, json_out)
    try:
        if file.stat().st_size > MAX_RULES_FILE_BYTES:
            raise InvalidInput("file", f"larger than {MAX_RULES_FILE_BYTES} bytes")
        text = file.read_bytes()
    except OSError as e:
        raise InvalidInput("file", f"cannot read {file}: {e.strerror or e}") from None
    rules = RulesFile.model_validate_json(text)
    result = st.ledger().publish_rules(rules.effective_from, rules.parameters, rules.note,
                                       actor=st.actor, idempotency_key=st.key)
    print_result(st, result, "rule version published")


# ---- participants -----------------------------------------------------------------------

@app.command()
@guarded
def enrol(ctx: typer.Context, id_number: IdOpt,
          name: Annotated[str, typer.Option("--name")],
          township: Annotated[str, typer.Option("--township")],
          village: Annotated[str, typer.Option("--village")],
          enrol_date: Annotated[str, typer.Option("--date", help="Enrolment date.")],
          group: Annotated[str, typer.Option(
              "--group", help="ordinary, severely_disabled, destitute, minimum_living, "
                              "registered_poor.")] = "ordinary",
          account_name: Annotated[str | None, typer.Option("--account-name")] = None,
          account_number: Annotated[str | None, typer.Option("--account-number")] = None,
          bank_code: Annotated[str | None, typer.Option("--bank-code")] = None,
          json_out: JsonFlag = False) -> None:
    """Enrol a resident (参保登记)."""
    st = settings_of(ctx, json_out)
    result = st.ledger().enrol(
        id_number=id_number, name=name, township=township, village=village,
        identity_group=group, enrol_date=parse_date(enrol_date, "date"),
        bank=bank_account(account_name, account_number, bank_code, required=False),
        actor=st.actor, idempotency_key=st.key)
    print_result(st, result, "enrolled")


@app.command()
@guarded
def contribute(ctx: typer.Context, id_number: IdOpt,
               year: Annotated[int, typer.Option("--year")],
               tier: Annotated[str, typer.Option("--tier", help="Tier in yuan, e.g. 500.00.")],
               amount: Annotated[str, typer.Option(
                   "--amount", help="Paid by the participant, yuan (the tier less any part "
                                    "paid on behalf).")],
               receipt: Annotated[str, typer.Option("--receipt", help="Bank receipt number.")],
               value_date: DateOpt,
               channel: Annotated[str, typer.Option(
                   "--channel", help="bank, cash, township_station, online.")] = "bank",
               back_payment: Annotated[bool, typer.Option(
                   "--back-payment", help="A missed earlier year (补缴).")] = False,
               json_out: JsonFlag = False) -> None:
    """Book a yearly contribution (个人缴费)."""
    st = settings_of(ctx, json_out)
    result = st.ledger().contribute(
        id_number=id_number, year=parse_year(year), tier_fen=parse_yuan(tier, "tier"),
        amount_fen=parse_yuan(amount, "amount", allow_zero=True), channel=channel,
        receipt_no=receipt, value_date=parse_date(value_date, "date"),
        back_payment=back_payment, actor=st.actor, idempotency_key=st.key)
    print_result(st, result, "contribution booked")


@app.command("reverse-contribution")
@guarded
def reverse_contribution(ctx: typer.Context, id_number: IdOpt,
                         year: Annotated[int, typer.Option("--year")],
                         reason: Annotated[str, typer.Option(
                             "--reason", help="Why it was booked in error.")],
                         value_date: DateOpt,
                         json_out: JsonFlag = False) -> None:
    """Reverse a contribution booked in error (冲正): refunded from the income account."""
    st = settings_of(ctx, json_out)
    result = st.ledger().reverse_contribution(
        id_number=id_number, year=parse_year(year), reason=reason,
        value_date=parse_date(value_date, "date"), actor=st.actor, idempotency_key=st.key)
    print_result(st, result, "contribution reversed")


@app.command("reverse-subsidy")
@guarded
def reverse_subsidy(ctx: typer.Context, id_number: IdOpt,
                    year: Annotated[int, typer.Option("--year")],
                    reason: Annotated[str, typer.Option(
                        "--reason", help="Why it was credited in error.")],
                    value_date: DateOpt,
                    json_out: JsonFlag = False) -> None:
    """Reverse a year's subsidy credited in error (every level)."""
    st = settings_of(ctx, json_out)
    result = st.ledger().reverse_subsidy(
        id_number=id_number, year=parse_year(year), reason=reason,
        value_date=parse_date(value_date, "date"), actor=st.actor, idempotency_key=st.key)
    print_result(st, result, "subsidy reversed")


@app.command()
@guarded
def subsidise(ctx: typer.Context,
              year: Annotated[int, typer.Option("--year")],
              value_date: DateOpt,
              id_number: Annotated[str | None, typer.Option("--id", help="One participant.")
                                   ] = None,
              everyone: Annotated[bool, typer.Option(
                  "--all", help="Everyone who contributed in the year.")] = False,
              json_out: JsonFlag = False) -> None:
    """Credit the government contribution subsidy (缴费补贴) for a year."""
    st = settings_of(ctx, json_out)
    if (id_number is None) == (not everyone):
        raise InvalidInput("id", "give exactly one of --id ID or --all")
    day = parse_date(value_date, "date")
    ledger = st.ledger()
    if id_number is not None:
        result = ledger.subsidise(id_number=id_number, year=parse_year(year), value_date=day,
                                  actor=st.actor, idempotency_key=st.key)
    else:
        total = len(ledger.queries.participants_contributed(parse_year(year)))
        with progress_bar(f"subsidy {year}", total) as advance:
            result = dict(ledger.subsidise_year(year=year, value_date=day, actor=st.actor,
                                                progress=advance))
    print_result(st, result, f"subsidy for {year}")


@app.command()
@guarded
def collective(ctx: typer.Context, id_number: IdOpt,
               year: Annotated[int, typer.Option("--year")],
               amount: AmountOpt,
               payer: Annotated[str, typer.Option("--payer", help="Village committee, donor.")],
               receipt: Annotated[str, typer.Option("--receipt")],
               value_date: DateOpt,
               json_out: JsonFlag = False) -> None:
    """Credit a collective subsidy (集体补助) or donation to an individual account."""
    st = settings_of(ctx, json_out)
    result = st.ledger().credit_collective(
        id_number=id_number, year=parse_year(year), amount_fen=parse_yuan(amount, "amount"),
        payer=payer, receipt_no=receipt, value_date=parse_date(value_date, "date"),
        actor=st.actor, idempotency_key=st.key)
    print_result(st, result, "collective subsidy booked")


@app.command("credit-interest")
@guarded
def credit_interest(ctx: typer.Context,
                    year: Annotated[int, typer.Option("--year")],
                    today: Annotated[str | None, typer.Option(
                        "--today", help="The run date (after 31 December of the year); "
                                        "default today.")] = None,
                    json_out: JsonFlag = False) -> None:
    """Credit the year's interest (记账利息) to every individual account."""
    st = settings_of(ctx, json_out)
    run_date = parse_date(today, "today") if today else date.today()
    ledger = st.ledger()
    total = len(ledger.queries.all_participant_ids())
    with progress_bar(f"interest {year}", total) as advance:
        result = dict(ledger.credit_interest(year=parse_year(year), today=run_date,
                                             actor=st.actor, progress=advance))
    print_result(st, result, f"interest for {year}")


@app.command("reverse-interest")
@guarded
def reverse_interest(ctx: typer.Context,
                     year: Annotated[int, typer.Option("--year")],
                     reason: Annotated[str, typer.Option(
                         "--reason", help="Why it was credited in error.")],
                     id_number: Annotated[str | None, typer.Option(
                         "--id", help="One participant.")] = None,
                     everyone: Annotated[bool, typer.Option(
                         "--all", help="Everyone credited for the year.")] = False,
                     json_out: JsonFlag = False) -> None:
    """Reverse a year's interest credited in error (a wrong rate), to credit it again."""
    st = settings_of(ctx, json_out)
    if (id_number is None) == (not everyone):
        raise InvalidInput("id", "give exactly one of --id ID or --all")
    ledger = st.ledger()
    if id_number is not None:
        result = ledger.reverse_interest(id_number=id_number, year=parse_year(year),
                                         reason=reason, actor=st.actor,
                                         idempotency_key=st.key)
    else:
        total = len(ledger.queries.all_participant_ids())
        with progress_bar(f"reversing interest {year}", total) as advance:
            result = ledger.reverse_interest_year(year=parse_year(year), reason=reason,
                                                  actor=st.actor, progress=advance)
    print_result(st, result, f"interest for {year} reversed")


@app.command()
@guarded
def group(ctx: typer.Context, id_number: IdOpt,
          identity_group: Annotated[str, typer.Option("--group")],
          effective_from: Annotated[str, typer.Option("--from", help="YYYY-MM-DD.")],
          json_out: JsonFlag = False) -> None:
    """Change a participant's identity group from a date."""
    st = settings_of(ctx, json_out)
    result = st.ledger().change_identity_group(
        id_number=id_number, group=identity_group,
        effective_from=parse_date(effective_from, "from"), actor=st.actor,
        idempotency_key=st.key)
    print_result(st, result, "identity group changed")


@app.command("bank-details")
@guarded
def bank_details(ctx: typer.Context, id_number: IdOpt,
                 account_name: Annotated[str, typer.Option("--account-name")],
                 account_number: Annotated[str, typer.Option("--account-number")],
                 bank_code: Annotated[str, typer.Option("--bank-code")],
                 json_out: JsonFlag = False) -> None:
    """Change a participant's bank account (for pension payments)."""
    st = settings_of(ctx, json_out)
    result = st.ledger().change_bank_details(
        id_number=id_number,
        bank=bank_account(account_name, account_number, bank_code, required=True),
        actor=st.actor, idempotency_key=st.key)
    print_result(st, result, "bank details changed")


# ---- the fund's bank accounts -----------------------------------------------------------

@app.command()
@guarded
def treasury(ctx: typer.Context, amount: AmountOpt,
             level: Annotated[str, typer.Option("--level",
                                                help="central, province, city, county.")],
             purpose: Annotated[str, typer.Option(
                 "--purpose", help="basic_pension, contribution_subsidy, on_behalf.")],
             value_date: DateOpt, reference: RefOpt,
             json_out: JsonFlag = False) -> None:
    """Book government money received from the treasury into the fiscal special account."""
    st = settings_of(ctx, json_out)
    result = st.ledger().receive_treasury_funds(
        amount_fen=parse_yuan(amount, "amount"), level=level, purpose=purpose,
        value_date=parse_date(value_date, "date"), reference=reference, actor=st.actor,
        idempotency_key=st.key)
    print_result(st, result, "treasury funds received")


def _transfer(ctx: typer.Context, json_out: bool, source: str, target: str, amount: str,
              value_date: str, reference: str, title: str) -> None:
    st = settings_of(ctx, json_out)
    result = st.ledger().transfer(
        from_account=source, to_account=target, amount_fen=parse_yuan(amount, "amount"),
        value_date=parse_date(value_date, "date"), reference=reference, actor=st.actor,
        idempotency_key=st.key)
    print_result(st, result, title)


@app.command()
@guarded
def sweep(ctx: typer.Context, amount: AmountOpt, value_date: DateOpt, reference: RefOpt,
          json_out: JsonFlag = False) -> None:
    """Income account -> fiscal special account (归集)."""
    _transfer(ctx, json_out, "income", "fiscal", amount, value_date, reference, "swept")


@app.command()
@guarded
def appropriate(ctx: typer.Context, amount: AmountOpt, value_date: DateOpt,
                reference: RefOpt, json_out: JsonFlag = False) -> None:
    """Fiscal special account -> expenditure account, by the approved spending plan."""
    _transfer(ctx, json_out, "fiscal", "expenditure", amount, value_date, reference,
              "appropriated")


@app.command()
@guarded
def transfer(ctx: typer.Context,
             source: Annotated[str, typer.Option("--from", help="income, fiscal, expenditure.")],
             target: Annotated[str, typer.Option("--to", help="income, fiscal, expenditure.")],
             amount: AmountOpt, value_date: DateOpt, reference: RefOpt,
             json_out: JsonFlag = False) -> None:
    """Move money between the fund's accounts; the ledger refuses directions the law forbids."""
    _transfer(ctx, json_out, source, target, amount, value_date, reference, "transferred")


@app.command("bank-interest")
@guarded
def bank_interest(ctx: typer.Context,
                  account: Annotated[str, typer.Option("--account",
                                                       help="income, fiscal, expenditure.")],
                  amount: AmountOpt, value_date: DateOpt, reference: RefOpt,
                  json_out: JsonFlag = False) -> None:
    """Book interest the bank paid on one of the fund's accounts."""
    st = settings_of(ctx, json_out)
    result = st.ledger().earn_bank_interest(
        account=account, amount_fen=parse_yuan(amount, "amount"),
        value_date=parse_date(value_date, "date"), reference=reference, actor=st.actor,
        idempotency_key=st.key)
    print_result(st, result, "bank interest booked")


# ---- fixed deposits ----------------------------------------------------------------------

DepositNo = Annotated[str, typer.Argument(help="The bank's deposit certificate number (存单号).")]


@deposit_app.command("place")
@guarded
def deposit_place(ctx: typer.Context, deposit_no: DepositNo, amount: AmountOpt,
                  term_months: Annotated[int, typer.Option(
                      "--term-months", help="3, 6, 12, 24, 36 or 60.")],
                  rate_percent: Annotated[str, typer.Option(
                      "--rate-percent", help="Annual rate in percent, e.g. 1.75.")],
                  value_date: DateOpt, reference: RefOpt, json_out: JsonFlag = False) -> None:
    """Fiscal special account -> a fixed deposit at its bank."""
    st = settings_of(ctx, json_out)
    result = st.ledger().place_fixed_deposit(
        deposit_no=deposit_no, amount_fen=parse_yuan(amount, "amount"),
        term_months=term_months, annual_rate=parse_rate_percent(rate_percent),
        value_date=parse_date(value_date, "date"), reference=reference, actor=st.actor,
        idempotency_key=st.key)
    print_result(st, result, f"fixed deposit {deposit_no} placed")


@deposit_app.command("withdraw")
@guarded
def deposit_withdraw(ctx: typer.Context, deposit_no: DepositNo,
                     interest: Annotated[str, typer.Option(
                         "--interest", help="Yuan of interest the bank paid (its slip).")],
                     value_date: DateOpt, reference: RefOpt,
                     json_out: JsonFlag = False) -> None:
    """A fixed deposit, whole, and its interest back into the fiscal special account (at
    maturity, or early: 提前支取)."""
    st = settings_of(ctx, json_out)
    result = st.ledger().withdraw_fixed_deposit(
        deposit_no=deposit_no, interest_fen=parse_yuan(interest, "interest", allow_zero=True),
        value_date=parse_date(value_date, "date"), reference=reference, actor=st.actor,
        idempotency_key=st.key)
    print_result(st, result, f"fixed deposit {deposit_no} withdrawn")


@deposit_app.command("list")
@guarded
def deposit_list(ctx: typer.Context,
                 as_of: Annotated[str | None, typer.Option(
                     "--as-of", help="YYYY-MM-DD value date (default: now).")] = None,
                 json_out: JsonFlag = False) -> None:
    """The fixed deposits holding money, soonest maturity first, with their total."""
    st = settings_of(ctx, json_out)
    day = parse_date(as_of, "as_of") if as_of else None
    payload = st.ledger().fixed_deposits_held(day)
    rows = payload["deposits"]
    if st.json:
        sys.stdout.write(dump_json(payload) + "\n")
        return
    table = Table(title="Fixed deposits of the fiscal special account"
                        f"{' as of ' + payload['as_of'] if day else ''}, yuan",
                  title_justify="left")
    for column in ("deposit", "principal", "placed", "months", "rate %", "matures",
                   "interest at maturity"):
        table.add_column(column, justify="right" if column in (
            "principal", "interest at maturity") else "left")
    for r in rows:
        table.add_row(escape(r["deposit_no"]), format_yuan(r["principal_fen"]), r["placed_on"],
                      str(r["term_months"]), r["rate_percent"], r["maturity_date"],
                      format_yuan(r["interest_at_maturity_fen"]))
    table.add_row("[bold]total[/]", f"[bold]{format_yuan(payload['total_fen'])}[/]")
    out_console().print(table)


# ---- pensioners -------------------------------------------------------------------------

@pensioner_app.command("apply")
@guarded
def pensioner_apply(ctx: typer.Context, id_number: IdOpt,
                    start_month: Annotated[str, typer.Option("--start-month", help="YYYY-MM.")],
                    json_out: JsonFlag = False) -> None:
    """Record a pension application (a different person approves it)."""
    st = settings_of(ctx, json_out)
    result = st.ledger().apply_for_pension(
        id_number=id_number, start_month=parse_month_text(start_month, "start_month"),
        actor=st.actor, idempotency_key=st.key)
    print_result(st, result, "pension application recorded")


@pensioner_app.command("approve")
@guarded
def pensioner_approve(ctx: typer.Context, id_number: IdOpt, json_out: JsonFlag = False) -> None:
    """Approve a waiting pension application (never your own)."""
    st = settings_of(ctx, json_out)
    result = st.ledger().approve_pension(id_number=id_number, actor=st.actor,
                                         idempotency_key=st.key)
    print_result(st, result, "pension approved")


@pensioner_app.command("revoke")
@guarded
def pensioner_revoke(ctx: typer.Context, id_number: IdOpt,
                     reason: Annotated[str, typer.Option(
                         "--reason", help="Why the approval was wrong (1-200 characters).")],
                     json_out: JsonFlag = False) -> None:
    """Revoke a pension approved in error, before anything was paid on it; then apply and
    approve again."""
    st = settings_of(ctx, json_out)
    result = st.ledger().revoke_pension(id_number=id_number, reason=reason, actor=st.actor,
                                        idempotency_key=st.key)
    print_result(st, result, "pension approval revoked")


@pensioner_app.command("suspend")
@guarded
def pensioner_suspend(ctx: typer.Context, id_number: IdOpt,
                      reason: Annotated[str, typer.Option(
                          "--reason", help="no_proof_of_life, imprisoned, bank_return, "
                                           "death_check, other.")],
                      from_month: Annotated[str, typer.Option("--from-month", help="YYYY-MM.")],
                      json_out: JsonFlag = False) -> None:
    """Suspend a pension (暂停)."""
    st = settings_of(ctx, json_out)
    result = st.ledger().suspend(id_number=id_number, reason_code=reason,
                                 from_month=parse_month_text(from_month, "from_month"),
                                 actor=st.actor, idempotency_key=st.key)
    print_result(st, result, "pension suspended")


@pensioner_app.command("resume")
@guarded
def pensioner_resume(ctx: typer.Context, id_number: IdOpt,
                     from_month: Annotated[str, typer.Option("--from-month", help="YYYY-MM.")],
                     json_out: JsonFlag = False) -> None:
    """Resume a suspended pension; the suspended months are owed in arrears (补发)."""
    st = settings_of(ctx, json_out)
    result = st.ledger().resume(id_number=id_number,
                                from_month=parse_month_text(from_month, "from_month"),
                                actor=st.actor, idempotency_key=st.key)
    print_result(st, result, "pension resumed")


@pensioner_app.command("decease")
@guarded
def pensioner_decease(ctx: typer.Context, id_number: IdOpt,
                      date_of_death: Annotated[str, typer.Option("--date-of-death")],
                      reported_on: Annotated[str, typer.Option("--reported-on")],
                      json_out: JsonFlag = False) -> None:
    """Record a death; payment stops from the month after."""
    st = settings_of(ctx, json_out)
    result = st.ledger().decease(id_number=id_number,
                                 date_of_death=parse_date(date_of_death, "date_of_death"),
                                 reported_on=parse_date(reported_on, "reported_on"),
                                 actor=st.actor, idempotency_key=st.key)
    print_result(st, result, "death recorded")


@pensioner_app.command("terminate")
@guarded
def pensioner_terminate(ctx: typer.Context, id_number: IdOpt,
                        reason: Annotated[str, typer.Option(
                            "--reason", help="death, emigration, employee_scheme, "
                                             "transfer_out, double_enrolment.")],
                        effective: Annotated[str, typer.Option("--date")],
                        json_out: JsonFlag = False) -> None:
    """End a participation (终止)."""
    st = settings_of(ctx, json_out)
    result = st.ledger().terminate(id_number=id_number, reason_code=reason,
                                   effective_date=parse_date(effective, "date"),
                                   actor=st.actor, idempotency_key=st.key)
    print_result(st, result, "participation terminated")


PayeeAccountName = Annotated[str | None, typer.Option(
    "--account-name", help="The payee's account: name, number and bank code together.")]
PayeeAccountNumber = Annotated[str | None, typer.Option("--account-number")]
PayeeBankCode = Annotated[str | None, typer.Option("--bank-code")]


@pensioner_app.command("settle")
@guarded
def pensioner_settle(ctx: typer.Context, id_number: IdOpt,
                     how: Annotated[str, typer.Option("--how", help="refund or inheritance.")],
                     payee: Annotated[str, typer.Option("--payee")],
                     value_date: DateOpt, account_name: PayeeAccountName = None,
                     account_number: PayeeAccountNumber = None,
                     bank_code: PayeeBankCode = None, json_out: JsonFlag = False) -> None:
    """Pay out the individual account: a refund, or an inheritance after death.

    With the payee's account, the monthly payout run pays it through the bank."""
    st = settings_of(ctx, json_out)
    result = st.ledger().settle_balance(
        id_number=id_number, how=how, payee=payee, value_date=parse_date(value_date, "date"),
        payee_account=bank_account(account_name, account_number, bank_code, required=False),
        actor=st.actor, idempotency_key=st.key)
    print_result(st, result, "account settled")


@pensioner_app.command("funeral-grant")
@guarded
def pensioner_funeral_grant(ctx: typer.Context, id_number: IdOpt,
                            payee: Annotated[str, typer.Option("--payee")],
                            value_date: DateOpt, account_name: PayeeAccountName = None,
                            account_number: PayeeAccountNumber = None,
                            bank_code: PayeeBankCode = None,
                            json_out: JsonFlag = False) -> None:
    """Award the funeral grant (丧葬补助金) after a pensioner's death.

    An outstanding overpayment is recovered from it first; the monthly payout run pays
    the rest."""
    st = settings_of(ctx, json_out)
    result = st.ledger().award_funeral_grant(
        id_number=id_number, payee=payee, value_date=parse_date(value_date, "date"),
        payee_account=bank_account(account_name, account_number, bank_code, required=False),
        actor=st.actor, idempotency_key=st.key)
    print_result(st, result, "funeral grant awarded")


@pensioner_app.command("payee")
@guarded
def pensioner_payee(ctx: typer.Context, id_number: IdOpt,
                    kind: Annotated[str, typer.Option(
                        "--kind", help="funeral_grant, inheritance, refund or "
                                       "pension_owed_at_death.")],
                    payee: Annotated[str, typer.Option("--payee")],
                    account_name: Annotated[str, typer.Option("--account-name")],
                    account_number: Annotated[str, typer.Option("--account-number")],
                    bank_code: Annotated[str, typer.Option("--bank-code")],
                    json_out: JsonFlag = False) -> None:
    """Change who receives a one-off payment and where (lifts a bank return's hold)."""
    st = settings_of(ctx, json_out)
    result = st.ledger().change_payee(
        id_number=id_number, kind=kind, payee=payee,
        payee_account=bank_account(account_name, account_number, bank_code, required=True),
        actor=st.actor, idempotency_key=st.key)
    print_result(st, result, "payee changed")


@pensioner_app.command("payables")
@guarded
def pensioner_payables(ctx: typer.Context, id_number: IdOpt,
                       json_out: JsonFlag = False) -> None:
    """What is owed to payees on an account (funeral grant, inheritance, refund, pension
    owed at death), to whom, and where each stands."""
    st = settings_of(ctx, json_out)
    result = redact(st.ledger().payables(id_number), st.unmask)
    if st.json:
        sys.stdout.write(dump_json(result) + "\n")
        return
    table = Table(title=f"payables of {result['id_number']} {escape(result['name'])} "
                        f"({result['status']}): {format_yuan(result['owed_fen'])} yuan "
                        f"still owed", title_justify="left")
    for col in ("kind", "yuan", "payee", "account", "state"):
        table.add_column(col, justify="right" if col == "yuan" else "left")
    for r in result["payables"]:
        state = {"sent": f"sent to the bank as {r['sent_as']}",
                 "held": f"held after the bank's {r['held_for']}: change the payee"}.get(
            r["state"], r["state"])
        account = (f"{r['account_number']} (bank {r['bank_code']})"
                   if r["account_number"] else "-")
        table.add_row(r["kind"], format_yuan(r["amount_fen"]), escape(r["payee"] or "-"),
                      escape(account), escape(state))
    out_console().print(table)


@pensioner_app.command("fine")
@guarded
def pensioner_fine(ctx: typer.Context, id_number: IdOpt,
                   fine: Annotated[str, typer.Option("--fine", help="Yuan of the fine.")],
                   defrauded: Annotated[str, typer.Option(
                       "--defrauded", help="Yuan obtained by fraud (assessed as an "
                                           "overpayment first).")],
                   decision: Annotated[str, typer.Option(
                       "--decision", help="Number of the administrative penalty decision.")],
                   value_date: DateOpt, json_out: JsonFlag = False) -> None:
    """Record a fine for obtaining the pension by fraud (骗取, two to five times what was
    obtained); the treasury's money, kept in memorandum accounts."""
    st = settings_of(ctx, json_out)
    result = st.ledger().impose_fine(
        id_number=id_number, amount_fen=parse_yuan(fine, "fine"),
        defrauded_fen=parse_yuan(defrauded, "defrauded"), decision_no=decision,
        value_date=parse_date(value_date, "date"), actor=st.actor, idempotency_key=st.key)
    print_result(st, result, "fine recorded")


@pensioner_app.command("fine-paid")
@guarded
def pensioner_fine_paid(ctx: typer.Context, id_number: IdOpt, amount: AmountOpt,
                        reference: Annotated[str, typer.Option(
                            "--reference", help="The treasury's receipt; books once.")],
                        value_date: DateOpt, json_out: JsonFlag = False) -> None:
    """Record a fine (or part of one) paid to the treasury."""
    st = settings_of(ctx, json_out)
    result = st.ledger().pay_fine(
        id_number=id_number, amount_fen=parse_yuan(amount, "amount"), reference=reference,
        value_date=parse_date(value_date, "date"), actor=st.actor, idempotency_key=st.key)
    print_result(st, result, "fine paid")


@pensioner_app.command("overpayment")
@guarded
def pensioner_overpayment(ctx: typer.Context, id_number: IdOpt, amount: AmountOpt,
                          months: Annotated[str, typer.Option(
                              "--months", help="Months overpaid, YYYY-MM,YYYY-MM,...")],
                          reason: Annotated[str, typer.Option("--reason")],
                          value_date: DateOpt, json_out: JsonFlag = False) -> None:
    """Assess an overpayment (e.g. pension paid after death, 冒领)."""
    st = settings_of(ctx, json_out)
    month_list = [parse_month_text(m, "months") for m in months.split(",") if m.strip()]
    if not month_list:
        raise InvalidInput("months", "name at least one month YYYY-MM")
    result = st.ledger().assess_overpayment(
        id_number=id_number, amount_fen=parse_yuan(amount, "amount"), months=month_list,
        reason=reason, value_date=parse_date(value_date, "date"), actor=st.actor,
        idempotency_key=st.key)
    print_result(st, result, "overpayment assessed")


@pensioner_app.command("recover")
@guarded
def pensioner_recover(ctx: typer.Context, id_number: IdOpt, amount: AmountOpt,
                      channel: Annotated[str, typer.Option(
                          "--channel", help="offset_account or family.")],
                      value_date: DateOpt, json_out: JsonFlag = False) -> None:
    """Recover an overpayment (追回): offset against the account, or repaid by the family."""
    st = settings_of(ctx, json_out)
    result = st.ledger().recover_overpayment(
        id_number=id_number, amount_fen=parse_yuan(amount, "amount"), channel=channel,
        value_date=parse_date(value_date, "date"), actor=st.actor, idempotency_key=st.key)
    print_result(st, result, "overpayment recovered")


# ---- reading ----------------------------------------------------------------------------

def statement_payload(ledger: Ledger, id_number: str, as_of: date | None,
                      unmask: bool) -> dict[str, Any]:
    from ledger.statement import statement_of

    p = ledger.participant(id_number)
    payload = statement_of(p, as_of, unmasked=unmask)
    # The bank details pensions are paid to: operators check them with the pensioner.
    payload["bank"] = p.bank.model_dump() if p.bank is not None else None
    return payload


# Short column heads so a statement fits 80 columns.
SOURCE_LABELS = {"contribution": "paid", "subsidy_province": "province",
                 "subsidy_city": "city", "subsidy_county": "county",
                 "collective": "collect.", "on_behalf": "behalf"}


def render_statement(console: Console, st: dict[str, Any]) -> None:
    console.print(f"[bold]Statement (对账单)[/] {escape(st['id_number'])} {escape(st['name'])}"
                  f" — {escape(st['township'])} {escape(st['village'])}")
    console.print(f"status {st['status']}, group {st['identity_group']}, as of "
                  f"{st['as_of'] or 'now'}; balance [bold]{format_yuan(st['balance_fen'])}[/] "
                  "yuan")
    sources = Table()
    sources.add_column("account source")
    sources.add_column("yuan", justify="right")
    for src, fen in st["sources_fen"].items():
        sources.add_row(src, format_yuan(fen))
    console.print(sources)
    if st["booked_by_year_fen"]:
        years = Table(title="Booked by year, yuan", title_justify="left", box=box.SIMPLE_HEAD)
        cols = list(next(iter(st["booked_by_year_fen"].values())))
        years.add_column("year")
        for c in cols:
            years.add_column(SOURCE_LABELS.get(c, c), justify="right")
        years.add_column("interest", justify="right")
        for y, row in st["booked_by_year_fen"].items():
            years.add_row(y, *(format_yuan(row[c]) for c in cols),
                          format_yuan(st["interest_by_year_fen"].get(y, 0)))
        console.print(years)
    if st["pension"]:
        p = st["pension"]
        console.print(f"Pension from {p['start_month']}: basic {format_yuan(p['basic_fen'])} + "
                      f"account {format_yuan(p['account_pension_fen'])} = "
                      f"{format_yuan(p['basic_fen'] + p['account_pension_fen'])} yuan a month "
                      f"(rule {escape(p['rule_version'])})")
    if st.get("bank"):
        b = st["bank"]
        console.print(f"Paid to {escape(b['account_name'])}, account "
                      f"{escape(b['account_number'])} at bank {escape(b['bank_code'])}")
    if st["date_of_death"]:
        console.print(f"Died {st['date_of_death']}")
    if st["overpayment_outstanding_fen"]:
        console.print(f"Overpayment outstanding {format_yuan(st['overpayment_outstanding_fen'])}"
                      " yuan")


@app.command()
@guarded
def statement(ctx: typer.Context,
              id_number: Annotated[str, typer.Argument(metavar="ID", help="Resident ID.")],
              as_of: Annotated[str | None, typer.Option("--as-of", help="YYYY-MM-DD value date.")
                               ] = None,
              json_out: JsonFlag = False) -> None:
    """A participant's statement (对账单): each source, by year, pension; as of a date."""
    st = settings_of(ctx, json_out)
    payload = redact(statement_payload(st.ledger(), id_number,
                                       parse_date(as_of, "as_of") if as_of else None,
                                       st.unmask), st.unmask)
    if st.json:
        sys.stdout.write(dump_json(payload) + "\n")
    else:
        render_statement(out_console(), payload)


@dataclass(frozen=True)
class BalanceRow:
    account: str
    name: str
    balance_fen: int
    township: str | None = None  # None: the whole county


def balance_rows(ledger: Ledger) -> list[BalanceRow]:
    """The guarded bank and asset accounts, now. (A projection will answer --as-of and
    --by township; it replaces this function and the renderers stay.)"""
    ledger.fund()  # refuses clearly when the ledger was never set up
    positions = ledger.fund_positions()
    return [BalanceRow(a, ACCOUNT_NAMES[a], positions[a]) for a in GUARDED_ACCOUNTS]


def balances_payload(rows: list[BalanceRow], as_of: date | None = None) -> dict[str, Any]:
    return {"as_of": as_of.isoformat() if as_of else None,
            "accounts": [{"account": r.account, "name": r.name, "township": r.township,
                          "balance_fen": r.balance_fen,
                          "balance_yuan": format_yuan(r.balance_fen)} for r in rows],
            "total_fen": sum(r.balance_fen for r in rows)}


def render_balances(console: Console, payload: dict[str, Any]) -> None:
    table = Table(title=f"Fund balances{' as of ' + payload['as_of'] if payload['as_of'] else ''}"
                  ", yuan", title_justify="left")
    table.add_column("account")
    table.add_column("name")
    table.add_column("balance", justify="right")
    for r in payload["accounts"]:
        table.add_row(r["account"], escape(r["name"]), r["balance_yuan"])
    table.add_row("", "[bold]total[/]", f"[bold]{format_yuan(payload['total_fen'])}[/]")
    console.print(table)


def current_ledger() -> Ledger:
    """The ledger of the command line being run, for commands registered without a
    context (the projections' sub-app)."""
    assert _RUNNING, "the root callback sets the settings"
    return _RUNNING[-1].ledger()


# balances [--as-of] [--by township] [--fund] [--json], trial-balance, roster,
# report county, project run/rebuild/status: answered by the projections.
register_projections(app, current_ledger)


# ---- imports ----------------------------------------------------------------------------

def count_data_lines(path: Path) -> int:
    """Lines after the header, for the progress bar's total (a cheap pre-read)."""
    try:
        with path.open("rb") as f:
            return max(0, sum(1 for _ in f) - 1)
    except OSError as e:
        raise InvalidInput("file", f"cannot read {path}: {e.strerror or e}") from None


def run_import(settings: Settings, kind: str, path: Path) -> dict[str, Any]:
    from ledger import bulk

    total = count_data_lines(path)
    fn = bulk.import_participants if kind == "participants" else bulk.import_contributions
    with progress_bar(f"import {kind}", total) as advance:
        return fn(settings.ledger(), path, actor=settings.actor, progress=advance,
                  idempotency_key=settings.key)


@import_app.command("participants")
@guarded
def import_participants(ctx: typer.Context,
                        file: Annotated[Path, typer.Argument(help="participants CSV")],
                        json_out: JsonFlag = False) -> None:
    """Enrol everyone in a CSV, or no one. Header: id_number,name,township,village,
    identity_group,enrol_date,account_name,account_number,bank_code."""
    st = settings_of(ctx, json_out)
    print_result(st, run_import(st, "participants", file), f"imported {file}")


@import_app.command("contributions")
@guarded
def import_contributions(ctx: typer.Context,
                         file: Annotated[Path, typer.Argument(help="contributions CSV")],
                         json_out: JsonFlag = False) -> None:
    """Book every contribution in a CSV, or none. Header: id_number,year,tier,amount,
    channel,receipt_no,value_date,back_payment (tier and amount in yuan)."""
    st = settings_of(ctx, json_out)
    print_result(st, run_import(st, "contributions", file), f"imported {file}")


# ---- audit ------------------------------------------------------------------------------

def verify_payload(ledger: Ledger, head: str | None = None) -> dict[str, Any]:
    from ledger.audit import verify_chain

    return verify_chain(ledger, expected_head=head).as_dict()


@audit_app.command("verify")
@guarded
def audit_verify(ctx: typer.Context,
                 head: Annotated[str | None, typer.Option(
                     "--head", help="A chain head kept outside the system; it must still be "
                                    "in the chain.")] = None,
                 json_out: JsonFlag = False) -> None:
    """Recompute the hash chain over every stored event. Exit 3 if it is broken."""
    st = settings_of(ctx, json_out)
    payload = verify_payload(st.ledger(), head)
    print_result(st, payload, "hash chain " + ("verified" if payload["ok"] else "BROKEN"))
    if not payload["ok"]:
        raise typer.Exit(EXIT_CHAIN_BROKEN)


@audit_app.command("balances")
@guarded
def audit_balances(ctx: typer.Context,
                   known_at: Annotated[str, typer.Option(
                       "--known-at", help="A recorded time, ISO 8601 (2026-03-31T18:00; "
                                          "without an offset, UTC+8): only what was "
                                          "committed by then counts.")],
                   as_of: Annotated[str | None, typer.Option(
                       "--as-of", help="Value date YYYY-MM-DD (default: every date).")] = None,
                   json_out: JsonFlag = False) -> None:
    """Every account's balance as the ledger knew it at a time, replayed from the events
    (not the views): what a report printed then said, whatever was booked since."""
    from ledger.audit import balances_known_at

    st = settings_of(ctx, json_out)
    moment = parse_moment(known_at, "known_at")
    day = parse_date(as_of, "as_of") if as_of else None
    result = balances_known_at(st.ledger(), moment, day)
    result["balances_fen"] = result.pop("accounts")
    print_result(st, result, f"balances known at {moment.isoformat()}"
                 + (f", as of {day.isoformat()}" if day else ""))


@audit_app.command("history")
@guarded
def audit_history(ctx: typer.Context,
                  id_number: Annotated[str, typer.Argument(help="Resident ID number.")],
                  json_out: JsonFlag = False) -> None:
    """Every event of a participant as recorded: when, by whom, what, its value date, its
    postings and the individual account's balance after it, replayed from the events."""
    from ledger.audit import history

    st = settings_of(ctx, json_out)
    result = redact(history(st.ledger(), id_number), st.unmask)
    if st.json:
        sys.stdout.write(dump_json(result) + "\n")
        return
    table = Table(title=f"history of {result['id_number']}", title_justify="left")
    for col in ("v", "recorded (UTC)", "actor", "event", "value date", "postings (yuan)",
                "account (yuan)"):
        table.add_column(col, justify="right" if col in ("v", "account (yuan)") else "left")
    for r in result["events"]:
        postings = ", ".join(f"{a} {format_yuan(v)}" for a, v in r["postings_fen"].items())
        table.add_row(str(r["version"]), r["recorded"][:19].replace("T", " "),
                      escape(str(r["actor"] or "-")), r["event"], r["value_date"] or "-",
                      postings or "-", format_yuan(r["account_balance_fen"]))
    out_console().print(table)


@audit_app.command("anomalies")
@guarded
def audit_anomalies(ctx: typer.Context,
                    on: Annotated[str | None, typer.Option(
                        "--on", help="The day ages and the year since a death are counted "
                                     "on, YYYY-MM-DD (default today).")] = None,
                    year: Annotated[int | None, typer.Option(
                        "--year", help="The contribution year checked for payments on "
                                       "behalf of hardship groups (default: the year before "
                                       "--on).")] = None,
                    json_out: JsonFlag = False) -> None:
    """Pensions paid after death with no overpayment assessed, months owed at death never
    paid, one account taking several living pensioners' pensions, pensioners of 100 or more
    still paid, money held for people dead over a year, refunds never made, hardship-group
    members with no payment on their behalf, fixed deposits left past maturity, income
    left unswept at a month's end."""
    from ledger.audit import anomalies

    st = settings_of(ctx, json_out)
    day = parse_date(on, "on") if on else date.today()
    if year is not None and not 2000 <= year <= day.year:
        raise InvalidInput("year", f"must be a year from 2000 to {day.year}")
    result = redact(anomalies(st.ledger(), day, year), st.unmask)
    if st.json:
        sys.stdout.write(dump_json(result) + "\n")
        return
    console = out_console()
    counts = ", ".join(f"{kind} {n:,}" for kind, n in result["counts"].items())
    table = Table(title=f"anomalies on {day.isoformat()}: {counts} "
                        f"({result['pensioners_checked']:,} pensioners checked)",
                  title_justify="left")
    for col in ("kind", "who", "what"):
        table.add_column(col)
    for kind, listed in result["anomalies"].items():
        for a in listed[:MAX_ANOMALIES_SHOWN]:
            table.add_row(kind, *(escape(text) for text in _anomaly_row(kind, a)))
        if len(listed) > MAX_ANOMALIES_SHOWN:
            table.add_row(kind, "...", f"{result['counts'][kind] - MAX_ANOMALIES_SHOWN:,} "
                                       "more (--json lists them)")
    console.print(table)


MAX_ANOMALIES_SHOWN = 20


@audit_app.command("match")
@guarded
def audit_match(ctx: typer.Context,
                file: Annotated[Path, typer.Argument(
                    help="CSV: id_number,date,source (source may be empty).")],
                kind: Annotated[str, typer.Option(
                    "--kind", help="What the list records: deaths (date of death), "
                                   "imprisoned (since), employee_pension (paid since).")],
                json_out: JsonFlag = False) -> None:
    """Match another register's list against the ledger by ID number (数据比对): deaths
    not recorded, pensions paid to the imprisoned or to people the employee scheme pays,
    with the months paid since and what they came to. Stores nothing."""
    from ledger.cross_check import cross_check

    st = settings_of(ctx, json_out)
    result = redact(cross_check(st.ledger(), str(file), kind), st.unmask)
    if st.json:
        sys.stdout.write(dump_json(result) + "\n")
        return
    c = result["counts"]
    table = Table(title=f"{kind}: {c['lines']:,} listed, {c['findings']:,} findings, "
                        f"{c['consistent']:,} as the ledger has them, "
                        f"{c['not_participants']:,} not participants; paid since "
                        f"{format_yuan(result['paid_since_fen'])} yuan", title_justify="left")
    for col in ("line", "who", "finding", "paid since (yuan)", "action"):
        table.add_column(col, justify="right" if col in ("line", "paid since (yuan)")
                         else "left")
    for f in result["findings"][:MAX_ANOMALIES_SHOWN]:
        months = f["months_paid_since"]
        paid = (f"{format_yuan(f['paid_since_fen'])} ({len(months)} months)" if months
                else "-")
        table.add_row(str(f["line"]), escape(f"{f['id_number']} {f['name']}"), f["finding"],
                      paid, escape(f["action"]))
    if c["findings"] > MAX_ANOMALIES_SHOWN:
        table.add_row("...", f"{c['findings'] - MAX_ANOMALIES_SHOWN:,} more (--json)", "", "",
                      "")
    out_console().print(table)


def _anomaly_row(kind: str, a: dict[str, Any]) -> tuple[str, str]:
    if kind == "income_not_swept":
        return (f"income account, end of {a['month']}",
                f"{format_yuan(a['balance_fen'])} yuan not swept to the fiscal special account")
    if kind == "deposit_not_withdrawn":
        return (f"fixed deposit {a['deposit_no']}",
                f"{format_yuan(a['principal_fen'])} yuan, matured {a['maturity_date']} "
                f"({a['days_past_maturity']} days ago), not withdrawn")
    if kind == "shared_account":
        people = ", ".join(f"{p['id_number']} {p['name']}" for p in a["pensioners"])
        return (f"account {a['account_number']} (bank {a['bank_code']})",
                f"{len(a['pensioners'])} pensioners: {people}")
    who = f"{a['id_number']} {a['name']}"
    if kind == "paid_after_death":
        return who, f"died {a['date_of_death']}; paid for {', '.join(a['months'])}"
    if kind == "owed_at_death":
        return who, f"died {a['date_of_death']}; never paid {', '.join(a['months'])}"
    if kind == "dead_account_open":
        unpaid = ", ".join(f"{k} {format_yuan(v)}" for k, v in a["unpaid"].items())
        return who, (f"died {a['date_of_death']}; {format_yuan(a['held_fen'])} yuan held "
                     f"(account {format_yuan(a['account_fen'])}"
                     + (f"; unpaid {unpaid}" if unpaid else "") + ")")
    if kind == "refund_not_made":
        return who, (f"left {a['effective_date']} ({a['reason']}); account "
                     f"{format_yuan(a['account_fen'])} yuan not settled, refund "
                     f"{format_yuan(a['unpaid_fen'])} yuan not paid")
    if kind == "hardship_without_on_behalf":
        return who, f"{a['identity_group']}: nothing booked for {a['year']}"
    if kind == "payment_held":
        return who, (f"held after the bank's {a['hold']}; {len(a['months'])} months not sent "
                     f"({a['months'][0]} to {a['months'][-1]}): correct the bank details")
    return who, f"aged {a['age']}, still paid"


# ---- demo -------------------------------------------------------------------------------

# The payout engine's monthly run for the demo's pension year, given by the composition root
# (entrypoints/cli.py, register_demo_payout): ledger/ does not import the payout engine.
# Without it the demo tells the pension year without the bank.
_demo_payout: Callable[[Ledger, Path], Any] | None = None


def register_demo_payout(factory: Callable[[Ledger, Path], Any]) -> None:
    global _demo_payout
    _demo_payout = factory


@app.command()
@guarded
def demo(ctx: typer.Context,
         fresh: Annotated[bool, typer.Option("--fresh", help="Delete the demo database first.")
                          ] = False,
         participants: Annotated[int, typer.Option(
             "--participants", help="Residents in the synthetic county.")] = 2000,
         json_out: JsonFlag = False) -> None:
    """A synthetic county, end to end, on its own database (default ./var/demo.db)."""
    from ledger import demo as demo_module

    st = settings_of(ctx, json_out)
    # The demo never falls back to LEDGER_DATABASE_URL: it must not touch a real ledger.
    if st.db is None:
        st.db = DEMO_DEFAULT_DB
    demo_module.check_participants(participants)  # before --fresh deletes anything
    if fresh:
        demo_module.delete_sqlite(st.url)
    workdir = demo_module.workdir_for(st.url)
    result = demo_module.run_demo(
        st.ledger(), participants=participants, workdir=workdir,
        console=err_console() if st.json else out_console(), unmask=st.unmask,
        payout=None if _demo_payout is None else _demo_payout(st.ledger(), workdir))
    if st.json:
        sys.stdout.write(dump_json(redact(result.as_dict(), st.unmask)) + "\n")
    if not result.reconciled or not result.audit["ok"]:
        raise typer.Exit(EXIT_UNEXPECTED)


def main() -> None:
    app(prog_name="pension-ledger")


if __name__ == "__main__":
    main()
