"""Tests of the export folder: decisions, provenance, crash safety, refusals, nnU-Net export."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_synthgen import __version__, curation
from napari_synthgen.curation import (
    DiskFullError,
    ExportError,
    ExportSession,
    Worded,
    export_nnunet,
    install_splits,
    reword,
)
from napari_synthgen.io import (
    read_array,
    read_image,
    read_mask,
    sha256_array,
    sha256_file,
    write_image,
    write_mask,
)
from napari_synthgen.quality import basic_figures

SRC = Path(__file__).resolve().parents[1] / "src"


# ------------------------------------------------------------------------------ helpers


def make_mask(shape: tuple[int, int] = (32, 32), seed: int = 0) -> np.ndarray:
    """A small 3-class mask: a square cell with a boundary, offset by ``seed``."""
    m = np.zeros(shape, np.uint8)
    o = seed % 5
    m[4 + o : 24 + o, 4:24] = 2
    m[5 + o : 23 + o, 5:23] = 1
    return m


def make_image(seed: int, shape: tuple[int, int] = (32, 32), dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)


def files_in(folder: Path) -> list[str]:
    """Every file under ``folder`` (hidden ones too), relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def manifest_lines(folder: Path) -> list[dict]:
    text = (folder / "manifest.jsonl").read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def number(sample_id: str) -> int:
    return int(sample_id.removeprefix("syn_"))


@pytest.fixture
def export(tmp_path: Path) -> Path:
    return tmp_path / "export"


# ------------------------------------------------------------------ accept / reject / undo


def test_new_export_has_layout_and_marker(export: Path) -> None:
    with ExportSession(export) as s:
        assert s.folder == export.absolute()
        assert s.counts() == {"accepted": 0, "rejected": 0}
        assert s.warnings == [] and s.orphans == [] and s.records == []
    for sub in ("images", "masks", "trash"):
        assert (export / sub).is_dir()
    assert (export / "manifest.jsonl").read_bytes() == b""
    marker = json.loads((export / "synthgen_export.json").read_text())
    assert marker["format"] == "napari-synthgen-export"
    assert marker["format_version"] == 1
    assert marker["plugin_version"] == __version__
    assert marker["created"].endswith("+00:00")


