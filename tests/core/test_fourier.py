"""cryospin.core.fourier against independent references (numpy FFT with explicit shifts, direct DFT
sums), for even and odd sizes, float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cryospin.core import fourier as fr

SETTINGS = settings(max_examples=40, deadline=None)
sizes = st.integers(min_value=1, max_value=17)
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def _rand(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def _dft_matrix(L: int) -> np.ndarray:
    """Direct centred DFT matrix: F[u] = sum_n x[n] exp(-2 pi i (u - c)(n - c) / L), c = L // 2."""
    c = L // 2
    idx = np.arange(L) - c
    return np.exp(-2j * np.pi * np.outer(idx, idx) / L)


# ------------------------------------------------------------------------------ centred FFT
@SETTINGS
@given(L=sizes, b=st.integers(1, 3), seed=seeds)
def test_fft2_centered_matches_numpy_with_explicit_shifts(L: int, b: int, seed: int) -> None:
    x = _rand(seed, b, L, L)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1))), axes=(-2, -1))
    got = fr.fft2_centered(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-10 * L * L)
    # and against the direct sum with DC and origin at L // 2 (independent of any shift routine)
    m = _dft_matrix(L)
    direct = np.einsum("uy,byx,vx->buv", m, x, m)
    np.testing.assert_allclose(got, direct, atol=1e-9 * L * L)


