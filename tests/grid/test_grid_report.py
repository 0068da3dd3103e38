"""``cryospin grid report`` on fake run folders with known summaries and per-epoch metrics.

Expected numbers are worked out by hand from the values written below (sample std, ddof = 1).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from cryospin.core.cli.main import main
from cryospin.grid.collect import collect
from cryospin.grid.report import build_report, time_to_resolution

A_SUMMARIES = [  # point "a", seeds 0, 1, 2
    {
        "rotation_error_mean_deg": 10.0,
        "rotation_error_median_deg": 8.0,
        "resolution_vs_truth_A": 20.0,
        "wall_time_s": 100.0,
        "peak_memory_MB": 500.0,
        "images_per_s": {"amortized": 100.0, "direct": 300.0},
        "switch_epoch": 1,
    },
    {
        "rotation_error_mean_deg": 20.0,
        "rotation_error_median_deg": 12.0,
        "resolution_vs_truth_A": 24.0,
        "wall_time_s": 110.0,
        "peak_memory_MB": 520.0,
        "images_per_s": {"amortized": 120.0, "direct": 330.0},
        "switch_epoch": 1,
    },
    {
        "rotation_error_mean_deg": 30.0,
        "rotation_error_median_deg": 16.0,
        "resolution_vs_truth_A": 22.0,
        "wall_time_s": 120.0,
        "peak_memory_MB": 540.0,
        "images_per_s": {"amortized": 140.0, "direct": 360.0},
        "switch_epoch": 1,
    },
]
A_RES = [[40.0, 25.0, 20.0], [45.0, 30.0, 24.0], [40.0, 22.0, 22.0]]  # per epoch; 5 s each
B_SUMMARY = {
    "rotation_error_mean_deg": 40.0,
    "gold_standard_resolution_A": 30.0,
    "wall_time_s": 50.0,
    "peak_memory_MB": 700.0,
    "images_per_s": {"amortized_half1": 50.0, "amortized_half2": 70.0},
}


def _epochs(res: list[float], wall: float, half: int | None = None) -> list[dict]:
    recs = []
    for e, r in enumerate(res):
        rec = {
            "epoch": e,
            "stage": "amortized",
            "loss": 1.0,
            "wall_time_s": wall,
            "resolution_vs_truth_A": r,
            "rotation_error_median_deg": 50.0 - 10 * e,
        }
        if half is not None:
            rec = {"half": half, **rec}
        recs.append(rec)
    return recs


def _write_run(d: Path, summary: dict | None, records: list[dict]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture()
def grid_dir(tmp_path: Path) -> Path:
    out = tmp_path / "grid"
    points = []
    for seed, (s, res) in enumerate(zip(A_SUMMARIES, A_RES, strict=True)):
        _write_run(out / f"runs/a/seed{seed}", s, _epochs(res, 5.0))
        points.append(
            {
                "label": "a",
                "seed": seed,
                "dir": f"runs/a/seed{seed}",
                "values": {"encoder": "multihead", "lr_pose": 0.05},
            }
        )
    # b: half-sets; half 2's records must be ignored; seed 1 interrupted (checkpoint only)
    _write_run(
        out / "runs/b/seed0",
        B_SUMMARY,
        _epochs([50.0, 26.0], 2.0, half=1) + _epochs([60.0, 35.0], 3.0, half=2),
    )
    ck = out / "runs/b/seed1/checkpoints"
    ck.mkdir(parents=True)
    (ck / "last.pt").write_bytes(b"x")
    points += [
        {"label": "b", "seed": s, "dir": f"runs/b/seed{s}", "values": {"encoder": "cryoai"}}
        for s in (0, 1)
    ]
    (out / "grid.json").write_text(
        json.dumps({"name": "fake", "axes": ["encoder", "lr_pose"], "points": points})
    )
    return out


def _row(rep: dict, label: str):
    return next(r for r in rep["rows"] if r.label == label)


def test_aggregated_mean_and_spread_exact(grid_dir):
    rep = build_report(grid_dir, plots=False)
    a, b = _row(rep, "a"), _row(rep, "b")
    exact = {  # (mean, sample std, n)
        "rotation_error_mean_deg": (20.0, 10.0, 3),
        "rotation_error_median_deg": (12.0, 4.0, 3),
        "resolution_vs_truth_A": (22.0, 2.0, 3),
        "wall_time_s": (110.0, 10.0, 3),
        "peak_memory_MB": (520.0, 20.0, 3),
        "images_per_s_amortized": (120.0, 20.0, 3),
        "images_per_s_direct": (330.0, 30.0, 3),
    }
    for key, (mean, std, n) in exact.items():
        got = a.stats[key]
        assert got[0] == pytest.approx(mean, rel=1e-12) and got[2] == n, key
        assert got[1] == pytest.approx(std, rel=1e-12), key
    # default target: the coarsest best resolution = max(20, 24, 22, 26 (b, half 1)) = 26 Å
    assert rep["target_A"] == 26.0
    # time to 26 Å: a -> 10, 15, 10 s (epochs of 5 s); b -> 4 s (half 1: 2 s epochs)
    m, s, n = a.stats["time_to_target_s"]
    assert m == pytest.approx(35 / 3, rel=1e-12) and n == 3
    spread = math.sqrt(((10 - 35 / 3) ** 2 * 2 + (15 - 35 / 3) ** 2) / 2)
    assert s == pytest.approx(spread, rel=1e-12)
    # b: one finished seed -> mean, no spread; halves averaged per stage; gold-standard column
    assert b.stats["time_to_target_s"] == (4.0, None, 1)
    assert b.stats["images_per_s_amortized"] == (60.0, None, 1)
    assert b.stats["gold_standard_resolution_A"] == (30.0, None, 1)
    assert b.stats["rotation_error_mean_deg"] == (40.0, None, 1)
    assert b.stats["resolution_vs_truth_A"] == (None, None, 0)
    assert (a.n_done, len(a.runs), b.n_done, len(b.runs)) == (3, 3, 1, 2)
    assert rep["states"] == {"done": 4, "partial": 1}


def test_given_target_and_unreached_runs(grid_dir):
    rep = build_report(grid_dir, target_A=23.0, plots=False)
    # a: seed 0 reaches 20 <= 23 at 15 s, seed 1 never (24), seed 2 at 10 s; b never (26)
    m, s, n = _row(rep, "a").stats["time_to_target_s"]
    assert (m, n) == (12.5, 2) and s == pytest.approx(math.sqrt(12.5), rel=1e-12)
    assert _row(rep, "b").stats["time_to_target_s"] == (None, None, 0)
    assert time_to_resolution(_epochs([40.0, 25.0], 5.0), 25.0) == 10.0
    assert time_to_resolution([], 25.0) is None


def test_csv_markdown_and_plots(grid_dir):
    rep = build_report(grid_dir, plots=True)
    assert set(rep["files"]) == {"csv", "md", "resolution_vs_time", "pose_error_per_epoch"}
    for p in rep["files"].values():
        assert p.is_file() and p.stat().st_size > 0
    rows = list(csv.DictReader((grid_dir / "report.csv").open()))
    assert [r["point"] for r in rows] == ["a", "b"]
    a, b = rows
    assert (a["encoder"], a["lr_pose"], b["encoder"], b["lr_pose"]) == (
        "multihead",
        "0.05",
        "cryoai",
        "",
    )
    assert (a["seeds_done"], a["seeds_total"], b["seeds_done"], b["seeds_total"]) == (
        "3",
        "3",
        "1",
        "2",
    )
    assert float(a["rotation_error_mean_deg_mean"]) == 20.0
    assert float(a["rotation_error_mean_deg_std"]) == 10.0
    assert float(a["images_per_s_direct_std"]) == pytest.approx(30.0, rel=1e-12)
    assert b["rotation_error_mean_deg_std"] == "" and b["resolution_vs_truth_A_mean"] == ""
    md = (grid_dir / "report.md").read_text()
    assert md.startswith("# Grid report: fake")
    assert "| a | multihead | 0.05 | 3/3 | 20 ± 10 | 12 ± 4 | 22 ± 2 |" in md
    assert "time to 26 Å (s)" in md and "runs: 4 done, 1 partial" in md


def test_report_cli_and_discovery_without_manifest(grid_dir, capsys):
    (grid_dir / "grid.json").unlink()
    manifest, runs = collect(grid_dir)
    assert [(r.label, r.seed, r.state) for r in runs] == [
        ("a", 0, "done"),
        ("a", 1, "done"),
        ("a", 2, "done"),
        ("b", 0, "done"),
        ("b", 1, "partial"),
    ]
    main(["grid", "report", str(grid_dir), "--no-plots", "--target-resolution", "23"])
    out = capsys.readouterr().out
    assert "mean ± std over seeds" in out and "20 ± 10" in out
    assert (grid_dir / "report.csv").is_file()
    assert not (grid_dir / "pose_error_per_epoch.png").exists()


def test_report_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["grid", "report", str(tmp_path)])
    assert exc.value.code == 2
    assert "holds no grid runs" in capsys.readouterr().err
