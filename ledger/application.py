"""The ledger's commands: the only way anything is written.

Every command is carried out under optimistic concurrency (a conflicting writer makes it
reload and try again) and, when it carries an idempotency key, records a CommandReceipt in
the same transaction as its events: the same key and payload return the first result, the
same key with another payload is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

import orjson
from eventsourcing.application import AggregateNotFoundError, Application, Repository
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import Environment

from ledger import resident_id
from ledger.aggregates.command_receipt import MAX_KEY_LEN, CommandReceipt
from ledger.aggregates.fund import FixedDeposit, Fund
from ledger.aggregates.participant import (
    OWED_AT_DEATH,
    BankAccount,
    Participant,
    participant_id,
)
from ledger.aggregates.ruleset import RuleSet
from ledger.errors import (
    ConcurrencyConflict,
    IdempotencyConflict,
    InvalidInput,
    LedgerError,
    NotFound,
    Refused,
)
from ledger.money import check_fen
from ledger.payout import (
    Due,
    PensionerFacts,
    facts_json,
    facts_of,
    load_facts,
    owed_at_death,
    payee_json,
)
from ledger.postings import guarded_deltas
from ledger.rules import Parameters, RuleVersion, sample_county
from ledger.store import (
    MAX_EVENTS_OF_IDS,
    OneOffRow,
    PensionerRow,
    RegisterRow,
    StoreQueries,
    resolve_url,
    store_env,
)

MAX_ATTEMPTS = 5
MAX_LISTED_REFUSALS = 1000  # participants listed by a year-wide reversal that refused them
FUND_NAME = "county"
RULESET_NAME = "county"
T = TypeVar("T")


def payload_sha256(payload: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS,
                                       default=str)).hexdigest()


# The events that change a participant's one-off payables (its one_off_register rows).
ONE_OFF_EVENTS = (Participant.BalanceSettled, Participant.FuneralGrantAwarded,
                  Participant.PayeeDetailsChanged, Participant.OneOffPaid,
                  Participant.OneOffPaymentReversed, Participant.PensionOwedAtDeath)


@dataclass(frozen=True)
class OpenOneOff:
    """A one-off payable the next run pays: neither sent to the bank nor held."""

    participant_id: UUID
    kind: str
    amount_fen: int
    payee: str
    payee_account: BankAccount | None


def register_row(p: Participant) -> RegisterRow:
    return RegisterRow(
        participant_id=p.id, version=p.version, status=p.status,
        birth_date=p.birth_date.isoformat(),
        identity_groups=orjson.dumps([[d.isoformat(), g] for d, g in p.identity_groups]).decode(),
        contributed_years=orjson.dumps(
            {str(y): list(v) for y, v in sorted(p.contributed_years.items())}).decode(),
    )


def project_events(aggregate: Any, events: Iterable[Any]) -> Any:
    """Replay events onto an aggregate. eventsourcing's default projector asserts
    isinstance(event, CanMutateProtocol) per event: a runtime Protocol check that costs
    about a third of every replay on Python 3.11."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class LedgerRepository(Repository[UUID]):
    def get(self, aggregate_id: UUID, **kwargs: Any) -> Any:
        kwargs.setdefault("projector_func", project_events)
        return super().get(aggregate_id, **kwargs)


