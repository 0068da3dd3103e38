"""Decoder contract checks (rules in :mod:`cryospin.core.testing`)."""

from __future__ import annotations

from typing import Any

import torch

from cryospin.core.interfaces import ComponentConfig, Decoder
from cryospin.core.so3 import random_rotations
from cryospin.core.testing._common import check_config, check_grads, make, name_of


def _check_slices(
    name: str, s: Any, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> None:
    assert isinstance(s, torch.Tensor) and s.is_complex(), (
        f"{name}: slices must be a complex tensor, got {getattr(s, 'dtype', type(s))}"
    )
    assert tuple(s.shape) == shape, f"{name}: slices have shape {tuple(s.shape)}, expected {shape}"
    assert s.dtype == dtype, f"{name}: slices are {s.dtype}, expected {dtype}"
    assert s.device == device, f"{name}: slices on {s.device}, expected {device}"
    assert torch.isfinite(torch.view_as_real(s)).all(), f"{name}: slices contain non-finite values"


def check_decoder_construction(
    cls: type, box: int = 32, pixel_size_A: float = 4.0, config: ComponentConfig | None = None
) -> None:
    """``cls(config, box, pixel_size_A)`` is a :class:`Decoder`."""
    name = name_of(cls)
    dec = make(cls, config, box, pixel_size_A)
    assert isinstance(dec, Decoder), f"{name} must subclass cryospin.core.interfaces.Decoder"
    assert dec.box == box and dec.pixel_size_A == pixel_size_A, (
        f"{name}: box/pixel_size_A not stored (call Decoder.__init__)"
    )


def check_decoder_outputs(
    cls: type,
    box: int = 32,
    pixel_size_A: float = 4.0,
    config: ComponentConfig | None = None,
    batch: int = 3,
    device: str | torch.device = "cpu",
    hermitian: bool = True,
    rtol: float = 1e-4,
) -> None:
    """Slice shapes for ``(B, 3, 3)`` and ``(B, M, 3, 3)``, centring, and ``to_map``.

    ``hermitian=False`` skips the Hermitian-symmetry rule (for a decoder of a complex map).
    """
    name = name_of(cls)
    dev = torch.device(device)
    dec = make(cls, config, box, pixel_size_A).to(dev).eval()
    g = torch.Generator().manual_seed(6)
    rot = random_rotations(batch * 2, generator=g).to(dev)
    with torch.no_grad():
        rot2 = rot.reshape(batch, 2, 3, 3)
        s = dec(rot2[:, 0])
        _check_slices(name, s, (batch, box, box), torch.complex64, dev)
        s2 = dec(rot2)
        _check_slices(name, s2, (batch, 2, box, box), torch.complex64, dev)
        scale = s2.abs().max().item() + 1e-12
        err = (s2[:, 0] - s).abs().max().item() / scale
        assert err < rtol, f"{name}: slices for (B, M, 3, 3) and (B, 3, 3) disagree ({err:.3g})"
        c = box // 2
        dc = s2[..., c, c].reshape(-1)
        dc_err = (dc - dc[0]).abs().max().item() / scale
        assert dc_err < rtol, (
            f"{name}: the DC sample [..., L//2, L//2] changes with the rotation "
            f"(relative {dc_err:.3g}); slices are not centred at L//2"
        )
        if hermitian:
            idx = (2 * c - torch.arange(box, device=dev)) % box
            mirrored = s2[..., idx[:, None], idx[None, :]].conj()
            herm = (s2 - mirrored)[..., 1:, 1:].abs().max().item() / scale
            assert herm < rtol * 10, (
                f"{name}: slices are not Hermitian about L//2 (relative {herm:.3g}); either the "
                "centre is not at L//2 or the map is not real"
            )
        vol = dec.to_map()
    assert isinstance(vol, torch.Tensor) and not vol.is_complex() and vol.is_floating_point(), (
        f"{name}.to_map() must return a real floating tensor, got {getattr(vol, 'dtype', vol)}"
    )
    assert tuple(vol.shape) == (box, box, box), (
        f"{name}.to_map() has shape {tuple(vol.shape)}, expected {(box, box, box)}"
    )
    assert torch.isfinite(vol).all(), f"{name}.to_map() contains non-finite values"
    assert vol.device == dev, f"{name}.to_map() on {vol.device}, expected {dev}"


def check_decoder_dtype(
    cls: type,
    box: int = 32,
    pixel_size_A: float = 4.0,
    config: ComponentConfig | None = None,
    batch: int = 3,
    device: str | torch.device = "cpu",
) -> None:
    """After ``.to(float64)``: complex128 slices and a float64 map (on ``device``)."""
    name = name_of(cls)
    dev = torch.device(device)
    dec = make(cls, config, box, pixel_size_A).to(device=dev, dtype=torch.float64).eval()
    g = torch.Generator().manual_seed(7)
    rot = random_rotations(batch, generator=g, dtype=torch.float64).to(dev)
    with torch.no_grad():
        s = dec(rot)
        _check_slices(f"{name} (float64)", s, (batch, box, box), torch.complex128, dev)
        vol = dec.to_map()
    assert vol.dtype == torch.float64, f"{name}.to_map() is {vol.dtype} after .to(float64)"


def check_decoder_gradients(
    cls: type,
    box: int = 32,
    pixel_size_A: float = 4.0,
    config: ComponentConfig | None = None,
    batch: int = 3,
    device: str | torch.device = "cpu",
) -> None:
    """Check that a scalar loss of slices reaches every parameter (and the rotations)."""
    name = name_of(cls)
    dev = torch.device(device)
    torch.manual_seed(0)
    dec = make(cls, config, box, pixel_size_A).to(dev).train()
    g = torch.Generator().manual_seed(8)
    rot = random_rotations(batch, generator=g).to(dev).requires_grad_(True)
    s = dec(rot)
    w = torch.randn(s.shape, generator=g, dtype=torch.complex64).to(dev)
    loss = (s * w).real.sum() + (s.abs() ** 2).mean()
    loss.backward()
    check_grads(name, dec)
    assert rot.grad is not None and torch.isfinite(rot.grad).all(), (
        f"{name}: no finite gradient reached the input rotations (pose refinement needs it)"
    )


def check_decoder_determinism(
    cls: type,
    box: int = 32,
    pixel_size_A: float = 4.0,
    config: ComponentConfig | None = None,
    batch: int = 3,
    seed: int = 1234,
    device: str | torch.device = "cpu",
) -> None:
    """Check that the same seed and construction give the same slices and map (bit for bit)."""
    name = name_of(cls)
    dev = torch.device(device)
    rot = random_rotations(batch, generator=torch.Generator().manual_seed(9)).to(dev)
    outs = []
    for _ in range(2):
        torch.manual_seed(seed)
        dec = make(cls, config, box, pixel_size_A).to(dev).eval()
        torch.manual_seed(seed)
        with torch.no_grad():
            outs.append((dec(rot), dec.to_map()))
    (s1, v1), (s2, v2) = outs
    assert torch.equal(s1, s2), f"{name}: slices differ under the same seed"
    assert torch.equal(v1, v2), f"{name}: to_map() differs under the same seed"


def check_decoder_crops(
    cls: type,
    box: int = 32,
    pixel_size_A: float = 4.0,
    config: ComponentConfig | None = None,
    batch: int = 3,
    device: str | torch.device = "cpu",
    rtol: float = 1e-4,
) -> None:
    """Check ``slices(R, c)`` and ``masked_slices(R, mask)`` against the full slices.

    ``slices(R, c)`` must be the central ``c x c`` crop of ``forward(R)``, and
    ``masked_slices(R, mask)`` that crop read at a disc's pixels (row-major), whatever
    ``supports_crop`` and ``supports_points`` say.
    """
    name = name_of(cls)
    dev = torch.device(device)
    dec = make(cls, config, box, pixel_size_A).to(dev).eval()
    rot = random_rotations(batch, generator=torch.Generator().manual_seed(8)).to(dev)
    c = box // 2 + (box // 2) % 2
    lo = box // 2 - c // 2
    k = torch.arange(c, device=dev) - c // 2
    mask = k[:, None] ** 2 + k[None, :] ** 2 <= (c // 2) ** 2  # reaches -c/2: not its own negative
    with torch.no_grad():
        full = dec(rot)[..., lo : lo + c, lo : lo + c]
        crop = dec.slices(rot, c)
        points = dec.masked_slices(rot, mask)
    scale = full.abs().max().item() + 1e-12
    _check_slices(name, crop, (batch, c, c), full.dtype, dev)
    err = (crop - full).abs().max().item() / scale
    assert err < rtol, f"{name}.slices(R, {c}) is not the central crop of the slices ({err:.3g})"
    _check_slices(name, points, (batch, int(mask.sum())), full.dtype, dev)
    err = (points - full[..., mask]).abs().max().item() / scale
    assert err < rtol, (
        f"{name}.masked_slices(R, mask) is not the crop read at the mask's pixels, row-major "
        f"({err:.3g})"
    )


def check_decoder(
    cls: type,
    box: int = 32,
    pixel_size_A: float = 4.0,
    config: ComponentConfig | None = None,
    batch: int = 3,
    device: str | torch.device = "cpu",
    hermitian: bool = True,
) -> None:
    """Run every decoder rule.

    Config, construction, outputs, crops, dtype, gradients and determinism, in that order.
    """
    check_config(cls)
    kw: dict[str, Any] = dict(box=box, pixel_size_A=pixel_size_A, config=config)
    check_decoder_construction(cls, **kw)
    check_decoder_outputs(cls, batch=batch, device=device, hermitian=hermitian, **kw)
    check_decoder_crops(cls, batch=batch, device=device, **kw)
    check_decoder_dtype(cls, batch=batch, device=device, **kw)
    check_decoder_gradients(cls, batch=batch, device=device, **kw)
    check_decoder_determinism(cls, batch=batch, device=device, **kw)
