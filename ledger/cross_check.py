"""Cross-checking the participants against another register (数据比对).

Audits keep finding pensions paid to the dead because a death reaches the office late or
never: the family does not report it, the bank account stays open. The registers that do
know (cremations, household deregistrations, prisons, the employee scheme's pensioners) are
matched against the ledger by ID number. Each line of such a list names a person and a
date (of death, of imprisonment, from which the employee scheme pays them); what the ledger
holds for that person is judged against it, and every disagreement is a finding with the
months this fund paid since and what they came to.

Read only: nothing is stored. A finding is a lead to verify, then to act on by the usual
commands (pensioner suspend --reason death_check, pensioner decease, pensioner overpayment,
terminate). The file is all or nothing, like a bulk import: a bad line refuses it, listing
every bad line.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from ledger import resident_id
from ledger.aggregates.participant import (
    OWED_AT_DEATH,
    Participant,
    basic_pension_components,
    participant_id,
)
from ledger.application import Ledger
from ledger.bulk import csv_records, decode_text, parse_day, read_file
from ledger.errors import ImportRejected, InvalidInput, LedgerError
from ledger.rules import RuleVersion

KINDS = ("deaths", "imprisoned", "employee_pension")
COLUMNS = ("id_number", "date", "source")
MAX_LINES = 2_000_000
MAX_LISTED = 1000          # findings listed; all are counted
LOOKUP_CHUNK = 10_000      # register rows read per query

# What a list's date means, for the findings' wording.
DATE_MEANING = {"deaths": "date_of_death", "imprisoned": "imprisoned_from",
                "employee_pension": "employee_pension_from"}


def cross_check(ledger: Ledger, path: str, kind: str) -> dict[str, Any]:
    """Match a list (CSV: id_number,date,source; source may be empty) against the ledger."""
    if kind not in KINDS:
        raise InvalidInput("kind", f"must be one of {', '.join(KINDS)}")
    listed = _listed(path)
    ruleset = ledger.ruleset()

    def rules_on(day: date) -> RuleVersion:
        return ruleset.in_force(day, "period")

    counts = {"lines": len(listed), "not_participants": 0, "consistent": 0, "findings": 0}
    findings: list[dict[str, Any]] = []
    paid_since_fen = 0
    for i in range(0, len(listed), LOOKUP_CHUNK):
        part = [(line_no, participant_id(idn), day, source)
                for line_no, idn, day, source in listed[i:i + LOOKUP_CHUNK]]
        known = ledger.queries.register_rows([pid for _, pid, _, _ in part])
        replayed = {p.id: p for p in ledger.participants_of(
            list(dict.fromkeys(pid for _, pid, _, _ in part if pid in known)))}
        for line_no, pid, day, source in part:
            if pid not in known:
                counts["not_participants"] += 1
                continue
            p: Participant = replayed[pid]
            finding = JUDGES[kind](p, day, rules_on)
            if finding is None:
                counts["consistent"] += 1
                continue
            counts["findings"] += 1
            paid_since_fen += finding["paid_since_fen"]
            if len(findings) < MAX_LISTED:
                findings.append({"line": line_no, "id_number": p.id_number, "name": p.name,
                                 "status": p.status, DATE_MEANING[kind]: day.isoformat(),
                                 "source": source, **finding})
    return {"kind": kind, "counts": counts, "paid_since_fen": paid_since_fen,
            "findings": findings}


def _listed(path: str) -> list[tuple[int, str, date, str]]:
    """(line, canonical ID, date, source) of every line, or ImportRejected with every bad
    line. One person listed twice is a bad line: the list is someone's extract, and which
    line stands is theirs to say."""
    text = decode_text(path, read_file(path))
    problems: list[tuple[int, str]] = []
    out: list[tuple[int, str, date, str]] = []
    first: dict[str, int] = {}
    for line_no, (id_text, day_text, source) in csv_records(path, text, COLUMNS, problems,
                                                            MAX_LINES):
        bad = []
        try:
            idn = resident_id.normalise(id_text)
        except LedgerError as e:
            bad.append(str(e))
            idn = ""
        try:
            day = parse_day(day_text, "date")
        except LedgerError as e:
            bad.append(str(e))
        if idn and not bad:
            earlier = first.setdefault(idn, line_no)
            if earlier != line_no:
                bad.append(f"id_number: {resident_id.mask(idn)} is already on line {earlier}")
        if bad:
            problems += [(line_no, b) for b in bad]
            continue
        out.append((line_no, idn, day, source))
    if problems:
        raise ImportRejected(path, sorted(problems))
    return out


Judge = Callable[[Participant, date, Callable[[date], RuleVersion]], dict[str, Any] | None]


def _deaths(p: Participant, died: date, rules_on: Callable[[date], RuleVersion]
            ) -> dict[str, Any] | None:
    if p.date_of_death == died:
        return None
    # Payment stops from the month after death (DOMAIN.md): what was paid after is owed back.
    finding = _paid_after(p, died, rules_on)
    if p.date_of_death is None:
        return {"finding": "death_not_recorded",
                "action": "suspend (death_check), verify, then pensioner decease; assess "
                          "what was paid since as an overpayment"
                          if p.pension is not None else
                          "verify, then pensioner decease (the account is inherited)",
                **finding}
    # Recorded with another date: the months between the two are paid or owed wrongly.
    return {"finding": "death_date_differs", "recorded_date_of_death":
            p.date_of_death.isoformat(),
            "action": "verify which date is right; a later recorded date paid months the "
                      "list says were after death", **finding}


def _imprisoned(p: Participant, since: date, rules_on: Callable[[date], RuleVersion]
                ) -> dict[str, Any] | None:
    if p.pension is None or p.status in ("deceased", "terminated"):
        return None
    if p.suspension is not None and p.suspension[0] == "imprisoned":
        return None
    return {"finding": "paid_while_imprisoned",
            "action": "verify, then pensioner suspend --reason imprisoned; months paid "
                      "since are assessed as an overpayment", **_paid_after(p, since, rules_on)}


def _employee_pension(p: Participant, since: date, rules_on: Callable[[date], RuleVersion]
                      ) -> dict[str, Any] | None:
    if p.termination is not None and p.termination[0] in ("employee_scheme",
                                                          "double_enrolment"):
        return None
    if p.status in ("deceased", "terminated"):
        return None
    if p.pension is None:
        return {"finding": "double_enrolment", "paid_since_fen": 0, "months_paid_since": [],
                "action": "verify, then terminate --reason employee_scheme and refund the "
                          "account"}
    return {"finding": "double_receipt",
            "action": "verify, then terminate --reason employee_scheme; the pension drawn "
                      "since is repaid (an overpayment)", **_paid_after(p, since, rules_on)}


JUDGES: dict[str, Judge] = {"deaths": _deaths, "imprisoned": _imprisoned,
                            "employee_pension": _employee_pension}


def _paid_after(p: Participant, day: date, rules_on: Callable[[date], RuleVersion]
                ) -> dict[str, Any]:
    """The months this fund paid after the month of `day`, and the pension of each by the
    rules in force that month (the gross the monthly run pays: the basic pension and the
    account part, before any deduction)."""
    if p.pension is None:
        return {"months_paid_since": [], "paid_since_fen": 0}
    after = day.strftime("%Y-%m")
    months = sorted(m for m, by in p.paid_months.items() if m > after and by != OWED_AT_DEATH)
    total = 0
    for m in months:
        rules = rules_on(date(int(m[:4]), int(m[5:]), 1))
        total += basic_pension_components(rules.parameters, p.birth_date, m,
                                          p.pension.contribution_years).total_fen()
        total += p.pension.account_pension_fen
    return {"months_paid_since": months, "paid_since_fen": total}
