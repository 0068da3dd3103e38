"""Pose-stage contract checks (the rules of :class:`cryospin.core.interfaces.PoseStage`).

Each check builds a tiny engine context (:func:`toy_context`: ``n`` seeded noise images of box
``L`` with a real CTF, the built-in ``hartley`` decoder, for the amortized role the ``multihead``
encoder) and runs the stage as the trainer does. Rules:

* **Config and construction**: ``cls.Config`` is a valid :class:`ComponentConfig`; ``cls()`` and
  ``cls(cls.Config())`` are :class:`PoseStage` instances with a ``name`` (a str).
* **Train step**: after ``setup(ctx)``, ``train_step(ctx, batch)`` returns a
  :class:`~cryospin.core.interfaces.StepResult` with a finite loss, proper rotations
  ``(B, 3, 3)`` on the CPU, winners ``None`` or ``(B,)`` in ``[0, M)``, shifts ``None`` or finite
  ``(B, 2)`` on the CPU; it trains the volume (the decoder's parameters change).
* **State**: ``state_dict()`` survives ``torch.save`` / ``torch.load(weights_only=True)`` (how
  checkpoints load) and a fresh stage loading it after ``setup`` returns the same state.
* **Determinism**: the same seed gives the same step result.
* **Hand-over** (a :class:`~cryospin.core.interfaces.CandidateStage`, the amortized role):
  ``best_candidates`` returns every particle once, proper rotations ``(n, 3, 3)``, winners
  ``(n,)``, shifts ``None`` or ``(n, 2)``, reports progress for ``n`` images, and trains nothing.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryospin.core.engine.config import RunConfig
from cryospin.core.engine.data import ParticleData
from cryospin.core.engine.forward import frequency_mask
from cryospin.core.engine.pose_table import PoseTable
from cryospin.core.engine.stages import EngineContext
from cryospin.core.interfaces import CandidateStage, PoseStage, StepResult
from cryospin.core.particles import ArrayReader, CTFParams, ParticleStack
from cryospin.core.registry import get_registry
from cryospin.core.testing._common import check_config, name_of


def toy_data(n: int = 8, box: int = 32, seed: int = 0) -> ParticleData:
    """``n`` seeded Gaussian images ``(box, box)`` at 4 Å/px with a 1.5 um defocus CTF."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, box, box)).astype(np.float32)
    # defocus U/V (Å), angle (deg), voltage (kV), Cs (mm), amplitude contrast, phase shift (deg)
    ctf = CTFParams(*(np.full(n, v) for v in (15000.0, 14000.0, 30.0, 300.0, 2.7, 0.1, 0.0)))
    stack = ParticleStack(
        path=Path("toy.star"), images=ArrayReader(images), box=box, pixel_size_A=4.0, ctf=ctf
    )
    return ParticleData(stack, invert=False, cache=True)


def toy_context(role: str, data: ParticleData, seed: int = 0) -> EngineContext:
    """Build a context as the trainer does for ``role`` (``"amortized"`` or ``"direct"``)."""
    torch.manual_seed(seed)
    cfg = RunConfig(num_threads=1)
    registry = get_registry()
    dec_cls = registry.get("decoder", "hartley")
    decoder = dec_cls(dec_cls.Config(), data.box, data.pixel_size_A)
    encoder, enc_opt = None, None
    if role == "amortized":
        enc_cls = registry.get("encoder", "multihead")
        encoder = enc_cls(enc_cls.Config(), data.box, data.pixel_size_A)
        enc_opt = torch.optim.Adam(encoder.parameters(), lr=cfg.lr_encoder)
    ctx = EngineContext(
        cfg,
        decoder,
        encoder,
        PoseTable(len(data), cfg.lr_pose, cfg.lr_shift),
        data.box,
        data.pixel_size_A,
        torch.device("cpu"),
        frequency_mask(data.box, cfg.mask_radius),
        torch.optim.Adam(decoder.parameters(), lr=cfg.lr_decoder),
        enc_opt,
    )
    ctx.set_mask(ctx.mask)
    return ctx


def role_of(cls: type) -> str:
    """Return the role a stage is checked in: ``amortized`` for a CandidateStage, else direct."""
    return "amortized" if issubclass(cls, CandidateStage) else "direct"


def _params(ctx: EngineContext) -> list[torch.Tensor]:
    models = [ctx.decoder] + ([ctx.encoder] if ctx.encoder is not None else [])
    return [p.detach().clone() for m in models for p in m.parameters()]


def _assert_proper(name: str, rot: torch.Tensor, n: int) -> None:
    assert rot.shape == (n, 3, 3), f"{name}: rotations {tuple(rot.shape)}, expected {(n, 3, 3)}"
    assert rot.device.type == "cpu", f"{name}: rotations must come back on the CPU"
    r = rot.double()
    err = (r @ r.transpose(-1, -2) - torch.eye(3, dtype=r.dtype)).abs().max().item()
    det = (torch.linalg.det(r) - 1).abs().max().item()
    assert err < 1e-4 and det < 1e-4, f"{name}: rotations not proper (|RR^T-I| {err:.2g})"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


