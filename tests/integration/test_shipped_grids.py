"""Every shipped grid expands, validates and runs each point for one tiny step, so none can rot.

Each grid uses its own ``simulate`` block, shrunk with ``--set simulate.*`` to a 16^3 stack of 32
particles (simulated once: grids with the same block reuse ``DIR/data``), one epoch of one batch,
a small encoder, and no ground-truth map (the final map alignment is the slow part of a run and is
tested elsewhere); one seed per point (``--seeds 0``).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from cryospin.core.cli.main import main
from cryospin.grid.runs import materialise_data, run_state
from cryospin.grid.spec import load_grid, parse_set, shipped_grids

TINY = [
    "--seeds",
    "0",
    "--set",
    "simulate.box=16",
    "--set",
    "simulate.n=32",
    "--set",
    "epochs=1",
    "--set",
    "batch_size=32",
    "--set",
    "gt_map=null",
    "--set",
    "encoder_config={channels: [4, 8, 8], head_hidden: [16]}",
    "--launcher",
    "inline",
]


def _block(name: str) -> dict:
    sets = [v for k, v in zip(TINY, TINY[1:], strict=False) if k == "--set"]
    return load_grid(name, overrides=parse_set(sets), validate=False).simulate


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> tuple[dict, Path]:
    """One shrunk stack simulated by the grid machinery; grids with the same block reuse it."""
    block = _block("paper-table2")
    data = tmp_path_factory.mktemp("sim") / "data"
    materialise_data(block, data)
    return block, data


def test_the_shipped_grids():
    assert sorted(shipped_grids()) == ["heads", "paper-table2", "switch"]


@pytest.mark.parametrize("name", sorted(shipped_grids()))
def test_shipped_grid_runs_every_point(name, simulated, tmp_path, capsys):
    out = tmp_path / name
    block, data = simulated
    if _block(name) == block:  # same simulate block: DIR/data is reused, not simulated again
        shutil.copytree(data, out / "data")
    report = [] if name == "paper-table2" else ["--no-report"]
    main(["grid", name, "--out", str(out), *TINY, *report])
    labels = load_grid(name).labels()
    manifest = json.loads((out / "grid.json").read_text())
    assert [p["label"] for p in manifest["points"]] == labels
    assert (out / "data" / "particles.star").is_file()
    for p in manifest["points"]:
        run = out / p["dir"]
        assert run_state(run) == "done", (p["label"], run)
        summary = json.loads((run / "summary.json").read_text())
        assert summary["n_particles"] == 32 and summary["box"] == 16
        assert summary["rotation_error_mean_deg"] is not None  # simulated poses are known
    assert f"{len(labels)}/{len(labels)} run(s) done" in capsys.readouterr().out
    if name == "paper-table2":
        rows = list(csv.DictReader((out / "report.csv").open()))
        assert [r["point"] for r in rows] == labels
        assert all(r["seeds_done"] == "1" and r["rotation_error_mean_deg_mean"] for r in rows)
        assert (out / "report.md").is_file() and (out / "pose_error_per_epoch.png").is_file()
