r"""Reconstruct a map ab initio from a particle stack (semi-amortized cryoSPIN by default).

Writes to -o/--out: config.yaml, map.mrc, poses.star, poses.cs (cryoSPARC) and poses.pkl
(cryoDRGN), whose image names resolve from any folder; metrics.jsonl, fsc.csv/fsc.png,
orientations.png, head_usage.png, checkpoints/, run.log (every event, timestamped) and
summary.json (numbers, versions, command line, start time); with --tensorboard, tensorboard/.
Settings come from --config (YAML, every field of the run configuration), then --set KEY=VALUE,
then the flags. With --resume the run continues from DIR/checkpoints (its config.yaml is the
base; settings that shape the result and the particle set must not change). A folder that holds
another run is refused unless --overwrite is given; one live run per folder (DIR/.lock). The
particles' contrast is measured first: when it contradicts the format's default
inversion the run stops and names the flag to pass (--invert or --no-invert). SIGINT/SIGTERM
checkpoint and stop; run again with --resume.

\b
Example:
    cryospin run --particles p.star -o run1/
    cryospin run --particles trpv1.star --stack trpv1.mrcs -o run1/ --box 64 --epochs 20
    cryospin run --particles p.star -o run1/ --no-invert --ind keep.pkl --apix 1.31
    cryospin run --particles p.star -o run1/ --set encoder_config.n_heads=7 --threads 8
    cryospin run --particles p.star -o run1/ --shifts --half-sets --gt-map truth.mrc
    cryospin run --launcher torchrun --gpus 4 --device cuda --particles p.star -o run1/
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from cryospin.core.errors import ConfigError, CryospinError

#: Flags (by option name) -> run-configuration fields, where the two differ.
FLAG_FIELDS = {"invert": "invert_contrast", "threads": "num_threads"}


def resolve_config(
    out: Path,
    config: str | None,
    resume: bool,
    flags: dict[str, Any],
    sets: tuple[str, ...] | list[str] = (),
) -> Any:
    """Merge the saved config (on resume), --config, --set items and the flags; validate.

    Later sources win: saved ``config.yaml`` < ``--config`` < ``--set`` < flags (``None`` = not
    given). ``--set`` keys may be dotted (``encoder_config.n_heads=7``); values are YAML.

    Raises:
        ConfigError: a malformed ``--set`` item or YAML file, or an invalid field (one line).
    """
    from cryospin.core.dotted import parse_set, set_dotted
    from cryospin.core.engine.config import load_yaml, validate_config

    data: dict[str, Any] = {}
    saved = out / "config.yaml"
    if resume and not saved.is_file():
        raise ConfigError(f"--resume: {saved} is missing: {out} holds no run to resume")
    if resume:
        data.update(load_yaml(saved))
    if config:
        data.update(load_yaml(config))
    for key, value in parse_set(list(sets)).items():
        set_dotted(data, key, value, "--set")
    data.update({FLAG_FIELDS.get(k, k): v for k, v in flags.items() if v is not None})
    return validate_config(data)


@click.command(help=__doc__)
@click.option(
    "--particles",
    type=click.Path(dir_okay=False),
    help="particle file: .star (RELION), .cs (cryoSPARC) or .mrcs; e.g. --particles p.star",
)
@click.option(
    "--stack",
    type=click.Path(dir_okay=False),
    help="stack file replacing the single stack the particle file names; "
    "e.g. --stack trpv1_small_stack.mrcs",
)
@click.option(
    "--datadir",
    type=click.Path(file_okay=False),
    help="folder the image paths are relative to; e.g. --datadir /data/project",
)
@click.option(
    "--ind",
    type=click.Path(dir_okay=False),
    help="particle subset: cryoDRGN index .pkl or text file of 0-based indices; "
    "e.g. --ind keep.pkl",
)
@click.option(
    "--apix",
    type=float,
    help="pixel size in Å of the images, overriding the file's; e.g. --apix 1.31",
)
@click.option(
    "--invert/--no-invert",
    "invert",
    default=None,
    help="multiply the images by -1 (default: by format, RELION yes; checked against the "
    "measured contrast); e.g. --no-invert",
)
@click.option("--encoder", help="encoder name (cryospin plugins); e.g. --encoder multihead")
@click.option("--decoder", help="decoder name; e.g. --decoder hartley")
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="output folder; e.g. -o run1/",
)
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    help="YAML run configuration; e.g. --config run.yaml",
)
@click.option(
    "--preset",
    type=click.Choice(["paper", "paper-real"]),
    help="the paper's settings as the base (engine.presets); e.g. --preset paper",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="set any configuration field (dotted keys, YAML values; repeatable); "
    "e.g. --set encoder_config.n_heads=7 --set lr_pose=0.02",
)
@click.option("--box", type=int, help="working box (Fourier-crop the images); e.g. --box 64")
@click.option("--epochs", type=int, help="number of epochs; e.g. --epochs 20")
@click.option("--seed", type=int, help="random seed; e.g. --seed 1")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="CPU threads of torch (default OMP_NUM_THREADS, else one per core); e.g. --threads 8",
)
@click.option(
    "--shifts/--no-shifts", default=None, help="estimate in-plane translations; e.g. --shifts"
)
@click.option(
    "--half-sets/--no-half-sets",
    "half_sets",
    default=None,
    help="reconstruct two half-sets independently; gold-standard FSC; e.g. --half-sets",
)
@click.option(
    "--gt-map",
    "gt_map",
    type=click.Path(dir_okay=False),
    help="ground-truth map for the metrics; e.g. --gt-map truth.mrc",
)
@click.option("--device", help="cpu, cuda or auto; e.g. --device cuda")
@click.option(
    "--tensorboard/--no-tensorboard",
    default=None,
    help="also write per-epoch scalars to OUT/tensorboard (needs the tensorboard package); "
    "e.g. --tensorboard",
)
@click.option("--resume", is_flag=True, help="continue from DIR/checkpoints; e.g. --resume")
@click.option(
    "--overwrite", is_flag=True, help="replace the run already in --out; e.g. --overwrite"
)
@click.option(
    "--launcher",
    type=click.Choice(["none", "torchrun"]),
    default="none",
    help="torchrun: run on --gpus processes (re-executes under torch.distributed.run); "
    "e.g. --launcher torchrun",
)
@click.option(
    "--gpus",
    type=click.IntRange(min=1),
    default=None,
    help="processes for --launcher torchrun (one per GPU; CPU processes with --device cpu); "
    "e.g. --gpus 4",
)
def run(
    out: str,
    config: str | None,
    sets: tuple[str, ...],
    resume: bool,
    overwrite: bool = False,
    launcher: str = "none",
    gpus: int | None = None,
    **flags: Any,
) -> None:
    """Run the reconstruction and print the summary's key numbers."""
    out_dir = Path(out)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    cfg = resolve_config(out_dir, config, resume, flags, sets)
    if launcher == "torchrun" and int(os.environ.get("WORLD_SIZE", "1")) <= 1:  # engine.distributed
        from cryospin.core.engine.distributed import cli_args, relaunch

        args = cli_args(flags, resume, out, config) + [a for s in sets for a in ("--set", s)]
        args += ["--overwrite"] if overwrite else []
        sys.exit(relaunch(gpus or 1, args))
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports, the others only train
        _reconstruct(cfg, out_dir, resume, overwrite)
        return
    from cryospin.core.engine.run_log import run_log
    from cryospin.core.run.folder import out_errors

    with out_errors(out_dir), run_log(out_dir, tensorboard=cfg.tensorboard):
        _reconstruct(cfg, out_dir, resume, overwrite)


