"""Fund: the three bank accounts of the fund and the law on which may pay which.

Income (收入户) pays only to the fiscal special account. The fiscal special account (财政专户,
the escrow) funds the expenditure account, and keeps what it does not need yet in fixed
deposits (定期存款) at its bank: placed from it and paid back into it, principal and interest,
never anywhere else. The expenditure account (支出户) receives only from the fiscal special
account, its own interest and returned payments. Any other direction is illegal and refused
here. Balances are guarded in the write transaction (see store.py), so no account can go
below zero even with concurrent writers.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, replace
from datetime import date
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger.aggregates.base import Aggregate
from ledger.errors import InvalidInput, Refused
from ledger.money import format_yuan

Account = Literal["income", "fiscal", "expenditure"]
ACCOUNTS: tuple[Account, ...] = ("income", "fiscal", "expenditure")
# The only transfers between the fund's own accounts that the law allows.
LAWFUL_TRANSFERS = {("income", "fiscal"): "sweep", ("fiscal", "expenditure"): "appropriation"}
TREASURY_LEVELS = ("central", "province", "city", "county")
TREASURY_PURPOSES = ("basic_pension", "contribution_subsidy", "on_behalf")
MAX_REFERENCE_LEN = 64
# Fixed deposits: the terms banks offer (months), a certificate number's length, the highest
# annual rate taken as meant (a higher one is a typo: 17.5 for 1.75), and at most 4 decimals
# of a percent (banks quote to 2; floating rates to 4).
DEPOSIT_TERMS_MONTHS = (3, 6, 12, 24, 36, 60)
MAX_DEPOSIT_NO_LEN = 32
MAX_DEPOSIT_RATE_PERCENT = Decimal("10")
MAX_RATE_PERCENT_DECIMALS = 4


@dataclass(frozen=True)
class FixedDeposit:
    """A fixed deposit of the fiscal special account, as placed, and when it was withdrawn."""

    deposit_no: str
    principal_fen: int
    placed_on: date
    term_months: int
    annual_rate: Decimal      # a fraction: Decimal("0.0175") for 1.75% a year
    maturity_date: date
    withdrawn_on: date | None = None
    interest_fen: int | None = None

    def held_on(self, day: date) -> bool:
        """Whether the deposit holds the money at the end of `day` (by value date)."""
        return self.placed_on <= day and (self.withdrawn_on is None or self.withdrawn_on > day)

    def interest_at_maturity_fen(self) -> int:
        """The interest the contract promises at maturity: simple interest on the
        principal for the term, half up to the fen (what the bank's certificate shows)."""
        return interest_at_maturity_fen(self.principal_fen, self.annual_rate,
                                        self.term_months)


def interest_at_maturity_fen(principal_fen: int, annual_rate: Decimal, term_months: int) -> int:
    exact = Decimal(principal_fen) * annual_rate * term_months / 12
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def interest_ceiling_fen(principal_fen: int, days_held: int) -> int:
    """The most interest a deposit can have earned: MAX_DEPOSIT_RATE_PERCENT a year for
    the days held (at least one), rounded up."""
    exact = Decimal(principal_fen) * MAX_DEPOSIT_RATE_PERCENT / 100 * max(days_held, 1) / 365
    return int(exact.to_integral_value(rounding=ROUND_CEILING))


def parse_rate_percent(text: object, field: str = "rate_percent") -> Decimal:
    """An annual rate given in percent ("1.75") as a fraction (Decimal("0.0175")). Floats
    are refused, as for amounts: a rate is a decimal string."""
    if isinstance(text, (bool, float)) or not isinstance(text, str):
        raise InvalidInput(field, "a rate must be a decimal string of percent, such as 1.75")
    s = text.strip().removesuffix("%")
    try:
        percent = Decimal(s)
    except InvalidOperation:
        raise InvalidInput(field, f"{text!r} is not a rate in percent such as 1.75") from None
    if not percent.is_finite() or not 0 < percent <= MAX_DEPOSIT_RATE_PERCENT:
        raise InvalidInput(field, f"{text!r}: the rate must be above 0 and at most "
                                  f"{MAX_DEPOSIT_RATE_PERCENT} percent a year")
    exponent = percent.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > MAX_RATE_PERCENT_DECIMALS:
        raise InvalidInput(field, f"{text!r} has more than {MAX_RATE_PERCENT_DECIMALS} "
                                  "decimal places")
    return (percent / 100).normalize()


def add_months(day: date, months: int) -> date:
    """The same day `months` later; the month's last day where it has no such day (a
    deposit placed on 31 August for 6 months matures on 28 or 29 February)."""
    total = day.month - 1 + months
    year, month = day.year + total // 12, total % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


class Fund(Aggregate):
    if TYPE_CHECKING:  # state set by the events' apply(); not constructor fields
        references: set[str]
        deposits: dict[str, FixedDeposit]   # every fixed deposit ever placed, by number

    @staticmethod
    def id_for(name: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"pension-ledger:fund:{name}")

    class Opened(Aggregate.Created):
        name: str

        def apply(self, f: Any) -> None:
            f.name = self.name
            f.references = set()
            f.deposits = {}

    class MoneyEvent(Aggregate.Event):
        amount_fen: int
        value_date: date
        reference: str

        def apply(self, f: Any) -> None:
            f.references.add(self.reference)

    class TreasuryFundsReceived(MoneyEvent):
        level: str
        purpose: str

    class Transferred(MoneyEvent):
        from_account: Account
        to_account: Account
        kind: str

    class BankInterestEarned(MoneyEvent):
        account: Account

    class PaymentReturned(MoneyEvent):
        end_to_end_id: str

    class FixedDepositPlaced(MoneyEvent):
        """amount_fen moved from the fiscal special account into a fixed deposit."""

        deposit_no: str
        term_months: int
        annual_rate: Decimal
        maturity_date: date

        def apply(self, f: Any) -> None:
            super().apply(f)
            f.deposits[self.deposit_no] = FixedDeposit(
                self.deposit_no, self.amount_fen, self.value_date, self.term_months,
                self.annual_rate, self.maturity_date)

    class FixedDepositWithdrawn(MoneyEvent):
        """A fixed deposit paid back into the fiscal special account: its principal
        (amount_fen) and the interest the bank paid on it; early when before maturity."""

        deposit_no: str
        interest_fen: int
        early: bool

        def apply(self, f: Any) -> None:
            super().apply(f)
            held = f.deposits[self.deposit_no]
            assert held.withdrawn_on is None and held.principal_fen == self.amount_fen
            f.deposits[self.deposit_no] = replace(held, withdrawn_on=self.value_date,
                                                  interest_fen=self.interest_fen)

    @classmethod
    def open(cls, name: str, actor: str) -> Fund:
        return cls._create(cls.Opened, id=cls.id_for(name), name=name, actor=actor)

    def _check_reference(self, reference: str) -> None:
        if not reference.strip() or len(reference) > MAX_REFERENCE_LEN:
            raise InvalidInput("reference", f"must be 1 to {MAX_REFERENCE_LEN} characters")
        if reference in self.references:
            raise Refused("reference", f"bank reference {reference} is already booked")

    def receive_treasury_funds(self, *, amount_fen: int, level: str, purpose: str,
                               value_date: date, reference: str, actor: str) -> None:
        if level not in TREASURY_LEVELS:
            raise InvalidInput("level", f"must be one of {', '.join(TREASURY_LEVELS)}")
        if purpose not in TREASURY_PURPOSES:
            raise InvalidInput("purpose", f"must be one of {', '.join(TREASURY_PURPOSES)}")
        if purpose == "contribution_subsidy" and level == "central":
            raise InvalidInput("level", "contribution subsidies are funded by province, city "
                               "or county")
        self._check_reference(reference)
        self.trigger_event(self.TreasuryFundsReceived, amount_fen=amount_fen, level=level,
                           purpose=purpose, value_date=value_date, reference=reference,
                           actor=actor)

    def transfer(self, *, from_account: str, to_account: str, amount_fen: int,
                 value_date: date, reference: str, actor: str) -> str:
        for field, acc in (("from_account", from_account), ("to_account", to_account)):
            if acc not in ACCOUNTS:
                raise InvalidInput(field, f"must be one of {', '.join(ACCOUNTS)}")
        kind = LAWFUL_TRANSFERS.get((from_account, to_account))
        if kind is None:
            raise Refused("to_account", f"the law forbids moving money {from_account} -> "
                          f"{to_account}; only income -> fiscal (sweep) and fiscal -> "
                          "expenditure (appropriation) are allowed")
        self._check_reference(reference)
        self.trigger_event(self.Transferred, from_account=from_account, to_account=to_account,
                           amount_fen=amount_fen, value_date=value_date, reference=reference,
                           kind=kind, actor=actor)
        return kind

    def earn_bank_interest(self, *, account: str, amount_fen: int, value_date: date,
                           reference: str, actor: str) -> None:
        if account not in ACCOUNTS:
            raise InvalidInput("account", f"must be one of {', '.join(ACCOUNTS)}")
        self._check_reference(reference)
        self.trigger_event(self.BankInterestEarned, account=account, amount_fen=amount_fen,
                           value_date=value_date, reference=reference, actor=actor)

    def return_payment(self, *, amount_fen: int, end_to_end_id: str, value_date: date,
                       reference: str, actor: str) -> None:
        self._check_reference(reference)
        self.trigger_event(self.PaymentReturned, amount_fen=amount_fen,
                           end_to_end_id=end_to_end_id, value_date=value_date,
                           reference=reference, actor=actor)

    def place_fixed_deposit(self, *, deposit_no: str, amount_fen: int, term_months: int,
                            annual_rate: Decimal, value_date: date, reference: str,
                            actor: str) -> FixedDeposit:
        """Fiscal special account -> a fixed deposit of it. The fiscal account's guarded
        balance refuses a deposit beyond what it holds."""
        deposit_no = deposit_no.strip()
        if not deposit_no or len(deposit_no) > MAX_DEPOSIT_NO_LEN:
            raise InvalidInput("deposit_no", f"must be 1 to {MAX_DEPOSIT_NO_LEN} characters")
        if deposit_no in self.deposits:
            raise Refused("deposit_no", f"fixed deposit {deposit_no} is already booked")
        if term_months not in DEPOSIT_TERMS_MONTHS:
            raise InvalidInput("term_months", "must be one of "
                               f"{', '.join(map(str, DEPOSIT_TERMS_MONTHS))} months")
        if not isinstance(annual_rate, Decimal) or not (
                0 < annual_rate <= MAX_DEPOSIT_RATE_PERCENT / 100):
            raise InvalidInput("rate_percent", "the annual rate must be a Decimal fraction "
                               f"above 0 and at most {MAX_DEPOSIT_RATE_PERCENT / 100}")
        self._check_reference(reference)
        self.trigger_event(self.FixedDepositPlaced, deposit_no=deposit_no,
                           amount_fen=amount_fen, term_months=term_months,
                           annual_rate=annual_rate,
                           maturity_date=add_months(value_date, term_months),
                           value_date=value_date, reference=reference, actor=actor)
        return self.deposits[deposit_no]

    def withdraw_fixed_deposit(self, *, deposit_no: str, interest_fen: int, value_date: date,
                               reference: str, actor: str) -> FixedDeposit:
        """A fixed deposit, whole, and its interest back into the fiscal special account:
        at maturity or later, or early (提前支取, at the rate the bank then pays)."""
        held = self.deposits.get(deposit_no.strip())
        if held is None:
            raise Refused("deposit_no", f"no fixed deposit {deposit_no} was placed")
        if held.withdrawn_on is not None:
            raise Refused("deposit_no", f"fixed deposit {held.deposit_no} was already "
                          f"withdrawn on {held.withdrawn_on.isoformat()}")
        if value_date < held.placed_on:
            raise Refused("value_date", f"{value_date.isoformat()} is before the deposit was "
                          f"placed ({held.placed_on.isoformat()})")
        days_held = (value_date - held.placed_on).days
        ceiling = interest_ceiling_fen(held.principal_fen, days_held)
        if interest_fen > ceiling:
            # A slip misread (an extra digit) would otherwise book money the bank never paid.
            raise Refused("interest", f"{format_yuan(interest_fen)} yuan is more than "
                          f"{MAX_DEPOSIT_RATE_PERCENT} percent a year on the principal for the "
                          f"{days_held} days held ({format_yuan(ceiling)} yuan)")
        self._check_reference(reference)
        self.trigger_event(self.FixedDepositWithdrawn, deposit_no=held.deposit_no,
                           amount_fen=held.principal_fen, interest_fen=interest_fen,
                           early=value_date < held.maturity_date, value_date=value_date,
                           reference=reference, actor=actor)
        return self.deposits[held.deposit_no]

    def fixed_deposits(self, as_of: date | None = None) -> list[FixedDeposit]:
        """The deposits holding money at the end of as_of (value date), or now, as they
        stood then (a withdrawal after as_of is not shown)."""
        if as_of is None:
            held = [d for d in self.deposits.values() if d.withdrawn_on is None]
        else:
            held = [replace(d, withdrawn_on=None, interest_fen=None)
                    for d in self.deposits.values() if d.held_on(as_of)]
        return sorted(held, key=lambda d: (d.maturity_date, d.deposit_no))
