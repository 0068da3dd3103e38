"""Simulate the hsp90 demo dataset and reconstruct it (placeholder until the simulator lands)."""

from __future__ import annotations

import click


@click.command(help=__doc__)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="output folder")
def demo(out: str) -> None:
    """Run the demo."""
    raise click.ClickException("the demo needs the simulator (cryospin simulate)")
