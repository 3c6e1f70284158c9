"""Participants view: one row per participant (the register the county report, the
statement heading and the pensioner roster read) and the years each one contributed.

Personal data stays encrypted at rest: the view keeps the masked ID in clear and the ID
number and name only in `pii`, sealed with the ledger's cipher when it has one. Bank
details are not copied at all: bank_ref names the event that holds them, for the payout
engine to read, and bank_last4 is what a screen may show.

Dates for "as of" questions are the business dates the events carry (enrol_date, the
pension start month, date_of_death, the termination's effective_date), not the time the
ledger learned of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import date
from operator import attrgetter
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import Cipher

from ledger import resident_id
from ledger.aggregates.participant import DEATH_CHECK_REASONS, HOLD_REASONS
from ledger.aggregates.participant import Participant as P
from ledger.projections.items import Item
from ledger.projections.tables import TableSpec, col, key
from ledger.projections.values import as_bytes, as_date, as_uuid
from ledger.projections.view import Row, View, Write

PEOPLE = TableSpec("proj_participants", (
    key("participant_id", "uuid"),
    col("id_masked", "text"),
    col("pii", "bytes"),               # {"id_number", "name"}, sealed with the cipher
    col("township", "text"),
    col("village", "text"),
    col("birth_date", "date"),
    col("enrol_date", "date"),
    col("identity_groups", "text"),    # JSON [[since, group], ...] in date order
    col("status", "text"),
    col("pension", "text"),            # JSON of the approval, NULL before
    col("pension_from", "date"),       # first day of the start month
    col("suspended_from", "text"),     # YYYY-MM while suspended
    col("date_of_death", "date"),
    col("ended_on", "date"),           # death or termination, whichever came first
    col("ended_reason", "text"),
    col("closed", "int"),              # 1 once the account was paid out
    col("overpayment_fen", "int"),     # outstanding
    col("bank_ref", "text"),           # "<participant id>@<version>" of the bank details
    col("bank_last4", "text"),
    col("payment_hold", "text"),       # the bank's reason code until the details change
    col("paid_months", "text"),        # JSON [YYYY-MM, ...] paid and not reversed
    col("last_paid_month", "text"),
), indexes=(("township", "village"),))
YEARS = TableSpec("proj_participant_years", (
    key("participant_id", "uuid"),
    key("year", "int"),
    col("back_payment", "int"),
), indexes=(("year",),), append=True)  # the ledger books one contribution a year
PAYMENTS = TableSpec("proj_pension_payments", (
    col("participant_id", "uuid"),
    col("value_date", "date"),
    col("amount_fen", "int"),          # paid out; a reversal is a negative row
), indexes=(("value_date",),), append=True)

# Events that change a participant's row after enrolment. Matched by exact type: an
# isinstance() on pydantic classes (ABCMeta) costs more than the rest of apply().
HEADER_EVENTS: frozenset[type] = frozenset((
    P.IdentityGroupChanged, P.BankDetailsChanged, P.PensionApproved, P.Suspended, P.Resumed,
    P.Died, P.Terminated, P.BalanceSettled, P.OverpaymentAssessed, P.OverpaymentRecovered,
    P.PensionPaid, P.PensionPaymentReversed))
PAYMENT_EVENTS = (P.PensionPaid, P.PensionPaymentReversed)
ENROLLED = P.Enrolled
CONTRIBUTION = P.ContributionReceived


@dataclass(slots=True)
class Person:
    participant_id: UUID
    id_masked: str
    pii: bytes
    township: str
    village: str
    birth_date: date
    enrol_date: date
    identity_groups: str
    status: str
    pension: str | None = None
    pension_from: date | None = None
    suspended_from: str | None = None
    date_of_death: date | None = None
    ended_on: date | None = None
    ended_reason: str | None = None
    closed: int = 0
    overpayment_fen: int = 0
    bank_ref: str | None = None
    bank_last4: str | None = None
    payment_hold: str | None = None
    paid_months: str = "[]"
    last_paid_month: str | None = None

    def row(self) -> Row:
        row: Row = ROW_OF(self)
        return row

    @classmethod
    def from_row(cls, row: Row) -> Person:
        values = dict(zip(FIELDS, row, strict=True))
        values["participant_id"] = as_uuid(values["participant_id"])
        values["pii"] = as_bytes(values["pii"])
        for name in ("birth_date", "enrol_date", "pension_from", "date_of_death", "ended_on"):
            values[name] = as_date(values[name])
        return cls(**values)


FIELDS = tuple(f.name for f in fields(Person))
ROW_OF = attrgetter(*FIELDS)
assert tuple(c.name for c in PEOPLE.columns) == FIELDS


def seal(cipher: Cipher | None, data: dict[str, str]) -> bytes:
    plain = orjson.dumps(data)
    return cipher.encrypt(plain) if cipher else plain


def unseal(cipher: Cipher | None, data: bytes) -> dict[str, str]:
    plain = cipher.decrypt(data) if cipher else data
    out: dict[str, str] = orjson.loads(plain)
    return out


def earliest(a: date | None, b: date) -> date:
    return b if a is None or b < a else a


def pension_json(e: Any) -> str:
    return orjson.dumps({
        "start_month": e.start_month,
        "basic_components_fen": e.basic.model_dump(),
        "basic_fen": e.basic.total_fen(),
        "account_pension_fen": e.account_pension_fen,
        "account_balance_at_start_fen": e.account_balance_fen,
        "contribution_years": e.contribution_years,
        "transitional": e.transitional,
        "rule_version": e.rule_version,
    }).decode()


class ParticipantsView(View):
    name = "participants"
    version = 2
    tables = (PEOPLE, YEARS, PAYMENTS)

    def __init__(self, cipher: Cipher | None) -> None:
        self._cipher = cipher
        self._people: dict[UUID, Person] = {}

    def missing(self, items: Sequence[Item]) -> dict[str, set[UUID]]:
        enrolled_here = {i.event.originator_id for i in items if type(i.event) is ENROLLED}
        need = {i.event.originator_id for i in items
                if type(i.event) in HEADER_EVENTS and i.event.originator_id not in self._people}
        need -= enrolled_here
        return {PEOPLE.name: need} if need else {}

    def load(self, table: str, rows: Sequence[Row]) -> None:
        assert table == PEOPLE.name
        for row in rows:
            person = Person.from_row(row)
            self._people[person.participant_id] = person

    def apply(self, items: Sequence[Item]) -> list[Write]:
        dirty: dict[UUID, Person] = {}
        enrolled: set[UUID] = set()  # rows new to the table: inserted, not merged
        years: dict[tuple[UUID, int], Row] = {}
        payments: list[Row] = []
        for item in items:
            if not item.participant:
                continue
            e = item.event
            kind = type(e)
            if kind is CONTRIBUTION:
                pid = e.originator_id
                years[(pid, e.year)] = (pid, e.year, int(e.back_payment))
                continue
            if kind is ENROLLED:
                pid = e.originator_id
                person = self._enrol(e)
                enrolled.add(pid)
            elif kind in HEADER_EVENTS:
                pid = e.originator_id
                person = self._people[pid]
                self._change(person, e)
                if kind in PAYMENT_EVENTS:
                    sign = 1 if kind is P.PensionPaid else -1
                    payments.append((pid, e.value_date, sign * e.amount_fen))
            else:
                continue
            self._people[pid] = person
            dirty[pid] = person
        return [Write(PEOPLE.name, [p.row() for pid, p in dirty.items() if pid in enrolled],
                      fresh=True),
                Write(PEOPLE.name, [p.row() for pid, p in dirty.items() if pid not in enrolled]),
                Write(YEARS.name, list(years.values())),
                Write(PAYMENTS.name, payments)]

    def _enrol(self, e: Any) -> Person:
        bank = e.bank
        return Person(
            participant_id=e.originator_id, id_masked=resident_id.mask(e.id_number),
            pii=seal(self._cipher, {"id_number": e.id_number, "name": e.name}),
            township=e.township, village=e.village, birth_date=e.birth_date,
            enrol_date=e.enrol_date,
            identity_groups=orjson.dumps([[e.enrol_date.isoformat(), e.identity_group]]).decode(),
            status="enrolled",
            bank_ref=f"{e.originator_id}@{e.originator_version}" if bank else None,
            bank_last4=bank.account_number[-4:] if bank else None)

    def _change(self, p: Person, e: Any) -> None:
        """The same changes the aggregate's apply() makes, to the columns kept here."""
        match e:
            case P.IdentityGroupChanged():
                groups = orjson.loads(p.identity_groups)
                groups.append([e.effective_from.isoformat(), e.identity_group])
                p.identity_groups = orjson.dumps(sorted(groups)).decode()
            case P.BankDetailsChanged():
                p.bank_ref = f"{e.originator_id}@{e.originator_version}"
                p.bank_last4 = e.bank.account_number[-4:]
                p.payment_hold = None
            case P.PensionApproved():
                p.status = "pensioner"
                p.pension = pension_json(e)
                year, month = e.start_month.split("-")
                p.pension_from = date(int(year), int(month), 1)
            case P.Suspended():
                p.status = "suspended"
                p.suspended_from = e.from_month
            case P.Resumed():
                p.status = "pensioner"
                p.suspended_from = None
            case P.Died():
                p.status = "deceased"
                p.date_of_death = e.date_of_death
                p.ended_on = earliest(p.ended_on, e.date_of_death)
            case P.Terminated():
                if p.status != "deceased":
                    p.status = "terminated"
                p.ended_on = earliest(p.ended_on, e.effective_date)
                p.ended_reason = e.reason_code
            case P.BalanceSettled():
                p.closed = 1
            case P.OverpaymentAssessed():
                p.overpayment_fen += e.amount_fen
            case P.OverpaymentRecovered():
                p.overpayment_fen -= e.amount_fen
                assert p.overpayment_fen >= 0
            case P.PensionPaid():
                self._paid(p, add=e.months)
                p.overpayment_fen -= e.deduction_fen
                assert p.overpayment_fen >= 0
            case P.PensionPaymentReversed():
                self._paid(p, remove=e.months)
                p.overpayment_fen += e.deduction_fen
                if e.reason_code in HOLD_REASONS:
                    p.payment_hold = e.reason_code
                if e.reason_code in DEATH_CHECK_REASONS and p.status == "pensioner":
                    p.status = "suspended"
                    p.suspended_from = min(e.months)
            case _:
                raise AssertionError(type(e).__name__)

    @staticmethod
    def _paid(p: Person, add: Sequence[str] = (), remove: Sequence[str] = ()) -> None:
        months = set(orjson.loads(p.paid_months))
        assert not months & set(add) and set(remove) <= months, (p.participant_id, add, remove)
        months = (months | set(add)) - set(remove)
        p.paid_months = orjson.dumps(sorted(months)).decode()
        p.last_paid_month = max(months) if months else None

    def forget(self) -> None:
        self._people.clear()

    def after_commit(self) -> None:
        # Rows are kept for one batch only: after enrolment a participant's row changes
        # rarely, and a cache of every participant made the garbage collector walk
        # hundreds of thousands of objects again and again (fetching the few rows a
        # batch changes costs one query).
        self._people.clear()
