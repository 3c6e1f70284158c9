"""The demo: a synthetic county, end to end, in well under a minute on SQLite.

Every step goes through the Ledger's commands (and the bulk importer), exactly as an
operator's would. The demo keeps its own tally of the money it moved into and out of each
guarded account, and at the end checks the ledger's balances against it.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ledger import bulk
from ledger.aggregates.participant import BankAccount
from ledger.application import Ledger
from ledger.errors import InvalidInput, LedgerError, Refused
from ledger.money import format_yuan
from ledger.postings import (
    ACCOUNT_NAMES,
    EXPENDITURE,
    FISCAL,
    FIXED_DEPOSITS,
    GUARDED_ACCOUNTS,
    INCOME,
)
from ledger.rules import SUBSIDY_LEVELS, Parameters
from ledger.synthetic import (
    MAX_PEOPLE,
    MIN_PEOPLE,
    Contribution,
    County,
    make_county,
    write_contributions_csv,
    write_participants_csv,
)

DEFAULT_YEARS = (2021, 2022, 2023, 2024)
# Who does what: the maker-checker rule needs two people.
OPERATOR = "op-li"
APPROVER = "approver-wang"
FINANCE = "finance-zhao"
ADMIN = "admin"
# Bank interest the fund's own accounts earn, basis points a year (current accounts;
# the fiscal special account keeps most of its money in fixed deposits).
BANK_RATE_BP = {INCOME: 35, FISCAL: 150, EXPENDITURE: 35}
# Each year end the fiscal special account puts this share of what it holds on a one-year
# fixed deposit (a county office keeps more; the demo's pensions need the rest in January).
DEPOSIT_SHARE_PERCENT = 30
DEPOSIT_RATE = Decimal("0.0175")
MAX_COLLECTIVE_PER_YEAR = 8
COLLECTIVE_FEN = 5000
DEMO_RAISE_FEN = 500  # the county's back-dated raise of its part of the basic pension


def check_participants(n: int) -> None:
    if not MIN_PEOPLE <= n <= MAX_PEOPLE:
        raise InvalidInput("participants", f"must be {MIN_PEOPLE} to {MAX_PEOPLE}")


def delete_sqlite(url: str) -> None:
    """--fresh: remove a SQLite database file and its journals. Never a server database."""
    if url.startswith(("postgresql://", "postgres://")):
        raise InvalidInput("fresh", "deletes a SQLite file only; point --db at a new "
                           "PostgreSQL schema instead")
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    if path == ":memory:" or path.startswith("file:"):
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


def workdir_for(url: str) -> Path:
    """Where the synthetic county's CSV files go: beside the SQLite file."""
    if url.startswith(("postgresql://", "postgres://")) or url.endswith(":memory:"):
        return Path("./var/demo-county")
    path = Path(url.removeprefix("sqlite:///").removeprefix("sqlite://"))
    return path.parent / f"{path.stem}-county"


@dataclass
class Booking:
    """One movement the demo booked on a guarded account."""

    account: str
    amount_fen: int
    what: str


@dataclass
class DemoResult:
    db: str
    csv_dir: str
    participants: int
    contribution_lines: int
    bookings: list[Booking]
    positions_fen: dict[str, int]
    audit: dict[str, Any]
    refusals: list[str]
    seconds: float

    @property
    def booked_fen(self) -> dict[str, int]:
        out = dict.fromkeys(GUARDED_ACCOUNTS, 0)
        for b in self.bookings:
            out[b.account] += b.amount_fen
        return out

    @property
    def reconciled(self) -> bool:
        return self.booked_fen == self.positions_fen

    def as_dict(self) -> dict[str, Any]:
        return {"db": self.db, "csv_dir": self.csv_dir, "participants": self.participants,
                "contribution_lines": self.contribution_lines,
                "booked_fen": self.booked_fen, "positions_fen": self.positions_fen,
                "reconciled": self.reconciled, "audit": self.audit,
                "refusals": self.refusals, "seconds": round(self.seconds, 2),
                "bookings": [{"account": b.account, "amount_fen": b.amount_fen,
                              "what": b.what} for b in self.bookings]}


@dataclass(frozen=True)
class PaidMonth:
    """One month paid through the payout engine, as the demo tells it."""

    period: str
    payments: int
    total_fen: int
    failed: int
    failed_fen: int
    files: list[str]
    manifest_sha256: str
    reasons: list[str]            # last month compared with this one, by reason
    maker_checker_refusal: str    # the drafter's own approval, refused
    state: str
    held: int                     # pensioners held until their account is corrected
    death_checks: int             # pensions suspended for a death check (MD07)


class MonthlyRun(Protocol):
    """The payout engine's monthly run, as the demo drives it (payout_engine/demo.py; the
    composition root supplies it, since ledger/ does not import the payout engine)."""

    def pay_month(self, period: str, *, today: date,
                  bank_fails: dict[str, str]) -> PaidMonth: ...


