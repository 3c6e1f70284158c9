from datetime import date

from ledger.application import Ledger
from tests.helpers import contribute, enrol, make_id


def test_a_contribution_reaches_the_income_and_the_individual_account(ledger: Ledger) -> None:
    idn = make_id(1)
    enrol(ledger, idn)
    contribute(ledger, idn, 2016, 50000)
    assert ledger.fund_positions()["1001"] == 50000
    st = ledger.statement(idn)
    assert st["sources_fen"]["contribution"] == 50000
    assert st["balance_fen"] == 50000
    assert ledger.statement(idn, as_of=date(2016, 2, 1))["balance_fen"] == 0
