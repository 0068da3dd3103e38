"""Registers the built-in encoders through the ``cryospin`` entry point, as a third party would."""

from __future__ import annotations

from cryospin.core.hookspecs import Register, hookimpl


@hookimpl
def register_encoders(register: Register) -> None:
    """Register the built-in encoders (filled in as they land)."""
