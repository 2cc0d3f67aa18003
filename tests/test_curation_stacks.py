"""(Z, Y, X) stacks through curation: one sample per stack (session, crash recovery, the
`curate` rule), stack quality figures, voxel spacing, and the nnU-Net export of 3-D cases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_synthgen.curation import ExportError, ExportSession, export_nnunet
from napari_synthgen.curation.stacks import (
    is_stack,
    spacing_of,
    stack_figures,
)
from napari_synthgen.io import read_array, read_image, read_mask, sha256_file
from napari_synthgen.quality import reference_from_folder, sample_figures

SRC = Path(__file__).resolve().parents[1] / "src"
SPACING = (50.0, 4.0, 4.0)  # ISBI: 50 nm sections, about 4 nm pixels
CROP = 64


def isbi_stack(isbi_dir: Path, first: int, n: int, *, corner: int = 0,
               size: int = CROP) -> tuple[np.ndarray, np.ndarray]:
    """``n`` consecutive ISBI sections from ``first`` on, cropped, as (Z, Y, X) image and mask."""
    sl = np.s_[corner:corner + size, corner:corner + size]
    names = [f"isbi2012_train_{i:02d}.tif" for i in range(first, first + n)]
    image = np.stack([tifffile.imread(isbi_dir / "images" / f)[sl] for f in names])
    mask = np.stack([tifffile.imread(isbi_dir / "masks" / f)[sl] for f in names])
    return image, mask


def write_stack(path: Path, array: np.ndarray, spacing: tuple[float, float, float] | None
                ) -> Path:
    """A (Z, Y, X) TIFF as Fiji writes it: ImageJ hyperstack, z spacing and X/Y resolution in
    nm (``spacing`` None: a plain multi-page TIFF that records no spacing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if spacing is None:
        tifffile.imwrite(path, array, photometric="minisblack")
    else:
        z, y, x = spacing
        tifffile.imwrite(path, array, imagej=True, resolution=(1 / x, 1 / y),
                         metadata={"spacing": z, "unit": "nm", "axes": "ZYX"})
    return path


def stack_folder(root: Path, isbi_dir: Path, firsts: list[int], *, n: int = 3,
                 spacing: tuple[float, float, float] | None = SPACING, corner: int = 0
                 ) -> Path:
    """A paired folder of ISBI stacks (``stack<first>``), as `generate` writes stacks."""
    for first in firsts:
        image, mask = isbi_stack(isbi_dir, first, n, corner=corner)
        write_stack(root / "images" / f"stack{first:02d}.tif", image, spacing)
        write_stack(root / "masks" / f"stack{first:02d}.tif", mask, spacing)
    return root


def real_2d_folder(root: Path, isbi_dir: Path, indices: range, size: int = CROP) -> Path:
    for i in indices:
        name = f"isbi2012_train_{i:02d}.tif"
        for sub in ("images", "masks"):
            (root / sub).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(root / sub / name,
                             tifffile.imread(isbi_dir / sub / name)[-size:, -size:])
    return root


# ------------------------------------------------------------------------------ helpers


def test_spacing_is_read_from_imagej_files_and_none_without(tmp_path: Path,
                                                            isbi_dir: Path) -> None:
    image, _ = isbi_stack(isbi_dir, 0, 3)
    assert spacing_of(write_stack(tmp_path / "fiji.tif", image, SPACING)) == SPACING
    assert spacing_of(write_stack(tmp_path / "plain.tif", image, None)) is None
    assert is_stack(image) and not is_stack(image[0])
    assert not is_stack(np.zeros((64, 64, 3), np.uint8))  # a colour image is not a stack


def test_stack_figures_aggregate_the_slices_and_add_z_consistency(isbi_dir: Path,
                                                                  tmp_path: Path) -> None:
    image, mask = isbi_stack(isbi_dir, 0, 4)
    reference = reference_from_folder(real_2d_folder(tmp_path / "real", isbi_dir, range(20, 24)))
    figures = stack_figures(image, mask, reference=reference)
    per_slice = [sample_figures(image[k], mask[k], reference=reference) for k in range(4)]
    scores = [f["score"] for f in per_slice]
    assert figures["n_slices"] == 4
    assert figures["score"] == pytest.approx(np.mean(scores))
    assert figures["score_min"] == pytest.approx(min(scores))
    assert figures["worst_slice"] == int(np.argmin(scores))
    assert figures["wd_mean"] == pytest.approx(np.mean([f["wd_mean"] for f in per_slice]))
    assert figures["frac_boundary"] == pytest.approx(float((mask == 2).mean()))
    # consecutive real sections share texture beyond their masks
    assert 0.05 < figures["z_corr_lag1"] < 1.0 and np.isfinite(figures["texture_flicker"])
    json.dumps(figures, allow_nan=True)  # plain numbers: it goes into a manifest record


# ------------------------------------------------------------------------------ session


def test_a_stack_is_one_sample_accepted_and_undone_whole(tmp_path: Path,
                                                         isbi_dir: Path) -> None:
    export = tmp_path / "export"
    image, mask = isbi_stack(isbi_dir, 0, 3)
    with ExportSession(export) as s:
        rec = s.accept(image, mask, provenance={"seed": 3}, spacing=SPACING)
        assert rec["id"] == "syn_000001" and rec["shape"] == [3, CROP, CROP]
        assert rec["spacing"] == list(SPACING)
        assert rec["quality"]["frac_boundary"] == pytest.approx(float((mask == 2).mean()))
        stored = read_image(s.path(rec["id"]))
        assert stored.shape == (3, CROP, CROP) and np.array_equal(stored, image)
        assert np.array_equal(read_mask(s.path(rec["id"], "mask")), mask)
        assert rec["sha256"]["image"] == sha256_file(s.path(rec["id"]))
        rej = s.reject(image[::-1], mask[::-1], spacing=SPACING)
        assert rej["shape"] == [3, CROP, CROP] and "files" not in rej
        s.undo()  # the reject
        s.undo()  # the accept: the whole stack goes to the trash
        assert s.accepted == []
        assert np.array_equal(read_image(export / "trash" / "images" / "syn_000001.tif"), image)
    with ExportSession(export) as s:
        assert s.warnings == [] and s.orphans == []
        with pytest.raises(ExportError, match=r"image shape .* and mask shape .* differ"):
            s.accept(image, mask[:2])
        with pytest.raises(ExportError, match="three positive numbers"):
            s.accept(image, mask, spacing=(50, 0, 4))
    with (ExportSession(tmp_path / "png", image_format=".png") as s,
          pytest.raises(ExportError, match=r"PNG holds 2-D images.*image_format='\.tif'")):
        s.accept(image, mask)


CHILD = r"""
import sys
import numpy as np
from napari_synthgen.curation import ExportSession
session = ExportSession(sys.argv[1])
rng = np.random.default_rng(int(sys.argv[2]))
mask = np.ones((4, 96, 96), np.uint8)
mask[:, 10:80, 10] = 2
while True:
    image = rng.integers(0, 255, (4, 96, 96), dtype=np.uint8)
    record = session.accept(image, mask, spacing=(50, 4, 4))
    print(record["id"], flush=True)
"""


def test_sigkilled_stack_writer_loses_no_reported_stack(tmp_path: Path) -> None:
    export = tmp_path / "export"
    ExportSession(export).close()
    printed: list[str] = []
    for seed, n_ids in enumerate((2, 5)):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(export), str(seed)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(SRC)})
        got: list[str] = []
        try:
            while len(got) < n_ids:
                line = proc.stdout.readline()
                if not line:
                    pytest.fail(f"the writer died early: {proc.stderr.read()}")
                got.append(line.strip())
            os.kill(proc.pid, signal.SIGKILL)
            rest, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        printed += got + [ln.strip() for ln in rest.splitlines(keepends=True)
                          if ln.endswith("\n")]
        with ExportSession(export) as s:
            assert set(printed) <= set(s.accepted) and s.verify() == []
            for sid in s.accepted:  # every accepted stack is whole
                assert read_array(s.path(sid)).shape == (4, 96, 96)
                assert s.record(sid)["spacing"] == [50, 4, 4]
            for orphan in s.orphans:  # a stack written just before the kill: kept, whole
                assert read_array(orphan).shape == (4, 96, 96)
    assert len(printed) == len(set(printed))


