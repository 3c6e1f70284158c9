"""The 18-digit resident ID (公民身份号码, GB 11643-1999).

6-digit area code, 8-digit birth date, 3-digit sequence, check digit by ISO 7064 MOD 11-2.
"""

from __future__ import annotations

import re
from datetime import date

from ledger.errors import InvalidInput

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_SHAPE = re.compile(r"^[0-9]{17}[0-9X]$")  # ASCII only: \d is any Unicode digit
# Province-level codes in use (first two digits of the area code).
_PROVINCES = {
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46,
    50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82,
}


def check_digit(first17: str) -> str:
    assert len(first17) == 17 and first17.isdigit()
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def normalise(text: str, field: str = "id_number") -> str:
    """Validate and return the canonical form (upper-case X). Raises InvalidInput."""
    if not isinstance(text, str):
        raise InvalidInput(field, "resident ID must be a string of 18 characters")
    s = text.strip().upper()
    if not _SHAPE.match(s):
        raise InvalidInput(field, "resident ID must be 17 digits then a digit or X")
    if int(s[:2]) not in _PROVINCES:
        raise InvalidInput(field, f"area code {s[:6]} names no province (GB/T 2260)")
    birth_date(s, field)
    if check_digit(s[:17]) != s[17]:
        raise InvalidInput(field, "check digit is wrong (ISO 7064 MOD 11-2)")
    return s


def birth_date(id_number: str, field: str = "id_number") -> date:
    try:
        born = date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))
    except ValueError:
        raise InvalidInput(field, f"birth date {id_number[6:14]} is not a real date") from None
    if born.year < 1880:
        raise InvalidInput(field, f"birth date {id_number[6:14]} is before 1880")
    return born


def mask(id_number: str) -> str:
    """First 6 and last 4 shown: 110101********1234."""
    return id_number[:6] + "*" * (len(id_number) - 10) + id_number[-4:]


def make(area: str, born: date, sequence: int) -> str:
    """Build a valid ID (for tests and the synthetic county)."""
    assert len(area) == 6 and area.isdigit() and 0 <= sequence <= 999
    first17 = f"{area}{born:%Y%m%d}{sequence:03d}"
    return first17 + check_digit(first17)


def age_on(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))