@SETTINGS
@given(L=st.integers(1, 9), seed=seeds)
def test_fft3_centered_matches_direct_sum(L: int, seed: int) -> None:
    x = _rand(seed, L, L, L)
    m = _dft_matrix(L)
    direct = np.einsum("az,by,cx,zyx->abc", m, m, m, x)
    got = fr.fft3_centered(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(got, direct, atol=1e-9 * L**3)
    back = fr.ifft3_centered(torch.as_tensor(got)).numpy()
    np.testing.assert_allclose(back, x, atol=1e-12 * L**3)


@pytest.mark.parametrize("L", [6, 7, 8, 9, 64, 65])
@pytest.mark.parametrize("ndim", [2, 3])
def test_dc_sits_at_center(L: int, ndim: int) -> None:
    if ndim == 3 and L > 9:
        L = L // 4
    x = torch.full((L,) * ndim, 2.5, dtype=torch.float64)
    f = fr.fftn_centered(x, ndim)
    nz = torch.nonzero(f.abs() > 1e-9 * L**ndim)
    assert nz.tolist() == [[L // 2] * ndim]
    assert f[(L // 2,) * ndim].real.item() == pytest.approx(2.5 * L**ndim)
    # a delta at the real-space centre L // 2 has a flat, real, positive spectrum
    d = torch.zeros((L,) * ndim, dtype=torch.float64)
    d[(L // 2,) * ndim] = 1.0
    torch.testing.assert_close(
        fr.fftn_centered(d, ndim), torch.ones_like(d, dtype=torch.complex128)
    )


@SETTINGS
@given(L=sizes, seed=seeds)
def test_inverse_round_trip_2d(L: int, seed: int) -> None:
    x = torch.as_tensor(_rand(seed, 2, L, L))
    torch.testing.assert_close(fr.ifft2_centered(fr.fft2_centered(x)).real, x)
    xc = torch.complex(x, torch.as_tensor(_rand(seed + 1, 2, L, L)))
    torch.testing.assert_close(fr.fft2_centered(fr.ifft2_centered(xc)), xc)


def test_float32_and_batch_dims() -> None:
    x = torch.randn(2, 3, 8, 8)
    f = fr.fft2_centered(x)
    assert f.dtype == torch.complex64 and f.shape == x.shape
    assert fr.ht2_centered(x).dtype == torch.float32
    assert fr.fourier_crop(x, 5).dtype == torch.float32


# ------------------------------------------------------------------------------ Hartley
@SETTINGS
@given(L=sizes, seed=seeds)
def test_hartley_is_re_minus_im_and_cas_sum(L: int, seed: int) -> None:
    x = _rand(seed, L, L)
    f = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x)))
    h = fr.ht2_centered(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(h, f.real - f.imag, atol=1e-10 * L * L)
    # direct cas sum: H[u, v] = sum x[y, x] cas(2 pi ((u-c)(y-c) + (v-c)(x-c)) / L)
    c = L // 2
    i = np.arange(L) - c
    ph = (
        2
        * np.pi
        * (
            i[:, None, None, None] * i[None, None, :, None]
            + i[None, :, None, None] * i[None, None, None, :]
        )
        / L
    )
    direct = np.einsum("uvyx,yx->uv", np.cos(ph) + np.sin(ph), x)
    np.testing.assert_allclose(h, direct, atol=1e-9 * L * L)


@SETTINGS
@given(L=sizes, ndim=st.sampled_from([2, 3]), seed=seeds)
def test_fourier_from_hartley_recovers_f(L: int, ndim: int, seed: int) -> None:
    if ndim == 3:
        L = min(L, 9)
    x = torch.as_tensor(_rand(seed, *(L,) * ndim))
    f = fr.fftn_centered(x, ndim)
    h = fr.hartley_from_fourier(f)
    # exact on odd grids, and on even grids for DFTs of real data (periodic -L/2 plane)
    torch.testing.assert_close(fr.fourier_from_hartley(h, ndim), f, atol=1e-10 * L**ndim, rtol=0)


@SETTINGS
@given(L=sizes, seed=seeds)
def test_hartley_self_inverse(L: int, seed: int) -> None:
    x = torch.as_tensor(_rand(seed, 3, L, L))
    torch.testing.assert_close(fr.ht2_centered(fr.ht2_centered(x)), L * L * x)
    torch.testing.assert_close(fr.iht2_centered(fr.ht2_centered(x)), x)
    L3 = min(L, 8)
    v = torch.as_tensor(_rand(seed, L3, L3, L3))
    torch.testing.assert_close(fr.iht3_centered(fr.ht3_centered(v)), v)


@pytest.mark.parametrize("L", [1, 2, 5, 6, 7, 8])
def test_reverse_about_dc(L: int) -> None:
    i = torch.arange(L)
    r = fr.reverse_about_dc(i, 1)
    c = L // 2
    expect = [(2 * c - j) % L for j in range(L)]
    assert r.tolist() == expect
    assert r[c].item() == c  # DC maps to itself
    if L % 2:
        assert r.tolist() == torch.flip(i, (0,)).tolist()


# ------------------------------------------------------------------------------ cropping
@pytest.mark.parametrize("L,lo", [(16, 8), (16, 9), (15, 8), (15, 7), (32, 20), (9, 9)])
def test_fourier_crop_preserves_band_limited_cosines_and_mean(L: int, lo: int) -> None:
    # x[n] = a + cos(2 pi f (n - c) / L + phi) with f < lo/2 resamples exactly onto the coarse
    # grid whose pixel m sits at fine position c + (m - c') L / lo.
    rng = np.random.default_rng(L * 100 + lo)
    c, cc = L // 2, lo // 2
    n = np.arange(L) - c
    m = np.arange(lo) - cc
    fx, fy = rng.integers(0, (lo - 1) // 2 + 1, size=2)
    phx, phy = rng.uniform(0, 2 * np.pi, size=2)
    a = 1.7
    fine = a + np.cos(2 * np.pi * fy * n[:, None] / L + phy) * np.cos(
        2 * np.pi * fx * n[None, :] / L + phx
    )
    coarse = a + np.cos(2 * np.pi * fy * m[:, None] / lo + phy) * np.cos(
        2 * np.pi * fx * m[None, :] / lo + phx
    )
    got = fr.fourier_crop(torch.as_tensor(fine)[None], lo).numpy()[0]
    np.testing.assert_allclose(got, coarse, atol=1e-12)
    assert got.mean() == pytest.approx(fine.mean(), abs=1e-12)


def test_fourier_crop_3d_constant_and_downsample_alias() -> None:
    v = torch.full((2, 10, 10, 10), -0.3, dtype=torch.float64)
    out = fr.fourier_crop(v, 7, ndim=3)
    assert out.shape == (2, 7, 7, 7)
    torch.testing.assert_close(out, torch.full_like(out, -0.3))
    x = torch.randn(3, 12, 12, dtype=torch.float64)
    torch.testing.assert_close(fr.fourier_downsample(x, 6), fr.fourier_crop(x, 6, 2))
    with pytest.raises(ValueError):
        fr.fourier_crop(x, 13)


def test_fourier_crop_is_differentiable() -> None:
    x = torch.randn(1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fr.fourier_crop(t, 5), (x,))


# ------------------------------------------------------------------------------ grids
@pytest.mark.parametrize("L", [6, 7])
def test_freq_grid_matches_fftfreq(L: int) -> None:
    apix = 1.7
    ref = np.fft.fftshift(np.fft.fftfreq(L, d=apix))
    np.testing.assert_allclose(fr.freq_1d(L, apix, dtype=torch.float64).numpy(), ref)
    g = fr.freq_grid(L, apix, 2, dtype=torch.float64).numpy()
    assert g.shape == (L, L, 2)
    np.testing.assert_allclose(g[..., 0], np.broadcast_to(ref[None, :], (L, L)))  # kx along x
    np.testing.assert_allclose(g[..., 1], np.broadcast_to(ref[:, None], (L, L)))  # ky along y
    g3 = fr.freq_grid_3d(L, apix, dtype=torch.float64).numpy()
    np.testing.assert_allclose(g3[..., 2], np.broadcast_to(ref[:, None, None], (L, L, L)))
    np.testing.assert_allclose(g3[..., 0], np.broadcast_to(ref[None, None, :], (L, L, L)))
    assert np.all(g[L // 2, L // 2] == 0)
    torch.testing.assert_close(fr.freq_grid_2d(L, apix), fr.freq_grid(L, apix, 2))


@pytest.mark.parametrize("L", [8, 9])
def test_radial_shells_and_average(L: int) -> None:
    r = fr.radius_grid(L, 2, dtype=torch.float64)
    assert r[L // 2, L // 2] == 0
    assert r[L // 2, 0] == L // 2
    s = fr.shell_index(L, 2)
    assert s.dtype == torch.int64 and s[L // 2, L // 2] == 0
    # the radial average of a function of the shell index returns that function
    vals = torch.arange(L // 2 + 1, dtype=torch.float64) ** 2 + 1
    img = vals[s.clamp_max(L // 2)]
    torch.testing.assert_close(fr.radial_average(img[None].expand(3, L, L)), vals.expand(3, -1))
    s3 = fr.shell_index(L, 3)
    assert s3[L // 2, L // 2, L // 2] == 0 and s3.max() == round(np.sqrt(3) * (L // 2))
