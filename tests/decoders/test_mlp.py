"""The ``mlp`` decoder (FourierNet baseline): symmetry, rotation convention, export, sizes."""

from __future__ import annotations

import pytest
import torch

from cryospin.core.fourier import fft3_centered, hartley_from_fourier
from cryospin.core.testing import random_rotations
from cryospin.decoders import MLPDecoder

L = 12


def make(seed: int = 0, **cfg: object) -> MLPDecoder:
    torch.manual_seed(seed)
    cfg.setdefault("hidden", 32)
    return MLPDecoder(MLPDecoder.Config(**cfg), L, 2.0).double()


def rotations(n: int, seed: int) -> torch.Tensor:
    return random_rotations(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_paper_parameter_count() -> None:
    """FourierNet's default sizes: about 0.33 M parameters (paper Table 2, implicit decoder)."""
    n = sum(p.numel() for p in MLPDecoder(MLPDecoder.Config(), 128, 1.0).parameters())
    assert round(n / 1e6, 2) == 0.33


@pytest.mark.parametrize("encoding", ["siren", "positional"])
def test_slice_values_are_network_at_k_R(encoding: str) -> None:
    """Pixel ``k`` of the slice of ``R`` is built from ``H(k @ R)`` and ``H(-k @ R)``."""
    d = make(encoding=encoding)
    rot = rotations(3, seed=1)
    c = L // 2
    k = (torch.arange(L, dtype=torch.float64) - c) / (L / 2)
    ky, kx = torch.meshgrid(k, k, indexing="ij")
    plane = torch.stack([kx, ky, torch.zeros_like(kx)], -1)
    p = plane @ rot[:, None]  # (3, L, L, 3): row vector k times R
    with torch.no_grad():
        h_pos, h_neg = d.hartley(p), d.hartley(-p)
        ref = torch.complex((h_pos + h_neg) / 2, (h_neg - h_pos) / 2)
        got = d(rot)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)
    # and that is the Fourier coefficient whose Hartley value is H(k R): Re F - Im F = H
    torch.testing.assert_close(hartley_from_fourier(got), h_pos, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("encoding", ["siren", "positional"])
def test_friedel_symmetry_and_dc(encoding: str) -> None:
    d = make(encoding=encoding)
    with torch.no_grad():
        s = d(rotations(8, seed=2))
    idx = (2 * (L // 2) - torch.arange(L)) % L
    mirrored = s[..., idx[:, None], idx[None, :]].conj()
    assert ((s - mirrored)[..., 1:, 1:].abs().max() / s.abs().max()) < 1e-12
    dc = s[..., L // 2, L // 2]
    assert dc.imag.abs().max() == 0
    torch.testing.assert_close(dc, dc[:1].expand_as(dc), rtol=1e-12, atol=0)


def test_identity_slice_matches_exported_map() -> None:
    """The slice at the identity is the kz=0 plane of the exported map's centred FFT."""
    d = make()
    vol = d.to_map()
    assert vol.shape == (L, L, L) and vol.dtype == torch.float64 and not vol.requires_grad
    plane = fft3_centered(vol)[L // 2]
    with torch.no_grad():
        s = d(torch.eye(3, dtype=torch.float64))
    # Row/column 0 (frequency -L/2) has no Hermitian partner on the even grid; compare the rest.
    torch.testing.assert_close(s[1:, 1:], plane[1:, 1:], rtol=1e-9, atol=1e-9 * s.abs().max())


def test_to_map_chunking_is_invisible() -> None:
    a = make(chunk=7).to_map()
    b = make(chunk=10**6).to_map()
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_radius_mask() -> None:
    d = make(mask_radius=0.5)
    full = make()
    rot = rotations(3, seed=4)
    k = torch.arange(L, dtype=torch.float64) - L // 2
    outside = (k[:, None] ** 2 + k[None, :] ** 2).sqrt() / (L / 2) > 0.5
    with torch.no_grad():
        s, s_full = d(rot), full(rot)
    assert s[..., outside].abs().max() == 0
    torch.testing.assert_close(s[..., ~outside], s_full[..., ~outside], rtol=0, atol=0)
    f = fft3_centered(d.to_map())
    r3 = (k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2).sqrt() / (L / 2)
    assert (f[r3 > 0.5].abs().max() / f.abs().max()) < 1e-12


def test_initial_amplitude_scale() -> None:
    """The initial slices have Fourier amplitudes of the order of ``init_amplitude * L``."""
    torch.manual_seed(0)
    d = MLPDecoder(MLPDecoder.Config(init_amplitude=1.0), 32, 1.0)
    with torch.no_grad():
        s = d(rotations(4, seed=5).float())
    rms = s.abs().pow(2).mean().sqrt().item()
    assert 32 / 100 < rms < 32 * 10


def test_odd_box_rejected_and_config_validation() -> None:
    import pydantic

    with pytest.raises(ValueError, match="even"):
        MLPDecoder(MLPDecoder.Config(), 15, 1.0)
    with pytest.raises(pydantic.ValidationError):
        MLPDecoder.Config(encoding="hash")
    with pytest.raises(pydantic.ValidationError):
        MLPDecoder.Config(layers=3)


@pytest.mark.parametrize("encoding", ["siren", "positional"])
def test_chunked_slices_and_gradients_equal_unchunked(encoding: str) -> None:
    """Checkpointed chunks (7 coordinates, far from a slice's size) change neither the slices nor
    the gradients of the parameters and of the rotations (float64)."""

    def run(chunk: int) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        d = make(encoding=encoding, chunk=chunk)
        rot = rotations(3, seed=6).requires_grad_(True)
        target = torch.randn(
            3, L, L, dtype=torch.complex128, generator=torch.Generator().manual_seed(9)
        )
        s = d(rot)
        ((s - target).abs() ** 2).sum().backward()
        return s.detach(), [p.grad for p in d.parameters()], rot.grad

    s1, g1, r1 = run(7)
    s2, g2, r2 = run(10**6)
    torch.testing.assert_close(s1, s2, rtol=1e-12, atol=1e-12 * s2.abs().max())
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * b.abs().max())
    torch.testing.assert_close(r1, r2, rtol=1e-10, atol=1e-10 * r2.abs().max())
