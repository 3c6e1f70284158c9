"""Participant (参保人): one resident's enrolment, individual account and pension.

The individual account (个人账户) keeps each source as its own sub-balance, because
refunds and inheritance treat sources differently.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger.aggregates.base import Aggregate, Immutable
from ledger.errors import InvalidInput, Refused
from ledger.money import format_yuan
from ledger.resident_id import age_on
from ledger.rules import IDENTITY_GROUPS, SUBSIDY_LEVELS, Parameters, RuleVersion

# Sources of the individual account. The split is never lost.
SOURCES = (
    "contribution",          # 个人缴费 (including back-payment 补缴)
    "subsidy_province",      # 缴费补贴, by funding level
    "subsidy_city",
    "subsidy_county",
    "collective",            # 集体补助 and other donations
    "on_behalf",             # 代缴 by the government for hardship groups
    "interest",              # 记账利息
)
SUBSIDY_SOURCES = ("subsidy_province", "subsidy_city", "subsidy_county", "on_behalf")

Status = Literal["enrolled", "pensioner", "suspended", "deceased", "terminated"]
CHANNELS = ("bank", "cash", "township_station", "online", "import")
SUSPEND_REASONS = ("no_proof_of_life", "imprisoned", "bank_return", "death_check", "other")
TERMINATE_REASONS = ("death", "emigration", "employee_scheme", "transfer_out", "double_enrolment")
MAX_CONTRIBUTION_YEARS = 80
# Bank return reasons: account problems hold payment until the details change; a deceased
# holder suspends the pension and opens a death check.
HOLD_REASONS = ("AC01", "AC04", "AC06", "AG01", "BE01", "RC01", "RR01")
DEATH_CHECK_REASONS = ("MD07",)
MAX_BOOKINGS = 100_000
MAX_REASON_CHARS = 200
# A fine for obtaining the pension by fraud: two to five times what was obtained (Social
# Insurance Law, art. 88). A decision or payment reference is at most this long.
FINE_MIN_MULTIPLE, FINE_MAX_MULTIPLE = 2, 5
MAX_DECISION_NO_LEN = 64


class BankAccount(Immutable):
    account_name: str
    account_number: str
    bank_code: str


# [0-9], not \d: \d is any Unicode digit (fullwidth "６２２２..."), which no bank takes.
_ACCOUNT_NUMBER = re.compile(r"[0-9]{8,32}")
_BANK_CODE = re.compile(r"[0-9A-Za-z]{3,12}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
MAX_ACCOUNT_NAME_CHARS = 60  # the bank files' creditor name


def checked_bank_account(account_name: str, account_number: str, bank_code: str
                         ) -> BankAccount:
    """A bank account as an office gives it (a command, an import line), refused naming the
    field unless a bank file can carry it. Not a validator of BankAccount: accounts stored
    before these rules are still read."""
    name, number, code = account_name.strip(), account_number.strip(), bank_code.strip()
    if not name or len(name) > MAX_ACCOUNT_NAME_CHARS or _CONTROL.search(name):
        raise InvalidInput("account_name", f"must be 1 to {MAX_ACCOUNT_NAME_CHARS} characters "
                           "with no control characters")
    if not _ACCOUNT_NUMBER.fullmatch(number):
        raise InvalidInput("account_number", "must be 8 to 32 digits")
    if not _BANK_CODE.fullmatch(code):
        raise InvalidInput("bank_code", "must be 3 to 12 letters or digits")
    return BankAccount(account_name=name, account_number=number, bank_code=code)


# One-off sums owed to a payee and paid by the monthly run through the bank: the funeral
# grant (丧葬补助金), the inherited balance, a refunded balance, and the pension a pensioner
# was owed at death (the months up to and including the month of death never paid).
ONE_OFF_KINDS = ("funeral_grant", "inheritance", "refund", "pension_owed_at_death")
OWED_AT_DEATH = "pension_owed_at_death"


class Payable(Immutable):
    """A one-off sum owed; `paid_by` names the payment that carries it, once sent."""

    kind: str
    amount_fen: int
    payee: str
    payee_account: BankAccount | None
    paid_by: str | None = None
    hold: str | None = None  # a bank return reason, until the payee's details change


class Booking(Immutable):
    """One change to one source of the individual account."""

    value_date: date
    source: str
    amount_fen: int
    kind: str
    # A reversal voids the interest of what it reverses: it earns (negatively) from the
    # reversed booking's date, not its own.
    earns_from: date | None = None


class BasicPensionComponents(Immutable):
    central_fen: int
    province_fen: int
    city_fen: int
    county_fen: int
    long_contribution_fen: int
    age_extra_fen: int

    def total_fen(self) -> int:
        return (self.central_fen + self.province_fen + self.city_fen + self.county_fen
                + self.long_contribution_fen + self.age_extra_fen)


def participant_id(id_number: str) -> UUID:
    """One resident ID is one participant: the id is derived from it, so a second
    enrolment of the same ID collides in the event store and is refused."""
    return uuid5(NAMESPACE_URL, f"pension-ledger:participant:{id_number}")


def month_after(d: date) -> str:
    y, m = (d.year, d.month + 1) if d.month < 12 else (d.year + 1, 1)
    return f"{y:04d}-{m:02d}"


def parse_month(text: str, field: str) -> tuple[int, int]:
    try:
        y, m = text.split("-")
        year, month = int(y), int(m)
        if len(y) != 4 or len(m) != 2 or not 1 <= month <= 12:
            raise ValueError
    except ValueError:
        raise InvalidInput(field, f"{text!r} is not a month in the form YYYY-MM") from None
    return year, month


def basic_by_month_of(months: Sequence[str], basic_fen: int, basic_by_month: dict[str, int],
                      rerated_fen: dict[str, int]) -> dict[str, int]:
    """The basic pension a payment paid for each of its own months: basic_by_month when
    given, else all of it (less the top-ups) for its one month. A payment of several months
    stored without basic_by_month (before it was recorded) is split evenly, the remainder
    on the last month."""
    owed = basic_fen - sum(rerated_fen.values())
    if basic_by_month:
        assert sorted(basic_by_month) == sorted(months), (basic_by_month, months)
        assert sum(basic_by_month.values()) == owed, (basic_by_month, owed)
        return dict(basic_by_month)
    if not months:
        assert owed == 0, (months, owed)
        return {}
    share, rest = divmod(owed, len(months))
    out = dict.fromkeys(months, share)
    out[months[-1]] += rest
    return out


def add_basic_paid(basic_paid: dict[str, int], months: Sequence[str], basic_fen: int,
                   basic_by_month: dict[str, int], rerated_fen: dict[str, int],
                   sign: int) -> None:
    """Add (sign 1) or take back (sign -1) a payment's basic pension, month by month."""
    parts = basic_by_month_of(months, basic_fen, basic_by_month, rerated_fen)
    for m, fen in [*parts.items(), *rerated_fen.items()]:
        total = basic_paid.get(m, 0) + sign * fen
        assert total >= 0, (m, total)
        if total:
            basic_paid[m] = total
        else:
            basic_paid.pop(m, None)


def _book_basic_paid(p: Any, e: Any) -> None:
    """A payment's basic pension, month by month (PensionPaid, PensionOwedAtDeath), and the
    rule-set version every month paid is then rated by, when the payment says."""
    add_basic_paid(p.basic_paid, e.months, e.basic_fen, e.basic_by_month, e.rerated_fen, 1)
    if e.rated_version:
        p.rated_version = e.rated_version


