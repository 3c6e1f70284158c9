"""Builders shared by the payout tests: pensioners made through the ledger's own commands,
a month paid end to end, and bank answers written as the bank writes them."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any
from uuid import UUID

from ledger import disbursement
from ledger.aggregates.participant import BankAccount, Participant, participant_id
from ledger.aggregates.payout_batch import PayoutBatch
from ledger.application import Ledger
from ledger.payout import next_month
from payout_engine import export, returns_import, run
from payout_engine.bankfiles.domestic import write_domestic_return
from payout_engine.bankfiles.model import format_fen
from payout_engine.config import PayoutConfig
from tests.helpers import contribute, enrol, make_id

OPERATOR, APPROVER, FINANCE, BANK = "op1", "ap1", "fin1", "bank"
CONFIG = PayoutConfig()  # the sample county's defaults, whatever the environment says
ISO = "urn:iso:std:iso:20022:tech:xsd:"


def account(n: int, bank_code: str = "102") -> BankAccount:
    return BankAccount(account_name=f"领取人{n}", account_number=f"62220000{n:08d}",
                       bank_code=bank_code)


def transitional(ledger: Ledger, n: int, *, born: date = date(1950, 3, 15),
                 start: str = "2020-04", bank_code: str = "102") -> str:
    """A pensioner already of pension age when the scheme began: basic pension only."""
    idn = make_id(n, born=born)
    enrol(ledger, idn, enrol_date=date(2009, 12, 1), name=f"领取人{n}",
          bank_account=account(n, bank_code))
    ledger.apply_for_pension(id_number=idn, start_month=start, actor=OPERATOR)
    ledger.approve_pension(id_number=idn, actor=APPROVER)
    return idn


def contributor(ledger: Ledger, n: int, *, born: date = date(1960, 3, 15),
                start: str = "2020-04", tier_fen: int = 50000, bank_code: str = "102") -> str:
    """Fifteen years of contributions (ten, then five back-paid), then a pension."""
    idn = make_id(n, born=born)
    enrol(ledger, idn, enrol_date=date(2009, 12, 1), name=f"领取人{n}",
          bank_account=account(n, bank_code))
    for y in range(2010, 2020):
        contribute(ledger, idn, y, tier_fen, value_date=date(y, 3, 1))
    for y in range(2005, 2010):
        contribute(ledger, idn, y, tier_fen, value_date=date(2019, 6, 1), back_payment=True,
                   receipt_no=f"B{n}-{y}")
    ledger.apply_for_pension(id_number=idn, start_month=start, actor=OPERATOR)
    ledger.approve_pension(id_number=idn, actor=APPROVER)
    return idn


def pid(idn: str) -> UUID:
    return participant_id(idn)


def treasury(ledger: Ledger, amount_fen: int = 10**10) -> None:
    ledger.receive_treasury_funds(amount_fen=amount_fen, level="central",
                                  purpose="basic_pension", value_date=date(2009, 12, 5),
                                  reference="TREASURY-1", actor=FINANCE)


def county_raise(ledger: Ledger, effective_from: date, raise_fen: int, note: str) -> None:
    """Publish a rule version raising the county's part of the basic pension."""
    raised = ledger.rules_on(effective_from).parameters.county_part_raised(raise_fen)
    ledger.publish_rules(effective_from, raised, note, actor="admin")


def draft(ledger: Ledger, period: str, **kw: Any) -> PayoutBatch:
    kw.setdefault("config", CONFIG)
    kw.setdefault("today", date(2030, 1, 1))
    return run.run_month(ledger, period, actor=OPERATOR, **kw)


def first_day(period: str) -> date:
    return date(int(period[:4]), int(period[5:]), 1)


def send(ledger: Ledger, period: str, out: Path, file_format: str = "domestic"
         ) -> tuple[PayoutBatch, list[Path]]:
    """Draft, approve, fund and export a month: the files are ready for the bank."""
    batch = draft(ledger, period, file_format=file_format)
    run.approve(ledger, batch.id, batch.manifest_sha256, APPROVER)
    run.fund(ledger, batch.id, value_date=first_day(period), actor=FINANCE)
    result = export.export_batch(ledger, batch.id, out / period, file_format=file_format,
                                 actor=OPERATOR, config=CONFIG)
    return disbursement.get_batch(ledger, batch.id), [out / period / f for f in result.files]


def pay(ledger: Ledger, period: str, out: Path, failures: dict[str, str] | None = None
        ) -> PayoutBatch:
    """A month paid end to end through the domestic files: `failures` maps a resident ID
    to the bank's reason code; everyone else is paid."""
    batch, files = send(ledger, period, out)
    failures = failures or {}
    by_id = {line.id_number: e2e for e2e, line in batch.lines.items()}
    fails = {by_id[idn]: (code, "failed") for idn, code in failures.items() if idn in by_id}
    for f in files:
        answer = f.with_suffix(".ret")
        answer.write_bytes(write_domestic_return(f.read_bytes(), fails))
        returns_import.import_returns(ledger, answer, actor=BANK, config=CONFIG)
    return disbursement.get_batch(ledger, batch.id)


