"""Contract tests that every encoder and decoder must pass, importable by third-party plugins.

Pose stages and image sources have their own checks: :mod:`cryospin.core.testing.stages`
(``check_pose_stage``) and :mod:`cryospin.core.testing.sources` (``check_image_source``).

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
* **Decoder crops**: ``slices(R, c)`` is the central ``c x c`` crop of the slices and
  ``masked_slices(R, mask)`` that crop read at the mask's pixels in row-major order, whether
  the decoder computes them itself (``supports_crop``, ``supports_points``) or not.
* **dtype and device follow the parameters**: after ``module.to(torch.float64)`` (and to
  ``device``), outputs are float64 (decoder slices complex128) on that device.
* **Gradients**: the backward pass of a scalar loss of the outputs gives every trainable
  parameter a non-``None``, finite gradient, at least one of them nonzero.
* **Determinism**: two constructions after ``torch.manual_seed(k)``, each called after
  ``torch.manual_seed(k)`` on the same input, give identical outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from cryospin.core.so3 import random_rotations
from cryospin.core.testing._common import check_config
from cryospin.core.testing.decoders import (
    check_decoder,
    check_decoder_construction,
    check_decoder_crops,
    check_decoder_determinism,
    check_decoder_dtype,
    check_decoder_gradients,
    check_decoder_outputs,
)
from cryospin.core.testing.encoders import (
    check_encoder,
    check_encoder_construction,
    check_encoder_determinism,
    check_encoder_dtype,
    check_encoder_gradients,
    check_encoder_outputs,
)

__all__ = [
    "check_config",
    "check_decoder",
    "check_decoder_crops",
    "check_encoder",
    "decoder_contract_tests",
    "encoder_contract_tests",
    "random_rotations",
]

_BASE_KEYS = ("box", "pixel_size_A", "config")


def _contract_class(cls: type, checks: dict[str, Callable[[], None]]) -> type:
    """Build a pytest class ``Test<cls>Contract`` with one ``test_<key>`` method per check."""

    def method(check: Callable[[], None]) -> Callable[[Any], None]:
        def test(self: Any) -> None:
            check()

        return test

    name = f"Test{cls.__name__}Contract"
    return type(name, (), {f"test_{key}": method(check) for key, check in checks.items()})


def encoder_contract_tests(cls: type, **kwargs: Any) -> type:
    """Return a test class (assign it to a ``Test*`` name in a test module) of the encoder rules.

    ``kwargs`` (``box``, ``pixel_size_A``, ``config``, ``batch``, ``device``) go to the checks.
    """
    base = {k: v for k, v in kwargs.items() if k in _BASE_KEYS}
    return _contract_class(
        cls,
        {
            "config": partial(check_config, cls),
            "construction": partial(check_encoder_construction, cls, **base),
            "outputs": partial(check_encoder_outputs, cls, **kwargs),
            "dtype": partial(check_encoder_dtype, cls, **kwargs),
            "gradients": partial(check_encoder_gradients, cls, **kwargs),
            "determinism": partial(check_encoder_determinism, cls, **kwargs),
        },
    )


def decoder_contract_tests(cls: type, **kwargs: Any) -> type:
    """Return a test class of the decoder rules; ``hermitian`` goes to the output check only."""
    kw = {k: v for k, v in kwargs.items() if k != "hermitian"}
    base = {k: v for k, v in kw.items() if k in _BASE_KEYS}
    herm = kwargs.get("hermitian", True)
    return _contract_class(
        cls,
        {
            "config": partial(check_config, cls),
            "construction": partial(check_decoder_construction, cls, **base),
            "outputs": partial(check_decoder_outputs, cls, hermitian=herm, **kw),
            "crops": partial(check_decoder_crops, cls, **kw),
            "dtype": partial(check_decoder_dtype, cls, **kw),
            "gradients": partial(check_decoder_gradients, cls, **kw),
            "determinism": partial(check_decoder_determinism, cls, **kw),
        },
    )
