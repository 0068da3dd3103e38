r"""Run a grid of reconstructions (components x options x seeds) and report it as one table.

\b
Commands:
    cryospin grid GRID --out DIR [--jobs N] [--launcher local|slurm] [--set KEY=VALUE ...]
    cryospin grid report DIR [--target-resolution A]
    cryospin grid list

GRID is a grid file (YAML) or the name of a shipped grid (paper-table2, heads, switch; see
`cryospin grid list`). `cryospin grid GRID ...` is short for `cryospin grid run GRID ...` (use the
long form for a grid file named like a subcommand).

\b
Example:
    cryospin grid paper-table2 --out table2/ --jobs 2
    cryospin grid heads --out heads/ --particles data/particles.star --set epochs=10
    cryospin grid switch --out switch/ --launcher slurm --partition gpu --time 4:00:00 --gpus 1
    cryospin grid report table2/
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from cryospin.core.errors import ConfigError


class GridGroup(click.Group):
    """A group whose first argument, when it is not a subcommand, is a grid for ``run``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Insert ``run`` in front of a grid file (``cryospin grid GRID.yaml --out DIR``)."""
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=GridGroup, help=__doc__)
def grid() -> None:
    """Run or report grids (``run`` is the default subcommand)."""


def _console() -> Console:
    return Console(width=160)


@grid.command("run")
@click.argument("grid_file", metavar="GRID")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="grid output folder (runs/, data/, grid.json, report.*)",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="runs at a time (local) / array parallelism (slurm)",
)
@click.option(
    "--launcher",
    type=click.Choice(["local", "slurm", "inline"]),
    default="local",
    show_default=True,
    help="local subprocesses, SLURM via submitit, or this process",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="override a run field for every point (YAML value; dotted keys; "
    "simulate.KEY for the simulate block); repeatable",
)
@click.option("--seeds", help="replace the grid's seeds: a comma-separated list, e.g. 0 or 0,1,2")
@click.option(
    "--particles",
    type=click.Path(dir_okay=False, exists=True),
    help="particle file for every point (instead of the grid's simulate block)",
)
@click.option(
    "--gt-map",
    "gt_map",
    type=click.Path(dir_okay=False, exists=True),
    help="ground-truth map for every point",
)
@click.option("--dry-run", is_flag=True, help="expand and validate, list the points, run nothing")
@click.option("--no-report", is_flag=True, help="do not write the report at the end")
@click.option("--partition", help="slurm: partition")
@click.option(
    "--time",
    "time_limit",
    default="60",
    show_default=True,
    help="slurm: time limit per run (sbatch format: M, H:M:S, D-H:M:S)",
)
@click.option(
    "--gpus", type=click.IntRange(min=0), default=0, show_default=True, help="slurm: GPUs per run"
)
@click.option(
    "--cpus", type=click.IntRange(min=1), default=2, show_default=True, help="slurm: CPUs per run"
)
@click.option("--mem-gb", type=float, help="slurm: memory per run (GB)")
@click.option(
    "--slurm-param",
    "slurm_params",
    multiple=True,
    metavar="KEY=VALUE",
    help="slurm: extra sbatch parameter (e.g. account=abc, qos=high); repeatable",
)
@click.option("--no-wait", is_flag=True, help="slurm: submit and return (report later)")
@click.option(
    "--submitit-cluster",
    type=click.Choice(["slurm", "local", "debug"]),
    default="slurm",
    hidden=True,
    help="submitit cluster (local: tests)",
)
def run_grid(
    grid_file: str,
    out: str,
    jobs: int,
    launcher: str,
    sets: tuple[str, ...],
    seeds: str | None,
    particles: str | None,
    gt_map: str | None,
    dry_run: bool,
    no_report: bool,
    partition: str | None,
    time_limit: str,
    gpus: int,
    cpus: int,
    mem_gb: float | None,
    slurm_params: tuple[str, ...],
    no_wait: bool,
    submitit_cluster: str,
) -> None:
    r"""Expand and validate the grid, then run every point that is not finished.

    \b
    Example:
        cryospin grid run paper-table2 --out table2/ --jobs 2 --dry-run
    """
    from cryospin.grid import launch, runs
    from cryospin.grid.spec import load_grid, parse_set

    out_dir = Path(out).resolve()
    data_dir = out_dir / "data"
    seed_list = None
    if seeds is not None:
        try:
            seed_list = [int(x) for x in seeds.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--seeds {seeds!r}: expected integers separated by commas") from None
    g = load_grid(
        grid_file,
        overrides=parse_set(sets),
        seeds=seed_list,
        particles=str(Path(particles).resolve()) if particles else None,
        gt_map=str(Path(gt_map).resolve()) if gt_map else None,
        data_dir=data_dir,
    )
    console = _console()
    n_labels = len(g.labels())
    if dry_run:
        _print_points(console, g, out_dir)
        click.echo(f"grid {g.name}: {n_labels} point(s) x seeds = {len(g.points)} run(s); valid")
        return
    executor = opts = None
    if launcher == "slurm":  # before anything is written: fails off a SLURM cluster
        from cryospin.grid.spec import parse_set as parse_kv

        opts = launch.SlurmOptions(
            partition=partition,
            time_min=launch.parse_time(time_limit),
            gpus_per_node=gpus,
            cpus_per_task=cpus,
            mem_gb=mem_gb,
            extra=parse_kv(slurm_params),
            cluster=submitit_cluster,
            wait=not no_wait,
        )
        executor = launch.slurm_executor(out_dir / "slurm", opts, jobs)
    dirs = runs.prepare(g, out_dir)
    if runs.needs_data(g, data_dir):
        runs.materialise_data(g.simulate or {}, data_dir, console=console)
    states = {d: runs.run_state(d) for d in dirs}
    todo = [d for d in dirs if states[d] != "done"]
    counts = {s: sum(v == s for v in states.values()) for s in ("done", "partial", "failed", "new")}
    click.echo(
        f"grid {g.name}: {n_labels} point(s), {len(dirs)} run(s): {counts['done']} done "
        f"(skipped), {counts['partial']} to resume, {counts['failed']} to retry, "
        f"{counts['new']} new -> {out_dir}"
    )
    done_count = [0]

    def report(d: Path, state: str, seconds: float) -> None:
        done_count[0] += 1
        rel = d.relative_to(out_dir)
        extra = f": {runs.last_error(d)}" if state == "failed" else ""
        click.echo(f"[{done_count[0]}/{len(todo)}] {rel}: {state} ({seconds:.0f} s){extra}")

    if launcher == "inline":
        outcome = launch.launch_inline(todo, report)
    elif launcher == "local":
        outcome = launch.launch_local(todo, jobs, report)
    else:
        assert opts is not None
        outcome = launch.launch_slurm(
            todo, out_dir, opts, jobs, report, echo=click.echo, executor=executor
        )
        if no_wait:
            click.echo(f"when the jobs are done: cryospin grid report {out}")
            return
    failed = [d for d, s in outcome.items() if s == "failed"]
    stopped = [d for d, s in outcome.items() if s in ("stopped", "interrupted")]
    finished = sum(runs.run_state(d) == "done" for d in dirs)
    click.echo(f"grid {g.name}: {finished}/{len(dirs)} run(s) done")
    if finished and not no_report:
        _report(out_dir, None, True, console)
    if stopped:
        click.echo(
            f"{len(stopped)} run(s) stopped with a checkpoint; run the same command again "
            "to resume them"
        )
    if failed:
        click.echo(
            f"{len(failed)} run(s) failed (see grid.log / grid_error.txt in "
            + ", ".join(str(d.relative_to(out_dir)) for d in failed[:3])
            + (" ..." if len(failed) > 3 else "")
            + ")",
            err=True,
        )
        sys.exit(1)
    if any(s == "interrupted" for s in outcome.values()):
        sys.exit(130)


def _print_points(console: Console, g: Any, out_dir: Path) -> None:
    from rich.table import Table

    from cryospin.grid.runs import run_state
    from cryospin.grid.spec import format_value

    axes: list[str] = []
    for p in g.points:
        axes += [k for k in p.values if k not in axes]
    table = Table(title=f"grid {g.name}")
    for c in ["point", *axes, "seed", "state"]:
        table.add_column(c)
    for p in g.points:
        table.add_row(
            p.label,
            *[format_value(p.values[a]) if a in p.values else "" for a in axes],
            str(p.seed),
            run_state(out_dir / p.run_dir),
        )
    console.print(table)


def _report(out: Path, target: float | None, plots: bool, console: Console) -> None:
    from cryospin.grid.report import build_report, rich_table

    rep = build_report(out, target_A=target, plots=plots)
    console.print(rich_table(rep["manifest"], rep["rows"], rep["keys"], rep["target_A"]))
    for note in rep["notes"]:
        click.echo(note)
    click.echo("wrote " + ", ".join(str(p) for p in rep["files"].values()))


@grid.command("report")
@click.argument("out", metavar="DIR", type=click.Path(file_okay=False, exists=True))
@click.option(
    "--target-resolution",
    type=click.FloatRange(min=0, min_open=True),
    help="resolution (Å) for the time-to-resolution column (default: the coarsest "
    "best resolution over the runs)",
)
@click.option("--no-plots", is_flag=True, help="tables only")
def report_cmd(out: str, target_resolution: float | None, no_plots: bool) -> None:
    r"""Collect the runs of DIR into DIR/report.csv, DIR/report.md and plots (seeds aggregated).

    \b
    Example:
        cryospin grid report table2/ --target-resolution 10
    """
    _report(Path(out), target_resolution, not no_plots, _console())


@grid.command("list")
def list_cmd() -> None:
    r"""List the shipped grids (usable by name).

    \b
    Example:
        cryospin grid list
    """
    from rich.table import Table

    from cryospin.grid.spec import load_grid, shipped_grids

    table = Table(title="shipped grids")
    for c in ("name", "points", "runs", "description"):
        table.add_column(c)
    for name, path in sorted(shipped_grids().items()):
        g = load_grid(path, validate=False)
        table.add_row(name, str(len(g.labels())), str(len(g.points)), g.spec.description)
    _console().print(table)