def bank_interest_fen(balance_fen: int, account: str) -> int:
    return balance_fen * BANK_RATE_BP[account] // 10_000


@dataclass
class Demo:
    ledger: Ledger
    console: Console
    workdir: Path
    unmask: bool = False
    bookings: list[Booking] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    section_no: int = 0
    # The monthly payout run; without it the pension year is told without the bank.
    payout: MonthlyRun | None = None

    # ---- presentation -------------------------------------------------------------------

    def section(self, title: str) -> None:
        self.section_no += 1
        self.console.print()
        self.console.rule(f"[bold cyan]{self.section_no}. {escape(title)}", align="left")

    def say(self, text: str) -> None:
        self.console.print(text)

    def masked(self, id_number: str) -> str:
        from ledger.cli import redact

        return str(redact({"id_number": id_number}, self.unmask)["id_number"])

    def book(self, account: str, amount_fen: int, what: str) -> None:
        self.bookings.append(Booking(account, amount_fen, what))

    def sweep(self, amount_fen: int, day: date, reference: str, what: str) -> None:
        """Income account -> fiscal special account, in the ledger and in the demo's tally."""
        self.ledger.sweep(amount_fen=amount_fen, value_date=day, reference=reference,
                          actor=FINANCE)
        self.book(INCOME, -amount_fen, what)
        self.book(FISCAL, amount_fen, what)

    def refused(self, what: str, attempt: Callable[[], Any]) -> None:
        """Run something the ledger must refuse, and show the refusal."""
        from ledger.cli import error_text

        try:
            attempt()
        except LedgerError as e:
            text = error_text(e)
            self.refusals.append(f"{what}: {text}")
            self.say(f"  [green]✓ refused[/] {escape(what)}\n    [red]{escape(text)}[/]")
            return
        raise AssertionError(f"the ledger accepted {what}")

    def rules(self, year: int) -> Parameters:
        return self.ledger.rules_on(date(year, 7, 1)).parameters

    # ---- the story ----------------------------------------------------------------------

    def run(self, participants: int, years: tuple[int, ...]) -> DemoResult:
        from ledger.cli import safe_url

        started = time.perf_counter()
        check_participants(participants)
        if self.ledger.queries.all_participant_ids():
            raise Refused("db", "already holds participants; run the demo with --fresh or "
                          "another --db")
        self.section("Setting up the ledger")
        init = self.ledger.init(actor=ADMIN)
        self.say(f"Fund and rule set ready ({init['rule_versions']} rule versions; "
                 f"in force {self.ledger.rules_on(date(years[-1], 7, 1)).label} for "
                 f"{years[-1]}).")

        county = self.generate(participants, years)
        self.enrol_everyone(county)
        for year in years:
            self.contribution_year(county, year, last=year == years[-1])
        pension_year = years[-1] + 1
        pensioners = self.pensions(county, pension_year)
        self.fund_the_pensions(pensioners, pension_year)
        if self.payout is None:
            self.suspension(county, pension_year)
            self.deaths(county, pension_year)
        else:
            self.paid_months(county, pension_year, self.payout)
        self.safety(county, years, pension_year)
        self.fixed_deposit(pension_year)   # last year's deposit matures in December
        self.show_statement(county)
        positions = self.show_balances()
        audit = self.show_audit(date(pension_year, 12, 31))
        seconds = time.perf_counter() - started
        result = DemoResult(
            db=safe_url(self.ledger.url), csv_dir=str(self.workdir),
            participants=len(county.people),
            contribution_lines=sum(len(v) for v in county.contributions.values()),
            bookings=self.bookings, positions_fen=positions, audit=audit,
            refusals=self.refusals, seconds=seconds)
        self.console.print()
        verdict = ("[bold green]reconciled[/]" if result.reconciled
                   else "[bold red]NOT reconciled[/]")
        self.say(f"Demo finished in {seconds:.1f} s: balances {verdict}, hash chain "
                 f"{'[bold green]verified[/]' if audit['ok'] else '[bold red]BROKEN[/]'}.")
        return result

    def generate(self, participants: int, years: tuple[int, ...]) -> County:
        self.section("A synthetic county")
        county = make_county(participants, years, self.rules)
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_participants_csv(self.workdir / "participants.csv", county.people)
        for year, rows in county.contributions.items():
            write_contributions_csv(self.workdir / f"contributions-{year}.csv", rows)
        by_town = Counter(p.township for p in county.people)
        groups = Counter(p.identity_group for p in county.people)
        self.say(f"{len(county.people)} residents; CSV files in {escape(str(self.workdir))}")
        table = Table()
        table.add_column("township")
        table.add_column("villages", justify="right")
        table.add_column("residents", justify="right")
        for town, n in sorted(by_town.items()):
            villages = len({p.village for p in county.people if p.township == town})
            table.add_row(town, str(villages), str(n))
        self.console.print(table)
        self.say("Identity groups: " + ", ".join(f"{g} {n}" for g, n in groups.most_common()))
        return county

    def enrol_everyone(self, county: County) -> None:
        from ledger.cli import progress_bar

        self.section("Enrolment: bulk import of participants")
        path = self.workdir / "participants.csv"
        with progress_bar("import participants", len(county.people)) as advance:
            result = bulk.import_participants(self.ledger, path, actor=OPERATOR,
                                              progress=advance)
        self.say(f"{result['participants']} residents enrolled from {path.name} in one "
                 f"transaction ({result['events']} events).")
        again = bulk.import_participants(self.ledger, path, actor=OPERATOR)
        assert again.get("replayed") is True, again
        self.say(f"  [green]✓ replayed[/] importing {path.name} again returned the first "
                 "result and enrolled no one twice")

    def contribution_year(self, county: County, year: int, last: bool) -> None:
        from ledger.cli import progress_bar

        self.section(f"Year {year}: contributions, subsidies, fund movements, interest")
        for change in county.group_changes:
            if change.effective_from.year == year:
                self.ledger.change_identity_group(
                    id_number=change.id_number, group=change.identity_group,
                    effective_from=change.effective_from, actor=OPERATOR)
                self.say(f"{self.masked(change.id_number)} moves to {change.identity_group} "
                         f"from {change.effective_from}: the government now pays part of "
                         "the lowest tier on their behalf (代缴).")
        path = self.workdir / f"contributions-{year}.csv"
        rows = county.contributions[year]
        with progress_bar(f"import contributions {year}", len(rows)) as advance:
            imported = bulk.import_contributions(self.ledger, path, actor=OPERATOR,
                                                 progress=advance)
        self.book(INCOME, imported["amount_fen"], f"contributions {year} ({path.name})")
        self.say(f"{imported['lines']} contributions imported: "
                 f"{format_yuan(imported['amount_fen'])} yuan paid by residents, "
                 f"{format_yuan(imported['on_behalf_fen'])} yuan paid on their behalf.")
        self.collective(county, year)
        if last:
            self.back_payments(county, year)

        subsidy_day = date(year, 12, 20)
        expected = self.expected_subsidy(rows, year)
        total = len(self.ledger.queries.participants_contributed(year))
        with progress_bar(f"subsidy {year}", total) as advance:
            credited = self.ledger.subsidise_year(year=year, value_date=subsidy_day,
                                                  actor=FINANCE, progress=advance)
        assert credited["amount_fen"] == sum(expected.values()), (credited, expected)
        self.say(f"Contribution subsidy credited to {credited['credited']} accounts: "
                 + ", ".join(f"{lvl} {format_yuan(fen)}" for lvl, fen in expected.items())
                 + " yuan.")

        # The treasury pays what each level owes into the fiscal special account.
        for level, fen in expected.items():
            if fen:
                self.treasury(fen, level, "contribution_subsidy", date(year, 12, 24),
                              f"TRS-{year}-SUB-{level}")
        if imported["on_behalf_fen"]:
            self.treasury(imported["on_behalf_fen"], "county", "on_behalf",
                          date(year, 12, 24), f"TRS-{year}-OB")

        self.bank_interest(year)
        self.monthly_sweeps(year)
        self.fixed_deposit(year)

        with progress_bar(f"interest {year}", len(county.people)) as advance:
            interest = self.ledger.credit_interest(year=year, today=date(year + 1, 1, 6),
                                                   actor=FINANCE, progress=advance)
        self.say(f"Interest for {year} credited to {interest['credited']} accounts: "
                 f"{format_yuan(interest['amount_fen'])} yuan.")

    def expected_subsidy(self, rows: list[Contribution], year: int) -> dict[str, int]:
        """What the subsidy should come to, from the data and the rules alone."""
        params = self.rules(year)
        out = dict.fromkeys(SUBSIDY_LEVELS, 0)
        for c in rows:
            step = params.subsidy_for_tier(c.tier_fen)
            if step is None or c.back_payment:
                continue
            for level, fen in step.by_level().items():
                out[level] += fen
        return out

    def collective(self, county: County, year: int) -> None:
        hardship = [c for c in county.contributions[year]
                    if county.person(c.id_number).identity_group in ("destitute",
                                                                    "severely_disabled")]
        for n, c in enumerate(hardship[:MAX_COLLECTIVE_PER_YEAR], 1):
            village = county.person(c.id_number).village
            self.ledger.credit_collective(
                id_number=c.id_number, year=year, amount_fen=COLLECTIVE_FEN,
                payer=f"{village}村民委员会", receipt_no=f"C{year}{n:05d}",
                value_date=date(year, 10, 15), actor=OPERATOR)
            self.book(INCOME, COLLECTIVE_FEN, f"collective subsidy {year}")
        if hardship:
            n = min(len(hardship), MAX_COLLECTIVE_PER_YEAR)
            self.say(f"Village committees paid a collective subsidy (集体补助) of "
                     f"{format_yuan(COLLECTIVE_FEN)} yuan for {n} residents in hardship.")

    def back_payments(self, county: County, year: int) -> None:
        params = self.rules(year)
        paid = 0
        for id_number in county.cast.near_pension:
            have = {y for y, rows in county.contributions.items()
                    if any(c.id_number == id_number for c in rows)}
            wanted = range(year - params.min_contribution_years + 1, year + 1)
            tier = 50000 if 50000 in params.contribution_tiers_fen else \
                params.contribution_tiers_fen[-1]
            for y in wanted:
                if y in have:
                    continue
                self.ledger.contribute(
                    id_number=id_number, year=y, tier_fen=tier, amount_fen=tier,
                    channel="township_station", receipt_no=f"B{y}-{id_number[-6:]}",
                    value_date=date(year, 9, 16), back_payment=True, actor=OPERATOR)
                self.book(INCOME, tier, f"back-payment {y}")
                paid += 1
        self.say(f"{len(county.cast.near_pension)} residents turning 60 back-paid (补缴) "
                 f"{paid} missed years to reach {params.min_contribution_years} years "
                 "(back-payments earn no subsidy).")

    def treasury(self, amount_fen: int, level: str, purpose: str, on: date,
                 reference: str) -> None:
        self.ledger.receive_treasury_funds(amount_fen=amount_fen, level=level, purpose=purpose,
                                           value_date=on, reference=reference, actor=FINANCE)
        self.book(FISCAL, amount_fen, f"treasury {reference}")

    def bank_interest(self, year: int) -> None:
        positions = self.ledger.fund_positions()
        parts = []
        for account, name in ((INCOME, "income"), (FISCAL, "fiscal"),
                              (EXPENDITURE, "expenditure")):
            fen = bank_interest_fen(positions[account], account)
            if fen:
                self.ledger.earn_bank_interest(account=name, amount_fen=fen,
                                               value_date=date(year, 12, 21),
                                               reference=f"INT-{year}-{name}", actor=FINANCE)
                self.book(account, fen, f"bank interest {year} {name}")
                parts.append(f"{name} {format_yuan(fen)}")
        if parts:
            self.say("Bank interest on the fund's accounts: " + ", ".join(parts) + " yuan.")

    def monthly_sweeps(self, year: int) -> None:
        """The income account swept to the fiscal special account at each month's end, as
        the law wants: what it held then, read from the balances view as of that day."""
        from ledger.projections import ProjectionRunner, Views

        runner, views = ProjectionRunner(self.ledger), Views(self.ledger)
        swept = []
        for month in range(1, 13):
            month_end = date(year, month, calendar.monthrange(year, month)[1])
            runner.run_until_caught_up()
            held = views.fund_balances(month_end)["income_fen"]
            if held:
                self.sweep(held, month_end, f"SWP-{year}-{month:02d}", f"sweep {year}-{month:02d}")
                swept.append(held)
        if swept:
            self.say(f"Income account swept to the fiscal special account at the end of "
                     f"{len(swept)} months: {format_yuan(sum(swept))} yuan (`audit anomalies` "
                     "lists a month left unswept).")

    def fixed_deposit(self, year: int) -> None:
        """Last year's deposit comes back at maturity with its interest; a new one-year
        deposit takes a share of what the fiscal special account holds."""
        day = date(year, 12, 30)
        for d in self.ledger.fixed_deposits(day):
            matures = date.fromisoformat(d["maturity_date"])
            if matures <= day:
                interest = d["interest_at_maturity_fen"]  # the bank pays the contract's
                self.ledger.withdraw_fixed_deposit(
                    deposit_no=d["deposit_no"], interest_fen=interest, value_date=matures,
                    reference=f"FDW-{d['deposit_no']}", actor=FINANCE)
                self.book(FIXED_DEPOSITS, -d["principal_fen"], f"deposit {d['deposit_no']}")
                self.book(FISCAL, d["principal_fen"] + interest, f"deposit {d['deposit_no']}")
                self.say(f"Fixed deposit {d['deposit_no']} matured: "
                         f"{format_yuan(d['principal_fen'])} yuan and "
                         f"{format_yuan(interest)} yuan interest back in the fiscal special "
                         "account.")
        fiscal = self.ledger.fund_positions()[FISCAL]
        amount = fiscal * DEPOSIT_SHARE_PERCENT // 100 // 100_000 * 100_000  # whole 1,000s
        if amount:
            placed = self.ledger.place_fixed_deposit(
                deposit_no=f"FD-{year}", amount_fen=amount, term_months=12,
                annual_rate=DEPOSIT_RATE, value_date=day, reference=f"FD-{year}",
                actor=FINANCE)
            self.book(FISCAL, -amount, f"deposit FD-{year}")
            self.book(FIXED_DEPOSITS, amount, f"deposit FD-{year}")
            self.say(f"Fixed deposit FD-{year} placed from the fiscal special account: "
                     f"{format_yuan(amount)} yuan for 12 months at "
                     f"{placed['rate_percent']}%, maturing {placed['maturity_date']} "
                     "(`deposit list`).")

    def pensions(self, county: County, year: int) -> list[str]:
        self.section(f"Pensions from {year}-01: applied by one person, approved by another")
        start = f"{year}-01"
        ids = county.cast.elderly + county.cast.near_pension
        for id_number in ids:
            self.ledger.apply_for_pension(id_number=id_number, start_month=start,
                                          actor=OPERATOR)
        self.refused(f"{OPERATOR} approving an application {OPERATOR} recorded",
                     lambda: self.ledger.approve_pension(id_number=ids[0], actor=OPERATOR))
        table = Table(title=f"Approved by {APPROVER}, yuan a month", title_justify="left")
        table.add_column("resident", no_wrap=True, min_width=18)
        table.add_column("born", no_wrap=True)
        table.add_column("basis")
        for col in ("basic", "account", "total"):
            table.add_column(col, justify="right")
        for id_number in ids:
            r = self.ledger.approve_pension(id_number=id_number, actor=APPROVER)
            p = self.ledger.participant(id_number)
            assert p.pension is not None
            basis = ("transitional" if p.pension.transitional
                     else f"{p.pension.contribution_years} years paid")
            table.add_row(self.masked(id_number), p.birth_date.isoformat(), basis,
                          format_yuan(r["basic_fen"]), format_yuan(r["account_pension_fen"]),
                          format_yuan(r["basic_fen"] + r["account_pension_fen"]))
        self.console.print(table)
        return ids

    def fund_the_pensions(self, pensioners: list[str], year: int) -> None:
        self.section(f"Funding {year}'s pensions: treasury, then fiscal -> expenditure")
        by_level = dict.fromkeys(("central", "province", "city", "county"), 0)
        monthly = 0
        for id_number in pensioners:
            p = self.ledger.participant(id_number)
            assert p.pension is not None
            b = p.pension.basic
            by_level["central"] += b.central_fen * 12
            by_level["province"] += b.province_fen * 12
            by_level["city"] += b.city_fen * 12
            # The county pays the long-contribution and age extras.
            by_level["county"] += (b.county_fen + b.long_contribution_fen + b.age_extra_fen) * 12
            monthly += b.total_fen() + p.pension.account_pension_fen
        for level, fen in by_level.items():
            self.treasury(fen, level, "basic_pension", date(year, 1, 8), f"TRS-{year}-BP-{level}")
        self.say("Basic-pension money from the treasury: " + ", ".join(
            f"{lvl} {format_yuan(fen)}" for lvl, fen in by_level.items()) + " yuan.")
        if self.payout is not None:
            self.say("Each month's funding appropriates that month's batch from the fiscal "
                     "special account to the expenditure account.")
            return
        plan = monthly * 12 + self.rules(year).funeral_grant_fen
        self.ledger.appropriate(amount_fen=plan, value_date=date(year, 1, 10),
                                reference=f"APR-{year}-01", actor=FINANCE)
        self.book(FISCAL, -plan, f"appropriation {year}")
        self.book(EXPENDITURE, plan, f"appropriation {year}")
        self.say(f"Spending plan appropriated to the expenditure account: {format_yuan(plan)} "
                 f"yuan ({len(pensioners)} pensions for 12 months and one funeral grant).")

    def paid_months(self, county: County, year: int, payout: MonthlyRun) -> None:
        """The first half of the pension year, paid month by month through the agent bank,
        with what happens to pensioners between the runs."""
        self.section(f"The monthly payout run, {year}-01 to {year}-06: drafted, approved by "
                     "a second person, funded, sent to the bank, answered")
        first, suspended = county.cast.elderly[0], county.cast.elderly[1]
        dead = county.cast.near_pension[0]
        self.month(payout, f"{year}-01", date(year, 1, 4), {}, first=True)
        self.month(payout, f"{year}-02", date(year, 2, 3), {first: "AC04"})
        self.ledger.change_bank_details(id_number=first, bank=BankAccount(
            account_name="领取人新账户", account_number="6222000088880001", bank_code="102"),
            actor=OPERATOR)
        self.say(f"  {self.masked(first)} opens a new account (bank details changed): the hold "
                 "is lifted, and the next run pays the failed month again (失败帐重发).")
        self.ledger.suspend(id_number=suspended, reason_code="no_proof_of_life",
                            from_month=f"{year}-03", actor=OPERATOR)
        self.say(f"  {self.masked(suspended)}: no proof of life in the verification cycle; "
                 f"suspended from {year}-03.")
        self.month(payout, f"{year}-03", date(year, 3, 3), {})
        self.back_dated_raise(year)
        # The pensioner who died on 10 February, not yet reported: the bank finds the
        # holder dead and sends April's payment back.
        self.month(payout, f"{year}-04", date(year, 4, 2), {dead: "MD07"})
        self.deaths(county, year)
        r = self.ledger.resume(id_number=suspended, from_month=f"{year}-06", actor=OPERATOR)
        arrears = r["result"]["arrears_months"]
        self.say(f"  {self.masked(suspended)}: proof of life given; resumed from {year}-06, "
                 f"{len(arrears)} months owed in arrears (补发): {', '.join(arrears)}.")
        self.month(payout, f"{year}-05", date(year, 5, 25), {})
        self.month(payout, f"{year}-06", date(year, 6, 12), {})

    def back_dated_raise(self, year: int) -> None:
        """A raise announced in the spring and back-dated to January, as most are: the
        next run tops up every month already paid (调待补发)."""
        raised = self.rules(year).county_part_raised(DEMO_RAISE_FEN)
        self.ledger.publish_rules(date(year, 1, 1), raised,
                                  f"county part raised by {format_yuan(DEMO_RAISE_FEN)} yuan "
                                  f"from {year}-01, announced in {year}-03", actor=ADMIN)
        self.say(f"  The county raises its part of the basic pension by "
                 f"{format_yuan(DEMO_RAISE_FEN)} yuan a month, announced in March and "
                 f"back-dated to January: the next run tops up every month already paid "
                 "(调待补发).")

    def month(self, payout: MonthlyRun, period: str, today: date,
              bank_fails: dict[str, str], first: bool = False) -> None:
        paid = payout.pay_month(period, today=today, bank_fails=bank_fails)
        self.book(FISCAL, -paid.total_fen, f"payout {period}")
        if paid.failed_fen:
            self.book(EXPENDITURE, paid.failed_fen, f"payout {period}: sent back by the bank")
        if first:
            self.refusals.append(f"the drafter approving their own batch: "
                                 f"{paid.maker_checker_refusal}")
            self.say(f"  [green]✓ refused[/] {OPERATOR} approving the batch {OPERATOR} "
                     f"drafted\n    [red]{escape(paid.maker_checker_refusal)}[/]")
            self.say(f"  {APPROVER} approves manifest {paid.manifest_sha256[:16]}...; "
                     f"{FINANCE} funds it; the bank's file (报盘, 0600): "
                     f"{escape(', '.join(paid.files))}")
        answered = f"{paid.payments - paid.failed} paid"
        if paid.failed:
            answered += (f", {paid.failed} sent back ({format_yuan(paid.failed_fen)} yuan "
                         "back in the expenditure account)")
        if paid.held:
            answered += f"; {paid.held} held until the account is corrected"
        if paid.death_checks:
            answered += f"; {paid.death_checks} pension suspended for a death check"
        changes = "; ".join(paid.reasons) or "no change"
        self.say(f"  {period}: {paid.payments} payments, {format_yuan(paid.total_fen)} yuan "
                 f"(against last month: {escape(changes)}); bank: {answered}; batch "
                 f"{paid.state}.")

    def suspension(self, county: County, year: int) -> None:
        self.section("Suspension and resumption")
        who = county.cast.elderly[1]
        self.ledger.suspend(id_number=who, reason_code="no_proof_of_life",
                            from_month=f"{year}-03", actor=OPERATOR)
        self.say(f"{self.masked(who)}: no proof of life in the verification cycle; suspended "
                 f"from {year}-03.")
        r = self.ledger.resume(id_number=who, from_month=f"{year}-06", actor=OPERATOR)
        arrears = r["result"]["arrears_months"]
        self.say(f"Proof of life given; resumed from {year}-06 with {len(arrears)} months "
                 f"owed in arrears (补发): {', '.join(arrears)}.")

    def deaths(self, county: County, year: int) -> None:
        self.section("A death reported late: overpayment, funeral grant, inheritance")
        who = county.cast.near_pension[0]
        died = self.ledger.decease(id_number=who, date_of_death=date(year, 2, 10),
                                   reported_on=date(year, 5, 6), actor=OPERATOR)
        p = self.ledger.participant(who)
        assert p.pension is not None
        monthly = p.pension.basic.total_fen() + p.pension.account_pension_fen
        if self.payout is None:
            months = [f"{year}-03", f"{year}-04", f"{year}-05"]
        else:  # what the monthly runs paid after the month of death and the bank kept
            months = sorted(m for m in p.paid_months if m > f"{year}-02")
            assert months, "the story pays the dead pensioner after the death"
        over = monthly * len(months)
        self.ledger.assess_overpayment(id_number=who, amount_fen=over, months=months,
                                       reason="pension paid after death (冒领)",
                                       value_date=date(year, 5, 6), actor=OPERATOR)
        self.say(f"{self.masked(who)} died {year}-02-10, reported {year}-05-06: "
                 f"{len(months)} month{'s' if len(months) > 1 else ''} paid after death "
                 f"({', '.join(months)}), {format_yuan(over)} yuan overpaid.")
        spouse = BankAccount(account_name="继承人(配偶)", account_number="6222000099990001",
                             bank_code="102")
        owed = died.get("result", {}).get("owed_at_death")
        if owed:
            # Payment stops from the month after death: the months up to it that were never
            # paid are the heirs', paid by the monthly run once they are named.
            self.ledger.change_payee(id_number=who, kind="pension_owed_at_death",
                                     payee="继承人(配偶)", payee_account=spouse, actor=OPERATOR)
            self.say(f"Never paid up to the month of death ({', '.join(owed['months'])}): "
                     f"{format_yuan(owed['amount_fen'])} yuan owed to the spouse, for the "
                     "monthly payout run.")
        r = self.ledger.award_funeral_grant(id_number=who, payee="继承人(配偶)",
                                            payee_account=spouse, value_date=date(year, 5, 20),
                                            actor=OPERATOR)
        grant, payable = r["result"]["amount_fen"], r["result"]["payable_fen"]
        self.say(f"The funeral grant of {format_yuan(grant)} yuan first recovers "
                 f"{format_yuan(grant - payable)} yuan overpaid; {format_yuan(payable)} yuan "
                 "is owed to the spouse, for the monthly payout run.")
        left = over - (grant - payable)
        offset = min(left, self.ledger.participant(who).balance_fen)
        if offset:
            self.ledger.recover_overpayment(id_number=who, amount_fen=offset,
                                            channel="offset_account",
                                            value_date=date(year, 5, 20), actor=OPERATOR)
            self.say(f"Recovered by offset against the individual account: "
                     f"{format_yuan(offset)} yuan.")
        if left > offset:
            self.ledger.recover_overpayment(id_number=who, amount_fen=left - offset,
                                            channel="family", value_date=date(year, 6, 3),
                                            actor=OPERATOR)
            self.book(EXPENDITURE, left - offset, "overpayment repaid by the family")
            self.say(f"Repaid by the family: {format_yuan(left - offset)} yuan.")
        r = self.ledger.settle_balance(id_number=who, how="inheritance", payee="继承人(配偶)",
                                       payee_account=spouse, value_date=date(year, 6, 10),
                                       actor=OPERATOR)
        self.say(f"The rest of the account is inherited: "
                 f"{format_yuan(r['result']['amount_fen'])} yuan to the heirs.")

        young = county.cast.young_death
        self.ledger.decease(id_number=young, date_of_death=date(year, 1, 20),
                            reported_on=date(year, 2, 1), actor=OPERATOR)
        self.ledger.terminate(id_number=young, reason_code="death",
                              effective_date=date(year, 1, 20), actor=OPERATOR)
        r = self.ledger.settle_balance(id_number=young, how="inheritance", payee="继承人(父母)",
                                       value_date=date(year, 2, 20), actor=OPERATOR)
        self.say(f"A contributor, {self.masked(young)}, died {year}-01-20; the participation "
                 f"ends and {format_yuan(r['result']['amount_fen'])} yuan is inherited.")

    def safety(self, county: County, years: tuple[int, ...], year: int) -> None:
        from ledger.money import parse_yuan

        self.section("The ledger's safety in action")
        day = date(year, 7, 1)
        self.refused("moving 100.00 yuan expenditure -> income (the law forbids it)",
                     lambda: self.ledger.transfer(from_account="expenditure",
                                                  to_account="income", amount_fen=10000,
                                                  value_date=day, reference="ILLEGAL-1",
                                                  actor=FINANCE))
        fiscal = self.ledger.fund_positions()[FISCAL]
        self.refused(f"appropriating {format_yuan(fiscal + 100)} yuan from a fiscal special "
                     f"account holding {format_yuan(fiscal)} (an overdraft)",
                     lambda: self.ledger.appropriate(amount_fen=fiscal + 100, value_date=day,
                                                     reference="OVERDRAFT-1", actor=FINANCE))
        dead = county.cast.young_death
        self.refused("a contribution for a resident recorded dead",
                     lambda: self.ledger.contribute(
                         id_number=dead, year=year, tier_fen=10000, amount_fen=10000,
                         channel="bank", receipt_no=f"R{year}-DEAD", value_date=day,
                         actor=OPERATOR))
        self.refused("an amount of 1.234 yuan (more than 2 decimals)",
                     lambda: parse_yuan("1.234", "amount"))
        self.correction(county, year)
        again = self.ledger.sweep(amount_fen=self.bookings_for(f"sweep {years[-1]}-12"),
                                  value_date=date(years[-1], 12, 31),
                                  reference=f"SWP-{years[-1]}-12", actor=FINANCE)
        assert again.get("replayed") is True, again
        self.say(f"  [green]✓ replayed[/] a retried sweep SWP-{years[-1]}-12 returned the "
                 "first result and booked nothing twice")

    def correction(self, county: County, year: int) -> None:
        """A contribution booked at the wrong tier is reversed, never edited: refunded from
        the income account, then booked again right, and the income account swept."""
        changed = {c.id_number for c in county.group_changes} | {
            county.cast.becomes_poor, county.cast.young_death, *county.cast.near_pension,
            *county.cast.elderly}
        who = next((p.id_number for p in county.people
                    if p.identity_group == "ordinary" and p.id_number not in changed
                    and p.birth_date.year + 60 > year and p.enrol_date.year < year), None)
        if who is None:  # a county too small to have an ordinary contributor left
            return
        day, wrong, right = date(year, 3, 2), 20000, 50000
        self.ledger.contribute(id_number=who, year=year, tier_fen=wrong, amount_fen=wrong,
                               channel="bank", receipt_no=f"R{year}-FIX-1", value_date=day,
                               actor=OPERATOR)
        self.book(INCOME, wrong, "correction: a contribution booked at the wrong tier")
        r = self.ledger.reverse_contribution(id_number=who, year=year,
                                             reason="booked at tier 200 instead of 500",
                                             value_date=date(year, 3, 4), actor=FINANCE)
        self.book(INCOME, -r["result"]["refunded_fen"], "correction: its reversal")
        self.ledger.contribute(id_number=who, year=year, tier_fen=right, amount_fen=right,
                               channel="bank", receipt_no=f"R{year}-FIX-2",
                               value_date=date(year, 3, 4), actor=OPERATOR)
        self.book(INCOME, right, "correction: the contribution booked again")
        self.sweep(right, date(year, 3, 31), f"SWP-{year}-03", f"sweep {year}-03")
        self.say(f"  [green]✓ corrected[/] {self.masked(who)}'s {year} contribution, booked at "
                 f"{format_yuan(wrong)} yuan instead of {format_yuan(right)}: reversed "
                 f"(冲正, {format_yuan(r['result']['refunded_fen'])} yuan back to the payer "
                 "from the income account), never edited, then booked again")

    def bookings_for(self, what: str) -> int:
        return next(b.amount_fen for b in self.bookings if b.what == what and b.amount_fen > 0)

    def show_statement(self, county: County) -> None:
        from ledger.cli import redact, render_statement, statement_payload

        self.section("A pensioner's statement" + ("" if self.unmask else " (masked)"))
        who = county.cast.near_pension[1]
        payload = redact(statement_payload(self.ledger, who, None, self.unmask), self.unmask)
        render_statement(self.console, payload)

    def show_balances(self) -> dict[str, int]:
        from ledger.cli import balance_rows, balances_payload, render_balances

        self.section("Fund balances, reconciled with what the demo booked")
        payload = balances_payload(balance_rows(self.ledger))
        render_balances(self.console, payload)
        positions = {r["account"]: r["balance_fen"] for r in payload["accounts"]}
        booked = dict.fromkeys(GUARDED_ACCOUNTS, 0)
        for b in self.bookings:
            booked[b.account] += b.amount_fen
        table = Table(title="Booked by the demo vs the ledger, yuan", title_justify="left")
        for col in ("account", "booked", "ledger", ""):
            table.add_column(col, justify="right" if col in ("booked", "ledger") else "left")
        for account in GUARDED_ACCOUNTS:
            ok = booked[account] == positions[account]
            table.add_row(f"{account} {escape(ACCOUNT_NAMES[account])}",
                          format_yuan(booked[account]), format_yuan(positions[account]),
                          "[green]✓[/]" if ok else "[red]✗[/]")
        self.console.print(table)
        return positions

    def show_audit(self, on: date) -> dict[str, Any]:
        from ledger.audit import anomalies
        from ledger.cli import verify_payload

        self.section("Audit: the hash chain over every stored event, and anomalies")
        audit = verify_payload(self.ledger)
        if audit["ok"]:
            self.say(f"[green]✓ verified[/] {audit['events']} events in {audit['blocks']} "
                     f"blocks; head {audit['head_sha256']} (keep it outside the system).")
        else:
            for problem in audit["problems"]:
                self.say(f"[red]✗ {escape(problem)}[/]")
        # What audits of the scheme keep finding, looked for in the registers written with
        # the events, at the end of the demo's last year (its dates are fixed, not today's).
        found = anomalies(self.ledger, on)
        audit["anomalies"] = found["counts"]
        counts = ", ".join(f"{kind.replace('_', ' ')} {n}" for kind, n in found["counts"].items())
        self.say(f"Anomalies on {on.isoformat()} among {found['pensioners_checked']} pensioners "
                 f"and {found['participants_checked']} participants who died, left or are in "
                 f"a hardship group (`audit anomalies --on {on.isoformat()}`): {counts}.")
        for item in found["anomalies"]["hardship_without_on_behalf"][:3]:
            self.say(f"  {self.masked(item['id_number'])} ({item['identity_group']}): nothing "
                     f"booked for {item['year']}, so nothing was paid on their behalf (代缴).")
        return audit


def run_demo(ledger: Ledger, *, participants: int = 2000, workdir: Path,
             console: Console, unmask: bool = False,
             years: tuple[int, ...] = DEFAULT_YEARS,
             payout: MonthlyRun | None = None) -> DemoResult:
    """Run the whole scenario on an empty ledger and return what was booked and found."""
    return Demo(ledger, console, workdir, unmask, payout=payout).run(participants, years)
