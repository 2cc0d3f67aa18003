"""Quality figures on inputs whose answer is known: self, blur, checkerboard, shift, inversion."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_synthgen import quality as q
from napari_synthgen.masks import BOUNDARY, INTERIOR


@pytest.fixture(scope="module")
def ref_self(isbi_image: np.ndarray, isbi_mask: np.ndarray) -> q.ReferenceStats:
    return q.reference_from_pairs([(isbi_image, isbi_mask)])


def _figs(image: np.ndarray, mask: np.ndarray, ref: q.ReferenceStats) -> dict:
    return q.sample_figures(image, mask, reference=ref)


def test_basic_figures_still_describe_intensity_and_classes(isbi_image, isbi_mask) -> None:
    f = q.basic_figures(isbi_image, isbi_mask)
    assert f["frac_background"] == 0.0
    assert f["frac_interior"] + f["frac_boundary"] == pytest.approx(1.0)
    assert f["multi_class"] is True and f["levels"] > 100


def test_image_against_itself_is_at_distance_zero_and_scores_high(isbi_image, isbi_mask,
                                                                  ref_self) -> None:
    f = _figs(isbi_image, isbi_mask, ref_self)
    assert f["wd_interior"] == pytest.approx(0.0, abs=1e-6)  # stored histograms: 8 decimals
    assert f["wd_boundary"] == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(f["wd_background"])  # ISBI has no background class
    assert f["spectrum_dist"] == pytest.approx(0.0, abs=1e-9)
    assert f["peak_excess"] == pytest.approx(0.0, abs=1e-9)
    assert f["std_ratio"] == pytest.approx(1.0)
    assert f["score"] > 0.99
    assert q.ssim(isbi_image, isbi_image) == pytest.approx(1.0)


def test_blur_raises_the_spectrum_distance(isbi_image, isbi_mask, ref_self) -> None:
    blurred = ndi.gaussian_filter(isbi_image.astype(np.float64), 1.5).round().astype(np.uint8)
    f = _figs(blurred, isbi_mask, ref_self)
    assert f["spectrum_dist"] > 0.5
    assert f["score"] < 0.8
    # the high-frequency end of the spectrum falls
    assert (q.log_power_spectrum(blurred)[-8:] < np.asarray(ref_self.log_spectrum)[-8:]).all()


def test_checkerboard_overlay_shows_as_a_periodic_peak(isbi_image, isbi_mask, ref_self) -> None:
    yy, xx = np.mgrid[: isbi_image.shape[0], : isbi_image.shape[1]]
    board = ((yy // 2 + xx // 2) % 2) * 2 - 1  # 2-px squares, period 4
    overlaid = np.clip(isbi_image.astype(int) + 10 * board, 0, 255).astype(np.uint8)
    f = _figs(overlaid, isbi_mask, ref_self)
    assert f["peak_excess"] > 2.0  # a spike 100x above its ring
    assert f["spectrum_dist"] > 0.03
    assert f["wd_mean"] < 0.02  # grey levels hardly moved
    assert f["score"] < 0.95


def test_shifted_histogram_raises_the_per_class_distance(isbi_image, isbi_mask, ref_self
                                                         ) -> None:
    shifted = np.clip(isbi_image.astype(int) + 40, 0, 255).astype(np.uint8)
    f = _figs(shifted, isbi_mask, ref_self)
    assert f["wd_interior"] > 0.12 and f["wd_boundary"] > 0.12
    assert f["spectrum_dist"] < 0.1  # texture unchanged
    assert f["score"] < 0.85


def test_inverted_image_has_a_large_boundary_distance(isbi_image, isbi_mask, ref_self) -> None:
    inverted = 255 - isbi_image
    f = _figs(inverted, isbi_mask, ref_self)
    assert f["wd_boundary"] > 0.25  # dark membranes became bright
    assert f["wd_boundary"] > f["wd_interior"]
    assert f["spectrum_dist"] < 0.1
    assert q.ssim(inverted, isbi_image) < 0.0


def test_histogram_distance_is_the_shift_for_a_shifted_histogram() -> None:
    h = np.zeros(q.HIST_BINS)
    h[10:20] = 1.0
    assert q.histogram_distance(h, np.roll(h, 8)) == pytest.approx(8 / q.HIST_BINS)
    assert np.isnan(q.histogram_distance(h, np.zeros_like(h)))


def test_diversity_is_zero_for_copies_and_positive_for_different_images(isbi_dir) -> None:
    from napari_synthgen.io import read_image

    a = read_image(isbi_dir / "images" / "isbi2012_train_00.tif")
    b = read_image(isbi_dir / "images" / "isbi2012_train_10.tif")
    assert q.diversity([a, a.copy()]) == pytest.approx(0.0, abs=1e-9)
    assert q.diversity([a, b]) > 0.5
    assert np.isnan(q.diversity([a]))


def test_consistency_dice_per_class(isbi_mask) -> None:
    f = q.consistency_figures(isbi_mask, isbi_mask)
    assert f["dice_interior"] == 1.0 and f["dice_boundary"] == 1.0
    assert np.isnan(f["dice_background"]) and f["consistency_dice"] == 1.0
    wrong = np.full_like(isbi_mask, INTERIOR)
    g = q.consistency_figures(wrong, isbi_mask)
    assert g["dice_boundary"] == 0.0 and 0.0 < g["consistency_dice"] < 0.5
    assert q.combined_score({"consistency_dice": g["consistency_dice"]}) < 0.5
    assert (isbi_mask == BOUNDARY).any()


def test_reference_stats_round_trip_through_json_and_metadata(isbi_small) -> None:
    ref = q.reference_from_folder(isbi_small)
    assert ref.n_images == 6 and ref.class_fractions[0] == 0.0
    meta = {q.REFERENCE_KEY: json.loads(json.dumps(ref.to_dict()))}
    assert q.reference_from_metadata(meta) == ref
    assert q.reference_from_metadata({q.REFERENCE_KEY: json.dumps(ref.to_dict())}) == ref
    assert q.reference_from_metadata({}) is None
    with pytest.raises(ValueError, match="reference_from_folder"):
        q.reference_from_metadata({q.REFERENCE_KEY: {"histograms": []}})


def test_score_weights_are_documented_and_sum_to_one() -> None:
    assert sum(q.SCORE_WEIGHTS.values()) == pytest.approx(1.0)
    for key in q.SCORE_WEIGHTS:
        assert key in (q.combined_score.__doc__ or "") or key in q.SCORE_SCALES or \
            key == "consistency"
    assert np.isnan(q.combined_score({}))
