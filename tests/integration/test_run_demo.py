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
    # the symmetry-aware median error is printed once (run summary) when a symmetry was accepted,
    # else not at all (it would repeat the plain median); the target line has no number
    sym = f"{summary['rotation_error_sym_median_deg']:.2f}"
    shown = sum("modulo" in line and sym in line for line in res.output.splitlines())
    assert shown == (0 if summary["symmetry_deg"] is None else 1)
    # the demo does not estimate shifts, so no shift error is reported (it would restate the truth)
    assert "shift_error_median_A" not in summary and "median shift error" not in res.output


def test_demo_prints_the_symmetric_error_once(capsys):
    from cryospin.core.cli.demo import report_targets

    summary = {
        "pixel_size_A": 6.0,
        "resolution_vs_truth_A": 15.0,
        "rotation_error_median_deg": 91.37,
        "rotation_error_sym_median_deg": 3.21,
        "symmetry_deg": 180.0,
    }
    report_targets(summary)
    out = capsys.readouterr().out
    assert out.count("3.21") == 1 and "91.37" in out
    assert "target FSC(0.5) <= 18.0 Å: met" in out
    assert "target median rotation error (modulo the truth's 180° symmetry) < 5°: met" in out
