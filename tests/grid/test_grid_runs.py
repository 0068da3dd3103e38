"""Running grids: skip-finished, resume from a checkpoint, local subprocesses, submitit, data.

Real (tiny) runs on a simulated 16^3 stack of 32 particles; one or two steps per epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import yaml

from cryospin.core.atomic import atomic_write_text
from cryospin.core.cli.main import main
from cryospin.core.errors import ConfigError
from cryospin.grid import launch, runs
from cryospin.grid.spec import load_grid

SIM = {"preset": "hsp90", "box": 16, "n": 32, "snr": 1.0, "seed": 0}
TINY = {
    "encoder": "multihead",
    "decoder": "hartley",
    "stage_schedule": "semi-amortized",
    "switch_epoch": 1,
    "epochs": 2,
    "batch_size": 16,
    "progress": False,
    "gt_map": None,
    "encoder_config": {"n_heads": 2, "channels": [4, 8, 8], "head_hidden": [16]},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Path:
    """The simulated stack, made through the grid's own materialisation."""
    data = tmp_path_factory.mktemp("shared") / "data"
    star = runs.materialise_data(SIM, data)
    assert star == data / "particles.star" and (data / "gt_map.mrc").is_file()
    return star


def _grid(folder: Path, name: str = "g.yaml", **extra) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump({"base": TINY, **extra}, sort_keys=False))
    return path


def _map(run_dir: Path) -> np.ndarray:
    with mrcfile.open(run_dir / "map.mrc", permissive=True) as m:
        return np.array(m.data)


def test_materialised_data_is_reused_and_guarded(stack, tmp_path):
    data = stack.parent
    stamp = (data / runs.DATA_STAMP).stat().st_mtime_ns
    assert runs.materialise_data(SIM, data) == stack  # same block: reused, not re-simulated
    assert (data / runs.DATA_STAMP).stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match=r"simulated with simulate.n = 32, the grid now gives 64"):
        runs.materialise_data({**SIM, "n": 64}, data)
    (tmp_path / "data").mkdir()
    with pytest.raises(ConfigError, match=r"exists but was not made by cryospin grid"):
        runs.materialise_data(SIM, tmp_path / "data")