# ------------------------------------------------------------------------------ curate


def test_curate_rule_decides_whole_stacks_and_resumes(tmp_path: Path, isbi_dir: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    from napari_synthgen.cli import main

    generated = stack_folder(tmp_path / "gen", isbi_dir, [0, 4, 8])
    real = real_2d_folder(tmp_path / "real", isbi_dir, range(20, 24))
    out = tmp_path / "curated"
    reference = reference_from_folder(real)
    scores = {f"stack{i:02d}": stack_figures(*isbi_stack(isbi_dir, i, 3),
                                             reference=reference)["score"] for i in (0, 4, 8)}
    threshold = float(np.median(list(scores.values())))
    argv = ["curate", str(generated), "--out", str(out), "--min-score", str(threshold),
            "--reference", str(real)]
    assert main(argv) == 0
    assert "accepted 2, rejected 1" in capsys.readouterr().out
    with ExportSession(out) as s:
        records = [s.record(i) for i in s.accepted + s.rejected]
        for rec in records:
            stem = Path(rec["provenance"]["candidate"]).stem
            assert rec["shape"] == [3, CROP, CROP] and rec["spacing"] == list(SPACING)
            assert rec["quality"]["n_slices"] == 3 and "z_corr_lag1" in rec["quality"]
            assert rec["quality"]["score"] == pytest.approx(scores[stem])
            assert (rec["decision"] == "accept") == (scores[stem] >= threshold)
        for sid in s.accepted:
            assert read_image(s.path(sid)).shape == (3, CROP, CROP)
    assert main(argv) == 0
    assert "skipped 3 already decided" in capsys.readouterr().out


# ------------------------------------------------------------------------------ nnU-Net


def test_nnunet_export_writes_3d_cases_with_their_spacing(tmp_path: Path,
                                                          isbi_dir: Path) -> None:
    export, out = tmp_path / "export", tmp_path / "nnunet"
    real = stack_folder(tmp_path / "real", isbi_dir, [20, 24], corner=CROP,
                        spacing=(40.0, 5.0, 5.0))
    image, mask = isbi_stack(isbi_dir, 0, 3)
    with ExportSession(export) as s:
        a = s.accept(image, mask, spacing=SPACING)["id"]
    result = export_nnunet(export, out, real=real, name="Stacks")
    dataset = result.dataset
    assert result.stacks and (result.n_synthetic, result.n_real, result.n_folds) == (1, 2, 2)
    cases = [a, "real_stack20", "real_stack24"]
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == sorted(
        [f"{c}_0000.tif" for c in cases] + [f"{c}.json" for c in cases])
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == sorted(
        [f"{c}.tif" for c in cases] + [f"{c}.json" for c in cases])
    # what nnU-Net's Tiff3DIO reads: 3-D arrays, spacing from <case>.json beside them
    assert np.array_equal(tifffile.imread(dataset / "imagesTr" / f"{a}_0000.tif"), image)
    assert np.array_equal(tifffile.imread(dataset / "labelsTr" / f"{a}.tif"), mask)
    for sub in ("imagesTr", "labelsTr"):
        assert json.loads((dataset / sub / f"{a}.json").read_text()) == {"spacing": [50, 4, 4]}
        assert json.loads((dataset / sub / "real_stack20.json").read_text()) == {
            "spacing": [40, 5, 5]}
    info = json.loads((dataset / "dataset.json").read_text())
    assert info["file_ending"] == ".tif" and info["overwrite_image_reader_writer"] == "Tiff3DIO"
    assert info["channel_names"] == {"0": "EM"}
    assert info["labels"] == {"background": 0, "interior": 1, "boundary": 2}
    assert info["numTraining"] == 3 and info["synthgen"]["dimensions"] == 3
    splits = json.loads((dataset / "splits_final.json").read_text())
    assert all(a in fold["train"] and a not in fold["val"] for fold in splits)


def test_nnunet_export_spacing_option_and_mixed_refusal(tmp_path: Path, isbi_dir: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    from napari_synthgen.cli import main

    export, nn = tmp_path / "export", tmp_path / "nn"
    image, mask = isbi_stack(isbi_dir, 0, 3)
    with ExportSession(export) as s:
        s.accept(image, mask)  # no spacing known
    args = ["export", "--from", str(export), "--nnunet", str(nn)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "syn_000001 record none" in err and "pass --spacing Z,Y,X" in err
    assert not nn.exists()  # refused before anything was written
    assert main([*args, "--spacing", "50,4,4"]) == 0
    dataset = nn / "Dataset501_SynthEM"
    assert json.loads((dataset / "labelsTr" / "syn_000001.json").read_text()) == {
        "spacing": [50, 4, 4]}
    with pytest.raises(SystemExit) as exc:  # argparse: a bad value
        main([*args, "--spacing", "50,4", "--overwrite"])
    assert exc.value.code == 2 and "argument --spacing" in capsys.readouterr().err
    # a 2-D sample beside the stack: one kind per dataset, and the message says what to do
    with ExportSession(export) as s:
        s.accept(image[0], mask[0])
    before = sorted(p.name for p in (dataset / "imagesTr").iterdir())
    assert main([*args, "--spacing", "50,4,4", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "mixes 2-D cases (syn_000002) and (Z, Y, X) stacks (syn_000001)" in err
    assert "separate export folders" in err and "--dataset-id" in err
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == before
    # real 2-D pairs with synthetic stacks are refused alike
    only_stacks = tmp_path / "only_stacks"
    with ExportSession(only_stacks) as s:
        s.accept(image, mask, spacing=SPACING)
    with pytest.raises(ExportError, match=r"mixes 2-D cases \(real_isbi2012_train_20\)"):
        export_nnunet(only_stacks, tmp_path / "nn2",
                      real=real_2d_folder(tmp_path / "real", isbi_dir, range(20, 21)))
