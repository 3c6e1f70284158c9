"""Payout settings: the sample county's defaults, PAYOUT_* overrides, bad values refused
naming the variable, and the dates a month's files carry."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from ledger.errors import InvalidInput
from payout_engine.config import BEIJING, PayoutConfig, load_config


def test_defaults_are_the_sample_countys() -> None:
    config = load_config({})
    assert config == PayoutConfig()
    debtor = config.debtor()
    assert (debtor.account_number, debtor.bank_code, debtor.iban) == ("1000000001",
                                                                      "102100099996", "")
    assert config.max_txs_per_file == 10_000 and config.execution_offset_days == 3


def test_environment_overrides() -> None:
    config = load_config({"PAYOUT_FUND_ACCOUNT_NUMBER": "6222333344445555",
                          "PAYOUT_FUND_IBAN": "CN12MOCK6222333344445555",
                          "PAYOUT_MAX_TXS_PER_FILE": "500", "PAYOUT_PAYDAY": "15",
                          "PAYOUT_EXECUTION_OFFSET_DAYS": "5",
                          "PAYOUT_HOLIDAYS": "2026-10-01, 2026-10-02"})
    assert config.fund_account_number == "6222333344445555"
    assert config.debtor().iban == "CN12MOCK6222333344445555"
    assert (config.max_txs_per_file, config.payday, config.execution_offset_days) == (500, 15,
                                                                                      5)
    assert config.holidays == (date(2026, 10, 1), date(2026, 10, 2))


@pytest.mark.parametrize("name, value, rule", [
    ("PAYOUT_EXECUTION_OFFSET_DAYS", "2", "greater than or equal to 3"),
    ("PAYOUT_MAX_TXS_PER_FILE", "0", "greater than or equal to 1"),
    ("PAYOUT_PAYDAY", "31", "less than or equal to 28"),
    ("PAYOUT_HOLIDAYS", "2026-13-01", "date"),
    ("PAYOUT_FUND_ACCOUNT_NUMBER", "12-34", "1-32 digits"),
])
def test_a_bad_setting_is_refused_naming_the_variable(name: str, value: str,
                                                      rule: str) -> None:
    with pytest.raises(InvalidInput, match=rule) as caught:
        load_config({name: value})
    assert caught.value.field in (name, "PAYOUT_FUND_ACCOUNT")


def test_the_bank_executes_three_working_days_before_payday() -> None:
    config = PayoutConfig()
    # 20 November 2026 is a Friday: Tuesday the 17th.
    assert config.payday_of("2026-11") == date(2026, 11, 20)
    assert config.execution_date("2026-11") == date(2026, 11, 17)
    # 20 December 2026 is a Sunday: payday moves back to Friday the 18th.
    assert config.payday_of("2026-12") == date(2026, 12, 18)
    assert config.execution_date("2026-12") == date(2026, 12, 15)
    # A holiday is not a working day: National Day week in October.
    golden_week = PayoutConfig(payday=8, holidays=tuple(date(2026, 10, d) for d in
                                                        range(1, 8)))
    assert golden_week.payday_of("2026-10") == date(2026, 10, 8)
    assert golden_week.execution_date("2026-10") == date(2026, 9, 28)


def test_the_files_creation_time_is_fixed_by_the_month_and_never_in_the_future() -> None:
    config = PayoutConfig()
    at = config.created_at("2026-11", today=date(2026, 11, 16))
    assert at == datetime(2026, 11, 1, tzinfo=BEIJING)
    assert at == config.created_at("2026-11", today=date(2027, 3, 1))  # a later re-run
    assert config.created_at("2026-12", today=date(2026, 11, 25)) == datetime(
        2026, 11, 25, tzinfo=BEIJING)                                 # drafted ahead
