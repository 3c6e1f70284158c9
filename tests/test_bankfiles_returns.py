"""Readers of what the bank sends back, on messages written here: each reads into integer
fen, checks what the message says about itself, and refuses a bad file whole."""

from __future__ import annotations

from datetime import date

import pytest

from payout_engine.bankfiles import (
    AccountStatement,
    BankFile,
    DebitCreditNotification,
    MalformedFile,
    PaymentReturn,
    StatementDoesNotReconcile,
    StatusReport,
    TotalsMismatch,
    check_status_report,
    parse_bank_message,
    parse_camt053,
    parse_camt054,
    parse_pacs004,
    parse_pain002,
    payment_statuses,
)
from payout_engine.bankfiles.model import parse_fen
from payout_engine.bankfiles.returns import check_statement_sequence

ISO = "urn:iso:std:iso:20022:tech:xsd:"


def doc(message: str, body: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Document xmlns="{ISO}{message}">'
            f"{body}</Document>").encode()


def tx_status(e2e: str, status: str, reason: str = "", amount: str = "") -> str:
    why = f"<StsRsnInf><Rsn><Cd>{reason}</Cd></Rsn><AddtlInf>原因</AddtlInf></StsRsnInf>" \
        if reason else ""
    ref = (f'<OrgnlTxRef><Amt><InstdAmt Ccy="CNY">{amount}</InstdAmt></Amt></OrgnlTxRef>'
           if amount else "")
    return (f"<TxInfAndSts><OrgnlEndToEndId>{e2e}</OrgnlEndToEndId><TxSts>{status}</TxSts>"
            f"{why}{ref}</TxInfAndSts>")


def pain002(txs: list[str], group: str = "PART", nb: int = 4, ctrl: str = "600.00",
            batch_nb: int | None = None, version: str = "pain.002.001.10") -> bytes:
    batch_nb = nb if batch_nb is None else batch_nb
    return doc(version, (
        "<CstmrPmtStsRpt><GrpHdr><MsgId>BANK-P002-1</MsgId>"
        "<CreDtTm>2026-11-16T09:00:00+08:00</CreDtTm></GrpHdr>"
        "<OrgnlGrpInfAndSts><OrgnlMsgId>PO-202611-01-0001</OrgnlMsgId>"
        f"<OrgnlMsgNmId>pain.001.001.09</OrgnlMsgNmId><OrgnlNbOfTxs>{nb}</OrgnlNbOfTxs>"
        f"<OrgnlCtrlSum>{ctrl}</OrgnlCtrlSum><GrpSts>{group}</GrpSts></OrgnlGrpInfAndSts>"
        "<OrgnlPmtInfAndSts><OrgnlPmtInfId>B-0001</OrgnlPmtInfId>"
        f"<OrgnlNbOfTxs>{batch_nb}</OrgnlNbOfTxs><OrgnlCtrlSum>{ctrl}</OrgnlCtrlSum>"
        f"<PmtInfSts>{group}</PmtInfSts>{''.join(txs)}</OrgnlPmtInfAndSts>"
        "</CstmrPmtStsRpt>"))


SENT = BankFile(name="PO-202611-01-0001.xml", content=b"-", message_id="PO-202611-01-0001",
                nb_of_txs=4, ctrl_sum_fen=60_000,
                payments=(("E1", 10_000), ("E2", 20_000), ("E3", 20_000), ("E4", 10_000)))
FOUR = [tx_status("E1", "ACCP"), tx_status("E2", "RJCT", "AC01"),
        tx_status("E3", "RJCT", "MD07"), tx_status("E4", "ACSC")]


@pytest.mark.parametrize("text, fen", [("0.01", 1), ("12.5", 1250), ("999999.99", 99_999_999),
                                       ("7", 700), (" 1.00\n", 100), ("0", 0)])
def test_decimal_amounts_are_read_exactly(text: str, fen: int) -> None:
    assert parse_fen(text, "Amt") == fen


@pytest.mark.parametrize("text, message", [("1.005", "more than 2 decimal places"),
                                           ("-1.00", "not a decimal amount"),
                                           ("1e3", "not a decimal amount"),
                                           ("1,00", "not a decimal amount"),
                                           ("", "not a decimal amount"),
                                           ("１.00", "not a decimal amount")])
