"""TRPV1 end to end: project the map at the STAR poses, apply the STAR's CTF and shifts, compare.

This pins down pose, shift and CTF conventions together on real data (docs/CONVENTIONS.md items 7-9,
12-13), with the core's projector (:mod:`cryospin.core.slicing`) and CTF (:mod:`cryospin.core.ctf`):

* **pose**: the slice of the STAR's RELION matrix ``A`` (not ``A^T``) matches the image;
* **shift**: ``image = phase_shift(CTF * slice, -origin / pixel_size)``, i.e. the particle sits at
  ``-rlnOriginX/YAngst``; RELION's origin is the shift that re-centres it;
* **contrast**: the raw RELION images correlate *negatively* with ``CTF * projection`` (the core
  CTF has cryoDRGN's sign, CTF(0) = -w, predicting protein-dark images): RELION stacks are
  protein-bright and need ``invert=True`` (:func:`cryospin.io.contrast.default_invert`).

Correlations are normalised cross-correlations of the centred transforms over 1/200 to
1/12 Å^-1, where the signal of these 10 noisy particles lies.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryospin.core.ctf import ctf_from_params
from cryospin.core.fourier import fft2_centered, fft3_centered, freq_grid
from cryospin.core.slicing import extract_central_slices, phase_shift
from cryospin.core.so3 import random_rotations
from cryospin.io import read_map
from cryospin.io.contrast import default_invert


@pytest.fixture(scope="module")
def setup(trpv1, stacks):
    volume, voxel = read_map(stacks / "trpv1" / "trpv1_volume.mrc")
    assert voxel == pytest.approx(trpv1.pixel_size_A)
    vol_ft = fft3_centered(torch.tensor(volume, dtype=torch.float64))
    images = torch.tensor(trpv1.images.read(np.arange(len(trpv1))), dtype=torch.float64)
    ctf = ctf_from_params(trpv1.ctf, trpv1.box, trpv1.pixel_size_A, dtype=torch.float64)
    k = freq_grid(trpv1.box, trpv1.pixel_size_A, 2, dtype=torch.float64).norm(dim=-1)
    band = (k > 1 / 200) & (k < 1 / 12)
    origins_px = torch.tensor(trpv1.shifts_A / trpv1.pixel_size_A)

    def corr(rotations: np.ndarray, shift_sign: float = -1.0) -> np.ndarray:
        model = extract_central_slices(vol_ft, torch.tensor(rotations)) * ctf
        model = phase_shift(model, shift_sign * origins_px)[..., band]
        data = fft2_centered(images)[..., band]
        num = (model * data.conj()).real.sum(-1)
        return (num / (model.abs().norm(dim=-1) * data.abs().norm(dim=-1))).numpy()

    return trpv1, corr


def test_projections_match_images_better_than_random_poses(setup):
    stack, corr = setup
    sign = -1.0 if default_invert(stack) else 1.0  # the documented contrast default
    true = sign * corr(stack.rotations)
    gen = torch.Generator().manual_seed(0)
    random = np.stack(
        [
            sign * corr(random_rotations(len(stack), generator=gen, dtype=torch.float64).numpy())
            for _ in range(30)
        ]
    )
    # every particle: its own pose beats each of 30 random poses, by a clear margin on average
    assert np.all(true > random.max(axis=0)), (true, random.max(axis=0))
    assert true.min() > 0.15
    assert true.mean() > 2.5 * random.mean()


def test_contrast_sign_relion_is_protein_bright(setup):
    stack, corr = setup
    raw = corr(stack.rotations)
    assert np.all(raw < -0.15)  # raw images anti-correlate with CTF * projection
    assert default_invert(stack) is True


def test_shift_sign_and_pose_convention(setup):
    stack, corr = setup
    minus_origin = -corr(stack.rotations, shift_sign=-1.0)
    plus_origin = -corr(stack.rotations, shift_sign=+1.0)
    no_shift = -corr(stack.rotations, shift_sign=0.0)
    transposed = -corr(stack.rotations.transpose(0, 2, 1))
    assert np.all(minus_origin > plus_origin + 0.05)
    assert np.all(minus_origin > no_shift)
    assert minus_origin.mean() > transposed.mean() + 0.04
