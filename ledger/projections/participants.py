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

from ledger import jsonbytes, resident_id
from ledger.aggregates.participant import DEATH_CHECK_REASONS, HOLD_REASONS
from ledger.postings import PARTICIPANT
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
    col("participant_id", "uuid"),
    col("year", "int"),
    col("back_payment", "int"),
    col("bookings", "int"),            # 1 a contribution, -1 a reversal: a year counts
), indexes=(("year",), ("participant_id",)), append=True)  # while its sum is above 0
PAYMENTS = TableSpec("proj_pension_payments", (
    col("participant_id", "uuid"),
    col("value_date", "date"),
    col("amount_fen", "int"),          # paid out; a reversal is a negative row
), indexes=(("value_date",),), append=True)

# Events that change a participant's row after enrolment, by topic.
HEADER_EVENTS = frozenset(PARTICIPANT + kind for kind in (
    "IdentityGroupChanged", "BankDetailsChanged", "PensionApproved", "PensionRevoked",
    "Suspended", "Resumed",
    "Died", "Terminated", "BalanceSettled", "OverpaymentAssessed", "OverpaymentRecovered",
    "PensionPaid", "PensionPaymentReversed", "PensionOwedAtDeath"))
PAID = PARTICIPANT + "PensionPaid"
REVERSED = PARTICIPANT + "PensionPaymentReversed"
ENROLLED = PARTICIPANT + "Enrolled"
CONTRIBUTION = PARTICIPANT + "ContributionReceived"
CONTRIBUTION_REVERSED = PARTICIPANT + "ContributionReversed"
# The parts of BasicPensionComponents.total_fen().
BASIC_PARTS = ("central_fen", "province_fen", "city_fen", "county_fen",
               "long_contribution_fen", "age_extra_fen")


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
    plain = jsonbytes.dumps(data)  # a rebuild keeps a batch of them
    return cipher.encrypt(plain) if cipher else plain


def unseal(cipher: Cipher | None, data: bytes) -> dict[str, str]:
    plain = cipher.decrypt(data) if cipher else data
    out: dict[str, str] = orjson.loads(plain)
    return out


def earliest(a: date | None, b: date) -> date:
    return b if a is None or b < a else a


def pension_json(e: dict[str, Any]) -> str:
    """The approval as the roster and the statement show it, from PensionApproved's fields."""
    basic = e["basic"]
    return orjson.dumps({
        "start_month": e["start_month"],
        "basic_components_fen": basic,
        "basic_fen": sum(basic[part] for part in BASIC_PARTS),
        "account_pension_fen": e["account_pension_fen"],
        "account_balance_at_start_fen": e["account_balance_fen"],
        "contribution_years": e["contribution_years"],
        "transitional": e["transitional"],
        "rule_version": e["rule_version"],
    }).decode()


