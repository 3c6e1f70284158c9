"""The files a draft made are kept for its export: the export takes them when they are
exactly the approved bytes, and otherwise makes them again from the stored lines, as it
always could. Kept 0700/0600 under the approved manifest's hash, removed once exported or
cancelled."""

from __future__ import annotations

import os
import stat
import time
from datetime import date
from pathlib import Path

import pytest

from ledger import disbursement
from ledger.aggregates.payout_batch import PayoutBatch
from ledger.application import Ledger
from ledger.errors import Refused
from payout_engine import drafted_files, export, run
from payout_engine.bankfiles import build_manifest, verify_manifest
from payout_engine.config import PayoutConfig, load_config
from tests.test_payout_support import APPROVER, FINANCE, OPERATOR, draft, transitional, treasury


@pytest.fixture
def config(tmp_path: Path) -> PayoutConfig:
    return PayoutConfig(drafted_files_dir=str(tmp_path / "drafted"))


@pytest.fixture
def two(sqlite_ledger: Ledger) -> Ledger:
    treasury(sqlite_ledger)
    for n in (1, 2):
        transitional(sqlite_ledger, n)
    return sqlite_ledger


def funded(ledger: Ledger, period: str, config: PayoutConfig) -> PayoutBatch:
    batch = draft(ledger, period, config=config)
    run.approve(ledger, batch.id, batch.manifest_sha256, APPROVER)
    run.fund(ledger, batch.id, value_date=date(2020, 4, 10), actor=FINANCE)
    return batch


def kept_dir(config: PayoutConfig, manifest_sha256: str) -> Path:
    spool = config.drafted_files()
    assert spool is not None
    return spool / manifest_sha256


