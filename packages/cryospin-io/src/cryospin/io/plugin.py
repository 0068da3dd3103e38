"""Registers the built-in image sources and I/O commands, as a third party would."""

from __future__ import annotations

from typing import Any

from cryospin.core.hookspecs import Register, hookimpl


@hookimpl
def register_image_sources(register: Register) -> None:
    """Register the built-in image sources: RELION STAR, cryoSPARC .cs, bare MRC stacks."""
    from cryospin.io.sources import CryosparcSource, MrcStackSource, RelionStarSource

    register("relion-star", RelionStarSource())
    register("cryosparc-cs", CryosparcSource())
    register("mrc-stack", MrcStackSource())


@hookimpl
def register_commands(cli: Any) -> None:
    """Add the I/O commands (``info``) to the ``cryospin`` group."""
    from cryospin.io.info_cmd import info

    cli.add_command(info)
    cli.add_command(__import__("cryospin.io.simulate.cli", fromlist=["simulate"]).simulate)
