"""Fund: the three bank accounts of the fund and the law on which may pay which.

Income (收入户) pays only to the fiscal special account. The fiscal special account (财政专户,
the escrow) funds the expenditure account. The expenditure account (支出户) receives only from
the fiscal special account, its own interest and returned payments. Any other direction is
illegal and refused here. Balances are guarded in the write transaction (see store.py), so
no account can go below zero even with concurrent writers.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any, Literal
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger.aggregates.base import Aggregate
from ledger.errors import InvalidInput, Refused

Account = Literal["income", "fiscal", "expenditure"]
ACCOUNTS: tuple[Account, ...] = ("income", "fiscal", "expenditure")
# The only transfers between the fund's own accounts that the law allows.
LAWFUL_TRANSFERS = {("income", "fiscal"): "sweep", ("fiscal", "expenditure"): "appropriation"}
TREASURY_LEVELS = ("central", "province", "city", "county")
TREASURY_PURPOSES = ("basic_pension", "contribution_subsidy", "on_behalf")
MAX_REFERENCE_LEN = 64


class Fund(Aggregate):
    if TYPE_CHECKING:  # state set by the events' apply(); not constructor fields
        references: set[str]

    @staticmethod
    def id_for(name: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"pension-ledger:fund:{name}")

    class Opened(Aggregate.Created):
        name: str

        def apply(self, f: Any) -> None:
            f.name = self.name
            f.references = set()

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
