"""The bank files a draft made, kept on disk until the batch is exported.

The draft makes every file to hash it (the manifest hash the approver approves). Making
them again at export means reading a million lines back and writing the files again; the
export instead takes the drafted bytes from here, if they hash to the approved manifest.
Anything wrong here (missing, other bytes, unreadable) only means the export makes the
files again from the stored lines, as it always could: what is kept is a copy, never the
record.

Kept under the approved manifest's hash, so two ledgers (or two batches) can never take
each other's files: the directory's name is the hash its files must make. The directory is
0700 and each file 0600 (the files name pensioners and their accounts); the files are
removed once the export is recorded or the batch cancelled, and anything older than
MAX_AGE_DAYS is removed when a new draft is kept.
"""

from __future__ import annotations

import hmac
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from payout_engine.bankfiles.manifest import (
    DIR_MODE,
    FILE_MODE,
    MAX_FILES,
    Manifest,
    NamedContent,
    build_manifest,
)

MAX_AGE_DAYS = 62            # two months: a batch is exported within days of its draft
MAX_KEPT_BYTES = 8 * 1024**3  # one batch's files; past this the export makes them again
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEPT = re.compile(r"\.?[0-9a-f]{12}")  # a kept directory, or one being written


@dataclass(frozen=True, slots=True)
class DraftedFile:
    """A file as kept: its name and bytes (what the manifest and the export need), and where
    it is kept (the export links it rather than write its bytes again)."""

    name: str
    content: bytes
    kept_at: Path | None = None


def keep(spool: Path | None, manifest_sha256: str, files: Iterable[NamedContent]) -> bool:
    """Keep the drafted files under their manifest hash. Whether they were kept: a full
    disk or an unwritable directory costs the export time, not the draft."""
    if spool is None:
        return False
    chosen = list(files)
    assert _HEX64.fullmatch(manifest_sha256) and 0 < len(chosen) <= MAX_FILES
    if sum(len(f.content) for f in chosen) > MAX_KEPT_BYTES:
        return False
    final = spool / manifest_sha256
    if final.is_dir():
        return True
    try:
        spool.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        _prune(spool)
        work = Path(tempfile.mkdtemp(dir=spool, prefix=f".{manifest_sha256[:12]}."))
        for f in chosen:
            # No fsync: a file lost in a crash is made again by the export.
            fd = os.open(work / f.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            with os.fdopen(fd, "wb") as out:
                out.write(f.content)
        try:
            os.rename(work, final)  # whole or not at all
        except OSError:
            shutil.rmtree(work, ignore_errors=True)  # another run kept the same files first
            return final.is_dir()
    except OSError:
        return False
    return True


def take(spool: Path | None, manifest_sha256: str
         ) -> tuple[list[DraftedFile], Manifest] | None:
    """The kept files and their manifest, if they are exactly the approved ones (by the
    manifest's hash over their bytes); None otherwise, and the export makes them again."""
    if spool is None or not _HEX64.fullmatch(manifest_sha256):
        return None
    kept = spool / manifest_sha256
    try:
        paths = sorted(p for p in kept.iterdir() if not p.name.startswith("."))
        if not paths or len(paths) > MAX_FILES:
            return None
        files = []
        for p in paths:
            if p.is_symlink() or not p.is_file():
                return None
            files.append(DraftedFile(p.name, p.read_bytes(), p))
    except OSError:
        return None
    manifest = build_manifest(files)
    if not hmac.compare_digest(manifest.hash, manifest_sha256):
        return None
    return files, manifest


def discard(spool: Path | None, manifest_sha256: str) -> None:
    """Remove the kept files of a batch exported or cancelled."""
    if spool is None or not _HEX64.fullmatch(manifest_sha256):
        return
    shutil.rmtree(spool / manifest_sha256, ignore_errors=True)


def _prune(spool: Path) -> None:
    """Remove what a crash or an abandoned batch left behind."""
    oldest = time.time() - MAX_AGE_DAYS * 86_400
    for p in spool.iterdir():
        if _KEPT.match(p.name) and p.is_dir() and not p.is_symlink() \
                and p.stat().st_mtime < oldest:
            shutil.rmtree(p, ignore_errors=True)
