"""`napari-synthgen report`: its CSV, PNG and Markdown on ISBI samples with known defects."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from napari_synthgen.quality_cli import add_report_parser

SIZE = 256


def _crop(isbi_dir: Path, i: int) -> tuple[np.ndarray, np.ndarray]:
    name = f"isbi2012_train_{i:02d}.tif"
    return (tifffile.imread(isbi_dir / "images" / name)[:SIZE, :SIZE],
            tifffile.imread(isbi_dir / "masks" / name)[:SIZE, :SIZE])


@pytest.fixture(scope="module")
def report_dirs(tmp_path_factory: pytest.TempPathFactory, isbi_dir: Path) -> dict[str, Path]:
    """Reference = slices 00-02; samples: slice 03 as is, and damaged copies of it and of 00.

    ``good_s0`` and ``good_s1`` share a mask (a diversity group); ``ref_mask`` uses the mask of
    reference slice 00, so it has a paired real image (SSIM).
    """
    root = tmp_path_factory.mktemp("report")
    ref, samples = root / "reference", root / "samples"
    for d in (ref, samples):
        (d / "images").mkdir(parents=True)
        (d / "masks").mkdir()
    for i in range(3):
        img, m = _crop(isbi_dir, i)
        tifffile.imwrite(ref / "images" / f"r{i}.tif", img)
        tifffile.imwrite(ref / "masks" / f"r{i}.tif", m)
    img, m = _crop(isbi_dir, 3)
    img0, m0 = _crop(isbi_dir, 0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    board = ((yy // 2 + xx // 2) % 2) * 2 - 1
    noisy = np.clip(img + np.random.default_rng(1).normal(0, 3, img.shape), 0, 255)
    made = {
        "good_s0": (img, m),
        "good_s1": (noisy.round().astype(np.uint8), m),
        "blurred": (ndi.gaussian_filter(img.astype(float), 2.0).round().astype(np.uint8), m),
        "inverted": (255 - img, m),
        "checkerboard": (np.clip(img.astype(int) + 12 * board, 0, 255).astype(np.uint8), m),
        "ref_mask": (ndi.gaussian_filter(img0.astype(float), 0.7).round().astype(np.uint8), m0),
    }
    for name, (im, mk) in made.items():
        tifffile.imwrite(samples / "images" / f"{name}.tif", im)
        tifffile.imwrite(samples / "masks" / f"{name}.tif", mk)
    return {"reference": ref, "samples": samples, "out": root / "out"}


@pytest.fixture(scope="module")
def report_rows(report_dirs: dict[str, Path]) -> dict[str, dict[str, str]]:
    parser = argparse.ArgumentParser(prog="napari-synthgen")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", "--samples", str(report_dirs["samples"]),
                              "--reference", str(report_dirs["reference"]),
                              "--out", str(report_dirs["out"]), "--consistency-steps", "15"])
    assert args.func(args) == 0
    with (report_dirs["out"] / "report.csv").open() as fh:
        return {r["name"]: r for r in csv.DictReader(fh)}


def test_report_csv_has_one_row_per_sample_with_every_figure(report_dirs, report_rows) -> None:
    with (report_dirs["out"] / "report.csv").open() as fh:
        header = next(csv.reader(fh))
    assert header[:3] == ["name", "score", "flagged"]
    for col in ("wd_interior", "wd_boundary", "spectrum_dist", "peak_excess", "std_ratio",
                "ssim_real", "diversity", "consistency_dice", "dice_boundary",
                "frac_boundary", "mean", "std"):
        assert col in header, col
    assert sorted(report_rows) == sorted(p.stem for p in
                                         (report_dirs["samples"] / "images").iterdir())
    for row in report_rows.values():
        assert 0.0 <= float(row["score"]) <= 1.0
        assert row["flagged"] in ("0", "1")


def test_report_figures_rank_the_damaged_samples_below_the_good_one(report_rows) -> None:
    good = report_rows["good_s0"]
    assert float(report_rows["blurred"]["spectrum_dist"]) > 2 * float(good["spectrum_dist"])
    assert float(report_rows["checkerboard"]["peak_excess"]) > 1.0
    assert float(report_rows["inverted"]["wd_boundary"]) > 0.25
    for bad in ("blurred", "inverted", "checkerboard"):
        assert float(report_rows[bad]["score"]) < float(good["score"]), bad
    # mask consistency: a real-trained segmenter misreads the inverted image
    assert float(report_rows["inverted"]["consistency_dice"]) < float(
        good["consistency_dice"])


def test_report_pairs_real_images_and_groups_variations(report_rows) -> None:
    assert float(report_rows["ref_mask"]["ssim_real"]) > 0.8  # a lightly blurred real image
    assert report_rows["good_s0"]["ssim_real"] == ""  # no real image has this mask
    assert report_rows["good_s0"]["group"] == report_rows["good_s1"]["group"]
    assert report_rows["good_s0"]["group_size"] == "5"  # every sample made from slice 03's mask
    assert float(report_rows["good_s0"]["diversity"]) > 0.0
    assert report_rows["ref_mask"]["diversity"] == ""  # alone in its group


def test_report_png_and_markdown(report_dirs, report_rows) -> None:
    import imageio.v3 as iio

    png = iio.imread(report_dirs["out"] / "report.png")
    assert png.ndim == 3 and png.shape[0] > 400 and png.shape[1] > 800
    assert png.std() > 10  # something was drawn
    md = (report_dirs["out"] / "report.md").read_text()
    assert md.startswith("# Quality report")
    assert "6 samples" in md and "never to decide alone" in md
    assert "| inverted |" in md or "| blurred |" in md


def test_reference_from_a_model_checkpoint_metadata(tmp_path: Path, report_dirs) -> None:
    import torch

    from napari_synthgen import quality as q
    from napari_synthgen.families.pix2pix.files import save_model
    from napari_synthgen.families.pix2pix.networks import GeneratorSpec, build_generator
    from napari_synthgen.io import find_pairs, read_image, read_mask
    from napari_synthgen.report import load_reference

    pairs = [(read_image(p.image), read_mask(p.mask))
             for p in find_pairs(report_dirs["reference"])]
    torch.manual_seed(0)
    spec = GeneratorSpec(netG="resnet_6blocks", input_nc=3, output_nc=1, ngf=4, norm="instance",
                         dropout=False)
    meta = {q.REFERENCE_KEY: q.reference_record(pairs)}  # what training stores
    model = save_model(tmp_path / "m.safetensors", build_generator(spec), spec, encoding="rgb",
                       tile=64, metadata=meta)
    got, real = load_reference(model)
    assert real == []
    assert got == q.reference_from_pairs(pairs)
    bare = save_model(tmp_path / "bare.safetensors", build_generator(spec), spec, encoding="rgb",
                      tile=64)
    with pytest.raises(ValueError, match="records no reference statistics"):
        load_reference(bare)


# ----------------------------------------------------------------------------- nothing lost


def test_a_killed_report_resumes_and_matches_an_uninterrupted_one(report_dirs, report_rows,
                                                                  tmp_path: Path) -> None:
    from napari_synthgen.report import quality_report

    class Killed(Exception):
        pass

    def kill_after_three(stage: str, done: int, total: int) -> None:
        if stage == "figures" and done == 3:
            raise Killed

    out = tmp_path / "out"
    run = {"samples": report_dirs["samples"], "reference": report_dirs["reference"],
           "out": out, "consistency_steps": 15}
    with pytest.raises(Killed):
        quality_report(**run, progress=kill_after_three)
    assert len((out / "report_rows.jsonl").read_text().splitlines()) == 3
    with (out / "report_rows.jsonl").open("a") as fh:
        fh.write('{"name": "half-writ')  # killed mid-line
    stages: list[tuple[str, int]] = []
    quality_report(**run, progress=lambda s, d, t: stages.append((s, d)))
    uninterrupted = (report_dirs["out"] / "report.csv").read_bytes()
    assert (out / "report.csv").read_bytes() == uninterrupted
    # everything scored: nothing is computed again, not even the consistency segmenter
    stages.clear()
    quality_report(**run, progress=lambda s, d, t: stages.append((s, d)))
    assert (out / "report.csv").read_bytes() == uninterrupted
    assert {s for s, _ in stages} == {"figures"}
    assert "mask consistency: small U-Net, 15 steps" in (out / "report.md").read_text()


def test_report_refuses_other_settings_and_unwritable_out(report_dirs, report_rows,
                                                          tmp_path: Path, capsys) -> None:
    from napari_synthgen.cli import main

    argv = ["report", "--samples", str(report_dirs["samples"]), "--reference",
            str(report_dirs["reference"]), "--consistency-steps", "0"]
    before = (report_dirs["out"] / "report.csv").read_bytes()
    assert main([*argv, "--out", str(report_dirs["out"])]) == 1
    err = capsys.readouterr().err
    assert "other settings" in err and "consistency_steps 15 there, 0 now" in err
    assert (report_dirs["out"] / "report.csv").read_bytes() == before
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main([*argv, "--out", str(blocker / "sub")]) == 1
    err = capsys.readouterr().err
    assert f"cannot write into {blocker / 'sub'}" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- stacks


def _isbi_stack(isbi_dir: Path, first: int, n: int, at: int = 0, size: int = 128
                ) -> tuple[np.ndarray, np.ndarray]:
    names = [f"isbi2012_train_{i:02d}.tif" for i in range(first, first + n)]
    crop = np.s_[at:at + size, at:at + size]
    return (np.stack([tifffile.imread(isbi_dir / "images" / f)[crop] for f in names]),
            np.stack([tifffile.imread(isbi_dir / "masks" / f)[crop] for f in names]))


@pytest.mark.parametrize("reference_kind", ["slices", "stack"])
def test_report_on_stacks_adds_z_consistency(tmp_path: Path, isbi_dir: Path,
                                             reference_kind: str) -> None:
    """Two (Z, Y, X) sample stacks: real ISBI sections 12-17 (shared texture; 0.49 at lag 1
    on this crop, 0.45 on the reference's) and the same masks with independent texture per
    slice; the reference is sections 00-05, as 2-D slices in file-name order or as one
    stack."""
    from napari_synthgen.report import quality_report

    ref, samples = tmp_path / "reference", tmp_path / "samples"
    for d in (ref, samples):
        (d / "images").mkdir(parents=True)
        (d / "masks").mkdir()
    ref_img, ref_mask = _isbi_stack(isbi_dir, 0, 6)
    if reference_kind == "slices":
        for k in range(6):
            tifffile.imwrite(ref / "images" / f"s{k:02d}.tif", ref_img[k])
            tifffile.imwrite(ref / "masks" / f"s{k:02d}.tif", ref_mask[k])
    else:
        tifffile.imwrite(ref / "images" / "stack.tif", ref_img)
        tifffile.imwrite(ref / "masks" / "stack.tif", ref_mask)
    img, mask = _isbi_stack(isbi_dir, 12, 6, at=192)
    rng = np.random.default_rng(0)
    means = np.array([80.0, 160.0, 60.0])
    flicker = means[mask] + ndi.gaussian_filter(rng.normal(0, 40, img.shape), (0, 1.5, 1.5))
    for name, im in (("real_copy", img), ("independent", flicker)):
        tifffile.imwrite(samples / "images" / f"{name}.tif",
                         np.clip(im, 0, 255).round().astype(np.uint8))
        tifffile.imwrite(samples / "masks" / f"{name}.tif", mask)
    out = tmp_path / "out"
    result = quality_report(samples, ref, out, consistency_steps=0)
    assert [f.name for f in result.files] == ["report.csv", "report.png", "report.md",
                                              "report_z.csv", "report_z_pairs.csv",
                                              "report_z.png"]
    with (out / "report.csv").open() as fh:
        names = [r["name"] for r in csv.DictReader(fh)]
    assert sorted(names) == sorted(f"{n}_z{k:03d}" for n in ("real_copy", "independent")
                                   for k in range(6))
    with (out / "report_z.csv").open() as fh:
        z = {(r["kind"], r["name"]): r for r in csv.DictReader(fh)}
    assert len(z) == 3
    real_row = next(r for (kind, _), r in z.items() if kind == "real")
    assert float(real_row["z_corr_lag1"]) > 0.2  # as in test_zconsistency's real crop
    assert float(z[("synthetic", "real_copy")]["z_corr_lag1"]) > 0.2
    assert abs(float(z[("synthetic", "independent")]["z_corr_lag1"])) < 0.1
    assert float(z[("synthetic", "independent")]["texture_flicker"]) > 1.3
    with (out / "report_z_pairs.csv").open() as fh:
        pairs = list(csv.DictReader(fh))
    assert len(pairs) == 3 * 5 and set(pairs[0]) >= {"z", "z_corr", "texture_flicker"}
    md = (out / "report.md").read_text()
    assert "## Z-consistency" in md and "| synthetic | independent | 6 |" in md
    assert ("file-name order" if reference_kind == "slices" else "stack order") in md
    import imageio.v3 as iio

    png = iio.imread(out / "report_z.png")
    assert png.shape[1] > 800 and png.std() > 10


def test_a_2d_report_writes_no_z_outputs(report_dirs, report_rows) -> None:
    """2-D samples: the three files of before, and nothing about z; the recorded settings are
    the keys and sample fingerprint of before, so folders written before stacks resume.
    (Checked once by hand: report.csv, report.png, report_rows.jsonl and the settings file of
    a 2-D run are byte-identical to those of the code before stacks.)"""
    import json

    from napari_synthgen.io import find_pairs, read_image, read_mask
    from napari_synthgen.results import fingerprint

    out = report_dirs["out"]
    recorded = json.loads((out / "report_settings.json").read_text())
    assert set(recorded) == {"samples", "reference", "consistency_steps", "seed", "device",
                             "flag_below"}
    pairs = [(p.stem, read_image(p.image), read_mask(p.mask))
             for p in find_pairs(report_dirs["samples"])]
    assert recorded["samples"] == fingerprint(pairs)
    assert not any((out / n).exists() for n in ("report_z.csv", "report_z_pairs.csv",
                                                "report_z.png"))
    assert "Z-consistency" not in (out / "report.md").read_text()
