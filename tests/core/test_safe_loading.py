"""Loading never runs code: cryoDRGN pickles through the restricted unpickler, checkpoints through
``torch.load(weights_only=True)``. Each crafted file would create a marker file if its payload ran;
the tests check the one-line error and that the marker was never created."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cryospin.core.engine.checkpoint import CHECKPOINT_VERSION, check_loadable, load, save_atomic
from cryospin.core.errors import InputError
from cryospin.core.safe_pickle import UnsafePickleError, safe_load, safe_loads
from cryospin.io.cryodrgn import read_ctf_pkl, read_poses_pkl, write_poses_pkl


class _Payload:
    """Unpickling this object calls ``os.system`` (a classic crafted pickle)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


SAMPLES = [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.linspace(-1, 1, 7),
    np.array([1, -2, 3], dtype=np.int64),
    np.array([[True, False]]),
    np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
    np.float64(2.5),
    np.int32(-7),
    {"a": [1, 2.5, "x", None], "b": (np.eye(3),)},
]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_safe_loads_reads_arrays_and_containers_like_pickle(protocol):
    data = pickle.dumps(SAMPLES, protocol=protocol)
    ours, ref = safe_loads(data), pickle.loads(data)
    assert len(ours) == len(ref)
    for a, b in zip(ours[:7], ref[:7], strict=True):
        assert type(a) is type(b) and np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(a, b)
    assert ours[7]["a"] == ref[7]["a"]
    np.testing.assert_array_equal(ours[7]["b"][0], np.eye(3))


@pytest.mark.parametrize("payload", [_Payload, _EvalPayload])
def test_crafted_pickle_is_refused_and_its_payload_never_runs(tmp_path, payload):
    marker = tmp_path / "PWNED"
    path = tmp_path / "poses.pkl"
    path.write_bytes(pickle.dumps((payload(marker), np.zeros((1, 2)))))
    assert not marker.exists()
    for reader in (safe_load, lambda p: read_poses_pkl(p, 16, 1.0), read_ctf_pkl):
        with pytest.raises(UnsafePickleError) as exc:
            reader(path)
        msg = str(exc.value)
        assert str(path) in msg and len(msg.splitlines()) == 1
        assert ("posix.system" in msg) or ("builtins.eval" in msg)
    assert not marker.exists()


def test_nested_payload_inside_an_object_array_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = 1.0, _Payload(marker)
    with pytest.raises(UnsafePickleError):
        safe_loads(pickle.dumps(arr, protocol=4), "obj.pkl")
    assert not marker.exists()


def test_truncated_pickle_is_a_one_line_input_error(tmp_path):
    path = tmp_path / "poses.pkl"
    write_poses_pkl(path, np.tile(np.eye(3), (4, 1, 1)), np.zeros((4, 2)), 16, 2.0)
    rot, shifts = read_poses_pkl(path, 16, 2.0)  # the file this writer makes reads back
    np.testing.assert_array_equal(rot, np.tile(np.eye(3), (4, 1, 1)))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(InputError) as exc:
        read_poses_pkl(path, 16, 2.0)
    assert "poses.pkl" in str(exc.value) and len(str(exc.value).splitlines()) == 1


def _state() -> dict:
    """A checkpoint-like state with everything a trainer state holds (arrays included)."""
    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(lin.parameters())
    lin(torch.ones(1, 3)).sum().backward()
    opt.step()
    return {
        "version": CHECKPOINT_VERSION,
        "config": {"epochs": 2, "pose_betas": [0.9, 0.999], "particles": "p.star"},
        "indices": np.arange(5, dtype=np.int64),
        "winners": np.array([0, 1, -1, 2, 0]),
        "decoder": lin.state_dict(),
        "dec_opt": opt.state_dict(),
        "rot": torch.eye(3).repeat(5, 1, 1),
        "prev_rot": None,
        "acc": {"loss": 1.5, "n": 3},
        "torch_rng": torch.get_rng_state(),
        "head_changes": [None, 0.5],
        "stage": "direct",
    }


def test_checkpoint_with_tensors_arrays_and_plain_data_round_trips(tmp_path):
    state = _state()
    save_atomic(state, tmp_path / "last.pt")
    check_loadable(tmp_path / "last.pt")  # the pre-check accepts what load accepts
    back = load(tmp_path / "last.pt")
    np.testing.assert_array_equal(back["indices"], state["indices"])
    assert back["indices"].dtype == np.int64 and isinstance(back["winners"], np.ndarray)
    assert torch.equal(back["torch_rng"], state["torch_rng"])
    assert back["dec_opt"]["state"][0]["step"] == state["dec_opt"]["state"][0]["step"]
    assert back["config"] == state["config"] and back["head_changes"] == [None, 0.5]


@pytest.mark.parametrize("payload", [_Payload, _EvalPayload])
def test_crafted_checkpoint_is_refused_and_its_payload_never_runs(tmp_path, payload):
    marker = tmp_path / "PWNED"
    path = tmp_path / "last.pt"
    torch.save({**_state(), "stages": {"direct": payload(marker)}}, path)
    for loader in (load, check_loadable):
        with pytest.raises(InputError) as exc:
            loader(path)
        msg = str(exc.value)
        assert str(path) in msg and "refused" in msg and len(msg.splitlines()) == 1
    assert not marker.exists()


def test_torn_or_foreign_checkpoint_is_a_one_line_error(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic(_state(), path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputError) as exc:
        load(path)
    assert str(path) in str(exc.value) and len(str(exc.value).splitlines()) == 1
    path.write_bytes(b"\x80\x02garbage that is no pickle")
    with pytest.raises(InputError, match="cannot read checkpoint"):
        load(path)
    torch.save([1, 2, 3], path)  # loadable, but not a state dictionary
    with pytest.raises(InputError, match="not a cryospin checkpoint"):
        load(path)


@pytest.mark.parametrize("option", ["--rotations", "--ctf"])
def test_simulate_refuses_a_crafted_pkl_with_exit_2(tmp_path, capsys, option):
    from cryospin.core.cli.main import main
    from cryospin.io.mrc import write_map

    marker = tmp_path / "PWNED"
    crafted = tmp_path / "crafted.pkl"
    crafted.write_bytes(pickle.dumps((_Payload(marker), np.zeros((4, 2)))))
    vol = np.zeros((16, 16, 16), dtype=np.float32)
    vol[6:10, 7:9, 5:11] = 1.0
    write_map(tmp_path / "map.mrc", vol, 3.0)
    args = ["simulate", "--map", str(tmp_path / "map.mrc"), "--box", "16", "--n", "4"]
    args += ["--seed", "0", option, str(crafted), "--out", str(tmp_path / "sim")]
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "refused to load" in err[0], err
    assert not marker.exists() and not (tmp_path / "sim" / "particles.star").exists()
