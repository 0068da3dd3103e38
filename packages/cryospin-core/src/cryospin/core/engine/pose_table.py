"""Per-particle pose table and a row-sparse Adam (direct stage, paper Supp. A).

Each particle ``i`` keeps a base rotation ``R0_i`` (its best encoder candidate at the switch), an
axis-angle perturbation ``w_i`` and an in-plane shift ``t_i`` (pixels). Its pose is
``R_i = exp(w_i) R0_i`` (``R <- R_delta(w) R``, the stable exponential map of
:func:`cryospin.core.so3.exp_map`).

:class:`RowSparseAdam` keeps per-row first and second moments and a per-row step count, and a step
reads and writes only the rows of the batch: the cost is O(batch), not O(N) (the paper's code
updates all N rows every step). On the touched rows it is exactly ``torch.optim.Adam`` (no weight
decay, no amsgrad), step count included.

:class:`LazyDenseAdam` is the paper code's optimiser instead (``pose_optimizer: dense``): Adam over
the whole ``(N, k)`` table, where every row not in the batch gets a zero gradient, so its moments
decay and it keeps moving along its momentum between visits. The skipped steps are applied in
closed form when a row is next touched, so the cost stays O(batch); with it, each pose step is
folded into the base rotation (``R0 <- exp(w) R0``, ``w <- 0``), as the paper's code does.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from cryospin.core.so3 import exp_map


def table_rotations(omega: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Apply the table's pose formula ``R = exp(w) R0`` (paper Sec. 4.2): ``(B, 3, 3)`` rotations.

    Args:
        omega: ``(B, 3)`` axis-angle perturbations ``w`` (radians).
        base: ``(B, 3, 3)`` rotations ``R0`` held since the switch (RELION ``A``).

    Used by :class:`PoseTable` and to read poses out of a saved table state
    (:mod:`cryospin.core.run.poses`).
    """
    return exp_map(omega) @ base


