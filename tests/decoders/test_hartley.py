"""The ``hartley`` decoder against independent references (numpy FFTs, core slicing)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryospin.core.fourier import fft3_centered
from cryospin.core.slicing import extract_central_slices
from cryospin.core.testing import random_rotations
from cryospin.decoders import HartleyDecoder
from cryospin.decoders._grid import pad_high_wrap

L = 16


def blob_map(box: int, seed: int = 0) -> torch.Tensor:
    """A real, asymmetric, smooth test map ``(L, L, L)`` in float64: a few off-centre Gaussians."""
    rng = np.random.default_rng(seed)
    c = np.arange(box) - box // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    vol = np.zeros((box, box, box))
    for _ in range(5):
        centre = rng.uniform(-box / 5, box / 5, 3)
        width = rng.uniform(1.0, 2.5)
        r2 = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2
        vol += rng.uniform(0.5, 1.5) * np.exp(-r2 / (2 * width**2))
    vol += 0.05 * rng.standard_normal(vol.shape)  # some high-frequency content
    return torch.from_numpy(vol)


def numpy_centred_fft3(vol: np.ndarray) -> np.ndarray:
    """Independent reference: ``fftshift(fftn(ifftshift(vol)))`` with numpy."""
    return np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(vol)))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def vol() -> torch.Tensor:
    return blob_map(L)


@pytest.fixture(scope="module")
def dec(vol: torch.Tensor) -> HartleyDecoder:
    return HartleyDecoder.from_map(vol, pixel_size_A=3.0)


def rotations(n: int = 8, seed: int = 3) -> torch.Tensor:
    return random_rotations(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_from_map_dtype_and_parameters(dec: HartleyDecoder) -> None:
    assert dec.mantissa.dtype == torch.float64 and dec.exponent.dtype == torch.float64
    assert dec.mantissa.shape == (L + 1,) * 3 and dec.grid_size == L + 1
    assert sum(p.numel() for p in dec.parameters()) == 2 * (L + 1) ** 3


def test_paper_parameter_count() -> None:
    """``2 * 129^3 = 4.29 M`` parameters at ``L = 128``, as in the paper's Table 2."""
    d = HartleyDecoder(HartleyDecoder.Config(), 128, 1.0)
    assert sum(p.numel() for p in d.parameters()) == 2 * 129**3
    assert round(2 * 129**3 / 1e6, 2) == 4.29


def test_hartley_volume_is_re_minus_im(vol: torch.Tensor, dec: HartleyDecoder) -> None:
    """``m * exp(e)`` is ``Re F - Im F`` of the map's transform on the padded odd grid."""
    f = torch.from_numpy(numpy_centred_fft3(vol.numpy()))
    f_pad = torch.from_numpy(np.pad(f.numpy(), ((0, 1),) * 3, mode="wrap"))
    h = dec.hartley_volume().detach()
    torch.testing.assert_close(h, f_pad.real - f_pad.imag, rtol=1e-10, atol=1e-9)
    # H(-k) = Re F + Im F for a real map: index reversal on the odd grid.
    torch.testing.assert_close(
        torch.flip(h, (0, 1, 2)), f_pad.real + f_pad.imag, rtol=1e-10, atol=1e-9
    )


def test_slices_equal_core_slicing_of_fourier_volume(
    vol: torch.Tensor, dec: HartleyDecoder
) -> None:
    """Decoder slices = the core slicing function applied to the map's Fourier transform."""
    rot = rotations()
    with torch.no_grad():
        got = dec(rot)
    f = fft3_centered(vol)
    # On the padded odd grid the equality is exact over the whole slice.
    ref = extract_central_slices(pad_high_wrap(f, 3), rot)[..., :L, :L]
    assert rel_err(got, ref) < 1e-10
    # On the map's own L^3 grid it holds wherever the interpolation stays inside that grid,
    # i.e. |k| < L/2 - 1 (outside, the L grid reads zeros where the odd grid has +L/2 samples).
    ref_l = extract_central_slices(f, rot)
    k = torch.arange(L, dtype=torch.float64) - L // 2
    inside = (k[:, None] ** 2 + k[None, :] ** 2).sqrt() < L / 2 - 1
    assert rel_err(got[..., inside], ref_l[..., inside]) < 1e-5


