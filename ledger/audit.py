"""Tamper evidence: verify the hash chain over the stored events from the database alone.

Each write transaction appends one block: the SHA-256 of every event it stored (over the
stored bytes, ciphertext when encrypted, so no key is needed) and the previous block's hash.
An auditor keeps the latest block hash (the head) outside the system; a later verify that
still finds that head, and every block after it recomputing exactly, proves no stored event
was altered, removed or slipped in.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson

from ledger.postings import INDIVIDUAL, RULES, postings_for
from ledger.store import GENESIS_SHA256, block_sha256, event_sha256

PAGE_EVENTS = 10_000
MAX_PROBLEMS = 100


@dataclass
class ChainReport:
    ok: bool = True
    blocks: int = 0
    events: int = 0
    head_block: int = 0
    head_sha256: str = GENESIS_SHA256
    problems: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.ok = False
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "blocks": self.blocks, "events": self.events,
                "head_block": self.head_block, "head_sha256": self.head_sha256,
                "problems": self.problems}


def verify_chain(ledger: Any, expected_head: str | None = None) -> ChainReport:
    """Recompute every block. expected_head: a head kept outside, which must still be
    in the chain (at the block where it was taken)."""
    import hashlib

    report = ChainReport()
    recorder = ledger.recorder
    prev = GENESIS_SHA256
    last_id = 0
    seen_expected = expected_head is None
    after = 0
    while True:
        blocks = ledger.queries.chain_blocks(after_block=after)
        if not blocks:
            break
        for block_no, first, last, count, digest, prev_sha, block_sha in blocks:
            after = block_no
            report.blocks += 1
            if block_no != report.blocks:
                report.fail(f"block {block_no}: expected block number {report.blocks}")
            if prev_sha != prev:
                report.fail(f"block {block_no}: does not link to the block before it")
            if block_sha256(block_no, first, last, count, digest, prev_sha) != block_sha:
                report.fail(f"block {block_no}: its own hash does not recompute")
            if first <= last_id:
                report.fail(f"block {block_no}: overlaps the block before it")
            h = hashlib.sha256()
            n = 0
            start = first
            while start <= last:
                page = recorder.select_notifications(start=start, limit=PAGE_EVENTS, stop=last)
                if not page:
                    break
                for note in page:
                    h.update(event_sha256(note.id, note.originator_id, note.originator_version,
                                          note.topic, note.state))
                    n += 1
                start = page[-1].id + 1
            if n != count:
                report.fail(f"block {block_no}: holds {n} events, the chain recorded {count}")
            elif h.hexdigest() != digest:
                report.fail(f"block {block_no}: events {first}..{last} were altered")
            report.events += n
            prev = block_sha
            last_id = last
            if block_sha == expected_head:
                seen_expected = True
    report.head_block = report.blocks
    report.head_sha256 = prev
    max_id = recorder.max_notification_id() or 0
    if max_id > last_id:
        report.fail(f"events after {last_id} (up to {max_id}) are outside the chain")
    total = _count_events(ledger)
    if total != report.events:
        report.fail(f"the store holds {total} events; the chain covers {report.events}")
    if not seen_expected:
        report.fail(f"the head kept outside ({expected_head}) is not in the chain: "
                    "history was rewritten")
    return report


def _count_events(ledger: Any) -> int:
    table = ledger.recorder.events_table_name
    rows = ledger.queries.fetch(f"SELECT COUNT(*) FROM {{p}}{table}")
    return int(rows[0][0])


# ---- what the ledger knew at a time -------------------------------------------------------

READ_WINDOW = 10_000  # notification ids read at a time while replaying


def known_through(ledger: Any, known_at: datetime) -> int:
    """The last notification id the ledger had committed at known_at: every write appends
    its hash-chain block, recorded when it commits, so the blocks recorded by then are the
    writes known by then."""
    assert known_at.tzinfo is not None, "known_at must say its time zone"
    # recorded_at is datetime.isoformat() in UTC; with microseconds always written, the
    # text orders as the times do (a stored time without them sorts before any with).
    moment = known_at.astimezone(UTC).isoformat(timespec="microseconds")
    rows = ledger.queries.fetch("SELECT MAX(last_notification_id) FROM {p}event_chain "
                                "WHERE recorded_at <= ?", (moment,))
    return int(rows[0][0] or 0)


def balances_known_at(ledger: Any, known_at: datetime, as_of: date | None = None
                      ) -> dict[str, Any]:
    """Every posting account's balance as the ledger knew it at known_at (a recorded time),
    as of a value date: replayed from the stored events of the writes committed by then,
    through the posting rules the write side and the views use. Independent of the views
    (which answer for what is known now), and slow: it reads every event up to then."""
    from ledger.projections.items import Decoder
    from ledger.projections.reader import reader_for

    upto = known_through(ledger, known_at)
    day = as_of.isoformat() if as_of else None
    read = reader_for(ledger)
    decoder = Decoder(ledger.mapper, RULES)
    accounts: dict[str, int] = {}
    events = 0
    start = 0
    while start < upto:
        stop = min(start + READ_WINDOW, upto)
        for item in decoder.decode(read(start, stop)):
            fields, postings = item[4], item[5]
            events += 1
            if day is not None and fields["value_date"] > day:  # ISO dates order as text
                continue
            for account, amount_fen, _ in postings:
                accounts[account] = accounts.get(account, 0) + amount_fen
        start = stop
    # Every event's postings net to zero, so what was known at any time does.
    assert sum(accounts.values()) == 0, "replayed postings do not net to zero"
    return {"known_at": known_at.isoformat(), "as_of": day, "through_notification": upto,
            "money_events": events,
            "accounts": {a: accounts[a] for a in sorted(accounts) if accounts[a]}}


# ---- what an auditor should look at -------------------------------------------------------

CENTENARIAN_AGE = 100  # still paid at this age: the survival check (生存认证) to look at first
MAX_LISTED = 1_000     # anomalies listed per kind (all are counted)
AUDIT_READ_CHUNK = 1_000  # participants whose events are read per query


def anomalies(ledger: Any, on: date, year: int | None = None) -> dict[str, Any]:
    """What audits of this scheme keep finding (DOMAIN.md, 内控稽核), looked for in the
    ledger's own records:

    - paid_after_death: a dead pensioner's pension paid (and not returned) for a month
      after the month of death, with no overpayment assessed for that month;
    - owed_at_death: a dead pensioner's months up to and including the month of death
      (payment stops from the month after) neither paid nor settled into the heirs'
      payable: recording a death settles them (Ledger.settle_owed_at_death), so these are
      deaths recorded before it did, or months sent back by the bank after the heirs'
      payable was already paid (settled by hand);
    - shared_account: one bank account receiving the pensions of several living
      pensioners (a spouse's joint account, or someone collecting for the dead);
    - centenarian: a pensioner aged 100 or more on `on` still being paid;
    - dead_account_open: someone dead more than a year before `on` for whom the fund still
      holds money: an individual account never settled, or a payable to the heirs never
      sent to the bank;
    - refund_not_made: someone who left the scheme for a reason that refunds the account
      (emigration, the employee scheme, a double enrolment) whose account is not settled,
      or whose refund was never sent to the bank;
    - hardship_without_on_behalf: a contributor (under 60) of a hardship group for whom
      nothing was booked for `year` (default: the year before `on`, whose collection has
      closed), so the government's payment on their behalf (代缴) was never made;
    - deposit_not_withdrawn: a fixed deposit of the fiscal special account that matured
      before `on` and was still held on it: money the bank renewed without its renewal
      being booked, or left at the demand rate;
    - income_not_swept: a month ending in the year before `on` at whose end the income
      account held money: the law wants it swept to the fiscal special account monthly
      (read from the balances view, brought up to date first);
    - payment_held: a pensioner whose payment the bank failed (a closed or wrong account)
      and who is still held on `on` with PAYMENT_HELD_MONTHS or more months owed: the bank
      details were never corrected, so the failed money is never sent again (失败帐重发).

    The registers written with the events are read (every pensioner; every participant who
    died, left, or is in a hardship group); those who died or left are replayed (their
    payments, assessments and settlements are events)."""
    from ledger import resident_id
    from ledger.aggregates.participant import Participant, participant_id
    from ledger.payout import months_owed, owed_at_death

    year = on.year - 1 if year is None else year
    assert 1900 < year < 3000, year
    ruleset = ledger.ruleset()

    def rules_on(day: date) -> Any:
        return ruleset.in_force(day, "period")

    found: dict[str, list[dict[str, Any]]] = {kind: [] for kind in ANOMALY_KINDS}
    counts = dict.fromkeys(found, 0)
    accounts: dict[tuple[str, str], list[Any]] = {}
    checked = 0

    def add(kind: str, item: dict[str, Any]) -> None:
        counts[kind] += 1
        if len(found[kind]) < MAX_LISTED:
            found[kind].append(item)

    for f in ledger.pensioners():
        checked += 1
        if f.status not in ("pensioner", "suspended"):
            continue
        if f.bank is not None:
            accounts.setdefault((f.bank.bank_code, f.bank.account_number), []).append(f)
        if f.status == "pensioner" and f.payment_hold is not None:
            # What the hold keeps back: the months owed if it were lifted now.
            held = months_owed(replace(f, payment_hold=None), on.strftime("%Y-%m"))
            if len(held) >= PAYMENT_HELD_MONTHS:
                add("payment_held", {"id_number": f.id_number, "name": f.name,
                                     "hold": f.payment_hold, "months": held})
        age = resident_id.age_on(f.birth_date, on)
        if f.status == "pensioner" and age >= CENTENARIAN_AGE:
            add("centenarian", {"id_number": f.id_number, "name": f.name, "age": age,
                                "last_paid_month": f.paid_through})
    for (bank_code, number), people in accounts.items():
        if len(people) > 1:
            add("shared_account", {
                "bank_code": bank_code, "account_number": number,
                "pensioners": [{"id_number": p.id_number, "name": p.name} for p in people]})

    year_end = date(year, 12, 31)
    params = rules_on(year_end).parameters
    hardship = sorted(g for g, pct in params.on_behalf_percent.items() if pct > 0)
    hardship_set = set(hardship)
    gone: list[UUID] = []
    participants = 0
    for row in ledger.queries.register_rows_where(("deceased", "terminated"), hardship):
        participants += 1
        if row.status in ("deceased", "terminated"):
            gone.append(row.participant_id)
        elif (row.status == "enrolled"
              and _owed_on_behalf(row, year, year_end, hardship_set, params.pension_age)):
            member = ledger.repository.get(row.participant_id)
            add("hardship_without_on_behalf", {
                "id_number": member.id_number, "name": member.name, "year": year,
                "identity_group": member.identity_group_on(year_end)})
    a_year_ago = _a_year_before(on)
    for pid, events in ledger.participant_events(gone, AUDIT_READ_CHUNK):
        # The events read once: the aggregate is their replay, the assessments among them.
        p: Any = None
        for e in events:
            p = e.mutate(p)
        assert p is not None and p.id == pid == participant_id(p.id_number)
        unpaid = {kind: payable.amount_fen for kind, payable in sorted(p.payables.items())
                  if payable.paid_by is None and payable.amount_fen}
        account_fen = 0 if p.closed else p.balance_fen
        if p.date_of_death is None:
            reason = p.termination[0] if p.termination else None
            if reason in REFUND_REASONS and (account_fen or unpaid.get("refund")):
                add("refund_not_made", {
                    "id_number": p.id_number, "name": p.name, "reason": reason,
                    "effective_date": p.termination[1].isoformat(),
                    "account_fen": account_fen, "unpaid_fen": unpaid.get("refund", 0)})
            continue
        if p.date_of_death <= a_year_ago and (account_fen or unpaid):
            add("dead_account_open", {
                "id_number": p.id_number, "name": p.name,
                "date_of_death": p.date_of_death.isoformat(), "account_fen": account_fen,
                "unpaid": unpaid, "held_fen": account_fen + sum(unpaid.values())})
        if p.pension is None:
            continue
        death_month = p.date_of_death.strftime("%Y-%m")
        assessed = {m for e in events
                    if isinstance(e, Participant.OverpaymentAssessed) for m in e.months}
        months = sorted(m for m in p.paid_months if m > death_month and m not in assessed)
        if months:
            add("paid_after_death", {"id_number": p.id_number, "name": p.name,
                                     "date_of_death": p.date_of_death.isoformat(),
                                     "months": months})
        owed = owed_at_death(p, rules_on)
        if owed is not None:
            add("owed_at_death", {"id_number": p.id_number, "name": p.name,
                                  "date_of_death": p.date_of_death.isoformat(),
                                  "months": list(owed.months), "amount_fen": owed.amount_fen})
    for month_end, balance_fen in _income_at_month_ends(ledger, on):
        if balance_fen:
            add("income_not_swept", {"month": month_end.strftime("%Y-%m"),
                                     "month_end": month_end.isoformat(),
                                     "balance_fen": balance_fen})
    for d in ledger.fund().fixed_deposits(on):
        if d.maturity_date < on:
            add("deposit_not_withdrawn", {
                "deposit_no": d.deposit_no, "principal_fen": d.principal_fen,
                "maturity_date": d.maturity_date.isoformat(),
                "days_past_maturity": (on - d.maturity_date).days})
    return {"on": on.isoformat(), "year": year, "pensioners_checked": checked,
            "participants_checked": participants, "counts": counts, "anomalies": found}


ANOMALY_KINDS = ("paid_after_death", "owed_at_death", "shared_account", "centenarian",
                 "dead_account_open", "refund_not_made", "hardship_without_on_behalf",
                 "deposit_not_withdrawn", "income_not_swept", "payment_held")
PAYMENT_HELD_MONTHS = 2  # the failed month and the next run's, held
MONTHS_SWEPT_CHECKED = 12


def _income_at_month_ends(ledger: Any, on: date) -> list[tuple[date, int]]:
    """The income account's balance at each of the last MONTHS_SWEPT_CHECKED month ends
    before `on`, oldest first."""
    from ledger.projections import ProjectionRunner, Views

    ProjectionRunner(ledger).run_until_caught_up()
    views = Views(ledger)
    out = []
    month_end = on.replace(day=1) - timedelta(days=1)
    for _ in range(MONTHS_SWEPT_CHECKED):
        out.append((month_end, views.fund_balances(month_end)["income_fen"]))
        month_end = month_end.replace(day=1) - timedelta(days=1)
    return out[::-1]
# Leaving the scheme for these refunds the account (DOMAIN.md: loss of nationality, double
# enrolment with the employee scheme); a transfer out moves it, a death is inherited.
REFUND_REASONS = ("emigration", "employee_scheme", "double_enrolment")


def _a_year_before(on: date) -> date:
    try:
        return on.replace(year=on.year - 1)
    except ValueError:  # 29 February
        return on.replace(year=on.year - 1, day=28)


def _owed_on_behalf(row: Any, year: int, year_end: date, hardship: set[str],
                    pension_age: int) -> bool:
    """A register row of a contributor in a hardship group at the end of `year`, enrolled
    by then, under pension age all year, with nothing booked for that year."""
    from ledger.projections.read_people import group_on

    groups = orjson.loads(row.identity_groups)   # [[since, group], ...], since ISO, sorted
    if not groups or groups[0][0] > year_end.isoformat():
        return False  # enrolled after the year
    if group_on(groups, year_end) not in hardship:
        return False
    if date.fromisoformat(row.birth_date).year + pension_age <= year:
        return False  # of pension age during or before the year: no longer contributing
    return str(year) not in orjson.loads(row.contributed_years)


# ---- one participant's history ------------------------------------------------------------

MAX_HISTORY_EVENTS = 100_000  # a participant's life is a few hundred events


def history(ledger: Any, id_number: str) -> dict[str, Any]:
    """Every event of a participant, in the order it was recorded: when, by whom, what,
    for which value date, the postings it made, and the individual account's balance after
    it (replayed from the events alone, so it can be set against the statement)."""
    from ledger import resident_id
    from ledger.aggregates.participant import participant_id
    from ledger.errors import NotFound

    canonical = resident_id.normalise(id_number)
    pid = participant_id(canonical)
    rows: list[dict[str, Any]] = []
    balance = 0
    for e in ledger.events.get(pid):
        assert len(rows) < MAX_HISTORY_EVENTS, "more events than a participant has"
        postings: dict[str, int] = {}
        for p in postings_for(e):
            postings[p.account] = postings.get(p.account, 0) + p.amount_fen
        # The individual account is a liability: what it holds is credited (negative).
        balance -= sum(amount for account, amount in postings.items()
                       if account.startswith(INDIVIDUAL + "."))
        value_date = getattr(e, "value_date", None)
        rows.append({"version": e.originator_version, "recorded": e.timestamp.isoformat(),
                     "actor": getattr(e, "actor", None), "event": type(e).__name__,
                     "value_date": value_date.isoformat() if value_date else None,
                     "postings_fen": {a: v for a, v in sorted(postings.items()) if v},
                     "account_balance_fen": balance})
    if not rows:
        raise NotFound("id_number", resident_id.mask(canonical))
    return {"id_number": canonical, "participant_id": str(pid), "events": rows}
