"""The domestic agent-bank format: 代发报盘 (the payment list) and 回盘 (the bank's answer).

Fixed-width records in GB18030, the encoding Chinese bank systems take, with widths counted in
bytes (a common Chinese character is 2 bytes, a rare one 4), lines ending CRLF. Every record
of a file has the same length. docs/domestic-format.md describes each field.

A value longer than its field is refused, never cut: a cut name or account number pays the
wrong person or nobody.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Literal

from payout_engine.bankfiles.model import (
    CURRENCY,
    BankFile,
    BatchHeader,
    Debtor,
    InvalidInstruction,
    MalformedFile,
    PaymentInstruction,
    TotalsMismatch,
    check_batch,
)

ENCODING = "gb18030"
EOL = b"\r\n"
VERSION = "01"
DEFAULT_MAX_LINES_PER_FILE = 50_000
MAX_FILES = 9_999
SUCCESS_CODE = "0000"
MAX_FILE_BYTES = 512 * 1024 * 1024

Kind = Literal["A", "G", "N"]  # ASCII text, GB18030 text, zero-padded digits
Spec = tuple[tuple[str, int, Kind], ...]

HEADER: Spec = (
    ("record_type", 1, "A"),  # H
    ("file_type", 3, "A"),  # PAY: 报盘, RET: 回盘
    ("version", 2, "A"),
    ("file_id", 35, "A"),
    ("fund_account", 32, "A"),
    ("payout_month", 6, "N"),  # YYYYMM
    ("payment_date", 8, "N"),  # YYYYMMDD
    ("currency", 3, "A"),
    ("count", 10, "N"),
    ("total_fen", 18, "N"),
)
DETAIL: Spec = (
    ("record_type", 1, "A"),  # D
    ("sequence", 10, "N"),
    ("order_number", 35, "A"),  # the payment's end_to_end_id
    ("payout_month", 6, "N"),
    ("account_name", 60, "G"),  # 户名
    ("account_number", 32, "A"),
    ("bank_code", 12, "A"),
    ("amount_fen", 15, "N"),
    ("id_number", 18, "A"),
    ("name", 60, "G"),  # 姓名
    ("purpose", 4, "A"),
)
RESULT: Spec = (
    ("status", 1, "A"),  # S: paid, F: failed
    ("reason_code", 4, "A"),  # 0000 when paid
    ("reason_text", 60, "G"),
)
TRAILER: Spec = (
    ("record_type", 1, "A"),  # T
    ("count", 10, "N"),
    ("total_fen", 18, "N"),
)
RETURN_TRAILER: Spec = TRAILER + (
    ("paid_count", 10, "N"),
    ("paid_fen", 18, "N"),
    ("failed_count", 10, "N"),
    ("failed_fen", 18, "N"),
)


def _width(spec: Spec) -> int:
    return sum(w for _, w, _ in spec)


RECORD_BYTES = _width(DETAIL)  # 253: every record of a 报盘
RETURN_RECORD_BYTES = _width(DETAIL + RESULT)  # 318: every record of a 回盘
assert _width(HEADER) <= RECORD_BYTES and _width(RETURN_TRAILER) <= RETURN_RECORD_BYTES


# -- results -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DomesticLine:
    sequence: int
    end_to_end_id: str
    payout_month: str  # YYYY-MM
    account_name: str
    account_number: str
    bank_code: str
    amount_fen: int
    id_number: str
    payee_name: str
    purpose: str


@dataclass(frozen=True, slots=True)
class DomesticFile:
    file_id: str
    fund_account: str
    payout_month: str
    payment_date: date
    count: int
    total_fen: int
    lines: tuple[DomesticLine, ...]


@dataclass(frozen=True, slots=True)
class DomesticResult:
    line: DomesticLine
    paid: bool
    reason_code: str  # 0000 when paid; the ISO reason code (AC01, AC04, MD07, ...) when not
    reason_text: str

    @property
    def end_to_end_id(self) -> str:
        return self.line.end_to_end_id

    @property
    def amount_fen(self) -> int:
        return self.line.amount_fen


@dataclass(frozen=True, slots=True)
class DomesticReturn:
    file_id: str
    fund_account: str
    payout_month: str
    payment_date: date
    count: int
    total_fen: int
    paid_count: int
    paid_fen: int
    failed_count: int
    failed_fen: int
    results: tuple[DomesticResult, ...]


# -- records -----------------------------------------------------------------------------------

def _field(value: str, name: str, width: int, kind: Kind, where: str) -> bytes:
    if kind == "N":
        if not value.isascii() or not value.isdigit() or len(value) > width:
            raise InvalidInstruction(f"{where}: {name} {value!r} is not {width} digits or fewer")
        return value.rjust(width, "0").encode("ascii")
    try:
        raw = value.encode("ascii" if kind == "A" else ENCODING)
    except UnicodeEncodeError:
        raise InvalidInstruction(f"{where}: {name} {value!r} cannot be written in "
                                 f"{'ASCII' if kind == 'A' else 'GB18030'}") from None
    if len(raw) > width:
        raise InvalidInstruction(f"{where}: {name} {value!r} is {len(raw)} bytes in "
                                 f"{ENCODING.upper()}, more than its {width}")
    return raw + b" " * (width - len(raw))


def _record(spec: Spec, values: Mapping[str, str], length: int, where: str) -> bytes:
    raw = b"".join(_field(values[name], name, width, kind, where) for name, width, kind in spec)
    assert len(raw) <= length
    return raw + b" " * (length - len(raw)) + EOL


def _fields(spec: Spec, raw: bytes, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    at = 0
    for name, width, kind in spec:
        chunk = raw[at:at + width]
        at += width
        try:
            text = chunk.decode("ascii" if kind != "G" else ENCODING)
        except UnicodeDecodeError:
            raise MalformedFile(f"{where}: {name} (bytes {at - width + 1}-{at}) is not valid "
                                f"{'ASCII' if kind != 'G' else 'GB18030'}") from None
        if kind == "N" and not text.isdigit():
            raise MalformedFile(f"{where}: {name} (bytes {at - width + 1}-{at}) {text!r} is "
                                "not digits")
        out[name] = text.rstrip(" ") if kind != "N" else text
    return out


def _lines(data: bytes, length: int, what: str) -> list[bytes]:
    if not isinstance(data, bytes):
        raise MalformedFile(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > MAX_FILE_BYTES:
        raise MalformedFile(f"{what}: {len(data)} bytes is more than {MAX_FILE_BYTES}")
    if not data.endswith(EOL):
        raise MalformedFile(f"{what}: the last line does not end with CRLF (truncated?)")
    lines = data[:-2].split(EOL)
    for n, line in enumerate(lines, 1):
        if len(line) != length:
            raise MalformedFile(f"{what} line {n}: {len(line)} bytes, every record is {length}")
    if len(lines) < 3:
        raise MalformedFile(f"{what}: needs a header, at least one payment and a trailer")
    return lines


def _month(yyyymm: str, where: str) -> str:
    if not "01" <= yyyymm[4:] <= "12":
        raise MalformedFile(f"{where}: payout_month {yyyymm!r} is not YYYYMM")
    return f"{yyyymm[:4]}-{yyyymm[4:]}"


def _date(yyyymmdd: str, where: str) -> date:
    try:
        return date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:]))
    except ValueError:
        raise MalformedFile(f"{where}: payment_date {yyyymmdd!r} is not a date") from None


# -- 报盘: the payment list ---------------------------------------------------------------------

def _detail_values(seq: int, p: PaymentInstruction) -> dict[str, str]:
    return {"record_type": "D", "sequence": str(seq), "order_number": p.end_to_end_id,
            "payout_month": p.payout_month.replace("-", ""), "account_name": p.account_name,
            "account_number": p.account_number, "bank_code": p.bank_code,
            "amount_fen": str(p.amount_fen), "id_number": p.id_number, "name": p.payee_name,
            "purpose": p.purpose}


def write_domestic(header: BatchHeader, debtor: Debtor, payments: Iterable[PaymentInstruction],
                   *, max_lines_per_file: int = DEFAULT_MAX_LINES_PER_FILE) -> list[BankFile]:
    """The 报盘 files for one export, payments sorted by end_to_end_id, at most
    `max_lines_per_file` payments a file, each file with its own header and trailer totals.
    File ids and names follow the pain.001 ones: '<message_id>-0001'."""
    ordered = sorted(payments, key=lambda p: p.end_to_end_id)
    check_batch(ordered)
    if not 1 <= max_lines_per_file <= 1_000_000:
        raise InvalidInstruction(f"max_lines_per_file {max_lines_per_file} must be 1..1000000")
    chunks = [ordered[i:i + max_lines_per_file]
              for i in range(0, len(ordered), max_lines_per_file)]
    if len(chunks) > MAX_FILES:
        raise InvalidInstruction(f"{len(chunks)} files is more than the limit of {MAX_FILES}")
    month = header.payout_month or max(p.payout_month for p in ordered)
    files = []
    for seq, chunk in enumerate(chunks, start=1):
        file_id = f"{header.message_id}-{seq:04d}"
        total = sum(p.amount_fen for p in chunk)
        head = {"record_type": "H", "file_type": "PAY", "version": VERSION, "file_id": file_id,
                "fund_account": debtor.account_number, "payout_month": month.replace("-", ""),
                "payment_date": header.requested_execution_date.strftime("%Y%m%d"),
                "currency": CURRENCY, "count": str(len(chunk)), "total_fen": str(total)}
        records = [_record(HEADER, head, RECORD_BYTES, f"file {file_id} header")]
        records += [_record(DETAIL, _detail_values(n, p), RECORD_BYTES,
                            f"payment {p.end_to_end_id}") for n, p in enumerate(chunk, 1)]
        records.append(_record(TRAILER, {"record_type": "T", "count": str(len(chunk)),
                                         "total_fen": str(total)},
                               RECORD_BYTES, f"file {file_id} trailer"))
        files.append(BankFile(name=f"{file_id}.txt", content=b"".join(records),
                              message_id=file_id, nb_of_txs=len(chunk), ctrl_sum_fen=total,
                              payments=tuple((p.end_to_end_id, p.amount_fen) for p in chunk)))
    return files


def _read_header(raw: bytes, file_type: str, what: str) -> dict[str, str]:
    head = _fields(HEADER, raw, f"{what} line 1 (header)")
    if head["record_type"] != "H" or head["file_type"] != file_type:
        raise MalformedFile(f"{what} line 1: expected a {file_type} header 'H{file_type}', got "
                            f"{head['record_type']}{head['file_type']!r}")
    if head["version"] != VERSION:
        raise MalformedFile(f"{what} line 1: format version {head['version']!r}, this reader "
                            f"takes {VERSION}")
    return head


def _read_detail(raw: bytes, n: int, what: str) -> DomesticLine:
    d = _fields(DETAIL, raw, f"{what} line {n}")
    if d["record_type"] != "D":
        raise MalformedFile(f"{what} line {n}: expected a payment record 'D', got "
                            f"{d['record_type']!r}")
    if int(d["sequence"]) != n - 1:
        raise MalformedFile(f"{what} line {n}: sequence {int(d['sequence'])}, expected {n - 1}")
    amount = int(d["amount_fen"])
    if amount <= 0:
        raise MalformedFile(f"{what} line {n}: amount_fen is zero")
    if not d["order_number"]:
        raise MalformedFile(f"{what} line {n}: order_number is empty")
    return DomesticLine(sequence=n - 1, end_to_end_id=d["order_number"],
                        payout_month=_month(d["payout_month"], f"{what} line {n}"),
                        account_name=d["account_name"], account_number=d["account_number"],
                        bank_code=d["bank_code"], amount_fen=amount, id_number=d["id_number"],
                        payee_name=d["name"], purpose=d["purpose"])


def _check_totals(what: str, where: str, head: Mapping[str, str],
                  lines: list[DomesticLine]) -> None:
    seen: set[str] = set()
    for line in lines:
        if line.end_to_end_id in seen:
            raise MalformedFile(f"{what}: order_number {line.end_to_end_id} appears twice")
        seen.add(line.end_to_end_id)
    if int(head["count"]) != len(lines):
        raise TotalsMismatch(f"{what} {where}: count {int(head['count'])} but the file holds "
                             f"{len(lines)} payments")
    total = sum(line.amount_fen for line in lines)
    if int(head["total_fen"]) != total:
        raise TotalsMismatch(f"{what} {where}: total {int(head['total_fen'])} fen but the "
                             f"payments sum to {total} fen")


def read_domestic(data: bytes) -> DomesticFile:
    """Read a 报盘 back, with every width, count and total checked."""
    what = "报盘"
    lines = _lines(data, RECORD_BYTES, what)
    head = _read_header(lines[0], "PAY", what)
    details = [_read_detail(raw, n, what) for n, raw in enumerate(lines[1:-1], start=2)]
    trailer = _fields(TRAILER, lines[-1], f"{what} line {len(lines)} (trailer)")
    if trailer["record_type"] != "T":
        raise MalformedFile(f"{what} line {len(lines)}: expected the trailer 'T'")
    _check_totals(what, "header", head, details)
    _check_totals(what, "trailer", trailer, details)
    return DomesticFile(file_id=head["file_id"], fund_account=head["fund_account"],
                        payout_month=_month(head["payout_month"], what),
                        payment_date=_date(head["payment_date"], what),
                        count=len(details), total_fen=int(head["total_fen"]),
                        lines=tuple(details))


# -- 回盘: the bank's answer --------------------------------------------------------------------

def write_domestic_return(request: bytes, failures: Mapping[str, tuple[str, str]]) -> bytes:
    """The 回盘 a bank writes for a 报盘: every line echoed with its result, `failures` mapping
    an order number to (reason code, reason text); the rest paid. For tests and rehearsals."""
    sent = read_domestic(request)
    unknown = set(failures) - {line.end_to_end_id for line in sent.lines}
    if unknown:
        raise InvalidInstruction(f"failures name payments not in the file: {sorted(unknown)}")
    raw_lines = request[:-2].split(EOL)
    out = [raw_lines[0].replace(b"HPAY", b"HRET", 1) + b" " * (RETURN_RECORD_BYTES
                                                               - RECORD_BYTES) + EOL]
    paid = failed = paid_fen = failed_fen = 0
    for raw, line in zip(raw_lines[1:-1], sent.lines, strict=True):
        code, text = failures.get(line.end_to_end_id, (SUCCESS_CODE, ""))
        ok = code == SUCCESS_CODE
        result = {"status": "S" if ok else "F", "reason_code": code, "reason_text": text}
        out.append(raw + _record(RESULT, result, _width(RESULT), f"result {line.end_to_end_id}"))
        if ok:
            paid, paid_fen = paid + 1, paid_fen + line.amount_fen
        else:
            failed, failed_fen = failed + 1, failed_fen + line.amount_fen
    out.append(_record(RETURN_TRAILER, {
        "record_type": "T", "count": str(sent.count), "total_fen": str(sent.total_fen),
        "paid_count": str(paid), "paid_fen": str(paid_fen), "failed_count": str(failed),
        "failed_fen": str(failed_fen)}, RETURN_RECORD_BYTES, "回盘 trailer"))
    return b"".join(out)


def read_domestic_return(data: bytes) -> DomesticReturn:
    """Read a 回盘: per payment paid or failed with the reason, header and trailer totals
    checked (count, total, paid and failed), or refuse the whole file."""
    what = "回盘"
    lines = _lines(data, RETURN_RECORD_BYTES, what)
    head = _read_header(lines[0], "RET", what)
    results = []
    for n, raw in enumerate(lines[1:-1], start=2):
        line = _read_detail(raw[:RECORD_BYTES], n, what)
        r = _fields(RESULT, raw[RECORD_BYTES:], f"{what} line {n}")
        if r["status"] not in ("S", "F"):
            raise MalformedFile(f"{what} line {n}: status {r['status']!r} is neither S nor F")
        paid = r["status"] == "S"
        if paid != (r["reason_code"] == SUCCESS_CODE):
            raise MalformedFile(f"{what} line {n}: status {r['status']} with reason code "
                                f"{r['reason_code']!r}")
        results.append(DomesticResult(line=line, paid=paid, reason_code=r["reason_code"],
                                      reason_text=r["reason_text"]))
    n = len(lines)
    trailer = _fields(RETURN_TRAILER, lines[-1], f"{what} line {n} (trailer)")
    if trailer["record_type"] != "T":
        raise MalformedFile(f"{what} line {n}: expected the trailer 'T'")
    details = [r.line for r in results]
    _check_totals(what, "header", head, details)
    _check_totals(what, "trailer", trailer, details)
    paid_lines = [r.line for r in results if r.paid]
    failed_lines = [r.line for r in results if not r.paid]
    _check_totals(what, "trailer paid", {"count": trailer["paid_count"],
                                         "total_fen": trailer["paid_fen"]}, paid_lines)
    _check_totals(what, "trailer failed", {"count": trailer["failed_count"],
                                           "total_fen": trailer["failed_fen"]}, failed_lines)
    return DomesticReturn(
        file_id=head["file_id"], fund_account=head["fund_account"],
        payout_month=_month(head["payout_month"], what),
        payment_date=_date(head["payment_date"], what), count=len(results),
        total_fen=int(head["total_fen"]), paid_count=len(paid_lines),
        paid_fen=sum(line.amount_fen for line in paid_lines), failed_count=len(failed_lines),
        failed_fen=sum(line.amount_fen for line in failed_lines), results=tuple(results))


def check_domestic_return(answer: DomesticReturn, sent: BankFile) -> None:
    """Refuse a 回盘 that does not answer `sent` exactly: another file id, a payment missing,
    added or with another amount."""
    if answer.file_id != sent.message_id:
        raise MalformedFile(f"回盘 answers file {answer.file_id}, not {sent.message_id}")
    amounts = dict(sent.payments)
    for r in answer.results:
        if r.end_to_end_id not in amounts:
            raise MalformedFile(f"回盘 {answer.file_id}: order_number {r.end_to_end_id} was not "
                                "sent")
        if amounts[r.end_to_end_id] != r.amount_fen:
            raise TotalsMismatch(f"回盘 {answer.file_id}: {r.end_to_end_id} amount "
                                 f"{r.amount_fen} fen, sent {amounts[r.end_to_end_id]}")
    if answer.count != sent.nb_of_txs or answer.total_fen != sent.ctrl_sum_fen:
        raise TotalsMismatch(f"回盘 {answer.file_id}: {answer.count} payments, {answer.total_fen}"
                             f" fen; sent {sent.nb_of_txs}, {sent.ctrl_sum_fen} fen")
