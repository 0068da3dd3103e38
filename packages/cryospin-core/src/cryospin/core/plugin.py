"""Core's own plugin: registers the core CLI commands and pose stages (like any plugin)."""

from __future__ import annotations

from typing import Any

from cryospin.core.hookspecs import Register, hookimpl


@hookimpl
def register_commands(cli: Any) -> None:
    """Add the core commands (``plugins``, ``run``, ``demo``, ``align-maps``) to the group."""
    from cryospin.core.cli.demo import demo
    from cryospin.core.cli.plugins import plugins
    from cryospin.core.cli.run import run

    cli.add_command(plugins)
    cli.add_command(run)
    cli.add_command(demo)
    cli.add_command(__import__("cryospin.core.cli.align_maps", fromlist=["x"]).align_maps)


@hookimpl
def register_pose_stages(register: Register) -> None:
    """Register the built-in pose stages ``amortized`` and ``direct``."""
    from cryospin.core.engine.stages import AmortizedStage, DirectStage

    register("amortized", AmortizedStage)
    register("direct", DirectStage)
