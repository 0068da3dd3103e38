"""Contract tests that every encoder and decoder must pass, importable by third-party plugins.

Each ``check_*`` function raises :class:`AssertionError` with a message that names the component
and the broken rule, so it works under pytest or from a plain script. Two ways to use it from a
plugin's test file::

    from cryospin.core.testing import check_encoder, encoder_contract_tests
    from my_plugin.encoders import MyEncoder

    # (a) one test class per component; pytest collects every ``test_*`` method of it
    TestMyEncoder = encoder_contract_tests(MyEncoder, box=32, pixel_size_A=4.0)

    # (b) or call the checks directly, e.g. in a parametrized test
    def test_my_encoder():
        check_encoder(MyEncoder, box=32, pixel_size_A=4.0)

The rules (see :mod:`cryospin.core.interfaces` for the conventions):

* **Config**: ``cls.Config`` subclasses :class:`~cryospin.core.interfaces.ComponentConfig`; a
  default ``Config()`` is valid; an unknown field raises :class:`pydantic.ValidationError`.
* **Construction**: ``cls(config, box, pixel_size_A)`` gives an instance of the interface.
* **Encoder output**: a :class:`~cryospin.core.interfaces.PoseCandidates` whose ``rotations`` are
  ``(B, M, 3, 3)`` proper rotations (``R R^T = I``, ``det R = +1``) with ``M = n_candidates``, and
  ``shifts_A`` either ``None`` or finite ``(B, M, 2)``.
* **Decoder output**: ``forward(rotations (..., 3, 3))`` is complex ``(..., L, L)``, centred: the
  DC sample ``[..., L//2, L//2]`` does not depend on the rotation (it is the integral of the
  volume) and, for a real map, slices are Hermitian about ``L//2``
  (``F[(2c-i) % L, (2c-j) % L] = conj F[i, j]`` for ``i, j >= 1``). ``to_map()`` is a finite real
  ``(L, L, L)`` tensor.
* **dtype and device follow the parameters**: after ``module.to(torch.float64)`` (and to
  ``device``), outputs are float64 (decoder slices complex128) on that device.
* **Gradients**: the backward pass of a scalar loss of the outputs gives every trainable
  parameter a non-``None``, finite gradient, at least one of them nonzero.
* **Determinism**: two constructions after ``torch.manual_seed(k)``, each called after
  ``torch.manual_seed(k)`` on the same input, give identical outputs.
"""

from __future__ import annotations

from typing import Any

import pydantic
import torch

from cryospin.core.interfaces import ComponentConfig, Decoder, Encoder, PoseCandidates

__all__ = [
    "check_config",
    "check_decoder",
    "check_encoder",
    "decoder_contract_tests",
    "encoder_contract_tests",
    "random_rotations",
]

_ROT_TOL = {torch.float32: 1e-4, torch.float64: 1e-10}


