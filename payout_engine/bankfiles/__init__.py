"""Bank files: what the payout engine hands the agent bank, and reads back from it.

Pure modules (no database, no ledger): `model` (inputs, outputs, errors), `pain001` and
`domestic` (writers), `returns` (readers of pain.002, camt.054, camt.053, pacs.004 and the
domestic 回盘), `manifest` (atomic 0600 files with an approved SHA-256 manifest).
"""

from payout_engine.bankfiles.domestic import (
    DomesticReturn,
    check_domestic_return,
    read_domestic,
    read_domestic_return,
    write_domestic,
)
from payout_engine.bankfiles.manifest import (
    Manifest,
    ManifestError,
    build_manifest,
    export_files,
    verify_manifest,
)
from payout_engine.bankfiles.model import (
    BankFile,
    BankFileError,
    BatchHeader,
    Debtor,
    InvalidInstruction,
    MalformedFile,
    PaymentInstruction,
    TotalsMismatch,
)
from payout_engine.bankfiles.pain001 import InvalidPain001, validate_pain001, write_pain001
from payout_engine.bankfiles.returns import (
    AccountStatement,
    DebitCreditNotification,
    PaymentReturn,
    StatementDoesNotReconcile,
    StatusReport,
    check_status_report,
    parse_bank_message,
    parse_camt053,
    parse_camt054,
    parse_pacs004,
    parse_pain002,
    payment_statuses,
    read_return_file,
)

__all__ = [
    "AccountStatement", "BankFile", "BankFileError", "BatchHeader", "DebitCreditNotification",
    "Debtor", "DomesticReturn", "InvalidInstruction", "InvalidPain001", "MalformedFile",
    "Manifest", "ManifestError", "PaymentInstruction", "PaymentReturn",
    "StatementDoesNotReconcile", "StatusReport", "TotalsMismatch", "build_manifest",
    "check_domestic_return", "check_status_report", "export_files", "parse_bank_message",
    "parse_camt053", "parse_camt054", "parse_pacs004", "parse_pain002", "payment_statuses",
    "read_domestic",
    "read_domestic_return", "read_return_file", "validate_pain001", "verify_manifest",
    "write_domestic", "write_pain001",
]
