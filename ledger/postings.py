"""Double entry: every money event expands, deterministically, into postings that sum to zero.

A posting is (account, amount_fen), debit positive, credit negative. Participant
sub-ledger accounts carry the participant id and the source.

Chart of accounts
  Assets       1001 income account (收入户)         1002 fiscal special account (财政专户)
               1003 expenditure account (支出户)    1004 fiscal special account's fixed deposits
               1101 payments in flight at the bank
               1201 overpayment receivable           1202.<level> government subsidy receivable
  Liabilities  2001.<source>/<participant> individual accounts
               2101 pooled basic-pension fund        2201 inheritance payable  2202 refund payable
               2203 funeral grant payable        2204 pension owed at death payable
               2301 pensions payable (sent to the bank, not yet settled)
  Fund result  3001 bank interest earned             3002 interest credited to accounts
  Memorandum   9001 fines for fraud receivable       9002 fines for fraud due to the treasury
               (the treasury's money, not the fund's: they net to zero between themselves)

What each event posts is written once, in RULES: a function of the event's fields by
name, keyed by the event's topic. The write side passes a domain event's fields
(`postings_for`); the projections pass the stored JSON state of the same event
(`postings_of`), without building the event. A rule reads only fields the event class
declares without a default (or uses .get with the class's default), ints, strings and
dicts of ints, which are the same in both forms. To add an event that moves money: write
its rule below and add it to RULES; tests/test_postings.py checks every money event of
the aggregates has one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, cast
from uuid import UUID

from eventsourcing.utils import get_topic

INCOME = "1001"
FISCAL = "1002"
EXPENDITURE = "1003"
FIXED_DEPOSITS = "1004"
IN_FLIGHT = "1101"
OVERPAYMENT_RECEIVABLE = "1201"
SUBSIDY_RECEIVABLE = "1202"
INDIVIDUAL = "2001"
POOLED = "2101"
INHERITANCE_PAYABLE = "2201"
REFUND_PAYABLE = "2202"
FUNERAL_GRANT_PAYABLE = "2203"
OWED_AT_DEATH_PAYABLE = "2204"
PENSIONS_PAYABLE = "2301"
INTEREST_EARNED = "3001"
INTEREST_CREDITED = "3002"
FINES_RECEIVABLE = "9001"
FINES_DUE_TO_TREASURY = "9002"

BANK_ACCOUNTS = {"income": INCOME, "fiscal": FISCAL, "expenditure": EXPENDITURE}
# Asset accounts whose balance may never go negative; guarded in the write transaction.
GUARDED_ACCOUNTS = (INCOME, FISCAL, EXPENDITURE, FIXED_DEPOSITS, IN_FLIGHT)

ACCOUNT_NAMES = {
    INCOME: "income account (收入户)",
    FISCAL: "fiscal special account (财政专户)",
    EXPENDITURE: "expenditure account (支出户)",
    FIXED_DEPOSITS: "fiscal special account: fixed deposits (财政专户定期存款)",
    IN_FLIGHT: "payments in flight at the bank",
    OVERPAYMENT_RECEIVABLE: "overpayment receivable",
    SUBSIDY_RECEIVABLE: "government subsidy receivable",
    INDIVIDUAL: "individual accounts (个人账户)",
    POOLED: "pooled basic-pension fund",
    INHERITANCE_PAYABLE: "inheritance payable",
    REFUND_PAYABLE: "refund payable",
    FUNERAL_GRANT_PAYABLE: "funeral grant payable (丧葬补助金)",
    OWED_AT_DEATH_PAYABLE: "pension owed at death payable (应发未发养老金)",
    PENSIONS_PAYABLE: "pensions payable",
    INTEREST_EARNED: "bank interest earned",
    INTEREST_CREDITED: "interest credited to individual accounts",
    FINES_RECEIVABLE: "fines for fraud receivable (memorandum)",
    FINES_DUE_TO_TREASURY: "fines for fraud due to the treasury (memorandum)",
}


class Posting(NamedTuple):
    account: str          # e.g. "1001", "1202.county", "2001.contribution"
    amount_fen: int       # debit positive, credit negative
    participant_id: UUID | None = None


def individual(source: str, pid: UUID, amount_fen: int) -> Posting:
    """A credit (amount_fen > 0 means money into the individual account)."""
    return Posting(f"{INDIVIDUAL}.{source}", -amount_fen, pid)


# An event's fields by name: a domain event's __dict__ or its stored (JSON) state.
Fields = Mapping[str, Any]
# What a rule returns: plain (account, amount_fen, participant_id) tuples, equal to the
# Postings they stand for; the projections read millions of them, and a NamedTuple costs a
# Python call to build.
# The participant id is as the caller holds it: a UUID (the write side) or its 16 bytes
# (the projections, which read ids as bytes: a UUID object costs a Python call to build).
Id = UUID | bytes
Entry = tuple[str, int, Id | None]
Rule = Callable[[Fields, Id], list[Entry]]


def _sub(source: str, pid: Id, amount_fen: int) -> Entry:
    """individual() as an Entry."""
    return (f"{INDIVIDUAL}.{source}", -amount_fen, pid)


# ---- participants ------------------------------------------------------------------------

def _contribution(e: Fields, pid: Id) -> list[Entry]:
    amount = e["amount_fen"]
    return [(INCOME, amount, None), _sub("contribution", pid, amount)]


def _contribution_reversed(e: Fields, pid: Id) -> list[Entry]:
    # The payer's money leaves the income account the way it came; the government no
    # longer owes what it was to pay on their behalf (or, paid already, is owed it back).
    amount, on_behalf = e["amount_fen"], e["on_behalf_fen"]
    return [(INCOME, -amount, None), _sub("contribution", pid, -amount),
            (f"{SUBSIDY_RECEIVABLE}.on_behalf", -on_behalf, None),
            _sub("on_behalf", pid, -on_behalf)]


def _paid_on_behalf(e: Fields, pid: Id) -> list[Entry]:
    amount = e["amount_fen"]
    return [(f"{SUBSIDY_RECEIVABLE}.on_behalf", amount, None),
            _sub("on_behalf", pid, amount)]


def _subsidy(e: Fields, pid: Id) -> list[Entry]:
    amount, level = e["amount_fen"], e["level"]
    return [(f"{SUBSIDY_RECEIVABLE}.{level}", amount, None),
            _sub(f"subsidy_{level}", pid, amount)]


def _subsidy_reversed(e: Fields, pid: Id) -> list[Entry]:
    amount, level = e["amount_fen"], e["level"]
    return [(f"{SUBSIDY_RECEIVABLE}.{level}", -amount, None),
            _sub(f"subsidy_{level}", pid, -amount)]


def _collective(e: Fields, pid: Id) -> list[Entry]:
    amount = e["amount_fen"]
    return [(INCOME, amount, None), _sub("collective", pid, amount)]


def _interest(e: Fields, pid: Id) -> list[Entry]:
    amount = e["amount_fen"]
    return [(INTEREST_CREDITED, amount, None), _sub("interest", pid, amount)]


def _interest_reversed(e: Fields, pid: Id) -> list[Entry]:
    amount = e["amount_fen"]
    return [(INTEREST_CREDITED, -amount, None), _sub("interest", pid, -amount)]


# The payable each one-off kind is owed from (ledger.aggregates.participant.ONE_OFF_KINDS).
ONE_OFF_PAYABLES = {"funeral_grant": FUNERAL_GRANT_PAYABLE, "inheritance": INHERITANCE_PAYABLE,
                    "refund": REFUND_PAYABLE, "pension_owed_at_death": OWED_AT_DEATH_PAYABLE}


def _settled(e: Fields, pid: Id) -> list[Entry]:
    payable = ONE_OFF_PAYABLES[e["how"]]
    out: list[Entry] = []
    for src, amt in sorted(e["by_source_fen"].items()):
        out += [_sub(src, pid, -amt), (payable, -amt, None)]
    for src, amt in sorted(e["forfeited_by_source_fen"].items()):
        out += [_sub(src, pid, -amt), (POOLED, -amt, None)]
    return out


def _overpayment_assessed(e: Fields, pid: Id) -> list[Entry]:
    amount = e["amount_fen"]
    return [(OVERPAYMENT_RECEIVABLE, amount, None), (POOLED, -amount, None)]


def _overpayment_recovered(e: Fields, pid: Id) -> list[Entry]:
    amount = e["amount_fen"]
    if e["channel"] == "family":
        return [(EXPENDITURE, amount, None), (OVERPAYMENT_RECEIVABLE, -amount, None)]
    out = [_sub(src, pid, -amt) for src, amt in sorted(e["by_source_fen"].items())]
    out.append((OVERPAYMENT_RECEIVABLE, -amount, None))
    return out


def _funeral_grant(e: Fields, pid: Id) -> list[Entry]:
    # The pool pays the grant; the part that offsets pension paid after death settles the
    # overpayment receivable, the rest is owed to the payee.
    amount, offset = e["amount_fen"], e["offset_overpayment_fen"]
    return [(POOLED, amount, None), (OVERPAYMENT_RECEIVABLE, -offset, None),
            (FUNERAL_GRANT_PAYABLE, -(amount - offset), None)]


def _one_off_paid(e: Fields, pid: Id) -> list[Entry]:
    amount = e["amount_fen"]
    return [(ONE_OFF_PAYABLES[e["kind"]], amount, None), (PENSIONS_PAYABLE, -amount, None)]


def _one_off_reversed(e: Fields, pid: Id) -> list[Entry]:
    amount = e["amount_fen"]
    return [(PENSIONS_PAYABLE, amount, None), (ONE_OFF_PAYABLES[e["kind"]], -amount, None)]


def _pension_paid(e: Fields, pid: Id) -> list[Entry]:
    return _pension_drawn(e, pid, PENSIONS_PAYABLE)


def _owed_at_death(e: Fields, pid: Id) -> list[Entry]:
    # As a pension paid, but owed to the heirs instead of sent to the bank.
    return _pension_drawn(e, pid, OWED_AT_DEATH_PAYABLE)


def _pension_drawn(e: Fields, pid: Id, payable: str) -> list[Entry]:
    # Dr the individual account (by source) and the pool; Cr what is owed (to the bank,
    # or to the heirs) and the overpayment recovered.
    out = [_sub(src, pid, -amt) for src, amt in sorted(e["account_by_source_fen"].items())]
    out.append((POOLED, e["basic_fen"] + e["pooled_account_fen"], None))
    out.append((payable, -e["amount_fen"], None))
    out.append((OVERPAYMENT_RECEIVABLE, -e["deduction_fen"], None))
    return out


def _pension_reversed(e: Fields, pid: Id) -> list[Entry]:
    out = [_sub(src, pid, amt) for src, amt in sorted(e["account_by_source_fen"].items())]
    out.append((POOLED, -(e["basic_fen"] + e["pooled_account_fen"]), None))
    out.append((PENSIONS_PAYABLE, e["amount_fen"], None))
    out.append((OVERPAYMENT_RECEIVABLE, e["deduction_fen"], None))
    return out


# ---- payout batches ----------------------------------------------------------------------

def _outcomes_fen(e: Fields) -> int:
    # Outcomes are models in a domain event and dicts in a stored state.
    return sum(o["amount_fen"] if isinstance(o, dict) else o.amount_fen for o in e["items"])


def _funded(e: Fields, pid: Id) -> list[Entry]:
    total = e["total_fen"]
    return [(IN_FLIGHT, total, None), (EXPENDITURE, -total, None)]


def _settled_by_bank(e: Fields, pid: Id) -> list[Entry]:
    total = _outcomes_fen(e)
    return [(PENSIONS_PAYABLE, total, None), (IN_FLIGHT, -total, None)]


def _failed(e: Fields, pid: Id) -> list[Entry]:
    total = _outcomes_fen(e)
    return [(EXPENDITURE, total, None), (IN_FLIGHT, -total, None)]


def _returned(e: Fields, pid: Id) -> list[Entry]:
    total = _outcomes_fen(e)
    return [(EXPENDITURE, total, None), (PENSIONS_PAYABLE, -total, None)]


# ---- the fund ----------------------------------------------------------------------------

def _treasury(e: Fields, pid: Id) -> list[Entry]:
    purpose = e["purpose"]
    if purpose == "basic_pension":
        credit = POOLED
    elif purpose == "on_behalf":
        credit = f"{SUBSIDY_RECEIVABLE}.on_behalf"
    else:
        credit = f"{SUBSIDY_RECEIVABLE}.{e['level']}"
    amount = e["amount_fen"]
    return [(FISCAL, amount, None), (credit, -amount, None)]


def _transferred(e: Fields, pid: Id) -> list[Entry]:
    amount = e["amount_fen"]
    return [(BANK_ACCOUNTS[e["to_account"]], amount, None),
            (BANK_ACCOUNTS[e["from_account"]], -amount, None)]


def _bank_interest(e: Fields, pid: Id) -> list[Entry]:
    amount = e["amount_fen"]
    return [(BANK_ACCOUNTS[e["account"]], amount, None), (INTEREST_EARNED, -amount, None)]


def _payment_returned(e: Fields, pid: Id) -> list[Entry]:
    amount = e["amount_fen"]
    return [(EXPENDITURE, amount, None), (IN_FLIGHT, -amount, None)]


def _deposit_placed(e: Fields, pid: Id) -> list[Entry]:
    amount = e["amount_fen"]
    return [(FIXED_DEPOSITS, amount, None), (FISCAL, -amount, None)]


def _deposit_withdrawn(e: Fields, pid: Id) -> list[Entry]:
    principal, interest = e["amount_fen"], e["interest_fen"]
    return [(FISCAL, principal + interest, None), (FIXED_DEPOSITS, -principal, None),
            (INTEREST_EARNED, -interest, None)]


def _fine_imposed(e: Fields, pid: Id) -> list[Entry]:
    amount = e["amount_fen"]
    return [(FINES_RECEIVABLE, amount, None), (FINES_DUE_TO_TREASURY, -amount, None)]


def _fine_paid(e: Fields, pid: Id) -> list[Entry]:
    amount = e["amount_fen"]
    return [(FINES_DUE_TO_TREASURY, amount, None), (FINES_RECEIVABLE, -amount, None)]


PARTICIPANT = "ledger.aggregates.participant:Participant."
BATCH = "ledger.aggregates.payout_batch:PayoutBatch."
FUND = "ledger.aggregates.fund:Fund."

# What each event posts, by topic. Events not named here post nothing.
RULES: dict[str, Rule] = {
    PARTICIPANT + "ContributionReceived": _contribution,
    PARTICIPANT + "PaidOnBehalf": _paid_on_behalf,
    PARTICIPANT + "ContributionReversed": _contribution_reversed,
    PARTICIPANT + "SubsidyCredited": _subsidy,
    PARTICIPANT + "SubsidyReversed": _subsidy_reversed,
    PARTICIPANT + "CollectiveSubsidyCredited": _collective,
    PARTICIPANT + "InterestCredited": _interest,
    PARTICIPANT + "InterestReversed": _interest_reversed,
    PARTICIPANT + "BalanceSettled": _settled,
    PARTICIPANT + "OverpaymentAssessed": _overpayment_assessed,
    PARTICIPANT + "OverpaymentRecovered": _overpayment_recovered,
    PARTICIPANT + "FineImposed": _fine_imposed,
    PARTICIPANT + "FinePaid": _fine_paid,
    PARTICIPANT + "PensionPaid": _pension_paid,
    PARTICIPANT + "PensionPaymentReversed": _pension_reversed,
    PARTICIPANT + "PensionOwedAtDeath": _owed_at_death,
    PARTICIPANT + "FuneralGrantAwarded": _funeral_grant,
    PARTICIPANT + "OneOffPaid": _one_off_paid,
    PARTICIPANT + "OneOffPaymentReversed": _one_off_reversed,
    BATCH + "Funded": _funded,
    BATCH + "PaymentsSettled": _settled_by_bank,
    BATCH + "PaymentsFailed": _failed,
    BATCH + "PaymentsReturned": _returned,
    FUND + "TreasuryFundsReceived": _treasury,
    FUND + "Transferred": _transferred,
    FUND + "BankInterestEarned": _bank_interest,
    FUND + "PaymentReturned": _payment_returned,
    FUND + "FixedDepositPlaced": _deposit_placed,
    FUND + "FixedDepositWithdrawn": _deposit_withdrawn,
}


def entries_of(topic: str, fields: Fields, originator_id: Id) -> list[Entry]:
    """The postings of an event given by its topic and fields, as Entries ([] if it moves
    no money)."""
    rule = RULES.get(topic)
    if rule is None:
        return []
    # Zero postings are left out: a contribution paid wholly on behalf books nothing to
    # the income account, a zero interest credit nothing at all.
    out = [p for p in rule(fields, originator_id) if p[1]]
    assert sum([p[1] for p in out]) == 0, (topic, out)
    return out


_TOPICS: dict[type, str] = {}


def postings_for(event: Any) -> list[Posting]:
    """The postings of one domain event ([] for events that move no money)."""
    kind = type(event)
    topic = _TOPICS.get(kind)
    if topic is None:
        topic = _TOPICS[kind] = get_topic(kind)
    pid: UUID = event.originator_id  # so every participant id in the entries is a UUID
    return [Posting(account, amount, cast(UUID | None, who))
            for account, amount, who in entries_of(topic, event.__dict__, pid)]


def guarded_deltas(events: Iterable[Any]) -> dict[str, int]:
    """Net change to each guarded bank/asset account over a set of events."""
    deltas: dict[str, int] = {}
    for e in events:
        for p in postings_for(e):
            if p.account in GUARDED_ACCOUNTS:
                deltas[p.account] = deltas.get(p.account, 0) + p.amount_fen
    return {k: v for k, v in deltas.items() if v}
