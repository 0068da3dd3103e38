"""Summarise a particle file: N, box, pixel size, optics groups, CTF, poses, half-sets, first rows.

Reads .star (RELION 3.0 to 5), .cs (cryoSPARC) and .mrcs/.mrc stacks. Image stacks named by the
metadata are looked for beside it, then under --datadir; --stack replaces the single stack a file
names. --no-images summarises metadata whose stacks are absent. With images, it also measures the
particles' contrast (centre vs background) and shows the contrast-inversion default, warning
when the two obviously disagree.

\b
Example:
    cryospin info particles.star --datadir /data/project
    cryospin info trpv1_small_stack.star --stack trpv1_small_stack.mrcs
    cryospin info cryosparc_P12_J24_001_particles.cs --no-images
"""  # noqa: D301 - the \b line is click's "keep this paragraph as is" marker

from __future__ import annotations

import warnings
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from cryospin.core.particles import ParticleStack
from cryospin.io.common import NoImages
from cryospin.io.contrast import contrast_mismatch, default_invert, measure_contrast


def _mean(values: np.ndarray) -> str:
    """Mean of the finite values as text; ``none`` when there are none (a bare stack)."""
    finite = values[np.isfinite(values)]
    return f"{finite.mean():g}" if finite.size else "none"


def _optics_rows(stack: ParticleStack) -> list[tuple[str, ...]]:
    groups = stack.optics_group if stack.optics_group is not None else np.ones(len(stack), int)
    rows: list[tuple[str, ...]] = []
    for g in np.unique(groups):
        sel = groups == g
        c = stack.ctf.subset(np.nonzero(sel)[0])
        rows.append(
            (
                str(g),
                str(int(sel.sum())),
                _mean(c.voltage_kV),
                _mean(c.cs_mm),
                _mean(c.amplitude_contrast),
            )
        )
    return rows


def summary_tables(stack: ParticleStack, rows: int = 5) -> list[Table]:
    """Rich tables describing ``stack``: overview, optics groups and the first ``rows`` rows."""
    n = len(stack)
    overview = Table(title=f"{stack.path}", show_header=False)
    overview.add_column("field")
    overview.add_column("value")
    overview.add_row("format", str(stack.extra.get("format", "?")))
    overview.add_row("particles (N)", str(n))
    overview.add_row("box (px)", str(stack.box) if stack.box else "unknown")
    overview.add_row("pixel size (Å)", f"{stack.pixel_size_A:.4g}")
    if stack.box and stack.pixel_size_A == stack.pixel_size_A:
        overview.add_row("box (Å)", f"{stack.box * stack.pixel_size_A:.1f}")
    dfu, dfv = stack.ctf.defocus_u_A, stack.ctf.defocus_v_A
    if np.isfinite(dfu).any():
        overview.add_row(
            "defocus U / V (Å)",
            f"{np.nanmin(dfu):,.0f} to {np.nanmax(dfu):,.0f} / {np.nanmin(dfv):,.0f} to "
            f"{np.nanmax(dfv):,.0f}",
        )
    else:
        overview.add_row("CTF", "none")
    overview.add_row("poses", "yes" if stack.rotations is not None else "no")
    overview.add_row("shifts", "yes" if stack.shifts_A is not None else "no")
    if stack.half_set is not None:
        labels, counts = np.unique(stack.half_set, return_counts=True)
        overview.add_row(
            "half-sets", ", ".join(f"{k}: {v}" for k, v in zip(labels, counts, strict=True))
        )
    else:
        overview.add_row("half-sets", "no")
    if stack.extra.get("blob_sign") is not None:
        overview.add_row("cryoSPARC blob/sign", f"{stack.extra['blob_sign']:g}")
    if not isinstance(stack.images, NoImages) and stack.box:
        mean, t = measure_contrast(stack)
        looks = "bright" if mean > 0 else "dark"
        overview.add_row("contrast (measured)", f"protein {looks}: {mean:+.3f} sd, t = {t:+.1f}")
        invert = default_invert(stack)
        overview.add_row("invert by default", "yes" if invert else "no")
        warning = contrast_mismatch(stack, invert)
        if warning is not None:
            overview.add_row("[bold red]contrast warning", warning.split(": ", 1)[1])

    optics = Table(title="optics groups")
    for col in ("group", "particles", "voltage (kV)", "Cs (mm)", "amp. contrast"):
        optics.add_column(col)
    for row in _optics_rows(stack):
        optics.add_row(*row)

    first = Table(title=f"first {min(rows, n)} rows")
    meta = stack.metadata
    if meta is not None and hasattr(meta, "columns"):
        cols = list(meta.columns)[:8]
        for c in cols:
            first.add_column(str(c), overflow="fold")
        for i in range(min(rows, n)):
            first.add_row(*(str(meta[c].iloc[i]) for c in cols))
    elif meta is not None and getattr(meta, "dtype", None) is not None and meta.dtype.names:
        cols = [c for c in meta.dtype.names if meta[c].ndim == 1][:8]
        for c in cols:
            first.add_column(c, overflow="fold")
        for i in range(min(rows, n)):
            first.add_row(*(str(meta[c][i]) for c in cols))
    else:
        first.add_column("particle")
        first.add_column("defocus U (Å)")
        for i in range(min(rows, n)):
            first.add_row(str(i), f"{dfu[i]:g}")
    return [overview, optics, first]


@click.command(help=__doc__)
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--datadir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder searched for the image stacks the metadata names.",
)
@click.option(
    "--stack",
    type=click.Path(path_type=Path),
    default=None,
    help="Stack file replacing the single stack the metadata names.",
)
@click.option("--no-images", is_flag=True, help="Read the metadata only; stacks need not exist.")
@click.option("--rows", default=5, show_default=True, help="How many first rows to show.")
def info(path: Path, datadir: Path | None, stack: Path | None, no_images: bool, rows: int) -> None:
    """Print a summary of the particle file PATH."""
    from cryospin.io.sources import open_particles

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        particles = open_particles(path, datadir, stack=stack, images=not no_images)
    for w in caught:  # one line each, not Python's "file:line: UserWarning" form
        click.echo(f"warning: {w.message}", err=True)
    console = Console(width=120)
    for table in summary_tables(particles, rows):
        console.print(table)