class ParticipantsView(View):
    name = "participants"
    version = 3
    tables = (PEOPLE, YEARS, PAYMENTS)

    def __init__(self, cipher: Cipher | None) -> None:
        self._cipher = cipher
        # Keyed by the id's bytes (items.StoredRow).
        self._people: dict[bytes, Person] = {}

    def topics(self) -> frozenset[str]:
        return HEADER_EVENTS | {ENROLLED, CONTRIBUTION, CONTRIBUTION_REVERSED}

    def missing(self, items: Sequence[Item]) -> dict[str, set[UUID]]:
        people = self._people
        enrolled_here = {i[1] for i in items if i[3] == ENROLLED}
        need = {UUID(bytes=i[1]) for i in items if i[3] in HEADER_EVENTS
                and i[1] not in people and i[1] not in enrolled_here}
        return {PEOPLE.name: need} if need else {}

    def load(self, table: str, rows: Sequence[Row]) -> None:
        assert table == PEOPLE.name
        for row in rows:
            person = Person.from_row(row)
            self._people[person.participant_id.bytes] = person

    def apply(self, items: Sequence[Item]) -> list[Write]:
        people = self._people
        dirty: dict[bytes, Person] = {}
        enrolled: set[bytes] = set()  # rows new to the table: inserted, not merged
        years: list[Row] = []
        payments: list[Row] = []
        for _, pid, version, topic, e, _, _ in items:
            if topic in (CONTRIBUTION, CONTRIBUTION_REVERSED):
                years.append((pid, e["year"], int(e.get("back_payment", False)),
                              1 if topic == CONTRIBUTION else -1))
                continue
            if topic == ENROLLED:
                person = self._enrol(UUID(bytes=pid), version, e)
                enrolled.add(pid)
            elif topic in HEADER_EVENTS:
                person = people[pid]
                self._change(person, topic, version, e)
                if topic in (PAID, REVERSED):
                    sign = 1 if topic == PAID else -1
                    payments.append((pid, date.fromisoformat(e["value_date"]),
                                     sign * e["amount_fen"]))
            else:
                continue
            people[pid] = person
            dirty[pid] = person
        return [Write(PEOPLE.name, [p.row() for pid, p in dirty.items() if pid in enrolled],
                      fresh=True),
                Write(PEOPLE.name, [p.row() for pid, p in dirty.items() if pid not in enrolled]),
                Write(YEARS.name, years),
                Write(PAYMENTS.name, payments)]

    def _enrol(self, pid: UUID, version: int, e: dict[str, Any]) -> Person:
        bank = e.get("bank")
        enrol_date = e["enrol_date"]
        return Person(
            participant_id=pid, id_masked=resident_id.mask(e["id_number"]),
            pii=seal(self._cipher, {"id_number": e["id_number"], "name": e["name"]}),
            township=e["township"], village=e["village"],
            birth_date=date.fromisoformat(e["birth_date"]),
            enrol_date=date.fromisoformat(enrol_date),
            identity_groups=orjson.dumps([[enrol_date, e["identity_group"]]]).decode(),
            status="enrolled",
            bank_ref=f"{pid}@{version}" if bank else None,
            bank_last4=bank["account_number"][-4:] if bank else None)

    def _change(self, p: Person, topic: str, version: int, e: dict[str, Any]) -> None:
        """The same changes the aggregate's apply() makes, to the columns kept here."""
        kind = topic[len(PARTICIPANT):]
        if kind == "IdentityGroupChanged":
            groups = orjson.loads(p.identity_groups)
            groups.append([e["effective_from"], e["identity_group"]])
            # By date only, and stable: of two changes from the same day the later stands,
            # as on the aggregate (sorting by group too made the view disagree).
            p.identity_groups = orjson.dumps(sorted(groups, key=lambda g: g[0])).decode()
        elif kind == "BankDetailsChanged":
            p.bank_ref = f"{p.participant_id}@{version}"
            p.bank_last4 = e["bank"]["account_number"][-4:]
            p.payment_hold = None
        elif kind == "PensionApproved":
            p.status = "pensioner"
            p.pension = pension_json(e)
            year, month = e["start_month"].split("-")
            p.pension_from = date(int(year), int(month), 1)
        elif kind == "PensionRevoked":
            p.status = "enrolled"
            p.pension = None
            p.pension_from = None
        elif kind == "Suspended":
            p.status = "suspended"
            p.suspended_from = e["from_month"]
        elif kind == "Resumed":
            p.status = "pensioner"
            p.suspended_from = None
        elif kind == "Died":
            died = date.fromisoformat(e["date_of_death"])
            p.status = "deceased"
            p.date_of_death = died
            p.ended_on = earliest(p.ended_on, died)
        elif kind == "Terminated":
            if p.status != "deceased":
                p.status = "terminated"
            p.ended_on = earliest(p.ended_on, date.fromisoformat(e["effective_date"]))
            p.ended_reason = e["reason_code"]
        elif kind == "BalanceSettled":
            p.closed = 1
        elif kind == "OverpaymentAssessed":
            p.overpayment_fen += e["amount_fen"]
        elif kind == "OverpaymentRecovered":
            p.overpayment_fen -= e["amount_fen"]
            assert p.overpayment_fen >= 0
        elif kind == "PensionPaid":
            self._paid(p, add=e["months"])
            p.overpayment_fen -= e["deduction_fen"]
            assert p.overpayment_fen >= 0
        elif kind == "PensionOwedAtDeath":
            # The months are settled (owed to the heirs as a one-off), not paid out.
            self._paid(p, add=e["months"])
            p.overpayment_fen -= e["deduction_fen"]
            assert p.overpayment_fen >= 0
        elif kind == "PensionPaymentReversed":
            months = e["months"]
            self._paid(p, remove=months)
            p.overpayment_fen += e["deduction_fen"]
            if e["reason_code"] in HOLD_REASONS:
                p.payment_hold = e["reason_code"]
            if e["reason_code"] in DEATH_CHECK_REASONS and p.status == "pensioner":
                p.status = "suspended"
                p.suspended_from = min(months)
        else:
            raise AssertionError(kind)

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
