"""What next month's comparison needs of a batch's lines, packed, and kept on disk.

The comparison puts each change from last month down to a reason, from what last month's
batch paid each pensioner (comparison.LineSummary). Read from the stored lines, that is
525 MB to fetch and decode at a million pensioners: about ten seconds of a process beside
the month's run, on a machine of two cores. The run has each summary at hand as it drafts
(the comparison made it), so the draft keeps them, packed by columns, in the drafted-files
directory under their SHA-256, and records that in the batch's comparison record.
Next month's run takes them if they hash to that record, and otherwise reads the lines, as
it always could: what is kept is a copy, never the record.

The packed form (also what a child reading the lines sends: payout_engine.last_month): a
header (JSON: the count, the distinct rule-version lists, the one-off payments), the
participant ids as one ASCII text, then each integer field as 8-byte little-endian
integers, then each line's index into the distinct rule versions.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import sys
import time
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from uuid import UUID

import orjson

from ledger.aggregates.payout_batch import MAX_LINES
from payout_engine import drafted_files
from payout_engine.bankfiles.manifest import DIR_MODE, write_atomic
from payout_engine.comparison import LineSummary

FORMAT_VERSION = 1
ID_CHARS = 36                 # a participant id as the lines store it: str(UUID)
MAX_HEADER_BYTES = 64 * 1024 * 1024
SUBDIRECTORY = "line-summaries"
INT_FIELDS = ("amount_fen", "months", "basic_fen", "deduction_fen", "pooled_fen",
              "rerated_fen")
assert set(INT_FIELDS) | {"rule_versions"} == set(LineSummary._fields)
_LENGTH_BYTES = 4
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEPT_NAME = re.compile(r"[0-9a-f]{64}\.bin")


class Malformed(ValueError):
    """Packed summaries that are not what pack() makes."""


def pack(lines: Sequence[tuple[str, LineSummary]],
         one_offs: Sequence[tuple[UUID, int]]) -> bytes:
    """The summaries of a batch's pension lines (participant id text, summary), and its
    one-off payments (participant id, amount), packed."""
    assert len(lines) + len(one_offs) <= MAX_LINES
    distinct: dict[tuple[str, ...], int] = {}
    index = array("q", [distinct.setdefault(s.rule_versions, len(distinct))
                        for _, s in lines])
    header = orjson.dumps({"version": FORMAT_VERSION, "count": len(lines),
                           "distinct": list(distinct),
                           "one_offs": [[str(pid), amount] for pid, amount in one_offs]})
    ids = "".join(pid for pid, _ in lines)
    if len(ids) != ID_CHARS * len(lines) or not ids.isascii():
        raise Malformed("a participant id is not a UUID's text")
    columns = [_little(array("q", [s[i] for _, s in lines]))
               for i in (LineSummary._fields.index(name) for name in INT_FIELDS)]
    return b"".join([len(header).to_bytes(_LENGTH_BYTES, "big"), header, ids.encode("ascii"),
                     *columns, _little(index)])


def unpack(blob: bytes) -> tuple[Iterator[tuple[str, LineSummary]], list[tuple[UUID, int]]]:
    """pack()'s summaries and one-offs. Raises Malformed if the blob is not pack()'s."""
    try:
        size = int.from_bytes(blob[:_LENGTH_BYTES], "big")
        if not 0 < size <= min(MAX_HEADER_BYTES, len(blob) - _LENGTH_BYTES):
            raise Malformed("no header")
        header = orjson.loads(blob[_LENGTH_BYTES:_LENGTH_BYTES + size])
        if header.get("version") != FORMAT_VERSION:
            raise Malformed(f"format version {header.get('version')!r}")
        count: int = header["count"]
        distinct = [tuple(versions) for versions in header["distinct"]]
        one_offs = [(UUID(pid), int(amount)) for pid, amount in header["one_offs"]]
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise Malformed(f"header: {e}") from None
    if not 0 <= count <= MAX_LINES:
        raise Malformed(f"{count} lines")
    at = _LENGTH_BYTES + size
    if len(blob) != at + ID_CHARS * count + 8 * count * (len(INT_FIELDS) + 1):
        raise Malformed(f"{len(blob)} bytes for {count} lines")
    ids = blob[at:at + ID_CHARS * count].decode("ascii", errors="replace")
    at += ID_CHARS * count
    ints = []
    for _ in range(len(INT_FIELDS) + 1):
        column = array("q")
        column.frombytes(blob[at:at + 8 * count])
        if sys.byteorder != "little":
            column.byteswap()
        ints.append(column)
        at += 8 * count
    *fields, index = ints
    if any(not 0 <= i < len(distinct) for i in index):
        raise Malformed("a rule-version index out of range")
    by_name = dict(zip(INT_FIELDS, fields, strict=True))
    made = map(LineSummary, by_name["amount_fen"], by_name["months"], by_name["basic_fen"],
               by_name["deduction_fen"], by_name["pooled_fen"], [distinct[i] for i in index],
               by_name["rerated_fen"])
    pids = [ids[i:i + ID_CHARS] for i in range(0, len(ids), ID_CHARS)]
    return zip(pids, made, strict=True), one_offs


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def keep(spool: Path | None, blob: bytes) -> bool:
    """Keep a drafted batch's packed summaries for next month's run. Whether they were kept:
    a full disk or an unwritable directory costs next month's run time, not this one."""
    if spool is None:
        return False
    folder = spool / SUBDIRECTORY
    try:
        folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        _prune(folder)
        # Not durable: summaries lost in a crash are read from the lines.
        write_atomic(folder / f"{sha256(blob)}.bin", blob, durable=False)
    except OSError:
        return False
    return True


def take(spool: Path | None, sha256_hex: str) -> bytes | None:
    """The summaries kept under `sha256_hex` (as a batch's comparison record says) if they
    hash to it, else None: the caller reads the lines."""
    if spool is None or not isinstance(sha256_hex, str) or not _HEX64.fullmatch(sha256_hex):
        return None
    path = spool / SUBDIRECTORY / f"{sha256_hex}.bin"
    try:
        if path.is_symlink():
            return None
        blob = path.read_bytes()
    except OSError:
        return None
    return blob if hmac.compare_digest(sha256(blob), sha256_hex) else None


def _prune(folder: Path) -> None:
    """Remove what is older than a next month's run needs."""
    oldest = time.time() - drafted_files.MAX_AGE_DAYS * 86_400
    for p in folder.iterdir():
        if (_KEPT_NAME.fullmatch(p.name) or p.name.endswith(".tmp")) and p.is_file() \
                and not p.is_symlink() and p.stat().st_mtime < oldest:
            p.unlink(missing_ok=True)


def _little(a: array) -> bytes:  # type: ignore[type-arg]
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()
