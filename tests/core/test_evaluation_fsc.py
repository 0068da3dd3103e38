"""Tests of cryospin.core.evaluation.fsc_eval: FSC vs truth and between half-maps, aligned."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cryospin.core.evaluation.align_maps import rotate_map
from cryospin.core.evaluation.fsc_eval import (
    fsc_curves,
    fsc_vs_truth,
    half_map_fsc,
    holdout_partition,
    soft_sphere_mask,
)
from cryospin.core.evaluation.phantoms import blob_map

APIX = 3.0
BOX = 32


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return blob_map(BOX, seed=11).astype(np.float64)


def _noise(seed: int, scale: float) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, scale, (BOX, BOX, BOX))


def test_soft_sphere_mask() -> None:
    m = soft_sphere_mask(32, radius=10, edge=4)
    c = 16
    assert m[c, c, c] == 1.0 and m[c, c, c + 10] == 1.0
    assert m[c, c, c + 14] == 0.0 and m[0, 0, 0] == 0.0
    assert 0.0 < m[c, c, c + 12] < 1.0
    assert m[c, c, c + 12] == pytest.approx(0.5)
    # symmetric about the centre voxel
    assert m[c, c, c + 11] == pytest.approx(m[c, c, c - 11])
    default = soft_sphere_mask(40)
    assert default.shape == (40, 40, 40) and default.max() == 1.0 and default.min() == 0.0


def test_identical_maps_fsc_one_at_nyquist(truth: np.ndarray) -> None:
    res = fsc_vs_truth(truth, truth, APIX, align=False)
    assert res.alignment is None
    np.testing.assert_allclose(res.fsc, 1.0, atol=1e-9)
    assert res.resolution_A == pytest.approx(2 * APIX)
    assert res.frequency_per_A.shape == (BOX // 2 + 1,)
    assert res.frequency_per_A[1] == pytest.approx(1 / (BOX * APIX))
    np.testing.assert_array_equal(res.shells, np.arange(BOX // 2 + 1))


def test_fsc_vs_truth_aligns_first(truth: np.ndarray) -> None:
    s = Rotation.random(random_state=12).as_matrix()
    estimate = rotate_map(truth, s, [1.0, -1.0, 2.0], flip=True) + _noise(13, 0.05)
    res = fsc_vs_truth(estimate, truth, APIX)
    assert res.alignment is not None and res.alignment.flipped
    assert res.threshold == 0.5 and res.kind == "vs_truth"
    assert res.fsc[1:4].min() > 0.95
    assert math.isfinite(res.resolution_A) and res.resolution_A < 5 * APIX
    unaligned = fsc_vs_truth(estimate, truth, APIX, align=False)
    assert unaligned.resolution_A > 2 * res.resolution_A
    s_dict = res.summary()
    assert s_dict["resolution_vs_truth_A"] == pytest.approx(res.resolution_A)
    assert s_dict["alignment"]["flipped"] is True
    curves = res.curves()
    assert len(curves) == 2 and all(v[2] == 0.5 for v in curves.values())


def test_masked_fsc_removes_outside_noise(truth: np.ndarray) -> None:
    # noise only outside the mask's support: the masked curve is (nearly) perfect
    outside = soft_sphere_mask(BOX) == 0.0
    noisy = truth + _noise(14, 0.3) * outside
    res = fsc_vs_truth(noisy, truth, APIX, align=False)
    assert res.resolution_masked_A < res.resolution_A
    np.testing.assert_allclose(res.fsc_masked, 1.0, atol=1e-9)
    # an explicit mask is used as given
    mask = np.ones((BOX, BOX, BOX))
    res_ones = fsc_vs_truth(noisy, truth, APIX, align=False, mask=mask)
    np.testing.assert_allclose(res_ones.fsc_masked, res_ones.fsc)


def test_half_map_fsc_aligns_b_onto_a(truth: np.ndarray) -> None:
    half_a = truth + _noise(15, 0.05)
    s = Rotation.random(random_state=16).as_matrix()
    half_b = rotate_map(truth + _noise(17, 0.05), s, [0.0, 2.0, 0.0])
    res = half_map_fsc(half_a, half_b, APIX)
    assert res.kind == "half_maps" and res.threshold == 0.143
    assert res.alignment is not None and not res.alignment.flipped
    ceiling = np.corrcoef(half_a.ravel(), truth.ravel())[0, 1]  # noise limits the correlation
    assert np.corrcoef(res.aligned.ravel(), truth.ravel())[0, 1] > ceiling - 0.02
    # the curves use the Fourier coefficients held out of the alignment only (numpy reference)
    assert res.holdout and res.summary()["fsc_fourier_holdout"] is True
    np.testing.assert_allclose(_numpy_fsc(half_a, res.aligned, holdout_partition(BOX)), res.fsc)
    freq, direct = fsc_curves(half_a, res.aligned, APIX)
    np.testing.assert_allclose(direct[1:8], res.fsc[1:8], atol=0.05)  # same signal, fewer voxels
    np.testing.assert_allclose(freq, res.frequency_per_A)
    # close to the oracle: the same half-maps without the rotation (only resampling blur lost)
    oracle = half_map_fsc(half_a, truth + _noise(17, 0.05), APIX, align=False)
    assert math.isfinite(res.resolution_A)
    assert res.resolution_A < 1.3 * oracle.resolution_A
    assert "gold_standard_resolution_A" in res.summary()


def _numpy_fsc(a: np.ndarray, b: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """FSC over the centred-FFT voxels ``keep``, shells ``round(|k|)`` (numpy, float64)."""
    f1, f2 = (np.fft.fftshift(np.fft.fftn(np.asarray(x, np.float64))) for x in (a, b))
    k = np.arange(a.shape[0]) - a.shape[0] // 2
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    shell = np.rint(np.sqrt(kx**2 + ky**2 + kz**2)).astype(int)
    out = []
    for s in range(a.shape[0] // 2 + 1):
        sel = keep & (shell == s)
        num = np.real(f1[sel] * np.conj(f2[sel])).sum()
        out.append(num / np.sqrt((np.abs(f1[sel]) ** 2).sum() * (np.abs(f2[sel]) ** 2).sum()))
    return np.array(out)


def test_holdout_partition_is_a_friedel_symmetric_half() -> None:
    for box in (15, 16):
        keep = holdout_partition(box)
        neg = (2 * (box // 2) - np.arange(box)) % box
        assert np.array_equal(keep, keep[np.ix_(neg, neg, neg)])
        assert abs(keep.mean() - 0.5) < 0.02


def _smooth_noise(seed: int) -> np.ndarray:
    """A map with nothing in common with any other seed's: low-passed white noise filling the box
    (as a reconstruction from pure-noise images; its Fourier coefficients are independent)."""
    from cryospin.core.evaluation.map_ops import lowpass_gaussian

    return lowpass_gaussian(_noise(seed, 1.0), 0.1)


def test_half_map_fsc_of_unrelated_maps_is_unbiased_by_the_alignment() -> None:
    """Aligning unrelated maps inflates their low-shell FSC; the held-out FSC stays near 0."""
    a, b = _smooth_noise(40), _smooth_noise(41)
    biased = half_map_fsc(a, b, APIX, holdout=False)
    held = half_map_fsc(a, b, APIX)
    # shells 1-2 hold ~20 independent coefficients: 7 alignment parameters fit them well
    assert biased.fsc[1:3].mean() > 0.3
    assert held.fsc[1:3].mean() < 0.143
    assert abs(held.fsc[1:9].mean()) < 0.1


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="cubic"):
        fsc_vs_truth(np.zeros((8, 8, 8)), np.zeros((10, 10, 10)), 1.0, align=False)
