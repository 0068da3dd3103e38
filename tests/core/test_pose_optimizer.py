"""``pose_optimizer: dense``: the paper code's dense Adam over the pose table, at O(batch) cost."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cryospin.core.engine.pose_table import LazyDenseAdam, PoseTable
from cryospin.core.so3 import exp_map


def _batches(n: int, b: int, steps: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=gen)[:b] for _ in range(steps)]


@pytest.mark.parametrize("betas", [(0.9, 0.9), (0.9, 0.999)])
def test_lazy_dense_adam_equals_torch_adam_with_zero_gradients_outside_the_batch(betas) -> None:
    """Rows outside a batch decay and drift exactly as under torch.optim.Adam (float64)."""
    n, b = 12, 3
    torch.manual_seed(0)
    start = torch.randn(n, 3, dtype=torch.float64)
    ref = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=0.05, betas=betas)
    lazy = LazyDenseAdam(start.clone(), 0.05, betas)
    for rows in _batches(n, b, 60, 1):
        g = torch.randn(b, 3, dtype=torch.float64)
        full = torch.zeros(n, 3, dtype=torch.float64)
        full[rows] = g
        ref.grad = full
        opt.step()
        lazy.step(rows, g)
    lazy.catch_up(torch.arange(n))
    np.testing.assert_allclose(lazy.param.numpy(), ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    st = opt.state[ref]
    np.testing.assert_allclose(lazy.exp_avg.numpy(), st["exp_avg"].numpy(), rtol=1e-12)
    np.testing.assert_allclose(lazy.exp_avg_sq.numpy(), st["exp_avg_sq"].numpy(), rtol=1e-12)


def test_lazy_dense_adam_refuses_betas_whose_drift_never_ends() -> None:
    with pytest.raises(ValueError, match="b1 < sqrt"):
        LazyDenseAdam(torch.zeros(2, 3), 0.1, (0.99, 0.9))


def test_dense_table_matches_the_papers_loop_adam_then_fold_every_row() -> None:
    """Reference: dense torch Adam over w (N, 3), then R0 <- exp(w) R0 and w <- 0 for all rows."""
    n, b = 10, 4
    target = torch.as_tensor(Rotation.random(n, random_state=2).as_matrix())
    base0 = torch.as_tensor(Rotation.random(n, random_state=3).as_matrix())
    w = torch.zeros(n, 3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.05, betas=(0.9, 0.9))
    base = base0.clone()
    table = PoseTable(n, 0.05, 0.1, (0.9, 0.9), torch.float64, optimizer="dense")
    table.set_base(torch.arange(n), base0)
    for rows in _batches(n, b, 40, 4):
        loss = ((exp_map(w[rows]) @ base[rows] - target[rows]) ** 2).sum()
        (g,) = torch.autograd.grad(loss, w)
        w.grad = g
        opt.step()
        with torch.no_grad():
            base = exp_map(w) @ base
            w.zero_()
        table.touch(rows)
        omega = table.omega[rows].clone().requires_grad_(True)
        mine = ((table.rotations(rows, omega) - target[rows]) ** 2).sum()
        (gm,) = torch.autograd.grad(mine, omega)
        table.opt_rot.step(rows, gm)
    np.testing.assert_allclose(table.all_rotations().numpy(), base.numpy(), atol=1e-9)
    # the fold leaves the poses as they are
    before = table.all_rotations().clone()
    table.touch(torch.arange(n))
    np.testing.assert_allclose(table.all_rotations().numpy(), before.numpy(), atol=1e-14)
