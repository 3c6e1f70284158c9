"""The bank files of a batch: made once at draft (their manifest hash is what the approver
approves) and kept (payout_engine.drafted_files); at export taken from there, or made
again, byte for byte, from the batch's lines and the creation time the draft stored.
Written only after funding, only if they hash to the approved manifest: atomically, mode
0600, beside a SHA-256 manifest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from ledger import disbursement
from ledger.aggregates.payout_batch import MONTHLY_PENSION, BatchLine, PayoutBatch
from ledger.application import Ledger
from ledger.collector import collector_paused
from ledger.errors import InvalidInput, Refused
from payout_engine import drafted_files
from payout_engine.bankfiles import (
    BankFile,
    BatchHeader,
    PaymentInstruction,
    build_manifest,
    export_files,
    validate_pain001,
    write_domestic,
    write_pain001,
)
from payout_engine.bankfiles.manifest import Manifest, NamedContent
from payout_engine.bankfiles.pain001 import Fragment
from payout_engine.config import PayoutConfig, load_config

FILE_FORMATS = ("pain001", "domestic")
# Checking every file against the XSD costs more than writing it; past this many payments
# the first and the last file are checked (the writer's output differs between files only
# in values the instructions already checked).
VALIDATE_ALL_UP_TO = 100_000


def message_id(period: str, sequence: int) -> str:
    """PO-202611-01: the files are PO-202611-01-0001.xml, ... (unique per batch)."""
    return f"PO-{period.replace('-', '')}-{sequence:02d}"


# What the payee's statement says a one-off payment is (a pension says its month).
ONE_OFF_REMITTANCE = {"funeral_grant": "丧葬补助金", "inheritance": "个人账户继承",
                      "refund": "个人账户退还", "pension_owed_at_death": "应发未发养老金"}


def remittance(period: str, months: list[str], kind: str = MONTHLY_PENSION,
               rerated: bool = False) -> str:
    """rerated: the payment tops up months paid before (调待补发: a raise back-dated)."""
    if kind != MONTHLY_PENSION:
        return f"{ONE_OFF_REMITTANCE[kind]} {period}"
    topped_up = " 含调待补发" if rerated else ""
    if not months:
        return f"养老金调待补发 {period}"
    if len(months) == 1:
        return f"养老金 {period}{topped_up}"
    return f"养老金 {period} 含补发{len(months) - 1}个月{topped_up}"


def instruction(period: str, line: BatchLine) -> PaymentInstruction:
    """The payment as the bank files carry it (raises InvalidInstruction naming the field).
    The creditor is the account holder (户名), else the pensioner (姓名)."""
    name = line.account_name or line.payee_name
    return PaymentInstruction(
        end_to_end_id=line.end_to_end_id, payout_month=period, payee_name=line.payee_name,
        account_number=line.account_number, bank_code=line.bank_code,
        amount_fen=line.amount_fen, id_number=line.id_number, account_name=name,
        remittance_info=remittance(period, line.months, line.kind, bool(line.rerated_fen)))


def instruction_of(period: str, line: dict[str, Any]) -> PaymentInstruction:
    """instruction() of a line as stored (its JSON object, see disbursement.line_states):
    the export reads a million lines back without a model per line, and without checking
    again what instruction() checked at draft (the files made from them must hash to the
    approved manifest, which was made of checked instructions)."""
    return PaymentInstruction.checked_before(
        end_to_end_id=line["end_to_end_id"], payout_month=period,
        payee_name=line["payee_name"], account_number=line["account_number"],
        bank_code=line["bank_code"], amount_fen=line["amount_fen"],
        id_number=line["id_number"],
        account_name=line.get("account_name", "") or line["payee_name"],
        remittance_info=remittance(period, line["months"],
                                   line.get("kind", MONTHLY_PENSION),
                                   bool(line.get("rerated_fen"))))


def bank_files(*, period: str, sequence: int, file_format: str, created_at: datetime,
               execution_date: date, payments: Iterable[PaymentInstruction],
               config: PayoutConfig, xsd_check: bool = True,
               made: Sequence[Fragment] = ()) -> list[BankFile]:
    """The files for a batch. The same input gives the same bytes. xsd_check=False only
    where the files are then refused unless they hash to files that were checked. `made`:
    pain.001 fragments of more payments, made already (payout_engine.run_in_two)."""
    if file_format not in FILE_FORMATS:
        raise InvalidInput("format", f"must be one of {', '.join(FILE_FORMATS)}")
    mid = message_id(period, sequence)
    header = BatchHeader(mid, mid.replace("PO-", "PB-", 1), created_at, execution_date,
                         payout_month=period)
    if file_format == "domestic":
        # A domestic record numbers its payment within its file: none is made ahead.
        assert not made, "fragments for a domestic file"
        return write_domestic(header, config.debtor(), payments,
                              max_lines_per_file=config.max_txs_per_file)
    files = write_pain001(header, config.debtor(), payments,
                          max_txs_per_file=config.max_txs_per_file, made=made)
    if not xsd_check:
        return files
    total = sum(f.nb_of_txs for f in files)
    checked = files if total <= VALIDATE_ALL_UP_TO else [files[0], files[-1]]
    for f in dict.fromkeys(checked):
        validate_pain001(f.content)
    return files


def file_records(files: list[BankFile], manifest: Manifest) -> list[dict[str, Any]]:
    """What the draft keeps of each file (`manifest`: the files'): enough to check a bank's
    answer to it (which payments it carried, its count and sum) without making the files
    again."""
    entries = {e.name: e for e in manifest.entries}
    assert set(entries) == {f.name for f in files}
    return [{"name": f.name, "message_id": f.message_id, "nb_of_txs": f.nb_of_txs,
             "ctrl_sum_fen": f.ctrl_sum_fen, "first_end_to_end_id": f.payments[0][0],
             "last_end_to_end_id": f.payments[-1][0], "size": entries[f.name].size,
             "sha256": entries[f.name].sha256} for f in files]


def files_of(ledger: Ledger, batch: PayoutBatch, config: PayoutConfig) -> list[BankFile]:
    """The batch's files made again from its stored lines and the creation time stored at
    draft (`batch` may be read without its lines). Not checked again: the caller writes
    them only if they hash to the approved manifest, i.e. are the files the draft made
    and checked (instructions and XSD) byte for byte."""
    return bank_files(period=batch.period, sequence=batch.sequence,
                      file_format=batch.file_format, created_at=batch.created_at,
                      execution_date=batch.execution_date,
                      payments=[instruction_of(batch.period, line)
                                for line in disbursement.line_states(ledger, batch.id)],
                      config=config, xsd_check=False)


@dataclass(frozen=True)
class ExportResult:
    batch_id: UUID
    period: str
    sequence: int
    file_format: str
    out_dir: str
    manifest_sha256: str
    files: list[str]
    payments: int
    total_fen: int
    recorded: bool  # False when the export was recorded before (a re-export)

    def as_dict(self) -> dict[str, Any]:
        return {"batch_id": str(self.batch_id), "period": self.period,
                "sequence": self.sequence, "format": self.file_format,
                "out_dir": self.out_dir, "manifest_sha256": self.manifest_sha256,
                "files": self.files, "payments": self.payments, "total_fen": self.total_fen,
                "recorded": self.recorded}


def export_batch(ledger: Ledger, batch_id: UUID, out_dir: str | Path, *, file_format: str,
                 actor: str, config: PayoutConfig | None = None) -> ExportResult:
    """Write the approved files of a funded batch into `out_dir` and record the export.

    Refused before funding, for another format than the one approved, and when the files
    made now do not hash to the approved manifest (nothing is written then). Running it
    again after a crash writes the same files and records nothing twice."""
    with collector_paused():
        return _export(ledger, batch_id, Path(out_dir), file_format, actor,
                       config or load_config())


def _export(ledger: Ledger, batch_id: UUID, out_dir: Path, file_format: str, actor: str,
            config: PayoutConfig) -> ExportResult:
    batch = disbursement.get_batch(ledger, batch_id, lines=False)
    where = f"batch {batch.period}/{batch.sequence}"
    if batch.state not in ("funded", "exported", "closed"):
        raise Refused("batch", f"{where} is {batch.state}; files are exported only after the "
                      "batch is approved and funded")
    if file_format != batch.file_format:
        raise Refused("format", f"{where} was drafted and approved as {batch.file_format} "
                      f"files, not {file_format}")
    drafted = batch.comparison.get("file_settings")
    if drafted is not None and drafted != config.file_settings():
        # The kept bytes would still be the approved ones; refused all the same, so that an
        # export does what it would do without them.
        raise Refused("manifest_hash", f"the file settings now are not those {where} was "
                      f"drafted with, so its files made now are not the approved "
                      f"{batch.manifest_sha256}: nothing written. The settings at draft "
                      f"were {drafted}; now {config.file_settings()}")
    kept = drafted_files.take(config.drafted_files(), batch.manifest_sha256)
    files: Sequence[NamedContent]
    if kept is not None:
        files, manifest = kept
    else:
        files = files_of(ledger, batch, config)
        manifest = build_manifest(files)
    made = manifest.hash
    if made != batch.manifest_sha256:
        raise Refused("manifest_hash", f"the files of {where} made now hash to {made}, not "
                      f"the approved {batch.manifest_sha256}: nothing written. The settings "
                      f"at draft were {drafted}; now {config.file_settings()}")
    export_files(out_dir, files, batch.manifest_sha256, manifest=manifest)
    recorded = batch.state == "funded"
    if recorded:
        disbursement.mark_exported(ledger, batch.id, file_format=batch.file_format,
                                   manifest_sha256=made, files=[f.name for f in files],
                                   actor=actor)
    drafted_files.discard(config.drafted_files(), made)
    return ExportResult(batch.id, batch.period, batch.sequence, batch.file_format,
                        str(out_dir), made, [f.name for f in files], batch.line_count,
                        batch.total_fen, recorded)
