"""Encoder contract checks (rules in :mod:`cryospin.core.testing`)."""

from __future__ import annotations

from typing import Any

import torch

from cryospin.core.interfaces import ComponentConfig, Encoder, PoseCandidates
from cryospin.core.testing._common import check_config, check_grads, make, name_of, random_images

_ROT_TOL = {torch.float32: 1e-4, torch.float64: 1e-10}


def _assert_rotations(name: str, rot: torch.Tensor, batch: int, m: int) -> None:
    assert rot.shape == (batch, m, 3, 3), (
        f"{name}: rotations have shape {tuple(rot.shape)}, expected {(batch, m, 3, 3)}"
    )
    assert torch.isfinite(rot).all(), f"{name}: rotations contain non-finite values"
    tol = _ROT_TOL.get(rot.dtype, 1e-3)
    eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
    err = (rot @ rot.transpose(-1, -2) - eye).abs().max().item()
    assert err < tol, f"{name}: rotations are not orthogonal (max |R R^T - I| = {err:.3g})"
    det = torch.linalg.det(rot.double())
    derr = (det - 1).abs().max().item()
    assert derr < max(tol, 1e-6) * 10, (
        f"{name}: rotations are not proper (max |det - 1| = {derr:.3g})"
    )


def _check_candidates(
    name: str, out: Any, batch: int, m: int, dtype: torch.dtype, device: torch.device
) -> None:
    assert isinstance(out, PoseCandidates), (
        f"{name}.forward must return PoseCandidates, got {type(out).__name__}"
    )
    _assert_rotations(name, out.rotations, batch, m)
    assert out.rotations.dtype == dtype, (
        f"{name}: rotations are {out.rotations.dtype}, the parameters/input are {dtype}"
    )
    assert out.rotations.device == device, (
        f"{name}: rotations on {out.rotations.device}, expected {device}"
    )
    if out.shifts_A is not None:
        s = out.shifts_A
        assert s.shape == (batch, m, 2), (
            f"{name}: shifts_A has shape {tuple(s.shape)}, expected {(batch, m, 2)}"
        )
        assert torch.isfinite(s).all(), f"{name}: shifts_A contain non-finite values"
        assert s.dtype == dtype and s.device == device, (
            f"{name}: shifts_A are {s.dtype} on {s.device}, expected {dtype} on {device}"
        )


def check_encoder_construction(
    cls: type, box: int = 32, pixel_size_A: float = 4.0, config: ComponentConfig | None = None
) -> None:
    """``cls(config, box, pixel_size_A)`` is an :class:`Encoder` with an ``n_candidates >= 1``."""
    name = name_of(cls)
    enc = make(cls, config, box, pixel_size_A)
    assert isinstance(enc, Encoder), f"{name} must subclass cryospin.core.interfaces.Encoder"
    m = enc.n_candidates
    assert isinstance(m, int) and m >= 1, f"{name}.n_candidates must be an int >= 1, got {m!r}"
    assert enc.box == box and enc.pixel_size_A == pixel_size_A, (
        f"{name}: box/pixel_size_A not stored (call Encoder.__init__)"
    )


def check_encoder_outputs(
    cls: type,
    box: int = 32,
    pixel_size_A: float = 4.0,
    config: ComponentConfig | None = None,
    batch: int = 3,
    device: str | torch.device = "cpu",
) -> None:
    """Check shapes, proper rotations and shifts in train and eval mode, batch ``batch`` and 1."""
    name = name_of(cls)
    dev = torch.device(device)
    enc = make(cls, config, box, pixel_size_A).to(dev)
    m = enc.n_candidates
    for training in (True, False):
        enc.train(training)
        for b in (batch, 1):  # an engine's last batch may hold one image, also in training
            with torch.no_grad():
                out = enc(random_images(b, box, 1, torch.float32).to(dev))
            _check_candidates(
                f"{name} ({'train' if training else 'eval'})", out, b, m, torch.float32, dev
            )


def check_encoder_dtype(
    cls: type,
    box: int = 32,
    pixel_size_A: float = 4.0,
    config: ComponentConfig | None = None,
    batch: int = 3,
    device: str | torch.device = "cpu",
) -> None:
    """After ``.to(float64)`` the outputs are float64 (on ``device``)."""
    name = name_of(cls)
    dev = torch.device(device)
    enc = make(cls, config, box, pixel_size_A).to(device=dev, dtype=torch.float64).eval()
    with torch.no_grad():
        out = enc(random_images(batch, box, 2, torch.float64).to(dev))
    _check_candidates(f"{name} (float64)", out, batch, enc.n_candidates, torch.float64, dev)


def check_encoder_gradients(
    cls: type,
    box: int = 32,
    pixel_size_A: float = 4.0,
    config: ComponentConfig | None = None,
    batch: int = 3,
    device: str | torch.device = "cpu",
) -> None:
    """Check that a scalar loss of rotations (and shifts) reaches every parameter."""
    name = name_of(cls)
    dev = torch.device(device)
    torch.manual_seed(0)
    enc = make(cls, config, box, pixel_size_A).to(dev).train()
    out = enc(random_images(batch, box, 3, torch.float32).to(dev))
    g = torch.Generator().manual_seed(4)
    w = torch.randn(out.rotations.shape, generator=g).to(dev)
    loss = (out.rotations * w).sum()
    if out.shifts_A is not None:
        ws = torch.randn(out.shifts_A.shape, generator=g).to(dev)
        loss = loss + (out.shifts_A * ws).sum()
    loss.backward()
    check_grads(name, enc)


def check_encoder_determinism(
    cls: type,
    box: int = 32,
    pixel_size_A: float = 4.0,
    config: ComponentConfig | None = None,
    batch: int = 3,
    seed: int = 1234,
    device: str | torch.device = "cpu",
) -> None:
    """Check that the same seed, construction and call give the same outputs (bit for bit)."""
    name = name_of(cls)
    dev = torch.device(device)
    images = random_images(batch, box, 5, torch.float32).to(dev)
    outs = []
    for _ in range(2):
        torch.manual_seed(seed)
        enc = make(cls, config, box, pixel_size_A).to(dev).eval()
        torch.manual_seed(seed)
        with torch.no_grad():
            outs.append(enc(images))
    a, b = outs
    assert torch.equal(a.rotations, b.rotations), f"{name}: rotations differ under the same seed"
    assert (a.shifts_A is None) == (b.shifts_A is None), f"{name}: shifts presence differs"
    if a.shifts_A is not None:
        assert torch.equal(a.shifts_A, b.shifts_A), f"{name}: shifts differ under the same seed"


def check_encoder(
    cls: type,
    box: int = 32,
    pixel_size_A: float = 4.0,
    config: ComponentConfig | None = None,
    batch: int = 3,
    device: str | torch.device = "cpu",
) -> None:
    """Run every encoder rule (config, construction, outputs, dtype, gradients, determinism)."""
    check_config(cls)
    kw: dict[str, Any] = dict(box=box, pixel_size_A=pixel_size_A, config=config)
    check_encoder_construction(cls, **kw)
    check_encoder_outputs(cls, batch=batch, device=device, **kw)
    check_encoder_dtype(cls, batch=batch, device=device, **kw)
    check_encoder_gradients(cls, batch=batch, device=device, **kw)
    check_encoder_determinism(cls, batch=batch, device=device, **kw)
