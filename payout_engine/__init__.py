"""The monthly pension run, batch lifecycle and bank files.

Uses ledger/; ledger/ never imports it."""
