"""Z-consistency beyond the mask: known answers on made-up stacks, and a real ISBI crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_synthgen.zconsistency import z_consistency

Z, SIZE = 6, 256


def _masks(rng: np.random.Generator, z: int = Z, size: int = SIZE) -> np.ndarray:
    """Blocky 3-class masks that change from slice to slice (all three classes present)."""
    coarse = rng.integers(0, 3, size=(z, size // 16, size // 16))
    return np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2).astype(np.uint8)


def _class_means(rng: np.random.Generator, masks: np.ndarray) -> np.ndarray:
    """An image made only of per-slice class means, different in every slice."""
    means = rng.uniform(0.2, 0.8, size=(masks.shape[0], 3))
    return means[np.arange(masks.shape[0])[:, None, None], masks]


def test_a_texture_repeated_beyond_the_mask_correlates_at_one() -> None:
    rng = np.random.default_rng(0)
    m = _masks(rng)
    texture = rng.normal(0, 0.05, size=(SIZE, SIZE))
    r = z_consistency(_class_means(rng, m) + texture, m)
    # the per-class means differ per slice, the texture is the same: the residual is shared
    # except for the class means' part the mask explains, which is removed
    assert r.adjacent > 0.95
    assert np.all(r.lag_corr > 0.95)
    assert np.all(r.texture_flicker < 0.35)
    assert r.pair_corr.shape == (Z - 1,) and r.mean_jump.shape == (Z - 1, 3)


def test_independent_noise_correlates_at_zero() -> None:
    rng = np.random.default_rng(1)
    m = _masks(rng)
    r = z_consistency(rng.normal(0.5, 0.05, size=(Z, SIZE, SIZE)), m)
    # 256^2 px smoothed with sigma 2 leave about 1300 independent samples: sd 0.03 per pair
    assert abs(r.adjacent) < 0.05
    assert np.all(np.abs(r.lag_corr) < 0.08)
    assert np.all(np.abs(r.texture_flicker - np.sqrt(2)) < 0.1)


@pytest.mark.parametrize("weight", [0.3, 0.7])
def test_a_shared_part_of_known_weight_gives_that_correlation(weight: float) -> None:
    rng = np.random.default_rng(2)
    m = _masks(rng)
    shared = rng.normal(size=(SIZE, SIZE))
    own = rng.normal(size=(Z, SIZE, SIZE))
    # variance weight shared, 1 - weight own: any two slices correlate at `weight`
    noise = np.sqrt(weight) * shared + np.sqrt(1 - weight) * own
    r = z_consistency(_class_means(rng, m) + 0.05 * noise, m)
    assert r.adjacent == pytest.approx(weight, abs=0.05)
    assert np.all(np.abs(r.lag_corr - weight) < 0.06)


def test_what_the_mask_explains_is_removed() -> None:
    """Same mask in every slice, strong class contrast that changes per slice, independent
    noise: the slices look alike only through the mask, so the figure is ~0, not ~1."""
    rng = np.random.default_rng(3)
    m = np.repeat(_masks(rng, z=1), Z, axis=0)
    means = np.array([0.2, 0.5, 0.8]) + rng.uniform(-0.1, 0.1, size=(Z, 3))
    img = means[np.arange(Z)[:, None, None], m] + rng.normal(0, 0.02, size=(Z, SIZE, SIZE))
    plain = np.corrcoef(img[0].ravel(), img[1].ravel())[0, 1]
    assert plain > 0.8  # raw slices correlate through the mask
    r = z_consistency(img, m)
    assert abs(r.adjacent) < 0.05
    assert np.nanmean(r.mean_jump) > 0.05  # the brightness flicker is reported apart


def test_uint8_stacks_and_bad_input() -> None:
    rng = np.random.default_rng(4)
    m = _masks(rng)
    img = np.clip(_class_means(rng, m) * 255 + rng.normal(0, 10, (Z, SIZE, SIZE)), 0, 255)
    r = z_consistency(img.astype(np.uint8), m)
    assert r.class_means.max() <= 1.0  # unit grey scale
    assert set(r.summary()) >= {"z_corr_lag1", "z_corr_lag4", "texture_flicker",
                                "mean_jump_interior"}
    with pytest.raises(ValueError, match="at least 2 slices"):
        z_consistency(img[:1], m[:1])
    with pytest.raises(ValueError, match="differ"):
        z_consistency(img[:, :10], m)
    with pytest.raises(ValueError, match="Z, Y, X"):
        z_consistency(img[0], m[0])
    short = z_consistency(img[:3], m[:3])
    assert np.isfinite(short.lag_corr[:2]).all() and np.isnan(short.lag_corr[2:]).all()


def test_real_isbi_sections_share_texture_beyond_the_mask(isbi_dir: Path) -> None:
    """Six consecutive ISBI sections, 128 x 128: adjacent residuals correlate clearly.

    Measured 0.35-0.57 on four 128-px crops of sections 00-05 (0.40 on the whole 30 sections);
    independent noise through the same masks gives |r| < 0.05 (about 330 independent samples
    per 128-px slice after smoothing: sd 0.055 per pair, 0.025 over five pairs). 0.2 is far
    above chance and well below what real sections give.
    """
    names = [f"isbi2012_train_{i:02d}.tif" for i in range(6)]
    img = np.stack([tifffile.imread(isbi_dir / "images" / n)[:128, :128] for n in names])
    m = np.stack([tifffile.imread(isbi_dir / "masks" / n)[:128, :128] for n in names])
    r = z_consistency(img, m)
    assert r.adjacent > 0.2
    assert r.lag_corr[0] > r.lag_corr[3]  # texture fades with distance


def test_reference_order_from_file_names_and_its_cap(monkeypatch) -> None:
    """2-D reference slices form one stack in the order given (find_pairs sorts by name);
    shapes that differ are no stack; a long series is cut to REFERENCE_MAX_SLICES."""
    from napari_synthgen import report_z

    rng = np.random.default_rng(5)
    m = _masks(rng, z=5, size=32)
    items = [(f"s{k:02d}", rng.integers(0, 255, (32, 32), dtype=np.uint8), m[k])
             for k in range(5)]
    stacks, note = report_z.reference_stacks(items)
    assert len(stacks) == 1 and stacks[0][0] == "s00..s04" and stacks[0][1].shape == (5, 32, 32)
    assert np.array_equal(stacks[0][1][3], items[3][1]) and "file-name order" in note
    odd = [*items, ("s05", np.zeros((16, 16), np.uint8), np.ones((16, 16), np.uint8))]
    assert report_z.reference_stacks(odd)[0] == []
    monkeypatch.setattr(report_z, "REFERENCE_MAX_SLICES", 3)
    stacks, note = report_z.reference_stacks(items)
    assert stacks[0][1].shape[0] == 3 and "the first 3" in note
    slices, found = report_z.split_stacks([("st", np.stack([i for _, i, _ in items]), m),
                                           ("flat", items[0][1], m[0])])
    assert [n for n, _, _ in slices] == [f"st_z{k:03d}" for k in range(5)] + ["flat"]
    assert [n for n, _, _ in found] == ["st"]
