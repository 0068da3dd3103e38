r"""Reconstruct a map ab initio from a particle stack (semi-amortized cryoSPIN by default).

Writes to --out: config.yaml, map.mrc, poses.star (the input's format) and poses.pkl,
metrics.jsonl, fsc.csv/fsc.png, orientations.png, head_usage.png, checkpoints/ and summary.json.
Settings come from --config (YAML, every field of the run configuration) and the flags, which
override it. With --resume the run continues from DIR/checkpoints (its config.yaml is the base).
SIGINT/SIGTERM checkpoint and stop; run again with --resume.

\b
Example:
    cryospin run --particles p.star --encoder multihead --decoder hartley --out run1/
    cryospin run --particles p.star --encoder multihead --decoder hartley --out run1/ --box 64
    cryospin run --particles p.star --out run1/ --shifts --half-sets --gt-map truth.mrc
    cryospin run --launcher torchrun --gpus 4 --device cuda --particles p.star --out run1/
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from cryospin.core.errors import ConfigError


def resolve_config(out: Path, config: str | None, resume: bool, flags: dict[str, Any]) -> Any:
    """Merge the saved config (on resume), the --config file and explicit flags; validate."""
    from cryospin.core.engine.config import load_yaml, validate_config

    data: dict[str, Any] = {}
    saved = out / "config.yaml"
    if resume and saved.exists():
        data.update(load_yaml(saved))
    if config:
        data.update(load_yaml(config))
    data.update({k: v for k, v in flags.items() if v is not None})
    return validate_config(data)


@click.command(help=__doc__)
@click.option(
    "--particles", type=click.Path(dir_okay=False), help="particle file (.star, .cs, ...)"
)
@click.option(
    "--datadir", type=click.Path(file_okay=False), help="folder image paths are relative to"
)
@click.option("--encoder", help="encoder name (cryospin plugins), e.g. multihead")
@click.option("--decoder", help="decoder name, e.g. hartley")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--config", "config", type=click.Path(dir_okay=False), help="YAML run configuration")
@click.option("--box", type=int, help="working box (Fourier-crop the images)")
@click.option("--epochs", type=int, help="number of epochs")
@click.option("--seed", type=int, help="random seed")
@click.option("--shifts/--no-shifts", default=None, help="estimate in-plane translations")
@click.option(
    "--half-sets/--no-half-sets",
    "half_sets",
    default=None,
    help="reconstruct two half-sets independently; gold-standard FSC",
)
@click.option("--gt-map", "gt_map", type=click.Path(dir_okay=False), help="ground-truth map")
@click.option("--device", help="cpu, cuda or auto")
@click.option("--resume", is_flag=True, help="continue from DIR/checkpoints")
@click.option(
    "--launcher",
    type=click.Choice(["none", "torchrun"]),
    default="none",
    help="torchrun: run on --gpus processes (re-executes under torch.distributed.run)",
)
@click.option(
    "--gpus",
    type=click.IntRange(min=1),
    default=None,
    help="processes for --launcher torchrun (one per GPU; CPU processes with --device cpu)",
)
def run(
    particles: str | None,
    datadir: str | None,
    encoder: str | None,
    decoder: str | None,
    out: str,
    config: str | None,
    box: int | None,
    epochs: int | None,
    seed: int | None,
    shifts: bool | None,
    half_sets: bool | None,
    gt_map: str | None,
    device: str | None,
    resume: bool,
    launcher: str = "none",
    gpus: int | None = None,
) -> None:
    """Run the reconstruction and print the summary's key numbers."""
    from cryospin.core.engine.checkpoint import StopRequested
    from cryospin.core.engine.pipeline import run_reconstruction

    out_dir = Path(out)
    flags = {
        "particles": particles,
        "datadir": datadir,
        "encoder": encoder,
        "decoder": decoder,
        "box": box,
        "epochs": epochs,
        "seed": seed,
        "shifts": shifts,
        "half_sets": half_sets,
        "gt_map": gt_map,
        "device": device,
    }
    cfg = resolve_config(out_dir, config, resume, flags)
    if launcher == "torchrun" and int(os.environ.get("WORLD_SIZE", "1")) <= 1:  # engine.distributed
        from cryospin.core.engine.distributed import cli_args, relaunch

        sys.exit(relaunch(gpus or 1, cli_args(flags, resume, out, config)))
    if resume and not out_dir.exists():
        raise ConfigError(f"--resume: output folder {out_dir} does not exist")
    try:
        summary = run_reconstruction(cfg, out_dir, resume=resume)
    except StopRequested as stop:
        click.echo(
            f"stopped ({stop.reason}); checkpoint saved in {out_dir}; continue with --resume",
            err=True,
        )
        sys.exit(0 if stop.reason == "max_steps" else 130)
    print_summary(summary)


def print_summary(summary: dict[str, Any]) -> None:
    """Print the headline numbers of a run."""
    keys = [
        ("resolution_vs_truth_A", "resolution vs truth (FSC 0.5)", "Å"),
        ("gold_standard_resolution_A", "gold-standard resolution (FSC 0.143)", "Å"),
        ("rotation_error_median_deg", "median rotation error", "°"),
        ("rotation_error_mean_deg", "mean rotation error", "°"),
        ("rotation_error_sym_median_deg", "median rotation error modulo the truth's symmetry", "°"),
        ("shift_error_median_A", "median shift error (after the best global translation)", "Å"),
        ("wall_time_s", "wall time", "s"),
        ("peak_memory_MB", "peak memory", "MB"),
    ]
    if summary.get("symmetry_deg") is None:  # no symmetry accepted: the same number as above
        keys = [k for k in keys if k[0] != "rotation_error_sym_median_deg"]
    for key, label, unit in keys:
        if summary.get(key) is not None:
            click.echo(f"{label}: {summary[key]:.2f} {unit}")
    for stage, ips in (summary.get("images_per_s") or {}).items():
        if ips:
            click.echo(f"images/s ({stage}): {ips:.1f}")