def test_decimal_amounts_are_refused_when_not_exact(text: str, message: str) -> None:
    with pytest.raises(MalformedFile, match=message):
        parse_fen(text, "Amt")


@pytest.mark.parametrize("version", ["pain.002.001.03", "pain.002.001.10", "pain.002.001.12"])
def test_status_report_per_payment_with_reason_codes(version: str) -> None:
    report = parse_pain002(pain002(FOUR, version=version))
    assert report.message_name == version
    assert (report.original_message_id, report.group_status) == ("PO-202611-01-0001", "PART")
    assert (report.original_nb_of_txs, report.original_ctrl_sum_fen) == (4, 60_000)
    assert [(t.end_to_end_id, t.status, t.reason_code, t.rejected)
            for t in report.transactions] == [
        ("E1", "ACCP", None, False), ("E2", "RJCT", "AC01", True),
        ("E3", "RJCT", "MD07", True), ("E4", "ACSC", None, False)]
    assert report.transactions[1].reasons[0].additional_info == ("原因",)
    check_status_report(report, SENT)
    assert payment_statuses(report, SENT) == {"E1": ("ACCP", None), "E2": ("RJCT", "AC01"),
                                              "E3": ("RJCT", "MD07"), "E4": ("ACSC", None)}


def test_a_batch_rejected_whole_decides_every_payment_in_it() -> None:
    batch_only = pain002([], group="RJCT").replace(
        b"<PmtInfSts>RJCT</PmtInfSts>",
        b"<PmtInfSts>RJCT</PmtInfSts><StsRsnInf><Rsn><Cd>AM04</Cd></Rsn></StsRsnInf>")
    report = parse_pain002(batch_only)
    assert report.transactions == ()
    assert payment_statuses(report, SENT) == {e2e: ("RJCT", "AM04") for e2e, _ in
                                              SENT.payments}
    refused = pain002([], group="RJCT").replace(
        b"<GrpSts>RJCT</GrpSts>",
        b"<GrpSts>RJCT</GrpSts><StsRsnInf><Rsn><Cd>FF01</Cd></Rsn></StsRsnInf>")
    assert set(payment_statuses(parse_pain002(refused), SENT).values()) == {("RJCT", "FF01")}


def test_a_report_that_echoes_amounts_is_held_to_its_control_sum() -> None:
    txs = [tx_status("E1", "ACCP", amount="100.00"), tx_status("E2", "ACCP", amount="200.00")]
    report = parse_pain002(pain002(txs, "ACCP", nb=2, ctrl="300.00"))
    assert [t.original_amount_fen for t in report.transactions] == [10_000, 20_000]
    with pytest.raises(TotalsMismatch, match="OrgnlCtrlSum says 30001 fen"):
        parse_pain002(pain002(txs, "ACCP", nb=2, ctrl="300.01"))


@pytest.mark.parametrize("data, error, message", [
    (pain002(FOUR[:1] * 2), MalformedFile, "OrgnlEndToEndId E1 is reported twice"),
    (pain002(FOUR, batch_nb=3), TotalsMismatch, "OrgnlNbOfTxs says 3 but 4 payments"),
    (pain002(FOUR, nb=5, batch_nb=4), TotalsMismatch, "OrgnlNbOfTxs says 5 but the entries"),
    (pain002(FOUR, group="ACCP"), MalformedFile, "status ACCP but a payment in it is rejected"),
    (pain002(FOUR, group="RJCT"), MalformedFile, "status RJCT but a payment .* not rejected"),
    (pain002([tx_status("E1", "OKAY")]), MalformedFile, "unknown code 'OKAY'"),
    (pain002(["<TxInfAndSts><TxSts>RJCT</TxSts></TxInfAndSts>"]), MalformedFile,
     r"TxInfAndSts/OrgnlEndToEndId is missing"),
    (pain002(FOUR).replace(b"<OrgnlMsgId>PO-202611-01-0001</OrgnlMsgId>", b""), MalformedFile,
     "OrgnlGrpInfAndSts/OrgnlMsgId is missing"),
    (pain002(FOUR)[:-30], MalformedFile, "not well-formed"),
    (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x "y">]><Document/>', MalformedFile,
     "DTD"),
    (doc("camt.054.001.08", "<BkToCstmrDbtCdtNtfctn/>"), MalformedFile,
     "expected a pain.002, got camt.054"),
    (pain002(FOUR).replace(b"<OrgnlCtrlSum>600.00</OrgnlCtrlSum>",
                           b"<OrgnlCtrlSum>600.001</OrgnlCtrlSum>", 1), MalformedFile,
     "more than 2 decimal places"),
])
def test_a_bad_status_report_is_refused_whole(data: bytes, error: type[Exception],
                                              message: str) -> None:
    with pytest.raises(error, match=message):
        parse_pain002(data)


