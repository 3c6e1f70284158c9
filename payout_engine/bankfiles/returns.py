"""Readers for what the bank sends back: pain.002, camt.054, camt.053, pacs.004, and (from
`domestic`) the 回盘 text file.

Each reader returns plain frozen values with amounts in integer fen, or raises a
`BankFileError` naming the element: a file is refused whole, never half read. Counts and sums
the file states (NbOfTxs, CtrlSum, TxsSummry, balances) are checked against its entries.

Namespaces are matched by message and any version (`urn:iso:std:iso:20022:tech:xsd:
pain.002.001.NN`); the element names read here are the same across the versions banks send.
The mock bank sends pain.002.001.10, camt.054.001.08, camt.053.001.08 and pacs.004.001.09;
older shapes (camt.05x.001.02 `Sts` as text, `AmtDtls/TxAmt`) are read as well.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Literal

from lxml import etree

from payout_engine.bankfiles.domestic import DomesticReturn, read_domestic_return
from payout_engine.bankfiles.model import (
    CURRENCY,
    BankFile,
    MalformedFile,
    TotalsMismatch,
    parse_fen,
)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_ISO = "urn:iso:std:iso:20022:tech:xsd:"
_NAMESPACE = re.compile(r"urn:iso:std:iso:20022:tech:xsd:([a-z]{4}\.\d{3})\.001\.(\d{2})")

# ExternalPaymentTransactionStatus1Code / ExternalPaymentGroupStatus1Code.
KNOWN_STATUSES = frozenset({"ACCC", "ACCP", "ACFC", "ACIS", "ACPD", "ACSC", "ACSP", "ACTC",
                            "ACWC", "ACWP", "BLCK", "CANC", "PART", "PATC", "PDNG", "PRES",
                            "RCVD", "RJCT"})
REJECTED_STATUSES = frozenset({"RJCT", "CANC"})
SETTLED_STATUSES = frozenset({"ACSC", "ACCC"})
# A group or batch in one of these says every payment in it went through.
_ALL_ACCEPTED = frozenset({"ACCP", "ACSC", "ACSP", "ACTC", "ACCC", "ACWC"})

CreditDebit = Literal["CRDT", "DBIT"]


class StatementDoesNotReconcile(TotalsMismatch):
    """A camt.053 whose closing balance is not its opening balance plus its booked entries:
    an entry is missing or one too many. The parsed statement is attached for the report."""

    def __init__(self, message: str, statement: Statement, difference_fen: int) -> None:
        super().__init__(message)
        self.statement = statement
        self.difference_fen = difference_fen


# -- results -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Reason:
    code: str | None  # ISO external code, e.g. AC01, AC04, MD07, or None when proprietary
    proprietary: str | None
    additional_info: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TransactionStatus:
    end_to_end_id: str
    instruction_id: str | None
    status: str
    reasons: tuple[Reason, ...]
    original_amount_fen: int | None  # only when the bank echoes OrgnlTxRef/Amt

    @property
    def reason_code(self) -> str | None:
        return next((r.code or r.proprietary for r in self.reasons), None)

    @property
    def rejected(self) -> bool:
        return self.status in REJECTED_STATUSES


@dataclass(frozen=True, slots=True)
class BatchStatus:
    pmt_inf_id: str
    original_nb_of_txs: int | None
    original_ctrl_sum_fen: int | None
    status: str | None
    reasons: tuple[Reason, ...]
    transactions: tuple[TransactionStatus, ...]


@dataclass(frozen=True, slots=True)
class StatusReport:
    """A pain.002: the bank's verdict on one pain.001, per file, batch and payment."""

    message_name: str
    message_id: str
    created_at: str
    original_message_id: str
    original_message_name: str
    original_nb_of_txs: int | None
    original_ctrl_sum_fen: int | None
    group_status: str | None  # None in a further report that only rejects some payments
    group_reasons: tuple[Reason, ...]
    batches: tuple[BatchStatus, ...]

    @property
    def transactions(self) -> tuple[TransactionStatus, ...]:
        return tuple(t for b in self.batches for t in b.transactions)

    @property
    def file_rejected(self) -> bool:
        """The whole file refused (RJCT, DUPL, FF01...): nothing in this copy will be paid."""
        return self.group_status in REJECTED_STATUSES

    @property
    def duplicate(self) -> bool:
        """Refused as a copy of a file the bank already has: the first copy still stands."""
        return self.file_rejected and any(r.code == "DUPL" for r in self.group_reasons)


