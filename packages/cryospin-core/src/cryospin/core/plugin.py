"""Core's own plugin: registers the core CLI commands through the same hooks as any plugin."""

from __future__ import annotations

from typing import Any

from cryospin.core.hookspecs import hookimpl


@hookimpl
def register_commands(cli: Any) -> None:
    """Add the core commands (``plugins``) to the ``cryospin`` group."""
    from cryospin.core.cli.plugins import plugins

    cli.add_command(plugins)
