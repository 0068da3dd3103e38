"""Registers the built-in decoders through the ``cryospin`` entry point, as a third party would."""

from __future__ import annotations

from cryospin.core.hookspecs import Register, hookimpl


@hookimpl
def register_decoders(register: Register) -> None:
    """Register ``hartley`` (explicit Hartley voxel grid) and ``mlp`` (implicit FourierNet)."""
    from cryospin.decoders.hartley import HartleyDecoder
    from cryospin.decoders.mlp import MLPDecoder

    register("hartley", HartleyDecoder)
    register("mlp", MLPDecoder)
