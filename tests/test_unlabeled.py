"""Unlabelled images in training (``--unlabeled``): the tiles without a mask, the null
condition they teach a diffusion model, and classifier-free guidance at sampling."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_synthgen.cli import main
from napari_synthgen.encoding import encode_masks, encoding_lut
from napari_synthgen.families.diffusion.sampling import (
    DiffusionSamplingError,
    DiffusionSynthesizer,
)
from napari_synthgen.masks import NO_LABEL
from napari_synthgen.registry import load_model, make_config, make_synthesizer
from napari_synthgen.training.config import ConfigError
from napari_synthgen.training.data import (
    DataError,
    TileSampler,
    check_unlabeled,
    load_samples,
    load_unlabeled,
)

TINY = {"block_out_channels": [8, 16], "attention": [False, True], "attention_head_dim": 8}
RUN = ["--tile", "32", "--batch-size", "4", "--device", "cpu", "--precision", "fp32",
       "--preview-steps", "2", "--warmup-steps", "1"]


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory: pytest.TempPathFactory, isbi_dir: Path) -> Path:
    """Raw images without masks: two ISBI slices, and a (3, Y, X) stack of three more."""
    root = tmp_path_factory.mktemp("raw")
    for i in (10, 11):
        shutil.copy(isbi_dir / "images" / f"isbi2012_train_{i:02d}.tif", root)
    stack = np.stack([tifffile.imread(isbi_dir / "images" / f"isbi2012_train_{i:02d}.tif")
                      for i in (12, 13, 14)])
    tifffile.imwrite(root / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    return root


def test_encoding_gives_no_label_the_null_condition() -> None:
    masks = torch.tensor([[[0, 1], [2, NO_LABEL]]], dtype=torch.uint8)
    for encoding in ("onehot", "rgb"):
        enc = encode_masks(masks, encoding_lut(encoding))
        assert torch.all(enc[0, :, 1, 1] == 0)  # the null condition
        assert all(torch.any(enc[0, :, y, x] != 0) for y, x in ((0, 0), (0, 1), (1, 0)))


def test_sparse_encoding_codes_class_0_as_an_image_without_a_mask() -> None:
    masks = torch.tensor([[[0, 1, 2, NO_LABEL]]], dtype=torch.uint8)
    enc = encode_masks(masks, encoding_lut("sparse"))[0, :, 0]
    assert enc.shape == (2, 4)
    assert torch.equal(enc[:, 0], enc[:, 3]) and torch.all(enc[:, 0] == 0)
    assert enc[:, 1].tolist() == [1.0, -1.0] and enc[:, 2].tolist() == [-1.0, 1.0]


def test_sparse_model_trains_with_unlabelled_images_and_samples_guided(
        tmp_path: Path, isbi_small: Path, raw_dir: Path) -> None:
    run = _train(tmp_path / "sparse", isbi_small, "--unlabeled", str(raw_dir), "--encoding",
                 "sparse")
    model = load_model(run)
    assert model.spec.encoding == "sparse" and model.spec.in_channels == 3
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 8:20] = 1
    s = make_synthesizer(model, device="cpu", precision="fp32", steps=2, guidance=2.0)
    assert s(mask, seed=1).shape == (32, 32)


def test_unlabelled_images_are_read_by_slice_and_problems_listed(
        raw_dir: Path, tmp_path: Path, isbi_small: Path) -> None:
    raw = load_unlabeled([raw_dir])
    assert [r.name.split("/")[1] for r in raw] == ["isbi2012_train_10", "isbi2012_train_11",
                                                   "stack[0]", "stack[1]", "stack[2]"]
    # a paired folder gives its images (never its masks)
    assert len(load_unlabeled([isbi_small])) == 6
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError) as err:
        load_unlabeled([empty, tmp_path / "missing", tmp_path / "notes.txt"])
    text = str(err.value)
    assert "empty: holds no images" in text and "missing: no such file" in text
    assert "notes.txt: not an image file" in text
    labelled = load_samples([isbi_small])
    with pytest.raises(DataError, match="not uint8 like the labelled ones"):
        check_unlabeled(labelled, load_unlabeled([_uint16_copy(raw_dir, tmp_path)]), 32)
    with pytest.raises(DataError, match="tile 1024 is larger than 5 unlabelled"):
        check_unlabeled(labelled, raw, 1024)


def _uint16_copy(raw_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "u16"
    out.mkdir()
    img = tifffile.imread(raw_dir / "isbi2012_train_10.tif").astype(np.uint16) * 257
    tifffile.imwrite(out / "a.tif", img)
    return out


def test_sampler_draws_unlabelled_tiles_by_seed_and_keeps_the_labelled_ones(
        isbi_small: Path, raw_dir: Path) -> None:
    samples, raw = load_samples([isbi_small]), load_unlabeled([raw_dir])
    kw = {"tile": 32, "stride": None, "batch_size": 8, "seed": 3, "flips": True, "rot90": True}
    plain = TileSampler(samples, **kw)
    mixed = TileSampler(samples, **kw, unlabeled=raw, unlabeled_share=0.5)
    dropped = TileSampler(samples, **kw, cond_dropout=0.5)
    n_raw = n_drop = 0
    for step in range(6):
        (pm, pi), (mm, mi), (dm, di) = plain.batch(step), mixed.batch(step), dropped.batch(step)
        no_mask = (mm == NO_LABEL).all(dim=(1, 2))
        assert torch.equal(no_mask, (mm == NO_LABEL).any(dim=(1, 2)))  # whole tiles only
        n_raw += int(no_mask.sum())
        # the labelled tiles are the ones a run without unlabelled images draws
        assert torch.equal(mm[~no_mask], pm[~no_mask]) and torch.equal(mi[~no_mask], pi[~no_mask])
        # a dropped mask keeps its image
        gone = (dm == NO_LABEL).all(dim=(1, 2))
        n_drop += int(gone.sum())
        assert torch.equal(di, pi) and torch.equal(dm[~gone], pm[~gone])
        # a pure function of (seed, step)
        again = TileSampler(samples, **kw, unlabeled=raw, unlabeled_share=0.5).batch(step)
        assert torch.equal(again[0], mm) and torch.equal(again[1], mi)
    assert 12 <= n_raw <= 36 and 12 <= n_drop <= 36  # about half of 48 tiles
    # two ranks see what one process with their whole batch sees
    half = {**kw, "batch_size": 4}
    ranks = [TileSampler(samples, **half, unlabeled=raw, unlabeled_share=0.5, rank=r, world=2)
             for r in (0, 1)]
    both = torch.cat([r.batch(2)[0] for r in ranks])
    assert torch.equal(both, mixed.batch(2)[0])


def test_config_refuses_what_cannot_learn_the_null_condition(isbi_small: Path,
                                                             raw_dir: Path) -> None:
    base = {"data": [str(isbi_small)], "steps": 1, "unlabeled": [str(raw_dir)]}
    with pytest.raises(ConfigError, match="codes 'no mask' like the interior"):
        make_config(family="diffusion", encoding="label", **base).validate()
    with pytest.raises(ConfigError, match="unlabeled_share is 0"):
        make_config(family="diffusion", unlabeled_share=0.0, **base).validate()
    with pytest.raises(ConfigError, match=r"cond_dropout is a share of tiles in \[0, 1\]"):
        make_config(family="diffusion", data=[str(isbi_small)], steps=1,
                    cond_dropout=1.5).validate()


def _train(root: Path, data: Path, *extra: str) -> Path:
    """A tiny diffusion model of 3 steps trained through the CLI."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"overrides": TINY}), encoding="utf-8")
    out = root / "run"
    assert main(["train", "--family", "diffusion", "--data", str(data), "--out", str(out),
                 "--steps", "3", "--config", str(cfg), *RUN, *extra]) == 0
    return out