def random_rotations(n: int, *, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(n, 3, 3)`` rotations, uniform on SO(3) (normalised Gaussian quaternions)."""
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rot = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(n, 3, 3)
    return rot.to(dtype)


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _make(cls: type, config: ComponentConfig | None, box: int, pixel_size_A: float) -> Any:
    cfg = cls.Config() if config is None else config
    return cls(cfg, box, pixel_size_A)


def check_config(cls: type) -> None:
    """``cls.Config`` is a :class:`ComponentConfig`; defaults are valid; unknown fields fail."""
    name = _name(cls)
    cfg_cls = getattr(cls, "Config", None)
    assert isinstance(cfg_cls, type) and issubclass(cfg_cls, ComponentConfig), (
        f"{name}.Config must subclass cryospin.core.interfaces.ComponentConfig, got {cfg_cls!r}"
    )
    try:
        cfg_cls()
    except pydantic.ValidationError as exc:  # pragma: no cover - the message is the point
        raise AssertionError(f"{name}: the default Config() is invalid: {exc}") from exc
    try:
        cfg_cls(this_field_does_not_exist_42=1)
    except pydantic.ValidationError:
        pass
    else:
        raise AssertionError(f"{name}.Config accepted an unknown field (must forbid extras)")


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


def _check_candidates(name: str, out: Any, batch: int, m: int, dtype: torch.dtype,
                      device: torch.device) -> None:
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


def _check_grads(name: str, module: torch.nn.Module) -> None:
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if not params:
        return  # a parameter-free component (e.g. a fixed sampler) has nothing to train
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"{name}: no gradient reached parameters {missing}"
    bad = [n for n, p in params if not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradients in {bad}"
    assert any(p.grad.abs().sum().item() > 0 for _, p in params), (
        f"{name}: every gradient is exactly zero"
    )


def _images(batch: int, box: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, box, box, generator=g, dtype=dtype)


# ----------------------------------------------------------------------------------- encoders
def check_encoder_construction(cls: type, box: int = 32, pixel_size_A: float = 4.0,
                               config: ComponentConfig | None = None) -> None:
    """``cls(config, box, pixel_size_A)`` is an :class:`Encoder` with an ``n_candidates >= 1``."""
    name = _name(cls)
    enc = _make(cls, config, box, pixel_size_A)
    assert isinstance(enc, Encoder), f"{name} must subclass cryospin.core.interfaces.Encoder"
    m = enc.n_candidates
    assert isinstance(m, int) and m >= 1, f"{name}.n_candidates must be an int >= 1, got {m!r}"
    assert enc.box == box and enc.pixel_size_A == pixel_size_A, (
        f"{name}: box/pixel_size_A not stored (call Encoder.__init__)"
    )


def check_encoder_outputs(cls: type, box: int = 32, pixel_size_A: float = 4.0,
                          config: ComponentConfig | None = None, batch: int = 3,
                          device: str | torch.device = "cpu") -> None:
    """Check shapes, proper rotations and shifts in train and eval mode, batch ``batch`` and 1."""
    name = _name(cls)
    dev = torch.device(device)
    enc = _make(cls, config, box, pixel_size_A).to(dev)
    m = enc.n_candidates
    for training in (True, False):
        enc.train(training)
        for b in (batch, 1):  # an engine's last batch may hold one image, also in training
            with torch.no_grad():
                out = enc(_images(b, box, 1, torch.float32).to(dev))
            _check_candidates(f"{name} ({'train' if training else 'eval'})", out, b, m,
                              torch.float32, dev)


def check_encoder_dtype(cls: type, box: int = 32, pixel_size_A: float = 4.0,
                        config: ComponentConfig | None = None, batch: int = 3,
                        device: str | torch.device = "cpu") -> None:
    """After ``.to(float64)`` the outputs are float64 (on ``device``)."""
    name = _name(cls)
    dev = torch.device(device)
    enc = _make(cls, config, box, pixel_size_A).to(device=dev, dtype=torch.float64).eval()
    with torch.no_grad():
        out = enc(_images(batch, box, 2, torch.float64).to(dev))
    _check_candidates(f"{name} (float64)", out, batch, enc.n_candidates, torch.float64, dev)


def check_encoder_gradients(cls: type, box: int = 32, pixel_size_A: float = 4.0,
                            config: ComponentConfig | None = None, batch: int = 3,
                            device: str | torch.device = "cpu") -> None:
    """Check that a scalar loss of rotations (and shifts) reaches every parameter."""
    name = _name(cls)
    dev = torch.device(device)
    torch.manual_seed(0)
    enc = _make(cls, config, box, pixel_size_A).to(dev).train()
    out = enc(_images(batch, box, 3, torch.float32).to(dev))
    g = torch.Generator().manual_seed(4)
    w = torch.randn(out.rotations.shape, generator=g).to(dev)
    loss = (out.rotations * w).sum()
    if out.shifts_A is not None:
        ws = torch.randn(out.shifts_A.shape, generator=g).to(dev)
        loss = loss + (out.shifts_A * ws).sum()
    loss.backward()
    _check_grads(name, enc)


def check_encoder_determinism(cls: type, box: int = 32, pixel_size_A: float = 4.0,
                              config: ComponentConfig | None = None, batch: int = 3,
                              seed: int = 1234, device: str | torch.device = "cpu") -> None:
    """Check that the same seed, construction and call give the same outputs (bit for bit)."""
    name = _name(cls)
    dev = torch.device(device)
    images = _images(batch, box, 5, torch.float32).to(dev)
    outs = []
    for _ in range(2):
        torch.manual_seed(seed)
        enc = _make(cls, config, box, pixel_size_A).to(dev).eval()
        torch.manual_seed(seed)
        with torch.no_grad():
            outs.append(enc(images))
    a, b = outs
    assert torch.equal(a.rotations, b.rotations), f"{name}: rotations differ under the same seed"
    assert (a.shifts_A is None) == (b.shifts_A is None), f"{name}: shifts presence differs"
    if a.shifts_A is not None:
        assert torch.equal(a.shifts_A, b.shifts_A), f"{name}: shifts differ under the same seed"


def check_encoder(cls: type, box: int = 32, pixel_size_A: float = 4.0,
                  config: ComponentConfig | None = None, batch: int = 3,
                  device: str | torch.device = "cpu") -> None:
    """Run every encoder rule (config, construction, outputs, dtype, gradients, determinism)."""
    check_config(cls)
    kw = dict(box=box, pixel_size_A=pixel_size_A, config=config)
    check_encoder_construction(cls, **kw)
    check_encoder_outputs(cls, batch=batch, device=device, **kw)
    check_encoder_dtype(cls, batch=batch, device=device, **kw)
    check_encoder_gradients(cls, batch=batch, device=device, **kw)
    check_encoder_determinism(cls, batch=batch, device=device, **kw)


# ----------------------------------------------------------------------------------- decoders
def _check_slices(name: str, s: Any, shape: tuple[int, ...], dtype: torch.dtype,
                  device: torch.device) -> None:
    assert isinstance(s, torch.Tensor) and s.is_complex(), (
        f"{name}: slices must be a complex tensor, got {getattr(s, 'dtype', type(s))}"
    )
    assert tuple(s.shape) == shape, f"{name}: slices have shape {tuple(s.shape)}, expected {shape}"
    assert s.dtype == dtype, f"{name}: slices are {s.dtype}, expected {dtype}"
    assert s.device == device, f"{name}: slices on {s.device}, expected {device}"
    assert torch.isfinite(torch.view_as_real(s)).all(), f"{name}: slices contain non-finite values"


def check_decoder_construction(cls: type, box: int = 32, pixel_size_A: float = 4.0,
                               config: ComponentConfig | None = None) -> None:
    """``cls(config, box, pixel_size_A)`` is a :class:`Decoder`."""
    name = _name(cls)
    dec = _make(cls, config, box, pixel_size_A)
    assert isinstance(dec, Decoder), f"{name} must subclass cryospin.core.interfaces.Decoder"
    assert dec.box == box and dec.pixel_size_A == pixel_size_A, (
        f"{name}: box/pixel_size_A not stored (call Decoder.__init__)"
    )


def check_decoder_outputs(cls: type, box: int = 32, pixel_size_A: float = 4.0,
                          config: ComponentConfig | None = None, batch: int = 3,
                          device: str | torch.device = "cpu", hermitian: bool = True,
                          rtol: float = 1e-4) -> None:
    """Slice shapes for ``(B, 3, 3)`` and ``(B, M, 3, 3)``, centring, and ``to_map``.

    ``hermitian=False`` skips the Hermitian-symmetry rule (for a decoder of a complex map).
    """
    name = _name(cls)
    dev = torch.device(device)
    dec = _make(cls, config, box, pixel_size_A).to(dev).eval()
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


def check_decoder_dtype(cls: type, box: int = 32, pixel_size_A: float = 4.0,
                        config: ComponentConfig | None = None, batch: int = 3,
                        device: str | torch.device = "cpu") -> None:
    """After ``.to(float64)``: complex128 slices and a float64 map (on ``device``)."""
    name = _name(cls)
    dev = torch.device(device)
    dec = _make(cls, config, box, pixel_size_A).to(device=dev, dtype=torch.float64).eval()
    g = torch.Generator().manual_seed(7)
    rot = random_rotations(batch, generator=g, dtype=torch.float64).to(dev)
    with torch.no_grad():
        s = dec(rot)
        _check_slices(f"{name} (float64)", s, (batch, box, box), torch.complex128, dev)
        vol = dec.to_map()
    assert vol.dtype == torch.float64, f"{name}.to_map() is {vol.dtype} after .to(float64)"


def check_decoder_gradients(cls: type, box: int = 32, pixel_size_A: float = 4.0,
                            config: ComponentConfig | None = None, batch: int = 3,
                            device: str | torch.device = "cpu") -> None:
    """Check that a scalar loss of slices reaches every parameter (and the rotations)."""
    name = _name(cls)
    dev = torch.device(device)
    torch.manual_seed(0)
    dec = _make(cls, config, box, pixel_size_A).to(dev).train()
    g = torch.Generator().manual_seed(8)
    rot = random_rotations(batch, generator=g).to(dev).requires_grad_(True)
    s = dec(rot)
    w = torch.randn(s.shape, generator=g, dtype=torch.complex64).to(dev)
    loss = (s * w).real.sum() + (s.abs() ** 2).mean()
    loss.backward()
    _check_grads(name, dec)
    assert rot.grad is not None and torch.isfinite(rot.grad).all(), (
        f"{name}: no finite gradient reached the input rotations (pose refinement needs it)"
    )


def check_decoder_determinism(cls: type, box: int = 32, pixel_size_A: float = 4.0,
                              config: ComponentConfig | None = None, batch: int = 3,
                              seed: int = 1234, device: str | torch.device = "cpu") -> None:
    """Check that the same seed and construction give the same slices and map (bit for bit)."""
    name = _name(cls)
    dev = torch.device(device)
    rot = random_rotations(batch, generator=torch.Generator().manual_seed(9)).to(dev)
    outs = []
    for _ in range(2):
        torch.manual_seed(seed)
        dec = _make(cls, config, box, pixel_size_A).to(dev).eval()
        torch.manual_seed(seed)
        with torch.no_grad():
            outs.append((dec(rot), dec.to_map()))
    (s1, v1), (s2, v2) = outs
    assert torch.equal(s1, s2), f"{name}: slices differ under the same seed"
    assert torch.equal(v1, v2), f"{name}: to_map() differs under the same seed"


def check_decoder(cls: type, box: int = 32, pixel_size_A: float = 4.0,
                  config: ComponentConfig | None = None, batch: int = 3,
                  device: str | torch.device = "cpu", hermitian: bool = True) -> None:
    """Run every decoder rule (config, construction, outputs, dtype, gradients, determinism)."""
    check_config(cls)
    kw = dict(box=box, pixel_size_A=pixel_size_A, config=config)
    check_decoder_construction(cls, **kw)
    check_decoder_outputs(cls, batch=batch, device=device, hermitian=hermitian, **kw)
    check_decoder_dtype(cls, batch=batch, device=device, **kw)
    check_decoder_gradients(cls, batch=batch, device=device, **kw)
    check_decoder_determinism(cls, batch=batch, device=device, **kw)


# ----------------------------------------------------------------------------- pytest helpers
def encoder_contract_tests(cls: type, **kwargs: Any) -> type:
    """Return a test class (assign it to a ``Test*`` name in a test module) of the encoder rules.

    ``kwargs`` (``box``, ``pixel_size_A``, ``config``, ``batch``, ``device``) go to the checks.
    """
    kw = dict(kwargs)
    base = {k: v for k, v in kw.items() if k in ("box", "pixel_size_A", "config")}

    class EncoderContract:
        def test_config(self) -> None:
            check_config(cls)

        def test_construction(self) -> None:
            check_encoder_construction(cls, **base)

        def test_outputs(self) -> None:
            check_encoder_outputs(cls, **kw)

        def test_dtype(self) -> None:
            check_encoder_dtype(cls, **kw)

        def test_gradients(self) -> None:
            check_encoder_gradients(cls, **kw)

        def test_determinism(self) -> None:
            check_encoder_determinism(cls, **kw)

    EncoderContract.__name__ = EncoderContract.__qualname__ = f"Test{cls.__name__}Contract"
    return EncoderContract


def decoder_contract_tests(cls: type, **kwargs: Any) -> type:
    """Return a test class of the decoder rules; ``hermitian`` goes to the output check only."""
    kw = {k: v for k, v in kwargs.items() if k != "hermitian"}
    base = {k: v for k, v in kw.items() if k in ("box", "pixel_size_A", "config")}
    herm = kwargs.get("hermitian", True)

    class DecoderContract:
        def test_config(self) -> None:
            check_config(cls)

        def test_construction(self) -> None:
            check_decoder_construction(cls, **base)

        def test_outputs(self) -> None:
            check_decoder_outputs(cls, hermitian=herm, **kw)

        def test_dtype(self) -> None:
            check_decoder_dtype(cls, **kw)

        def test_gradients(self) -> None:
            check_decoder_gradients(cls, **kw)

        def test_determinism(self) -> None:
            check_decoder_determinism(cls, **kw)

    DecoderContract.__name__ = DecoderContract.__qualname__ = f"Test{cls.__name__}Contract"
    return DecoderContract