def test_a_report_is_held_to_the_file_it_answers() -> None:
    stranger = pain002([*FOUR[:3], tx_status("E9", "ACCP")])
    with pytest.raises(MalformedFile, match="EndToEndId E9 is not in PO-202611-01-0001"):
        check_status_report(parse_pain002(stranger), SENT)
    with pytest.raises(TotalsMismatch, match="OrgnlCtrlSum says 60001 fen"):
        check_status_report(parse_pain002(pain002(FOUR, ctrl="600.01")), SENT)


def entry(e2e: str, amount: str, side: str = "DBIT", status: str = "<Sts><Cd>BOOK</Cd></Sts>",
          tx_amount: str | None = None, reason: str = "") -> str:
    returned = f"<RtrInf><Rsn><Cd>{reason}</Cd></Rsn></RtrInf>" if reason else ""
    return (f'<Ntry><Amt Ccy="CNY">{amount}</Amt><CdtDbtInd>{side}</CdtDbtInd>{status}'
            "<BookgDt><Dt>2026-11-18</Dt></BookgDt><ValDt><Dt>2026-11-18</Dt></ValDt>"
            "<AcctSvcrRef>REF</AcctSvcrRef><BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>ICDT</Cd>"
            "<SubFmlyCd>ESCT</SubFmlyCd></Fmly></Domn></BkTxCd><NtryDtls><TxDtls><Refs>"
            f"<MsgId>PO-1</MsgId><EndToEndId>{e2e}</EndToEndId></Refs>"
            f'<Amt Ccy="CNY">{tx_amount or amount}</Amt><CdtDbtInd>{side}</CdtDbtInd>'
            f"{returned}</TxDtls></NtryDtls></Ntry>")


def camt054(entries: list[str], ccy: str = "CNY", version: str = "camt.054.001.08") -> bytes:
    return doc(version, (
        "<BkToCstmrDbtCdtNtfctn><GrpHdr><MsgId>N-1</MsgId>"
        "<CreDtTm>2026-11-18T18:00:00+08:00</CreDtTm></GrpHdr><Ntfctn><Id>N-1</Id>"
        f"<Acct><Id><Othr><Id>1000000001</Id></Othr></Id><Ccy>{ccy}</Ccy></Acct>"
        f"{''.join(entries)}</Ntfctn></BkToCstmrDbtCdtNtfctn>"))


def test_debit_notification_entries_in_fen_with_their_payment_ids() -> None:
    n = parse_camt054(camt054([entry("E1", "100.00"), entry("E4", "0.01"),
                               entry("E3", "200.00", "CRDT", reason="MD07")]))
    assert n.notifications[0].account == "1000000001"
    assert [(e.end_to_end_ids, e.amount_fen, e.credit_debit, e.status) for e in n.entries] == [
        (("E1",), 10_000, "DBIT", "BOOK"), (("E4",), 1, "DBIT", "BOOK"),
        (("E3",), 20_000, "CRDT", "BOOK")]
    assert n.entries[2].transactions[0].return_reason == "MD07"
    assert n.entries[0].bank_transaction_code == ("PMNT", "ICDT", "ESCT")
    assert n.entries[0].booking_date == date(2026, 11, 18)


def test_an_older_notification_with_status_as_text_and_amount_details() -> None:
    old = entry("E1", "100.00", status="<Sts>BOOK</Sts>").replace(
        '<Amt Ccy="CNY">100.00</Amt><CdtDbtInd>DBIT</CdtDbtInd></TxDtls>',
        '<AmtDtls><TxAmt><Amt Ccy="CNY">100.00</Amt></TxAmt></AmtDtls></TxDtls>')
    n = parse_camt054(camt054([old], version="camt.054.001.02"))
    assert n.entries[0].status == "BOOK" and n.entries[0].transactions[0].amount_fen == 10_000


