"""Every shipped grid expands, validates and runs each point for one tiny step, so none can rot.

Each grid uses its own ``simulate`` block, shrunk with ``--set simulate.*`` to a 16^3 stack of 32
particles, one epoch of one batch, a small encoder, and no ground-truth map (the final map
alignment is the slow part of a run and is tested elsewhere); one seed per point (``--seeds 0``).
"""

from __future__ import annotations

import csv
import json

import pytest

from cryospin.core.cli.main import main
from cryospin.core.grid.runs import run_state
from cryospin.core.grid.spec import load_grid, shipped_grids

TINY = ["--seeds", "0", "--set", "simulate.box=16", "--set", "simulate.n=32",
        "--set", "epochs=1", "--set", "batch_size=32", "--set", "gt_map=null",
        "--set", "encoder_config={channels: [4, 8, 8], head_hidden: [16]}",
        "--launcher", "inline"]


def test_the_shipped_grids():
    assert sorted(shipped_grids()) == ["heads", "paper-table2", "switch"]


@pytest.mark.parametrize("name", sorted(shipped_grids()))
def test_shipped_grid_runs_every_point(name, tmp_path, capsys):
    out = tmp_path / name
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
