"""``cryospin run`` in a RELION / cryoSPARC / cryoDRGN workflow: flags, contrast check, outputs.

Checks against independent references: the poses in ``poses.cs`` against scipy's rotation-vector
and ZYZ Euler conversions of the ``poses.star`` angles (RELION ``A = R_ZYZ(rot, tilt, psi)^T``,
cryoSPARC ``A = exp(pose)^T``, docs/CONVENTIONS.md items 8 and 10), the images named by the
output files against the input stack's pixels, timestamps with :func:`datetime.fromisoformat`.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import click
import mrcfile
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).parent))
from run_toy_data import make_dataset  # noqa: E402

from cryospin.core.cli.main import build_cli, main  # noqa: E402

TINY = {
    "encoder_config": {"n_heads": 3, "channels": [4, 8, 8], "head_hidden": [16]},
    "batch_size": 16,
    "switch_epoch": 1,
    "progress": False,
    "eval_every": 100,
    "num_threads": 1,
}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The tiny protein-bright toy stack, plus ``dark.mrcs``: the same images negated."""
    folder = tmp_path_factory.mktemp("toy")
    data = make_dataset(folder, n=48, box=16, snr=2.0, seed=0)
    with mrcfile.open(folder / "particles.mrcs") as m:
        bright = np.array(m.data)
    with mrcfile.new(folder / "dark.mrcs") as m:
        m.set_data(-bright)
        m.set_image_stack()
        m.voxel_size = 6.0
    return {**data, "bright": bright, "dark": folder / "dark.mrcs"}


def _config(folder: Path, **extra) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **extra}))
    return path


def _run(args: list[str]):
    return CliRunner().invoke(build_cli(), ["run", *args], catch_exceptions=False)


def test_flags_stack_ind_apix_set_threads_no_invert(toy, tmp_path):
    """--stack, --no-invert, --ind, --apix, --set (dotted), --threads reach the run and outputs."""
    keep = np.array([5, 0, 7, 12, 30, 31, 40, 47, 2, 3, 20, 21])
    ind = tmp_path / "keep.txt"
    ind.write_text("# particles to keep\n" + "\n".join(map(str, keep[:6])) + "\n")
    ind.write_text(ind.read_text() + ", ".join(map(str, keep[6:])) + "\n")
    out = tmp_path / "o"
    res = _run(
        [
            "--particles", str(toy["star"]), "--stack", str(toy["dark"]), "--no-invert",
            "--ind", str(ind), "--apix", "5.0", "--threads", "1",
            "--set", "encoder_config.n_heads=2", "--set", "batch_size=8",
            "-o", str(out), "--config", str(_config(tmp_path)), "--epochs", "1",
        ]
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["stack"] == str(toy["dark"]) and saved["ind"] == str(ind)
    assert saved["apix"] == 5.0 and saved["num_threads"] == 1 and saved["batch_size"] == 8
    assert saved["invert_contrast"] is False and saved["encoder_config"]["n_heads"] == 2
    assert saved["encoder_config"]["channels"] == [4, 8, 8]  # --set merged into the YAML's
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_particles"] == 12 and summary["n_particles_in_file"] == 48
    assert summary["pixel_size_A"] == pytest.approx(5.0)
    assert summary["invert_contrast"] is False and summary["invert_contrast_source"] == "user"
    assert summary["contrast_t"] < -5  # the dark stack measured dark
    assert len(summary["head_usage"]) == 2
    from cryospin.io.star import read_star

    with pytest.warns(UserWarning, match="header pixel size 6 Å disagrees with rlnImagePixel"):
        poses = read_star(out / "poses.star")  # resolves from anywhere: absolute image names
    assert len(poses) == 12 and poses.pixel_size_A == pytest.approx(5.0)
    names = list(poses.metadata["rlnImageName"])
    assert names == [f"{k + 1:06d}@{toy['dark'].resolve()}" for k in keep]
    np.testing.assert_array_equal(poses.images.read(np.arange(12)), -toy["bright"][keep])


def test_every_run_option_shows_an_example():
    run = build_cli().commands["run"]
    for param in run.params:
        if isinstance(param, click.Option) and param.name != "help":
            names = param.opts + param.secondary_opts
            assert any("e.g. " + name in (param.help or "") for name in names), names


def test_ind_reads_a_cryodrgn_pickle_and_rejects_bad_indices(tmp_path):
    from cryospin.core.errors import InputError
    from cryospin.core.run.inputs import load_indices

    pkl = tmp_path / "ind.pkl"
    pkl.write_bytes(pickle.dumps(np.array([4, 1, 9], dtype=np.int64)))  # cryodrgn filter output
    np.testing.assert_array_equal(load_indices(pkl, 10), [4, 1, 9])
    with pytest.raises(InputError, match="index 10 is outside 0..9"):
        load_indices(_text(tmp_path, "1 10"), 10)
    with pytest.raises(InputError, match="appears twice"):
        load_indices(_text(tmp_path, "1 2 1"), 10)
    with pytest.raises(InputError, match="not a list of integers"):
        load_indices(_text(tmp_path, "1 2.5"), 10)


def _text(folder: Path, body: str) -> Path:
    path = folder / "ind.txt"
    path.write_text(body)
    return path


def test_dark_stack_without_a_choice_stops_naming_the_flag(toy, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "run", "--particles", str(toy["star"]), "--stack", str(toy["dark"]),
                "-o", str(tmp_path / "o"), "--config", str(_config(tmp_path)),
            ]
        )  # fmt: skip
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "protein-dark" in err[0] and "pass --no-invert" in err[0]
    log = (tmp_path / "o" / "run.log").read_text()
    assert "pass --no-invert" in log and not (tmp_path / "o" / "map.mrc").exists()