@pytest.fixture(scope="module")
def guided_model(tmp_path_factory: pytest.TempPathFactory, isbi_small: Path, raw_dir: Path,
                 ) -> Path:
    """Trained with unlabelled images: it knows the null condition."""
    return _train(tmp_path_factory.mktemp("guided"), isbi_small, "--unlabeled", str(raw_dir),
                  "--unlabeled-share", "0.5")


def test_a_model_trained_with_unlabelled_images_records_them_and_takes_guidance(
        guided_model: Path, tmp_path: Path, isbi_dir: Path, tiny_unet: Path) -> None:
    model = load_model(guided_model)
    meta = model.info.metadata
    assert meta["null_condition"] is True
    assert meta["config"]["unlabeled"] and meta["config"]["unlabeled_share"] == 0.5
    assert meta["provenance"]["unlabeled_images"][-1].endswith("/stack[2]")
    mask = tifffile.imread(isbi_dir / "masks" / "isbi2012_train_25.tif")[:64, :64]

    def synth(**kw: object) -> np.ndarray:
        s = make_synthesizer(model, device="cpu", precision="fp32", steps=2, **kw)
        return s(mask, seed=4)

    default, one, guided = synth(), synth(guidance=1.0), synth(guidance=3.0)
    # such a model samples at guidance 3 unless asked (at 1 it follows a mask loosely)
    assert np.array_equal(default, guided) and not np.array_equal(one, guided)
    assert np.array_equal(guided, synth(guidance=3.0))  # seeded like every run
    # a file that records the guidance it samples best with (the bundled demo: 1) uses it
    from napari_synthgen.families.diffusion.files import save_diffusion

    own = save_diffusion(tmp_path / "own.safetensors", model.network, model.spec,
                         {**meta, "default_guidance": 1.5})
    mine = make_synthesizer(own, device="cpu", precision="fp32", steps=2)
    assert mine.guidance == 1.5
    assert load_model(own).info.details["guidance"].startswith("1.5 by default (recorded")
    assert model.info.details["guidance"].startswith("3 by default (learned the null")
    assert np.array_equal(mine(mask, seed=4), synth(guidance=1.5))
    # guidance 1 is the plain conditional model, bit for bit: the null branch is not run
    plain = DiffusionSynthesizer(model, device="cpu", precision="fp32", steps=2,
                                 guidance=1.0)
    assert plain.denoiser.guidance == 1.0 and np.array_equal(plain(mask, seed=4), one)
    s = make_synthesizer(model, device="cpu", precision="fp32", steps=2, guidance=3.0)
    assert s.describe()["family_settings"]["guidance"] == 3.0
    # generate records the guidance with every image
    masks = tmp_path / "m.tif"
    tifffile.imwrite(masks, mask)
    out = tmp_path / "out"
    assert main(["generate", "--model", str(guided_model), "--masks", str(masks), "--out",
                 str(out), "--steps", "2", "--guidance", "2.5", "--device", "cpu"]) == 0
    text = (out / "generate.jsonl").read_text(encoding="utf-8")
    assert '"guidance": 2.5' in text


