"""Composition roots: the places that wire the ledger, the projections and the payout engine
together. ledger/ never imports payout_engine/; the command line that offers both lives here."""
