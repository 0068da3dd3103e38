"""Exhaustive search of a rotation grid: a global check of the poses at the switch and after.

The direct stage only refines each particle's pose locally, so a particle whose best encoder
candidate sits in a wrong basin (a flipped view, a pseudo-symmetry mate the map does not share)
keeps it to the end: the heavy tail of the error distribution (issue 12). At the switch the map
is already good at low resolution, so every particle is also scored against ``G`` rotations that
cover SO(3) (:func:`grid_rotations`), with the same loss as the stages (mean over the frequency
mask of ``|CTF * slice - image|^2``, the image unshifted by the particle's shift), and a grid
rotation replaces the encoder's pose when its loss is lower. The direct stage then refines it.

The loss of particle ``i`` at grid rotation ``j`` is expanded so that the search is one matrix
product over the masked pixels ``k`` (``y``: image, ``c``: CTF, ``s``: slice, all on the crop
that holds the mask; :class:`GridScorer`)::

    L_ij = (1/K) [ sum_k |y_ik|^2 - 2 sum_k c_ik Re(conj(y_ik) s_jk) + sum_k c_ik^2 |s_jk|^2 ]

over one pixel of each Friedel pair, counted twice (:func:`friedel_weights`): about
``1.5 N K G`` multiply-adds (N = 5,000, K = 800, G = 4,096: about 2.5e10, seconds on one CPU
core), never forming the ``N x G`` rendered images. The search is scored on the mask of the
first direct epoch at most (:func:`.passes.search_before`). Source: the projection-matching
search of RELION/cryoSPARC.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from cryospin.core.engine.data import Batch
from cryospin.core.engine.forward import render
from cryospin.core.engine.stages import EngineContext, coarse_crop
from cryospin.core.slicing import phase_ramp
from cryospin.core.so3 import geodesic_distance_deg, quaternion_to_rotation

#: particles scored per matrix product by :func:`search_table` (any size gives the same result)
SEARCH_CHUNK = 256

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


def friedel_weights(mask: torch.Tensor) -> torch.Tensor:
    """Weights ``(c, c)`` that count each Friedel pair of a centred mask once, twice over.

    For Hermitian transforms (real images, their slices and CTFs), pixel ``k`` and its mate
    ``-k`` add the same term to the loss, so a sum over ``mask`` equals the sum over one pixel of
    each pair inside it with weight 2 (1 for the DC pixel and for a pixel whose mate falls off
    the grid or outside the mask): the search does half the work. DC at ``c // 2``; the mate of
    index ``i`` is ``c - i`` (none for ``i = 0``).
    """
    c = mask.shape[-1]
    mate = torch.zeros_like(mask)
    mate[1:, 1:] = mask[1:, 1:].flip(0, 1)
    k = torch.arange(c, device=mask.device) - c // 2
    ky, kx = k[:, None], k[None, :]
    first = (ky > 0) | ((ky == 0) & (kx > 0))
    dc = (ky == 0) & (kx == 0)
    paired = mask & mate
    return torch.where(paired, torch.where(first, 2.0, torch.where(dc, 1.0, 0.0)), mask.float())


class GridScorer:
    """The loss of a batch of images against every slice of a fixed set, as one matrix product.

    The loss of image ``i`` at slice ``j`` (module docstring) over the pixels ``k`` of one half
    of the mask with weights ``w_k`` (:func:`friedel_weights`), divided by the mask's pixel
    count ``n`` (the stages' mean over the mask, :func:`.forward.candidate_loss`, ``gaussian``)::

        n L_ij = sum_k w_k |y_ik|^2 + [-2 w c y_re, -2 w c y_im, w c^2]_i . [s_re; s_im; |s|^2]_j

    The right-hand factor ``(3K, G)`` is built once (:meth:`__init__`); a batch costs one
    ``(B, 3K) x (3K, G)`` product.

    Args:
        slices: ``(G, c, c)`` complex centred Hermitian slices.
        mask: ``(c, c)`` boolean frequency mask (centrally symmetric).
    """

    def __init__(self, slices: torch.Tensor, mask: torch.Tensor) -> None:
        w = friedel_weights(mask)
        self.keep = w > 0
        self.w = w[self.keep].to(slices.real.dtype)  # (K,)
        self.n = float(mask.sum())
        self.design = self._right(slices).T.contiguous()  # (3K, G)

    def _right(self, slices: torch.Tensor) -> torch.Tensor:
        """``(G, 3K)`` slice factors ``[s_re, s_im, |s|^2]`` of slices ``(G, c, c)``."""
        s = slices[:, self.keep]
        return torch.cat([s.real, s.imag, s.real.square() + s.imag.square()], dim=1)

    def _rows(self, images: torch.Tensor, ctf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 3K)`` left factors and ``(B, 1)`` image terms of a batch."""
        y, c = images[:, self.keep], ctf[:, self.keep].to(self.w.dtype)
        wc = self.w * c
        left = torch.cat([-2 * wc * y.real, -2 * wc * y.imag, wc * c], dim=1)
        const = (self.w * (y.real.square() + y.imag.square())).sum(-1, keepdim=True)
        return left, const

    @torch.no_grad()
    def losses(self, images: torch.Tensor, ctf: torch.Tensor) -> torch.Tensor:
        """Losses ``(B, G)`` of images ``(B, c, c)`` (complex, centred) with CTFs ``(B, c, c)``."""
        left, const = self._rows(images, ctf)
        return (const + left @ self.design) / self.n

    @torch.no_grad()
    def loss_of(
        self, slices: torch.Tensor, images: torch.Tensor, ctf: torch.Tensor
    ) -> torch.Tensor:
        """Losses ``(B,)`` of each image against its own slice ``(B, c, c)``, same weights."""
        left, const = self._rows(images, ctf)
        return (const[:, 0] + (left * self._right(slices)).sum(-1)) / self.n


def posterior_draw(
    losses: torch.Tensor, current: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw each particle's pose from its posterior over ``G`` grid rotations and its current pose.

    Under the stages' noise model (white Gaussian noise of variance 1 per real-space pixel after
    :class:`.data.ParticleData` normalises the stack; unnormalised FFT of the ``L x L`` image, so
    ``E|n_k|^2 = L^2`` per Fourier pixel, Friedel mates not independent) the log-likelihood of a
    pose with mean masked loss ``l`` over ``n`` mask pixels is ``-n l / (2 L^2)`` plus a constant:
    ``scale = n / (2 L^2)``. A flat prior over the candidates makes this the posterior, so the draw
    is broad while the map cannot tell the poses apart and becomes the best candidate as it can
    (stochastic EM; the hard assignment of projection matching is its zero-temperature limit).

    Args:
        losses: ``(B, G)`` mean masked losses of each particle at each grid rotation.
        current: ``(B,)`` the same loss at each particle's current pose.
        scale: ``n / (2 L^2)`` (above), in nats per unit of loss.

    Returns:
        ``(take, j)``: ``take (B,)`` bool where grid rotation ``j (B,)`` was drawn rather than
        the current pose (where it was not, ``j`` is ``G - 1``, a valid index to ignore).
    """
    logits = -scale * torch.cat([losses, current[:, None]], dim=1).double()
    pick = torch.multinomial(torch.softmax(logits, dim=1), 1)[:, 0].to(losses.device)
    g = losses.shape[1]
    return pick < g, pick.clamp(max=g - 1)


class GridSearch:
    """The check of a batch's poses against ``g`` grid rotations (module docstring).

    The grid's slices are computed once, on the crop holding the current frequency mask, and
    scored by a :class:`GridScorer`; each :meth:`improve` call scores a batch against all of them
    and against its current poses with the same weights. ``assign``: ``"best"`` takes the best
    candidate (projection matching), ``"posterior"`` draws one (:func:`posterior_draw`).
    """

    def __init__(self, ctx: EngineContext, g: int, assign: str = "best") -> None:
        self.ctx = ctx
        self.assign = assign
        self.c = ctx.loss_crop or ctx.box
        self.grid = grid_rotations(g, torch.float32).to(ctx.device)
        self.ones = torch.ones(1, self.c, self.c, device=ctx.device)  # the slices without CTF
        slices = render(ctx.decoder, self.grid[None], self.ones)[0]  # (G, c, c)
        self.scorer = GridScorer(slices, coarse_crop(ctx, ctx.mask))
        self.basin_deg = basin_angle_deg(g)
        self.replaced = 0

    @torch.no_grad()
    def improve(
        self, batch: Batch, rot: torch.Tensor, shift_px: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(rotations (B, 3, 3), replaced (B,) bool)``: grid rotation or ``rot``.

        A particle takes the best grid rotation where its loss is lower than that of its
        current pose ``rot`` (with shifts ``shift_px`` ``(B, 2)`` pixels of the full box, or
        ``None``); with ``assign = "posterior"``, the grid rotation drawn from its posterior
        (:func:`posterior_draw`) where the draw is not the current pose. Either way only if it
        lies farther than :func:`basin_angle_deg` from ``rot`` (a change of basin: nearer moves
        are local refinement's job, and a coarse grid rotation must not undo it); it keeps
        ``rot`` otherwise.
        """
        ctx, c = self.ctx, self.c
        images = coarse_crop(ctx, batch.fimages)
        if shift_px is not None:  # |CTF s ramp(t) - y| = |CTF s - y conj(ramp(t))|
            images = images * phase_ramp(shift_px.to(images.real.dtype) * (c / ctx.box), c).conj()
        ctf = coarse_crop(ctx, batch.ctf)
        losses = self.scorer.losses(images, ctf)  # (B, G)
        current = render(ctx.decoder, rot[:, None].to(torch.float32), self.ones)[:, 0]  # (B, c, c)
        loss = self.scorer.loss_of(current, images, ctf)
        if self.assign == "posterior":
            scale = self.scorer.n / (2.0 * ctx.box**2)
            take, j = posterior_draw(losses, loss, scale)
        else:
            best, j = losses.min(1)
            take = best < loss
        cand = self.grid[j].to(rot.dtype)
        far = geodesic_distance_deg(cand.double(), rot.double()) > self.basin_deg
        better = take & far.to(take.device)
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
    search = GridSearch(ctx, g, ctx.cfg.search_assign)
    table = ctx.table
    chunk = max(batch_size, SEARCH_CHUNK)
    for start in range(0, len(data), chunk):
        gidx = data.indices[start : start + chunk]
        batch = data.batch(gidx, ctx.device)
        rows = torch.as_tensor(gidx)
        rot = table.rotations(rows).to(ctx.device, torch.float32)
        shift = table.shift[rows].to(ctx.device) if ctx.cfg.shifts else None
        new, better = search.improve(batch, rot, shift)
        if better.any():
            table.set_base(rows[better.cpu()], new[better])
    return search.replaced / max(len(data), 1)
