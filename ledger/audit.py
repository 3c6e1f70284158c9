"""Tamper evidence: verify the hash chain over the stored events from the database alone.

Each write transaction appends one block: the SHA-256 of every event it stored (over the
stored bytes, ciphertext when encrypted, so no key is needed) and the previous block's hash.
An auditor keeps the latest block hash (the head) outside the system; a later verify that
still finds that head, and every block after it recomputing exactly, proves no stored event
was altered, removed or slipped in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledger.store import GENESIS_SHA256, block_sha256, event_sha256

PAGE_EVENTS = 10_000
MAX_PROBLEMS = 100


@dataclass
class ChainReport:
    ok: bool = True
    blocks: int = 0
    events: int = 0
    head_block: int = 0
    head_sha256: str = GENESIS_SHA256
    problems: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.ok = False
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "blocks": self.blocks, "events": self.events,
                "head_block": self.head_block, "head_sha256": self.head_sha256,
                "problems": self.problems}


def verify_chain(ledger: Any, expected_head: str | None = None) -> ChainReport:
    """Recompute every block. expected_head: a head kept outside, which must still be
    in the chain (at the block where it was taken)."""
    import hashlib

    report = ChainReport()
    recorder = ledger.recorder
    prev = GENESIS_SHA256
    last_id = 0
    seen_expected = expected_head is None
    after = 0
    while True:
        blocks = ledger.queries.chain_blocks(after_block=after)
        if not blocks:
            break
        for block_no, first, last, count, digest, prev_sha, block_sha in blocks:
            after = block_no
            report.blocks += 1
            if block_no != report.blocks:
                report.fail(f"block {block_no}: expected block number {report.blocks}")
            if prev_sha != prev:
                report.fail(f"block {block_no}: does not link to the block before it")
            if block_sha256(block_no, first, last, count, digest, prev_sha) != block_sha:
                report.fail(f"block {block_no}: its own hash does not recompute")
            if first <= last_id:
                report.fail(f"block {block_no}: overlaps the block before it")
            h = hashlib.sha256()
            n = 0
            start = first
            while start <= last:
                page = recorder.select_notifications(start=start, limit=PAGE_EVENTS, stop=last)
                if not page:
                    break
                for note in page:
                    h.update(event_sha256(note.id, note.originator_id, note.originator_version,
                                          note.topic, note.state))
                    n += 1
                start = page[-1].id + 1
            if n != count:
                report.fail(f"block {block_no}: holds {n} events, the chain recorded {count}")
            elif h.hexdigest() != digest:
                report.fail(f"block {block_no}: events {first}..{last} were altered")
            report.events += n
            prev = block_sha
            last_id = last
            if block_sha == expected_head:
                seen_expected = True
    report.head_block = report.blocks
    report.head_sha256 = prev
    max_id = recorder.max_notification_id() or 0
    if max_id > last_id:
        report.fail(f"events after {last_id} (up to {max_id}) are outside the chain")
    total = _count_events(ledger)
    if total != report.events:
        report.fail(f"the store holds {total} events; the chain covers {report.events}")
    if not seen_expected:
        report.fail(f"the head kept outside ({expected_head}) is not in the chain: "
                    "history was rewritten")
    return report


def _count_events(ledger: Any) -> int:
    table = ledger.recorder.events_table_name
    rows = ledger.queries.fetch(f"SELECT COUNT(*) FROM {{p}}{table}")
    return int(rows[0][0])