class Ledger(Application[UUID]):
    name = "PensionLedger"

    def __init__(self, url: str | None = None, cipher_key: str | None = None) -> None:
        self.url = resolve_url(url)
        env = store_env(self.url, cipher_key)
        if "POSTGRES_HOST" in env:
            with StoreQueries.setting_up(env):
                super().__init__(env=env)
        else:
            super().__init__(env=env)
        self.queries = StoreQueries(self.recorder)
        self._ruleset_cache: RuleSet | None = None

    def construct_env(self, name: str, env: Any = None) -> Environment:
        # The composition root decides the configuration; stray process variables do not.
        return Environment(name, {**type(self).env, **(env or {})})

    def construct_repository(self) -> Repository[UUID]:
        # No aggregate cache is configured (construct_env admits none), so the event and
        # snapshot stores are all the repository needs.
        return LedgerRepository(event_store=self.events, snapshot_store=self.snapshots)

    # ---- plumbing ---------------------------------------------------------------------

    def _save(self, *aggregates: Any) -> None:
        """Save aggregates with everything that must be written in the same transaction."""
        pending = [e for a in aggregates for e in a.pending_events]
        register = [register_row(a) for a in aggregates if isinstance(a, Participant)]
        receipts = [(e.receipt_no, e.originator_id) for e in pending
                    if isinstance(e, Participant.ContributionReceived |
                                  Participant.CollectiveSubsidyCredited)]
        pensioners = [self.pensioner_row(f) for a in aggregates
                      if isinstance(a, Participant) and (f := facts_of(a)) is not None]
        # A pension revoked leaves the register the payout run reads.
        pensioners_removed = [e.originator_id for e in pending
                              if isinstance(e, Participant.PensionRevoked)]
        paid_add = [(e.originator_id, m, e.end_to_end_id) for e in pending
                    if isinstance(e, Participant.PensionPaid) for m in e.months]
        paid_add += [(e.originator_id, m, OWED_AT_DEATH) for e in pending
                     if isinstance(e, Participant.PensionOwedAtDeath) for m in e.months]
        paid_remove = [(e.originator_id, m) for e in pending
                       if isinstance(e, Participant.PensionPaymentReversed) for m in e.months]
        one_offs = [row for a in aggregates if isinstance(a, Participant)
                    and any(isinstance(e, ONE_OFF_EVENTS) for e in a.pending_events)
                    for row in self.one_off_rows(a)]
        self.save(*aggregates, fund_deltas=guarded_deltas(pending), register=register,
                  receipts=receipts, pensioners=pensioners,
                  pensioners_removed=pensioners_removed, paid_months_add=paid_add,
                  paid_months_remove=paid_remove, one_offs=one_offs)

    def one_off_rows(self, p: Participant) -> list[OneOffRow]:
        """The one_off_register rows of every payable of p; the payee sealed like the
        pensioner register's."""
        rows = []
        for kind, payable in sorted(p.payables.items()):
            payee = orjson.dumps({"payee": payable.payee, "account": (
                payable.payee_account.model_dump() if payable.payee_account else None)})
            rows.append(OneOffRow(p.id, kind, payable.amount_fen, payable.paid_by,
                                  payable.hold, self._seal_personal(payee)))
        return rows

    def open_one_offs(self) -> list[OpenOneOff]:
        """The one-off payables the next run pays, by participant id and kind."""
        out = []
        for pid, kind, amount, payee in self.queries.open_one_offs():
            d = orjson.loads(self.open_personal(payee))
            account = d["account"]
            out.append(OpenOneOff(pid, kind, amount, d["payee"],
                                  None if account is None else BankAccount(**account)))
        return out

    def pensioner_row(self, f: PensionerFacts, *, with_payee: bool = True) -> PensionerRow:
        """The pensioner register's row; the payee part encrypted when a key is set."""
        payee = self._seal_personal(payee_json(f)) if with_payee else None
        return PensionerRow(UUID(f.participant_id), facts_json(f), payee)

    def pensioners(self, chunk_size: int = 10_000) -> Iterator[PensionerFacts]:
        """Every pensioner as the register knows them, in participant id order."""
        for _, f in self.pensioners_by_id(chunk_size):
            yield f

    def pensioners_by_id(self, chunk_size: int = 10_000, *, from_id: UUID | None = None,
                         below_id: UUID | None = None, queries: StoreQueries | None = None
                         ) -> Iterator[tuple[UUID, PensionerFacts]]:
        """pensioners(), each with its participant id as a UUID (the facts hold it as text;
        making the UUID again from the text costs more than the rest of reading the row);
        only ids from `from_id` and below `below_id` when given; read through `queries` (a
        forked child's own connection), by default the ledger's."""
        rows = (queries or self.queries).pensioner_rows(chunk_size, from_id=from_id,
                                                        below_id=below_id)
        for pid, facts, payee in rows:
            yield pid, load_facts(pid, facts, self.open_personal(payee))

    def _seal_personal(self, data: bytes) -> bytes:
        """Personal data kept beside the events (payees, accounts): encrypted with the
        events' key when one is set."""
        return self.mapper.cipher.encrypt(data) if self.mapper.cipher is not None else data

    def open_personal(self, data: bytes) -> bytes:
        return self.mapper.cipher.decrypt(data) if self.mapper.cipher is not None else data

    def _command(self, command: str, key: str | None, payload: dict[str, Any],
                 body: Callable[[], tuple[list[Any], dict[str, Any]]],
                 actor: str) -> dict[str, Any]:
        """Run body() -> (aggregates to save, result) with retries and idempotency."""
        if key is not None and not 0 < len(key) <= MAX_KEY_LEN:
            raise InvalidInput("idempotency_key", f"must be 1 to {MAX_KEY_LEN} characters")
        digest = payload_sha256({"command": command, **payload})
        for _attempt in range(MAX_ATTEMPTS):
            if key is not None:
                earlier = self._receipt(key)
                if earlier is not None:
                    if earlier.payload_sha256 != digest:
                        raise IdempotencyConflict(key)
                    return {**earlier.result, "replayed": True}
            try:
                aggregates, result = body()
            except LedgerError:
                # A writer with the same key may have committed since the check above:
                # then this is a retry of its command, not a refusal.
                if key is None or (earlier := self._receipt(key)) is None:
                    raise
                if earlier.payload_sha256 != digest:
                    raise IdempotencyConflict(key) from None
                return {**earlier.result, "replayed": True}
            if key is not None:
                aggregates.append(CommandReceipt.record(key, command, digest, result, actor))
            try:
                self._save(*aggregates)
            except IntegrityError:
                continue  # another writer got there first: reload and decide again
            return result
        raise ConcurrencyConflict(MAX_ATTEMPTS)

    def _receipt(self, key: str) -> CommandReceipt | None:
        try:
            return self.repository.get(CommandReceipt.id_for(key))
        except AggregateNotFoundError:
            return None

    def participant(self, id_number: str) -> Participant:
        canonical = resident_id.normalise(id_number)
        try:
            return self.repository.get(participant_id(canonical))
        except AggregateNotFoundError:
            raise NotFound("id_number", resident_id.mask(canonical)) from None

    def participant_events(self, pids: Sequence[UUID], chunk: int = MAX_EVENTS_OF_IDS
                           ) -> Iterator[tuple[UUID, list[Any]]]:
        """Each participant of `pids`, in that order, with its domain events in version
        order, read `chunk` participants per query (the repository reads one per query)."""
        assert 0 < chunk <= MAX_EVENTS_OF_IDS
        to_domain = self.mapper.to_domain_event
        for i in range(0, len(pids), chunk):
            for pid, stored in self.queries.events_of(pids[i:i + chunk]).items():
                if not stored:
                    raise NotFound("participant", str(pid))
                yield pid, [to_domain(s) for s in stored]

    def participants_of(self, pids: Sequence[UUID]) -> list[Participant]:
        """The participants `pids`, in that order, each replayed as repository.get would,
        from one read of a chunk's events: a year-wide command's chunk of a thousand costs
        one query, not a thousand."""
        out: list[Participant] = []
        for pid, events in self.participant_events(pids):
            p = project_events(None, events)
            assert isinstance(p, Participant) and p.id == pid, pid
            out.append(p)
        return out

    def fund(self) -> Fund:
        try:
            return self.repository.get(Fund.id_for(FUND_NAME))
        except AggregateNotFoundError:
            raise Refused("fund", "the ledger is not set up: run `pension-ledger init`") from None

    def ruleset(self) -> RuleSet:
        """The rule set, brought up to date by reading only the versions published since it
        was last read (every command needs it; replaying it each time would dominate)."""
        rules = self._ruleset_cache
        if rules is None:
            try:
                rules = self.repository.get(RuleSet.id_for(RULESET_NAME))
            except AggregateNotFoundError:
                raise Refused("rules", "the ledger is not set up: run `pension-ledger init`"
                              ) from None
        else:
            for event in self.events.get(rules.id, gt=rules.version):
                event.mutate(rules)  # type: ignore[attr-defined]
        assert rules is not None and not rules.pending_events
        self._ruleset_cache = rules
        return rules

    def rules_on(self, on: date, field: str = "value_date") -> RuleVersion:
        return self.ruleset().in_force(on, field)

    def _check_not_booked(self, receipt_no: str) -> None:
        owner = self.queries.receipt_owner(receipt_no)
        if owner is not None:
            raise Refused("receipt_no", f"receipt {receipt_no} is already booked")

    # ---- set-up and rules -------------------------------------------------------------

    def init(self, actor: str = "admin",
             versions: list[tuple[date, Parameters, str]] | None = None) -> dict[str, Any]:
        """Open the fund and the rule set (the sample county's rules by default). Idempotent."""
        created = []
        try:
            self.repository.get(Fund.id_for(FUND_NAME))
        except AggregateNotFoundError:
            try:
                self._save(Fund.open(FUND_NAME, actor))
                created.append("fund")
            except IntegrityError:
                pass
        try:
            self.repository.get(RuleSet.id_for(RULESET_NAME))
        except AggregateNotFoundError:
            rules = RuleSet.open(RULESET_NAME, actor)
            for effective_from, params, note in versions or sample_county():
                rules.publish(effective_from, params, note, actor)
            try:
                self._save(rules)
                created.append("rules")
            except IntegrityError:
                pass
        return {"created": created, "rule_versions": len(self.ruleset().versions)}

    def publish_rules(self, effective_from: date, parameters: Parameters, note: str,
                      actor: str, idempotency_key: str | None = None) -> dict[str, Any]:
        def body() -> tuple[list[Any], dict[str, Any]]:
            self._ruleset_cache = None  # publish on a fresh copy, never on the shared one
            rules = self.ruleset()
            self._ruleset_cache = None
            version = rules.publish(effective_from, parameters, note, actor)
            return [rules], {"version": version, "effective_from": effective_from.isoformat()}
        return self._command("publish-rules", idempotency_key,
                             {"effective_from": effective_from,
                              "parameters": parameters.model_dump(mode="json"), "note": note},
                             body, actor)

    # ---- participants -----------------------------------------------------------------

    def enrol(self, *, id_number: str, name: str, township: str, village: str,
              identity_group: str, enrol_date: date, bank: BankAccount | None,
              actor: str, idempotency_key: str | None = None) -> dict[str, Any]:
        canonical = resident_id.normalise(id_number)
        born = resident_id.birth_date(canonical)

        def body() -> tuple[list[Any], dict[str, Any]]:
            if self.queries.register_row(participant_id(canonical)) is not None:
                raise Refused("id_number", f"{resident_id.mask(canonical)} is already enrolled")
            params = self.rules_on(enrol_date, "enrol_date").parameters
            p = Participant.enrol(id_number=canonical, name=name, birth_date=born,
                                  township=township, village=village,
                                  identity_group=identity_group, enrol_date=enrol_date,
                                  bank=bank, params=params, actor=actor)
            return [p], {"participant_id": str(p.id), "id_number": resident_id.mask(canonical)}

        return self._command("enrol", idempotency_key,
                             {"id_number": canonical, "name": name, "township": township,
                              "village": village, "identity_group": identity_group,
                              "enrol_date": enrol_date,
                              "bank": bank.model_dump() if bank else None}, body, actor)

    def contribute(self, *, id_number: str, year: int, tier_fen: int, amount_fen: int,
                   channel: str, receipt_no: str, value_date: date, back_payment: bool = False,
                   actor: str, idempotency_key: str | None = None) -> dict[str, Any]:
        check_fen(tier_fen, "tier")
        check_fen(amount_fen, "amount", allow_zero=True)
        key = idempotency_key or f"contribution:{receipt_no}"

        def body() -> tuple[list[Any], dict[str, Any]]:
            p = self.participant(id_number)
            self._check_not_booked(receipt_no)
            rules = self.rules_on(value_date)
            p.receive_contribution(year=year, tier_fen=tier_fen, amount_fen=amount_fen,
                                   channel=channel, receipt_no=receipt_no, value_date=value_date,
                                   back_payment=back_payment, rules=rules, actor=actor)
            return [p], {"participant_id": str(p.id), "year": year, "amount_fen": amount_fen,
                         "on_behalf_fen": tier_fen - amount_fen, "rule_version": rules.label}

        return self._command("contribute", key,
                             {"id_number": resident_id.normalise(id_number), "year": year,
                              "tier_fen": tier_fen, "amount_fen": amount_fen, "channel": channel,
                              "receipt_no": receipt_no, "value_date": value_date,
                              "back_payment": back_payment}, body, actor)

    def reverse_contribution(self, *, id_number: str, year: int, reason: str,
                             value_date: date, actor: str,
                             idempotency_key: str | None = None) -> dict[str, Any]:
        """Reverse a contribution booked in error (冲正): the amount paid is refunded from
        the income account, so it must still hold it (refused once swept)."""
        def reverse(p: Participant) -> dict[str, int]:
            amount, on_behalf = p.reverse_contribution(year=year, reason=reason,
                                                       value_date=value_date, actor=actor)
            return {"year": year, "refunded_fen": amount, "on_behalf_fen": on_behalf}
        return self._participant_step(
            "reverse-contribution", id_number, actor, idempotency_key,
            {"year": year, "reason": reason, "value_date": value_date}, reverse)

    def reverse_subsidy(self, *, id_number: str, year: int, reason: str, value_date: date,
                        actor: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Reverse a year's subsidy credited in error (every level): the government no
        longer owes it; a contribution it was credited on may then be reversed."""
        return self._participant_step(
            "reverse-subsidy", id_number, actor, idempotency_key,
            {"year": year, "reason": reason, "value_date": value_date},
            lambda p: {"year": year, "reversed_fen": p.reverse_subsidy(
                year=year, reason=reason, value_date=value_date, actor=actor)})

    def subsidise(self, *, id_number: str, year: int, value_date: date, actor: str,
                  idempotency_key: str | None = None) -> dict[str, Any]:
        def body() -> tuple[list[Any], dict[str, Any]]:
            p = self.participant(id_number)
            rules = self.rules_on(value_date)
            total = p.credit_subsidy(year=year, value_date=value_date, rules=rules, actor=actor)
            return [p], {"participant_id": str(p.id), "year": year, "amount_fen": total,
                         "rule_version": rules.label}

        canonical = resident_id.normalise(id_number)
        # One credit of a year's subsidy per key; once reversed, the year may be credited
        # again, under a key of its own.
        again = self.participant(canonical).subsidy_reversals.get(year, 0)
        default = f"subsidy:{canonical}:{year}" + (f":{again}" if again else "")
        return self._command("subsidise", idempotency_key or default,
                             {"id_number": canonical, "year": year, "value_date": value_date},
                             body, actor)

    def subsidise_year(self, *, year: int, value_date: date, actor: str,
                       progress: Callable[[int], None] | None = None,
                       chunk_size: int = 1000) -> dict[str, int]:
        """Credit the contribution subsidy to everyone who contributed in `year` and has
        not had it yet. Resumable: each chunk is atomic and repeats are skipped."""
        rules = self.rules_on(value_date)

        def step(chunk: list[UUID]) -> tuple[list[Participant], int]:
            batch, fen = [], 0
            for p in self.participants_of(chunk):
                _, _, back = p.contributed_years[year]
                if year in p.subsidised_years or back or p.status in ("deceased", "terminated"):
                    continue
                fen += p.credit_subsidy(year=year, value_date=value_date, rules=rules,
                                       actor=actor)
                batch.append(p)
            return batch, fen

        credited = skipped = total_fen = 0
        for chunk, batch, fen in self._saved_in_chunks(
                self.queries.participants_contributed(year), chunk_size, progress, step):
            credited += len(batch)
            skipped += len(chunk) - len(batch)
            total_fen += fen
        return {"credited": credited, "skipped": skipped, "amount_fen": total_fen}

    def credit_collective(self, *, id_number: str, year: int, amount_fen: int, payer: str,
                          receipt_no: str, value_date: date, actor: str,
                          idempotency_key: str | None = None) -> dict[str, Any]:
        check_fen(amount_fen, "amount")

        def body() -> tuple[list[Any], dict[str, Any]]:
            p = self.participant(id_number)
            self._check_not_booked(receipt_no)
            p.credit_collective(year=year, amount_fen=amount_fen, payer=payer,
                                receipt_no=receipt_no, value_date=value_date, actor=actor)
            return [p], {"participant_id": str(p.id), "amount_fen": amount_fen}

        return self._command("collective", idempotency_key or f"collective:{receipt_no}",
                             {"id_number": resident_id.normalise(id_number), "year": year,
                              "amount_fen": amount_fen, "payer": payer,
                              "receipt_no": receipt_no, "value_date": value_date}, body, actor)

    def credit_interest(self, *, year: int, today: date, actor: str,
                        progress: Callable[[int], None] | None = None,
                        chunk_size: int = 1000) -> dict[str, int]:
        """Year-end interest over all participants, after 31 December of `year`.
        Resumable: each chunk is atomic, and a participant credited already is skipped."""
        if today <= date(year, 12, 31):
            raise Refused("year", f"interest for {year} is credited after 31 December {year}")
        rules_by_year = {year: self._interest_rules(year)}

        def rules_for(y: int) -> RuleVersion:
            # Read once a command: each read of the rule set asks the store for new versions.
            if y not in rules_by_year:
                rules_by_year[y] = self._interest_rules(y)
            return rules_by_year[y]

        def step(chunk: list[UUID]) -> tuple[list[Participant], int]:
            batch, fen = [], 0
            for p in self.participants_of(chunk):
                if year in p.interest_years or p.enrol_date.year > year or p.closed:
                    continue
                # Any earlier year still uncredited first, so that it compounds.
                for earlier in range(p.enrol_date.year, year):
                    if earlier not in p.interest_years:
                        fen += p.credit_interest(year=earlier, rules=rules_for(earlier),
                                                 actor=actor)
                fen += p.credit_interest(year=year, rules=rules_for(year), actor=actor)
                batch.append(p)
            return batch, fen

        credited = skipped = total_fen = 0
        for chunk, batch, fen in self._saved_in_chunks(
                self.queries.all_participant_ids(), chunk_size, progress, step):
            credited += len(batch)
            skipped += len(chunk) - len(batch)
            total_fen += fen
        return {"credited": credited, "skipped": skipped, "amount_fen": total_fen}

    def reverse_interest(self, *, id_number: str, year: int, reason: str, actor: str,
                         idempotency_key: str | None = None) -> dict[str, Any]:
        """Reverse one participant's interest for a year, credited in error."""
        return self._participant_step(
            "reverse-interest", id_number, actor, idempotency_key,
            {"year": year, "reason": reason},
            lambda p: {"year": year, "reversed_fen": p.reverse_interest(
                year=year, reason=reason, actor=actor)})

    def reverse_interest_year(self, *, year: int, reason: str, actor: str,
                              progress: Callable[[int], None] | None = None,
                              chunk_size: int = 1000) -> dict[str, Any]:
        """Reverse a year's interest credited in error (a wrong rate) for everyone credited
        for it, so that the year can be credited again under the rule set corrected.
        Resumable like credit_interest: each chunk is atomic, and a participant without
        interest for the year is skipped. One whose interest cannot be reversed (a later
        year credited on it, a pension applied for, a settled account) is left as it is and
        listed (MAX_LISTED_REFUSALS of them): those are corrected by hand."""
        def step(chunk: list[UUID]) -> tuple[list[Participant],
                                              tuple[int, list[dict[str, str]]]]:
            batch, fen, refused = [], 0, []
            for p in self.participants_of(chunk):
                if year not in p.interest_years:
                    continue
                try:
                    fen += p.reverse_interest(year=year, reason=reason, actor=actor)
                except Refused as e:
                    refused.append({"participant_id": str(p.id), "reason": str(e)})
                    continue
                batch.append(p)
            return batch, (fen, refused)

        reversed_ = skipped = total_fen = refused_count = 0
        listed: list[dict[str, str]] = []
        for chunk, batch, (fen, refused) in self._saved_in_chunks(
                self.queries.all_participant_ids(), chunk_size, progress, step):
            reversed_ += len(batch)
            skipped += len(chunk) - len(batch) - len(refused)
            total_fen += fen
            refused_count += len(refused)
            listed += refused[:MAX_LISTED_REFUSALS - len(listed)]
        return {"reversed": reversed_, "skipped": skipped, "amount_fen": total_fen,
                "refused": refused_count, "refused_listed": listed}

    def _interest_rules(self, year: int) -> RuleVersion:
        rules = self.rules_on(date(year, 12, 31), "year")
        if year not in rules.parameters.interest_rates:
            raise Refused("year", f"rule {rules.label} names no interest rate for {year}")
        return rules

    def _saved_in_chunks(self, ids: list[UUID], chunk_size: int,
                         progress: Callable[[int], None] | None,
                         step: Callable[[list[UUID]], tuple[list[Participant], T]]
                         ) -> Iterator[tuple[list[UUID], list[Participant], T]]:
        """A year-wide command a chunk of participants at a time: step(chunk) changes
        some of them, saved together (each chunk atomic, so a run stopped half way is run
        again and skips what was done); a concurrent write makes the chunk start again
        from the store. Yields each chunk, the participants saved and what step said."""
        for chunk in self._chunks(ids, chunk_size):
            for _attempt in range(MAX_ATTEMPTS):
                batch, said = step(chunk)
                try:
                    if batch:
                        self._save(*batch)
                except IntegrityError:
                    continue
                break
            else:
                raise ConcurrencyConflict(MAX_ATTEMPTS)
            yield chunk, batch, said
            if progress:
                progress(len(chunk))

    @staticmethod
    def _chunks(items: list[UUID], size: int) -> Iterator[list[UUID]]:
        assert 0 < size <= 100_000
        for i in range(0, len(items), size):
            yield items[i:i + size]

    def change_identity_group(self, *, id_number: str, group: str, effective_from: date,
                              actor: str, idempotency_key: str | None = None) -> dict[str, Any]:
        def body() -> tuple[list[Any], dict[str, Any]]:
            p = self.participant(id_number)
            p.change_identity_group(group, effective_from, actor)
            return [p], {"participant_id": str(p.id), "identity_group": group}
        return self._command("change-group", idempotency_key,
                             {"id_number": resident_id.normalise(id_number), "group": group,
                              "effective_from": effective_from}, body, actor)

    def change_bank_details(self, *, id_number: str, bank: BankAccount, actor: str,
                            idempotency_key: str | None = None) -> dict[str, Any]:
        def body() -> tuple[list[Any], dict[str, Any]]:
            p = self.participant(id_number)
            p.change_bank_details(bank, actor)
            return [p], {"participant_id": str(p.id)}
        return self._command("change-bank", idempotency_key,
                             {"id_number": resident_id.normalise(id_number),
                              "bank": bank.model_dump()}, body, actor)

    # ---- pensioners -------------------------------------------------------------------

    def apply_for_pension(self, *, id_number: str, start_month: str, actor: str,
                          idempotency_key: str | None = None) -> dict[str, Any]:
        def body() -> tuple[list[Any], dict[str, Any]]:
            p = self.participant(id_number)
            rules = self.rules_on(_first_of(start_month), "start_month")
            p.apply_for_pension(start_month=start_month, rules=rules, actor=actor)
            return [p], {"participant_id": str(p.id), "start_month": start_month}
        return self._command("pension-apply", idempotency_key,
                             {"id_number": resident_id.normalise(id_number),
                              "start_month": start_month}, body, actor)

    def approve_pension(self, *, id_number: str, actor: str,
                        idempotency_key: str | None = None) -> dict[str, Any]:
        def body() -> tuple[list[Any], dict[str, Any]]:
            p = self.participant(id_number)
            if p.pension_application is None:
                raise Refused("participant", "no pension application is waiting for approval")
            start_month = p.pension_application[0]
            rules = self.rules_on(_first_of(start_month), "start_month")
            p.approve_pension(rules=rules, actor=actor)
            assert p.pension is not None
            return [p], {"participant_id": str(p.id), "start_month": start_month,
                         "basic_fen": p.pension.basic.total_fen(),
                         "account_pension_fen": p.pension.account_pension_fen,
                         "rule_version": rules.label}
        return self._command("pension-approve", idempotency_key,
                             {"id_number": resident_id.normalise(id_number)}, body, actor)

    def _participant_step(self, command: str, id_number: str, actor: str, key: str | None,
                          payload: dict[str, Any], step: Callable[[Participant], Any]
                          ) -> dict[str, Any]:
        def body() -> tuple[list[Any], dict[str, Any]]:
            p = self.participant(id_number)
            out = step(p)
            return [p], {"participant_id": str(p.id), "status": p.status,
                         **({"result": out} if out is not None else {})}
        return self._command(command, key,
                             {"id_number": resident_id.normalise(id_number), **payload},
                             body, actor)

    def revoke_pension(self, *, id_number: str, reason: str, actor: str,
                       idempotency_key: str | None = None) -> dict[str, Any]:
        """Undo a pension approved in error, before anything was paid on it."""
        return self._participant_step(
            "pension-revoke", id_number, actor, idempotency_key, {"reason": reason},
            lambda p: p.revoke_pension(reason=reason, actor=actor))

    def suspend(self, *, id_number: str, reason_code: str, from_month: str, actor: str,
                idempotency_key: str | None = None) -> dict[str, Any]:
        return self._participant_step(
            "suspend", id_number, actor, idempotency_key,
            {"reason_code": reason_code, "from_month": from_month},
            lambda p: p.suspend(reason_code, from_month, actor))

    def resume(self, *, id_number: str, from_month: str, actor: str,
               idempotency_key: str | None = None) -> dict[str, Any]:
        return self._participant_step(
            "resume", id_number, actor, idempotency_key, {"from_month": from_month},
            lambda p: {"arrears_months": p.resume(from_month, actor)})

    def decease(self, *, id_number: str, date_of_death: date, reported_on: date, actor: str,
                idempotency_key: str | None = None) -> dict[str, Any]:
        """Record a death. A pensioner's months up to and including the month of death not
        yet paid become a payable to the heirs in the same command (settle_owed_at_death)."""
        def die(p: Participant) -> dict[str, Any] | None:
            p.decease(date_of_death, reported_on, actor)
            owed = self.settle_owed_at_death(p, reported_on, actor)
            if owed is None:
                return None
            return {"owed_at_death": {"months": list(owed.months), "amount_fen": owed.amount_fen}}
        return self._participant_step(
            "decease", id_number, actor, idempotency_key,
            {"date_of_death": date_of_death, "reported_on": reported_on}, die)

    def settle_owed_at_death(self, p: Participant, value_date: date, actor: str
                             ) -> Due | None:
        """If a dead pensioner is owed months up to the month of death (never drafted, or
        sent back by the bank), book them as the heirs' payable (PensionOwedAtDeath) on p,
        unsaved; returns what was owed, or None. A payable already sent
        to the bank cannot grow: the months are then left owed and `audit anomalies`
        lists them."""
        ruleset = self.ruleset()  # read once: due_for asks for every month owed
        owed = owed_at_death(p, lambda on: ruleset.in_force(on, "period"),
                             len(ruleset.versions))
        if owed is None:
            return None
        sent = p.payables.get(OWED_AT_DEATH)
        if sent is not None and sent.paid_by is not None:
            return None
        p.owe_at_death(months=list(owed.months), basic_fen=owed.basic_fen,
                       account_by_source_fen=dict(owed.account_by_source_fen),
                       pooled_account_fen=owed.pooled_account_fen,
                       deduction_fen=owed.deduction_fen, amount_fen=owed.amount_fen,
                       rule_versions=list(owed.rule_versions), value_date=value_date,
                       actor=actor, basic_by_month=dict(owed.basic_by_month),
                       rerated_fen=dict(owed.rerated_fen), rated_version=owed.rated_version)
        return owed

    def terminate(self, *, id_number: str, reason_code: str, effective_date: date, actor: str,
                  idempotency_key: str | None = None) -> dict[str, Any]:
        return self._participant_step(
            "terminate", id_number, actor, idempotency_key,
            {"reason_code": reason_code, "effective_date": effective_date},
            lambda p: p.terminate(reason_code, effective_date, actor))

    def settle_balance(self, *, id_number: str, how: str, payee: str, value_date: date,
                       actor: str, payee_account: BankAccount | None = None,
                       idempotency_key: str | None = None) -> dict[str, Any]:
        if how not in ("refund", "inheritance"):
            raise InvalidInput("how", "must be refund or inheritance")
        rules = self.rules_on(value_date)
        return self._participant_step(
            "settle", id_number, actor, idempotency_key,
            {"how": how, "payee": payee, "value_date": value_date,
             "payee_account": payee_account.model_dump() if payee_account else None},
            lambda p: {"amount_fen": p.settle_balance(how=how, payee=payee,  # type: ignore[arg-type]
                                                      value_date=value_date, rules=rules,
                                                      actor=actor,
                                                      payee_account=payee_account)})

    def award_funeral_grant(self, *, id_number: str, payee: str,
                            payee_account: BankAccount | None, value_date: date, actor: str,
                            idempotency_key: str | None = None) -> dict[str, Any]:
        """The funeral grant (丧葬补助金) by the rules in force on the date of death; an
        outstanding overpayment is recovered from it first. The monthly run pays the rest."""
        def award(p: Participant) -> dict[str, int]:
            if p.date_of_death is None:
                raise Refused("participant", "a funeral grant needs a recorded death")
            rules = self.rules_on(p.date_of_death, "date_of_death")
            net = p.award_funeral_grant(payee=payee, payee_account=payee_account,
                                        value_date=value_date, rules=rules, actor=actor)
            return {"amount_fen": rules.parameters.funeral_grant_fen, "payable_fen": net}
        return self._participant_step(
            "funeral-grant", id_number, actor, idempotency_key,
            {"payee": payee, "value_date": value_date,
             "payee_account": payee_account.model_dump() if payee_account else None}, award)

    def payables(self, id_number: str) -> dict[str, Any]:
        """What the fund owes on a participant's account to payees (the funeral grant, an
        inheritance, a refund, the pension owed at death), to whom, and where each stands:
        owed, held after a bank return, or sent to the bank (by its EndToEndId). Read from
        the participant's events, so never behind."""
        p = self.participant(id_number)
        rows = []
        for kind, payable in sorted(p.payables.items()):
            account = payable.payee_account
            if payable.paid_by is not None:
                state = "sent"
            elif payable.hold is not None:
                state = "held"
            else:
                state = "owed" if account is not None else "owed, no payee account"
            rows.append({"kind": kind, "amount_fen": payable.amount_fen,
                         "payee": payable.payee,
                         "account_name": account.account_name if account else None,
                         "account_number": account.account_number if account else None,
                         "bank_code": account.bank_code if account else None,
                         "state": state, "sent_as": payable.paid_by,
                         "held_for": payable.hold})
        return {"id_number": p.id_number, "name": p.name, "status": p.status,
                "date_of_death": p.date_of_death.isoformat() if p.date_of_death else None,
                "payables": rows,
                "owed_fen": sum(r["amount_fen"] for r in rows if r["state"] != "sent")}

    def change_payee(self, *, id_number: str, kind: str, payee: str,
                     payee_account: BankAccount, actor: str,
                     idempotency_key: str | None = None) -> dict[str, Any]:
        """Who receives a one-off payment and where: also lifts a bank return's hold."""
        return self._participant_step(
            "change-payee", id_number, actor, idempotency_key,
            {"kind": kind, "payee": payee, "payee_account": payee_account.model_dump()},
            lambda p: p.change_payee(kind=kind, payee=payee, payee_account=payee_account,
                                     actor=actor))

    def assess_overpayment(self, *, id_number: str, amount_fen: int, months: list[str],
                           reason: str, value_date: date, actor: str,
                           idempotency_key: str | None = None) -> dict[str, Any]:
        check_fen(amount_fen, "amount")
        return self._participant_step(
            "assess-overpayment", id_number, actor, idempotency_key,
            {"amount_fen": amount_fen, "months": months, "reason": reason,
             "value_date": value_date},
            lambda p: p.assess_overpayment(amount_fen, months, reason, value_date, actor))

    def recover_overpayment(self, *, id_number: str, amount_fen: int, channel: str,
                            value_date: date, actor: str,
                            idempotency_key: str | None = None) -> dict[str, Any]:
        check_fen(amount_fen, "amount")
        if channel not in ("offset_account", "family"):
            raise InvalidInput("channel", "must be offset_account or family")
        return self._participant_step(
            "recover-overpayment", id_number, actor, idempotency_key,
            {"amount_fen": amount_fen, "channel": channel, "value_date": value_date},
            lambda p: p.recover_overpayment(amount_fen, channel,  # type: ignore[arg-type]
                                            value_date, actor))

    def impose_fine(self, *, id_number: str, amount_fen: int, defrauded_fen: int,
                    decision_no: str, value_date: date, actor: str,
                    idempotency_key: str | None = None) -> dict[str, Any]:
        """A fine for obtaining the pension by fraud (the treasury's, not the fund's)."""
        check_fen(amount_fen, "fine")
        check_fen(defrauded_fen, "defrauded")
        return self._participant_step(
            "impose-fine", id_number, actor, idempotency_key,
            {"amount_fen": amount_fen, "defrauded_fen": defrauded_fen,
             "decision_no": decision_no, "value_date": value_date},
            lambda p: _fines_after(p, lambda: p.impose_fine(
                amount_fen=amount_fen, defrauded_fen=defrauded_fen, decision_no=decision_no,
                value_date=value_date, actor=actor)))

    def pay_fine(self, *, id_number: str, amount_fen: int, reference: str, value_date: date,
                 actor: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """A fine (or part of one) paid to the treasury."""
        check_fen(amount_fen, "amount")
        # The treasury's receipt books once: a retry of it is the same command.
        key = idempotency_key or \
            f"fine-paid:{resident_id.normalise(id_number)}:{reference.strip()}"
        return self._participant_step(
            "pay-fine", id_number, actor, key,
            {"amount_fen": amount_fen, "reference": reference, "value_date": value_date},
            lambda p: _fines_after(p, lambda: p.pay_fine(
                amount_fen=amount_fen, reference=reference, value_date=value_date,
                actor=actor)))

    # ---- the fund's bank accounts -----------------------------------------------------

    def _fund_step(self, command: str, key: str | None, payload: dict[str, Any],
                   step: Callable[[Fund], Any], actor: str,
                   result: Callable[[Any], dict[str, Any]] | None = None) -> dict[str, Any]:
        """A command on the fund, booked once by its bank reference unless a key is given;
        its result is result(what step returned), by default the reference and amount."""
        def body() -> tuple[list[Any], dict[str, Any]]:
            f = self.fund()
            out = step(f)
            if result is not None:
                return [f], result(out)
            return [f], {"reference": payload["reference"],
                         "amount_fen": payload["amount_fen"],
                         **({"kind": out} if isinstance(out, str) else {})}
        return self._command(command, key or f"fund:{payload['reference']}", payload, body, actor)

    def receive_treasury_funds(self, *, amount_fen: int, level: str, purpose: str,
                               value_date: date, reference: str, actor: str,
                               idempotency_key: str | None = None) -> dict[str, Any]:
        check_fen(amount_fen, "amount")
        return self._fund_step(
            "treasury", idempotency_key,
            {"amount_fen": amount_fen, "level": level, "purpose": purpose,
             "value_date": value_date, "reference": reference},
            lambda f: f.receive_treasury_funds(amount_fen=amount_fen, level=level,
                                               purpose=purpose, value_date=value_date,
                                               reference=reference, actor=actor), actor)

    def transfer(self, *, from_account: str, to_account: str, amount_fen: int,
                 value_date: date, reference: str, actor: str,
                 idempotency_key: str | None = None) -> dict[str, Any]:
        check_fen(amount_fen, "amount")
        return self._fund_step(
            "transfer", idempotency_key,
            {"from_account": from_account, "to_account": to_account, "amount_fen": amount_fen,
             "value_date": value_date, "reference": reference},
            lambda f: f.transfer(from_account=from_account, to_account=to_account,
                                 amount_fen=amount_fen, value_date=value_date,
                                 reference=reference, actor=actor), actor)

    def sweep(self, **kwargs: Any) -> dict[str, Any]:
        """Income account -> fiscal special account."""
        return self.transfer(from_account="income", to_account="fiscal", **kwargs)

    def appropriate(self, **kwargs: Any) -> dict[str, Any]:
        """Fiscal special account -> expenditure account, by the approved spending plan."""
        return self.transfer(from_account="fiscal", to_account="expenditure", **kwargs)

    def earn_bank_interest(self, *, account: str, amount_fen: int, value_date: date,
                           reference: str, actor: str,
                           idempotency_key: str | None = None) -> dict[str, Any]:
        check_fen(amount_fen, "amount")
        return self._fund_step(
            "bank-interest", idempotency_key,
            {"account": account, "amount_fen": amount_fen, "value_date": value_date,
             "reference": reference},
            lambda f: f.earn_bank_interest(account=account, amount_fen=amount_fen,
                                           value_date=value_date, reference=reference,
                                           actor=actor), actor)

    def place_fixed_deposit(self, *, deposit_no: str, amount_fen: int, term_months: int,
                            annual_rate: Decimal, value_date: date, reference: str,
                            actor: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Fiscal special account -> a fixed deposit (定期存款) at its bank."""
        check_fen(amount_fen, "amount")
        return self._fund_step(
            "deposit-place", idempotency_key,
            {"deposit_no": deposit_no, "amount_fen": amount_fen, "term_months": term_months,
             "annual_rate": str(annual_rate), "value_date": value_date,
             "reference": reference},
            lambda f: f.place_fixed_deposit(deposit_no=deposit_no, amount_fen=amount_fen,
                                            term_months=term_months, annual_rate=annual_rate,
                                            value_date=value_date, reference=reference,
                                            actor=actor), actor, fixed_deposit_row)

    def withdraw_fixed_deposit(self, *, deposit_no: str, interest_fen: int, value_date: date,
                               reference: str, actor: str,
                               idempotency_key: str | None = None) -> dict[str, Any]:
        """A fixed deposit and the interest the bank paid on it back into the fiscal
        special account."""
        check_fen(interest_fen, "interest", allow_zero=True)
        return self._fund_step(
            "deposit-withdraw", idempotency_key,
            {"deposit_no": deposit_no, "interest_fen": interest_fen, "value_date": value_date,
             "reference": reference},
            lambda f: f.withdraw_fixed_deposit(deposit_no=deposit_no, interest_fen=interest_fen,
                                               value_date=value_date, reference=reference,
                                               actor=actor), actor, fixed_deposit_row)

    def fixed_deposits(self, as_of: date | None = None) -> list[dict[str, Any]]:
        """The fiscal special account's fixed deposits holding money at the end of as_of
        (value date), or now, soonest maturity first."""
        return [fixed_deposit_row(d) for d in self.fund().fixed_deposits(as_of)]

    def fixed_deposits_held(self, as_of: date | None = None) -> dict[str, Any]:
        """fixed_deposits with their date and total, as `deposit list` and the read API
        answer."""
        rows = self.fixed_deposits(as_of)
        return {"as_of": as_of.isoformat() if as_of else None, "deposits": rows,
                "total_fen": sum(r["principal_fen"] for r in rows)}

    # ---- upkeep -----------------------------------------------------------------------

    def keep_registers_in_order(self) -> list[dict[str, Any]]:
        """The registers funding rewrites each month put back in participant-id order on
        disk where they have drifted from it, else vacuumed (ledger.maintenance)."""
        from dataclasses import asdict

        from ledger.maintenance import keep_in_order
        return [asdict(u) for u in keep_in_order(self.recorder)]

    def registers_drifted(self) -> list[str]:
        """The registers whose rows have drifted from participant-id order on disk."""
        from ledger.maintenance import drifted
        return drifted(self.recorder)

    # ---- reading ----------------------------------------------------------------------

    def fund_positions(self) -> dict[str, int]:
        return self.queries.fund_positions()

    def statement(self, id_number: str, as_of: date | None = None) -> dict[str, Any]:
        from ledger.statement import statement_of
        return statement_of(self.participant(id_number), as_of)


def _first_of(month: str) -> date:
    from ledger.aggregates.participant import parse_month
    y, m = parse_month(month, "start_month")
    return date(y, m, 1)


def fixed_deposit_row(d: FixedDeposit) -> dict[str, Any]:
    """A fixed deposit as commands return and list it."""
    # Dates as ISO text: a command's result is stored with its receipt, and a retry returns
    # the stored one, which must read the same.
    return {"deposit_no": d.deposit_no, "principal_fen": d.principal_fen,
            "placed_on": d.placed_on.isoformat(), "term_months": d.term_months,
            "rate_percent": format(d.annual_rate * 100, "f").rstrip("0").rstrip("."),
            "maturity_date": d.maturity_date.isoformat(),
            "interest_at_maturity_fen": d.interest_at_maturity_fen(),
            "withdrawn_on": d.withdrawn_on.isoformat() if d.withdrawn_on else None,
            "interest_fen": d.interest_fen,
            "early": d.withdrawn_on is not None and d.withdrawn_on < d.maturity_date}


def _fines_after(p: Participant, step: Callable[[], None]) -> dict[str, int]:
    """Run a fine command's step; its result: what the participant still owes the
    treasury."""
    step()
    return {"fines_outstanding_fen": p.fines_outstanding_fen}
