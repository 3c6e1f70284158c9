"""Money is integer fen (分) inside. Parse decimal yuan strings at the edge only."""

from __future__ import annotations

import re

from ledger.errors import InvalidInput

MAX_AMOUNT_FEN = 10**15  # a limit on everything: far above any real fund, far below int64
_YUAN = re.compile(r"^(?P<sign>-)?(?P<int>\d{1,13})(?:\.(?P<frac>\d{1,2}))?$")


def parse_yuan(text: object, field: str, *, allow_zero: bool = False,
               allow_negative: bool = False) -> int:
    """Parse a yuan amount like "123.45" into fen. Floats are refused outright."""
    if isinstance(text, (bool, float)):
        raise InvalidInput(field, "amounts must be decimal strings, never floats")
    if isinstance(text, int):
        raise InvalidInput(field, "amounts in yuan must be given as decimal strings")
    if not isinstance(text, str):
        raise InvalidInput(field, "amount must be a decimal string such as 100.00")
    s = text.strip()
    m = _YUAN.match(s)
    if not m:
        if re.match(r"^-?\d+\.\d{3,}$", s):
            raise InvalidInput(field, f"{text!r} has more than 2 decimal places")
        raise InvalidInput(field, f"{text!r} is not a decimal amount such as 100.00")
    frac = (m.group("frac") or "").ljust(2, "0")
    fen = int(m.group("int")) * 100 + int(frac or "0")
    if m.group("sign"):
        fen = -fen
    return check_fen(fen, field, allow_zero=allow_zero, allow_negative=allow_negative)


def check_fen(fen: object, field: str, *, allow_zero: bool = False,
              allow_negative: bool = False) -> int:
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise InvalidInput(field, "amount in fen must be an integer")
    if fen < 0 and not allow_negative:
        raise InvalidInput(field, "amount must not be negative")
    if fen == 0 and not allow_zero:
        raise InvalidInput(field, "amount must be greater than zero")
    if abs(fen) > MAX_AMOUNT_FEN:
        raise InvalidInput(field, f"amount exceeds the limit of {MAX_AMOUNT_FEN} fen")
    return fen


def format_yuan(fen: int) -> str:
    """12345 -> '123.45'; -5 -> '-0.05'."""
    assert isinstance(fen, int) and not isinstance(fen, bool)
    sign = "-" if fen < 0 else ""
    q, r = divmod(abs(fen), 100)
    return f"{sign}{q}.{r:02d}"
