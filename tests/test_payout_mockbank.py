"""The payout engine against a real counterparty: the `mock-bank` package, started on a free
loopback port. Pensioners hold accounts at it (some closed, one with a bad bank id, two whose
payments come back after settling); the engine drafts, approves, funds and exports the
month's pain.001, the bank takes it, and every message the bank sends back is imported.
The ledger's expenditure and in-flight balances then match the bank's statement of the
fund's account to the fen."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

from ledger import disbursement
from ledger.aggregates.participant import participant_id
from ledger.application import Ledger
from ledger.postings import EXPENDITURE, FISCAL, IN_FLIGHT
from payout_engine import export, returns_import, run
from payout_engine.bankfiles import AccountStatement, parse_bank_message
from payout_engine.config import PayoutConfig
from payout_engine.reconcile import fund_statements, reconcile
from tests.mockbank_fixture import ROUTING, MockBank, iban_for, mock_bank
from tests.test_payout_support import (
    APPROVER,
    BANK,
    FINANCE,
    OPERATOR,
    contributor,
    pension_events,
    transitional,
    treasury,
)

__all__ = ["mock_bank"]  # the fixture, imported so that pytest finds it here

TODAY = date(2026, 11, 16)  # the bank clock's first day (tests/mockbank_fixture.BANK_CLOCK)
FUND_ID, FUND_NUMBER = "FUND", "1000000001"
CONFIG = PayoutConfig(fund_account_number=FUND_NUMBER, fund_bank_code=ROUTING,
                      fund_iban=iban_for(FUND_NUMBER), max_txs_per_file=5)


def test_the_ledger_and_the_bank_agree_to_the_fen_after_a_month_of_payouts(
        ledger: Ledger, mock_bank: MockBank, tmp_path: Path) -> None:
    bank = mock_bank
    treasury(ledger)
    people = {n: (transitional(ledger, n, start="2026-10", bank_code=ROUTING) if n % 3
                  else contributor(ledger, n, start="2026-10", bank_code=ROUTING))
              for n in range(1, 11)}
    for n, idn in people.items():
        p = ledger.participant(idn)
        assert p.bank is not None
        bank.add_account(f"P{n}", p.bank.account_number, name=p.bank.account_name)
    closed, bad_bank = people[3], people[7]
    bank.close_account("P3")       # pain.002 RJCT AC04
    bank.bad_bank_id("P7")         # pain.002 RJCT RC01

    batch = run.run_month(ledger, "2026-11", actor=OPERATOR, config=CONFIG, today=TODAY,
                          execution_date=TODAY)
    assert batch.line_count == 10 and len(batch.comparison["files"]) == 2
    run.approve(ledger, batch.id, batch.manifest_sha256, APPROVER)
    run.fund(ledger, batch.id, value_date=TODAY, actor=FINANCE)
    out = tmp_path / "export"
    result = export.export_batch(ledger, batch.id, out, file_format="pain001",
                                 actor=OPERATOR, config=CONFIG)
    # The expenditure account at the bank holds what the ledger appropriated for the batch.
    bank.add_account(FUND_ID, FUND_NUMBER, name=CONFIG.fund_account_name,
                     balance_fen=batch.total_fen)
    assert ledger.fund_positions()[EXPENDITURE] + ledger.fund_positions()[IN_FLIGHT] == \
        bank.account(FUND_ID)["balance"]

    e2e = {line.id_number: e for e, line in batch.lines.items()}
    files = [out / name for name in result.files]
    # Two payments settle and come back later: one from each file.
    first, second = ({batch.lines[e].id_number for e in batch.lines
                      if r["first_end_to_end_id"] <= e <= r["last_end_to_end_id"]}
                     - {closed, bad_bank} for r in batch.comparison["files"])
    deceased, closed_later = min(first), min(second)
    # The bank reads a return-later behaviour when a payment books (on receipt, for today's
    # execution date): one per file.
    bank.return_later(FUND_ID, e2e[deceased], "MD07", days=2)
    assert bank.submit(files[0].read_bytes())["status"] in ("PART", "ACCP")
    bank.return_later(FUND_ID, e2e[closed_later], "AC04", days=3)
    assert bank.submit(files[1].read_bytes())["status"] in ("PART", "ACCP")
    bank.advance(to=date(2026, 11, 23))

    messages = bank.collect()
    assert {m.type[:8] for m in messages} >= {"pain.002", "camt.054", "camt.053", "pacs.004"}
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    summaries = []
    for m in messages:
        path = inbox / f"{m.id:04d}-{m.type}.xml"
        path.write_bytes(m.body)
        summaries.append(returns_import.import_returns(ledger, path, actor=BANK,
                                                       config=CONFIG))

    final = disbursement.get_batch(ledger, batch.id)
    outcomes = {line.id_number: final.outcomes.get(e) for e, line in final.lines.items()}
    assert outcomes == {idn: ("failed" if idn in (closed, bad_bank) else
                              "returned" if idn in (deceased, closed_later) else "settled")
                        for idn in people.values()}
    assert final.state == "closed"
    held = {h["participant_id"] for s in summaries for h in s["held"]}
    assert held == {str(participant_id(i)) for i in (closed, bad_bank, closed_later)}
    assert [d["participant_id"] for s in summaries for d in s["death_checks"]] == [
        str(participant_id(deceased))]
    assert ledger.participant(deceased).status == "suspended"
    assert {ledger.participant(i).payment_hold for i in (closed, bad_bank, closed_later)} == {
        "AC04", "RC01"}

    # The ledger and the bank agree to the fen.
    positions = ledger.fund_positions()
    statements = [s for m in messages if m.type.startswith("camt.053")
                  for msg in [parse_bank_message(m.body)] if isinstance(msg, AccountStatement)
                  for s in msg.statements if s.account == CONFIG.fund_iban]
    balance = bank.account(FUND_ID)["balance"]
    assert statements and statements[-1].closing_fen == balance
    assert positions[IN_FLIGHT] == 0
    assert positions[EXPENDITURE] == balance
    failed_or_returned = sum(final.lines[e2e[i]].amount_fen
                             for i in (closed, bad_bank, deceased, closed_later))
    assert balance == failed_or_returned
    assert positions[FISCAL] == 10**10 - batch.total_fen
    # Every end-of-day statement agrees with the ledger as of its closing date.
    statement_files = sorted(p for p in inbox.iterdir() if "camt.053" in p.name)
    report = reconcile(ledger, fund_statements(statement_files, CONFIG))
    assert report["agree"] is True and len(report["statements"]) == len(statements)
    assert report["statements"][-1]["bank_closing_fen"] == balance
    # A fen the ledger was not told of shows as a difference.
    last = fund_statements(statement_files, CONFIG)[-1]
    off = reconcile(ledger, [dataclasses.replace(last, closing_fen=last.closing_fen + 1)])
    assert off["agree"] is False and off["statements"][0]["difference_fen"] == 1

    # Nobody was paid twice; the returned and failed months are owed again.
    for idn in people.values():
        paid = [e for e in pension_events(ledger, idn)]
        months = [m for e in paid if type(e).__name__ == "PensionPaid" for m in e.months]
        assert len(months) == len(set(months)) and months == ["2026-10", "2026-11"]
        expected = 0 if idn in (closed, bad_bank, deceased, closed_later) else 2
        assert ledger.queries.paid_month_count(participant_id(idn)) == expected

    # Every message again: nothing changes.
    events = ledger.recorder.max_notification_id()
    for path in sorted(inbox.iterdir()):
        returns_import.import_returns(ledger, path, actor=BANK, config=CONFIG)
    assert ledger.recorder.max_notification_id() == events
    assert ledger.fund_positions() == positions