def test_guidance_is_refused_for_a_model_without_the_null_condition(
        isbi_small: Path, guided_model: Path, tiny_model: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    plain = load_model(_train(tmp_path / "plain", isbi_small))
    assert plain.info.metadata["null_condition"] is False
    with pytest.raises(DiffusionSamplingError, match="needs a model that learned the null"):
        DiffusionSynthesizer(plain, device="cpu", guidance=2.0)
    with pytest.raises(DiffusionSamplingError, match="between 0 and 20"):
        DiffusionSynthesizer(load_model(guided_model), device="cpu", guidance=-1.0)
    # 1 (no guidance) is fine for every diffusion model; the widget hides the setting
    assert DiffusionSynthesizer(plain, device="cpu", guidance=1.0).guidance == 1.0
    assert DiffusionSynthesizer(plain, device="cpu").guidance == 1.0  # its default
    assert plain.info.details["guidance"] == "1 only (never learned the null condition)"
    assert DiffusionSynthesizer.hidden_options(plain) == ("guidance", "guidance_where")
    assert DiffusionSynthesizer.hidden_options(load_model(guided_model)) == ()
    masks = tmp_path / "m.tif"
    tifffile.imwrite(masks, np.ones((32, 32), np.uint8))
    assert main(["generate", "--model", str(tiny_model), "--masks", str(masks), "--out",
                 str(tmp_path / "o"), "--guidance", "2"]) != 0
    assert "--guidance applies to diffusion models only" in capsys.readouterr().err


def test_guidance_combines_the_conditional_and_null_predictions(guided_model: Path) -> None:
    """The sampler's model output is null + w * (cond - null), one more call per tile."""
    from napari_synthgen.families.diffusion.sampling import Denoiser

    model = load_model(guided_model)
    d1 = Denoiser(model.network, model.spec, torch.device("cpu"), "fp32")
    d3 = Denoiser(model.network, model.spec, torch.device("cpu"), "fp32", guidance=3.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 32, 32, generator=g)
    masks = torch.randint(0, 3, (2, 32, 32), generator=g, dtype=torch.uint8)
    cond = d1.encode(masks)
    c, n = d1(x, cond, 500), d1(x, torch.zeros_like(cond), 500)
    torch.testing.assert_close(d3(x, cond, 500), n + 3.0 * (c - n))


def test_labelled_guidance_guides_the_mask_and_leaves_class_0_unguided(
        guided_model: Path, tmp_path: Path, isbi_dir: Path) -> None:
    """``guidance_where="labelled"``: weight w on classes 1 and 2, 1 on class 0 (organelle
    masks' unlabelled tissue keeps the model's own texture), for every encoding."""
    from napari_synthgen.families.diffusion.sampling import Denoiser

    model = load_model(guided_model)
    cpu = torch.device("cpu")
    d1 = Denoiser(model.network, model.spec, cpu, "fp32")
    d3 = Denoiser(model.network, model.spec, cpu, "fp32", guidance=3.0)
    spatial = Denoiser(model.network, model.spec, cpu, "fp32", guidance=3.0,
                       guidance_where="labelled")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 1, 32, 32, generator=g)
    masks = torch.zeros(1, 32, 32, dtype=torch.uint8)
    masks[:, 8:20, 8:20] = 1
    masks[:, 8:20, 8] = 2
    cond = d1.encode(masks)
    one, three, mixed = d1(x, cond, 500), d3(x, cond, 500), spatial(x, cond, 500)
    inside = (masks > 0)[:, None].expand_as(one)
    torch.testing.assert_close(mixed[inside], three[inside])
    torch.testing.assert_close(mixed[~inside], one[~inside])
    for encoding in ("onehot", "rgb", "label", "sparse"):
        spatial.lut = encoding_lut(encoding)
        w = spatial.guidance_map(encode_masks(masks, spatial.lut))
        assert torch.equal(w[0, 0], torch.where(masks[0] > 0, 3.0, 1.0)), encoding
    # through the synthesizer: a mask without class 0 is guided everywhere either way; one
    # with class 0 is not; the setting is recorded, and refused when misspelt
    mask = tifffile.imread(isbi_dir / "masks" / "isbi2012_train_25.tif")[:64, :64]
    assert not np.any(mask == 0)

    def synth(m: np.ndarray, **kw: object) -> np.ndarray:
        s = make_synthesizer(model, device="cpu", precision="fp32", steps=2, guidance=3.0, **kw)
        return s(m, seed=4)

    assert np.array_equal(synth(mask), synth(mask, guidance_where="everywhere"))
    sparse = mask.copy()
    sparse[:, :32] = 0
    labelled = synth(sparse)  # the default guides the mask's objects only
    assert np.array_equal(labelled, synth(sparse, guidance_where="labelled"))
    assert not np.array_equal(labelled, synth(sparse, guidance_where="everywhere"))
    quiet = make_synthesizer(model, device="cpu", guidance=1.0, guidance_where="everywhere")
    assert any("changes nothing at guidance 1" in n for n in quiet.notes)
    assert not make_synthesizer(model, device="cpu", guidance=1.0).notes
    with pytest.raises(DiffusionSamplingError, match="everywhere or labelled"):
        make_synthesizer(model, device="cpu", guidance_where="inside")
    masks_file = tmp_path / "m.tif"
    tifffile.imwrite(masks_file, sparse)
    out = tmp_path / "out"
    assert main(["generate", "--model", str(guided_model), "--masks", str(masks_file), "--out",
                 str(out), "--steps", "2", "--guidance", "3", "--guidance-where", "everywhere",
                 "--seed", "4", "--noise", "seed",
                 "--device", "cpu", "--precision", "fp32"]) == 0
    assert '"guidance_where": "everywhere"' in (out / "generate.jsonl").read_text("utf-8")
    assert np.array_equal(tifffile.imread(next((out / "images").glob("*.tif"))),
                          synth(sparse, guidance_where="everywhere"))