class RowSparseAdam:
    """Adam over rows of a 2D parameter ``(N, k)``, updating only the rows it is given."""

    def __init__(
        self,
        param: torch.Tensor,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.param = param
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.steps = torch.zeros(param.shape[0], dtype=torch.int64, device=param.device)

    def _advance(self, rows: torch.Tensor) -> torch.Tensor:
        """Count a step for ``rows``; return each row's step number ``(B,)`` (bias correction)."""
        t = self.steps[rows] + 1
        self.steps[rows] = t
        return t

    @torch.no_grad()
    def step(self, rows: torch.Tensor, grad: torch.Tensor) -> None:
        """Apply one Adam step to ``param[rows]`` with ``grad`` ``(len(rows), k)``; rows unique."""
        rows = torch.as_tensor(rows, dtype=torch.int64, device=self.param.device)
        b1, b2 = self.betas
        grad = grad.to(self.param.dtype)
        t = self._advance(rows)
        m = self.exp_avg[rows].mul_(b1).add_(grad, alpha=1 - b1)
        v = self.exp_avg_sq[rows].mul_(b2).addcmul_(grad, grad, value=1 - b2)
        self.exp_avg[rows] = m
        self.exp_avg_sq[rows] = v
        tf = t.to(self.param.dtype)[:, None]
        bc1 = 1 - b1**tf
        bc2 = 1 - b2**tf
        denom = v.sqrt() / bc2.sqrt() + self.eps
        self.param[rows] = self.param[rows] - (self.lr / bc1) * m / denom

    def state_dict(self) -> dict[str, Any]:
        """Moments, step counts and hyper-parameters (tensors are cloned)."""
        return {
            "exp_avg": self.exp_avg.clone(),
            "exp_avg_sq": self.exp_avg_sq.clone(),
            "steps": self.steps.clone(),
            "lr": self.lr,
            "betas": tuple(self.betas),
            "eps": self.eps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (the parameter itself is restored by its owner)."""
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.steps.copy_(state["steps"])
        self.lr, self.betas, self.eps = state["lr"], tuple(state["betas"]), state["eps"]


class LazyDenseAdam(RowSparseAdam):
    """``torch.optim.Adam`` over a whole ``(N, k)`` parameter at O(batch) cost per step.

    Dense Adam gives the rows outside a batch a zero gradient: at each global step ``t`` their
    moments decay (``m <- b1 m``, ``v <- b2 v``) and they still move by
    ``-lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``. Those skipped steps change nothing
    else, so they are applied together (:meth:`catch_up`) before a row is read for a new gradient
    (:meth:`step` does it for its rows, then updates them as :class:`RowSparseAdam` with the
    global step count; call it on any rows read in between). ``steps[i]`` holds
    the global step up to which row ``i`` is current; ``t`` the global step count.
    The sums are cut where the remaining moves fall under ``1e-12`` of the first one:
    ``(b1 / sqrt(b2))^j`` (``ValueError`` if ``b1 >= sqrt(b2)``, where they never fall).
    Source: the paper's code (PyTorch Adam over the pose table, betas 0.9/0.9), issue 12 item 7.
    """

    def __init__(
        self,
        param: torch.Tensor,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.9),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(param, lr, betas, eps)
        ratio = betas[0] / math.sqrt(betas[1]) if betas[1] > 0 else math.inf
        if ratio >= 1:
            raise ValueError(f"LazyDenseAdam needs b1 < sqrt(b2), got betas {betas}")
        self.horizon = max(1, math.ceil(math.log(1e-12) / math.log(ratio))) if ratio > 0 else 1
        self.t = 0

    @torch.no_grad()
    def catch_up(self, rows: torch.Tensor) -> None:
        """Apply to ``param[rows]`` the zero-gradient steps since each row was last current."""
        rows = torch.as_tensor(rows, dtype=torch.int64, device=self.param.device)
        last = self.steps[rows]
        k = self.t - last  # (B,) skipped steps
        if len(rows) == 0 or int(k.max()) == 0:
            return
        b1, b2 = self.betas
        dt = self.param.dtype
        j = torch.arange(1, min(int(k.max()), self.horizon) + 1, dtype=dt)  # (J,)
        live = (j[None] <= k[:, None].to(dt)).to(dt)  # (B, J)
        tj = last[:, None].to(dt) + j[None]  # (B, J) global step of each skipped update
        m = self.exp_avg[rows][:, None] * (b1**j)[None, :, None]  # (B, J, k)
        v = self.exp_avg_sq[rows][:, None] * (b2**j)[None, :, None]
        bc1, bc2 = (1 - b1**tj)[..., None], (1 - b2**tj)[..., None]
        move = (m / bc1) / ((v / bc2).sqrt() + self.eps) * live[..., None]
        self.param[rows] = self.param[rows] - self.lr * move.sum(1)
        kk = k.to(dt)[:, None]
        self.exp_avg[rows] = self.exp_avg[rows] * b1**kk
        self.exp_avg_sq[rows] = self.exp_avg_sq[rows] * b2**kk
        self.steps[rows] = self.t

    def _advance(self, rows: torch.Tensor) -> torch.Tensor:
        """One global step: ``rows`` caught up first (:meth:`catch_up`), all at step ``t``."""
        self.catch_up(rows)
        self.t += 1
        self.steps[rows] = self.t
        return self.steps[rows]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the global step is the newest row's."""
        super().load_state_dict(state)
        self.t = int(self.steps.max()) if len(self.steps) else 0


class PoseTable:
    """Per-particle poses ``R_i = exp(w_i) R0_i`` and shifts ``t_i`` (pixels), indexed globally."""

    def __init__(
        self,
        n: int,
        lr_rot: float = 0.05,
        lr_shift: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.999),
        dtype: torch.dtype = torch.float32,
        optimizer: str = "sparse",
    ) -> None:
        self.base = torch.eye(3, dtype=dtype).repeat(n, 1, 1)
        self.omega = torch.zeros(n, 3, dtype=dtype)
        self.shift = torch.zeros(n, 2, dtype=dtype)
        #: ``dense``: the paper code's Adam (:class:`LazyDenseAdam`), each step folded into ``R0``
        self.dense = optimizer == "dense"
        opt = LazyDenseAdam if self.dense else RowSparseAdam
        self.opt_rot = opt(self.omega, lr_rot, betas)
        self.opt_shift = opt(self.shift, lr_shift, betas)

    def __len__(self) -> int:
        return self.base.shape[0]

    def touch(self, rows: torch.Tensor) -> None:
        """Make ``rows`` current before they are read (``dense`` only; else nothing to do).

        Applies the optimiser steps they skipped (:meth:`LazyDenseAdam.catch_up`), then folds the
        perturbation into the base, ``R0 <- exp(w) R0``, ``w <- 0`` (the paper's code after each
        step); the poses ``exp(w) R0`` are unchanged by the fold.
        """
        if not self.dense:
            return
        rows = torch.as_tensor(rows, dtype=torch.int64)
        for chunk in rows.split(4096):
            for opt in (self.opt_rot, self.opt_shift):
                if isinstance(opt, LazyDenseAdam):
                    opt.catch_up(chunk)
            self.base[chunk] = table_rotations(self.omega[chunk], self.base[chunk])
            self.omega[chunk] = 0

    def set_base(self, rows: torch.Tensor, rotations: torch.Tensor) -> None:
        """Set ``R0`` of ``rows`` and zero their perturbations (moments are kept as they are)."""
        rows = torch.as_tensor(rows, dtype=torch.int64)
        self.touch(rows)
        self.base[rows] = rotations.detach().to(self.base.dtype).cpu()
        self.omega[rows] = 0

    def rotations(self, rows: torch.Tensor, omega: torch.Tensor | None = None) -> torch.Tensor:
        """Rotations ``(B, 3, 3)`` of ``rows`` (differentiable in ``omega`` when given)."""
        rows = torch.as_tensor(rows, dtype=torch.int64)
        if omega is None:
            self.touch(rows)
        w = self.omega[rows] if omega is None else omega
        return table_rotations(w, self.base[rows].to(w.device))

    def all_rotations(self) -> torch.Tensor:
        """``(N, 3, 3)`` current rotations."""
        self.touch(torch.arange(len(self)))
        return table_rotations(self.omega, self.base)

    def row_state(self, row: int) -> dict[str, torch.Tensor]:
        """Return copies of all ``row`` holds: pose, shift, Adam moments and step counts."""
        snap = {"base": self.base[row].clone(), "omega": self.omega[row].clone()}
        snap["shift"] = self.shift[row].clone()
        for name in ("opt_rot", "opt_shift"):
            opt = getattr(self, name)
            for k in ("exp_avg", "exp_avg_sq", "steps"):
                snap[f"{name}.{k}"] = getattr(opt, k)[row].clone()
        return snap

    def set_row_state(self, row: int, snap: dict[str, torch.Tensor]) -> None:
        """Put back a :meth:`row_state` of ``row`` (undoing any change since)."""
        self.base[row], self.omega[row] = snap["base"], snap["omega"]
        self.shift[row] = snap["shift"]
        for name in ("opt_rot", "opt_shift"):
            opt = getattr(self, name)
            for k in ("exp_avg", "exp_avg_sq", "steps"):
                getattr(opt, k)[row] = snap[f"{name}.{k}"]

    def state_dict(self) -> dict[str, Any]:
        """Table and optimiser state, for checkpoints."""
        return {
            "base": self.base.clone(),
            "omega": self.omega.clone(),
            "shift": self.shift.clone(),
            "opt_rot": self.opt_rot.state_dict(),
            "opt_shift": self.opt_shift.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.base.copy_(state["base"])
        self.omega.copy_(state["omega"])
        self.shift.copy_(state["shift"])
        self.opt_rot.load_state_dict(state["opt_rot"])
        self.opt_shift.load_state_dict(state["opt_shift"])