def basic_pension_components(params: Parameters, born: date, start_month: str,
                             contribution_years: int) -> BasicPensionComponents:
    bp = params.basic_pension
    y, m = parse_month(start_month, "start_month")
    age = age_on(born, date(y, m, 1))
    age_extra = 0
    for extra in bp.age_extras:
        if age >= extra.min_age:
            age_extra = max(age_extra, extra.extra_fen)
    long_years = max(0, contribution_years - params.min_contribution_years)
    return BasicPensionComponents(
        central_fen=bp.central_fen, province_fen=bp.province_fen, city_fen=bp.city_fen,
        county_fen=bp.county_fen,
        long_contribution_fen=long_years * bp.long_contribution_per_year_fen,
        age_extra_fen=age_extra,
    )


class Participant(Aggregate):
    if TYPE_CHECKING:  # state set by the events' apply(); not constructor fields
        id_number: str
        name: str
        birth_date: date
        status: Status
        sources: dict[str, int]
        bookings: list[Booking]
        contributed_years: dict[int, tuple[str, int, bool]]
        # Per contribution year: (amount paid, value date); on behalf = tier - amount.
        contribution_money: dict[int, tuple[int, date]]
        receipts: set[str]
        interest_years: dict[int, int]       # per year credited: the amount
        interest_rates: dict[int, Decimal]   # and the rate it was credited at
        # Per subsidised year and level: (amount credited, value date).
        subsidy_money: dict[int, dict[str, tuple[int, date]]]
        subsidy_reversals: dict[int, int]  # per year: how often its subsidy was reversed
        township: str
        village: str
        enrol_date: date
        identity_groups: list[tuple[date, str]]
        bank: BankAccount | None
        pension: Participant.PensionApproved | None
        pension_application: tuple[str, str] | None
        suspension: tuple[str, str] | None
        date_of_death: date | None
        termination: tuple[str, date] | None
        overpayment_fen: int
        overpaid_fen: int                    # every overpayment ever assessed
        fine_decisions: set[str]             # the decisions fines were imposed by
        fined_fen: int                       # of overpaid_fen, what fines were imposed on
        fines_outstanding_fen: int           # imposed, not yet paid to the treasury
        closed: bool
        paid_months: dict[str, str]
        forfeited_months: set[str]
        basic_paid: dict[str, int]
        rated_version: int
        payment_hold: str | None
        payables: dict[str, Payable]
        funeral_grant_fen: int | None

    # ---- events -------------------------------------------------------------------

    class Enrolled(Aggregate.Created):
        id_number: str
        name: str
        birth_date: date
        township: str
        village: str
        identity_group: str
        enrol_date: date
        bank: BankAccount | None = None

        def apply(self, p: Any) -> None:
            p.id_number = self.id_number
            p.name = self.name
            p.birth_date = self.birth_date
            p.township = self.township
            p.village = self.village
            p.enrol_date = self.enrol_date
            p.identity_groups = [(self.enrol_date, self.identity_group)]
            p.bank = self.bank
            p.status = "enrolled"
            p.sources = dict.fromkeys(SOURCES, 0)
            p.bookings = []
            p.contributed_years = {}
            p.contribution_money = {}
            p.receipts = set()
            p.interest_years = {}
            p.interest_rates = {}
            p.subsidy_money = {}
            p.subsidy_reversals = {}
            p.pension = None
            p.pension_application = None
            p.suspension = None
            p.date_of_death = None
            p.termination = None
            p.overpayment_fen = 0
            p.overpaid_fen = 0
            p.fine_decisions = set()
            p.fined_fen = 0
            p.fines_outstanding_fen = 0
            p.closed = False
            p.paid_months = {}
            p.forfeited_months = set()
            # The basic pension paid for each month (its own month's payment plus any
            # top-ups since), and the rule-set version as of which every month paid is
            # known to be paid in full (0: unknown, every month is checked).
            p.basic_paid = {}
            p.rated_version = 0
            p.payment_hold = None
            p.payables = {}
            p.funeral_grant_fen = None

    class MoneyEvent(Aggregate.Event):
        value_date: date

        def book(self, p: Any, source: str, amount_fen: int, kind: str) -> None:
            p.sources[source] += amount_fen
            assert p.sources[source] >= 0, (source, p.sources[source])
            p.bookings.append(Booking(value_date=self.value_date, source=source,
                                      amount_fen=amount_fen, kind=kind))

    class ContributionReceived(MoneyEvent):
        year: int
        tier_fen: int
        amount_fen: int
        channel: str
        receipt_no: str
        back_payment: bool = False
        rule_version: str

        def apply(self, p: Any) -> None:
            self.book(p, "contribution", self.amount_fen,
                      "back_payment" if self.back_payment else "contribution")
            p.contributed_years[self.year] = (self.receipt_no, self.tier_fen, self.back_payment)
            p.contribution_money[self.year] = (self.amount_fen, self.value_date)
            p.receipts.add(self.receipt_no)

    class PaidOnBehalf(MoneyEvent):
        year: int
        amount_fen: int
        identity_group: str
        rule_version: str

        def apply(self, p: Any) -> None:
            self.book(p, "on_behalf", self.amount_fen, "on_behalf")

    class ContributionReversed(MoneyEvent):
        """A contribution booked in error, reversed (冲正): the amount paid goes back to
        the payer through the income account (the channel it came by), the government's
        payment on their behalf back to its receivable, and the year may be booked again.
        The receipt stays used: a corrected booking has a receipt of its own."""

        year: int
        receipt_no: str
        amount_fen: int
        on_behalf_fen: int
        back_payment: bool
        reason: str

        def apply(self, p: Any) -> None:
            booked_on = p.contribution_money.pop(self.year)[1]
            for source, amount in (("contribution", self.amount_fen),
                                   ("on_behalf", self.on_behalf_fen)):
                if amount:
                    self.book(p, source, -amount, "reversed")
                    p.bookings[-1] = p.bookings[-1].model_copy(
                        update={"earns_from": booked_on})
            del p.contributed_years[self.year]

    class SubsidyCredited(MoneyEvent):
        year: int
        level: str
        amount_fen: int
        rule_version: str

        def apply(self, p: Any) -> None:
            self.book(p, f"subsidy_{self.level}", self.amount_fen, "subsidy")
            p.subsidy_money.setdefault(self.year, {})[self.level] = (self.amount_fen,
                                                                     self.value_date)

    class SubsidyReversed(MoneyEvent):
        """A level's subsidy for a year, credited on a contribution booked in error (or at
        the wrong tier), reversed: the government no longer owes it. The year may then be
        subsidised again, once its contribution is right."""

        year: int
        level: str
        amount_fen: int
        reason: str

        def apply(self, p: Any) -> None:
            by_level = p.subsidy_money[self.year]
            credited_on = by_level.pop(self.level)[1]
            self.book(p, f"subsidy_{self.level}", -self.amount_fen, "reversed")
            p.bookings[-1] = p.bookings[-1].model_copy(update={"earns_from": credited_on})
            if not by_level:
                del p.subsidy_money[self.year]
                p.subsidy_reversals[self.year] = p.subsidy_reversals.get(self.year, 0) + 1

    class CollectiveSubsidyCredited(MoneyEvent):
        year: int
        amount_fen: int
        payer: str
        receipt_no: str

        def apply(self, p: Any) -> None:
            self.book(p, "collective", self.amount_fen, "collective")
            p.receipts.add(self.receipt_no)

    class InterestCredited(MoneyEvent):
        year: int
        rate: Decimal
        amount_fen: int
        rule_version: str

        def apply(self, p: Any) -> None:
            if self.amount_fen:
                self.book(p, "interest", self.amount_fen, "interest")
            p.interest_years[self.year] = self.amount_fen
            p.interest_rates[self.year] = self.rate

    class InterestReversed(MoneyEvent):
        """A year's interest credited in error (a wrong rate in the rule set), reversed on
        the value date it was credited on, so the year nets to nothing in every statement
        and balance as of any date; the year may then be credited again."""

        year: int
        rate: Decimal
        amount_fen: int
        reason: str

        def apply(self, p: Any) -> None:
            if self.amount_fen:
                self.book(p, "interest", -self.amount_fen, "interest")
            del p.interest_years[self.year]
            del p.interest_rates[self.year]

    class IdentityGroupChanged(Aggregate.Event):
        identity_group: str
        effective_from: date

        def apply(self, p: Any) -> None:
            p.identity_groups.append((self.effective_from, self.identity_group))
            # By date only: a stable sort keeps same-day changes in the order recorded.
            p.identity_groups.sort(key=lambda entry: entry[0])

    class BankDetailsChanged(Aggregate.Event):
        bank: BankAccount

        def apply(self, p: Any) -> None:
            p.bank = self.bank
            # New bank details lift a hold put on by a bank's return (AC01/AC04).
            p.payment_hold = None

    class PensionApplied(Aggregate.Event):
        start_month: str

        def apply(self, p: Any) -> None:
            p.pension_application = (self.start_month, self.actor)

    class PensionApproved(Aggregate.Event):
        start_month: str
        basic: BasicPensionComponents
        account_balance_fen: int
        account_pension_fen: int
        contribution_years: int
        transitional: bool
        rule_version: str

        def apply(self, p: Any) -> None:
            p.status = "pensioner"
            p.pension = self
            p.pension_application = None

    class PensionRevoked(Aggregate.Event):
        """A pension approved in error, undone before anything was paid on it: the
        participant is enrolled again, and may apply again."""

        reason: str

        def apply(self, p: Any) -> None:
            p.status = "enrolled"
            p.pension = None

    class Suspended(Aggregate.Event):
        reason_code: str
        from_month: str

        def apply(self, p: Any) -> None:
            p.status = "suspended"
            p.suspension = (self.reason_code, self.from_month)

    class Resumed(Aggregate.Event):
        from_month: str
        arrears_months: list[str]
        forfeited_months: list[str] = []

        def apply(self, p: Any) -> None:
            p.status = "pensioner"
            p.suspension = None
            p.forfeited_months.update(self.forfeited_months)

    class Died(Aggregate.Event):
        date_of_death: date
        reported_on: date

        def apply(self, p: Any) -> None:
            p.status = "deceased"
            p.date_of_death = self.date_of_death

    class Terminated(Aggregate.Event):
        reason_code: str
        effective_date: date

        def apply(self, p: Any) -> None:
            if p.status != "deceased":
                p.status = "terminated"
            p.termination = (self.reason_code, self.effective_date)

    class BalanceSettled(MoneyEvent):
        """The account paid out: refunded to the participant or inherited by heirs."""

        how: Literal["refund", "inheritance"]
        by_source_fen: dict[str, int]
        forfeited_by_source_fen: dict[str, int]
        payee: str
        payee_account: BankAccount | None = None

        def apply(self, p: Any) -> None:
            for src, amt in self.by_source_fen.items():
                if amt:
                    self.book(p, src, -amt, self.how)
            for src, amt in self.forfeited_by_source_fen.items():
                if amt:
                    self.book(p, src, -amt, "forfeited_to_pool")
            p.closed = True
            paid = sum(self.by_source_fen.values())
            if paid:
                p.payables[self.how] = Payable(kind=self.how, amount_fen=paid, payee=self.payee,
                                               payee_account=self.payee_account)

    class FuneralGrantAwarded(MoneyEvent):
        """The funeral grant (丧葬补助金), less any overpayment it offsets (冒领 first)."""

        amount_fen: int                # the grant by the rules in force on the date of death
        offset_overpayment_fen: int    # recovered from the grant before it is paid
        payee: str
        payee_account: BankAccount | None
        rule_version: str

        def apply(self, p: Any) -> None:
            p.funeral_grant_fen = self.amount_fen
            p.overpayment_fen -= self.offset_overpayment_fen
            assert p.overpayment_fen >= 0
            net = self.amount_fen - self.offset_overpayment_fen
            assert net >= 0
            if net:
                p.payables["funeral_grant"] = Payable(
                    kind="funeral_grant", amount_fen=net, payee=self.payee,
                    payee_account=self.payee_account)

    class PayeeDetailsChanged(Aggregate.Event):
        """Who receives a one-off payment, and where; lifts a bank return's hold."""

        kind: str
        payee: str
        payee_account: BankAccount

        def apply(self, p: Any) -> None:
            old = p.payables[self.kind]
            p.payables[self.kind] = old.model_copy(update={
                "payee": self.payee, "payee_account": self.payee_account, "hold": None})

    class OneOffPaid(MoneyEvent):
        """A one-off payable put in flight to the bank by a payout batch."""

        kind: str
        batch_id: UUID
        end_to_end_id: str
        amount_fen: int

        def apply(self, p: Any) -> None:
            old = p.payables[self.kind]
            assert old.paid_by is None and old.amount_fen == self.amount_fen, (old, self)
            p.payables[self.kind] = old.model_copy(update={"paid_by": self.end_to_end_id})

    class OneOffPaymentReversed(MoneyEvent):
        """The bank failed or returned a one-off payment: it is owed again."""

        kind: str
        end_to_end_id: str
        amount_fen: int
        reason_code: str
        after_settlement: bool

        def apply(self, p: Any) -> None:
            old = p.payables[self.kind]
            assert old.paid_by == self.end_to_end_id, (old, self)
            # Wrong account or a deceased payee: hold until the payee's details change.
            hold = (self.reason_code
                    if self.reason_code in HOLD_REASONS + DEATH_CHECK_REASONS else None)
            p.payables[self.kind] = old.model_copy(update={"paid_by": None, "hold": hold})

    class OverpaymentAssessed(MoneyEvent):
        amount_fen: int
        months: list[str]
        reason: str

        def apply(self, p: Any) -> None:
            p.overpayment_fen += self.amount_fen
            p.overpaid_fen += self.amount_fen

    class OverpaymentRecovered(MoneyEvent):
        amount_fen: int
        channel: Literal["offset_account", "family"]
        by_source_fen: dict[str, int]

        def apply(self, p: Any) -> None:
            p.overpayment_fen -= self.amount_fen
            assert p.overpayment_fen >= 0
            for src, amt in self.by_source_fen.items():
                if amt:
                    self.book(p, src, -amt, "overpayment_offset")

    class FineImposed(MoneyEvent):
        """A fine for obtaining the pension by fraud (骗取社会保险待遇): two to five times
        what was obtained, by the administrative department's decision. It is the
        treasury's money, not the fund's: memorandum postings only."""

        amount_fen: int
        defrauded_fen: int
        decision_no: str

        def apply(self, p: Any) -> None:
            p.fine_decisions.add(self.decision_no)
            p.fined_fen += self.defrauded_fen
            p.fines_outstanding_fen += self.amount_fen

    class FinePaid(MoneyEvent):
        """A fine (or part of one) paid to the treasury."""

        amount_fen: int
        reference: str

        def apply(self, p: Any) -> None:
            p.fines_outstanding_fen -= self.amount_fen
            assert p.fines_outstanding_fen >= 0

    class PensionPaid(MoneyEvent):
        """A pension payment for one or more months, put in flight to the bank."""

        batch_id: UUID
        end_to_end_id: str
        months: list[str]
        basic_fen: int
        account_by_source_fen: dict[str, int]
        pooled_account_fen: int      # the account part the pool pays once the account is empty
        deduction_fen: int           # overpayment recovered from this payment
        amount_fen: int              # what the bank pays out
        rule_version: str
        # The basic pension by month when the payment covers several (else all of
        # basic_fen less the top-ups is its one month's); top-ups of months paid before,
        # after a rule version raised their basic pension (included in basic_fen); and the
        # rule-set version as of which every month paid is now paid in full.
        basic_by_month: dict[str, int] = {}
        rerated_fen: dict[str, int] = {}
        rated_version: int = 0

        def apply(self, p: Any) -> None:
            for m in self.months:
                assert m not in p.paid_months, m
                p.paid_months[m] = self.end_to_end_id
            for src, amt in sorted(self.account_by_source_fen.items()):
                if amt:
                    self.book(p, src, -amt, "pension")
            p.overpayment_fen -= self.deduction_fen
            assert p.overpayment_fen >= 0
            _book_basic_paid(p, self)

    class PensionOwedAtDeath(MoneyEvent):
        """Months of pension a pensioner was owed when they died (payment stops only from
        the month after death) and never paid: settled into a payable to the heirs, which
        the monthly run pays like the other one-offs once they are named (change_payee).
        The months count as settled from here on, so no run owes them again."""

        months: list[str]
        basic_fen: int
        account_by_source_fen: dict[str, int]
        pooled_account_fen: int
        deduction_fen: int
        amount_fen: int              # what the heirs are owed
        rule_versions: list[str]
        basic_by_month: dict[str, int] = {}   # as PensionPaid's
        rerated_fen: dict[str, int] = {}
        rated_version: int = 0

        def apply(self, p: Any) -> None:
            for m in self.months:
                assert m not in p.paid_months and m not in p.forfeited_months, m
                p.paid_months[m] = OWED_AT_DEATH
            for src, amt in sorted(self.account_by_source_fen.items()):
                if amt:
                    self.book(p, src, -amt, "pension")
            p.overpayment_fen -= self.deduction_fen
            assert p.overpayment_fen >= 0
            _book_basic_paid(p, self)
            old = p.payables.get(OWED_AT_DEATH)
            if old is None:
                p.payables[OWED_AT_DEATH] = Payable(kind=OWED_AT_DEATH,
                                                    amount_fen=self.amount_fen, payee="",
                                                    payee_account=None)
            else:  # owed again after a bank returned a payment: one payable, not two
                assert old.paid_by is None, old
                p.payables[OWED_AT_DEATH] = old.model_copy(
                    update={"amount_fen": old.amount_fen + self.amount_fen})

    class PensionPaymentReversed(MoneyEvent):
        """The bank failed or returned a payment: the months are owed again."""

        end_to_end_id: str
        months: list[str]
        basic_fen: int
        account_by_source_fen: dict[str, int]
        pooled_account_fen: int
        deduction_fen: int
        amount_fen: int
        reason_code: str
        after_settlement: bool
        basic_by_month: dict[str, int] = {}   # the reversed payment's
        rerated_fen: dict[str, int] = {}

        def apply(self, p: Any) -> None:
            for m in self.months:
                assert p.paid_months.get(m) == self.end_to_end_id, m
                del p.paid_months[m]
            add_basic_paid(p.basic_paid, self.months, self.basic_fen, self.basic_by_month,
                           self.rerated_fen, -1)
            if self.rerated_fen:
                # Top-ups came back: which months are short is known (basic_paid), not
                # since which version; every month is checked again.
                p.rated_version = 0
            for src, amt in sorted(self.account_by_source_fen.items()):
                if amt:
                    self.book(p, src, amt, "pension_reversed")
            p.overpayment_fen += self.deduction_fen
            if self.reason_code in HOLD_REASONS:
                p.payment_hold = self.reason_code
            if self.reason_code in DEATH_CHECK_REASONS and p.status == "pensioner":
                p.status = "suspended"
                p.suspension = ("death_check", min(self.months))

    # ---- queries ------------------------------------------------------------------

    @property
    def subsidised_years(self) -> set[int]:
        """The years whose subsidy is credited (and not reversed)."""
        return set(self.subsidy_money)

    @property
    def balance_fen(self) -> int:
        total = sum(self.sources.values())
        assert total >= 0
        return total

    @property
    def identity_group(self) -> str:
        return self.identity_groups[-1][1]

    def identity_group_on(self, on: date) -> str:
        group = self.identity_groups[0][1]
        for since, g in self.identity_groups:
            if since <= on:
                group = g
        return group

    def balance_on(self, on: date) -> dict[str, int]:
        """Each source as of a value date."""
        out = dict.fromkeys(SOURCES, 0)
        for b in self.bookings:
            if b.value_date <= on:
                out[b.source] += b.amount_fen
        return out

    # ---- commands -----------------------------------------------------------------

    @classmethod
    def enrol(cls, *, id_number: str, name: str, birth_date: date, township: str, village: str,
              identity_group: str, enrol_date: date, bank: BankAccount | None,
              params: Parameters, actor: str) -> Participant:
        if not name.strip() or len(name) > 100:
            raise InvalidInput("name", "must be 1 to 100 characters")
        for field, value in (("township", township), ("village", village)):
            if not value.strip() or len(value) > 100:
                raise InvalidInput(field, "must be 1 to 100 characters")
        if identity_group not in IDENTITY_GROUPS:
            raise InvalidInput("identity_group", f"must be one of {', '.join(IDENTITY_GROUPS)}")
        if enrol_date < birth_date:
            raise InvalidInput("enrol_date", "is before the birth date in the ID")
        age = age_on(birth_date, enrol_date)
        if age < params.min_enrol_age:
            raise Refused("id_number", f"participant is {age}; enrolment needs age "
                          f"{params.min_enrol_age} or over")
        return cls._create(cls.Enrolled, id=participant_id(id_number), id_number=id_number,
                           name=name.strip(), birth_date=birth_date, township=township.strip(),
                           village=village.strip(), identity_group=identity_group,
                           enrol_date=enrol_date, bank=bank, actor=actor)

    def _require_open(self, field: str = "participant") -> None:
        if self.status in ("deceased", "terminated"):
            raise Refused(field, f"participant is {self.status}; no money may be booked")

    def receive_contribution(self, *, year: int, tier_fen: int, amount_fen: int, channel: str,
                             receipt_no: str, value_date: date, back_payment: bool,
                             rules: RuleVersion, actor: str) -> None:
        check_contribution(
            status=self.status, birth_date=self.birth_date,
            contributed_years=self.contributed_years,
            receipts=self.receipts, identity_group=self.identity_group_on(value_date),
            year=year, tier_fen=tier_fen, amount_fen=amount_fen, channel=channel,
            receipt_no=receipt_no, value_date=value_date, back_payment=back_payment, rules=rules)
        self.trigger_event(self.ContributionReceived, year=year, tier_fen=tier_fen,
                           amount_fen=amount_fen, channel=channel, receipt_no=receipt_no,
                           value_date=value_date, back_payment=back_payment,
                           rule_version=rules.label, actor=actor)
        on_behalf = tier_fen - amount_fen
        if on_behalf:
            self.trigger_event(self.PaidOnBehalf, year=year, amount_fen=on_behalf,
                               identity_group=self.identity_group_on(value_date),
                               value_date=value_date, rule_version=rules.label, actor=actor)

    def reverse_contribution(self, *, year: int, reason: str, value_date: date,
                             actor: str) -> tuple[int, int]:
        """Reverse the year's contribution, booked in error; returns (amount refunded to
        the payer, amount given back to the on-behalf receivable). Only while nothing was
        built on it: no subsidy credited for the year, no interest credited for a year it
        was held in, no pension applied for, the account not settled."""
        booked = self.contributed_years.get(year)
        if booked is None:
            raise Refused("year", f"no contribution is booked for {year}")
        if not reason.strip() or len(reason) > MAX_REASON_CHARS:
            raise InvalidInput("reason", f"must say why, in 1 to {MAX_REASON_CHARS} characters")
        amount, booked_on = self.contribution_money[year]
        on_behalf = booked[1] - amount  # the tier less what the payer paid
        if value_date < booked_on:
            raise InvalidInput("value_date", f"is before the contribution's value date "
                               f"({booked_on.isoformat()})")
        if year in self.subsidised_years:
            raise Refused("year", f"the {year} subsidy was credited on this contribution; "
                          "reverse it first (reverse-subsidy)")
        self._refuse_if_built_on(booked_on, "contribution")
        self.trigger_event(self.ContributionReversed, year=year, receipt_no=booked[0],
                           amount_fen=amount, on_behalf_fen=on_behalf, back_payment=booked[2],
                           reason=reason.strip(), value_date=value_date, actor=actor)
        return amount, on_behalf

    def reverse_subsidy(self, *, year: int, reason: str, value_date: date,
                        actor: str) -> int:
        """Reverse the year's subsidy, every level of it; returns the total reversed. Only
        while nothing was built on it, as for a contribution."""
        credited = self.subsidy_money.get(year)
        if not credited:
            raise Refused("year", f"no subsidy is credited for {year}")
        if not reason.strip() or len(reason) > MAX_REASON_CHARS:
            raise InvalidInput("reason", f"must say why, in 1 to {MAX_REASON_CHARS} characters")
        first = min(day for _, day in credited.values())
        if value_date < first:
            raise InvalidInput("value_date", f"is before the subsidy's value date "
                               f"({first.isoformat()})")
        self._refuse_if_built_on(first, "subsidy")
        total = 0
        for level, (amount, _) in sorted(credited.items()):
            self.trigger_event(self.SubsidyReversed, year=year, level=level, amount_fen=amount,
                               reason=reason.strip(), value_date=value_date, actor=actor)
            total += amount
        return total

    def _refuse_if_built_on(self, booked_on: date, what: str) -> None:
        """A booking may be reversed only while nothing computed from it stands: interest
        credited for a year it was held in, a pension applied for, a settled account."""
        if self.closed:
            raise Refused("participant", "the account is settled; nothing can be reversed")
        if self.pension is not None or self.pension_application is not None:
            raise Refused("participant", f"a pension was applied for on this account; the "
                          f"{what} can no longer be reversed")
        credited = sorted(y for y in self.interest_years if y >= booked_on.year)
        if credited:
            raise Refused("year", f"interest for {credited[0]} was credited on this {what}; "
                          "it can no longer be reversed")

    def credit_subsidy(self, *, year: int, value_date: date, rules: RuleVersion,
                       actor: str) -> int:
        """Government contribution subsidy (缴费补贴) for a year's contribution, by level.
        Back-payments earn none. Returns the total credited."""
        self._require_open()
        if year in self.subsidised_years:
            raise Refused("year", f"subsidy for {year} was already credited")
        if year not in self.contributed_years:
            raise Refused("year", f"no contribution recorded for {year}")
        _, tier_fen, back_payment = self.contributed_years[year]
        if back_payment:
            raise Refused("year", f"{year} was a back-payment (补缴), which earns no subsidy")
        step = rules.parameters.subsidy_for_tier(tier_fen)
        if step is None:
            raise Refused("tier_fen", f"the rule set has no subsidy for tier {tier_fen}")
        total = 0
        for level in SUBSIDY_LEVELS:
            amt = step.by_level()[level]
            if amt:
                self.trigger_event(self.SubsidyCredited, year=year, level=level, amount_fen=amt,
                                   value_date=value_date, rule_version=rules.label, actor=actor)
                total += amt
        if total == 0:
            raise Refused("tier_fen", f"subsidy schedule gives nothing for tier {tier_fen}")
        return total

    def credit_collective(self, *, year: int, amount_fen: int, payer: str, receipt_no: str,
                          value_date: date, actor: str) -> None:
        self._require_open()
        if not payer.strip() or len(payer) > 100:
            raise InvalidInput("payer", "must be 1 to 100 characters")
        _check_receipt(receipt_no, self.receipts)
        self.trigger_event(self.CollectiveSubsidyCredited, year=year, amount_fen=amount_fen,
                           payer=payer.strip(), receipt_no=receipt_no, value_date=value_date,
                           actor=actor)

    def credit_interest(self, *, year: int, rules: RuleVersion, actor: str) -> int:
        from ledger.interest import interest_for_year

        if year in self.interest_years:
            raise Refused("year", f"interest for {year} was already credited")
        if self.closed:
            raise Refused("participant", "the account is settled; it earns no more interest")
        rate = rules.parameters.interest_rates.get(year)
        if rate is None:
            raise Refused("year", f"the rule set names no interest rate for {year}")
        amount = interest_for_year(self.bookings, year, rate, rules.parameters)
        self.trigger_event(self.InterestCredited, year=year, rate=rate, amount_fen=amount,
                           value_date=date(year, 12, 31), rule_version=rules.label, actor=actor)
        return amount

    def reverse_interest(self, *, year: int, reason: str, actor: str) -> int:
        """Reverse the year's interest, credited in error; returns the amount. Only while
        nothing was computed from it: no later year's interest (which compounds on it:
        reverse that first), no pension applied for, the account not settled."""
        if year not in self.interest_years:
            raise Refused("year", f"no interest is credited for {year}")
        credited, rate = self.interest_years[year], self.interest_rates[year]
        if not reason.strip() or len(reason) > MAX_REASON_CHARS:
            raise InvalidInput("reason", f"must say why, in 1 to {MAX_REASON_CHARS} characters")
        later = sorted(y for y in self.interest_years if y > year)
        if later:
            raise Refused("year", f"interest for {later[0]} was credited on the {year} "
                          f"interest; reverse {later[-1]} first, then back to {year}")
        # A settled account, a pension: as for any reversal (no later interest is left).
        self._refuse_if_built_on(date(year + 1, 1, 1), "interest")
        self.trigger_event(self.InterestReversed, year=year, rate=rate, amount_fen=credited,
                           reason=reason.strip(), value_date=date(year, 12, 31), actor=actor)
        return credited

    def change_identity_group(self, group: str, effective_from: date, actor: str) -> None:
        self._require_open()
        if group not in IDENTITY_GROUPS:
            raise InvalidInput("identity_group", f"must be one of {', '.join(IDENTITY_GROUPS)}")
        self.trigger_event(self.IdentityGroupChanged, identity_group=group,
                           effective_from=effective_from, actor=actor)

    def change_bank_details(self, bank: BankAccount, actor: str) -> None:
        self._require_open()
        self.trigger_event(self.BankDetailsChanged, bank=bank, actor=actor)

    def _pension_refusal(self, start_month: str, params: Parameters) -> None:
        if self.status != "enrolled":
            raise Refused("participant", f"participant is {self.status}; only an enrolled "
                          "participant can start a pension")
        parse_month(start_month, "start_month")
        earliest = max(month_after(birthday_at(self.birth_date, params.pension_age)),
                       month_after(self.enrol_date))
        if start_month < earliest:
            raise Refused("start_month", f"pension starts the month after age "
                          f"{params.pension_age} and after enrolment: not before {earliest}")
        years = len(self.contributed_years)
        if years < params.min_contribution_years and not self._transitional(params):
            raise Refused("participant", f"{years} contribution years; a pension needs "
                          f"{params.min_contribution_years} (no transitional rule applies)")
        if self.bank is None:
            raise Refused("bank", "bank details are needed before a pension is approved")

    def _transitional(self, params: Parameters) -> bool:
        return (params.transitional_born_on_or_before is not None
                and self.birth_date <= params.transitional_born_on_or_before)

    def apply_for_pension(self, *, start_month: str, rules: RuleVersion, actor: str) -> None:
        """An operator records the application; a different person approves it."""
        self._pension_refusal(start_month, rules.parameters)
        if self.pension_application is not None:
            raise Refused("participant", "a pension application is already waiting")
        self.trigger_event(self.PensionApplied, start_month=start_month, actor=actor)

    def approve_pension(self, *, rules: RuleVersion, actor: str) -> None:
        if self.pension_application is None:
            raise Refused("participant", "no pension application is waiting for approval")
        start_month, applicant = self.pension_application
        if actor == applicant:
            raise Refused("actor", f"{actor} recorded this application and may not approve "
                          "it (separation of duties)")
        params = rules.parameters
        self._pension_refusal(start_month, params)
        y, m = parse_month(start_month, "start_month")
        years = len(self.contributed_years)
        # The balance at the start of payment: everything booked before the first month.
        balance_fen = sum(self.balance_on(date(y, m, 1) - timedelta(days=1)).values())
        self.trigger_event(
            self.PensionApproved, start_month=start_month,
            basic=basic_pension_components(params, self.birth_date, start_month, years),
            account_balance_fen=balance_fen,
            account_pension_fen=params.account_pension_fen(balance_fen),
            contribution_years=years, transitional=self._transitional(params),
            rule_version=rules.label, actor=actor)

    def revoke_pension(self, *, reason: str, actor: str) -> None:
        """Undo an approval made in error (the wrong start month, contribution years or
        components), while nothing has been paid on it; then apply and approve again.
        Once a month is paid, the approval stands and what was paid wrongly is corrected as
        an overpayment or arrears."""
        if self.pension is None or self.status != "pensioner":
            raise Refused("participant", f"participant is {self.status}; only an approved "
                          "pension being paid is revoked")
        if not reason.strip() or len(reason) > MAX_REASON_CHARS:
            raise InvalidInput("reason", f"must say why, in 1 to {MAX_REASON_CHARS} characters")
        if self.paid_months:
            paid = sorted(self.paid_months)
            raise Refused("participant", f"{len(paid)} month(s) were paid on this approval "
                          f"({paid[0]} to {paid[-1]}); it stands, and what was paid wrongly is "
                          "corrected as an overpayment or arrears")
        self.trigger_event(self.PensionRevoked, reason=reason.strip(), actor=actor)

    def suspend(self, reason_code: str, from_month: str, actor: str) -> None:
        if reason_code not in SUSPEND_REASONS:
            raise InvalidInput("reason_code", f"must be one of {', '.join(SUSPEND_REASONS)}")
        parse_month(from_month, "from_month")
        if self.status != "pensioner":
            raise Refused("participant", f"participant is {self.status}; only a pensioner "
                          "being paid can be suspended")
        assert self.pension is not None
        if from_month < self.pension.start_month:
            raise Refused("from_month", f"is before the pension began "
                          f"({self.pension.start_month})")
        self.trigger_event(self.Suspended, reason_code=reason_code, from_month=from_month,
                           actor=actor)

    def resume(self, from_month: str, actor: str) -> list[str]:
        parse_month(from_month, "from_month")
        if self.status != "suspended":
            raise Refused("participant", f"participant is {self.status}, not suspended")
        assert self.suspension is not None
        since = self.suspension[1]
        if from_month < since:
            raise Refused("from_month", f"is before the suspension began ({since})")
        reason = self.suspension[0]
        months = months_between(since, from_month)
        # Months in prison are not owed; other suspensions are paid in arrears (补发).
        arrears, forfeited = ([], months) if reason == "imprisoned" else (months, [])
        self.trigger_event(self.Resumed, from_month=from_month, arrears_months=arrears,
                           forfeited_months=forfeited, actor=actor)
        return arrears

    def decease(self, date_of_death: date, reported_on: date, actor: str) -> None:
        if self.status in ("deceased",):
            raise Refused("participant", "death is already recorded")
        if date_of_death > reported_on:
            raise InvalidInput("date_of_death", "is after the date it was reported")
        if date_of_death < self.birth_date:
            raise InvalidInput("date_of_death", "is before the birth date")
        self.trigger_event(self.Died, date_of_death=date_of_death, reported_on=reported_on,
                           actor=actor)

    def owe_at_death(self, *, months: list[str], basic_fen: int,
                     account_by_source_fen: dict[str, int], pooled_account_fen: int,
                     deduction_fen: int, amount_fen: int, rule_versions: list[str],
                     value_date: date, actor: str, basic_by_month: dict[str, int] | None = None,
                     rerated_fen: dict[str, int] | None = None, rated_version: int = 0) -> None:
        """Settle the months owed at death into the heirs' payable (the amounts come from
        ledger.payout.owed_at_death, by the same rules as the monthly run)."""
        if self.status != "deceased" or self.date_of_death is None or self.pension is None:
            raise Refused("participant", "pension owed at death needs a pensioner's "
                          "recorded death")
        death_month = self.date_of_death.strftime("%Y-%m")
        rerated_fen = rerated_fen or {}
        if not (months or rerated_fen) or any(
                m > death_month or m < self.pension.start_month
                or m in self.paid_months or m in self.forfeited_months for m in months):
            raise Refused("months", f"must be months from {self.pension.start_month} to the "
                          f"month of death ({death_month}) neither paid nor forfeited")
        if any(m not in self.paid_months for m in rerated_fen):
            raise Refused("rerated_fen", "tops up only months already paid")
        drawn = sum(account_by_source_fen.values())
        if any(self.sources.get(s, 0) < a for s, a in account_by_source_fen.items()):
            raise Refused("account_by_source_fen", "draws more than the account holds")
        if deduction_fen > self.overpayment_fen:
            raise Refused("deduction_fen", "exceeds the outstanding overpayment")
        if amount_fen != basic_fen + drawn + pooled_account_fen - deduction_fen or amount_fen < 0:
            raise Refused("amount_fen", "must be the basic and account parts less the deduction")
        old = self.payables.get(OWED_AT_DEATH)
        if old is not None and old.paid_by is not None:
            raise Refused("participant", f"the pension owed at death was sent to the bank as "
                          f"{old.paid_by}; months owed since are settled by hand")
        self.trigger_event(self.PensionOwedAtDeath, months=months, basic_fen=basic_fen,
                           account_by_source_fen=account_by_source_fen,
                           pooled_account_fen=pooled_account_fen, deduction_fen=deduction_fen,
                           amount_fen=amount_fen, rule_versions=rule_versions,
                           basic_by_month=basic_by_month or {}, rerated_fen=rerated_fen,
                           rated_version=rated_version, value_date=value_date, actor=actor)

    def terminate(self, reason_code: str, effective_date: date, actor: str) -> None:
        if reason_code not in TERMINATE_REASONS:
            raise InvalidInput("reason_code", f"must be one of {', '.join(TERMINATE_REASONS)}")
        if self.status == "terminated" or self.termination is not None:
            raise Refused("participant", "participant is already terminated")
        if reason_code == "death" and self.status != "deceased":
            raise Refused("reason_code", "record the death first (pensioner decease)")
        self.trigger_event(self.Terminated, reason_code=reason_code,
                           effective_date=effective_date, actor=actor)

    def settle_balance(self, *, how: Literal["refund", "inheritance"], payee: str,
                       value_date: date, rules: RuleVersion, actor: str,
                       payee_account: BankAccount | None = None) -> int:
        """Pay the account out. Inheritance may exclude the subsidy part (a parameter);
        what is excluded returns to the pooled fund."""
        if self.closed:
            raise Refused("participant", "the account is already settled")
        if how == "inheritance" and self.status != "deceased":
            raise Refused("how", "inheritance needs a recorded death")
        if how == "refund" and self.status != "terminated":
            raise Refused("how", "a refund needs the participant terminated first")
        if not payee.strip():
            raise InvalidInput("payee", "must name who receives the money")
        if self.overpayment_fen:
            raise Refused("participant", f"an overpayment of {self.overpayment_fen} fen is "
                          "outstanding; recover it (offset) first")
        keep_subsidy = how == "refund" or rules.parameters.inherit_subsidy
        paid = {s: a for s, a in self.sources.items()
                if a and (keep_subsidy or s not in SUBSIDY_SOURCES)}
        forfeit = {s: a for s, a in self.sources.items() if a and s not in paid}
        self.trigger_event(self.BalanceSettled, how=how, by_source_fen=paid,
                           forfeited_by_source_fen=forfeit, payee=payee.strip(),
                           payee_account=payee_account, value_date=value_date, actor=actor)
        return sum(paid.values())

    def award_funeral_grant(self, *, payee: str, payee_account: BankAccount | None,
                            value_date: date, rules: RuleVersion, actor: str) -> int:
        """The grant of the rules in force on the date of death, less the overpayment it
        offsets. Returns what is left to pay the payee."""
        if self.status != "deceased":
            raise Refused("participant", "a funeral grant needs a recorded death")
        if self.pension is None:
            raise Refused("participant", "the funeral grant is paid for pensioners only")
        if self.funeral_grant_fen is not None:
            raise Refused("participant", "the funeral grant was already awarded")
        if not payee.strip() or len(payee) > 100:
            raise InvalidInput("payee", "must name who receives the money (1 to 100 characters)")
        amount = rules.parameters.funeral_grant_fen
        if amount == 0:
            raise Refused("funeral_grant", f"the rules in force on the date of death "
                          f"({rules.label}) grant none")
        offset = min(amount, self.overpayment_fen)
        self.trigger_event(self.FuneralGrantAwarded, amount_fen=amount,
                           offset_overpayment_fen=offset, payee=payee.strip(),
                           payee_account=payee_account, value_date=value_date,
                           rule_version=rules.label, actor=actor)
        return amount - offset

    def change_payee(self, *, kind: str, payee: str, payee_account: BankAccount,
                     actor: str) -> None:
        if kind not in ONE_OFF_KINDS:
            raise InvalidInput("kind", f"must be one of {', '.join(ONE_OFF_KINDS)}")
        payable = self.payables.get(kind)
        if payable is None:
            raise Refused("kind", f"nothing is owed as {kind}")
        if payable.paid_by is not None:
            raise Refused("kind", f"the {kind} was sent to the bank as {payable.paid_by}; "
                          "the payee can change only if the bank sends it back")
        if not payee.strip() or len(payee) > 100:
            raise InvalidInput("payee", "must name who receives the money (1 to 100 characters)")
        self.trigger_event(self.PayeeDetailsChanged, kind=kind, payee=payee.strip(),
                           payee_account=payee_account, actor=actor)

    def pay_one_off(self, *, kind: str, batch_id: UUID, end_to_end_id: str, amount_fen: int,
                    value_date: date, actor: str) -> None:
        """Called by funding: the payable goes to the bank in a payout batch."""
        payable = self.payables.get(kind)
        if payable is None or payable.paid_by is not None or payable.hold is not None:
            raise Refused("participant", f"no {kind} is owed and payable now")
        if payable.amount_fen != amount_fen:
            raise Refused("amount_fen", f"the {kind} owed is {payable.amount_fen} fen, "
                          f"not {amount_fen}")
        self.trigger_event(self.OneOffPaid, kind=kind, batch_id=batch_id,
                           end_to_end_id=end_to_end_id, amount_fen=amount_fen,
                           value_date=value_date, actor=actor)

    def reverse_one_off(self, *, kind: str, end_to_end_id: str, reason_code: str,
                        after_settlement: bool, value_date: date, actor: str) -> None:
        payable = self.payables.get(kind)
        if payable is None or payable.paid_by != end_to_end_id:
            raise Refused("end_to_end_id", f"{end_to_end_id} is not the {kind} payment "
                          "in flight")
        self.trigger_event(self.OneOffPaymentReversed, kind=kind, end_to_end_id=end_to_end_id,
                           amount_fen=payable.amount_fen, reason_code=reason_code,
                           after_settlement=after_settlement, value_date=value_date,
                           actor=actor)

    def assess_overpayment(self, amount_fen: int, months: list[str], reason: str,
                           value_date: date, actor: str) -> None:
        for m in months:
            parse_month(m, "months")
        self.trigger_event(self.OverpaymentAssessed, amount_fen=amount_fen, months=months,
                           reason=reason, value_date=value_date, actor=actor)

    def impose_fine(self, *, amount_fen: int, defrauded_fen: int, decision_no: str,
                    value_date: date, actor: str) -> None:
        """A fine for fraud, on what was obtained by it: at most the overpayments assessed
        on this participant that no fine was imposed on yet, and a fine of two to five
        times that."""
        decision_no = decision_no.strip()
        if not decision_no or len(decision_no) > MAX_DECISION_NO_LEN:
            raise InvalidInput("decision_no", f"must be 1 to {MAX_DECISION_NO_LEN} characters")
        if decision_no in self.fine_decisions:
            raise Refused("decision_no", f"decision {decision_no} is already booked")
        unfined = self.overpaid_fen - self.fined_fen
        if defrauded_fen > unfined:
            raise Refused("defrauded", "a fine is on money obtained by fraud, assessed first "
                          f"as an overpayment: {format_yuan(defrauded_fen)} yuan is more than "
                          f"the {format_yuan(unfined)} yuan assessed and not fined yet")
        least, most = fine_bounds_fen(defrauded_fen)
        if not least <= amount_fen <= most:
            raise Refused("fine", f"a fine for fraud is two to five times what was obtained: "
                          f"{format_yuan(least)} to {format_yuan(most)} yuan for "
                          f"{format_yuan(defrauded_fen)} yuan")
        self.trigger_event(self.FineImposed, amount_fen=amount_fen,
                           defrauded_fen=defrauded_fen, decision_no=decision_no,
                           value_date=value_date, actor=actor)

    def pay_fine(self, *, amount_fen: int, reference: str, value_date: date,
                 actor: str) -> None:
        if amount_fen > self.fines_outstanding_fen:
            raise Refused("amount", f"exceeds the fines outstanding "
                          f"({format_yuan(self.fines_outstanding_fen)} yuan)")
        reference = reference.strip()
        if not reference or len(reference) > MAX_DECISION_NO_LEN:
            raise InvalidInput("reference", f"must be 1 to {MAX_DECISION_NO_LEN} characters")
        self.trigger_event(self.FinePaid, amount_fen=amount_fen, reference=reference,
                           value_date=value_date, actor=actor)

    def recover_overpayment(self, amount_fen: int, channel: Literal["offset_account", "family"],
                            value_date: date, actor: str) -> None:
        if amount_fen > self.overpayment_fen:
            raise Refused("amount_fen", f"exceeds the outstanding overpayment "
                          f"({self.overpayment_fen} fen)")
        by_source: dict[str, int] = {}
        if channel == "offset_account":
            if amount_fen > self.balance_fen:
                raise Refused("amount_fen", "exceeds the individual account balance")
            # Offset from the participant's own money last, the subsidy parts first.
            left = amount_fen
            for src in ("interest", *SUBSIDY_SOURCES, "collective", "contribution"):
                take = min(left, self.sources[src])
                if take:
                    by_source[src] = take
                    left -= take
            assert left == 0
        self.trigger_event(self.OverpaymentRecovered, amount_fen=amount_fen, channel=channel,
                           by_source_fen=by_source, value_date=value_date, actor=actor)