def test_the_draft_keeps_its_files_and_the_export_takes_them(
        two: Ledger, config: PayoutConfig, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    batch = funded(two, "2020-04", config)
    kept = kept_dir(config, batch.manifest_sha256)
    names = sorted(p.name for p in kept.iterdir())
    taken = drafted_files.take(config.drafted_files(), batch.manifest_sha256)
    assert names and taken is not None
    assert build_manifest(taken[0]).hash == taken[1].hash == batch.manifest_sha256
    assert stat.S_IMODE(kept.stat().st_mode) == 0o700
    assert all(stat.S_IMODE((kept / n).stat().st_mode) == 0o600 for n in names)

    def not_again(*_: object, **__: object) -> None:
        raise AssertionError("the export made the files again")

    monkeypatch.setattr(export, "files_of", not_again)
    out = tmp_path / "out"
    result = export.export_batch(two, batch.id, out, file_format="pain001", actor=OPERATOR,
                                 config=config)
    assert result.recorded and sorted(result.files) == names
    verify_manifest(out, batch.manifest_sha256)
    assert not kept.exists()  # exported: not kept any longer
    assert disbursement.get_batch(two, batch.id).state == "exported"


@pytest.mark.parametrize("linkable", [True, False], ids=["linked", "another-file-system"])
def test_the_export_links_the_kept_files_rather_than_copy_them(
        two: Ledger, config: PayoutConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        linkable: bool) -> None:
    batch = funded(two, "2020-04", config)
    kept = kept_dir(config, batch.manifest_sha256)
    inodes = {p.name: p.stat().st_ino for p in kept.iterdir()}
    monkeypatch.setattr(drafted_files, "discard", lambda spool, sha: None)  # to compare
    if not linkable:
        def cross_device(*_: object, **__: object) -> None:
            raise OSError(18, "Invalid cross-device link")
        monkeypatch.setattr(os, "link", cross_device)
    out = tmp_path / "out"
    export.export_batch(two, batch.id, out, file_format="pain001", actor=OPERATOR,
                        config=config)
    verify_manifest(out, batch.manifest_sha256)
    for name, inode in inodes.items():
        written = (out / name).stat()
        assert (written.st_ino == inode) is linkable
        assert stat.S_IMODE(written.st_mode) == 0o600
        assert (out / name).read_bytes() == (kept / name).read_bytes()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_kept_files_with_other_bytes_are_made_again(
        two: Ledger, config: PayoutConfig, tmp_path: Path) -> None:
    batch = funded(two, "2020-04", config)
    kept = kept_dir(config, batch.manifest_sha256)
    victim = sorted(kept.iterdir())[0]
    victim.write_bytes(victim.read_bytes().replace(b"PENS", b"SALA"))
    assert drafted_files.take(config.drafted_files(), batch.manifest_sha256) is None
    out = tmp_path / "out"
    export.export_batch(two, batch.id, out, file_format="pain001", actor=OPERATOR,
                        config=config)
    verify_manifest(out, batch.manifest_sha256)
    assert b"PENS" in (out / victim.name).read_bytes()


def test_nothing_kept_when_switched_off_and_the_export_makes_the_files(
        two: Ledger, tmp_path: Path) -> None:
    off = load_config({"PAYOUT_DRAFTED_FILES_DIR": "off"})
    assert off.drafted_files() is None
    batch = funded(two, "2020-04", off)
    out = tmp_path / "out"
    export.export_batch(two, batch.id, out, file_format="pain001", actor=OPERATOR, config=off)
    verify_manifest(out, batch.manifest_sha256)


def test_a_directory_that_cannot_be_written_costs_the_export_time_not_the_draft(
        two: Ledger, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_bytes(b"")
    config = PayoutConfig(drafted_files_dir=str(blocked / "drafted"))
    batch = funded(two, "2020-04", config)
    assert not (blocked / "drafted").exists()
    out = tmp_path / "out"
    export.export_batch(two, batch.id, out, file_format="pain001", actor=OPERATOR,
                        config=config)
    verify_manifest(out, batch.manifest_sha256)


def test_changed_file_settings_refuse_the_export_even_with_the_drafted_bytes_kept(
        two: Ledger, config: PayoutConfig, tmp_path: Path) -> None:
    batch = funded(two, "2020-04", config)
    other = config.model_copy(update={"max_txs_per_file": 1})
    with pytest.raises(Refused, match="not those batch 2020-04/1 was drafted with"):
        export.export_batch(two, batch.id, tmp_path / "out", file_format="pain001",
                            actor=OPERATOR, config=other)
    assert not (tmp_path / "out").exists()
    assert kept_dir(config, batch.manifest_sha256).is_dir()


def test_a_cancelled_batch_leaves_nothing_kept(two: Ledger, config: PayoutConfig) -> None:
    batch = draft(two, "2020-04", config=config)
    assert kept_dir(config, batch.manifest_sha256).is_dir()
    run.cancel(two, batch.id, "the register changed", OPERATOR, config=config)
    assert not kept_dir(config, batch.manifest_sha256).exists()


def test_what_a_crash_or_an_abandoned_batch_left_is_removed_after_two_months(
        two: Ledger, config: PayoutConfig) -> None:
    spool = config.drafted_files()
    assert spool is not None
    old, half_written, recent = spool / ("a" * 64), spool / ".bbbbbbbbbbbb.x1", spool / ("c" * 64)
    for d in (old, half_written, recent):
        d.mkdir(parents=True)
        (d / "f.xml").write_bytes(b"<x/>")
    long_ago = time.time() - (drafted_files.MAX_AGE_DAYS + 1) * 86_400
    for d in (old, half_written):
        os.utime(d, (long_ago, long_ago))
    draft(two, "2020-04", config=config)
    assert not old.exists() and not half_written.exists() and recent.is_dir()


def test_a_draft_that_fails_leaves_no_files_kept(
        two: Ledger, config: PayoutConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The files are kept while the draft is stored; if it is not, they are removed."""
    def fails(*_: object, **__: object) -> None:
        raise RuntimeError("the store went away")

    kept: list[bool] = []
    keep = drafted_files.keep

    def keeping(*args: object) -> bool:
        kept.append(keep(*args))  # type: ignore[arg-type]
        return kept[-1]

    monkeypatch.setattr(disbursement, "draft", fails)
    monkeypatch.setattr(drafted_files, "keep", keeping)
    with pytest.raises(RuntimeError, match="went away"):
        draft(two, "2020-04", config=config)
    assert kept == [True]
    spool = config.drafted_files()
    assert spool is not None
    assert not [p for p in spool.iterdir() if len(p.name) == 64]
    assert run.batches_of(two, "2020-04") == []
