"""Kafka relay (event store -> topics) and consumer loops.

Uses ledger/; ledger/ never imports it."""
