r"""List every registered component by kind, with its providing distribution and version.

\b
Example:
    cryospin plugins
    CRYOSPIN_PLUGINS="" cryospin plugins     # built-ins only
"""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from cryospin.core.registry import KINDS, get_registry


@click.command(help=__doc__)
def plugins() -> None:
    """Print a table of components: kind, name, distribution, version."""
    registry = get_registry()
    table = Table(title="cryospin components")
    for column in ("kind", "name", "distribution", "version"):
        table.add_column(column)
    for kind in KINDS:
        for name in registry.names(kind):
            comp = registry.components[kind][name]
            table.add_row(kind, name, comp.distribution, comp.version)
    Console(width=120).print(table)