@pytest.mark.parametrize("data, error, message", [
    (camt054([entry("E1", "100.00", tx_amount="99.99")]), TotalsMismatch,
     "Amt says 10000 fen but the entries make 9999 fen"),
    (camt054([entry("E1", "100.00")], ccy="EUR"), MalformedFile, "in EUR, expected CNY"),
    (camt054([entry("E1", "100.00").replace('Ccy="CNY"', 'Ccy="USD"', 1)]), MalformedFile,
     "Amt is in USD"),
    (camt054([entry("E1", "100.00", side="DEBIT")]), MalformedFile, "unknown code 'DEBIT'"),
    (camt054([entry("E1", "100.00").replace("<Dt>2026-11-18</Dt>", "<Dt>2026-11-31</Dt>", 1)]),
     MalformedFile, "not a date"),
])
def test_a_bad_notification_is_refused_whole(data: bytes, error: type[Exception],
                                             message: str) -> None:
    with pytest.raises(error, match=message):
        parse_camt054(data)


def balance(code: str, amount: str, side: str = "CRDT") -> str:
    return (f"<Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp>"
            f'<Amt Ccy="CNY">{amount}</Amt><CdtDbtInd>{side}</CdtDbtInd>'
            "<Dt><Dt>2026-11-18</Dt></Dt></Bal>")


def camt053(opening: str, closing: str, entries: list[str], summary: str = "",
            closing_side: str = "CRDT", number: int = 1) -> bytes:
    return doc("camt.053.001.08", (
        "<BkToCstmrStmt><GrpHdr><MsgId>S-1</MsgId><CreDtTm>2026-11-18T23:59:59+08:00</CreDtTm>"
        f"</GrpHdr><Stmt><Id>S-{number}</Id><ElctrncSeqNb>{number}</ElctrncSeqNb>"
        "<Acct><Id><IBAN>CN89MOCK1000000001</IBAN></Id><Ccy>CNY</Ccy></Acct>"
        f"{balance('OPBD', opening)}{balance('CLBD', closing, closing_side)}{summary}"
        f"{''.join(entries)}</Stmt></BkToCstmrStmt>"))


SUMMARY = ("<TxsSummry><TtlNtries><NbOfNtries>2</NbOfNtries><Sum>300.00</Sum><TtlNetNtry>"
           "<Amt>100.00</Amt><CdtDbtInd>DBIT</CdtDbtInd></TtlNetNtry></TtlNtries>"
           "<TtlCdtNtries><NbOfNtries>1</NbOfNtries><Sum>100.00</Sum></TtlCdtNtries>"
           "<TtlDbtNtries><NbOfNtries>1</NbOfNtries><Sum>200.00</Sum></TtlDbtNtries>"
           "</TxsSummry>")
TWO = [entry("E2", "200.00"), entry("E3", "100.00", "CRDT", reason="AC04")]


def test_a_statement_reconciles_opening_entries_and_closing() -> None:
    s = parse_camt053(camt053("1000.00", "900.00", TWO, SUMMARY)).statements[0]
    assert (s.account, s.opening_fen, s.closing_fen) == ("CN89MOCK1000000001", 100_000, 90_000)
    assert [e.signed_fen for e in s.entries] == [-20_000, 10_000]
    overdrawn = parse_camt053(camt053("100.00", "100.00", TWO[:1], closing_side="DBIT"))
    assert overdrawn.statements[0].closing_fen == -10_000


def test_a_statement_missing_an_entry_is_refused_with_the_difference() -> None:
    with pytest.raises(StatementDoesNotReconcile, match=r"\+10000 fen is not explained") as caught:
        parse_camt053(camt053("1000.00", "900.00", TWO[:1]))
    assert caught.value.difference_fen == 10_000
    assert caught.value.statement.entries[0].end_to_end_ids == ("E2",)
    with pytest.raises(TotalsMismatch, match="TtlNtries/NbOfNtries says 2 but .* 1"):
        parse_camt053(camt053("1000.00", "800.00", TWO[:1], SUMMARY))
    with pytest.raises(MalformedFile, match="needs an opening"):
        parse_camt053(camt053("1000.00", "900.00", TWO).replace(b"OPBD", b"ITBD"))


def test_statements_must_follow_on_from_each_other() -> None:
    first = parse_camt053(camt053("1000.00", "900.00", TWO)).statements[0]
    second = parse_camt053(camt053("900.00", "900.00", [], number=2)).statements[0]
    check_statement_sequence([first, second])
    gap = parse_camt053(camt053("899.00", "899.00", [], number=2)).statements[0]
    with pytest.raises(TotalsMismatch, match="S-2 .* opens at 89900 fen, .* S-1, closed at"):
        check_statement_sequence([first, gap])