def test_evaluate_refuses_a_test_image_the_generator_saw_unlabelled(
        guided_model: Path, tmp_path: Path, isbi_dir: Path, isbi_small: Path) -> None:
    """A test slice given to the generator as a raw image is a leak, like a labelled one."""
    from napari_synthgen import evaluation as ev

    syn = tmp_path / "syn"
    masks = tmp_path / "masks"
    masks.mkdir()
    tifffile.imwrite(masks / "m.tif", tifffile.imread(
        isbi_dir / "masks" / "isbi2012_train_25.tif")[:64, :64])
    assert main(["generate", "--model", str(guided_model), "--masks", str(masks), "--out",
                 str(syn), "--steps", "1", "--device", "cpu"]) == 0
    seen = ev.generator_seen(syn)
    assert any(k.endswith("/isbi2012_train_10") for k in seen) and len(seen) == 5 + 5
    test = tmp_path / "test"
    for sub in ("images", "masks"):
        (test / sub).mkdir(parents=True)
        for i in (10, 26):  # 10 was a raw image of the generator; 26 was never seen
            shutil.copy(isbi_dir / sub / f"isbi2012_train_{i:02d}.tif", test / sub)
    with pytest.raises(ev.LeakError, match=r"isbi2012_train_10 is also generator "
                                           r"G_step_0000003.safetensors/raw\d*/isbi2012_train_10"):
        ev.evaluate(isbi_small, syn, test, steps=1, seeds=1)


