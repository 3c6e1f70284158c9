"""Errors the ledger raises. Each names the field and the rule that was broken."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger reports to a user."""


class InvalidInput(LedgerError):
    """Bad input: names the field and the rule. Nothing is stored."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class NotFound(LedgerError):
    def __init__(self, field: str, value: str) -> None:
        super().__init__(f"{field}: no such record {value!r}")
        self.field = field
        self.rule = "must name an existing record"


class Refused(LedgerError):
    """A well-formed command the rules of the scheme do not allow."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class IdempotencyConflict(LedgerError):
    def __init__(self, key: str) -> None:
        super().__init__(
            f"idempotency_key: {key!r} was already used with a different payload"
        )
        self.field = "idempotency_key"
        self.rule = "the same key must carry the same payload"


class ConcurrencyConflict(LedgerError):
    def __init__(self, attempts: int) -> None:
        super().__init__(f"gave up after {attempts} attempts: other writers kept conflicting")


class ImportRejected(LedgerError):
    """A bulk file was refused whole; lists every bad line."""

    def __init__(self, path: str, problems: list[tuple[int, str]]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  line {n}: {msg}" for n, msg in problems[:1000])
        more = "" if len(problems) <= 1000 else f"\n  ... and {len(problems) - 1000} more"
        super().__init__(
            f"{path}: {len(problems)} bad line(s), nothing imported\n{lines}{more}"
        )
