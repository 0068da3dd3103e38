"""cryospin-grid's plugin: adds ``cryospin grid`` to the command-line interface."""

from __future__ import annotations

from typing import Any

from cryospin.core.hookspecs import hookimpl


@hookimpl
def register_commands(cli: Any) -> None:
    """Add the ``grid`` command group to the ``cryospin`` group."""
    from cryospin.grid.cli import grid

    cli.add_command(grid)
