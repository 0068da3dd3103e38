"""Run folders of a grid: preparation, state, the input data, and running one point.

Layout of a grid's output folder ``DIR``::

    DIR/grid.json                     manifest: grid name, source, axes, points (label, seed, dir)
    DIR/data/                         the simulated stack (simulate block), made once
    DIR/runs/<label>/seed<k>/         one run: everything ``cryospin run`` writes, plus
        grid_point.yaml               the point's resolved run configuration
        grid.log                      output of the run (local launcher)
        grid_error.txt                the last failure, one line (removed on success)

State of a run folder (:func:`run_state`): ``done`` (``summary.json`` exists), ``failed``
(``grid_error.txt``), ``partial`` (a checkpoint exists: the next launch resumes from it) or
``new``. A folder whose ``grid_point.yaml`` differs from the point's configuration in any field
but :data:`~cryospin.grid.model.NEUTRAL_FIELDS` is an error (a grid edited under the same
``--out``), never silently mixed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from cryospin.core.atomic import atomic_write_text
from cryospin.core.errors import ConfigError
from cryospin.grid.model import Grid, GridPoint, config_differences

RUN_FILE = "grid_point.yaml"
ERROR_FILE = "grid_error.txt"
LOG_FILE = "grid.log"
MANIFEST = "grid.json"
DATA_STAMP = "grid_simulate.json"


def has_checkpoint(run_dir: Path) -> bool:
    """Whether the run left a checkpoint (whole stack or either half-set)."""
    run_dir = Path(run_dir)
    return any(
        (run_dir / sub / "checkpoints" / "last.pt").is_file() for sub in (".", "half1", "half2")
    )


def run_state(run_dir: Path) -> str:
    """``done``, ``failed``, ``partial`` or ``new`` (see the module docstring)."""
    run_dir = Path(run_dir)
    if (run_dir / "summary.json").is_file():
        return "done"
    if (run_dir / ERROR_FILE).is_file():
        return "failed"
    if has_checkpoint(run_dir):
        return "partial"
    return "new"


def prepare(grid: Grid, out: Path) -> list[Path]:
    """Write the manifest and each point's ``grid_point.yaml``; return the run folders in order.

    Raises:
        ConfigError: a run folder holds a run of a different configuration.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dirs: list[Path] = []
    for pt in grid.points:
        run_dir = out / pt.run_dir
        want = pt.config.model_dump(mode="json")
        saved = run_dir / RUN_FILE
        if saved.is_file():
            have = yaml.safe_load(saved.read_text()) or {}
            diff = config_differences(have, want)
            if diff:
                k = diff[0]
                raise ConfigError(
                    f"grid point {pt.key}: {run_dir} holds a run with a different '{k}' "
                    f"({have.get(k)!r}, the grid now gives {want.get(k)!r}); use another --out"
                )
        atomic_write_text(saved, yaml.safe_dump(want, sort_keys=False))
        dirs.append(run_dir)
    write_manifest(grid, out)
    return dirs


def write_manifest(grid: Grid, out: Path) -> None:
    """``DIR/grid.json``: what the report needs to order and label the runs."""
    axes: list[str] = []
    for p in grid.points:
        for k in p.values:
            if k not in axes:
                axes.append(k)
    manifest = {
        "name": grid.name,
        "source": grid.source,
        "description": grid.spec.description,
        "axes": axes,
        "simulate": grid.simulate,
        "points": [
            {"label": p.label, "seed": p.seed, "dir": str(p.run_dir), "values": p.values}
            for p in grid.points
        ],
    }
    atomic_write_text(Path(out) / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")


def needs_data(grid: Grid, data_dir: Path) -> bool:
    """Whether any point reads the simulated stack in ``data_dir``."""
    target = Path(data_dir) / "particles.star"
    return any(p.reads(target) for p in grid.points)


def materialise_data(block: dict[str, Any], data_dir: Path, console: Any = None) -> Path:
    """Simulate the grid's stack into ``data_dir`` once (reused while the block is unchanged).

    The stack is written to a temporary sibling folder and renamed, so an interrupted simulation
    leaves nothing that looks finished. Returns ``data_dir / "particles.star"``.

    Raises:
        ConfigError: ``data_dir`` holds a stack simulated with other settings, or a folder the grid
            did not make.
    """
    from cryospin.io.simulate import SimulationConfig, simulate_dataset

    data_dir = Path(data_dir)
    stamp = data_dir / DATA_STAMP
    if stamp.is_file():
        have = json.loads(stamp.read_text())
        if have != json.loads(json.dumps(block)):
            diff = sorted(k for k in set(have) | set(block) if have.get(k) != block.get(k))
            k = diff[0] if diff else "simulate"
            raise ConfigError(
                f"{data_dir} holds a stack simulated with simulate.{k} = "
                f"{have.get(k)!r}, the grid now gives {block.get(k)!r}; "
                "use another --out"
            )
        return data_dir / "particles.star"
    if data_dir.exists():
        raise ConfigError(f"{data_dir} exists but was not made by cryospin grid; use another --out")
    tmp = data_dir.with_name(data_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    if console is not None:
        console.print(f"simulating the grid's stack into {data_dir} ({block})")
    simulate_dataset(SimulationConfig.model_validate({**block, "out": tmp}))
    (tmp / DATA_STAMP).write_text(json.dumps(block, indent=2) + "\n")
    os.replace(tmp, data_dir)
    return data_dir / "particles.star"


def execute_point(run_dir: Path, console: Any = None) -> str:
    """Run (or resume) the point in ``run_dir`` in this process.

    Returns ``done``, ``stopped`` (``max_steps`` reached; a checkpoint was saved) or
    ``interrupted`` (SIGINT/SIGTERM; a checkpoint was saved). A failure writes its one-line
    message to ``grid_error.txt`` and re-raises.
    """
    from cryospin.core.engine.checkpoint import StopRequested
    from cryospin.core.engine.config import load_yaml, validate_config
    from cryospin.core.run import run_reconstruction

    run_dir = Path(run_dir)
    err = run_dir / ERROR_FILE
    try:
        cfg = validate_config(load_yaml(run_dir / RUN_FILE))
        resume = has_checkpoint(run_dir)  # else a fresh start over what a failed try left
        run_reconstruction(cfg, run_dir, resume=resume, overwrite=not resume, console=console)
    except StopRequested as stop:
        return "stopped" if stop.reason == "max_steps" else "interrupted"
    except Exception as exc:
        record_error(run_dir, f"{type(exc).__name__}: {exc}")
        raise
    if err.exists():
        err.unlink()
    return "done"


def record_error(run_dir: Path, message: str) -> None:
    """Write the first line of ``message`` to ``grid_error.txt`` (read by :func:`last_error`)."""
    atomic_write_text(Path(run_dir) / ERROR_FILE, message.splitlines()[0] + "\n")


def last_error(run_dir: Path) -> str:
    """Return the failure recorded in ``grid_error.txt`` (empty when none)."""
    path = Path(run_dir) / ERROR_FILE
    return path.read_text().strip() if path.is_file() else ""


def point_dirs(grid: Grid, out: Path) -> list[tuple[GridPoint, Path]]:
    """``(point, absolute run folder)`` pairs."""
    return [(p, Path(out) / p.run_dir) for p in grid.points]


def python() -> str:
    """Return the interpreter that runs points in subprocesses (this one)."""
    return sys.executable