def _step(cls: type, seed: int, batch: int) -> tuple[PoseStage, EngineContext, StepResult]:
    data = toy_data(seed=seed)
    ctx = toy_context(role_of(cls), data, seed)
    stage = cls()
    stage.setup(ctx)
    return stage, ctx, stage.train_step(ctx, data.batch(data.indices[:batch]))


def check_stage_construction(cls: type) -> None:
    """``Config`` is valid; ``cls()`` and ``cls(Config())`` are named PoseStage instances."""
    name = name_of(cls)
    check_config(cls)
    for stage in (cls(), cls(cls.Config())):  # type: ignore[attr-defined]
        assert isinstance(stage, PoseStage), f"{name} must subclass interfaces.PoseStage"
        assert isinstance(stage.name, str) and stage.name, f"{name}.name must be a str"


def check_stage_train_step(cls: type, batch: int = 3) -> None:
    """One step: a well-formed :class:`StepResult`, and the decoder's parameters change."""
    name = name_of(cls)
    data = toy_data()
    ctx = toy_context(role_of(cls), data)
    stage = cls()
    stage.setup(ctx)
    before = [p.detach().clone() for p in ctx.decoder.parameters()]
    res = stage.train_step(ctx, data.batch(data.indices[:batch]))
    assert isinstance(res, StepResult), f"{name}.train_step must return a StepResult"
    assert np.isfinite(res.loss), f"{name}: loss {res.loss}"
    _assert_proper(name, res.rotations, batch)
    if res.winners is not None:
        m = ctx.encoder.n_candidates if ctx.encoder is not None else 1
        w = np.asarray(res.winners)
        assert w.shape == (batch,) and ((0 <= w) & (w < m)).all(), f"{name}: winners {w}"
    if res.shifts_px is not None:
        s = res.shifts_px
        assert s.shape == (batch, 2) and s.device.type == "cpu", f"{name}: shifts {s.shape}"
        assert torch.isfinite(s).all(), f"{name}: non-finite shifts"
    after = list(ctx.decoder.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True)), (
        f"{name}.train_step did not train the volume (decoder parameters unchanged)"
    )


def check_stage_state(cls: type) -> None:
    """``state_dict`` loads with ``weights_only=True`` and round-trips through a fresh stage."""
    name = name_of(cls)
    stage, ctx, _ = _step(cls, 0, 3)
    state = stage.state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    try:
        loaded = torch.load(buf, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the message is the point
        raise AssertionError(f"{name}.state_dict() does not load with weights_only: {exc}") from exc
    fresh = cls()
    fresh.setup(ctx)
    fresh.load_state_dict(loaded)
    assert _same(fresh.state_dict(), state), f"{name}: state_dict differs after load_state_dict"


def check_stage_determinism(cls: type) -> None:
    """Two runs of one step from the same seed give identical results."""
    name = name_of(cls)
    a, b = _step(cls, 3, 3)[2], _step(cls, 3, 3)[2]
    assert a.loss == b.loss and torch.equal(a.rotations, b.rotations), f"{name}: not deterministic"


def check_stage_hand_over(cls: type, batch_size: int = 3) -> None:
    """Check ``best_candidates`` of a CandidateStage: each particle once, no training."""
    name = name_of(cls)
    if not issubclass(cls, CandidateStage):
        return
    data = toy_data()
    ctx = toy_context("amortized", data)
    stage = cls()
    stage.setup(ctx)
    before = _params(ctx)
    seen: list[int] = []
    idx, rot, shifts, wins = stage.best_candidates(ctx, data, batch_size, seen.append)
    n = len(data)
    assert sorted(np.asarray(idx).tolist()) == data.indices.tolist(), f"{name}: indices {idx}"
    _assert_proper(name, rot, n)
    assert np.asarray(wins).shape == (n,), f"{name}: winners shape {np.shape(wins)}"
    assert shifts is None or tuple(shifts.shape) == (n, 2), f"{name}: shifts {shifts.shape}"
    assert sum(seen) == n, f"{name}: progress reported {sum(seen)} images of {n}"
    after = _params(ctx)
    assert all(torch.equal(x, y) for x, y in zip(before, after, strict=True)), (
        f"{name}.best_candidates changed the models' parameters"
    )


def check_pose_stage(cls: type) -> None:
    """Run every pose-stage rule on ``cls``."""
    check_stage_construction(cls)
    check_stage_train_step(cls)
    check_stage_state(cls)
    check_stage_determinism(cls)
    check_stage_hand_over(cls)
