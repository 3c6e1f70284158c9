"""The real mock bank (PyPI `mock-bank`, package `mockbank`) as a counterparty for tests.

`running_mock_bank(workdir)` starts `python -m mockbank` on a free loopback port with its own
SQLite file and a fixed bank clock, and stops it on exit; the `mock_bank` fixture wraps it.
`MockBank` is a small HTTP client for its control plane:

- accounts: `add_account` (CNY, an IBAN-shaped id made from the domestic number, which a
  pain.001 names by CdtrAcct/Id/Othr/Id with CdtrAgt/.../MmbId = `ROUTING`), `patch_account`;
- failure behaviours: `close_account` (creditor closed: pain.002 RJCT AC04),
  `bad_bank_id` (creditor: RC01), `return_later` (set on the *debtor*: the named payment
  settles, then comes back in a pacs.004 `days` business days later, e.g. MD07 deceased);
- `submit(pain001_bytes)`: POST /payments, the JSON summary of what the bank decided;
- `advance(to=date)`: moves bank time, books what came due and ends business days;
- `collect()`: takes every released message from the mailbox, oldest first.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

ROUTING = "999999992"  # the mock's own bank code: a creditor named with it is looked up by number
BANK_CLOCK = "2026-11-16T09:00"  # a Monday morning, before the 15:00 cutoff
SEED_ACCOUNTS = ("ACME", "GLOBEX", "INITECH", "EURODIS")
START_TIMEOUT_S = 15.0
HTTP_TIMEOUT_S = 10.0
_BANNER = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/")


def iban_for(account_number: str, country: str = "CN", bank: str = "MOCK") -> str:
    """An IBAN-shaped id with valid ISO 13616 check digits, for the mock to key an account on.

    China has no IBAN; the mock needs one per account, so it is derived from the number."""
    bban = f"{bank}{account_number}"
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


@dataclass(frozen=True)
class Message:
    id: int
    type: str  # e.g. "pain.002.001.10", "camt.054.001.08", "camt.053.001.08", "pacs.004.001.09"
    account: str
    body: bytes


class MockBankError(RuntimeError):
    pass


class MockBank:
    def __init__(self, base_url: str) -> None:
        assert base_url.startswith("http://127.0.0.1:")
        self.base_url = base_url
        # Loopback only: never through an HTTP proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json") -> tuple[int, Any]:
        req = urllib.request.Request(self.base_url + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", content_type)
        try:
            with self._opener.open(req, timeout=HTTP_TIMEOUT_S) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw

    def _ok(self, method: str, path: str, payload: Any = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        status, answer = self.request(method, path, body)
        if status >= 400:
            raise MockBankError(f"{method} {path} -> {status}: {answer}")
        return answer

    # -- accounts ------------------------------------------------------------------------------
    def add_account(self, account_id: str, account_number: str, *, name: str = "",
                    balance_fen: int = 0, behaviour: str = "accept",
                    closed: bool = False, currency: str = "CNY") -> dict[str, Any]:
        fields = {"id": account_id, "iban": iban_for(account_number),
                  "account_number": account_number, "name": name or account_id,
                  "currency": currency, "balance": balance_fen, "behaviour": behaviour,
                  "closed": closed}
        created: dict[str, Any] = self._ok("POST", "/_mock/accounts", fields)
        return created

    def patch_account(self, account_id: str, **fields: Any) -> dict[str, Any]:
        patched: dict[str, Any] = self._ok("PATCH", f"/_mock/accounts/{account_id}", fields)
        return patched

    def account(self, account_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self._ok("GET", f"/_mock/accounts/{account_id}")
        return found

    def close_account(self, account_id: str) -> None:
        self.patch_account(account_id, closed=True)

    def bad_bank_id(self, account_id: str) -> None:
        self.patch_account(account_id, behaviour="bad-bank-id")

    def return_later(self, debtor_id: str, end_to_end_id: str, reason: str = "AC04",
                     days: int = 2) -> None:
        """The payment `end_to_end_id` from `debtor_id` settles, then comes back. Read by the
        bank when the payment books, so set it before the file that carries it settles."""
        self.patch_account(debtor_id, behaviour="return-later", parameters={
            "end_to_end_id": end_to_end_id, "reason": reason, "days": days})

    # -- files, clock, mailbox -----------------------------------------------------------------
    def submit(self, pain001: bytes) -> dict[str, Any]:
        status, answer = self.request("POST", "/payments", pain001, "application/xml")
        if status not in (202, 422):
            raise MockBankError(f"POST /payments -> {status}: {answer}")
        assert isinstance(answer, dict)
        return answer

    def advance(self, *, to: date | None = None, days: int | None = None) -> dict[str, Any]:
        query = f"to={to.isoformat()}" if to is not None else f"days={days}"
        moved: dict[str, Any] = self._ok("POST", f"/_mock/advance?{query}")
        return moved

    def collect(self, type_prefix: str = "") -> list[Message]:
        path = "/_mock/mailbox" + (f"?type={type_prefix}" if type_prefix else "")
        rows = self._ok("GET", path)
        return [Message(r["id"], r["type"], r["account"], r["body"].encode("utf-8"))
                for r in rows]

    def statements(self, account_id: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._ok("GET", f"/_mock/accounts/{account_id}/statements")
        return rows

    def payments(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._ok("GET", "/_mock/payments")
        return rows


@contextmanager
def running_mock_bank(workdir: Path, clock: str = BANK_CLOCK) -> Iterator[MockBank]:
    """A mock bank process of our own on 127.0.0.1 and a port the OS picks, stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "mock-bank.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mockbank", "--host", "127.0.0.1", "--port", "0",
             "--db", str(workdir / "mock-bank.db"), "--clock", clock],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        # Port 0 avoids a race for a free port; the banner says which one it got.
        deadline = time.monotonic() + START_TIMEOUT_S
        port = None
        while port is None:
            found = _BANNER.search(log_path.read_text(errors="replace"))
            if found:
                port = int(found.group(1))
            elif proc.poll() is not None or time.monotonic() > deadline:
                raise MockBankError("mock bank did not start: " + log_path.read_text())
            else:
                time.sleep(0.02)
        bank = MockBank(f"http://127.0.0.1:{port}")
        # The seeded EUR accounts would get a statement every business day; closed, they are
        # silent and the mailbox holds only what this test's accounts are sent.
        for seeded in SEED_ACCOUNTS:
            bank.patch_account(seeded, closed=True)
        yield bank
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def mock_bank(tmp_path: Path) -> Iterator[MockBank]:
    """A fresh mock bank for one test, its bank time at `BANK_CLOCK`."""
    with running_mock_bank(tmp_path / "mock-bank") as bank:
        yield bank
