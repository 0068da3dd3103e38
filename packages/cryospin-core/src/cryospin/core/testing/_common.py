"""Helpers shared by the encoder and decoder contract checks of :mod:`cryospin.core.testing`."""

from __future__ import annotations

from typing import Any

import pydantic
import torch

from cryospin.core.interfaces import ComponentConfig


def name_of(cls: type) -> str:
    """Return ``module.qualname`` of a component class (used in every failure message)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def make(cls: Any, config: ComponentConfig | None, box: int, pixel_size_A: float) -> Any:
    cfg = cls.Config() if config is None else config
    return cls(cfg, box, pixel_size_A)


def check_config(cls: type) -> None:
    """``cls.Config`` is a :class:`ComponentConfig`; defaults are valid; unknown fields fail."""
    name = name_of(cls)
    cfg_cls = getattr(cls, "Config", None)
    assert isinstance(cfg_cls, type) and issubclass(cfg_cls, ComponentConfig), (
        f"{name}.Config must subclass cryospin.core.interfaces.ComponentConfig, got {cfg_cls!r}"
    )
    try:
        cfg_cls()
    except pydantic.ValidationError as exc:  # pragma: no cover - the message is the point
        raise AssertionError(f"{name}: the default Config() is invalid: {exc}") from exc
    try:
        cfg_cls(**{"this_field_does_not_exist_42": 1})
    except pydantic.ValidationError:
        pass
    else:
        raise AssertionError(f"{name}.Config accepted an unknown field (must forbid extras)")


def check_grads(name: str, module: torch.nn.Module) -> None:
    """Every trainable parameter has a finite gradient, at least one of them nonzero."""
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if not params:
        return  # a parameter-free component (e.g. a fixed sampler) has nothing to train
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"{name}: no gradient reached parameters {missing}"
    grads = {n: p.grad for n, p in params if p.grad is not None}
    bad = [n for n, g in grads.items() if not torch.isfinite(g).all()]
    assert not bad, f"{name}: non-finite gradients in {bad}"
    assert any(g.abs().sum().item() > 0 for g in grads.values()), (
        f"{name}: every gradient is exactly zero"
    )


def random_images(batch: int, box: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """Seeded Gaussian images ``(batch, box, box)``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, box, box, generator=g, dtype=dtype)
