"""Bank files on disk: atomic, mode 0600, and refused by name when they are not the files
whose manifest hash was approved."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from payout_engine.bankfiles import (
    BankFile,
    BatchHeader,
    Debtor,
    ManifestError,
    PaymentInstruction,
    build_manifest,
    export_files,
    verify_manifest,
    write_domestic,
    write_pain001,
)
from payout_engine.bankfiles.manifest import MANIFEST_NAME, write_atomic

HEADER = BatchHeader("PO-202611-01", "B202611-01",
                     datetime(2026, 11, 16, 9, 0, tzinfo=timezone(timedelta(hours=8))),
                     date(2026, 11, 18), payout_month="2026-11")
FUND = Debtor("基金支出户", "1000000001", bank_code="102100099996")


def files() -> list[BankFile]:
    payments = [PaymentInstruction(f"PAY-{n:04d}", "2026-11", "张三", f"6222{n:012d}",
                                   "102100099996", 10_000 + n, "11010119500101002X")
                for n in range(7)]
    return write_pain001(HEADER, FUND, payments, max_txs_per_file=3)


def exported(tmp_path: Path) -> tuple[Path, str, list[BankFile]]:
    chosen = files()
    approved = build_manifest(chosen).hash
    out = tmp_path / "export"
    export_files(out, chosen, approved)
    return out, approved, chosen


def test_export_writes_the_approved_files_mode_0600_with_their_manifest(
        tmp_path: Path) -> None:
    out, approved, chosen = exported(tmp_path)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f.name for f in chosen] + [MANIFEST_NAME])
    for f in chosen:
        assert (out / f.name).read_bytes() == f.content
        assert stat.S_IMODE((out / f.name).stat().st_mode) == 0o600
    assert stat.S_IMODE((out / MANIFEST_NAME).stat().st_mode) == 0o600
    assert verify_manifest(out, approved).hash == approved


def test_the_manifest_hash_can_be_recomputed_from_the_files_alone(tmp_path: Path) -> None:
    out, approved, chosen = exported(tmp_path)
    entries = sorted(({"name": f.name, "size": len((out / f.name).read_bytes()),
                       "sha256": hashlib.sha256((out / f.name).read_bytes()).hexdigest()}
                      for f in chosen), key=lambda e: str(e["name"]))
    canonical = json.dumps(entries, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert hashlib.sha256(canonical.encode()).hexdigest() == approved
    assert json.loads((out / MANIFEST_NAME).read_bytes())["manifest_sha256"] == approved


def test_a_tampered_file_is_refused_by_name(tmp_path: Path) -> None:
    out, approved, chosen = exported(tmp_path)
    target = out / chosen[1].name
    data = bytearray(target.read_bytes())
    data[data.index(b"<InstdAmt")+20] ^= 1  # one bit of one amount
    target.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=f"{chosen[1].name} has SHA-256") as caught:
        verify_manifest(out, approved)
    assert caught.value.file_name == chosen[1].name


def test_a_missing_extra_or_readable_file_is_refused_by_name(tmp_path: Path) -> None:
    out, approved, chosen = exported(tmp_path)
    (out / "extra.xml").write_bytes(b"<x/>")
    with pytest.raises(ManifestError, match="extra.xml is in .* not in the approved manifest"):
        verify_manifest(out, approved)
    (out / "extra.xml").unlink()
    os.chmod(out / chosen[0].name, 0o644)
    with pytest.raises(ManifestError, match=f"{chosen[0].name} has mode 644"):
        verify_manifest(out, approved)
    (out / chosen[0].name).unlink()
    with pytest.raises(ManifestError, match=f"{chosen[0].name} is listed .* but missing"):
        verify_manifest(out, approved)


def test_files_other_than_the_approved_ones_are_not_written_at_all(tmp_path: Path) -> None:
    chosen = files()
    approved = build_manifest(chosen).hash
    domestic = write_domestic(HEADER, FUND, [PaymentInstruction(
        "PAY-0001", "2026-11", "张三", "6222000000000001", "102100099996", 1,
        "11010119500101002X")])
    out = tmp_path / "export"
    with pytest.raises(ManifestError, match="not the approved .* nothing written"):
        export_files(out, domestic, approved)
    assert not out.exists()
    with pytest.raises(ManifestError, match="not a SHA-256 hex digest"):
        export_files(out, chosen, "approved")


def test_a_manifest_that_is_not_the_approved_one_is_refused(tmp_path: Path) -> None:
    out, approved, _ = exported(tmp_path)
    other = "0" * 64
    with pytest.raises(ManifestError, match=f"manifest.json hashes to {approved}, not the "
                                            f"approved {other}"):
        verify_manifest(out, other)
    body = json.loads((out / MANIFEST_NAME).read_bytes())
    body["files"][0]["size"] += 1
    (out / MANIFEST_NAME).write_text(json.dumps(body))
    with pytest.raises(ManifestError, match="states hash .* but its entries hash to"):
        verify_manifest(out, approved)


def test_export_again_after_a_crash_rewrites_nothing_and_refuses_a_changed_file(
        tmp_path: Path) -> None:
    out, approved, chosen = exported(tmp_path)
    (out / MANIFEST_NAME).unlink()  # as if killed before the manifest was written
    (out / f".{chosen[0].name}.abc.tmp").write_bytes(b"half")  # an interrupted temporary
    before = (out / chosen[0].name).stat().st_mtime_ns
    (out / ".someone-elses.tmp").write_bytes(b"not ours")  # left alone
    assert export_files(out, chosen, approved).hash == approved
    assert (out / chosen[0].name).stat().st_mtime_ns == before
    # The interrupted write's temporary is cleared; nothing else but the files is touched.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".someone-elses.tmp", MANIFEST_NAME, *(f.name for f in chosen)])
    (out / chosen[2].name).write_bytes(b"something else")
    with pytest.raises(ManifestError, match=f"{chosen[2].name} is already in .* other bytes"):
        export_files(out, chosen, approved)


def test_an_atomic_write_leaves_no_temporary_behind(tmp_path: Path) -> None:
    target = tmp_path / "a.xml"
    write_atomic(target, b"first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert [p.name for p in tmp_path.iterdir()] == ["a.xml"]
    assert target.read_bytes() == b"second"