@dataclass(frozen=True, slots=True)
class EntryTransaction:
    end_to_end_id: str | None
    message_id: str | None
    pmt_inf_id: str | None
    instruction_id: str | None
    amount_fen: int | None
    credit_debit: CreditDebit
    return_reason: str | None  # RtrInf/Rsn: the entry is money coming back


@dataclass(frozen=True, slots=True)
class Entry:
    amount_fen: int
    credit_debit: CreditDebit
    status: str  # BOOK, PDNG, INFO
    booking_date: date | None
    value_date: date | None
    reference: str | None  # AcctSvcrRef
    bank_transaction_code: tuple[str, str, str] | None  # domain, family, sub-family
    reversal: bool
    transactions: tuple[EntryTransaction, ...]

    @property
    def signed_fen(self) -> int:
        return self.amount_fen if self.credit_debit == "CRDT" else -self.amount_fen

    @property
    def end_to_end_ids(self) -> tuple[str, ...]:
        return tuple(t.end_to_end_id for t in self.transactions if t.end_to_end_id)


@dataclass(frozen=True, slots=True)
class Notification:
    id: str
    account: str  # IBAN, or Othr/Id
    currency: str | None
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class DebitCreditNotification:
    """A camt.054: what booked on the account, one entry per payment."""

    message_name: str
    message_id: str
    created_at: str
    notifications: tuple[Notification, ...]

    @property
    def entries(self) -> tuple[Entry, ...]:
        return tuple(e for n in self.notifications for e in n.entries)


@dataclass(frozen=True, slots=True)
class Statement:
    id: str
    account: str
    currency: str | None
    sequence_number: str | None
    from_date: date | None
    to_date: date | None
    opening_fen: int  # signed: negative is an overdrawn (DBIT) balance
    closing_fen: int
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class AccountStatement:
    """A camt.053: end-of-day statements, each with balances that reconcile with its entries."""

    message_name: str
    message_id: str
    created_at: str
    statements: tuple[Statement, ...]


@dataclass(frozen=True, slots=True)
class ReturnedTransaction:
    return_id: str | None
    original_end_to_end_id: str
    original_instruction_id: str | None
    original_message_id: str | None
    original_amount_fen: int | None
    returned_amount_fen: int
    settlement_date: date | None
    reason: Reason | None

    @property
    def reason_code(self) -> str | None:
        return None if self.reason is None else (self.reason.code or self.reason.proprietary)


@dataclass(frozen=True, slots=True)
class PaymentReturn:
    """A pacs.004: payments that had settled, coming back to the fund."""

    message_name: str
    message_id: str
    created_at: str
    nb_of_txs: int
    ctrl_sum_fen: int | None
    total_returned_fen: int
    original_message_id: str | None
    transactions: tuple[ReturnedTransaction, ...]


BankMessage = StatusReport | DebitCreditNotification | AccountStatement | PaymentReturn


# -- reading XML -------------------------------------------------------------------------------

