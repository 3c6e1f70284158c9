"""Payout settings: the fund's expenditure account (基金支出户) every pension is paid from, and
how the monthly files are cut and dated.

Defaults are the sample county's; each can be overridden by an environment variable:

    PAYOUT_FUND_ACCOUNT_NAME     account holder name of the expenditure account
    PAYOUT_FUND_ACCOUNT_NUMBER   its domestic account number (digits)
    PAYOUT_FUND_BANK_CODE        the agent bank's CNAPS code (or another clearing code)
    PAYOUT_FUND_BIC              the agent bank's BIC, optional
    PAYOUT_FUND_IBAN             an IBAN-shaped id for the account, optional; when set the
                                 pain.001 names the debtor account by it (the mock bank keys
                                 accounts by IBAN), otherwise by Othr/Id = the number
    PAYOUT_ORGANISATION_ID       the office's unified social credit code, optional (InitgPty)
    PAYOUT_MAX_TXS_PER_FILE      payments per bank file (pain.001 and 报盘), 1..1000000
    PAYOUT_PAYDAY                day of the month pensions must be in pensioners' accounts
    PAYOUT_EXECUTION_OFFSET_DAYS working days between the bank's execution date and payday;
                                 at least 3 (the list reaches the bank 3 working days ahead)
    PAYOUT_HOLIDAYS              comma-separated YYYY-MM-DD dates that are not working days
    PAYOUT_DRAFTED_FILES_DIR     where a draft keeps its bank files for the export (0700;
                                 removed once exported); "off" to make them again at export.
                                 Default: $XDG_STATE_HOME/pension-ledger/drafted-files
    PAYOUT_INCOME_ACCOUNT        the income account (基金收入户) as the bank's statements name
                                 it (number or IBAN-shaped id), for reconciling
    PAYOUT_FISCAL_ACCOUNT        the fiscal special account (财政专户), likewise

A change of the account or of the file size after a batch is drafted changes its files, so
the export refuses them (their hash is not the approved one) rather than send other bytes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ledger.errors import InvalidInput
from payout_engine.bankfiles import Debtor

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
MIN_EXECUTION_OFFSET_DAYS = 3
MAX_HOLIDAYS = 1000

ENV_FIELDS = {
    "PAYOUT_FUND_ACCOUNT_NAME": "fund_account_name",
    "PAYOUT_FUND_ACCOUNT_NUMBER": "fund_account_number",
    "PAYOUT_FUND_BANK_CODE": "fund_bank_code",
    "PAYOUT_FUND_BIC": "fund_bic",
    "PAYOUT_FUND_IBAN": "fund_iban",
    "PAYOUT_ORGANISATION_ID": "organisation_id",
    "PAYOUT_MAX_TXS_PER_FILE": "max_txs_per_file",
    "PAYOUT_PAYDAY": "payday",
    "PAYOUT_EXECUTION_OFFSET_DAYS": "execution_offset_days",
    "PAYOUT_HOLIDAYS": "holidays",
    "PAYOUT_DRAFTED_FILES_DIR": "drafted_files_dir",
    "PAYOUT_INCOME_ACCOUNT": "income_account",
    "PAYOUT_FISCAL_ACCOUNT": "fiscal_account",
}


class PayoutConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fund_account_name: str = "样例县城乡居民基本养老保险基金支出户"
    fund_account_number: str = "1000000001"
    fund_bank_code: str = "102100099996"  # the agent bank's CNAPS code
    fund_bic: str = ""
    fund_iban: str = ""
    organisation_id: str = ""
    max_txs_per_file: int = Field(default=10_000, ge=1, le=1_000_000)
    payday: int = Field(default=20, ge=1, le=28)
    execution_offset_days: int = Field(default=MIN_EXECUTION_OFFSET_DAYS,
                                       ge=MIN_EXECUTION_OFFSET_DAYS, le=20)
    holidays: tuple[date, ...] = ()
    # Not in file_settings: where the drafted bytes wait changes no byte of them.
    drafted_files_dir: str = ""   # "" the default below, "off" none
    # The fund's other two bank accounts, which pay no pension: only their statements are
    # read (reconcile), so they shape no file either.
    income_account: str = Field(default="1000000002", min_length=1, max_length=34)
    fiscal_account: str = Field(default="1000000003", min_length=1, max_length=34)

    def check_accounts(self) -> None:
        """The three accounts are three: a statement must name one of them only."""
        expenditure = {self.fund_account_number, self.fund_iban} - {""}
        for name, account in (("PAYOUT_INCOME_ACCOUNT", self.income_account),
                              ("PAYOUT_FISCAL_ACCOUNT", self.fiscal_account)):
            if account in expenditure:
                raise InvalidInput(name, f"{account} is the expenditure account's")
        if self.income_account == self.fiscal_account:
            raise InvalidInput("PAYOUT_FISCAL_ACCOUNT", f"{self.fiscal_account} is the "
                               "income account's; the fiscal special account is another")

    def drafted_files(self) -> Path | None:
        """The directory payout_engine.drafted_files keeps a draft's files in."""
        if self.drafted_files_dir == "off":
            return None
        if self.drafted_files_dir:
            return Path(self.drafted_files_dir)
        state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(state) / "pension-ledger" / "drafted-files"

    def is_fund_account(self, account: str) -> bool:
        """Whether a bank message's account is the fund's expenditure account (by its
        domestic number or its IBAN)."""
        return account in {self.fund_account_number, self.fund_iban} - {""}

    def fund_account_of(self, account: str) -> str | None:
        """Which of the fund's three bank accounts a bank message's account is:
        "income", "fiscal" or "expenditure", or None for another account."""
        if self.is_fund_account(account):
            return "expenditure"
        return {self.income_account: "income", self.fiscal_account: "fiscal"}.get(account)

    @field_validator("holidays", mode="before")
    @classmethod
    def _holidays(cls, v: object) -> object:
        if isinstance(v, str):
            v = tuple(d.strip() for d in v.split(",") if d.strip())
        if isinstance(v, tuple | list) and len(v) > MAX_HOLIDAYS:
            raise ValueError(f"at most {MAX_HOLIDAYS} holidays")
        return v

    def debtor(self) -> Debtor:
        """The expenditure account as the bank files name it (checked by the writers)."""
        return Debtor(self.fund_account_name, self.fund_account_number,
                      bank_code=self.fund_bank_code, bank_bic=self.fund_bic,
                      iban=self.fund_iban, organisation_id=self.organisation_id)

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self.holidays

    def payday_of(self, period: str) -> date:
        """Payday of a payout month, moved back to a working day if it falls on a rest day."""
        day = date(int(period[:4]), int(period[5:7]), self.payday)
        while not self.is_working_day(day):
            day -= timedelta(days=1)
        return day

    def execution_date(self, period: str) -> date:
        """The bank's execution date: `execution_offset_days` working days before payday."""
        day, left = self.payday_of(period), self.execution_offset_days
        while left:
            day -= timedelta(days=1)
            if self.is_working_day(day):
                left -= 1
        return day

    def created_at(self, period: str, today: date) -> datetime:
        """The files' creation time, fixed at draft so a re-export gives the same bytes.
        Midnight (Beijing) of the payout month's first day, or of today when a month is
        drafted ahead: the same on every re-run, and never in the future."""
        first = date(int(period[:4]), int(period[5:7]), 1)
        return datetime.combine(min(first, today), time(0, 0), BEIJING)

    def file_settings(self) -> dict[str, object]:
        """What of these settings shapes the files' bytes (kept with the draft)."""
        return {"fund_account_number": self.fund_account_number,
                "fund_bank_code": self.fund_bank_code, "fund_bic": self.fund_bic,
                "fund_iban": self.fund_iban, "max_txs_per_file": self.max_txs_per_file}


def load_config(environ: Mapping[str, str] | None = None) -> PayoutConfig:
    """The sample county's defaults, overridden by PAYOUT_* variables. A bad value is refused
    naming the variable, before anything is computed."""
    env = os.environ if environ is None else environ
    given = {field: env[name] for name, field in ENV_FIELDS.items() if env.get(name)}
    try:
        config = PayoutConfig.model_validate(given)
        config.debtor()
    except ValidationError as e:
        err = e.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "config"
        name = next((n for n, f in ENV_FIELDS.items() if f == field), field)
        raise InvalidInput(name, err["msg"]) from None
    except ValueError as e:  # the bank file writers' own checks of the account
        raise InvalidInput("PAYOUT_FUND_ACCOUNT", str(e)) from None
    config.check_accounts()
    return config
