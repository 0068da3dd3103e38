"""Exhaustive search of a rotation grid at the switch: a global check of the encoder's poses.

The direct stage only refines each particle's pose locally, so a particle whose best encoder
candidate sits in a wrong basin (a flipped view, a pseudo-symmetry mate the map does not share)
keeps it to the end: the heavy tail of the error distribution (issue 12). At the switch the map
is already good at low resolution, so every particle is also scored against ``G`` rotations that
cover SO(3) (:func:`grid_rotations`), with the same loss as the stages (mean over the frequency
mask of ``|CTF * slice - image|^2``, the image unshifted by the particle's shift), and a grid
rotation replaces the encoder's pose when its loss is lower. The direct stage then refines it.

The loss of particle ``i`` at grid rotation ``j`` is expanded so that the search is three matrix
products over the masked pixels ``k`` (``y``: image, ``c``: CTF, ``s``: slice, all on the crop
that holds the mask)::

    L_ij = (1/K) [ sum_k |y_ik|^2 - 2 sum_k c_ik Re(conj(y_ik) s_jk) + sum_k c_ik^2 |s_jk|^2 ]

which costs ``3 N K G`` multiply-adds (N = 5,000, K = 900, G = 4,096: about 6e10, seconds on one
CPU core) and never forms the ``N x G`` rendered images. Source: the projection-matching search
of RELION/cryoSPARC, restricted here to one pass at the switch.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from cryospin.core.engine.data import Batch
from cryospin.core.engine.forward import render
from cryospin.core.engine.stages import EngineContext, coarse_crop, pose_losses
from cryospin.core.slicing import phase_ramp
from cryospin.core.so3 import geodesic_distance_deg, quaternion_to_rotation

#: Alexa's constants for super-Fibonacci spirals (CVPR 2022): sqrt(2) and the root of x^4 = x + 4
_PHI = math.sqrt(2.0)
_PSI = 1.533751168755204288118041


def basin_angle_deg(n: int) -> float:
    """Smallest move (degrees) that counts as a change of basin for an ``n``-rotation grid search.

    ``2 (6 pi / n)^(1/3)`` rad: twice the radius of a geodesic ball holding ``1/n`` of SO(3)
    (Haar volume ``(t - sin t) / pi ~ t^3 / 6 pi``), about 19° at ``n = 4096``. A grid rotation
    nearer than this to the current pose is within the grid's own spacing: local refinement,
    not the search, moves the pose there.

    Raises:
        ValueError: ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"basin_angle_deg: n must be >= 1, got {n}")
    return math.degrees(2.0 * (6.0 * math.pi / n) ** (1.0 / 3.0))