def months_from(first: str, last: str) -> list[str]:
    out, m = [], first
    while m <= last:
        out.append(m)
        m = next_month(m)
    return out


def pension_events(ledger: Ledger, idn: str) -> list[Any]:
    return [e for e in ledger.events.get(pid(idn))
            if isinstance(e, Participant.PensionPaid | Participant.PensionPaymentReversed)]


def net_paid_months(ledger: Ledger, idn: str) -> list[str]:
    """Months paid and not reversed, from the events (each at most once)."""
    months: list[str] = []
    for e in pension_events(ledger, idn):
        if isinstance(e, Participant.PensionPaid):
            assert not set(e.months) & set(months), "a month paid twice"
            months += e.months
        else:
            months = [m for m in months if m not in e.months]
    return sorted(months)


# ---- bank answers in ISO 20022, as a bank writes them ---------------------------------------

def doc(message: str, body: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Document xmlns="{ISO}{message}">'
            f"{body}</Document>").encode()


def pain002(file_record: dict[str, Any], statuses: dict[str, tuple[str, str]],
            amounts: dict[str, int], *, group: str = "PART", msg_id: str = "BANK-P002-1",
            ctrl_sum_fen: int | None = None) -> bytes:
    """A status report answering one file the batch sent: statuses maps an EndToEndId to
    (status, reason code)."""
    txs = "".join(
        f"<TxInfAndSts><OrgnlEndToEndId>{e2e}</OrgnlEndToEndId><TxSts>{status}</TxSts>"
        + (f"<StsRsnInf><Rsn><Cd>{reason}</Cd></Rsn></StsRsnInf>" if reason else "")
        + f'<OrgnlTxRef><Amt><InstdAmt Ccy="CNY">{format_fen(amounts[e2e])}</InstdAmt>'
          "</Amt></OrgnlTxRef></TxInfAndSts>"
        for e2e, (status, reason) in statuses.items())
    nb = file_record["nb_of_txs"]
    ctrl = format_fen(file_record["ctrl_sum_fen"] if ctrl_sum_fen is None else ctrl_sum_fen)
    return doc("pain.002.001.10", (
        f"<CstmrPmtStsRpt><GrpHdr><MsgId>{msg_id}</MsgId>"
        "<CreDtTm>2026-11-17T09:00:00+08:00</CreDtTm></GrpHdr>"
        f"<OrgnlGrpInfAndSts><OrgnlMsgId>{file_record['message_id']}</OrgnlMsgId>"
        f"<OrgnlMsgNmId>pain.001.001.09</OrgnlMsgNmId><OrgnlNbOfTxs>{nb}</OrgnlNbOfTxs>"
        f"<OrgnlCtrlSum>{ctrl}</OrgnlCtrlSum><GrpSts>{group}</GrpSts></OrgnlGrpInfAndSts>"
        "<OrgnlPmtInfAndSts>"
        f"<OrgnlPmtInfId>{file_record['message_id'].replace('PO-', 'PB-', 1)}</OrgnlPmtInfId>"
        f"<PmtInfSts>{group}</PmtInfSts>{txs}</OrgnlPmtInfAndSts></CstmrPmtStsRpt>"))


def pacs004(returns: dict[str, tuple[int, str]], msg_id: str = "BANK-RTR-1") -> bytes:
    """Payments that had settled coming back: EndToEndId -> (amount, reason code)."""
    txs = "".join(
        f"<TxInf><RtrId>R-{e2e[-6:]}</RtrId><OrgnlEndToEndId>{e2e}</OrgnlEndToEndId>"
        f'<RtrdIntrBkSttlmAmt Ccy="CNY">{format_fen(amount)}</RtrdIntrBkSttlmAmt>'
        "<IntrBkSttlmDt>2026-11-20</IntrBkSttlmDt>"
        f"<RtrRsnInf><Rsn><Cd>{reason}</Cd></Rsn></RtrRsnInf></TxInf>"
        for e2e, (amount, reason) in returns.items())
    total = format_fen(sum(a for a, _ in returns.values()))
    return doc("pacs.004.001.09", (
        f"<PmtRtr><GrpHdr><MsgId>{msg_id}</MsgId><CreDtTm>2026-11-20T09:00:00+08:00</CreDtTm>"
        f"<NbOfTxs>{len(returns)}</NbOfTxs><CtrlSum>{total}</CtrlSum></GrpHdr>{txs}</PmtRtr>"))
