"""The bank files against a real counterparty: the `mock-bank` package, started on a free
loopback port with accounts made for each test. Every message it sends back is parsed, and
the money adds up to the fen."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from mockbank import schema as mock_schema

from payout_engine.bankfiles import (
    AccountStatement,
    BatchHeader,
    DebitCreditNotification,
    Debtor,
    PaymentInstruction,
    PaymentReturn,
    StatusReport,
    build_manifest,
    check_status_report,
    export_files,
    parse_bank_message,
    payment_statuses,
    validate_pain001,
    verify_manifest,
    write_pain001,
)
from payout_engine.bankfiles.returns import amounts_by_end_to_end_id, check_statement_sequence
from tests.mockbank_fixture import ROUTING, MockBank, iban_for, mock_bank

__all__ = ["mock_bank"]  # the fixture, imported so that pytest finds it here

BEIJING = timezone(timedelta(hours=8))
TODAY = date(2026, 11, 16)  # the bank clock's first day (tests/mockbank_fixture.BANK_CLOCK)
FUND_ID, FUND_NUMBER = "FUND", "1000000001"
FUND_OPENING_FEN = 100_000_000  # 1,000,000.00 yuan
FUND = Debtor("某县城乡居民基本养老保险基金支出户", FUND_NUMBER, bank_code=ROUTING)


def header(message_id: str, execution: date = TODAY) -> BatchHeader:
    return BatchHeader(message_id, "B" + message_id, datetime(2026, 11, 16, 9, 0,
                                                             tzinfo=BEIJING), execution,
                       payout_month="2026-11")


def pension(n: int, amount_fen: int, number: str | None = None) -> PaymentInstruction:
    return PaymentInstruction(
        end_to_end_id=f"PAY-202611-{n:04d}", payout_month="2026-11", payee_name=f"领取人{n}",
        account_number=number or f"6222{n:012d}", bank_code=ROUTING, amount_fen=amount_fen,
        id_number=f"1101011950010{n:04d}X")


def add_pensioner(bank: MockBank, p: PaymentInstruction) -> None:
    bank.add_account(f"P{p.end_to_end_id[-4:]}", p.account_number, name=p.account_name)


def test_iban_for_has_valid_check_digits_and_the_domestic_number() -> None:
    iban = iban_for("6222000000000042")
    assert mock_schema.iban_is_valid(iban)
    assert iban.startswith("CN") and iban.endswith("6222000000000042")


def test_a_monthly_payout_adds_up_to_the_fen_across_every_message_the_bank_sends(
        mock_bank: MockBank, tmp_path: Path) -> None:
    bank = mock_bank
    bank.add_account(FUND_ID, FUND_NUMBER, name=FUND.name, balance_fen=FUND_OPENING_FEN)
    amounts = [1, 99_999_999, 15_873, 20_000, 33_333, 18_801, 12_345, 27_000, 9_999, 16_000]
    payments = [pension(n, a) for n, a in enumerate(amounts, start=1)]
    for p in payments[:-1]:
        add_pensioner(bank, p)
    # payments[-1] pays an account at another bank: the mock settles it without holding it.
    closed, bad_bank = payments[2], payments[6]
    bank.close_account(f"P{closed.end_to_end_id[-4:]}")  # AC04 in the pain.002
    bank.bad_bank_id(f"P{bad_bank.end_to_end_id[-4:]}")  # RC01
    deceased, closed_later = payments[1], payments[7]  # settle, then come back: MD07, AC04

    files = write_pain001(header("PO-202611-01"), FUND, payments, max_txs_per_file=5)
    assert [f.nb_of_txs for f in files] == [5, 5]
    assert deceased.end_to_end_id in dict(files[0].payments)
    assert closed_later.end_to_end_id in dict(files[1].payments)
    for f in files:
        validate_pain001(f.content)

    # The approver approves the manifest hash; the export writes and verifies exactly that.
    approved = build_manifest(files).hash
    out = tmp_path / "export"
    export_files(out, files, approved)
    verify_manifest(out, approved)

    # The bank reads a return-later behaviour when the payment books, which is on receipt
    # for today's execution date: one returned payment per file.
    bank.return_later(FUND_ID, deceased.end_to_end_id, "MD07", days=2)
    assert bank.submit((out / files[0].name).read_bytes())["status"] == "PART"
    bank.return_later(FUND_ID, closed_later.end_to_end_id, "AC04", days=3)
    assert bank.submit((out / files[1].name).read_bytes())["status"] == "PART"
    bank.advance(to=date(2026, 11, 23))

    messages = bank.collect()
    parsed = [parse_bank_message(m.body) for m in messages]
    assert {m.type for m in messages} == {"pain.002.001.10", "camt.054.001.08",
                                          "camt.053.001.08", "pacs.004.001.09"}

    sent = amounts_by_end_to_end_id(files)
    sent_total = sum(f.ctrl_sum_fen for f in files)
    assert sent_total == sum(amounts)

    reports = [r for r in parsed if isinstance(r, StatusReport)]
    by_msg_id = {f.message_id: f for f in files}
    for r in reports:
        check_status_report(r, by_msg_id[r.original_message_id])
    rejected = {t.end_to_end_id: t.reason_code for r in reports for t in r.transactions
                if t.rejected}
    assert rejected == {closed.end_to_end_id: "AC04", bad_bank.end_to_end_id: "RC01"}
    failed_fen = sum(sent[e] for e in rejected)

    fund_iban = iban_for(FUND_NUMBER)
    notifications = [n for r in parsed if isinstance(r, DebitCreditNotification)
                     for n in r.notifications]
    assert {n.account for n in notifications} == {fund_iban}
    debits = {e2e: e.amount_fen for n in notifications for e in n.entries
              if e.credit_debit == "DBIT" and e.status == "BOOK" for e2e in e.end_to_end_ids}
    credits = {e2e: (e.amount_fen, e.transactions[0].return_reason) for n in notifications
               for e in n.entries if e.credit_debit == "CRDT" for e2e in e.end_to_end_ids}
    assert all(debits[e2e] == sent[e2e] for e2e in debits)
    assert set(debits) | set(rejected) == set(sent) and not set(debits) & set(rejected)
    settled_fen = sum(debits.values())

    returns = [r for r in parsed if isinstance(r, PaymentReturn)]
    returned = {t.original_end_to_end_id: (t.returned_amount_fen, t.reason_code)
                for r in returns for t in r.transactions}
    assert returned == {deceased.end_to_end_id: (deceased.amount_fen, "MD07"),
                        closed_later.end_to_end_id: (closed_later.amount_fen, "AC04")}
    assert credits == returned  # the camt.054 credit for each return says the same
    returned_fen = sum(amount for amount, _ in returned.values())

    # Every fen sent is failed, settled for good, or returned after settling.
    assert failed_fen + (settled_fen - returned_fen) + returned_fen == sent_total
    assert settled_fen + failed_fen == sent_total

    statements = [s for r in parsed if isinstance(r, AccountStatement) for s in r.statements
                  if s.account == fund_iban]
    check_statement_sequence(statements)
    assert statements[0].opening_fen == FUND_OPENING_FEN
    expected_closing = FUND_OPENING_FEN - (sent_total - failed_fen) + returned_fen
    assert statements[-1].closing_fen == expected_closing
    assert bank.account(FUND_ID)["balance"] == expected_closing
    on_statements = {(e2e, e.credit_debit) for s in statements for e in s.entries
                     for e2e in e.end_to_end_ids}
    assert on_statements == ({(e2e, "DBIT") for e2e in debits}
                             | {(e2e, "CRDT") for e2e in returned})


def test_a_file_sent_twice_is_rejected_whole_as_a_duplicate(mock_bank: MockBank) -> None:
    mock_bank.add_account(FUND_ID, FUND_NUMBER, name=FUND.name, balance_fen=FUND_OPENING_FEN)
    f, = write_pain001(header("PO-202611-02"), FUND, [pension(1, 12_000)])
    assert mock_bank.submit(f.content)["status"] == "ACCP"
    assert mock_bank.submit(f.content)["status"] == "RJCT"
    reports = [parse_bank_message(m.body) for m in mock_bank.collect("pain.002")]
    assert isinstance(reports[1], StatusReport)
    assert reports[1].file_rejected and reports[1].transactions == ()
    assert [r.code for r in reports[1].group_reasons] == ["DUPL"] and reports[1].duplicate
    # The copy was refused; the payment is the first copy's, which the bank accepted.
    assert payment_statuses(reports[1], f) == {}
    assert isinstance(reports[0], StatusReport)
    assert payment_statuses(reports[0], f) == {"PAY-202611-0001": ("ACCP", None)}


def test_a_payment_rejected_on_its_settlement_day_comes_in_a_further_status_report(
        mock_bank: MockBank) -> None:
    mock_bank.add_account(FUND_ID, FUND_NUMBER, name=FUND.name, balance_fen=FUND_OPENING_FEN)
    payments = [pension(1, 12_000), pension(2, 13_000)]
    f, = write_pain001(header("PO-202611-03", execution=date(2026, 11, 18)), FUND, payments)
    assert mock_bank.submit(f.content)["status"] == "ACCP"
    mock_bank.close_account(FUND_ID)  # the debtor account closes before the payments settle
    mock_bank.advance(to=date(2026, 11, 19))
    reports = [parse_bank_message(m.body) for m in mock_bank.collect("pain.002")]
    assert len(reports) == 2
    later = reports[1]
    assert isinstance(later, StatusReport)
    assert later.group_status is None and later.original_message_id == f.message_id
    assert {(t.end_to_end_id, t.status, t.reason_code) for t in later.transactions} == {
        (p.end_to_end_id, "RJCT", "AC04") for p in payments}
    check_status_report(later, f)
    assert mock_bank.collect("camt.054") == []