def fine_bounds_fen(defrauded_fen: int) -> tuple[int, int]:
    """The least and the most a fine for obtaining defrauded_fen by fraud may be: two and
    five times it (Social Insurance Law, art. 88)."""
    return FINE_MIN_MULTIPLE * defrauded_fen, FINE_MAX_MULTIPLE * defrauded_fen


def draw_by_source(sources: dict[str, int], amount_fen: int) -> dict[str, int]:
    """Split a draw on the individual account across its sources in proportion to their
    balances (largest remainder, ties in SOURCES order), so refunds and inheritance later
    find the same mix the account had."""
    total = sum(sources.values())
    assert 0 <= amount_fen <= total, (amount_fen, total)
    if amount_fen == 0:
        return {}
    shares = {s: sources[s] * amount_fen // total for s in SOURCES if sources.get(s)}
    left = amount_fen - sum(shares.values())
    order = sorted((s for s in shares), key=lambda s: (-(sources[s] * amount_fen % total),
                                                         SOURCES.index(s)))
    for s in order[:left]:
        shares[s] += 1
    assert sum(shares.values()) == amount_fen
    assert all(shares[s] <= sources[s] for s in shares)
    return {s: a for s, a in shares.items() if a}


def birthday_at(born: date, age: int) -> date:
    try:
        return born.replace(year=born.year + age)
    except ValueError:  # 29 February in a common year
        return date(born.year + age, 2, 28)


def months_between(first: str, stop: str) -> list[str]:
    """Months from first (inclusive) to stop (exclusive), YYYY-MM strings."""
    y, m = parse_month(first, "from_month")
    out = []
    while f"{y:04d}-{m:02d}" < stop:
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y, m + 1) if m < 12 else (y + 1, 1)
        assert len(out) <= 1200
    return out


