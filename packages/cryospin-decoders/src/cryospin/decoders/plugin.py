"""Registers the built-in decoders through the ``cryospin`` entry point, as a third party would."""

from __future__ import annotations

from cryospin.core.hookspecs import Register, hookimpl


@hookimpl
def register_decoders(register: Register) -> None:
    """Register the built-in decoders (filled in as they land)."""