class _El:
    """An element with its path, so every refusal names where in the file it is."""

    __slots__ = ("el", "path", "ns")

    def __init__(self, el: etree._Element, path: str, ns: str) -> None:
        self.el, self.path, self.ns = el, path, ns

    def all(self, name: str) -> list[_El]:
        found = self.el.findall(f"{{{self.ns}}}{name}")
        if len(found) == 1:
            return [_El(found[0], f"{self.path}/{name}", self.ns)]
        return [_El(e, f"{self.path}/{name}[{i}]", self.ns) for i, e in enumerate(found, 1)]

    def opt(self, path: str) -> _El | None:
        node: _El | None = self
        for name in path.split("/"):
            assert node is not None
            found = node.all(name)
            if len(found) > 1:
                raise MalformedFile(f"{node.path}/{name} appears {len(found)} times, once allowed")
            node = found[0] if found else None
            if node is None:
                return None
        return node

    def req(self, path: str) -> _El:
        node = self.opt(path)
        if node is None:
            raise MalformedFile(f"{self.path}/{path} is missing")
        return node

    def text(self, path: str) -> str | None:
        node = self.opt(path)
        if node is None:
            return None
        value = (node.el.text or "").strip()
        if not value or len(node.el):
            raise MalformedFile(f"{node.path} is empty or not a simple value")
        return value

    def own_text(self) -> str:
        value = (self.el.text or "").strip()
        if not value or len(self.el):
            raise MalformedFile(f"{self.path} is empty or not a simple value")
        return value

    def req_text(self, path: str) -> str:
        value = self.text(path)
        if value is None:
            raise MalformedFile(f"{self.path}/{path} is missing")
        return value

    def count(self, path: str) -> int | None:
        value = self.text(path)
        if value is None:
            return None
        if not value.isascii() or not value.isdigit() or len(value) > 15:
            raise MalformedFile(f"{self.path}/{path}: {value!r} is not a count")
        return int(value)

    def decimal(self, path: str) -> int | None:
        """A DecimalNumber with no currency (CtrlSum, TxsSummry sums) as fen."""
        value = self.text(path)
        return None if value is None else parse_fen(value, f"{self.path}/{path}")

    def amount(self, path: str, currency: str | None) -> int | None:
        node = self.opt(path)
        if node is None:
            return None
        ccy = node.el.get("Ccy")
        if ccy is None:
            raise MalformedFile(f"{node.path} has no Ccy")
        if currency is not None and ccy != currency:
            raise MalformedFile(f"{node.path} is in {ccy}, expected {currency}")
        return parse_fen(node.el.text, node.path)

    def req_amount(self, path: str, currency: str | None) -> int:
        value = self.amount(path, currency)
        if value is None:
            raise MalformedFile(f"{self.path}/{path} is missing")
        return value

    def date(self, path: str) -> date | None:
        """A date, or the date part of a DateAndDateTime choice (Dt or DtTm)."""
        node = self.opt(path)
        if node is None:
            return None
        where = node.path
        value = (node.text("Dt") or node.text("DtTm")) if len(node.el) else node.own_text()
        if value is None:
            raise MalformedFile(f"{where} has neither Dt nor DtTm")
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            raise MalformedFile(f"{where}: {value!r} is not a date") from None

    def code(self, path: str, allowed: Iterable[str]) -> str | None:
        value = self.text(path)
        if value is not None and value not in allowed:
            raise MalformedFile(f"{self.path}/{path}: unknown code {value!r}")
        return value