def pacs004(txs: list[tuple[str, str, str]], nb: int | None = None,
            ctrl: str | None = None) -> bytes:
    total = sum(parse_fen(a, "") for _, a, _ in txs)
    ctrl = ctrl or f"{total // 100}.{total % 100:02d}"
    body = "".join(
        f"<TxInf><RtrId>R{i}</RtrId><OrgnlEndToEndId>{e2e}</OrgnlEndToEndId>"
        f'<OrgnlIntrBkSttlmAmt Ccy="CNY">{a}</OrgnlIntrBkSttlmAmt>'
        f'<RtrdIntrBkSttlmAmt Ccy="CNY">{a}</RtrdIntrBkSttlmAmt>'
        f"<IntrBkSttlmDt>2026-11-20</IntrBkSttlmDt><RtrRsnInf><Rsn><Cd>{why}</Cd></Rsn>"
        "</RtrRsnInf></TxInf>" for i, (e2e, a, why) in enumerate(txs))
    return doc("pacs.004.001.09", (
        "<PmtRtr><GrpHdr><MsgId>R-1</MsgId><CreDtTm>2026-11-20T10:00:00+08:00</CreDtTm>"
        f"<NbOfTxs>{len(txs) if nb is None else nb}</NbOfTxs><CtrlSum>{ctrl}</CtrlSum>"
        f'<TtlRtrdIntrBkSttlmAmt Ccy="CNY">{ctrl}</TtlRtrdIntrBkSttlmAmt>'
        "<SttlmInf><SttlmMtd>INDA</SttlmMtd></SttlmInf></GrpHdr><OrgnlGrpInf>"
        "<OrgnlMsgId>PO-202611-01-0001</OrgnlMsgId><OrgnlMsgNmId>pain.001.001.09</OrgnlMsgNmId>"
        f"</OrgnlGrpInf>{body}</PmtRtr>"))


def test_returns_after_settlement_with_their_reasons() -> None:
    r = parse_pacs004(pacs004([("E1", "100.00", "MD07"), ("E4", "0.01", "AC04")]))
    assert (r.nb_of_txs, r.ctrl_sum_fen, r.total_returned_fen) == (2, 10_001, 10_001)
    assert [(t.original_end_to_end_id, t.returned_amount_fen, t.reason_code,
             t.original_message_id, t.settlement_date) for t in r.transactions] == [
        ("E1", 10_000, "MD07", "PO-202611-01-0001", date(2026, 11, 20)),
        ("E4", 1, "AC04", "PO-202611-01-0001", date(2026, 11, 20))]


@pytest.mark.parametrize("data, error, message", [
    (pacs004([("E1", "100.00", "MD07")], nb=2), TotalsMismatch, "NbOfTxs says 2"),
    (pacs004([("E1", "100.00", "MD07")], ctrl="100.01"), TotalsMismatch,
     "CtrlSum says 10001 fen"),
    (pacs004([("E1", "100.00", "MD07"), ("E1", "1.00", "AC04")]), MalformedFile,
     "E1 is returned twice"),
    (pacs004([]), MalformedFile, "TxInf is missing"),
])
def test_a_bad_return_is_refused_whole(data: bytes, error: type[Exception],
                                       message: str) -> None:
    with pytest.raises(error, match=message):
        parse_pacs004(data)


def test_any_message_is_read_by_its_namespace() -> None:
    assert isinstance(parse_bank_message(pain002(FOUR)), StatusReport)
    assert isinstance(parse_bank_message(camt054([entry("E1", "1.00")])),
                      DebitCreditNotification)
    assert isinstance(parse_bank_message(camt053("1.00", "0.00", [entry("E1", "1.00")])),
                      AccountStatement)
    assert isinstance(parse_bank_message(pacs004([("E1", "1.00", "AC04")])), PaymentReturn)
    with pytest.raises(MalformedFile, match="camt.052 is not a message this reader takes"):
        parse_bank_message(doc("camt.052.001.08", "<BkToCstmrAcctRpt/>"))
    with pytest.raises(MalformedFile, match="no urn:iso:std:iso:20022 namespace"):
        parse_bank_message(b"<Document/>")