def test_skip_finished_and_resume_from_checkpoint(stack, tmp_path, capsys):
    grid = _grid(tmp_path)
    common = ["--particles", str(stack), "--launcher", "inline", "--no-report"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    main(["grid", str(grid), "--out", str(full), *common])  # literally `cryospin grid G --out D`
    assert runs.run_state(full / "runs/base/seed0") == "done"

    # interrupted after one step (max_steps): a checkpoint, no summary
    main(["grid", str(grid), "--out", str(cut), *common, "--set", "max_steps=1"])
    run = cut / "runs/base/seed0"
    assert runs.run_state(run) == "partial" and not (run / "summary.json").exists()
    capsys.readouterr()
    # the same grid again resumes it (max_steps lifted) and ends where the uninterrupted run did
    main(["grid", str(grid), "--out", str(cut), *common])
    assert "0 done (skipped), 1 to resume" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed"] is True
    np.testing.assert_allclose(_map(run), _map(full / "runs/base/seed0"), rtol=0, atol=1e-6)
    steps = [json.loads(x)["steps"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]  # one record per epoch, none repeated by the resume

    # once more: finished runs are skipped (the folder is untouched)
    mtime = (run / "summary.json").stat().st_mtime_ns
    main(["grid", str(grid), "--out", str(cut), *common])
    assert "1 done (skipped)" in capsys.readouterr().out
    assert (run / "summary.json").stat().st_mtime_ns == mtime

    # a changed configuration under the same --out is refused, naming the point and the field
    with pytest.raises(SystemExit) as exc:
        main(["grid", str(grid), "--out", str(cut), *common, "--set", "epochs=3"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "grid point 'base' (seed 0):" in err
    assert "different 'epochs' (2, the grid now gives 3)" in err


def test_invalid_point_fails_before_anything_runs(stack, tmp_path, capsys):
    grid = _grid(tmp_path, axes={"encoder_config.n_heads": [2, 0]})
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["grid", str(grid), "--out", str(out), "--particles", str(stack)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "error: grid point 'encoder_config.n_heads=0' (seed 0): invalid config "
        "field 'encoder_config.n_heads'"
    )
    assert len(err.splitlines()) == 1 and not out.exists()


def _prepared(stack: Path, tmp_path: Path, seeds: list[int]) -> tuple[Path, list[Path]]:
    g = load_grid(
        _grid(tmp_path, seeds=seeds),
        particles=str(stack),
        overrides={"epochs": 1, "batch_size": 32},
    )
    out = tmp_path / "out"
    return out, runs.prepare(g, out)


def _broken(out: Path, stack: Path) -> Path:
    """A run folder whose particles vanished after validation: the run must fail, not the grid."""
    bad = out / "runs/broken/seed0"
    cfg = yaml.safe_load((out / "runs/base/seed0" / runs.RUN_FILE).read_text())
    atomic_write_text(
        bad / runs.RUN_FILE, yaml.safe_dump({**cfg, "particles": str(stack.parent / "gone.star")})
    )
    return bad


def test_local_launcher_subprocesses_in_parallel(stack, tmp_path):
    out, dirs = _prepared(stack, tmp_path, [0])
    bad = _broken(out, stack)
    seen: list[tuple[str, str]] = []
    states = launch.launch_local(
        [*dirs, bad], jobs=2, report=lambda d, s, t: seen.append((d.parent.name, s))
    )
    assert states == {dirs[0]: "done", bad: "failed"}
    assert sorted(seen) == [("base", "done"), ("broken", "failed")]
    for d in dirs:
        assert (d / runs.LOG_FILE).is_file()
        assert json.loads((d / "summary.json").read_text())["peak_memory_MB"] > 0
    assert "gone.star" in runs.last_error(bad) and runs.run_state(bad) == "failed"
    assert "gone.star" in (bad / runs.LOG_FILE).read_text()


def test_submitit_launcher_through_local_executor(stack, tmp_path, capsys):
    """`--launcher slurm` end to end on submitit's local executor: one run done, one failing."""
    from cryospin.io.mrc import write_map

    small = tmp_path / "small.mrc"  # a truth map smaller than the working box: the run fails
    write_map(small, np.zeros((8, 8, 8), np.float32), 24.0)
    grid = _grid(tmp_path, points=[{"name": "good"}, {"name": "bad", "gt_map": str(small)}])
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "grid",
                str(grid),
                "--out",
                str(out),
                "--particles",
                str(stack),
                "--launcher",
                "slurm",
                "--submitit-cluster",
                "local",
                "--jobs",
                "2",
                "--time",
                "10",
                "--cpus",
                "1",
                "--set",
                "epochs=1",
                "--set",
                "batch_size=32",
                "--no-report",
            ]
        )
    assert exc.value.code == 1
    captured = capsys.readouterr()
    assert "submitted 2 job(s)" in captured.out and "1 run(s) failed" in captured.err
    good, bad = out / "runs/good/seed0", out / "runs/bad/seed0"
    assert runs.run_state(good) == "done" and runs.run_state(bad) == "failed"
    assert "smaller than the working box" in runs.last_error(bad)
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())
    assert set(jobs) == {str(good), str(bad)}


def test_slurm_time_parsing():
    got = [
        launch.parse_time(t)
        for t in ("90", "1:30", "2:00:00", "0:10:30", "1-0", "1-2:30", "1-00:00:01")
    ]
    assert got == [90, 2, 120, 11, 1440, 1590, 1441]  # sbatch formats, seconds rounded up
    with pytest.raises(ConfigError, match="--time"):
        launch.parse_time("soon")


def test_worker_env_shares_the_cores_among_concurrent_runs():
    assert launch.worker_env(jobs=3, cores=8, environ={})["OMP_NUM_THREADS"] == "2"
    assert launch.worker_env(jobs=16, cores=8, environ={})["OMP_NUM_THREADS"] == "1"
    kept = launch.worker_env(jobs=2, cores=8, environ={"OMP_NUM_THREADS": "5"})
    assert kept["OMP_NUM_THREADS"] == "5" and kept["PYTHONUNBUFFERED"] == "1"
