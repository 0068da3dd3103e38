"""Registers the built-in encoders through the ``cryospin`` entry point, as a third party would."""

from __future__ import annotations

from cryospin.core.hookspecs import Register, hookimpl


@hookimpl
def register_encoders(register: Register) -> None:
    """Register ``multihead`` (cryoSPIN, paper Sec. 4.1) and ``cryoai`` (the cryoAI baseline)."""
    from cryospin.encoders.cryoai import CryoAIEncoder
    from cryospin.encoders.multihead import MultiHeadEncoder

    register("multihead", MultiHeadEncoder)
    register("cryoai", CryoAIEncoder)