def test_a_run_fine_tuned_from_a_model_starts_from_it_and_records_it(
        guided_model: Path, isbi_small: Path, isbi_dir: Path, tiny_model: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    """``--init-from``: the weights, architecture and encoding of the start; its record (and
    the images it saw, for the leak check) in the new model file."""
    from napari_synthgen import evaluation as ev
    from napari_synthgen.io import sha256_file

    start = load_model(guided_model)
    cfg = make_config("diffusion", data=[str(isbi_small)], tile=32,
                      init_from=str(guided_model))
    trainer = cfg.family_entry.build_trainer(cfg, torch.device("cpu"), "fp32", 3, False)
    for name, value in start.network.state_dict().items():
        assert torch.equal(trainer.network.state_dict()[name].float(), value.float()), name
    run = tmp_path / "ft"
    assert main(["train", "--family", "diffusion", "--data", str(isbi_small), "--out", str(run),
                 "--steps", "2", "--init-from", str(guided_model), *RUN]) == 0
    tuned = load_model(run)
    assert tuned.spec == start.spec
    record = tuned.info.metadata["init_from"]
    assert record["sha256"] == sha256_file(start.info.path)
    assert record["steps_trained"] == 3 and len(record["seen_sha256"]) == 5 + 5
    # the leak check follows the chain: a raw image of the start is seen by the tuned model
    masks = tmp_path / "masks"
    masks.mkdir()
    tifffile.imwrite(masks / "m.tif", tifffile.imread(
        isbi_dir / "masks" / "isbi2012_train_25.tif")[:32, :32])
    assert main(["generate", "--model", str(run), "--masks", str(masks), "--out",
                 str(tmp_path / "syn"), "--steps", "1", "--device", "cpu"]) == 0
    assert any("(started from" in k and k.endswith("/isbi2012_train_10")
               for k in ev.generator_seen(tmp_path / "syn"))
    # a fine-tune gets no advice to fine-tune; the same run from random weights on these 6
    # (5 training) labelled images does
    assert "from random weights" not in capsys.readouterr().out
    assert main(["train", "--family", "diffusion", "--data", str(isbi_small), "--out",
                 str(tmp_path / "scratch"), "--steps", "1", "--config", str(guided_model.parent
                 / "tiny.yaml"), *RUN]) == 0
    out = capsys.readouterr().out  # messages go to stdout, the progress bar to stderr
    assert "note: a diffusion generator trained from random weights on 5 labelled" in out
    assert "add --init-from demo-diffusion" in out
    # what cannot work is refused before training, saying what to change
    for extra, message in ((["--init-from", str(guided_model), "--encoding", "rgb"],
                            "set encoding to onehot"),
                           (["--init-from", str(guided_model), "--tile", "33"],
                            "tile 33 must be a multiple of"),
                           (["--init-from", str(tiny_model)], "is a pix2pix model"),
                           (["--init-from", str(guided_model), "--distill-from",
                             str(guided_model)], "cannot be combined")):
        assert main(["train", "--family", "diffusion", "--data", str(isbi_small), "--out",
                     str(tmp_path / "bad"), "--steps", "2", *RUN, *extra]) != 0
        assert message in capsys.readouterr().err