def test_accept_writes_files_hashes_provenance_and_quality(export: Path) -> None:
    image, mask = make_image(1), make_mask()
    with ExportSession(export) as s:
        rec = s.accept(
            image,
            mask,
            provenance={
                "source_mask": "painted mask",
                "model": Path("/models/em.safetensors"),
                "model_sha256": "ab" * 32,
                "family": "pix2pix",
                "architecture": "unet256",
                "seed": np.int64(7),
                "params": {"temperature": np.float32(0.5), "crop": (32, 32), "w": np.arange(3)},
            },
        )
    assert rec["id"] == "syn_000001"
    assert rec["decision"] == "accept"
    assert rec["files"] == {"image": "images/syn_000001.tif", "mask": "masks/syn_000001.tif"}
    for kind, arr in (("image", image), ("mask", mask)):
        path = export / rec["files"][kind]
        assert sha256_file(path) == rec["sha256"][kind]
        back = read_array(path)
        assert back.dtype == arr.dtype and np.array_equal(back, arr)
    assert rec["shape"] == [32, 32] and rec["dtype"] == "uint8"
    assert rec["quality"] == pytest.approx(basic_figures(image, mask))
    assert rec["synthetic"] is True and rec["plugin_version"] == __version__
    assert rec["provenance"] == {
        "source_mask": "painted mask",
        "model": "/models/em.safetensors",
        "model_sha256": "ab" * 32,
        "family": "pix2pix",
        "architecture": "unet256",
        "seed": 7,
        "params": {"temperature": 0.5, "crop": [32, 32], "w": [0, 1, 2]},
        "source_mask_sha256": sha256_array(mask),
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", rec["time"])
    assert manifest_lines(export) == [rec]


def test_caller_quality_synthetic_and_mask_hash_are_kept(export: Path) -> None:
    with ExportSession(export) as s:
        rec = s.accept(
            make_image(2, dtype=np.uint16),
            make_mask().astype(np.int64),  # any integer mask with classes 0..2
            quality={"sharpness": np.float64(1.5)},
            synthetic=False,
            provenance={"source_mask_sha256": "given"},
        )
    assert rec["quality"] == {"sharpness": 1.5}
    assert rec["synthetic"] is False
    assert rec["provenance"]["source_mask_sha256"] == "given"
    assert rec["dtype"] == "uint16"
    assert read_array(export / rec["files"]["image"]).dtype == np.uint16
    assert read_array(export / rec["files"]["mask"]).dtype == np.uint8


def test_reject_records_hashes_and_figures_but_no_files(export: Path) -> None:
    image, mask = make_image(3), make_mask()
    with ExportSession(export) as s:
        first = s.accept(make_image(4), mask)
        rec = s.reject(image, mask, provenance={"model": "m.safetensors", "seed": 3})
        bare = s.reject()
        assert s.counts() == {"accepted": 1, "rejected": 2}
        assert s.rejected == [rec["id"], bare["id"]]
    assert (first["id"], rec["id"], bare["id"]) == ("syn_000001", "syn_000002", "syn_000003")
    assert rec["decision"] == "reject" and "files" not in rec
    assert rec["sha256"] == {"image": sha256_array(image), "mask": sha256_array(mask)}
    assert rec["quality"] == pytest.approx(basic_figures(image, mask))
    assert rec["provenance"]["model"] == "m.safetensors"
    assert bare["provenance"] == {} and "sha256" not in bare
    assert files_in(export / "images") == ["syn_000001.tif"]
    assert manifest_lines(export)[1:] == [rec, bare]


def test_undo_moves_files_to_trash_and_is_recorded(export: Path) -> None:
    with ExportSession(export) as s:
        a = s.accept(make_image(1), make_mask())
        b = s.accept(make_image(2), make_mask(seed=1))
        r = s.reject(make_image(3), make_mask())
        assert s.undo()["target"] == r["id"]  # newest first, rejects too
        undo = s.undo()
        assert s.accepted == [a["id"]] and s.rejected == []
        assert s.counts() == {"accepted": 1, "rejected": 0}
        c = s.accept(make_image(4), make_mask())
    assert undo["decision"] == "undo" and undo["target"] == b["id"] == "syn_000002"
    assert undo["target_decision"] == "accept" and "id" not in undo
    assert undo["files"] == {
        "image": "trash/images/syn_000002.tif",
        "mask": "trash/masks/syn_000002.tif",
    }
    for kind in ("image", "mask"):
        assert not (export / b["files"][kind]).exists()
        assert sha256_file(export / undo["files"][kind]) == b["sha256"][kind]
    assert c["id"] == "syn_000004"  # never reuses an undone id
    assert [r.get("decision") for r in manifest_lines(export)] == [
        "accept", "accept", "reject", "undo", "undo", "accept",
    ]


def test_undo_with_nothing_to_undo_returns_none(export: Path) -> None:
    with ExportSession(export) as s:
        assert s.undo() is None and not s.can_undo
        s.accept(make_image(1), make_mask())
        assert s.can_undo
        assert s.undo() is not None
        assert s.undo() is None and not s.can_undo
    assert files_in(export / "images") == []


def test_reopen_resumes_counts_numbering_and_undo(export: Path) -> None:
    with ExportSession(export) as s:
        a = s.accept(make_image(1), make_mask())
        b = s.accept(make_image(2), make_mask())
        s.reject(make_image(3), make_mask())
    with ExportSession(export) as s:
        assert s.counts() == {"accepted": 2, "rejected": 1}
        assert s.accepted == [a["id"], b["id"]] and len(s.records) == 3
        assert s.warnings == []
        assert s.undo()["target"] == "syn_000003"
        assert s.undo()["target"] == b["id"]
        assert s.accept(make_image(4), make_mask())["id"] == "syn_000004"
    with ExportSession(export) as s:
        assert s.accepted == [a["id"], "syn_000004"] and s.rejected == []
        assert s.undo()["target"] == "syn_000004"
        assert s.undo()["target"] == a["id"]  # skips what earlier sessions undid
        assert s.undo() is None
        assert s.reject()["id"] == "syn_000005"
        assert s.verify() == [] and s.warnings == []
    ids = [r["id"] for r in manifest_lines(export) if "id" in r]
    assert len(ids) == len(set(ids))
    assert sorted(files_in(export / "trash")) == [
        "images/syn_000001.tif", "images/syn_000002.tif", "images/syn_000004.tif",
        "masks/syn_000001.tif", "masks/syn_000002.tif", "masks/syn_000004.tif",
    ]


def test_numbering_skips_orphans_and_trash_and_never_overwrites(export: Path) -> None:
    with ExportSession(export) as s:
        s.accept(make_image(1), make_mask())
    orphan = export / "images" / "syn_000010.tif"
    write_image(orphan, make_image(99))
    write_image(export / "trash" / "masks" / "syn_000012.tif", make_image(98))
    before = sha256_file(orphan)
    with ExportSession(export) as s:
        assert s.orphans == [orphan.absolute()]
        assert any("no manifest record" in w and "syn_000010" in w for w in s.warnings)
        assert s.accept(make_image(2), make_mask())["id"] == "syn_000013"
        assert "orphans 1" in s.summary()
    assert sha256_file(orphan) == before


def test_summary_and_repr(export: Path) -> None:
    with ExportSession(export) as s:
        s.accept(make_image(1), make_mask())
        s.reject()
        text = s.summary()
        assert str(export.absolute()) in text and "accepted 1, rejected 1" in text
        assert "next id syn_000003" in text and "accepted=1" in repr(s)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(["accept", "reject", "undo", "reopen"]), max_size=10))
