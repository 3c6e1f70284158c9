"""Kafka: the relay (event store -> topics, relay.py). The consumer loops of the
distributed deployment (DESIGN.md) are not built yet.

Uses ledger/; ledger/ never imports it."""
