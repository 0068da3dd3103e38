"""Registers the built-in image sources and I/O commands, as a third party would."""

from __future__ import annotations

from cryospin.core.hookspecs import Register, hookimpl


@hookimpl
def register_image_sources(register: Register) -> None:
    """Register the built-in image sources (filled in as they land)."""
