"""Money is integer fen inside; yuan strings are parsed at the edge, and only there."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ledger.errors import InvalidInput
from ledger.money import MAX_AMOUNT_FEN, check_fen, format_yuan, parse_yuan


@pytest.mark.parametrize(("text", "fen"), [
    ("123.45", 12345),
    ("0.01", 1),
    ("0.5", 50),          # one decimal place means jiao
    ("7", 700),           # a whole number of yuan
    ("100.00", 10000),
    ("  12.30 ", 1230),   # surrounding blanks are not part of the amount
    ("9999999999999.99", 999_999_999_999_999),
])
def test_parse_yuan_turns_a_decimal_string_into_exact_fen(text: str, fen: int) -> None:
    assert parse_yuan(text, "amount") == fen


@pytest.mark.parametrize("text", ["1.234", "0.001", "100.999", "-1.234", "5.1000"])
def test_more_than_two_decimal_places_is_refused_as_over_precision(text: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_yuan(text, "amount")
    assert e.value.field == "amount"
    assert "more than 2 decimal places" in e.value.rule


@pytest.mark.parametrize("value", [1.5, 100.0, float("nan"), float("inf"), 0.1 + 0.2])
def test_floats_are_refused_outright(value: float) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_yuan(value, "tier")
    assert e.value.field == "tier"
    assert "never floats" in e.value.rule


@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_refused_even_though_python_counts_them_as_ints(value: bool) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_yuan(value, "amount")
    assert e.value.field == "amount"


def test_integers_are_refused_because_yuan_and_fen_would_be_ambiguous() -> None:
    with pytest.raises(InvalidInput) as e:
        parse_yuan(100, "amount")
    assert "decimal strings" in e.value.rule


@pytest.mark.parametrize("value", [None, Decimal("1.00"), b"1.00", ["1.00"]])
def test_anything_but_a_string_is_refused(value: object) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_yuan(value, "amount")
    assert e.value.field == "amount"


@pytest.mark.parametrize("text", [
    "NaN", "nan", "inf", "-inf", "Infinity", "1e3", "1E2", "", "   ", "abc", "1,000.00",
    "+1.00", ".5", "5.", "1.2.3", "¥100", "100元", "0x10", "1_000",
    "10000000000000.00",  # 14 integer digits: beyond the limit on everything
])
def test_text_that_is_not_a_plain_decimal_amount_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_yuan(text, "amount")
    assert e.value.field == "amount"
    assert repr(text) in e.value.rule or "decimal" in e.value.rule


def test_negative_amounts_are_refused_unless_the_caller_allows_them() -> None:
    with pytest.raises(InvalidInput) as e:
        parse_yuan("-1.00", "amount")
    assert e.value.rule == "amount must not be negative"
    assert parse_yuan("-1.00", "amount", allow_negative=True) == -100
    assert parse_yuan("-0.05", "amount", allow_negative=True) == -5


@pytest.mark.parametrize("text", ["0", "0.00", "0.0", "-0.00"])
def test_zero_is_refused_unless_the_caller_allows_it(text: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_yuan(text, "amount")
    assert e.value.rule == "amount must be greater than zero"
    assert parse_yuan(text, "amount", allow_zero=True) == 0


def test_check_fen_puts_a_limit_on_every_amount() -> None:
    assert check_fen(MAX_AMOUNT_FEN, "amount") == MAX_AMOUNT_FEN
    with pytest.raises(InvalidInput) as e:
        check_fen(MAX_AMOUNT_FEN + 1, "amount")
    assert "exceeds the limit" in e.value.rule
    with pytest.raises(InvalidInput):
        check_fen(-MAX_AMOUNT_FEN - 1, "amount", allow_negative=True)


@pytest.mark.parametrize("value", [1.0, "100", Decimal(100), True, None])
def test_check_fen_accepts_only_true_integers(value: object) -> None:
    with pytest.raises(InvalidInput) as e:
        check_fen(value, "amount_fen")
    assert e.value.field == "amount_fen"
    assert "integer" in e.value.rule


def test_the_error_message_names_the_field_and_the_rule() -> None:
    with pytest.raises(InvalidInput) as e:
        parse_yuan("1.234", "contribution_amount")
    assert str(e.value) == "contribution_amount: '1.234' has more than 2 decimal places"


@pytest.mark.parametrize(("fen", "text"), [
    (12345, "123.45"), (5, "0.05"), (50, "0.50"), (0, "0.00"), (100, "1.00"),
    (-5, "-0.05"), (-12345, "-123.45"), (999_999_999_999_999, "9999999999999.99"),
])
def test_format_yuan_writes_fen_as_yuan_with_two_decimals(fen: int, text: str) -> None:
    assert format_yuan(fen) == text


def test_format_yuan_and_parse_yuan_round_trip() -> None:
    for fen in (1, 9, 10, 99, 100, 101, 12345, 10**12 + 7, MAX_AMOUNT_FEN - 1):
        assert parse_yuan(format_yuan(fen), "amount") == fen
        assert parse_yuan(format_yuan(-fen), "amount", allow_negative=True) == -fen
