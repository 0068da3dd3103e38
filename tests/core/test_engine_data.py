"""The engine's preprocessing and half-set split (:mod:`cryospin.core.engine.data`).

The one implementation every run uses. Checked against references written here in numpy
(``np.fft``, float64), independent of :mod:`cryospin.core.fourier`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cryospin.core.engine.data import ParticleData, split_half_sets
from cryospin.core.errors import InputError
from cryospin.core.particles import ArrayReader, CTFParams, ParticleStack

RAW_BOX, APIX = 40, 2.0


def _raw_images(n: int, seed: int = 0) -> np.ndarray:
    """A Gaussian blob on noise, each image with its own background offset and noise level."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:RAW_BOX, :RAW_BOX] - RAW_BOX // 2
    blob = np.exp(-(x**2 + y**2) / (2 * 5.0**2))
    offset = rng.uniform(-3, 3, size=(n, 1, 1))
    noise = rng.normal(size=(n, RAW_BOX, RAW_BOX)) * rng.uniform(0.5, 2, size=(n, 1, 1))
    return (offset + 2 * blob + noise).astype(np.float32)


def _stack(images: np.ndarray, half_set: np.ndarray | None = None) -> ParticleStack:
    n = len(images)
    # defocus U/V (Å), angle (deg), voltage (kV), Cs (mm), amplitude contrast, phase shift (deg)
    ctf = CTFParams(*(np.full(n, v) for v in (15000.0, 14000.0, 30.0, 300.0, 2.7, 0.1, 0.0)))
    return ParticleStack(
        path=Path("memory.star"),
        images=ArrayReader(images),
        box=images.shape[-1],
        pixel_size_A=APIX,
        ctf=ctf,
        half_set=half_set,
    )


def _reference(raw: np.ndarray, box: int, invert: bool) -> np.ndarray:
    """Fourier crop to ``box``, optional sign flip, minus each image's background mean, divided
    by the background's sample standard deviation (ddof 1) pooled over the stack (background:
    pixels at least ``box / 2`` from the centre ``(box // 2, box // 2)``)."""
    big = raw.shape[-1]
    axes = (-2, -1)
    f = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(raw.astype(np.float64), axes=axes)), axes=axes)
    lo = big // 2 - box // 2
    crop = f[:, lo : lo + box, lo : lo + box]
    img = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(crop, axes=axes)), axes=axes).real
    img *= (box / big) ** 2 * (-1.0 if invert else 1.0)
    y, x = np.mgrid[:box, :box] - box // 2
    bg = np.hypot(x, y) >= box / 2
    img -= img[:, bg].mean(axis=1)[:, None, None]
    return img / img[:, bg].std(ddof=1)


@pytest.mark.parametrize(("box", "invert"), [(24, False), (40, True)])
def test_images_match_the_numpy_reference(box: int, invert: bool) -> None:
    raw = _raw_images(12)
    data = ParticleData(_stack(raw), box=box, invert=invert)
    assert data.box == box and data.pixel_size_A == pytest.approx(APIX * RAW_BOX / box)
    got = data.images(np.arange(12))
    assert got.shape == (12, box, box) and got.dtype.is_floating_point
    np.testing.assert_allclose(got.numpy(), _reference(raw, box, invert), atol=2e-5)
    # the contract the model relies on: background mean 0 per image, unit pooled std
    y, x = np.mgrid[:box, :box] - box // 2
    bg = got.numpy()[:, np.hypot(x, y) >= box / 2]
    np.testing.assert_allclose(bg.mean(axis=1), 0.0, atol=1e-5)
    assert bg.std(ddof=1) == pytest.approx(1.0, abs=1e-5)


def test_inversion_negates_and_the_cache_changes_nothing() -> None:
    raw = _raw_images(9, seed=1)
    plain = ParticleData(_stack(raw), box=32, invert=False)
    flipped = ParticleData(_stack(raw), box=32, invert=True, cache=False)
    idx = np.array([7, 2, 4])
    np.testing.assert_allclose(flipped.images(idx).numpy(), -plain.images(idx).numpy(), atol=1e-6)
    assert flipped.noise_std == pytest.approx(plain.noise_std, rel=1e-6)
    uncached = ParticleData(_stack(raw), box=32, invert=False, cache=False)
    np.testing.assert_allclose(uncached.images(idx).numpy(), plain.images(idx).numpy(), atol=1e-6)


def test_batch_transforms_are_centred_ffts() -> None:
    data = ParticleData(_stack(_raw_images(5, seed=2)), box=32, invert=False)
    batch = data.batch(np.array([3, 0]))
    img = batch.images.double().numpy()
    axes = (-2, -1)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(img, axes=axes)), axes=axes)
    np.testing.assert_allclose(batch.fimages.numpy(), ref, atol=1e-3)
    assert batch.ctf.shape == (2, 32, 32) and batch.indices.tolist() == [3, 0]


def test_epoch_order_is_a_seeded_permutation() -> None:
    data = ParticleData(_stack(_raw_images(10, seed=3)), invert=False, subset=np.arange(2, 9))
    order = data.order(seed=5, epoch=1)
    assert sorted(order.tolist()) == list(range(2, 9))
    np.testing.assert_array_equal(order, data.order(seed=5, epoch=1))
    assert not np.array_equal(order, data.order(seed=5, epoch=2))
    np.testing.assert_array_equal(np.concatenate(data.batches(5, 1, 3)), order)


@pytest.mark.parametrize("box", [41, 42, 7])
def test_bad_boxes_are_input_errors(box: int) -> None:
    with pytest.raises(InputError, match=f"box {box} must be even and at most the stack's 40"):
        ParticleData(_stack(_raw_images(2)), box=box, invert=False)


def test_half_sets_from_the_file() -> None:
    labels = np.array([2, 1, 1, 2, 2, 1, 2])
    a, b = split_half_sets(_stack(_raw_images(7), half_set=labels), seed=0)
    np.testing.assert_array_equal(a, [1, 2, 5])
    np.testing.assert_array_equal(b, [0, 3, 4, 6])


@pytest.mark.parametrize("labels", [None, np.ones(11, dtype=np.int64)])
def test_half_sets_seeded_split(labels: np.ndarray | None) -> None:
    """Without usable labels (none, or a single half): a seeded split, floor/ceil of N / 2."""
    stack = _stack(_raw_images(11), half_set=labels)
    a, b = split_half_sets(stack, seed=3)
    assert (len(a), len(b)) == (5, 6)
    np.testing.assert_array_equal(np.sort(np.concatenate([a, b])), np.arange(11))
    assert np.all(np.diff(a) > 0) and np.all(np.diff(b) > 0)
    again = split_half_sets(_stack(_raw_images(11)), seed=3)
    np.testing.assert_array_equal(a, again[0])
    others = [split_half_sets(stack, seed=s)[0] for s in range(4, 9)]
    assert any(not np.array_equal(a, o) for o in others)
