"""The 18-digit resident ID (GB 11643): area code, birth date, sequence, ISO 7064 MOD 11-2."""

from __future__ import annotations

from datetime import date

import pytest

from ledger import resident_id
from ledger.errors import InvalidInput


@pytest.mark.parametrize("id_number", [
    "11010519491231002X",  # the example printed in GB 11643-1999: check digit X (10)
    "440524188001010014",  # the other example of the standard, born 1880
    "110101199003074477",
])
def test_valid_ids_are_accepted_in_canonical_form(id_number: str) -> None:
    assert resident_id.normalise(id_number) == id_number


def test_a_lower_case_x_and_surrounding_blanks_are_normalised() -> None:
    assert resident_id.normalise(" 11010519491231002x ") == "11010519491231002X"


def test_the_check_digit_is_iso_7064_mod_11_2_with_x_for_ten() -> None:
    assert resident_id.check_digit("11010519491231002") == "X"
    assert resident_id.check_digit("44052418800101001") == "4"


def test_a_wrong_check_digit_is_refused_naming_the_rule() -> None:
    with pytest.raises(InvalidInput) as e:
        resident_id.normalise("110101199003074475")
    assert e.value.field == "id_number"
    assert "check digit" in e.value.rule and "MOD 11-2" in e.value.rule


def test_every_wrong_check_digit_is_refused() -> None:
    good = "11010519491231002X"
    for wrong in "0123456789":
        with pytest.raises(InvalidInput, match="check digit"):
            resident_id.normalise(good[:17] + wrong)


def _with_check_digit(first17: str) -> str:
    return first17 + resident_id.check_digit(first17)


@pytest.mark.parametrize("birth", ["19990230", "19990931", "20230229", "19991301", "19990001",
                                   "19990100"])
def test_an_impossible_birth_date_is_refused_even_with_a_correct_check_digit(birth: str) -> None:
    id_number = _with_check_digit(f"110101{birth}123")
    with pytest.raises(InvalidInput) as e:
        resident_id.normalise(id_number)
    assert e.value.field == "id_number"
    assert f"birth date {birth} is not a real date" == e.value.rule


def test_29_february_is_a_real_date_in_a_leap_year() -> None:
    id_number = _with_check_digit("11010120000229123")
    assert resident_id.birth_date(resident_id.normalise(id_number)) == date(2000, 2, 29)


def test_a_birth_date_before_1880_is_refused() -> None:
    with pytest.raises(InvalidInput, match="before 1880"):
        resident_id.normalise(_with_check_digit("11010118791231123"))


@pytest.mark.parametrize("area", ["000000", "100101", "190101", "990101", "800101", "720101"])
def test_an_area_code_that_names_no_province_is_refused(area: str) -> None:
    with pytest.raises(InvalidInput) as e:
        resident_id.normalise(_with_check_digit(f"{area}19800101123"))
    assert e.value.field == "id_number"
    assert f"area code {area} names no province" in e.value.rule


@pytest.mark.parametrize("text", [
    "11010519491231002",      # 17 characters
    "11010519491231002X1",    # 19 characters
    "1101051949123100X2",     # X anywhere but last
    "11010519491231002Y",
    "",
])
def test_anything_not_17_digits_then_a_digit_or_x_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as e:
        resident_id.normalise(text)
    assert e.value.rule == "resident ID must be 17 digits then a digit or X"


def test_a_non_string_is_refused() -> None:
    with pytest.raises(InvalidInput) as e:
        resident_id.normalise(110105194912310021)  # type: ignore[arg-type]
    assert e.value.field == "id_number"


def test_the_field_named_in_the_error_is_the_callers() -> None:
    with pytest.raises(InvalidInput) as e:
        resident_id.normalise("110101199003074475", field="payee_id")
    assert e.value.field == "payee_id"


def test_masking_shows_the_first_six_and_the_last_four_only() -> None:
    masked = resident_id.mask("11010519491231002X")
    assert masked == "110105********002X"
    assert len(masked) == 18
    assert "19491231" not in masked


def test_the_birth_date_is_read_from_the_id() -> None:
    assert resident_id.birth_date("11010519491231002X") == date(1949, 12, 31)


def test_make_builds_valid_ids_for_tests_and_the_synthetic_county() -> None:
    for seq in (0, 1, 17, 999):
        made = resident_id.make("320102", date(1984, 2, 29), seq)
        assert resident_id.normalise(made) == made
        assert made[14:17] == f"{seq:03d}"
        assert resident_id.birth_date(made) == date(1984, 2, 29)


@pytest.mark.parametrize(("born", "on", "age"), [
    (date(1960, 5, 17), date(2020, 5, 16), 59),
    (date(1960, 5, 17), date(2020, 5, 17), 60),
    (date(2000, 2, 29), date(2016, 2, 28), 15),
    (date(2000, 2, 29), date(2016, 2, 29), 16),
    (date(2000, 2, 29), date(2017, 2, 28), 16),
    (date(2000, 2, 29), date(2017, 3, 1), 17),
])
def test_age_counts_whole_years_from_the_birthday(born: date, on: date, age: int) -> None:
    assert resident_id.age_on(born, on) == age


@pytest.mark.parametrize("text", [
    "１１０１０５１９４９１２３１００２X",                     # full-width digits, ASCII X
    "\u0661\u0661\u0660\u0661\u0660\u0665\u0661\u0669\u0664\u0669"
    "\u0661\u0662\u0663\u0661\u0660\u0660\u0662X",          # Arabic-Indic digits
])
def test_an_id_in_non_ascii_digits_never_gets_a_second_canonical_form(text: str) -> None:
    try:
        canonical = resident_id.normalise(text)
    except InvalidInput:
        return  # refusing it is fine
    assert canonical == "11010519491231002X"  # or read as the same ASCII ID
