"""The demo's monthly payout runs (ledger/demo.py tells the rest of the story).

Each month goes the way docs/operations.md tells an office to run it: the operator drafts
the batch and reads its comparison with last month, a second person approves its exact
manifest hash, finance funds it, the operator writes the agent bank's files (the domestic
报盘, 0600, with their SHA-256 manifest), and the bank's answer (回盘) is booked: payments
settled, failed ones back in the expenditure account and their pensioners held until the
account is corrected, a dead holder's account (MD07) suspending the pension for a death
check. The bank's answers are written by `write_domestic_return`, the rehearsal bank.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ledger import disbursement
from ledger.application import Ledger
from ledger.demo import APPROVER, FINANCE, OPERATOR, PaidMonth
from ledger.errors import Refused
from payout_engine import export, returns_import, run
from payout_engine.bankfiles.domestic import write_domestic_return
from payout_engine.config import PayoutConfig, load_config

BANK = "agent-bank"
FORMAT = "domestic"
REASON_TEXT = {"AC04": "账户已销户", "MD07": "账户持有人已身故", "AC01": "账号错误"}


@dataclass
class DemoPayouts:
    """Pays the demo's months through the payout engine (ledger.demo.MonthlyRun)."""

    ledger: Ledger
    folder: Path
    config: PayoutConfig | None = None
    months_paid: int = 0

    def __post_init__(self) -> None:
        if self.config is None:
            # The drafted files wait beside the demo's database, not in the user's state.
            self.config = load_config().model_copy(
                update={"drafted_files_dir": str(self.folder / "drafted")})

    def pay_month(self, period: str, *, today: date,
                  bank_fails: dict[str, str]) -> PaidMonth:
        """Draft, approve, fund and export `period`'s batch, then book the bank's answer:
        `bank_fails` maps a resident ID to the reason code the bank fails its payment with."""
        assert self.config is not None
        if self.months_paid == 0:
            # The files of an earlier demo, on a database made afresh since: not this
            # ledger's (the demo refuses a database with data before any month is paid).
            for stale in ("bank", "drafted"):
                shutil.rmtree(self.folder / stale, ignore_errors=True)
        self.months_paid += 1
        ledger = self.ledger
        batch = run.run_month(ledger, period, actor=OPERATOR, file_format=FORMAT, today=today,
                              config=self.config)
        refusal = ""
        try:
            run.approve(ledger, batch.id, batch.manifest_sha256, OPERATOR)
        except Refused as e:
            refusal = str(e)  # the drafter cannot approve: maker-checker
        assert refusal, "the drafter approved their own batch"
        run.approve(ledger, batch.id, batch.manifest_sha256, APPROVER)
        y, m = int(period[:4]), int(period[5:])
        run.fund(ledger, batch.id, value_date=date(y, m, 10), actor=FINANCE)
        out = self.folder / "bank" / period
        result = export.export_batch(ledger, batch.id, out, file_format=FORMAT,
                                     actor=OPERATOR, config=self.config)
        by_id = {line.id_number: e2e for e2e, line in batch.lines.items()}
        fails = {by_id[idn]: (code, REASON_TEXT.get(code, code))
                 for idn, code in bank_fails.items() if idn in by_id}
        held, death_checks = 0, 0
        for name in result.files:
            answer = out / f"{name}.ret"
            answer.write_bytes(write_domestic_return((out / name).read_bytes(), fails))
            answer.chmod(0o600)  # the bank's answer names the payees too
            summary = returns_import.import_returns(ledger, answer, actor=BANK,
                                                    config=self.config)
            held += len(summary.get("held", []))
            death_checks += len(summary.get("death_checks", []))
        failed_fen = sum(batch.lines[e2e].amount_fen for e2e in fails)
        return PaidMonth(
            period=period, payments=batch.line_count, total_fen=batch.total_fen,
            failed=len(fails), failed_fen=failed_fen, files=[str(out / f) for f in result.files],
            manifest_sha256=batch.manifest_sha256, reasons=[
                f"{r['reason'].replace('_', ' ')} {r['headcount']:+d}"
                for r in batch.comparison["reasons"]],
            maker_checker_refusal=refusal,
            state=disbursement.get_batch(ledger, batch.id, lines=False).state,
            held=held, death_checks=death_checks)