def grid_rotations(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` rotations ``(n, 3, 3)`` spread evenly over SO(3): a super-Fibonacci spiral.

    Sample ``i`` is the unit quaternion ``(r sin a, r cos a, R sin b, R cos b)`` with
    ``s = i + 1/2``, ``r = sqrt(s / n)``, ``R = sqrt(1 - s / n)``, ``a = 2 pi s / phi``,
    ``b = 2 pi s / psi`` (Alexa, "Super-Fibonacci Spirals: Fast, Low-Discrepancy Sampling of
    SO(3)", CVPR 2022), deterministic and without clustering; the largest gap to a random rotation
    falls as ``n^(-1/3)`` (about 13° at n = 4,096).

    Raises:
        ValueError: ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"grid_rotations: n must be >= 1, got {n}")
    s = torch.arange(n, dtype=torch.float64) + 0.5
    r, big_r = torch.sqrt(s / n), torch.sqrt(1.0 - s / n)
    a, b = 2 * math.pi * s / _PHI, 2 * math.pi * s / _PSI
    q = torch.stack(
        [r * torch.sin(a), r * torch.cos(a), big_r * torch.sin(b), big_r * torch.cos(b)], dim=-1
    )
    return quaternion_to_rotation(q).to(dtype)


@torch.no_grad()
def grid_losses(
    slices: torch.Tensor, images: torch.Tensor, ctf: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Loss ``(B, G)`` of every image against every grid slice (module docstring's expansion).

    Args:
        slices: ``(G, c, c)`` complex centred slices of the grid rotations.
        images: ``(B, c, c)`` complex centred image transforms (already unshifted).
        ctf: ``(B, c, c)`` real CTFs.
        mask: ``(c, c)`` boolean frequency mask; the loss is the mean over its pixels, as
            :func:`cryospin.core.engine.forward.candidate_loss` (``gaussian``).
    """
    s = slices[:, mask]  # (G, K)
    y, c = images[:, mask], ctf[:, mask].to(s.real.dtype)  # (B, K)
    cy = c * y
    cross = cy.real @ s.real.T + cy.imag @ s.imag.T  # sum_k c Re(conj(y) s)
    power = (c * c) @ (s.real.square() + s.imag.square()).T
    const = (y.real.square() + y.imag.square()).sum(-1, keepdim=True)
    return (const - 2 * cross + power) / s.shape[-1]


class GridSearch:
    """The switch pass's check of a batch's poses against ``g`` grid rotations (module docstring).

    The grid's slices are computed once, on the crop holding the current frequency mask; each
    :meth:`improve` call scores a batch against all of them (:func:`grid_losses`).
    """

    def __init__(self, ctx: EngineContext, g: int) -> None:
        self.ctx = ctx
        c = ctx.loss_crop or ctx.box
        self.grid = grid_rotations(g, torch.float32).to(ctx.device)
        ones = torch.ones(1, c, c, device=ctx.device)
        self.slices = render(ctx.decoder, self.grid[None], ones)[0]  # (G, c, c)
        self.basin_deg = basin_angle_deg(g)
        self.replaced = 0

    def improve(
        self, batch: Batch, rot: torch.Tensor, loss: torch.Tensor, shift_px: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(rotations (B, 3, 3), replaced (B,) bool)``: grid rotation or ``rot``.

        A particle takes the best grid rotation where its loss is lower than ``loss`` (that of
        its current pose ``rot``) and it lies farther than :func:`basin_angle_deg` from ``rot``
        (a change of basin: nearer moves are local refinement's job, and a coarse grid rotation
        must not undo it); it keeps ``rot`` otherwise.
        """
        ctx = self.ctx
        images = coarse_crop(ctx, batch.fimages)
        if shift_px is not None:  # |CTF s ramp(t) - y| = |CTF s - y conj(ramp(t))|
            c = images.shape[-1]
            images = images * phase_ramp(shift_px.to(images.real.dtype) * (c / ctx.box), c).conj()
        mask = coarse_crop(ctx, ctx.mask)
        best, j = grid_losses(self.slices, images, coarse_crop(ctx, batch.ctf), mask).min(1)
        cand = self.grid[j].to(rot.dtype)
        far = geodesic_distance_deg(cand.double(), rot.double()) > self.basin_deg
        better = (best < loss) & far.to(best.device)
        self.replaced += int(better.sum())
        out = rot.clone()
        out[better] = cand[better]
        return out, better


@torch.no_grad()
def search_table(ctx: EngineContext, data: Any, batch_size: int, g: int) -> float:
    """Check every table rotation against ``g`` grid rotations; return the share replaced.

    The direct stage's global step (module docstring): a particle's table rotation ``R0 exp(w)``
    is replaced by the best grid rotation (``w`` reset to 0) where the grid's loss is lower, with
    the current map and frequency mask. Interleaved with the direct stage's local refinement and
    volume updates while the mask grows, this is projection matching, coarse to fine.
    """
    search = GridSearch(ctx, g)
    table = ctx.table
    for start in range(0, len(data), batch_size):
        gidx = data.indices[start : start + batch_size]
        batch = data.batch(gidx, ctx.device)
        rows = torch.as_tensor(gidx)
        rot = table.rotations(rows).to(ctx.device, torch.float32)
        shift = table.shift[rows].to(ctx.device) if ctx.cfg.shifts else None
        loss = pose_losses(ctx, batch, rot[:, None], None if shift is None else shift[:, None])
        new, better = search.improve(batch, rot, loss[:, 0], shift)
        if better.any():
            table.set_base(rows[better.cpu()], new[better])
    return search.replaced / max(len(data), 1)