def test_a_chosen_inversion_that_contradicts_the_images_warns(toy):
    from cryospin.core.engine.data import open_stack
    from cryospin.core.run.inputs import check_contrast

    stack = open_stack(toy["star"])  # protein-bright
    with pytest.warns(UserWarning, match="protein-bright .* inversion is off as chosen"):
        invert, info = check_contrast(stack, False)
    assert invert is False and info["contrast_measured_sd"] > 0 and info["contrast_t"] > 5
    invert, info = check_contrast(stack, None)
    assert invert is True and info["invert_contrast_source"] == "default"


def test_set_and_tensorboard_errors_are_one_line_with_exit_2(toy, tmp_path, capsys, monkeypatch):
    base = ["run", "--particles", str(toy["star"]), "-o", str(tmp_path / "o")]
    for extra, needle in (
        (["--set", "epochs"], "expected KEY=VALUE"),
        (["--set", "no_such_field=1"], "no_such_field"),
        (["--set", "epochs=2", "--set", "epochs.x=1"], "'epochs' is not a mapping"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(base + extra)
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and needle in err[0], err
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed
    with pytest.raises(SystemExit) as exc:
        main(base + ["--tensorboard"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "pip install tensorboard" in err[0]


def test_tensorboard_receives_the_epoch_scalars(toy, tmp_path, monkeypatch):
    from cryospin.core.engine import run_log

    scalars: list[tuple[str, float, int]] = []

    class Writer:  # the SummaryWriter methods the handler uses
        def add_scalar(self, tag: str, value: float, step: int) -> None:
            scalars.append((tag, value, step))

        def flush(self) -> None: ...

        def close(self) -> None: ...

    monkeypatch.setattr(run_log, "tensorboard_writer", lambda logdir: Writer())
    out = tmp_path / "o"
    res = _run(
        [
            "--particles", str(toy["star"]), "-o", str(out), "--config", str(_config(tmp_path)),
            "--epochs", "2", "--tensorboard", "--half-sets",
        ]
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    expected = {(f"half{r['half']}/loss", r["loss"], r["epoch"] + 1) for r in recs}
    assert expected <= set(scalars) and len(expected) == 4


def test_outputs_resolve_downstream_and_carry_provenance(toy, tmp_path):
    """A real ``cryospin run`` process (stderr redirected), then ``cryospin info`` elsewhere."""
    cli = Path(sys.executable).parent / "cryospin"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "80"}
    work = tmp_path / "work"
    work.mkdir()
    cfg = _config(tmp_path, progress=True)
    args = [str(cli), "run", "--particles", str(toy["star"]), "-o", "r1", "--config", str(cfg)]
    args += ["--epochs", "1", "--set", "shifts=true"]
    proc = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = work / "r1"
    # the terminal's epoch line is one unwrapped line with the ETA, though stderr is a file
    epoch = [x for x in proc.stderr.splitlines() if x.startswith("epoch 1/1")]
    assert len(epoch) == 1 and "loss=" in epoch[0] and "ETA" in epoch[0] and len(epoch[0]) > 80
    # run.log: every line an ISO 8601 time and one event; it holds what the terminal showed
    log = (out / "run.log").read_text().splitlines()
    for line in log:
        assert datetime.fromisoformat(line.split(" ", 1)[0]).tzinfo is not None
    events = [x.split(" ", 1)[1] for x in log]
    assert epoch[0] in events and any(e.startswith("contrast: ") for e in events)
    assert any(e.startswith("cryospin ") and "run --particles" in e for e in events)
    assert any(e.startswith("wall time: ") for e in events)
    # summary.json: versions, command line, start time
    from cryospin.core import __version__

    summary = json.loads((out / "summary.json").read_text())
    assert summary["cryospin_version"] == __version__
    assert summary["torch_version"] == torch.__version__
    assert summary["command_line"].startswith("cryospin run --particles ")
    assert "--set shifts=true" in summary["command_line"]
    started = datetime.fromisoformat(summary["started_at"])
    assert started.tzinfo is not None and abs(datetime.now().astimezone() - started).seconds < 900
    # poses.star and poses.cs read their images from another folder
    res = CliRunner().invoke(build_cli(), ["info", str(out / "poses.star")])
    assert res.exit_code == 0 and "contrast (measured)" in res.output, res.output
    from cryospin.io.cryosparc import read_cs
    from cryospin.io.star import read_star

    star, cs = read_star(out / "poses.star"), read_cs(out / "poses.cs")
    np.testing.assert_array_equal(cs.images.read(np.arange(48)), toy["bright"])
    np.testing.assert_array_equal(star.images.read(np.arange(48)), toy["bright"])
    _check_cs_against_star(np.load(out / "poses.cs"), star.metadata, toy)
    assert cs.extra["blob_sign"] == 1.0  # the stack was inverted: cryoSPARC's protein-bright sign


def _check_cs_against_star(cs: np.ndarray, star, toy) -> None:
    """poses.cs fields vs poses.star columns, through scipy (independent of cryospin.so3)."""
    eul = star[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(np.float64)
    a = Rotation.from_euler("ZYZ", eul, degrees=True).as_matrix().transpose(0, 2, 1)  # RELION A
    exp = Rotation.from_rotvec(cs["alignments3D/pose"].astype(np.float64)).as_matrix()
    np.testing.assert_allclose(exp, a.transpose(0, 2, 1), atol=2e-6)  # A = exp(pose)^T
    origin_A = star[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy(np.float64)
    shift_A = cs["alignments3D/shift"] * cs["alignments3D/psize_A"][:, None]
    np.testing.assert_allclose(shift_A, origin_A, atol=1e-4)
    assert np.abs(origin_A).max() > 0  # --set shifts=true estimated non-zero shifts
    np.testing.assert_array_equal(cs["blob/idx"], np.arange(48))
    stack_file = str(toy["star"].parent.resolve() / "particles.mrcs")
    assert {p.decode() for p in cs["blob/path"]} == {stack_file}
    np.testing.assert_array_equal(cs["blob/shape"], np.full((48, 2), 16))
    np.testing.assert_allclose(cs["blob/psize_A"], 6.0)
    ctf = toy["ctf"]
    np.testing.assert_allclose(cs["ctf/df1_A"], ctf.defocus_u_A, rtol=1e-6)
    np.testing.assert_allclose(cs["ctf/df2_A"], ctf.defocus_v_A, rtol=1e-6)
    np.testing.assert_allclose(cs["ctf/df_angle_rad"], np.radians(ctf.defocus_angle_deg), atol=1e-6)
    np.testing.assert_allclose(cs["ctf/accel_kv"], 300.0)
    np.testing.assert_allclose(cs["ctf/cs_mm"], 2.0)
    np.testing.assert_allclose(cs["ctf/amp_contrast"], 0.1, rtol=1e-6)
