r"""Align map B onto map A (rotation, hand and shift) and write the aligned B.

Ab-initio maps come out in an arbitrary frame and hand; this searches all rotations of B (and of
its mirror image, z -> -z) for the best real-space correlation with A, refines rotation and
shift locally, and writes B resampled (trilinear) in A's frame. Both maps must be cubic, on the
same grid. Prints the rotation R, shift t (Å, x y z) and hand: aligned B(x) = B'(R^T (x - t))
with B' = B mirrored when "flipped". Particles posed against B (RELION matrix A, origin o)
are posed against A at A' = H(A) R^T and origin o + (A' t)_xy, with H(A) = F A F when flipped
(F = diag(1, 1, -1)), else A (cryospin.core.evaluation.shift_error).

\b
Example:
    cryospin align-maps truth.mrc run1/map.mrc --out run1/map_aligned.mrc
    cryospin align-maps half1.mrc half2.mrc --out half2_al.mrc --json al.json --fsc-csv fsc.csv
"""

from __future__ import annotations

from pathlib import Path

import click

from cryospin.core.errors import InputError


@click.command("align-maps", help=__doc__)
@click.argument("map_a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("map_b", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="where to write B aligned onto A (MRC)",
)
@click.option(
    "--pixel-size",
    "pixel_size",
    type=float,
    default=None,
    help="voxel size in Å (default: from A's header; needed when the headers differ)",
)
@click.option(
    "--hand",
    type=click.Choice(["auto", "same", "flip"]),
    default="auto",
    show_default=True,
    help="search both hands, keep B's, or force the mirror",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="also write the alignment (rotation, shift, hand, scores)",
)
@click.option(
    "--fsc-csv",
    "fsc_csv",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="also write the FSC of A and aligned B (unmasked and masked)",
)
def align_maps(
    map_a: Path,
    map_b: Path,
    out: Path,
    pixel_size: float | None,
    hand: str,
    json_out: Path | None,
    fsc_csv: Path | None,
) -> None:
    """Align MAP_B onto MAP_A and write the result to --out."""
    from cryospin.core.engine import io_bridge
    from cryospin.core.evaluation import align_maps as am
    from cryospin.core.evaluation.outputs import write_summary_json

    vol_a, apix_a = io_bridge.read_map(map_a)
    vol_b, apix_b = io_bridge.read_map(map_b)
    if vol_a.shape != vol_b.shape:
        raise InputError(
            f"{map_b}: grid {vol_b.shape} differs from {map_a}: {vol_a.shape}; resample first"
        )
    if pixel_size is None:
        if abs(apix_a - apix_b) > 1e-3 * max(apix_a, apix_b):
            raise InputError(
                f"voxel sizes differ ({map_a}: {apix_a:g} Å, {map_b}: {apix_b:g} Å); "
                "pass --pixel-size if the headers are wrong"
            )
        pixel_size = apix_a
    if pixel_size <= 0:
        raise InputError(f"--pixel-size must be positive, got {pixel_size}")
    hands = {"auto": "both", "same": "same", "flip": "flipped"}[hand]
    aligned, info = am.align_maps(vol_a, vol_b, pixel_size, hands=hands)
    io_bridge.write_map(out, aligned, pixel_size)

    rot = info.rotation
    click.echo(f"aligned {map_b} onto {map_a} -> {out}")
    click.echo(f"  hand flipped: {'yes' if info.flipped else 'no'}")
    for i, row in enumerate(rot):
        label = "  rotation R:  " if i == 0 else "               "
        click.echo(label + " ".join(f"{v:+.5f}" for v in row))
    click.echo("  shift (Å):    " + " ".join(f"{v:+.3f}" for v in info.shift_A))
    click.echo(f"  correlation:  {info.correlation:.4f} (in sphere {info.correlation_masked:.4f})")
    click.echo(f"  time:         {info.seconds:.1f} s")
    record = {"map_a": str(map_a), "map_b": str(map_b), "out": str(out), **info.to_dict()}
    if fsc_csv is not None:
        from cryospin.core.evaluation.fsc_eval import half_map_fsc
        from cryospin.core.evaluation.outputs import write_fsc_csv

        res = half_map_fsc(vol_a, aligned, pixel_size, align=False)
        write_fsc_csv(fsc_csv, res.frequency_per_A, res.fsc, {"fsc_masked": res.fsc_masked})
        click.echo(
            f"  FSC 0.143: {res.resolution_A:.2f} Å (masked {res.resolution_masked_A:.2f} Å); "
            f"0.5: see {fsc_csv}"
        )
        record["fsc_csv"] = str(fsc_csv)
        record["resolution_0143_A"] = res.resolution_A
        record["resolution_0143_masked_A"] = res.resolution_masked_A
    if json_out is not None:
        write_summary_json(json_out, record)
