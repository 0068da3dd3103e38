"""Preprocessing: Fourier-crop downsampling, inversion, background normalisation, window, halves."""

from __future__ import annotations

import numpy as np
import pytest

from cryospin.core.errors import InputError
from cryospin.io.preprocess import (
    PreprocessOptions,
    circular_mask,
    contrast_mismatch,
    default_invert,
    half_sets,
    measure_contrast,
    normalize_background,
    preprocess,
    soft_window,
)


def test_downsample_box_and_pixel_size(trpv1):
    s = preprocess(trpv1, PreprocessOptions(box=32, normalize=False, window=False))
    assert s.box == 32 and s.pixel_size_A == pytest.approx(4.88 * 48 / 32)
    img = s.images.read(np.array([3, 1]))
    raw = trpv1.images.read(np.array([3, 1]))
    assert img.shape == (2, 32, 32) and img.dtype == np.float32
    np.testing.assert_allclose(img.mean(axis=(1, 2)), raw.mean(axis=(1, 2)), rtol=1e-4, atol=1e-6)
    assert s.rotations is trpv1.rotations and s.shifts_A is trpv1.shifts_A


def test_downsample_keeps_low_frequencies():
    """A band-limited image resampled by Fourier cropping equals the analytic coarser sampling."""
    from cryospin.io.preprocess import PreprocessedReader

    L, small = 64, 32
    y, x = np.mgrid[:L, :L]
    img = np.cos(2 * np.pi * 3 * x / L) + np.sin(2 * np.pi * 2 * y / L)

    class One:
        def __len__(self):
            return 1

        def read(self, idx):
            return img[None].astype(np.float32)

    opts = PreprocessOptions(box=small, normalize=False, window=False)
    out = PreprocessedReader(One(), L, opts).read(np.array([0]))[0]
    y2, x2 = np.mgrid[:small, :small]
    expected = np.cos(2 * np.pi * 3 * x2 / small) + np.sin(2 * np.pi * 2 * y2 / small)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_invert_flag(trpv1):
    a = preprocess(trpv1, PreprocessOptions(invert=False)).images.read(np.array([0]))
    b = preprocess(trpv1, PreprocessOptions(invert=True)).images.read(np.array([0]))
    np.testing.assert_allclose(a, -b)


def test_normalisation_background_stats(trpv1):
    s = preprocess(trpv1, PreprocessOptions(window=False))
    imgs = s.images.read(np.arange(10))
    outside = ~circular_mask(48, 0.85)
    np.testing.assert_allclose(imgs[:, outside].mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(imgs[:, outside].std(axis=1), 1, atol=1e-4)
    x = np.random.default_rng(0).normal(3, 2, size=(2, 20, 20)).astype(np.float32)
    y = normalize_background(x, 0.5)
    assert abs(y[:, ~circular_mask(20, 0.5)].mean()) < 1e-5


def test_soft_window():
    w = soft_window(64, 0.85, 0.99)
    assert w[32, 32] == 1.0 and w[0, 0] == 0.0
    assert w[32, 32 + 27] == 1.0  # r = 27/32 < 0.85
    assert 0 < w[32, 32 + 29] < 1  # in the raised cosine
    assert w[32, 63] < 0.1  # r = 31/32 ~ 0.97, near the outer radius 0.99
    assert np.all(np.diff(w[32, 32:]) <= 1e-7)


def test_bad_boxes(trpv1):
    with pytest.raises(InputError, match="--box 64: larger than"):
        preprocess(trpv1, PreprocessOptions(box=64))
    with pytest.raises(InputError, match="even"):
        preprocess(trpv1, PreprocessOptions(box=0))


def test_half_sets(trpv1):
    np.testing.assert_array_equal(half_sets(trpv1), trpv1.half_set)  # rlnRandomSubset kept
    a = half_sets(trpv1, seed=1, use_file=False)
    b = half_sets(trpv1, seed=1, use_file=False)
    np.testing.assert_array_equal(a, b)
    assert sorted(np.bincount(a)[1:]) == [5, 5]
    assert not np.array_equal(a, half_sets(trpv1, seed=2, use_file=False))


def test_default_invert_and_contrast_check(trpv1, stacks):
    from cryospin.io import open_particles

    # RELION stacks are protein-bright: inverted for the core's protein-dark forward model
    # (established in test_trpv1_end_to_end.py)
    assert default_invert(trpv1) is True
    assert measure_contrast(trpv1)[0] > 0.2
    assert contrast_mismatch(trpv1, invert=True) is None
    assert "protein-bright" in contrast_mismatch(trpv1, invert=False)
    # cryoSPARC blob/sign -1: a protein-dark stack, left as it is
    cs = open_particles(stacks / "empiar-10076" / "empiar_10076_7.cs")
    assert default_invert(cs) is False
    assert measure_contrast(cs)[1] < -5
    assert contrast_mismatch(cs, invert=False) is None
    # the same dark stack named by a RELION 3.0 STAR: the format default is wrong, and detected
    star = open_particles(stacks / "empiar-10076" / "empiar_10076_7.star")
    message = contrast_mismatch(star, default_invert(star))
    assert "empiar_10076_7.star: particles look protein-dark" in message
    assert "use invert=False" in message


def test_writers_describe_the_files_after_preprocessing(trpv1, tmp_path):
    from cryospin.io import open_particles, write_star

    small = preprocess(trpv1, PreprocessOptions(box=24))
    assert small.pixel_size_A == pytest.approx(9.76)
    write_star(tmp_path / "p.star", small)
    back = open_particles(tmp_path / "p.star", stack=trpv1.images.files[0])
    assert back.pixel_size_A == pytest.approx(4.88) and back.box == 48


def test_engine_asks_the_registered_source_for_the_contrast_default(trpv1):
    """The engine's default goes through the registry to cryospin-io's rule (no copy in core)."""
    from cryospin.core.engine.data import default_invert as engine_default

    assert engine_default(trpv1) is default_invert(trpv1) is True
