"""End-to-end ``cryospin run`` on a tiny synthetic stack: outputs, resume, half-sets, errors."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from run_toy_data import make_dataset  # noqa: E402

from cryospin.core.cli.main import build_cli, main  # noqa: E402

TINY = {
    "encoder_config": {"n_heads": 3, "channels": [4, 8, 8], "head_hidden": [16]},
    "batch_size": 16,
    "switch_epoch": 1,
    "progress": False,
    "eval_every": 100,
}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("toy"), n=48, box=16, snr=2.0, seed=0)


def _config(folder: Path, name: str = "cfg", **extra) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**TINY, **extra}))
    return path


def _run(args: list[str]):
    result = CliRunner().invoke(build_cli(), ["run", *args], catch_exceptions=False)
    return result


def test_run_end_to_end_writes_every_output(toy, tmp_path):
    out = tmp_path / "run"
    cfg = _config(tmp_path)
    res = _run(
        [
            "--particles",
            str(toy["star"]),
            "--encoder",
            "multihead",
            "--decoder",
            "hartley",
            "--out",
            str(out),
            "--config",
            str(cfg),
            "--epochs",
            "2",
            "--seed",
            "1",
            "--shifts",
            "--half-sets",
            "--gt-map",
            str(toy["truth"]),
        ]
    )
    assert res.exit_code == 0, res.output
    for name in (
        "config.yaml",
        "map.mrc",
        "map_half1.mrc",
        "map_half2.mrc",
        "poses.star",
        "poses.pkl",
        "metrics.jsonl",
        "fsc.csv",
        "fsc.png",
        "orientations.png",
        "head_usage.png",
        "summary.json",
        "half1/checkpoints/last.pt",
        "half2/checkpoints/last.pt",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "n_particles",
        "box",
        "pixel_size_A",
        "wall_time_s",
        "images_per_s",
        "peak_memory_MB",
        "resolution_vs_truth_A",
        "gold_standard_resolution_A",
        "rotation_error_median_deg",
        "rotation_error_mean_deg",
    ):
        assert summary.get(key) is not None, key
    assert summary["n_particles"] == 48 and summary["box"] == 16
    assert summary["pixel_size_A"] == pytest.approx(6.0)
    assert set(summary["images_per_s"]) == {
        "amortized_half1",
        "direct_half1",
        "amortized_half2",
        "direct_half2",
    }
    # config.yaml is the resolved configuration and validates again
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["epochs"] == 2 and saved["shifts"] is True and saved["seed"] == 1
    # metrics: one record per epoch and half, with the documented fields
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["half"], r["epoch"], r["stage"]) for r in recs] == [
        (1, 0, "amortized"),
        (1, 1, "direct"),
        (2, 0, "amortized"),
        (2, 1, "direct"),
    ]
    for r in recs:
        for key in (
            "loss",
            "wall_time_s",
            "images_per_s",
            "rotation_error_median_deg",
            "resolution_vs_truth_A",
        ):
            assert np.isfinite(r[key]), key
    assert len(recs[0]["head_usage"]) == 3 and recs[1]["pose_change_deg"] >= 0
    # the map has the voxel size, the poses round-trip through the registered STAR reader
    from cryospin.io.mrc import read_map
    from cryospin.io.star import read_star

    vol, apix = read_map(out / "map.mrc")
    assert vol.shape == (16, 16, 16) and apix == pytest.approx(6.0)
    stack = read_star(out / "poses.star", images=False)
    assert len(stack) == 48 and stack.rotations.shape == (48, 3, 3)
    np.testing.assert_allclose(
        stack.rotations @ np.swapaxes(stack.rotations, 1, 2),
        np.broadcast_to(np.eye(3), (48, 3, 3)),
        atol=1e-5,
    )
    rot, trans = pickle.loads((out / "poses.pkl").read_bytes())
    assert rot.shape == (48, 3, 3) and trans.shape == (48, 2)
    fsc = (out / "fsc.csv").read_text().splitlines()
    assert (
        fsc[0].startswith("shell,frequency_per_A,resolution_A,fsc,fsc_vs_truth")
        and len(fsc) == 1 + 9
    )


def _map(out: Path) -> np.ndarray:
    from cryospin.io.mrc import read_map

    return read_map(out / "map.mrc")[0]


def test_kill_and_resume_ends_where_an_uninterrupted_run_ends(toy, tmp_path):
    common = [
        "--particles",
        str(toy["star"]),
        "--encoder",
        "multihead",
        "--decoder",
        "hartley",
        "--epochs",
        "2",
        "--seed",
        "3",
        "--shifts",
    ]
    full = tmp_path / "full"
    assert _run([*common, "--out", str(full), "--config", str(_config(tmp_path))]).exit_code == 0
    part = tmp_path / "part"
    # stop in the amortized stage mid-epoch (step 2 of 3), then in the direct stage (step 5 of 6)
    res = _run(
        [*common, "--out", str(part), "--config", str(_config(tmp_path, "stop2", max_steps=2))]
    )
    assert res.exit_code == 0 and "max_steps" in res.output
    assert not (part / "map.mrc").exists()
    res = _run(
        [
            *common,
            "--out",
            str(part),
            "--resume",
            "--config",
            str(_config(tmp_path, "stop5", max_steps=5)),
        ]
    )
    assert res.exit_code == 0 and not (part / "map.mrc").exists()
    res = _run(
        [
            *common,
            "--out",
            str(part),
            "--resume",
            "--config",
            str(_config(tmp_path, "nostop", max_steps=None)),
        ]
    )
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(_map(part), _map(full), rtol=1e-5, atol=1e-6)
    recs = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [0, 1]
    assert json.loads((part / "summary.json").read_text())["resumed"] is True


def test_bad_config_value_is_a_one_line_error_with_exit_2(toy, tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("lr_decoder: -0.5\n")
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "run",
                "--particles",
                str(toy["star"]),
                "--out",
                str(tmp_path / "o"),
                "--config",
                str(cfg),
            ]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "lr_decoder" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(
            ["run", "--particles", str(toy["star"]), "--out", str(tmp_path / "o"), "--epochs", "0"]
        )
    assert exc.value.code == 2
    assert "epochs" in capsys.readouterr().err
    cfg.write_text("encoder_config: {n_heads: 0}\n")
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "run",
                "--particles",
                str(toy["star"]),
                "--out",
                str(tmp_path / "o"),
                "--config",
                str(cfg),
            ]
        )
    assert exc.value.code == 2
    assert "encoder_config.n_heads" in capsys.readouterr().err
