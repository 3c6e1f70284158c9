"""Double entry: every money event expands, deterministically, into postings that sum to zero.

A posting is (account, amount_fen), debit positive, credit negative. Participant
sub-ledger accounts carry the participant id and the source.

Chart of accounts
  Assets       1001 income account (收入户)         1002 fiscal special account (财政专户)
               1003 expenditure account (支出户)    1101 payments in flight at the bank
               1201 overpayment receivable           1202.<level> government subsidy receivable
  Liabilities  2001.<source>/<participant> individual accounts
               2101 pooled basic-pension fund        2201 inheritance payable  2202 refund payable
               2301 pensions payable (sent to the bank, not yet settled)
  Fund result  3001 bank interest earned             3002 interest credited to accounts
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple
from uuid import UUID

INCOME = "1001"
FISCAL = "1002"
EXPENDITURE = "1003"
IN_FLIGHT = "1101"
OVERPAYMENT_RECEIVABLE = "1201"
SUBSIDY_RECEIVABLE = "1202"
INDIVIDUAL = "2001"
POOLED = "2101"
INHERITANCE_PAYABLE = "2201"
REFUND_PAYABLE = "2202"
PENSIONS_PAYABLE = "2301"
INTEREST_EARNED = "3001"
INTEREST_CREDITED = "3002"

BANK_ACCOUNTS = {"income": INCOME, "fiscal": FISCAL, "expenditure": EXPENDITURE}
# Asset accounts whose balance may never go negative; guarded in the write transaction.
GUARDED_ACCOUNTS = (INCOME, FISCAL, EXPENDITURE, IN_FLIGHT)

ACCOUNT_NAMES = {
    INCOME: "income account (收入户)",
    FISCAL: "fiscal special account (财政专户)",
    EXPENDITURE: "expenditure account (支出户)",
    IN_FLIGHT: "payments in flight at the bank",
    OVERPAYMENT_RECEIVABLE: "overpayment receivable",
    SUBSIDY_RECEIVABLE: "government subsidy receivable",
    INDIVIDUAL: "individual accounts (个人账户)",
    POOLED: "pooled basic-pension fund",
    INHERITANCE_PAYABLE: "inheritance payable",
    REFUND_PAYABLE: "refund payable",
    PENSIONS_PAYABLE: "pensions payable",
    INTEREST_EARNED: "bank interest earned",
    INTEREST_CREDITED: "interest credited to individual accounts",
}


class Posting(NamedTuple):
    account: str          # e.g. "1001", "1202.county", "2001.contribution"
    amount_fen: int       # debit positive, credit negative
    participant_id: UUID | None = None


def individual(source: str, pid: UUID, amount_fen: int) -> Posting:
    """A credit (amount_fen > 0 means money into the individual account)."""
    return Posting(f"{INDIVIDUAL}.{source}", -amount_fen, pid)


def postings_for(event: Any) -> list[Posting]:
    """The postings of one domain event ([] for events that move no money)."""
    from ledger.aggregates.fund import Fund
    from ledger.aggregates.participant import Participant as P
    from ledger.aggregates.payout_batch import PayoutBatch as B

    pid = event.originator_id
    out: list[Posting]
    match event:
        case P.ContributionReceived():
            out = [Posting(INCOME, event.amount_fen),
                   individual("contribution", pid, event.amount_fen)]
        case P.PaidOnBehalf():
            out = [Posting(f"{SUBSIDY_RECEIVABLE}.on_behalf", event.amount_fen),
                   individual("on_behalf", pid, event.amount_fen)]
        case P.SubsidyCredited():
            out = [Posting(f"{SUBSIDY_RECEIVABLE}.{event.level}", event.amount_fen),
                   individual(f"subsidy_{event.level}", pid, event.amount_fen)]
        case P.CollectiveSubsidyCredited():
            out = [Posting(INCOME, event.amount_fen),
                   individual("collective", pid, event.amount_fen)]
        case P.InterestCredited():
            out = ([Posting(INTEREST_CREDITED, event.amount_fen),
                    individual("interest", pid, event.amount_fen)] if event.amount_fen else [])
        case P.BalanceSettled():
            payable = REFUND_PAYABLE if event.how == "refund" else INHERITANCE_PAYABLE
            out = []
            for src, amt in sorted(event.by_source_fen.items()):
                if amt:
                    out += [individual(src, pid, -amt), Posting(payable, -amt)]
            for src, amt in sorted(event.forfeited_by_source_fen.items()):
                if amt:
                    out += [individual(src, pid, -amt), Posting(POOLED, -amt)]
        case P.OverpaymentAssessed():
            out = [Posting(OVERPAYMENT_RECEIVABLE, event.amount_fen),
                   Posting(POOLED, -event.amount_fen)]
        case P.OverpaymentRecovered():
            if event.channel == "family":
                out = [Posting(EXPENDITURE, event.amount_fen),
                       Posting(OVERPAYMENT_RECEIVABLE, -event.amount_fen)]
            else:
                out = [individual(src, pid, -amt)
                       for src, amt in sorted(event.by_source_fen.items()) if amt]
                out.append(Posting(OVERPAYMENT_RECEIVABLE, -event.amount_fen))
        case P.PensionPaid():
            # Dr the individual account (by source) and the pool; Cr what the bank must pay
            # and the overpayment recovered.
            out = [individual(src, pid, -amt)
                   for src, amt in sorted(event.account_by_source_fen.items()) if amt]
            out.append(Posting(POOLED, event.basic_fen + event.pooled_account_fen))
            out.append(Posting(PENSIONS_PAYABLE, -event.amount_fen))
            if event.deduction_fen:
                out.append(Posting(OVERPAYMENT_RECEIVABLE, -event.deduction_fen))
        case P.PensionPaymentReversed():
            out = [individual(src, pid, amt)
                   for src, amt in sorted(event.account_by_source_fen.items()) if amt]
            out.append(Posting(POOLED, -(event.basic_fen + event.pooled_account_fen)))
            out.append(Posting(PENSIONS_PAYABLE, event.amount_fen))
            if event.deduction_fen:
                out.append(Posting(OVERPAYMENT_RECEIVABLE, event.deduction_fen))
        case B.Funded():
            out = [Posting(IN_FLIGHT, event.total_fen), Posting(EXPENDITURE, -event.total_fen)]
        case B.PaymentsSettled():
            total = sum(o.amount_fen for o in event.items)
            out = [Posting(PENSIONS_PAYABLE, total), Posting(IN_FLIGHT, -total)] if total else []
        case B.PaymentsFailed():
            total = sum(o.amount_fen for o in event.items)
            out = [Posting(EXPENDITURE, total), Posting(IN_FLIGHT, -total)] if total else []
        case B.PaymentsReturned():
            total = sum(o.amount_fen for o in event.items)
            out = ([Posting(EXPENDITURE, total), Posting(PENSIONS_PAYABLE, -total)]
                   if total else [])
        case Fund.TreasuryFundsReceived():
            if event.purpose == "basic_pension":
                credit = POOLED
            elif event.purpose == "on_behalf":
                credit = f"{SUBSIDY_RECEIVABLE}.on_behalf"
            else:
                credit = f"{SUBSIDY_RECEIVABLE}.{event.level}"

            out = [Posting(FISCAL, event.amount_fen), Posting(credit, -event.amount_fen)]
        case Fund.Transferred():
            out = [Posting(BANK_ACCOUNTS[event.to_account], event.amount_fen),
                   Posting(BANK_ACCOUNTS[event.from_account], -event.amount_fen)]
        case Fund.BankInterestEarned():
            out = [Posting(BANK_ACCOUNTS[event.account], event.amount_fen),
                   Posting(INTEREST_EARNED, -event.amount_fen)]
        case Fund.PaymentReturned():
            out = [Posting(EXPENDITURE, event.amount_fen), Posting(IN_FLIGHT, -event.amount_fen)]
        case _:
            out = []
    # A contribution paid wholly on behalf books nothing to the income account.
    out = [p for p in out if p.amount_fen]
    assert sum(p.amount_fen for p in out) == 0, (type(event).__name__, out)
    return out


def guarded_deltas(events: Iterable[Any]) -> dict[str, int]:
    """Net change to each guarded bank/asset account over a set of events."""
    deltas: dict[str, int] = {}
    for e in events:
        for p in postings_for(e):
            if p.account in GUARDED_ACCOUNTS:
                deltas[p.account] = deltas.get(p.account, 0) + p.amount_fen
    return {k: v for k, v in deltas.items() if v}
