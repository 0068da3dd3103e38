"""cryospin.core.slicing: DC stays at DC, pose convention (k @ R), Fourier slice theorem against
analytic projections of Gaussian blobs, exact adjointness of insertion, and phase shifts."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cryospin.core import so3
from cryospin.core.fourier import fft2_centered, fft3_centered, ifft2_centered
from cryospin.core.slicing import (
    extract_central_slices,
    extract_points,
    insert_central_slices,
    phase_ramp,
    phase_ramp_points,
    phase_shift,
    slice_coordinates,
)

SETTINGS = settings(max_examples=25, deadline=None)
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def _rotations(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return so3.random_rotations(n, generator=g, dtype=torch.float64)


def _cube_rotations() -> list[torch.Tensor]:
    """The 24 proper rotations of the cube (signed permutation matrices with det +1)."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((-1.0, 1.0), repeat=3):
            m = torch.zeros(3, 3, dtype=torch.float64)
            for r, (c, s) in enumerate(zip(perm, signs, strict=True)):
                m[r, c] = s
            if torch.linalg.det(m) > 0:
                out.append(m)
    assert len(out) == 24
    return out


# ------------------------------------------------------------------------------ DC and identity
@pytest.mark.parametrize("D", [8, 9, 16, 17])
@pytest.mark.parametrize("complex_", [False, True])
def test_identity_slice_is_kz0_plane(D: int, complex_: bool) -> None:
    g = torch.Generator().manual_seed(D)
    v = torch.randn(D, D, D, dtype=torch.float64, generator=g)
    if complex_:
        v = torch.complex(v, torch.randn(D, D, D, dtype=torch.float64, generator=g))
    s = extract_central_slices(v, torch.eye(3, dtype=torch.float64))
    assert s.shape == (D, D) and s.dtype == v.dtype
    torch.testing.assert_close(s, v[D // 2], atol=1e-12, rtol=0)
    # cropping an odd (L+1) grid to an even L slice keeps DC at L // 2
    s2 = extract_central_slices(v, torch.eye(3, dtype=torch.float64)[None], out_box=D - 1)
    lo = D // 2 - (D - 1) // 2
    torch.testing.assert_close(
        s2[0], v[D // 2, lo : lo + D - 1, lo : lo + D - 1], atol=1e-12, rtol=0
    )


@SETTINGS
@given(D=st.integers(4, 17), seed=seeds)
def test_dc_stays_at_dc_for_any_rotation(D: int, seed: int) -> None:
    c = D // 2
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(D, D, D, dtype=torch.float64, generator=g)
    s = extract_central_slices(v, _rotations(5, seed))
    torch.testing.assert_close(s[:, c, c], v[c, c, c].expand(5), atol=1e-12, rtol=0)
    # a delta at DC shows up at the slice's DC with full weight for every pose
    d = torch.zeros(D, D, D, dtype=torch.float64)
    d[c, c, c] = 3.0
    sd = extract_central_slices(d, _rotations(5, seed + 1))
    torch.testing.assert_close(sd[:, c, c], torch.full((5,), 3.0, dtype=torch.float64))
    assert sd.max() <= 3.0 + 1e-12


@pytest.mark.parametrize("D", [9, 10])
def test_pose_convention_k_at_R(D: int) -> None:
    """The slice of pose R reads the volume at k @ R (R^T k): checked on the 24 cube rotations."""
    rng = np.random.default_rng(D)
    c = D // 2
    for R in _cube_rotations():
        a, b = (int(t) for t in rng.integers(-3, 4, size=2))
        p = torch.tensor([a, b, 0.0], dtype=torch.float64) @ R  # volume position (x, y, z)
        px, py, pz = (int(round(float(t))) for t in p)
        v = torch.zeros(D, D, D, dtype=torch.float64)
        v[c + pz, c + py, c + px] = 1.0
        s = extract_central_slices(v, R)
        expect = torch.zeros(D, D, dtype=torch.float64)
        expect[c + b, c + a] = 1.0
        torch.testing.assert_close(s, expect, atol=1e-12, rtol=0)


def test_slice_coordinates_rows() -> None:
    R = _rotations(3, 1)
    q = slice_coordinates(R, 7)
    k = torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64)  # pixel [i, j] = [c - 1, c + 2]
    torch.testing.assert_close(q[:, 3 - 1, 3 + 2], (k @ R))


def test_outside_grid_is_zero_and_batch_shape() -> None:
    v = torch.ones(8, 8, 8, dtype=torch.float64)
    R = _rotations(6, 3).reshape(2, 3, 3, 3)
    s = extract_central_slices(v, R, out_box=8, oversampling=4.0)
    assert s.shape == (2, 3, 8, 8)
    assert s[..., 0, 0].abs().max() == 0  # |k| = 4 sqrt(2) * 4 voxels from DC: off the grid


# ------------------------------------------------------------------------------ slice theorem
def _blobs(seed: int, L: int, n: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    centres = g.uniform(-L / 6, L / 6, size=(n, 3))  # (x, y, z) in pixels from the centre
    sigmas = g.uniform(2.0, 3.5, size=n)
    amps = g.uniform(0.5, 1.5, size=n)
    return centres, sigmas, amps


def _blob_volume(D: int, centres: np.ndarray, sigmas: np.ndarray, amps: np.ndarray) -> torch.Tensor:
    i = torch.arange(D, dtype=torch.float64) - D // 2
    z, y, x = torch.meshgrid(i, i, i, indexing="ij")
    v = torch.zeros(D, D, D, dtype=torch.float64)
    for (cx, cy, cz), s, a in zip(centres, sigmas, amps, strict=True):
        v += a * torch.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * s * s))
    return v


def _analytic_projection(
    L: int, R: torch.Tensor, centres: np.ndarray, sigmas: np.ndarray, amps: np.ndarray
) -> torch.Tensor:
    """Integral along z of V(R^T r): an isotropic Gaussian at c projects to a 2D Gaussian at the
    (x, y) of R c (RELION A maps map to image coordinates), times sqrt(2 pi) sigma."""
    i = torch.arange(L, dtype=torch.float64) - L // 2
    y, x = torch.meshgrid(i, i, indexing="ij")
    out = torch.zeros(R.shape[0], L, L, dtype=torch.float64)
    for c, s, a in zip(centres, sigmas, amps, strict=True):
        ci = R @ torch.as_tensor(c)
        dx = x[None] - ci[:, 0, None, None]
        dy = y[None] - ci[:, 1, None, None]
        out += a * math.sqrt(2 * math.pi) * s * torch.exp(-(dx**2 + dy**2) / (2 * s * s))
    return out


@pytest.mark.parametrize("L", [32, 33])
def test_fourier_slice_theorem_gaussian_blobs(L: int) -> None:
    """Inverse transform of the extracted slice == analytic projection.

    The blob volume is sampled on a 3x zero-padded grid (D = 3 L), transformed, and sliced with
    ``oversampling=3`` so that slice pixels keep the 1/L spacing; trilinear interpolation on the
    3x finer Fourier grid is accurate to about 1-2% of the peak for L >= 32 (~3% for L = 24;
    1x gives ~15%, 2x ~3-4%). Tolerance: 3% of the projection's maximum. The transposed pose
    convention must fail by far.
    """
    pad = 3
    centres, sigmas, amps = _blobs(L, L)
    vol_ft = fft3_centered(_blob_volume(pad * L, centres, sigmas, amps))
    R = _rotations(5, L)
    proj = ifft2_centered(extract_central_slices(vol_ft, R, out_box=L, oversampling=pad))
    ref = _analytic_projection(L, R, centres, sigmas, amps)
    scale = ref.abs().max()
    assert (proj.imag.abs().max() / scale) < 1e-8  # real volume -> Hermitian slice
    err = (proj.real - ref).abs().max() / scale
    assert err < 0.03, f"slice-theorem error {err:.4f} of the peak"
    wrong = _analytic_projection(L, R.transpose(-1, -2), centres, sigmas, amps)
    assert ((proj.real - wrong).abs().max() / scale) > 0.2


# ------------------------------------------------------------------------------ adjoint
@SETTINGS
@given(
    D=st.integers(3, 12),
    n=st.integers(1, 4),
    crop=st.integers(0, 2),
    over=st.sampled_from([1.0, 0.7, 1.5]),
    complex_=st.booleans(),
    seed=seeds,
)
def test_insert_is_adjoint_of_extract(
    D: int, n: int, crop: int, over: float, complex_: bool, seed: int
) -> None:
    L = max(D - crop, 1)
    g = torch.Generator().manual_seed(seed)
    R = _rotations(n, seed)
    v = torch.randn(D, D, D, dtype=torch.float64, generator=g)
    s = torch.randn(n, L, L, dtype=torch.float64, generator=g)
    if complex_:
        v = torch.complex(v, torch.randn(D, D, D, dtype=torch.float64, generator=g))
        s = torch.complex(s, torch.randn(n, L, L, dtype=torch.float64, generator=g))
    lhs = (extract_central_slices(v, R, out_box=L, oversampling=over).conj() * s).sum()
    back, w = insert_central_slices(s, R, D, oversampling=over)
    rhs = (v.conj() * back).sum()
    assert back.dtype == s.dtype and w.dtype == torch.float64
    assert abs(complex(lhs) - complex(rhs)) <= 1e-10 * (1 + abs(complex(lhs)))
    # weights = insertion of all-ones slices = adjoint applied to ones
    ones_back, _ = insert_central_slices(torch.ones(n, L, L, dtype=torch.float64), R, D, over)
    torch.testing.assert_close(w, ones_back)


def test_insert_identity_weights_and_roundtrip() -> None:
    D = 9
    s = torch.randn(1, D, D, dtype=torch.float64)
    vol, w = insert_central_slices(s, torch.eye(3, dtype=torch.float64)[None], D)
    torch.testing.assert_close(vol[D // 2], s[0], atol=1e-12, rtol=0)
    assert vol.abs().sum() == pytest.approx(s.abs().sum().item())
    torch.testing.assert_close(w[D // 2], torch.ones(D, D, dtype=torch.float64))
    assert w.sum() == pytest.approx(D * D)


def test_gradients_reach_volume_and_rotations() -> None:
    D = 7
    g = torch.Generator().manual_seed(0)
    v = torch.randn(D, D, D, dtype=torch.float64, generator=g, requires_grad=True)
    omega = torch.randn(2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v_, o_: extract_central_slices(v_, so3.exp_map(o_), out_box=5), (v, omega)
    )


def test_float32_dtype_kept() -> None:
    v = torch.randn(9, 9, 9)
    R = _rotations(2, 0).float()
    assert extract_central_slices(v, R).dtype == torch.float32
    vc = torch.randn(9, 9, 9, dtype=torch.complex64)
    assert extract_central_slices(vc, R).dtype == torch.complex64
    vol, w = insert_central_slices(torch.randn(2, 9, 9, dtype=torch.complex64), R, 9)
    assert vol.dtype == torch.complex64 and w.dtype == torch.float32


# ------------------------------------------------------------------------------ phase shift
@SETTINGS
@given(
    L=st.integers(2, 16),
    sx=st.integers(-20, 20),
    sy=st.integers(-20, 20),
    seed=seeds,
)
def test_integer_phase_shift_is_roll(L: int, sx: int, sy: int, seed: int) -> None:
    x = torch.as_tensor(np.random.default_rng(seed).standard_normal((2, L, L)))
    shifts = torch.tensor([[sx, sy], [sx, sy]], dtype=torch.float64)
    moved = ifft2_centered(phase_shift(fft2_centered(x), shifts))
    torch.testing.assert_close(moved.real, torch.roll(x, (sy, sx), dims=(-2, -1)))
    assert moved.imag.abs().max() < 1e-10


def test_fractional_shift_moves_gaussian_centre() -> None:
    L = 32
    i = torch.arange(L, dtype=torch.float64) - L // 2
    y, x = torch.meshgrid(i, i, indexing="ij")
    img = torch.exp(-(x**2 + y**2) / (2 * 2.0**2))
    t = torch.tensor([1.3, -2.6], dtype=torch.float64)
    moved = ifft2_centered(phase_shift(fft2_centered(img), t)).real
    ref = torch.exp(-((x - 1.3) ** 2 + (y + 2.6) ** 2) / (2 * 2.0**2))
    torch.testing.assert_close(moved, ref, atol=1e-8, rtol=0)


# ------------------------------------------------------------------------------ chosen points
@pytest.mark.parametrize("complex_", [False, True])
def test_extract_points_is_scipy_trilinear_interpolation(complex_: bool) -> None:
    """Independent reference: scipy's linear ``map_coordinates`` at ``k @ R + D // 2``."""
    from scipy.ndimage import map_coordinates

    D = 11
    g = torch.Generator().manual_seed(5)
    v = torch.randn(D, D, D, dtype=torch.float64, generator=g)
    if complex_:
        v = torch.complex(v, torch.randn(D, D, D, dtype=torch.float64, generator=g))
    rot = _rotations(4, 6)
    freqs = torch.rand(30, 2, generator=g, dtype=torch.float64) * 8 - 4  # |k| < 4 * sqrt(2)
    got = extract_points(v, rot, freqs)
    assert got.shape == (4, 30) and got.dtype == v.dtype
    k3 = np.concatenate([freqs.numpy(), np.zeros((30, 1))], 1)  # (kx, ky, 0)
    for b in range(4):
        xyz = k3 @ rot[b].numpy() + D // 2  # (x, y, z) voxel positions
        coords = xyz[:, ::-1].T  # [z, y, x] axes of the volume
        parts = [v.real, v.imag] if complex_ else [v]
        ref = [map_coordinates(p.numpy(), coords, order=1, mode="grid-constant") for p in parts]
        expect = ref[0] + 1j * ref[1] if complex_ else ref[0]
        np.testing.assert_allclose(got[b].numpy(), expect, rtol=0, atol=1e-12)


def test_extract_points_equal_slices_at_their_pixels() -> None:
    D = 17
    v = torch.randn(D, D, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    rot = _rotations(6, 2).reshape(2, 3, 3, 3)
    L = 12
    mask = torch.rand(L, L, generator=torch.Generator().manual_seed(3)) < 0.4
    k = (mask.nonzero() - L // 2).flip(-1)  # (kx, ky) of the pixels, row-major
    full = extract_central_slices(v, rot, out_box=L)
    torch.testing.assert_close(extract_points(v, rot, k), full[..., mask], atol=0, rtol=0)


def test_phase_ramp_points_equal_phase_ramp_at_their_pixels() -> None:
    L = 10
    shifts = torch.randn(3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    mask = torch.rand(L, L, generator=torch.Generator().manual_seed(5)) < 0.5
    k = (mask.nonzero() - L // 2).flip(-1)
    got = phase_ramp_points(shifts, k, L)
    assert got.shape == (3, 2, int(mask.sum()))
    torch.testing.assert_close(got, phase_ramp(shifts, L)[..., mask], atol=1e-15, rtol=0)
    # the analytic value exp(-2 pi i k.s / L)
    phase = (shifts[..., None, :] * k.to(torch.float64)).sum(-1) / L
    torch.testing.assert_close(got, torch.exp(-2j * math.pi * phase), atol=1e-12, rtol=0)