def _check_receipt(receipt_no: str, receipts: set[str]) -> None:
    if not receipt_no.strip() or len(receipt_no) > 64:
        raise InvalidInput("receipt_no", "must be 1 to 64 characters")
    if receipt_no in receipts:
        raise Refused("receipt_no", f"receipt {receipt_no} is already booked")


def check_contribution(*, status: str, birth_date: date,
                       contributed_years: dict[int, tuple[str, int, bool]] | set[int],
                       receipts: set[str], identity_group: str, year: int, tier_fen: int,
                       amount_fen: int, channel: str, receipt_no: str, value_date: date,
                       back_payment: bool, rules: RuleVersion) -> None:
    """Every rule a contribution must pass. Shared by the one-at-a-time command and the
    bulk import so the two can never disagree."""
    if status in ("deceased", "terminated"):
        raise Refused("id_number", f"participant is {status}; contributions are refused")
    if status in ("pensioner", "suspended"):
        raise Refused("id_number", "participant already draws a pension; contributions stop")
    if channel not in CHANNELS:
        raise InvalidInput("channel", f"must be one of {', '.join(CHANNELS)}")
    _check_receipt(receipt_no, receipts)
    params = rules.parameters
    if tier_fen not in params.contribution_tiers_fen:
        tiers = ", ".join(str(t // 100) for t in params.contribution_tiers_fen)
        raise Refused("tier", f"{tier_fen // 100}.{tier_fen % 100:02d} is not a tier of rule "
                      f"{rules.label} (yuan: {tiers})")
    if year > value_date.year:
        raise InvalidInput("year", f"{year} is after the value date {value_date.isoformat()}")
    if back_payment:
        if year >= value_date.year:
            raise InvalidInput("year", "a back-payment (补缴) is for an earlier year")
    elif year != value_date.year:
        raise InvalidInput("year", f"{year} is not the year of the value date; use back-payment "
                           "for missed years")
    if year < birth_date.year + params.min_enrol_age:
        raise Refused("year", f"the participant was under {params.min_enrol_age} in {year}")
    if year in contributed_years:
        raise Refused("year", f"a contribution for {year} is already booked")
    # Back-payments get no payment on behalf: the participant pays the whole tier.
    on_behalf = 0 if back_payment else on_behalf_fen(params, identity_group, tier_fen)
    if amount_fen != tier_fen - on_behalf:
        if on_behalf:
            raise InvalidInput("amount", f"must be the tier {tier_fen} fen less the on-behalf "
                               f"part {on_behalf} fen ({identity_group}) = "
                               f"{tier_fen - on_behalf} fen")
        raise InvalidInput("amount", f"must equal the tier ({tier_fen} fen)")
    if amount_fen <= 0 and not on_behalf:
        raise InvalidInput("amount", "must be greater than zero")


def on_behalf_fen(params: Parameters, identity_group: str, tier_fen: int) -> int:
    """The government pays a share of the lowest tier for hardship groups (代缴)."""
    pct = params.on_behalf_percent.get(identity_group, 0)
    lowest = params.contribution_tiers_fen[0]
    share = lowest * pct // 100
    return min(share, tier_fen)