def test_random_sessions_match_a_model(ops: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "export"
        s = ExportSession(folder)
        decisions: list[tuple[str, str]] = []  # (id, decision), undone removed
        issued: list[str] = []
        for i, op in enumerate(ops):
            if op == "reopen":
                s.close()
                s = ExportSession(folder)
            elif op == "undo":
                rec = s.undo()
                assert (rec is None) == (not decisions)
                if rec:
                    assert rec["target"] == decisions.pop()[0]
            else:
                rec = getattr(s, op)(make_image(i, (8, 8)), make_mask((8, 8)))
                issued.append(rec["id"])
                decisions.append((rec["id"], op))
            assert s.accepted == [d for d, kind in decisions if kind == "accept"]
            assert s.rejected == [d for d, kind in decisions if kind == "reject"]
        s.close()
        assert [number(i) for i in issued] == sorted({number(i) for i in issued})
        assert files_in(folder / "images") == [f"{d}.tif" for d in s.accepted]


# ------------------------------------------------------------------------------ crash safety

CHILD = r"""
import sys
import numpy as np
from napari_synthgen.curation import ExportSession

session = ExportSession(sys.argv[1])
rng = np.random.default_rng(int(sys.argv[2]))
mask = np.zeros((128, 128), np.uint8)
mask[10:100, 10:100] = 2
mask[11:99, 11:99] = 1
while True:
    image = rng.integers(0, 65535, (128, 128), dtype=np.uint16)
    prov = {"source_mask": "child", "seed": int(rng.integers(1 << 30))}
    record = session.accept(image, mask, provenance=prov)
    print(record["id"], flush=True)
"""


def run_and_kill(folder: Path, n_ids: int, seed: int) -> list[str]:
    """Run a child that accepts in a loop; SIGKILL it once it has reported ``n_ids`` ids."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder), str(seed)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    printed: list[str] = []
    try:
        while len(printed) < n_ids:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"the writer died early: {proc.stderr.read()}")
            printed.append(line.strip())
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    # ids printed after the last line read are reported too: a whole line is a report
    printed += [ln.strip() for ln in rest.splitlines(keepends=True) if ln.endswith("\n")]
    assert all(re.fullmatch(r"syn_\d{6}", i) for i in printed)
    return printed


def check_after_crash(folder: Path, printed: list[str]) -> None:
    """Every reported id is complete; nothing half-written; new ids overwrite nothing."""
    lines = manifest_lines(folder)  # parses: no partial line left
    with ExportSession(folder) as s:
        assert set(printed) <= set(s.accepted)
        assert s.verify() == []
        for rec in s.records:
            if rec["id"] in printed:
                assert (folder / rec["files"]["image"]).is_file()
        for sub in ("images", "masks"):
            for p in (folder / sub).iterdir():
                assert not p.name.startswith("."), f"leftover temporary file {p}"
                assert read_array(p).shape == (128, 128)  # readable, whole
        orphans = {p: sha256_file(p) for p in s.orphans}
        seen = [*s.accepted, *(p.stem for p in orphans), *(r["id"] for r in lines)]
        rec = s.accept(make_image(0, (128, 128)), make_mask((128, 128)))
        assert number(rec["id"]) > max(number(i) for i in seen)
        assert all(sha256_file(p) == h for p, h in orphans.items())
        ids = [r["id"] for r in s.records if "id" in r]
        assert len(ids) == len(set(ids))


def test_sigkilled_writer_loses_no_reported_sample(export: Path) -> None:
    ExportSession(export).close()
    printed_all: list[str] = []
    for seed, n_ids in enumerate((1, 3, 7)):
        printed = run_and_kill(export, n_ids, seed)
        printed_all += printed
        check_after_crash(export, printed_all)
    assert len(printed_all) == len(set(printed_all))


def test_partial_final_manifest_line_is_cut_and_kept(export: Path) -> None:
    with ExportSession(export) as s:
        s.accept(make_image(1), make_mask())
        s.accept(make_image(2), make_mask())
    good = (export / "manifest.jsonl").read_bytes()
    garbage = b'{"id": "syn_000003", "decision": "acc'
    with open(export / "manifest.jsonl", "ab") as fh:
        fh.write(garbage)
    with ExportSession(export) as s:
        assert any("damaged" in w for w in s.warnings)
        assert s.n_accepted == 2
        damaged = list(export.glob("manifest.jsonl.damaged-*"))
        assert len(damaged) == 1 and damaged[0].read_bytes() == garbage
        assert (export / "manifest.jsonl").read_bytes() == good
        # the damaged line named syn_000003: that id is not handed out again
        assert s.accept(make_image(3), make_mask())["id"] == "syn_000004"
    assert len(manifest_lines(export)) == 3


def test_unparsable_final_line_with_newline_is_cut_too(export: Path) -> None:
    with ExportSession(export) as s:
        s.reject()
    with open(export / "manifest.jsonl", "ab") as fh:
        fh.write(b"\x00\x00\x00 not json\n")
    with ExportSession(export) as s:
        assert s.n_rejected == 1 and any("damaged" in w for w in s.warnings)
        assert s.reject()["id"] == "syn_000002"
    assert len(manifest_lines(export)) == 2


def test_interrupted_undo_is_finished_on_reopen(export: Path) -> None:
    with ExportSession(export) as s:
        rec = s.accept(make_image(1), make_mask())
    undo = {"decision": "undo", "target": rec["id"], "target_decision": "accept",
            "time": rec["time"], "files": {}}
    with open(export / "manifest.jsonl", "a") as fh:  # crash after the record, before the move
        fh.write(json.dumps(undo) + "\n")
    with ExportSession(export) as s:
        assert s.accepted == [] and s.orphans == []
        assert any("finished moving" in w for w in s.warnings)
    assert files_in(export / "images") == []
    assert files_in(export / "trash") == ["images/syn_000001.tif", "masks/syn_000001.tif"]


def test_files_moved_to_trash_without_record_are_restored(export: Path) -> None:
    with ExportSession(export) as s:
        rec = s.accept(make_image(1), make_mask())
    (export / "trash" / "images").mkdir()
    os.rename(export / rec["files"]["image"], export / "trash" / rec["files"]["image"])
    with ExportSession(export) as s:
        assert s.accepted == [rec["id"]] and s.verify() == []
        assert any("restored" in w for w in s.warnings)


def test_missing_files_are_reported(export: Path) -> None:
    with ExportSession(export) as s:
        rec = s.accept(make_image(1), make_mask())
    (export / rec["files"]["mask"]).unlink()
    with ExportSession(export) as s:
        assert any("masks/syn_000001.tif is missing" in w for w in s.warnings)
        assert s.verify() == ["syn_000001: masks/syn_000001.tif is missing."]


# ------------------------------------------------------------------------------ refusals


def test_unwritable_folder_is_refused_up_front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "readonly"
    folder.mkdir()
    real_open = os.open

    def deny_create(path, flags, *args, **kwargs):
        # what the kernel does for a non-root user in a 0o555 folder (root bypasses chmod)
        if Path(path).parent == folder and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    folder.chmod(0o555)
    monkeypatch.setattr(os, "open", deny_create)
    try:
        with pytest.raises(ExportError, match=r"is not writable .*Permission denied"):
            ExportSession(folder)
    finally:
        monkeypatch.undo()
        folder.chmod(0o755)
    assert list(folder.iterdir()) == []


def test_foreign_folder_is_refused_and_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "thesis"
    (folder / "figures").mkdir(parents=True)
    (folder / "chapter1.docx").write_text("x")
    (folder / ".DS_Store").write_text("x")
    before = files_in(folder)
    with pytest.raises(ExportError) as err:
        ExportSession(folder)
    msg = str(err.value)
    assert "holds files that are not a napari-synthgen export" in msg
    assert "chapter1.docx" in msg and "figures/" in msg
    assert "choose an empty folder or an existing export" in msg
    assert files_in(folder) == before and not (folder / ".lock").exists()


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        ExportSession(tmp_path / "f")


def test_marker_of_a_newer_format_is_refused(export: Path) -> None:
    ExportSession(export).close()
    marker = export / "synthgen_export.json"
    marker.write_text(json.dumps({"format": "napari-synthgen-export", "format_version": 99}))
    with pytest.raises(ExportError, match="newer napari-synthgen"):
        ExportSession(export)


def test_second_session_is_refused_while_the_first_is_open(export: Path) -> None:
    first = ExportSession(export)
    with pytest.raises(ExportError, match=rf"open in another session \(pid {os.getpid()}\)"):
        ExportSession(export)
    first.accept(make_image(1), make_mask())  # the first session is unaffected
    first.close()
    with pytest.raises(ExportError, match="closed"):
        first.accept(make_image(1), make_mask())
    with ExportSession(export) as second:
        assert second.n_accepted == 1


def snapshot(folder: Path) -> tuple[list[str], bytes]:
    return files_in(folder), (folder / "manifest.jsonl").read_bytes()


@pytest.mark.parametrize(
    ("image", "mask", "message"),
    [
        (make_image(1, (32, 40)), make_mask(), r"image shape \(32, 40\) and mask shape \(32, 32\)"),
        (make_image(1), make_mask() * 2, "invalid mask: mask has value 4"),
        (make_image(1), make_mask().astype(bool), "invalid mask: mask is boolean"),
        (np.zeros((2, 2, 32, 32), np.uint8), make_mask(), r"2-D \(H, W\) array or a \(Z, Y, X\)"),
        (np.zeros((2, 32, 32), np.uint8), make_mask(), r"image shape \(2, 32, 32\) and mask"),
        (np.full((32, 32), np.nan, np.float32), make_mask(), "NaN"),
        (make_image(1) > 9, make_mask(), "dtype bool"),
    ],
)
def test_invalid_samples_are_refused_before_writing(
    export: Path, image: np.ndarray, mask: np.ndarray, message: str
) -> None:
    with ExportSession(export) as s:
        s.accept(make_image(0), make_mask())
        before = snapshot(export)
        with pytest.raises(ExportError, match=message):
            s.accept(image, mask)
        with pytest.raises(ExportError, match=message):
            s.reject(image, mask)
        assert snapshot(export) == before
        assert s.accept(make_image(2), make_mask())["id"] == "syn_000002"


def test_unserialisable_provenance_is_refused_before_writing(export: Path) -> None:
    with ExportSession(export) as s:
        before = snapshot(export)
        with pytest.raises(ExportError, match=r"provenance 'model'\['net'\]: a object"):
            s.accept(make_image(1), make_mask(), provenance={"model": {"net": object()}})
        with pytest.raises(ExportError, match="provenance 'blob'"):
            s.reject(provenance={"blob": b"bytes"})
        assert snapshot(export) == before
        rec = s.reject(provenance={"big": np.zeros((100, 100)), "when": float("nan"),
                                   "tags": {"b", "a"}})
    assert rec["provenance"]["big"]["shape"] == [100, 100]
    assert rec["provenance"]["when"] == "nan" and rec["provenance"]["tags"] == ["a", "b"]


def test_png_export_refuses_float_images(export: Path) -> None:
    with ExportSession(export, image_format=".png") as s:
        rec = s.accept(make_image(1, dtype=np.uint16), make_mask())
        assert rec["files"]["image"] == "images/syn_000001.png"
        back = read_array(export / rec["files"]["image"])
        assert np.array_equal(back, make_image(1, dtype=np.uint16))
        with pytest.raises(ExportError, match="PNG holds 8- or 16-bit"):
            s.accept(np.zeros((32, 32), np.float32), make_mask())
    with pytest.raises(ExportError, match="image_format"):
        ExportSession(export, image_format=".jpg")


def fail_tiff_write(monkeypatch: pytest.MonkeyPatch, on_call: int) -> None:
    """Make the ``on_call``-th TIFF write put a few bytes down and then hit a full disk."""
    real = tifffile.imwrite
    calls = {"n": 0}

    def imwrite(path, data, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == on_call:
            Path(path).write_bytes(b"II*\x00" + bytes(100))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data, *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", imwrite)


@pytest.mark.parametrize("failing_write", [1, 2], ids=["image", "mask"])
def test_full_disk_while_writing_files_leaves_nothing(
    export: Path, monkeypatch: pytest.MonkeyPatch, failing_write: int
) -> None:
    with ExportSession(export) as s:
        s.accept(make_image(0), make_mask())
        before = snapshot(export)
        fail_tiff_write(monkeypatch, failing_write)
        with pytest.raises(DiskFullError, match="disk is full"):
            s.accept(make_image(1), make_mask())
        monkeypatch.undo()
        assert snapshot(export) == before  # no partial file, no temp file, no record
        rec = s.accept(make_image(2), make_mask())
        assert number(rec["id"]) > 1 and s.accepted == ["syn_000001", rec["id"]]
    with ExportSession(export) as s:
        assert s.warnings == [] and s.verify() == []


def test_full_disk_while_appending_the_manifest_rolls_back(
    export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write_all = curation.manifest._write_all

    def half_then_full(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    with ExportSession(export) as s:
        s.accept(make_image(0), make_mask())
        before = snapshot(export)
        monkeypatch.setattr(curation.manifest, "_write_all", half_then_full)
        with pytest.raises(DiskFullError, match="the sample was not stored"):
            s.accept(make_image(1), make_mask())
        with pytest.raises(DiskFullError):
            s.reject()
        with pytest.raises(DiskFullError):
            s.undo()
        monkeypatch.setattr(curation.manifest, "_write_all", real_write_all)
        assert snapshot(export) == before
        assert s.accepted == ["syn_000001"]
        rec = s.accept(make_image(2), make_mask())
        assert number(rec["id"]) > 1
    with ExportSession(export) as s:
        assert s.warnings == [] and s.verify() == [] and s.n_accepted == 2


# ------------------------------------------------------------------------------ nnU-Net


def make_real_folder(folder: Path, n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    pairs = {}
    for i in range(n):
        image, mask = make_image(100 + i, (24, 24)), make_mask((24, 24), seed=i)[:24, :24]
        write_image(folder / "images" / f"slice{i}.tif", image)
        write_mask(folder / "masks" / f"slice{i}.tif", mask)
        pairs[f"real_slice{i}"] = (image, mask)
    return pairs


def test_nnunet_export_layout_json_and_splits(tmp_path: Path) -> None:
    export, out = tmp_path / "export", tmp_path / "nnunet"
    real = make_real_folder(tmp_path / "real", 5)
    s = ExportSession(export)
    a = s.accept(make_image(1), make_mask(), provenance={"seed": 1})
    s.accept(make_image(2), make_mask())
    s.undo()  # syn_000002 is undone: not training data
    c = s.accept(make_image(3, dtype=np.uint16), make_mask(seed=2))
    s.reject(make_image(4), make_mask())
    # the session stays open: export reads without taking the lock
    result = export_nnunet(export, out, real=tmp_path / "real", n_folds=5)
    dataset = result.dataset
    assert dataset == out.absolute() / "Dataset501_SynthEM"
    assert result.splits == dataset / "splits_final.json" and result.warnings == []
    assert (result.n_folds, result.n_synthetic, result.n_real) == (5, 2, 5)
    synthetic = ["syn_000001", "syn_000003"]
    cases = synthetic + sorted(real)
    assert files_in(dataset / "imagesTr") == sorted(f"{n}_0000.png" for n in cases)
    assert files_in(dataset / "labelsTr") == sorted(f"{n}.png" for n in cases)
    for rec, seed, dtype in ((a, 1, np.uint8), (c, 3, np.uint16)):
        image = read_array(dataset / "imagesTr" / f"{rec['id']}_0000.png")
        assert image.dtype == dtype and np.array_equal(image, make_image(seed, dtype=dtype))
        label = read_array(dataset / "labelsTr" / f"{rec['id']}.png")
        assert label.dtype == np.uint8
        assert np.array_equal(label, read_mask(export / rec["files"]["mask"]))
    for name, (image, mask) in real.items():
        assert np.array_equal(read_image(dataset / "imagesTr" / f"{name}_0000.png"), image)
        assert np.array_equal(read_array(dataset / "labelsTr" / f"{name}.png"), mask)

    info = json.loads((dataset / "dataset.json").read_text())
    assert info["channel_names"] == {"0": "EM"}
    assert info["labels"] == {"background": 0, "interior": 1, "boundary": 2}
    assert info["numTraining"] == 7 and info["file_ending"] == ".png"
    assert info["synthgen"]["synthetic_cases"] == synthetic
    assert info["synthgen"]["real_cases"] == sorted(real)
    assert info["synthgen"]["source_export"] == str(export.absolute())
    assert info["synthgen"]["plugin_version"] == __version__

    splits = json.loads((dataset / "splits_final.json").read_text())
    assert len(splits) == 5
    vals = []
    for fold in splits:
        assert not any(n.startswith("syn_") for n in fold["val"])  # synthetic never validates
        assert set(synthetic) <= set(fold["train"])
        assert fold["val"] and not set(fold["train"]) & set(fold["val"])
        assert sorted(fold["train"] + fold["val"]) == sorted(cases)
        vals += fold["val"]
    assert sorted(vals) == sorted(real)  # each real case validates exactly once

    with pytest.raises(ExportError, match="already exists and is not empty"):
        export_nnunet(export, out, real=tmp_path / "real")
    s.undo()  # the reject
    s.undo()  # syn_000003
    dataset = export_nnunet(s, out, real=tmp_path / "real", overwrite=True).dataset
    assert not (dataset / "imagesTr" / "syn_000003_0000.png").exists()
    assert not (dataset / "labelsTr" / "syn_000003.png").exists()
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 6
    s.close()


def test_nnunet_export_without_real_data_warns_and_validates_nothing(tmp_path: Path) -> None:
    export = tmp_path / "export"
    with ExportSession(export) as s:
        s.accept(np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32), make_mask())
        s.accept(make_image(2), make_mask())
    result = export_nnunet(export, tmp_path / "nn", dataset_id=7, name="Tiny", n_folds=3)
    dataset = result.dataset
    assert dataset.name == "Dataset007_Tiny"
    assert len(result.warnings) == 1 and "no real pairs given" in result.warnings[0]
    assert "real=<paired folder>" in result.warnings[0]
    splits = json.loads((dataset / "splits_final.json").read_text())
    assert splits == [{"train": ["syn_000001", "syn_000002"], "val": []}] * 3
    image = read_array(dataset / "imagesTr" / "syn_000001_0000.png")
    assert image.dtype == np.uint8 and image.min() == 0 and image.max() == 255
    assert json.loads((dataset / "dataset.json").read_text())["synthgen"]["real_cases"] == []


def test_nnunet_export_refusals(tmp_path: Path) -> None:
    export = tmp_path / "export"
    ExportSession(export).close()
    make_real_folder(tmp_path / "real", 2)
    with pytest.raises(ExportError, match="n_folds=2 or fewer"):
        export_nnunet(export, tmp_path / "nn", real=tmp_path / "real", n_folds=5)
    with pytest.raises(ExportError, match="not a napari-synthgen export"):
        export_nnunet(tmp_path / "real", tmp_path / "nn")
    with pytest.raises(ExportError, match="dataset_id"):
        export_nnunet(export, tmp_path / "nn", dataset_id=1000)
    with pytest.raises(ExportError, match="file_ending"):
        export_nnunet(export, tmp_path / "nn", file_ending=".nii.gz")
    (tmp_path / "real" / "masks" / "slice0.tif").unlink()
    with pytest.raises(ExportError, match=r"slice0\.tif has no mask"):
        export_nnunet(export, tmp_path / "nn", real=tmp_path / "real", n_folds=1)


def test_nnunet_export_refuses_a_tampered_file(tmp_path: Path) -> None:
    export = tmp_path / "export"
    with ExportSession(export) as s:
        rec = s.accept(make_image(1), make_mask())
    write_image(export / rec["files"]["image"], make_image(2))
    with pytest.raises(ExportError, match="does not match its SHA"):
        export_nnunet(export, tmp_path / "nn")



# ------------------------------------------------------------- provenance mapping, folds, splits


def test_provenance_keys_named_like_parameters_stay_provenance(export: Path) -> None:
    image, mask = make_image(1), make_mask()
    with ExportSession(export) as s:
        rec = s.accept(image, mask, provenance={"quality": "hand-checked", "synthetic": False,
                                                "provenance": "nested name", 7: "int key"})
        rej = s.reject(image, mask, provenance={"synthetic": "no", "quality": 0})
        with pytest.raises(ExportError, match="provenance must be a mapping"):
            s.accept(image, mask, provenance=[("seed", 1)])
        with pytest.raises(TypeError):
            s.accept(image, mask, seed=1)  # provenance is no longer taken from keywords
    assert rec["synthetic"] is True  # the parameter's default, not the provenance value
    assert rec["quality"] == pytest.approx(basic_figures(image, mask))
    assert rec["provenance"]["quality"] == "hand-checked"
    assert rec["provenance"]["synthetic"] is False
    assert rec["provenance"]["provenance"] == "nested name" and rec["provenance"]["7"] == "int key"
    assert rej["synthetic"] is True and rej["provenance"]["synthetic"] == "no"
    assert manifest_lines(export)[0] == rec


def _export_with_real(tmp_path: Path, n_real: int, **kwargs):
    export = tmp_path / "export"
    with ExportSession(export) as s:
        for i in range(3):
            s.accept(make_image(i), make_mask(seed=i))
    real = None
    if n_real:
        make_real_folder(tmp_path / "real", n_real)
        real = tmp_path / "real"
    return export_nnunet(export, tmp_path / "nn", real=real, **kwargs)


@pytest.mark.parametrize(
    ("n_real", "folds", "warned"),
    [(0, 1, ["no real pairs given"]), (1, 1, ["only 1 real pair", "holds 1 fold"]),
     (2, 2, ["holds 2 fold(s)"]), (6, 5, [])],
)
def test_nnunet_folds_follow_the_real_pairs(
    tmp_path: Path, n_real: int, folds: int, warned: list[str]
) -> None:
    result = _export_with_real(tmp_path, n_real)
    assert (result.n_folds, result.n_synthetic, result.n_real) == (folds, 3, n_real)
    assert len(result.warnings) == len(warned)
    for text, warning in zip(warned, result.warnings, strict=True):
        assert text in warning
    splits = json.loads(result.splits.read_text())
    info = json.loads((result.dataset / "dataset.json").read_text())
    synthetic = set(info["synthgen"]["synthetic_cases"])
    real = set(info["synthgen"]["real_cases"])
    assert len(splits) == folds == info["synthgen"]["n_folds"] and len(real) == n_real
    vals = []
    for fold in splits:
        assert not synthetic & set(fold["val"])  # synthetic cases never validate
        assert synthetic <= set(fold["train"]) and not set(fold["train"]) & set(fold["val"])
        assert set(fold["train"]) | set(fold["val"]) == synthetic | real
        assert fold["val"] or n_real == 0
        vals += fold["val"]
    assert sorted(vals) == sorted(real)  # each real case validates exactly once


def test_nnunet_export_refuses_more_folds_than_real_pairs_and_cli_names_its_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from napari_synthgen.cli import main

    with pytest.raises(ExportError, match=r"pass n_folds=2 or fewer, leave n_folds unset"):
        _export_with_real(tmp_path, 2, n_folds=3)
    assert main(["export", "--from", str(tmp_path / "export"), "--nnunet", str(tmp_path / "nn"),
                 "--real", str(tmp_path / "real"), "--folds", "3"]) == 1
    err = capsys.readouterr().err
    assert "pass --folds 2 or fewer, leave --folds unset" in err and "n_folds" not in err
    assert not (tmp_path / "nn").exists()  # nothing was written


def test_cli_export_prints_warnings_and_installs_splits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from napari_synthgen.cli import main

    export = tmp_path / "export"
    with ExportSession(export) as s:
        s.accept(make_image(1), make_mask())
    args = ["export", "--from", str(export), "--nnunet", str(tmp_path / "nn"), "--name", "Cli"]
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    assert main([*args, "--install-splits"]) == 1
    err = capsys.readouterr().err
    assert "nnUNet_preprocessed is not set" in err and "--preprocessed <folder>" in err
    assert not (tmp_path / "nn").exists()  # refused before anything was written
    pre = tmp_path / "preprocessed"
    pre.mkdir()
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    assert main([*args, "--install-splits"]) == 0
    out, err = capsys.readouterr()
    assert "warning: no real pairs given" in err and "--real <paired folder>" in err
    assert "1 fold(s)" in out
    installed = pre / "Dataset501_Cli" / "splits_final.json"
    dataset = tmp_path / "nn" / "Dataset501_Cli"
    assert installed.read_bytes() == (dataset / "splits_final.json").read_bytes()


def test_install_splits_where_nnunet_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _export_with_real(tmp_path, 3, dataset_id=12, name="EM")
    pre = tmp_path / "nnUNet_preprocessed"
    pre.mkdir()
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    dest = install_splits(result.dataset)
    assert dest == pre / "Dataset012_EM" / "splits_final.json"
    assert json.loads(dest.read_text()) == json.loads(result.splits.read_text())
    (tmp_path / "other").mkdir()
    other = install_splits(result, tmp_path / "other")  # an explicit root; the result object
    assert other == tmp_path / "other" / "Dataset012_EM" / "splits_final.json"
    assert other.is_file()
    monkeypatch.delenv("nnUNet_preprocessed")
    with pytest.raises(ExportError, match=r"nnUNet_preprocessed is not set.*preprocessed_root="):
        install_splits(result.dataset)
    with pytest.raises(ExportError, match="does not exist; create it"):
        install_splits(result.dataset, tmp_path / "missing")
    with pytest.raises(ExportError, match="not an nnU-Net dataset folder"):
        install_splits(tmp_path / "export", pre)


def test_reword_names_options_as_the_caller_spells_them() -> None:
    message = Worded("pass {0} or {1}, not {2}.", ("n_folds", 2), ("overwrite", True),
                     ("real", ...))
    assert message == "pass n_folds=2 or overwrite=True, not real."
    flags = {"n_folds": "--folds", "overwrite": "--overwrite", "real": "--real"}
    assert reword(message, flags) == "pass --folds 2 or --overwrite, not --real."
    assert reword(ExportError(message), flags) == "pass --folds 2 or --overwrite, not --real."
    assert reword("plain {text}", flags) == "plain {text}"
