"""The module named by this distribution's ``cryospin`` entry point.

Every function decorated with ``@hookimpl`` must be named after a hook in
``cryospin.core.hookspecs`` (``register_encoders``, ``register_decoders``, ...); a misspelled
``register_*`` name makes cryospin refuse to start, naming this plugin.
"""

from __future__ import annotations

from cryospin.core.hookspecs import Register, hookimpl


@hookimpl
def register_encoders(register: Register) -> None:
    """Register ``example-tiny``. Names are global: pick a prefix unlikely to clash."""
    from cryospin_example_plugin.encoder import TinyEncoder

    register("example-tiny", TinyEncoder)