def _load(data: bytes, message: str) -> tuple[_El, str]:
    """The body element (e.g. CstmrPmtStsRpt) of an ISO 20022 `message` of any version."""
    if not isinstance(data, bytes):
        raise MalformedFile(f"{message}: expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise MalformedFile(f"{message}: {len(data)} bytes is more than {MAX_MESSAGE_BYTES}")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise MalformedFile(f"{message}: a DTD or entity declaration is not accepted")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             remove_comments=True, remove_pis=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise MalformedFile(f"{message}: not well-formed XML: {exc}") from None
    qname = etree.QName(root)
    found = _NAMESPACE.fullmatch(qname.namespace or "")
    if qname.localname != "Document" or found is None:
        raise MalformedFile(f"not an ISO 20022 Document: root {root.tag!r}")
    if found.group(1) != message:
        raise MalformedFile(f"expected a {message}, got {found.group(1)} ({qname.namespace})")
    name = qname.namespace[len(_ISO):]
    bodies = list(root)
    if len(bodies) != 1:
        raise MalformedFile(f"/Document must hold one message, holds {len(bodies)}")
    return _El(bodies[0], f"/Document/{etree.QName(bodies[0]).localname}", qname.namespace), name


def message_name(data: bytes) -> str:
    """'pain.002.001.10' etc. for an ISO 20022 document, without reading it further."""
    match = re.search(rb'xmlns(?::\w+)?="(urn:iso:std:iso:20022:tech:xsd:[^"]+)"', data[:4096])
    if match is None:
        raise MalformedFile("not an ISO 20022 message: no urn:iso:std:iso:20022 namespace")
    return match.group(1).decode()[len(_ISO):]


def _reasons(node: _El, path: str) -> tuple[Reason, ...]:
    out = []
    for r in node.all(path):
        out.append(Reason(code=r.text("Rsn/Cd"), proprietary=r.text("Rsn/Prtry"),
                          additional_info=tuple((a.el.text or "").strip()
                                                for a in r.all("AddtlInf"))))
    return tuple(out)


def _mismatch(where: str, what: str, stated: int, actual: int, unit: str = "") -> None:
    if stated != actual:
        raise TotalsMismatch(f"{where}: {what} says {stated}{unit} but the entries make "
                             f"{actual}{unit}")


# -- pain.002 ----------------------------------------------------------------------------------

def _check_statuses(where: str, status: str | None, txs: list[TransactionStatus]) -> None:
    if status in REJECTED_STATUSES and any(not t.rejected for t in txs):
        raise MalformedFile(f"{where}: status {status} but a payment in it is not rejected")
    if status in _ALL_ACCEPTED and any(t.rejected for t in txs):
        raise MalformedFile(f"{where}: status {status} but a payment in it is rejected")


def parse_pain002(data: bytes, currency: str = CURRENCY) -> StatusReport:
    body, name = _load(data, "pain.002")
    header = body.req("GrpHdr")
    group = body.req("OrgnlGrpInfAndSts")
    group_status = group.code("GrpSts", KNOWN_STATUSES)
    seen: set[str] = set()
    batches = []
    for b in body.all("OrgnlPmtInfAndSts"):
        txs = []
        for t in b.all("TxInfAndSts"):
            e2e = t.req_text("OrgnlEndToEndId")
            if e2e in seen:
                raise MalformedFile(f"{t.path}: OrgnlEndToEndId {e2e} is reported twice")
            seen.add(e2e)
            status = t.code("TxSts", KNOWN_STATUSES)
            if status is None:
                raise MalformedFile(f"{t.path}/TxSts is missing")
            txs.append(TransactionStatus(
                end_to_end_id=e2e, instruction_id=t.text("OrgnlInstrId"), status=status,
                reasons=_reasons(t, "StsRsnInf"),
                original_amount_fen=t.amount("OrgnlTxRef/Amt/InstdAmt", currency)))
        batch = BatchStatus(pmt_inf_id=b.req_text("OrgnlPmtInfId"),
                            original_nb_of_txs=b.count("OrgnlNbOfTxs"),
                            original_ctrl_sum_fen=b.decimal("OrgnlCtrlSum"),
                            status=b.code("PmtInfSts", KNOWN_STATUSES),
                            reasons=_reasons(b, "StsRsnInf"), transactions=tuple(txs))
        _check_batch_totals(b.path, batch)
        _check_statuses(b.path, batch.status, txs)
        batches.append(batch)
    report = StatusReport(
        message_name=name, message_id=header.req_text("MsgId"),
        created_at=header.req_text("CreDtTm"),
        original_message_id=group.req_text("OrgnlMsgId"),
        original_message_name=group.req_text("OrgnlMsgNmId"),
        original_nb_of_txs=group.count("OrgnlNbOfTxs"),
        original_ctrl_sum_fen=group.decimal("OrgnlCtrlSum"),
        group_status=group_status, group_reasons=_reasons(group, "StsRsnInf"),
        batches=tuple(batches))
    _check_statuses(group.path, group_status, list(report.transactions))
    if group_status is None and not report.transactions:
        raise MalformedFile(f"{group.path}: no group status and no payment status")
    counts = [b.original_nb_of_txs for b in batches]
    if batches and report.original_nb_of_txs is not None and None not in counts:
        _mismatch(group.path, "OrgnlNbOfTxs", report.original_nb_of_txs,
                  sum(c or 0 for c in counts))
    sums = [b.original_ctrl_sum_fen for b in batches]
    if batches and report.original_ctrl_sum_fen is not None and None not in sums:
        _mismatch(group.path, "OrgnlCtrlSum", report.original_ctrl_sum_fen,
                  sum(s or 0 for s in sums), " fen")
    return report


def _check_batch_totals(where: str, batch: BatchStatus) -> None:
    n = len(batch.transactions)
    if batch.original_nb_of_txs is None:
        return
    if n > batch.original_nb_of_txs:
        raise TotalsMismatch(f"{where}: OrgnlNbOfTxs says {batch.original_nb_of_txs} but "
                             f"{n} payments are reported")
    amounts = [t.original_amount_fen for t in batch.transactions]
    # Only a report of every payment with its amount can be held to the batch's sum.
    if (n == batch.original_nb_of_txs and batch.original_ctrl_sum_fen is not None
            and None not in amounts):
        _mismatch(where, "OrgnlCtrlSum", batch.original_ctrl_sum_fen,
                  sum(a or 0 for a in amounts), " fen")


def check_status_report(report: StatusReport, sent: BankFile) -> None:
    """Refuse a status report that does not answer `sent`: another MsgId, a payment that was
    not in the file, or original totals other than the file's."""
    if report.original_message_id != sent.message_id:
        raise MalformedFile(f"status report {report.message_id} answers "
                            f"{report.original_message_id}, not {sent.message_id}")
    amounts = dict(sent.payments)
    for t in report.transactions:
        if t.end_to_end_id not in amounts:
            raise MalformedFile(f"status report {report.message_id}: EndToEndId "
                                f"{t.end_to_end_id} is not in {sent.message_id}")
        if t.original_amount_fen is not None and t.original_amount_fen != amounts[
                t.end_to_end_id]:
            raise TotalsMismatch(f"status report {report.message_id}: {t.end_to_end_id} "
                                 f"amount {t.original_amount_fen} fen, sent "
                                 f"{amounts[t.end_to_end_id]}")
    where = f"status report {report.message_id}"
    if report.original_nb_of_txs is not None:
        _mismatch(where, "OrgnlNbOfTxs", report.original_nb_of_txs, sent.nb_of_txs)
    if report.original_ctrl_sum_fen is not None:
        _mismatch(where, "OrgnlCtrlSum", report.original_ctrl_sum_fen, sent.ctrl_sum_fen,
                  " fen")


def payment_statuses(report: StatusReport, sent: BankFile) -> dict[str, tuple[str, str | None]]:
    """(status, reason code) for each payment of `sent` the report decides. A file rejected
    whole (DUPL, FF01, ...) or a batch rejected with no payment listed decides every payment
    of `sent` (the writers put one batch in a file); otherwise each payment named decides
    itself, and one not named is left out (still pending). A file refused as a duplicate
    decides nothing: the payments are the first copy's, which the bank is processing."""
    check_status_report(report, sent)
    if report.duplicate:
        return {}
    out = {t.end_to_end_id: (t.status, t.reason_code) for t in report.transactions}
    group_reason = next((r.code or r.proprietary for r in report.group_reasons), None)
    whole: tuple[str, str | None] | None = None
    if report.file_rejected and not report.transactions:
        whole = ("RJCT", group_reason)
    for b in report.batches:
        if b.status in REJECTED_STATUSES and not b.transactions:
            batch_reason = next((r.code or r.proprietary for r in b.reasons), None)
            whole = ("RJCT", batch_reason or group_reason)
    if whole is not None:
        for e2e, _ in sent.payments:
            out.setdefault(e2e, whole)
    return out


# -- camt.054 / camt.053 entries -----------------------------------------------------------------

def _credit_debit(node: _El, path: str) -> CreditDebit | None:
    value = node.code(path, ("CRDT", "DBIT"))
    return "CRDT" if value == "CRDT" else "DBIT" if value == "DBIT" else None


def _entry(n: _El, currency: str | None) -> Entry:
    amount = n.req_amount("Amt", currency)
    side = _credit_debit(n, "CdtDbtInd")
    if side is None:
        raise MalformedFile(f"{n.path}/CdtDbtInd is missing")
    sts = n.req("Sts")
    # camt.05x.001.02-.05 write the status as text, .06 and later as Cd or Prtry.
    status = (sts.text("Cd") or sts.text("Prtry")) if len(sts.el) else sts.own_text()
    if status is None:
        raise MalformedFile(f"{sts.path} has no status code")
    code = None
    domain = n.opt("BkTxCd/Domn")
    if domain is not None:
        code = (domain.req_text("Cd"), domain.req_text("Fmly/Cd"),
                domain.req_text("Fmly/SubFmlyCd"))
    reversal = n.text("RvslInd")
    txs: list[EntryTransaction] = []
    batch_count: int | None = None
    for d in n.all("NtryDtls"):
        count = d.count("Btch/NbOfTxs")
        batch_count = count if batch_count is None else batch_count + (count or 0)
        for t in d.all("TxDtls"):
            tx_amount = (t.amount("Amt", currency)
                         if t.opt("Amt") is not None else
                         t.amount("AmtDtls/TxAmt/Amt", currency)
                         if t.opt("AmtDtls/TxAmt") is not None else
                         t.amount("AmtDtls/InstdAmt/Amt", currency))
            e2e = t.text("Refs/EndToEndId")
            returned = t.opt("RtrInf")
            txs.append(EntryTransaction(
                end_to_end_id=None if e2e == "NOTPROVIDED" else e2e,
                message_id=t.text("Refs/MsgId"), pmt_inf_id=t.text("Refs/PmtInfId"),
                instruction_id=t.text("Refs/InstrId"), amount_fen=tx_amount,
                credit_debit=_credit_debit(t, "CdtDbtInd") or side,
                return_reason=None if returned is None else (
                    returned.text("Rsn/Cd") or returned.text("Rsn/Prtry") or "")))
    if batch_count is not None and txs and batch_count != len(txs):
        _mismatch(n.path, "Btch/NbOfTxs", batch_count, len(txs))
    amounts = [t.amount_fen for t in txs]
    if txs and None not in amounts:
        net = sum((t.amount_fen or 0) * (1 if t.credit_debit == side else -1) for t in txs)
        _mismatch(n.path, "Amt", amount, net, " fen")
    return Entry(amount_fen=amount, credit_debit=side, status=status,
                 booking_date=n.date("BookgDt"), value_date=n.date("ValDt"),
                 reference=n.text("AcctSvcrRef"), bank_transaction_code=code,
                 reversal=reversal in ("true", "1"), transactions=tuple(txs))


def _account(node: _El) -> tuple[str, str | None]:
    acct = node.req("Acct")
    ident = acct.text("Id/IBAN") or acct.text("Id/Othr/Id")
    if ident is None:
        raise MalformedFile(f"{acct.path}/Id has neither IBAN nor Othr/Id")
    return ident, acct.text("Ccy")


def _check_summary(node: _El, entries: list[Entry]) -> None:
    summary = node.opt("TxsSummry")
    if summary is None:
        return
    where = summary.path
    credits = [e.amount_fen for e in entries if e.credit_debit == "CRDT"]
    debits = [e.amount_fen for e in entries if e.credit_debit == "DBIT"]
    for path, count, total in (("TtlNtries", len(entries), sum(credits) + sum(debits)),
                               ("TtlCdtNtries", len(credits), sum(credits)),
                               ("TtlDbtNtries", len(debits), sum(debits))):
        stated_count = summary.count(f"{path}/NbOfNtries")
        if stated_count is not None:
            _mismatch(where, f"{path}/NbOfNtries", stated_count, count)
        stated_sum = summary.decimal(f"{path}/Sum")
        if stated_sum is not None:
            _mismatch(where, f"{path}/Sum", stated_sum, total, " fen")
    net = summary.decimal("TtlNtries/TtlNetNtry/Amt")
    if net is not None:
        sign = 1 if summary.req_text("TtlNtries/TtlNetNtry/CdtDbtInd") == "CRDT" else -1
        _mismatch(where, "TtlNetNtry", sign * net, sum(credits) - sum(debits), " fen")


def _currency_of(account_ccy: str | None, currency: str | None, where: str) -> str | None:
    if currency is not None and account_ccy is not None and account_ccy != currency:
        raise MalformedFile(f"{where}: the account is in {account_ccy}, expected {currency}")
    return account_ccy or currency


def parse_camt054(data: bytes, currency: str | None = CURRENCY) -> DebitCreditNotification:
    """A camt.054. `currency=None` reads an account in any 2-decimal currency."""
    body, name = _load(data, "camt.054")
    header = body.req("GrpHdr")
    notifications = []
    for n in body.all("Ntfctn"):
        account, ccy = _account(n)
        ccy = _currency_of(ccy, currency, n.path)
        entries = [_entry(e, ccy) for e in n.all("Ntry")]
        _check_summary(n, entries)
        notifications.append(Notification(id=n.req_text("Id"), account=account, currency=ccy,
                                          entries=tuple(entries)))
    if not notifications:
        raise MalformedFile(f"{body.path}/Ntfctn is missing")
    return DebitCreditNotification(message_name=name, message_id=header.req_text("MsgId"),
                                   created_at=header.req_text("CreDtTm"),
                                   notifications=tuple(notifications))


def _balance(s: _El, codes: tuple[str, ...], ccy: str | None) -> int | None:
    for bal in s.all("Bal"):
        code = bal.text("Tp/CdOrPrtry/Cd") or bal.text("Tp/CdOrPrtry/Prtry")
        if code in codes:
            amount = bal.req_amount("Amt", ccy)
            side = _credit_debit(bal, "CdtDbtInd")
            if side is None:
                raise MalformedFile(f"{bal.path}/CdtDbtInd is missing")
            return amount if side == "CRDT" else -amount
    return None


def parse_camt053(data: bytes, currency: str | None = CURRENCY) -> AccountStatement:
    """A camt.053. Raises StatementDoesNotReconcile when a statement's closing balance is not
    its opening balance plus its booked entries."""
    body, name = _load(data, "camt.053")
    header = body.req("GrpHdr")
    statements = []
    for s in body.all("Stmt"):
        account, ccy = _account(s)
        ccy = _currency_of(ccy, currency, s.path)
        entries = [_entry(e, ccy) for e in s.all("Ntry")]
        _check_summary(s, entries)
        opening = _balance(s, ("OPBD", "PRCD"), ccy)
        closing = _balance(s, ("CLBD",), ccy)
        if opening is None or closing is None:
            raise MalformedFile(f"{s.path}: needs an opening (OPBD) and a closing (CLBD) "
                                "balance")
        statement = Statement(
            id=s.req_text("Id"), account=account, currency=ccy,
            sequence_number=s.text("ElctrncSeqNb") or s.text("LglSeqNb"),
            from_date=s.date("FrToDt/FrDtTm"), to_date=s.date("FrToDt/ToDtTm"),
            opening_fen=opening, closing_fen=closing, entries=tuple(entries))
        booked = sum(e.signed_fen for e in entries if e.status == "BOOK")
        difference = closing - (opening + booked)
        if difference:
            raise StatementDoesNotReconcile(
                f"{s.path}: statement {statement.id} of {account} opens at {opening} fen and "
                f"books {booked:+d} fen but closes at {closing} fen: {difference:+d} fen "
                "is not explained by its entries", statement, difference)
        statements.append(statement)
    if not statements:
        raise MalformedFile(f"{body.path}/Stmt is missing")
    return AccountStatement(message_name=name, message_id=header.req_text("MsgId"),
                            created_at=header.req_text("CreDtTm"),
                            statements=tuple(statements))


def check_statement_sequence(statements: Iterable[Statement]) -> None:
    """Refuse a run of one account's statements where one does not open at the balance the
    one before it closed at: a statement is missing, or a balance moved with no entry."""
    last: dict[str, Statement] = {}
    for s in statements:
        before = last.get(s.account)
        if before is not None and before.closing_fen != s.opening_fen:
            raise TotalsMismatch(
                f"statement {s.id} of {s.account} opens at {s.opening_fen} fen, but the one "
                f"before it, {before.id}, closed at {before.closing_fen} fen")
        last[s.account] = s


# -- pacs.004 ----------------------------------------------------------------------------------

def parse_pacs004(data: bytes, currency: str = CURRENCY) -> PaymentReturn:
    body, name = _load(data, "pacs.004")
    header = body.req("GrpHdr")
    group_original = body.text("OrgnlGrpInf/OrgnlMsgId")
    group_date = header.date("IntrBkSttlmDt")
    txs = []
    seen: set[str] = set()
    for t in body.all("TxInf"):
        e2e = t.req_text("OrgnlEndToEndId")
        if e2e in seen:
            raise MalformedFile(f"{t.path}: OrgnlEndToEndId {e2e} is returned twice")
        seen.add(e2e)
        reasons = _reasons(t, "RtrRsnInf")
        txs.append(ReturnedTransaction(
            return_id=t.text("RtrId"), original_end_to_end_id=e2e,
            original_instruction_id=t.text("OrgnlInstrId"),
            original_message_id=t.text("OrgnlGrpInf/OrgnlMsgId") or group_original,
            original_amount_fen=t.amount("OrgnlIntrBkSttlmAmt", currency),
            returned_amount_fen=t.req_amount("RtrdIntrBkSttlmAmt", currency),
            settlement_date=t.date("IntrBkSttlmDt") or group_date,
            reason=reasons[0] if reasons else None))
    if not txs:
        raise MalformedFile(f"{body.path}/TxInf is missing")
    total = sum(t.returned_amount_fen for t in txs)
    nb = header.count("NbOfTxs")
    if nb is None:
        raise MalformedFile(f"{header.path}/NbOfTxs is missing")
    _mismatch(header.path, "NbOfTxs", nb, len(txs))
    ctrl_sum = header.decimal("CtrlSum")
    if ctrl_sum is not None:
        _mismatch(header.path, "CtrlSum", ctrl_sum, total, " fen")
    stated_total = header.amount("TtlRtrdIntrBkSttlmAmt", currency)
    if stated_total is not None:
        _mismatch(header.path, "TtlRtrdIntrBkSttlmAmt", stated_total, total, " fen")
    return PaymentReturn(message_name=name, message_id=header.req_text("MsgId"),
                         created_at=header.req_text("CreDtTm"), nb_of_txs=nb,
                         ctrl_sum_fen=ctrl_sum, total_returned_fen=total,
                         original_message_id=group_original, transactions=tuple(txs))


# -- any of them -------------------------------------------------------------------------------

_PARSERS: dict[str, Callable[[bytes], BankMessage]] = {
    "pain.002": parse_pain002, "camt.054": parse_camt054, "camt.053": parse_camt053,
    "pacs.004": parse_pacs004}


def parse_bank_message(data: bytes) -> BankMessage:
    """Whichever of pain.002, camt.054, camt.053, pacs.004 `data` is (by its namespace)."""
    kind = message_name(data)[:8]
    parser = _PARSERS.get(kind)
    if parser is None:
        raise MalformedFile(f"{kind} is not a message this reader takes "
                            f"({', '.join(sorted(_PARSERS))})")
    return parser(data)


def read_return_file(data: bytes) -> BankMessage | DomesticReturn:
    """An ISO 20022 message, or a domestic 回盘 text file."""
    if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return parse_bank_message(data)
    return read_domestic_return(data)


def amounts_by_end_to_end_id(files: Iterable[BankFile]) -> Mapping[str, int]:
    """Every payment sent in `files`, for matching what comes back: refuses an id sent twice."""
    out: dict[str, int] = {}
    for f in files:
        for e2e, amount in f.payments:
            if e2e in out:
                raise MalformedFile(f"EndToEndId {e2e} is in more than one file")
            out[e2e] = amount
    return out
