"""What the bank files are made of: payment instructions in, bank files out.

Pure values, no I/O. Amounts are integer fen; the only decimal strings are on the wire,
made and read by `format_fen` and `parse_fen` below.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from operator import itemgetter

# Limits on everything (TIGER_STYLE). One payment can be a large one-off (inheritance,
# refund) but never a billion yuan; a file total must fit the domestic format's 18 digits.
MAX_AMOUNT_FEN = 10**12 - 1
MAX_TOTAL_FEN = 10**16 - 1
MAX_PAYMENTS_PER_EXPORT = 20_000_000
CURRENCY = "CNY"

_E2E = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,34}")
_MSG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,29}")  # room for a "-0001" file suffix
# [0-9], not \d: \d is any Unicode digit ("６２２２", fullwidth), which no bank takes.
_MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
_ACCOUNT = re.compile(r"[0-9]{1,32}")
_BANK_CODE = re.compile(r"[0-9A-Za-z]{3,12}")
_ID_NUMBER = re.compile(r"[0-9]{17}[0-9X]")
_PURPOSE = re.compile(r"[A-Z]{4}")
_BIC = re.compile(r"[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?")
_IBAN = re.compile(r"[A-Z]{2}[0-9]{2}[A-Za-z0-9]{1,30}")
# XML 1.0 cannot carry C0 controls, and a line break would split a fixed-width record.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_DECIMAL = re.compile(r"([0-9]{1,18})(?:\.([0-9]{1,2}))?")


class BankFileError(ValueError):
    """Anything a bank file writer or reader refuses. The message names the field or path."""


class InvalidInstruction(BankFileError):
    """Input to a writer that cannot go into a bank file."""


class MalformedFile(BankFileError):
    """A file from the bank whose structure is wrong: refused whole."""


class TotalsMismatch(BankFileError):
    """A file whose stated counts or sums disagree with its entries: refused whole."""


# -- money at the edge -------------------------------------------------------------------------

def format_fen(amount_fen: int) -> str:
    """12345 -> '123.45'. Integer arithmetic only, so 1 fen is '0.01', never '0.0099999'."""
    if isinstance(amount_fen, bool) or not isinstance(amount_fen, int) or amount_fen < 0:
        raise InvalidInstruction(f"amount {amount_fen!r} is not a non-negative integer of fen")
    yuan, fen = divmod(amount_fen, 100)
    return f"{yuan}.{fen:02d}"


def parse_fen(text: str | None, where: str) -> int:
    """'123.45' -> 12345, exactly. Refuses signs, exponents, and more than 2 decimals."""
    if text is None:
        raise MalformedFile(f"{where}: amount is missing")
    s = text.strip(" \t\r\n")
    m = _DECIMAL.fullmatch(s)
    if m is None:
        if re.fullmatch(r"\d+\.\d{3,}", s):
            raise MalformedFile(f"{where}: amount {text!r} has more than 2 decimal places")
        raise MalformedFile(f"{where}: {text!r} is not a decimal amount such as 123.45")
    return int(m.group(1)) * 100 + int((m.group(2) or "").ljust(2, "0"))


def _text(value: object, name: str, max_chars: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInstruction(f"{name} is empty")
    if value != value.strip():
        raise InvalidInstruction(f"{name} {value!r} has leading or trailing spaces")
    if len(value) > max_chars:
        raise InvalidInstruction(f"{name} is {len(value)} characters, more than {max_chars}")
    if _CONTROL.search(value):
        raise InvalidInstruction(f"{name} {value!r} contains a control character")
    return value


def _plain_text(value: object, max_chars: int) -> bool:
    """What _text accepts, as a test."""
    return (isinstance(value, str) and value != "" and value == value.strip()
            and len(value) <= max_chars and _CONTROL.search(value) is None)


def _match(pattern: re.Pattern[str], value: object, name: str, rule: str) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise InvalidInstruction(f"{name} {value!r} must be {rule}")
    return value


# -- input -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PaymentInstruction:
    """One payment to one pensioner, as the monthly run hands it to the file writers.

    `end_to_end_id` is the payment's stable id: the bank echoes it in every status, statement
    line and return, so it is how everything the bank sends back is matched to the payment.
    `account_name` (户名) is the bank account holder; it defaults to `payee_name` (姓名).
    """

    end_to_end_id: str
    payout_month: str
    payee_name: str
    account_number: str
    bank_code: str
    amount_fen: int
    id_number: str
    purpose: str = "PENS"
    account_name: str = ""
    remittance_info: str = ""

    def __post_init__(self) -> None:
        if not self.account_name:
            object.__setattr__(self, "account_name", self.payee_name)
        if not self.remittance_info:
            object.__setattr__(self, "remittance_info", f"养老金 {self.payout_month}")
        # A million payments a month: checked by plain tests first, and field by field,
        # naming the field at fault, only when one fails.
        if not self._valid():
            self._refuse()
            raise AssertionError("PaymentInstruction: _valid and _refuse disagree")

    def _valid(self) -> bool:
        # The month, bank code, purpose and remittance text repeat across a million
        # payments: checked once each (_shared_ok).
        shared = (self.payout_month, self.bank_code, self.purpose, self.remittance_info)
        e2e, name, holder = self.end_to_end_id, self.payee_name, self.account_name
        account, id_number, amount = self.account_number, self.id_number, self.amount_fen
        # isinstance as in _match and _text, so that the two never disagree.
        return (isinstance(e2e, str) and _E2E.fullmatch(e2e) is not None
                and _plain_text(name, 60)
                and (holder == name or _plain_text(holder, 60))
                and isinstance(account, str) and _ACCOUNT.fullmatch(account) is not None
                and isinstance(id_number, str) and _ID_NUMBER.fullmatch(id_number) is not None
                and type(amount) is int and 0 < amount <= MAX_AMOUNT_FEN
                and isinstance(shared[0], str) and isinstance(shared[1], str)
                and isinstance(shared[2], str) and isinstance(shared[3], str)
                and _shared_ok(*shared))

    def _refuse(self) -> None:
        """Raise InvalidInstruction naming the first field that fails its rule."""
        e2e = _match(_E2E, self.end_to_end_id, "end_to_end_id",
                     "1-35 letters, digits, '.', '_' or '-'")
        where = f"payment {e2e}: "
        _match(_MONTH, self.payout_month, where + "payout_month", "YYYY-MM")
        _match(_BANK_CODE, self.bank_code, where + "bank_code", "3-12 letters or digits")
        _match(_PURPOSE, self.purpose, where + "purpose", "a 4-letter ISO purpose code")
        _text(self.remittance_info, where + "remittance_info", 140)
        _text(self.payee_name, where + "payee_name", 60)
        _match(_ACCOUNT, self.account_number, where + "account_number", "1-32 digits")
        _match(_ID_NUMBER, self.id_number, where + "id_number",
               "18 characters: 17 digits and a digit or X")
        if type(self.amount_fen) is not int:
            raise InvalidInstruction(f"{where}amount_fen {self.amount_fen!r} must be an int")
        if not 0 < self.amount_fen <= MAX_AMOUNT_FEN:
            raise InvalidInstruction(
                f"{where}amount_fen {self.amount_fen} must be between 1 and {MAX_AMOUNT_FEN}")
        _text(self.account_name, where + "account_name", 60)

    @classmethod
    def checked_before(cls, *, end_to_end_id: str, payout_month: str, payee_name: str,
                       account_number: str, bank_code: str, amount_fen: int, id_number: str,
                       account_name: str, remittance_info: str, purpose: str = "PENS"
                       ) -> PaymentInstruction:
        """An instruction made again from what was checked when it was first made (a
        stored batch line), without the checks: every field is given. Only for files
        whose hash is then compared with the hash of the files made the checked way."""
        p = object.__new__(cls)
        for name, value in (("end_to_end_id", end_to_end_id), ("payout_month", payout_month),
                            ("payee_name", payee_name), ("account_number", account_number),
                            ("bank_code", bank_code), ("amount_fen", amount_fen),
                            ("id_number", id_number), ("purpose", purpose),
                            ("account_name", account_name),
                            ("remittance_info", remittance_info)):
            object.__setattr__(p, name, value)
        return p


@functools.lru_cache(maxsize=4096)
def _shared_ok(payout_month: object, bank_code: object, purpose: object,
               remittance_info: object) -> bool:
    try:
        _match(_MONTH, payout_month, "payout_month", "YYYY-MM")
        _match(_BANK_CODE, bank_code, "bank_code", "3-12 letters or digits")
        _match(_PURPOSE, purpose, "purpose", "a 4-letter ISO purpose code")
        _text(remittance_info, "remittance_info", 140)
    except InvalidInstruction:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Debtor:
    """The fund's expenditure account (基金支出户), which every payout is paid from.

    `account_number` is the domestic number; `iban`, when given, is written instead of it in
    the pain.001. The bank is named by `bank_bic`, `bank_code` (CNAPS), or both.
    """

    name: str
    account_number: str
    bank_code: str = ""
    bank_bic: str = ""
    iban: str = ""
    organisation_id: str = ""  # e.g. the office's unified social credit code, for InitgPty

    def __post_init__(self) -> None:
        _text(self.name, "debtor name", 140)
        _match(_ACCOUNT, self.account_number, "debtor account_number", "1-32 digits")
        if not (self.bank_code or self.bank_bic):
            raise InvalidInstruction("debtor needs a bank_code or a bank_bic")
        if self.bank_code:
            _match(_BANK_CODE, self.bank_code, "debtor bank_code", "3-12 letters or digits")
        if self.bank_bic:
            _match(_BIC, self.bank_bic, "debtor bank_bic", "a BIC of 8 or 11 characters")
        if self.iban:
            _match(_IBAN, self.iban, "debtor iban", "an IBAN without spaces")
        if self.organisation_id:
            _match(re.compile(r"[0-9A-Z]{1,35}"), self.organisation_id,
                   "debtor organisation_id", "1-35 capital letters or digits")


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """What identifies one export. Each file adds '-NNNN' to `message_id` and `batch_id`."""

    message_id: str
    batch_id: str
    created_at: datetime
    requested_execution_date: date
    payout_month: str = ""  # the run's period; "" means the latest month among the payments
    category_purpose: str = "PENS"

    def __post_init__(self) -> None:
        _match(_MSG_ID, self.message_id, "message_id", "1-30 letters, digits or '-'")
        _match(_MSG_ID, self.batch_id, "batch_id", "1-30 letters, digits or '-'")
        if not isinstance(self.created_at, datetime) or self.created_at.tzinfo is None:
            raise InvalidInstruction("created_at must be a datetime with a time zone")
        if not isinstance(self.requested_execution_date, date) or isinstance(
                self.requested_execution_date, datetime):
            raise InvalidInstruction("requested_execution_date must be a date")
        if self.payout_month:
            _match(_MONTH, self.payout_month, "payout_month", "YYYY-MM")
        _match(_PURPOSE, self.category_purpose, "category_purpose",
               "a 4-letter ISO category purpose code")


# -- output ------------------------------------------------------------------------------------

# A payment as the files and their checks carry it: (end_to_end_id, amount_fen, ...).
END_TO_END_ID, AMOUNT_FEN = itemgetter(0), itemgetter(1)


@dataclass(frozen=True, slots=True)
class BankFile:
    """One file to hand to the bank, with what it carries, for the manifest and for matching
    what the bank sends back to the file it answers."""

    name: str
    content: bytes
    message_id: str
    nb_of_txs: int
    ctrl_sum_fen: int
    payments: tuple[tuple[str, int], ...] = field(repr=False)  # (end_to_end_id, amount_fen)

    def __post_init__(self) -> None:
        assert self.nb_of_txs == len(self.payments) > 0
        assert self.ctrl_sum_fen == sum(map(AMOUNT_FEN, self.payments))


def check_batch(payments: tuple[PaymentInstruction, ...] | list[PaymentInstruction]) -> None:
    """What every writer refuses before writing a byte: something not a payment, nothing to
    pay, a repeated end_to_end_id (the bank would refuse it, AM05), a total past the limit."""
    check_instructions(payments)
    check_payments([(p.end_to_end_id, p.amount_fen) for p in payments])


def check_instructions(payments: Iterable[object]) -> None:
    for p in payments:
        if not isinstance(p, PaymentInstruction):
            raise InvalidInstruction(f"{p!r} is not a PaymentInstruction")


def check_payments(payments: Sequence[tuple[str, int] | tuple[str, int, bytes]]) -> None:
    """check_batch's rules on the payments' (end_to_end_id, amount_fen, ...): each was checked
    as a PaymentInstruction when it was made (a pain.001 fragment made ahead keeps these)."""
    if not payments:
        raise InvalidInstruction("there are no payments to write")
    if len(payments) > MAX_PAYMENTS_PER_EXPORT:
        raise InvalidInstruction(
            f"{len(payments)} payments is more than the limit of {MAX_PAYMENTS_PER_EXPORT}")
    ids = list(map(END_TO_END_ID, payments))
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        for end_to_end_id in ids:
            if end_to_end_id in seen:
                raise InvalidInstruction(f"end_to_end_id {end_to_end_id} appears twice")
            seen.add(end_to_end_id)
    total = sum(map(AMOUNT_FEN, payments))
    if total > MAX_TOTAL_FEN:
        raise InvalidInstruction(f"total {total} fen is more than the limit of {MAX_TOTAL_FEN}")
