"""Unit tests of the training engine: row-sparse Adam, winner-takes-all, direct-stage convergence,
configuration errors, atomic checkpoints and the signal guard."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from cryospin.core.engine.checkpoint import SignalGuard, load, save_atomic
from cryospin.core.engine.config import RunConfig, validate_config
from cryospin.core.engine.data import Batch
from cryospin.core.engine.forward import candidate_loss, frequency_mask, render, winner_takes_all
from cryospin.core.engine.pose_table import PoseTable, RowSparseAdam
from cryospin.core.engine.stages import DirectStage, EngineContext
from cryospin.core.errors import ConfigError
from cryospin.core.fourier import fft3_centered
from cryospin.core.interfaces import ComponentConfig, Decoder
from cryospin.core.slicing import extract_central_slices
from cryospin.core.so3 import exp_map, geodesic_distance_deg, random_rotations


# ----------------------------------------------------------------------------- row-sparse Adam
def test_row_sparse_adam_matches_torch_adam_on_touched_rows():
    torch.manual_seed(0)
    n, k = 20, 3
    init = torch.randn(n, k, dtype=torch.float64)
    sparse_param = init.clone()
    opt = RowSparseAdam(sparse_param, lr=0.05, betas=(0.9, 0.99))
    rows = torch.tensor([1, 4, 7, 19])
    dense = torch.nn.Parameter(init[rows].clone())
    ref = torch.optim.Adam([dense], lr=0.05, betas=(0.9, 0.99))
    for step in range(7):
        g = torch.randn(len(rows), k, dtype=torch.float64) * (step + 1)
        opt.step(rows, g)
        dense.grad = g.clone()
        ref.step()
    torch.testing.assert_close(sparse_param[rows], dense.detach(), rtol=1e-12, atol=1e-12)
    st = ref.state[dense]
    torch.testing.assert_close(opt.exp_avg[rows], st["exp_avg"])
    torch.testing.assert_close(opt.exp_avg_sq[rows], st["exp_avg_sq"])
    assert (opt.steps[rows] == 7).all()
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(sparse_param[untouched], init[untouched])
    assert (opt.exp_avg[untouched] == 0).all() and (opt.exp_avg_sq[untouched] == 0).all()
    assert (opt.steps[untouched] == 0).all()


def test_row_sparse_adam_per_row_step_counts_and_state_roundtrip():
    p = torch.zeros(5, 2)
    opt = RowSparseAdam(p, lr=0.1)
    opt.step(torch.tensor([0, 1]), torch.ones(2, 2))
    opt.step(torch.tensor([1, 2]), torch.ones(2, 2))
    assert opt.steps.tolist() == [1, 2, 1, 0, 0]
    # first Adam step moves each coordinate by exactly lr
    torch.testing.assert_close(p[0], torch.full((2,), -0.1))
    state = opt.state_dict()
    other = RowSparseAdam(torch.zeros(5, 2), lr=0.5)
    other.load_state_dict(state)
    assert other.lr == 0.1 and torch.equal(other.steps, opt.steps)


# ----------------------------------------------------------------------------- WTA
def test_winner_takes_all_picks_the_minimum():
    losses = torch.tensor([[3.0, 1.0, 2.0], [0.5, 4.0, 0.7]], requires_grad=True)
    loss, win = winner_takes_all(losses)
    assert win.tolist() == [1, 0]
    assert loss.item() == pytest.approx((1.0 + 0.5) / 2)
    loss.backward()
    expected = torch.tensor([[0.0, 0.5, 0.0], [0.5, 0.0, 0.0]])
    torch.testing.assert_close(losses.grad, expected)


def test_candidate_loss_l1_and_gaussian():
    obs = torch.zeros(1, 4, 4, dtype=torch.complex64)
    pred = torch.full((1, 2, 4, 4), 1 + 1j, dtype=torch.complex64)
    pred[:, 1] = 2
    mask = torch.ones(4, 4, dtype=torch.bool)
    torch.testing.assert_close(
        candidate_loss(pred, obs, mask, "gaussian"), torch.tensor([[2.0, 4.0]])
    )
    torch.testing.assert_close(candidate_loss(pred, obs, mask, "l1"), torch.tensor([[2.0, 2.0]]))


def test_frequency_mask_radius():
    m = frequency_mask(16, 0.5)
    assert m[8, 8] and m[8, 12] and not m[8, 13]


# ----------------------------------------------------------------------------- direct stage
class FixedVolume(Decoder):
    """Stand-in decoder: central slices of a fixed Fourier volume, times a learnable scale."""

    class Config(ComponentConfig):
        pass

    def __init__(self, volume: torch.Tensor, pixel_size_A: float = 5.0) -> None:
        super().__init__(self.Config(), volume.shape[-1], pixel_size_A)
        self.register_buffer("fvol", fft3_centered(volume))
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, rotations: torch.Tensor) -> torch.Tensor:
        return extract_central_slices(self.fvol, rotations) * self.scale

    def to_map(self) -> torch.Tensor:
        raise NotImplementedError


def _blobs(box: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    c = torch.arange(box, dtype=torch.float32) - box // 2
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    vol = torch.zeros(box, box, box)
    for _ in range(6):
        p = (torch.rand(3, generator=g) - 0.5) * box * 0.5
        vol += torch.exp(-((x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2) / (2 * 1.5**2))
    return vol


def test_direct_stage_recovers_a_known_pose_perturbation():
    torch.manual_seed(0)
    box, n = 16, 24
    dec = FixedVolume(_blobs(box))
    true = random_rotations(n, generator=torch.Generator().manual_seed(1))
    ctf = torch.ones(n, box, box)
    with torch.no_grad():
        obs = render(dec, true[:, None], ctf)[:, 0]
    axis = torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)
    start = exp_map(axis * np.deg2rad(8.0)) @ true  # 8 degrees off
    cfg = RunConfig(pose_steps=5, volume_steps=1, lr_pose=0.01, lr_decoder_direct=1e-9)
    table = PoseTable(n, lr_rot=cfg.lr_pose)
    rows = torch.arange(n)
    table.set_base(rows, start)
    opt = torch.optim.Adam(dec.parameters(), lr=cfg.lr_decoder_direct)
    ctx = EngineContext(
        cfg, dec, None, table, box, 5.0, torch.device("cpu"), frequency_mask(box, 1.0), opt
    )
    stage = DirectStage()
    stage.setup(ctx)
    assert opt.param_groups[0]["lr"] == cfg.lr_decoder_direct
    batch = Batch(np.arange(n), torch.zeros(n, box, box), obs, ctf)
    before = geodesic_distance_deg(table.rotations(rows), true).median().item()
    for _ in range(30):
        stage.train_step(ctx, batch)
    after = geodesic_distance_deg(table.rotations(rows).detach(), true)
    assert before == pytest.approx(8.0, abs=0.01)
    assert after.median().item() < 1.0, after
    assert table.opt_rot.steps.tolist() == [150] * n


def test_direct_stage_touches_only_the_batch_rows():
    box, n = 16, 10
    dec = FixedVolume(_blobs(box))
    cfg = RunConfig()
    table = PoseTable(n)
    opt = torch.optim.Adam(dec.parameters(), lr=1e-9)
    ctx = EngineContext(
        cfg, dec, None, table, box, 5.0, torch.device("cpu"), frequency_mask(box, 1.0), opt
    )
    rows = np.array([2, 5])
    obs = torch.randn(2, box, box, dtype=torch.complex64)
    DirectStage().train_step(
        ctx, Batch(rows, torch.zeros(2, box, box), obs, torch.ones(2, box, box))
    )
    touched = table.opt_rot.steps > 0
    assert touched.nonzero().reshape(-1).tolist() == [2, 5]
    assert (table.omega[~touched] == 0).all()


# ----------------------------------------------------------------------------- config
def test_bad_config_value_names_the_field():
    with pytest.raises(ConfigError) as exc:
        validate_config({"lr_pose": -1})
    msg = str(exc.value)
    assert "lr_pose" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="bogus"):
        validate_config({"bogus": 1})
    with pytest.raises(ConfigError, match="auto_switch.head_change_max"):
        validate_config({"auto_switch": {"head_change_max": 2}})


def test_auto_switch_rule():
    rule = RunConfig(
        auto_switch={
            "head_change_max": 0.1,
            "head_plateau_window": 2,
            "head_plateau_drop": 0.02,
            "loss_change_max": 0.02,
            "patience": 2,
            "min_epochs": 2,
            "max_epochs": 9,
        }
    ).auto_switch
    assert rule.decide(1, [None, 0.0], 0.0, 0) == (False, 0)  # before min_epochs
    assert rule.decide(2, [None], 0.0, 0) == (False, 0)  # no head change known yet
    assert rule.decide(2, [None, 0.05], 0.01, 0) == (False, 1)  # met once, patience 2
    assert rule.decide(3, [None, 0.05, 0.05], 0.01, 1) == (True, 2)  # met twice in a row
    assert rule.decide(3, [None, 0.9, 0.5], 0.01, 1) == (False, 0)  # heads still changing
    assert rule.decide(4, [None, 0.9, 0.5, 0.05], 0.5, 1) == (False, 0)  # loss still changing
    assert rule.decide(9, [None, 0.9], 0.9, 0) == (True, 0)  # max_epochs reached


def test_auto_switch_head_change_plateau():
    """Head change that stops falling above head_change_max counts as settled (C2 particles)."""
    rule = RunConfig(
        auto_switch={"head_plateau_window": 3, "head_plateau_drop": 0.02, "max_epochs": 50}
    ).auto_switch
    falling = [None, 0.8, 0.6, 0.45, 0.35]
    assert not rule.heads_settled(falling)  # fell 0.25 over the last 3 epochs
    flat = falling + [0.31, 0.30, 0.33, 0.30]
    assert rule.heads_settled(flat)  # 0.35 -> 0.30 over 4 epochs, but 0.31 -> 0.30 over 3
    assert not rule.heads_settled(flat[:6])  # 0.45 -> 0.31 over the last 3 epochs
    assert not rule.heads_settled([None, 0.3, 0.3])  # window longer than the history
    assert rule.decide(9, flat, 0.001, 2) == (True, 3)  # with the loss settled: patience 3
    assert rule.decide(9, flat, 0.01, 2) == (False, 0)  # loss change above 0.002


def test_mask_radius_grows_linearly():
    cfg = RunConfig(mask_radius=1.0, mask_radius_start=0.5, mask_grow_epochs=4)
    assert [cfg.mask_radius_at(e) for e in (0, 2, 4, 9)] == [0.5, 0.75, 1.0, 1.0]


# ----------------------------------------------------------------------------- checkpoints
def test_atomic_checkpoint_roundtrip(tmp_path):
    path = tmp_path / "ck" / "last.pt"
    save_atomic({"a": torch.arange(3), "b": "x"}, path)
    save_atomic({"a": torch.arange(4), "b": "y"}, path)
    state = load(path)
    assert state["b"] == "y" and state["a"].tolist() == [0, 1, 2, 3]
    assert sorted(os.listdir(path.parent)) == ["last.pt"]  # no temp files left


def test_signal_guard_turns_sigterm_into_a_request():
    with SignalGuard() as guard:
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.requested == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is not guard._handler
