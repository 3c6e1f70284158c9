"""Kafka: the relay (event store -> topics, relay.py) and the projection consumers (topics ->
views, consume.py). The payout engine's consumers of the distributed deployment (DESIGN.md)
are not built yet.

Uses ledger/; ledger/ never imports it."""
