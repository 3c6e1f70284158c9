"""Bank files on disk: written atomically, mode 0600, with a SHA-256 manifest whose hash the
approver approves; a file whose bytes differ from the approved ones is refused by name.

The manifest hash is SHA-256 over the canonical JSON of the entries sorted by name:
    json.dumps([{"name": ..., "sha256": ..., "size": ...}, ...],
               sort_keys=True, separators=(",", ":"), ensure_ascii=True)
so an auditor can recompute it from the files alone.
"""

from __future__ import annotations

import glob
import hashlib
import hmac
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from payout_engine.bankfiles.model import BankFileError

MANIFEST_NAME = "manifest.json"
FILE_MODE = 0o600
DIR_MODE = 0o700
MAX_FILES = 10_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1024 * 1024


class ManifestError(BankFileError):
    """The export directory does not hold exactly the approved files."""

    def __init__(self, message: str, file_name: str | None = None) -> None:
        super().__init__(message)
        self.file_name = file_name


class NamedContent(Protocol):
    """A file not yet written: a BankFile, or drafted bytes kept for the export."""

    @property
    def name(self) -> str: ...

    @property
    def content(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    entries: tuple[ManifestEntry, ...]  # sorted by name

    @property
    def hash(self) -> str:
        return manifest_hash(self.entries)

    def to_json(self) -> bytes:
        body = {"version": 1, "manifest_sha256": self.hash,
                "files": [{"name": e.name, "size": e.size, "sha256": e.sha256}
                          for e in self.entries]}
        return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode("ascii")

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            body = json.loads(data)
            entries = [ManifestEntry(name=f["name"], size=f["size"], sha256=f["sha256"])
                       for f in body["files"]]
            stated = body["manifest_sha256"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"{MANIFEST_NAME} is not a manifest: {exc}",
                                MANIFEST_NAME) from None
        for e in entries:
            _check_entry(e)
        manifest = cls(_sorted(entries))
        if stated != manifest.hash:
            raise ManifestError(f"{MANIFEST_NAME} states hash {stated} but its entries hash to "
                                f"{manifest.hash}", MANIFEST_NAME)
        return manifest


def _check_entry(e: ManifestEntry) -> None:
    if not isinstance(e.name, str) or not _NAME.fullmatch(e.name) or e.name == MANIFEST_NAME:
        raise ManifestError(f"file name {e.name!r} is not a plain file name", str(e.name))
    if isinstance(e.size, bool) or not isinstance(e.size, int) or e.size < 0:
        raise ManifestError(f"{e.name}: size {e.size!r} is not a byte count", e.name)
    if not isinstance(e.sha256, str) or not _HEX64.fullmatch(e.sha256):
        raise ManifestError(f"{e.name}: {e.sha256!r} is not a SHA-256 hex digest", e.name)


def _sorted(entries: Iterable[ManifestEntry]) -> tuple[ManifestEntry, ...]:
    ordered = tuple(sorted(entries, key=lambda e: e.name))
    if len(ordered) > MAX_FILES:
        raise ManifestError(f"{len(ordered)} files is more than the limit of {MAX_FILES}")
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a.name == b.name:
            raise ManifestError(f"file name {a.name} appears twice", a.name)
    return ordered


def manifest_hash(entries: Iterable[ManifestEntry]) -> str:
    canonical = json.dumps([{"name": e.name, "sha256": e.sha256, "size": e.size}
                            for e in sorted(entries, key=lambda e: e.name)],
                           sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _check_approved(approved_hash: str) -> None:
    if not isinstance(approved_hash, str) or not _HEX64.fullmatch(approved_hash):
        raise ManifestError(f"approved hash {approved_hash!r} is not a SHA-256 hex digest")


def build_manifest(files: Iterable[NamedContent]) -> Manifest:
    """The manifest of files not yet written: its hash is what the approver approves."""
    entries = [ManifestEntry(f.name, len(f.content), hashlib.sha256(f.content).hexdigest())
               for f in files]
    for e in entries:
        _check_entry(e)
    return Manifest(_sorted(entries))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = FILE_MODE, *,
                 durable: bool = True) -> None:
    """Write `data` to `path` so a reader sees the old file or the whole new one, never half:
    a temporary file in the same directory, fsync, rename, fsync the directory. Not
    durable: no fsync (a copy that a crash may lose, and that is made again)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")

    def written() -> None:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())

    _put_in_place(Path(tmp), path, written, durable=durable)


def link_atomic(path: Path, source: Path) -> bool:
    """write_atomic of a file already on disk, as a second name of it (no copy of its
    bytes): a temporary link in the same directory, fsync, rename, fsync the directory.
    False, nothing done, where the two cannot share the file (another file system)."""
    tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
    try:
        os.link(source, tmp, follow_symlinks=False)
    except OSError:
        return False

    def synced() -> None:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fchmod(fd, FILE_MODE)
            os.fsync(fd)
        finally:
            os.close(fd)

    _put_in_place(tmp, path, synced)
    return True


def _put_in_place(tmp: Path, path: Path, ready: Callable[[], None], *,
                  durable: bool = True) -> None:
    """ready() the temporary file, rename it to `path` and (durable) fsync the directory;
    the temporary file is removed if any of it fails."""
    try:
        ready()
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(path.parent)


def _sha256_of(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def export_files(out_dir: Path, files: Iterable[NamedContent], approved_hash: str, *,
                 manifest: Manifest | None = None) -> Manifest:
    """Write the approved files and their manifest into `out_dir`, then verify them on disk.

    Refused before a byte is written when these files are not the approved ones. Running it
    again after a crash rewrites nothing that is already there and right; a file already there
    with other bytes is refused by name rather than overwritten."""
    _check_approved(approved_hash)
    chosen = list(files)
    # `manifest`: the caller's build_manifest of these very files (a million payments'
    # files are hashed once, not again here); what is written is verified on disk below.
    manifest = manifest or build_manifest(chosen)
    if not hmac.compare_digest(manifest.hash, approved_hash):
        raise ManifestError(f"these files hash to {manifest.hash}, not the approved "
                            f"{approved_hash}: nothing written")
    out_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _clear_temporaries(out_dir, [f.name for f in chosen] + [MANIFEST_NAME])
    for f, entry in zip(sorted(chosen, key=lambda f: f.name), manifest.entries, strict=True):
        path = out_dir / f.name
        if path.is_symlink():
            raise ManifestError(f"{f.name} in {out_dir} is a symbolic link", f.name)
        if path.exists():
            if _sha256_of(path) != (entry.size, entry.sha256):
                raise ManifestError(f"{f.name} is already in {out_dir} with other bytes; "
                                    "refusing to overwrite it", f.name)
            os.chmod(path, FILE_MODE)
            continue
        # Drafted bytes kept on disk (payout_engine.drafted_files) are linked, not copied:
        # the same bytes, checked on disk below like any.
        kept_at = getattr(f, "kept_at", None)
        if kept_at is None or not link_atomic(path, kept_at):
            write_atomic(path, f.content)
    write_atomic(out_dir / MANIFEST_NAME, manifest.to_json())
    return verify_manifest(out_dir, approved_hash)


def _clear_temporaries(out_dir: Path, names: list[str]) -> None:
    """The temporaries write_atomic leaves when a write of one of these files is killed
    (`.NAME.XXXX.tmp`): never sent, and not to be left for whoever collects the files."""
    for name in names:
        for leftover in out_dir.glob(f".{glob.escape(name)}.*.tmp"):
            if leftover.is_file() and not leftover.is_symlink():
                leftover.unlink()


def verify_manifest(out_dir: Path, approved_hash: str) -> Manifest:
    """Refuse, naming the file, unless `out_dir` holds exactly the approved files: the
    manifest's hash is the approved one, every listed file is there, a regular file of mode
    0600 with the listed size and SHA-256, and no other file is beside them."""
    _check_approved(approved_hash)
    manifest_path = out_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ManifestError(f"{manifest_path} is missing", MANIFEST_NAME)
    manifest = Manifest.from_json(manifest_path.read_bytes())
    if not hmac.compare_digest(manifest.hash, approved_hash):
        raise ManifestError(f"{MANIFEST_NAME} hashes to {manifest.hash}, not the approved "
                            f"{approved_hash}", MANIFEST_NAME)
    for e in manifest.entries:
        path = out_dir / e.name
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            raise ManifestError(f"{e.name} is listed in the manifest but missing",
                                e.name) from None
        if not stat.S_ISREG(info.st_mode):
            raise ManifestError(f"{e.name} is not a regular file", e.name)
        if info.st_mode & 0o077:
            raise ManifestError(f"{e.name} has mode {stat.S_IMODE(info.st_mode):o}, "
                                f"expected {FILE_MODE:o}", e.name)
        size, digest = _sha256_of(path)
        if (size, digest) != (e.size, e.sha256):
            raise ManifestError(f"{e.name} has SHA-256 {digest} ({size} bytes), the approved "
                                f"file has {e.sha256} ({e.size} bytes)", e.name)
    listed = {e.name for e in manifest.entries} | {MANIFEST_NAME}
    # Dot files are the temporaries of an interrupted write: never sent, so not refused.
    stray = sorted(p.name for p in out_dir.iterdir()
                   if p.name not in listed and not p.name.startswith("."))
    if stray:
        raise ManifestError(f"{stray[0]} is in {out_dir} but not in the approved manifest",
                            stray[0])
    return manifest