def test_identity_slice_is_kz0_plane_numpy(vol: torch.Tensor, dec: HartleyDecoder) -> None:
    """Forward at the identity is the ``kz = 0`` plane of numpy's centred 3D FFT of the map."""
    ref = numpy_centred_fft3(vol.numpy())[L // 2]
    with torch.no_grad():
        got = dec(torch.eye(3, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9 * np.abs(ref).max())


def test_rotation_convention_quarter_turn(vol: torch.Tensor, dec: HartleyDecoder) -> None:
    """A 90-degree turn about z samples the kz=0 plane at ``k @ R = (ky, -kx)`` (numpy indices)."""
    rz = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    plane = numpy_centred_fft3(vol.numpy())[L // 2]  # [ky, kx]
    c = L // 2
    k = np.arange(L) - c
    kx, ky = np.meshgrid(k, k, indexing="xy")  # kx varies along columns, ky along rows
    # value at frequency (x, y) = (ky, -kx), periodic on the DFT grid
    ref = plane[(c - kx) % L, (c + ky) % L]
    with torch.no_grad():
        got = dec(rz).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9 * np.abs(ref).max())


def test_rotation_about_x_picks_ky_kz_plane(vol: torch.Tensor, dec: HartleyDecoder) -> None:
    """``Rx(90)``: ``k @ R`` for ``k = (kx, ky, 0)`` is ``(kx, 0, -ky)``: the ky = 0 plane."""
    rx = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    f = numpy_centred_fft3(vol.numpy())  # [kz, ky, kx]
    c = L // 2
    k = np.arange(L) - c
    kx, ky = np.meshgrid(k, k, indexing="xy")
    ref = f[(c - ky) % L, c, (c + kx) % L]
    with torch.no_grad():
        got = dec(rx).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9 * np.abs(ref).max())


def test_to_map_round_trip(vol: torch.Tensor, dec: HartleyDecoder) -> None:
    out = dec.to_map().detach()
    assert out.shape == (L, L, L) and out.dtype == torch.float64
    torch.testing.assert_close(out, vol, rtol=0, atol=1e-10 * vol.abs().max().item())


def test_to_map_round_trip_float32() -> None:
    vol = blob_map(L, seed=5).float()
    d = HartleyDecoder.from_map(vol, pixel_size_A=3.0)
    assert d.mantissa.dtype == torch.float32
    assert rel_err(d.to_map().detach(), vol) < 1e-5


@pytest.mark.parametrize("box", [8, 10, 16])
def test_round_trip_box_sizes(box: int) -> None:
    vol = blob_map(box, seed=box)
    d = HartleyDecoder.from_map(vol, 1.0)
    torch.testing.assert_close(d.to_map().detach(), vol, rtol=0, atol=1e-10)
    ref = numpy_centred_fft3(vol.numpy())[box // 2]
    with torch.no_grad():
        np.testing.assert_allclose(
            d(torch.eye(3, dtype=torch.float64)).numpy(), ref, atol=1e-9 * np.abs(ref).max()
        )


def _friedel_residual(s: torch.Tensor) -> float:
    """``max |F(-k) - conj F(k)|`` over pixels with a partner on the even grid (indices >= 1)."""
    n = s.shape[-1]
    idx = (2 * (n // 2) - torch.arange(n)) % n
    mirrored = s[..., idx[:, None], idx[None, :]].conj()
    return ((s - mirrored)[..., 1:, 1:].abs().max() / s.abs().max()).item()


def test_friedel_symmetry_from_map(dec: HartleyDecoder) -> None:
    with torch.no_grad():
        s = dec(rotations(16, seed=11))
    assert _friedel_residual(s) < 1e-12
    # DC is real (the sum of the map) and the same for every rotation.
    dc = s[..., L // 2, L // 2]
    assert dc.imag.abs().max() < 1e-9 * dc.real.abs().max()
    torch.testing.assert_close(dc, dc[:1].expand_as(dc))


def test_friedel_symmetry_random_init() -> None:
    torch.manual_seed(0)
    d = HartleyDecoder(HartleyDecoder.Config(init_mantissa_std=1.0), L, 1.0).double()
    with torch.no_grad():
        s = d(rotations(16, seed=12))
    assert _friedel_residual(s) < 1e-12
    # ... and so the exported map is real: its transform is the cropped Fourier volume.
    torch.testing.assert_close(
        fft3_centered(d.to_map().detach())[1:, 1:, 1:],
        d.fourier_volume().detach()[1:, 1:, 1:],
        rtol=1e-9,
        atol=1e-9,
    )


@pytest.mark.parametrize("radius", [0.25, 0.5, 1.0])
def test_radius_mask(vol: torch.Tensor, radius: float) -> None:
    d = HartleyDecoder.from_map(vol, 1.0, HartleyDecoder.Config(mask_radius=radius))
    full = HartleyDecoder.from_map(vol, 1.0)
    rot = rotations(4, seed=13)
    k = torch.arange(L, dtype=torch.float64) - L // 2
    r2 = (k[:, None] ** 2 + k[None, :] ** 2).sqrt() / (L / 2)
    outside = r2 > radius
    with torch.no_grad():
        s, s_full = d(rot), full(rot)
    assert outside.any()
    assert s[..., outside].abs().max() == 0
    torch.testing.assert_close(s[..., ~outside], s_full[..., ~outside], rtol=0, atol=0)
    # The exported map is low-passed the same way: its transform vanishes beyond the radius.
    f = fft3_centered(d.to_map().detach())
    r3 = (k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2).sqrt() / (L / 2)
    assert (f[r3 > radius].abs().max() / f.abs().max()) < 1e-12
    inner = r3 <= radius
    inner[0, :, :] = inner[:, 0, :] = inner[:, :, 0] = False
    torch.testing.assert_close(f[inner], fft3_centered(vol)[inner], rtol=1e-9, atol=1e-9)


def test_mask_radius_changeable_at_run_time(dec: HartleyDecoder) -> None:
    rot = rotations(2)
    with torch.no_grad():
        before = dec(rot)
        dec.mask_radius = 0.5
        try:
            masked = dec(rot)
        finally:
            dec.mask_radius = None
        after = dec(rot)
    assert (masked == 0).sum() > (before == 0).sum()
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_load_map_mantissa_is_order_one(vol: torch.Tensor, dec: HartleyDecoder) -> None:
    """``e`` is the log shell RMS (radial, smooth) and ``m`` has unit RMS in every shell."""
    from cryospin.decoders._grid import radius_grid

    shell = radius_grid(L + 1, L // 2, 3, dtype=torch.float64).round().long()
    m, e = dec.mantissa.detach(), dec.exponent.detach()
    for s in range(int(shell.max()) + 1):
        sel = shell == s
        assert torch.allclose(e[sel], e[sel][0].expand(int(sel.sum())))
        rms = m[sel].pow(2).mean().sqrt().item()
        assert rms == pytest.approx(1.0, rel=1e-9)


def test_default_initialisation() -> None:
    """``exp(e)`` starts at ``init_amplitude * L`` at DC and decays as ``exp(-decay r^2)``."""
    cfg = HartleyDecoder.Config(init_amplitude=2.0, init_decay=3.0, init_mantissa_std=0.1)
    torch.manual_seed(0)
    d = HartleyDecoder(cfg, 32, 1.0)
    c = 16
    e = d.exponent.detach().double()
    assert e[c, c, c].item() == pytest.approx(math.log(2.0 * 32), rel=1e-6)
    # at Nyquist along x: r = 1
    assert e[c, c, 32].item() == pytest.approx(math.log(64) - 3.0, rel=1e-6)
    assert e.flatten().argmax().item() == (c * 33 + c) * 33 + c
    m = d.mantissa.detach()
    assert 0.09 < m.std().item() < 0.11 and abs(m.mean().item()) < 0.01


def test_gradients_reach_parameters_and_rotations(dec: HartleyDecoder) -> None:
    d = HartleyDecoder.from_map(blob_map(L, seed=2), 1.0)
    rot = rotations(3).requires_grad_(True)
    loss = d(rot).abs().pow(2).sum()
    loss.backward()
    assert d.mantissa.grad is not None and d.mantissa.grad.abs().sum() > 0
    assert d.exponent.grad is not None and d.exponent.grad.abs().sum() > 0
    assert rot.grad is not None and torch.isfinite(rot.grad).all()


def test_odd_box_rejected() -> None:
    with pytest.raises(ValueError, match="even"):
        HartleyDecoder(HartleyDecoder.Config(), 15, 1.0)
    with pytest.raises(ValueError, match="shape"):
        HartleyDecoder(HartleyDecoder.Config(), 16, 1.0).load_map(torch.zeros(8, 8, 8))


def test_config_rejects_unknown_and_invalid() -> None:
    import pydantic

    with pytest.raises(pydantic.ValidationError):
        HartleyDecoder.Config(mask_radius=-1.0)
    with pytest.raises(pydantic.ValidationError):
        HartleyDecoder.Config(radius=1.0)


def test_default_init_fits_known_poses_with_adam_lr_0_05() -> None:
    """From the default initialisation, Adam at lr 0.05 fits slices of unit-variance images fast.

    The target map is scaled so that its projections have unit variance (the engine's
    standardised images); the relative slice loss must fall more than 30-fold in 60
    steps of 8 known poses each.
    """
    box = 12
    vol = blob_map(box, seed=7).float()
    truth = HartleyDecoder.from_map(vol, 1.0)
    with torch.no_grad():
        from cryospin.core.fourier import ifft2_centered

        scale = ifft2_centered(truth(random_rotations(32))).real.std()
    truth = HartleyDecoder.from_map(vol / scale, 1.0)
    torch.manual_seed(0)
    d = HartleyDecoder(HartleyDecoder.Config(), box, 1.0)
    opt = torch.optim.Adam(d.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(60):
        rot = random_rotations(8, generator=g)
        with torch.no_grad():
            target = truth(rot)
        loss = (d(rot) - target).abs().pow(2).mean() / target.abs().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert 0.5 < losses[0] < 2.0  # initial slices are small next to the data, not huge
    assert max(losses[-5:]) < 0.03 * losses[0], losses[-5:]
    assert all(np.isfinite(losses)), losses
