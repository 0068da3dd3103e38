"""``cryospin demo`` at a tiny size: simulate via the registered command, run, report."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cryospin.core.cli.main import build_cli


def test_demo_tiny(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(
        build_cli(),
        ["demo", "--out", str(out), "--box", "32", "--n", "48", "--epochs", "2", "--workers", "1"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert (out / "data" / "particles.star").is_file() and (out / "data" / "gt_map.mrc").is_file()
    summary = json.loads((out / "run" / "summary.json").read_text())
    assert summary["n_particles"] == 48 and summary["box"] == 32
    assert summary["resolution_vs_truth_A"] > 0 and summary["rotation_error_median_deg"] >= 0
    assert summary["invert_contrast"] is True  # protein-bright simulated .star stack
    assert "median rotation error" in res.output and "target FSC(0.5)" in res.output