def _reconstruct(cfg: Any, out: Path, resume: bool, overwrite: bool = False) -> None:
    """Run :func:`run_reconstruction`; report the start, a stop or an error, and the summary."""
    from cryospin.core import __version__
    from cryospin.core.engine.checkpoint import StopRequested
    from cryospin.core.engine.report import command_line
    from cryospin.core.engine.run_log import event
    from cryospin.core.run import run_reconstruction

    started = "resumed" if resume else "started"
    event(f"cryospin {__version__} {started}: {command_line()}", on_terminal=False)
    try:
        summary = run_reconstruction(cfg, out, resume=resume, overwrite=overwrite)
    except StopRequested as stop:
        event(f"stopped ({stop.reason}); checkpoint saved in {out}; continue with --resume")
        sys.exit(0 if stop.reason == "max_steps" else 130)
    except CryospinError as exc:
        event(f"error: {exc}", on_terminal=False)  # main() prints it and exits with status 2
        raise
    if summary:
        print_summary(summary)
        event(f"finished: outputs in {out}", on_terminal=False)


def print_summary(summary: dict[str, Any]) -> None:
    """Print the headline numbers of a run (stdout), each also an event of ``run.log``."""
    from cryospin.core.engine.run_log import event

    keys = [
        ("resolution_vs_truth_A", "resolution vs truth (FSC 0.5)", "Å"),
        ("gold_standard_resolution_A", "gold-standard resolution (FSC 0.143)", "Å"),
        ("rotation_error_median_deg", "median rotation error", "°"),
        ("rotation_error_mean_deg", "mean rotation error", "°"),
        (
            "rotation_error_sym_median_deg",
            f"median rotation error modulo the truth's {summary.get('point_group', 'symmetry')}",
            "°",
        ),
        ("shift_error_median_A", "median shift error (after the best global translation)", "Å"),
        ("wall_time_s", "wall time", "s"),
        ("peak_memory_MB", "peak memory", "MB"),
    ]
    if summary.get("symmetry_deg") is None:  # no symmetry accepted: the same number as above
        keys = [k for k in keys if k[0] != "rotation_error_sym_median_deg"]
    lines = []
    for key, label, unit in keys:
        if summary.get(key) is not None:
            lines.append(f"{label}: {summary[key]:.2f} {unit}")
    for stage, ips in (summary.get("images_per_s") or {}).items():
        if ips:
            lines.append(f"images/s ({stage}): {ips:.1f}")
    for line in lines:
        click.echo(line)
        event(line, on_terminal=False)
