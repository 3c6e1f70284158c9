"""What next month's comparison reads of a batch is kept by its draft, packed, under its
SHA-256, which the batch's comparison record names (payout_engine.line_summaries). Next
month's run takes it only if it hashes to that, else reads the lines: the comparison is the
same either way."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.application import Ledger
from payout_engine import drafted_files, last_month, line_summaries
from payout_engine.comparison import LineSummary
from tests.test_payout_last_month import three_months, three_months_afresh, without_batch_ids
from tests.test_payout_support import CONFIG

VERSIONS = st.lists(st.sampled_from(["v2020", "v2021", "v2021b"]), min_size=1, max_size=3,
                    unique=True).map(tuple)
SUMMARIES = st.builds(LineSummary, st.integers(-2**63, 2**63 - 1), st.integers(0, 120),
                      st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 10**9),
                      VERSIONS, st.integers(-10**9, 10**9))
LINES = st.lists(st.tuples(st.uuids().map(str), SUMMARIES), max_size=30,
                 unique_by=lambda pair: pair[0])
ONE_OFFS = st.lists(st.tuples(st.uuids(), st.integers(1, 10**9)), max_size=5)


@settings(max_examples=60, deadline=None)
@given(lines=LINES, one_offs=ONE_OFFS)
def test_packed_summaries_unpack_to_themselves(
        lines: list[tuple[str, LineSummary]], one_offs: list[tuple[UUID, int]]) -> None:
    packed = line_summaries.pack(lines, one_offs)
    unpacked, unpacked_one_offs = line_summaries.unpack(packed)
    assert list(unpacked) == lines
    assert unpacked_one_offs == one_offs


@settings(max_examples=40, deadline=None)
@given(lines=LINES.filter(bool), one_offs=ONE_OFFS, cut=st.integers(1, 200))
def test_packed_summaries_cut_short_or_lengthened_are_refused(
        lines: list[tuple[str, LineSummary]], one_offs: list[tuple[UUID, int]],
        cut: int) -> None:
    packed = line_summaries.pack(lines, one_offs)
    for wrong in (packed[:-cut], packed + bytes(cut)):
        with pytest.raises(line_summaries.Malformed):
            line_summaries.unpack(wrong)


def test_a_version_or_an_index_that_is_not_the_format_is_refused() -> None:
    one = [(str(UUID(int=1)), LineSummary(100, 1, 100, 0, 0, ("v1",), 0))]
    packed = line_summaries.pack(one, [])
    size = int.from_bytes(packed[:4], "big")
    header = packed[4:4 + size]
    other = header.replace(b'"version":1', b'"version":2')
    with pytest.raises(line_summaries.Malformed, match="format version 2"):
        line_summaries.unpack(packed[:4] + other + packed[4 + size:])
    out_of_range = packed[:-8] + (5).to_bytes(8, "little")
    with pytest.raises(line_summaries.Malformed, match="index out of range"):
        line_summaries.unpack(out_of_range)
    with pytest.raises(line_summaries.Malformed, match="not a UUID"):
        line_summaries.pack([("42", one[0][1])], [])


def test_kept_under_their_hash_0600_in_a_0700_directory_and_taken_only_if_they_hash_so(
        tmp_path: Path) -> None:
    spool = tmp_path / "drafted"
    blob = line_summaries.pack([(str(UUID(int=7)), LineSummary(5, 1, 5, 0, 0, ("v",)))], [])
    digest = line_summaries.sha256(blob)
    assert line_summaries.keep(spool, blob)
    path = spool / line_summaries.SUBDIRECTORY / f"{digest}.bin"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert line_summaries.take(spool, digest) == blob
    assert line_summaries.take(spool, "0" * 64) is None
    assert line_summaries.take(spool, "../../etc/passwd") is None
    path.write_bytes(blob[:-1] + b"\x01")
    assert line_summaries.take(spool, digest) is None
    assert not line_summaries.keep(None, blob) and line_summaries.take(None, digest) is None
    # Past two months, what is kept is removed when the next is kept.
    old = time.time() - (drafted_files.MAX_AGE_DAYS + 1) * 86_400
    os.utime(path, (old, old))
    other = line_summaries.pack([], [(UUID(int=8), 9)])
    assert line_summaries.keep(spool, other)
    assert not path.exists()
    assert line_summaries.take(spool, line_summaries.sha256(other)) == other


def counted_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one each time last month's lines are read."""
    reads: list[int] = []
    summaries = last_month.summaries

    def counted(stored: Any, one_offs: Any) -> Any:
        reads.append(1)
        return summaries(stored, one_offs)

    monkeypatch.setattr(last_month, "summaries", counted)
    return reads


def test_next_month_compares_with_the_kept_summaries_as_with_the_lines(
        ledger: Ledger, twin: Ledger, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    reads = counted_reads(monkeypatch)
    kept = three_months(ledger, tmp_path / "a")
    assert reads == []  # May and June took April's and May's kept summaries
    assert all(c["line_summaries"]["lines"] > 0 for c in kept)

    monkeypatch.setattr(last_month, "_kept", lambda previous, spool: None)
    read = three_months(twin, tmp_path / "b")
    assert len(reads) == 2
    assert [without_batch_ids(c) for c in kept] == [without_batch_ids(c) for c in read]


def test_kept_summaries_with_other_bytes_are_not_taken_and_the_lines_are_read(
        sqlite_ledger: Ledger, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    reads = counted_reads(monkeypatch)
    spool = CONFIG.drafted_files()
    assert spool is not None
    keep = line_summaries.keep

    def spoiled(where: Path | None, blob: bytes) -> bool:
        """Kept, then changed on disk: the next month's run must not take them."""
        kept = keep(where, blob)
        path = spool / line_summaries.SUBDIRECTORY / f"{line_summaries.sha256(blob)}.bin"
        data = bytearray(path.read_bytes())
        data[-9] ^= 0xFF  # an integer of the last column
        path.write_bytes(bytes(data))
        return kept

    monkeypatch.setattr(line_summaries, "keep", spoiled)
    spoilt = three_months(sqlite_ledger, tmp_path / "a")
    assert len(reads) == 2
    monkeypatch.setattr(line_summaries, "keep", keep)
    assert [without_batch_ids(c) for c in spoilt] == three_months_afresh(tmp_path)
