"""Projections: the views finance staff query instead of replaying events.

    runner = ProjectionRunner(ledger)
    runner.run_until_caught_up()           # or runner.run(stop) to follow the log
    views = Views(ledger)
    views.balances(as_of=date(2024, 12, 31), by="township")
    views.trial_balance(as_of)             # nets to zero
    views.statement("110101197005170011", as_of)
    views.county_report(2024)
    views.roster()
    rebuild(ledger, ["balances"])          # fresh tables, switched once caught up
"""

from ledger.projections.api import Views
from ledger.projections.rebuild import rebuild
from ledger.projections.runner import ProjectionRunner, ViewOutOfDate

__all__ = ["ProjectionRunner", "ViewOutOfDate", "Views", "rebuild"]
