"""The two pose stages, registered as ``pose_stage`` plugins: ``amortized`` and ``direct``.

The protocol (setup, train step, state, the hand-over at the switch) is declared by
:class:`cryospin.core.interfaces.PoseStage` and :class:`~cryospin.core.interfaces.CandidateStage`;
:func:`build_stages` builds the stage of each role named by the run configuration.

``amortized`` (paper Sec. 4.1): the encoder proposes ``M`` candidates per image; each is rendered
(slice, CTF, shift) and the loss is the per-image minimum (winner-takes-all, Eq. 6). Encoder and
decoder take one Adam step per batch. With ``--shifts`` the encoder's shifts are used when it
predicts them; otherwise each particle's shift row of the pose table is optimised jointly (the same
shift for every candidate).

``direct`` (paper Sec. 4.2, Supp. A): each particle's pose is a row of the
:class:`~cryospin.core.engine.pose_table.PoseTable`. Per batch: ``pose_steps`` row-sparse Adam
steps on the batch's rows (volume fixed), then ``volume_steps`` Adam steps on the decoder (poses
fixed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from cryospin.core.engine.data import Batch, ParticleData
from cryospin.core.engine.forward import candidate_loss, pixels, render, winner_takes_all
from cryospin.core.engine.pose_table import PoseTable
from cryospin.core.errors import ConfigError
from cryospin.core.fourier import fourier_crop
from cryospin.core.interfaces import CandidateStage, ComponentConfig, PoseStage, StepResult


@dataclass
class EngineContext:
    """What stages share: configuration, models, optimisers, pose table, mask."""

    cfg: Any
    decoder: torch.nn.Module
    encoder: torch.nn.Module | None
    table: PoseTable
    box: int
    pixel_size_A: float
    device: torch.device
    mask: torch.Tensor
    dec_opt: torch.optim.Optimizer
    enc_opt: torch.optim.Optimizer | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: box the encoder sees (:func:`.schedule.amortized_crop`), ``None``: the full box
    crop: int | None = None
    #: smallest crop holding ``mask`` (:func:`mask_crop`), ``None``: the full box; set with it
    loss_crop: int | None = None
    #: the plain decoder when ``decoder`` is a DDP wrapper (:func:`.ddp.wrap_models`): per-particle
    #: pose steps use it (their gradients are not all-reduced); ``None``: use ``decoder``
    pose_decoder: torch.nn.Module | None = None

    def set_mask(self, mask: torch.Tensor) -> None:
        """Use the boolean ``(L, L)`` frequency ``mask`` and the crop that holds it."""
        self.mask = mask
        self.loss_crop = mask_crop(mask)

    @property
    def max_shift_px(self) -> float:
        """Largest allowed |shift| component in pixels."""
        if self.cfg.max_shift_A is not None:
            return float(self.cfg.max_shift_A) / self.pixel_size_A
        return self.box / 4

    def encoder_and_optimizer(self) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """Return the encoder and its optimiser, which the amortized stage needs.

        Raises:
            RuntimeError: the run was built without an encoder or its optimiser.
        """
        if self.encoder is None or self.enc_opt is None:
            raise RuntimeError("the amortized stage needs an encoder and its optimiser")
        return self.encoder, self.enc_opt


class _NoConfig(ComponentConfig):
    """Stages take their settings from the run configuration."""


def _clamp_rows(table: PoseTable, rows: torch.Tensor, limit: float) -> None:
    table.shift[rows] = table.shift[rows].clamp(-limit, limit)


def mask_crop(mask: torch.Tensor) -> int | None:
    """Return the smallest even ``c`` whose central ``c x c`` crop holds every pixel of ``mask``.

    ``mask`` is a boolean ``(L, L)`` frequency mask, DC at ``L // 2``; a crop of even side ``c``
    holds the frequencies ``-c/2 .. c/2 - 1``. ``None`` when that is the whole box (or the mask is
    empty). Losses on the crop equal those on the full box: only masked pixels count.
    """
    L = mask.shape[-1]
    k = mask.nonzero() - L // 2
    if len(k) == 0:
        return None
    c = int(max(-2 * int(k.min()), 2 * (int(k.max()) + 1)))
    return None if c >= L else c


def coarse_crop(ctx: EngineContext, x: torch.Tensor) -> torch.Tensor:
    """Return the central ``(..., c, c)`` crop of a centred-frequency tensor, ``c = ctx.loss_crop``.

    Coarse-to-fine (:mod:`.schedule`): the loss counts only the pixels of the frequency mask, so
    transforms, CTFs and the mask ``(..., L, L)`` (DC at ``L // 2``) are cropped to the smallest
    ``c x c`` (DC at ``c // 2``) holding the mask (:func:`mask_crop`), and slices are computed
    on that crop only. Without a crop ``x`` itself.
    """
    c = ctx.loss_crop
    if c is None:
        return x
    lo = ctx.box // 2 - c // 2
    return x[..., lo : lo + c, lo : lo + c]


def pose_losses(
    ctx: EngineContext, batch: Batch, rots: torch.Tensor, shifts: torch.Tensor | None
) -> torch.Tensor:
    """Losses ``(B, M)`` of rotations ``(B, M, 3, 3)`` (shifts ``(B, M|1, 2)`` px or ``None``).

    The forward model and loss of every stage (:func:`.forward.render`,
    :func:`.forward.candidate_loss`), on the pixels of the frequency mask only: slices are
    computed on the crop holding it (:func:`coarse_crop`), and on its pixels alone by a decoder
    that ``supports_points``.
    """
    mask = coarse_crop(ctx, ctx.mask)
    pred = render(ctx.decoder, rots, coarse_crop(ctx, batch.ctf), shifts, mask)
    obs = pixels(coarse_crop(ctx, batch.fimages), mask)
    return candidate_loss(pred, obs, None, ctx.cfg.loss)


def encoder_images(ctx: EngineContext, batch: Batch) -> torch.Tensor:
    """Real images ``(B, c, c)`` for the encoder: Fourier-cropped to ``ctx.crop`` if set."""
    return batch.images if ctx.crop is None else fourier_crop(batch.images, ctx.crop)


class AmortizedStage(CandidateStage):
    """Encoder + winner-takes-all over its candidates (auto-encoding).

    With ``ctx.crop`` set the encoder sees Fourier-cropped images (:func:`encoder_images`); the
    loss is computed on the crop holding the mask (:func:`coarse_crop`).
    """

    Config = _NoConfig
    name = "amortized"

    def setup(self, ctx: EngineContext) -> None:
        """Nothing to build (the trainer owns the encoder optimiser); checks that both exist."""
        ctx.encoder_and_optimizer()

    def candidates(
        self, ctx: EngineContext, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Candidate rotations ``(B, M, 3, 3)`` and shifts in pixels ``(B, M|1, 2)`` or ``None``."""
        encoder, _ = ctx.encoder_and_optimizer()
        out = encoder(encoder_images(ctx, batch))
        shifts = None
        if ctx.cfg.shifts:
            if out.shifts_A is not None:
                shifts = out.shifts_A / ctx.pixel_size_A
            else:
                rows = torch.as_tensor(batch.indices)
                shifts = ctx.table.shift[rows].to(ctx.device)[:, None]
        return out.rotations, shifts

    def losses(
        self, ctx: EngineContext, batch: Batch, rots: torch.Tensor, shifts: torch.Tensor | None
    ) -> torch.Tensor:
        """Per-candidate losses ``(B, M)`` (:func:`pose_losses`)."""
        return pose_losses(ctx, batch, rots, shifts)

    def train_step(self, ctx: EngineContext, batch: Batch) -> StepResult:
        """One Adam step of encoder and decoder (and table shifts) on the WTA loss."""
        encoder, enc_opt = ctx.encoder_and_optimizer()
        encoder.train()
        out = encoder(encoder_images(ctx, batch))
        rows = torch.as_tensor(batch.indices)
        table_shift = None
        shifts = None
        if ctx.cfg.shifts:
            if out.shifts_A is not None:
                shifts = out.shifts_A / ctx.pixel_size_A
            else:
                table_shift = ctx.table.shift[rows].clone().to(ctx.device).requires_grad_(True)
                shifts = table_shift[:, None]
        per = self.losses(ctx, batch, out.rotations, shifts)
        loss, win = winner_takes_all(per)
        enc_opt.zero_grad(set_to_none=True)
        ctx.dec_opt.zero_grad(set_to_none=True)
        loss.backward()
        enc_opt.step()
        ctx.dec_opt.step()
        ar = torch.arange(len(win))
        best_shift = None
        if table_shift is not None:
            grad = table_shift.grad
            if grad is None:
                raise RuntimeError("the WTA loss did not reach the pose-table shifts")
            ctx.table.opt_shift.step(rows, grad.detach().cpu() * len(rows))
            _clamp_rows(ctx.table, rows, ctx.max_shift_px)
            best_shift = ctx.table.shift[rows].clone()
        elif shifts is not None:
            best_shift = shifts[ar, win].detach().cpu()
        rot = out.rotations[ar, win].detach().cpu()
        return StepResult(float(loss.detach()), rot, win.cpu().numpy(), best_shift)

    @torch.no_grad()
    def best_candidates(
        self,
        ctx: EngineContext,
        data: ParticleData,
        batch_size: int,
        progress: Callable[[int], None] | None = None,
        search: int = 0,
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor | None, np.ndarray]:
        """One pass over ``data`` with the frozen encoder: each particle's best candidate.

        With ``search = G > 0`` every particle is also scored against ``G`` grid rotations
        (:mod:`.pose_search`) and the best of them replaces the encoder's pose where its loss is
        lower; the share replaced goes to ``ctx.extra["switch_search_replaced"]``.

        Returns ``(global indices, rotations (n, 3, 3), shifts_px (n, 2) or None, winners (n,))``.
        """
        encoder, _ = ctx.encoder_and_optimizer()
        encoder.eval()
        from cryospin.core.engine.pose_search import GridSearch

        grid = GridSearch(ctx, search, ctx.cfg.search_assign) if search > 0 else None
        idx_all, rots, shifts, wins = [], [], [], []
        for start in range(0, len(data), batch_size):
            gidx = data.indices[start : start + batch_size]
            batch = data.batch(gidx, ctx.device)
            r, s = self.candidates(ctx, batch)
            per = self.losses(ctx, batch, r, s)
            win = per.argmin(1)
            ar = torch.arange(len(win))
            shift = None if s is None else (s[ar, win] if s.shape[1] > 1 else s[:, 0])
            rot = r[ar, win]
            if grid is not None:
                rot, _ = grid.improve(batch, rot, shift)
            idx_all.append(gidx)
            rots.append(rot.cpu())
            wins.append(win.cpu().numpy())
            if shift is not None:
                shifts.append(shift.cpu())
            if progress is not None:
                progress(len(gidx))
        encoder.train()
        if grid is not None:
            ctx.extra["switch_search_replaced"] = grid.replaced / max(len(data), 1)
        return (
            np.concatenate(idx_all),
            torch.cat(rots),
            torch.cat(shifts) if shifts else None,
            np.concatenate(wins),
        )

    def state_dict(self) -> dict[str, Any]:
        """No own state."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """No own state."""


class DirectStage(PoseStage):
    """Per-particle pose table optimised by row-sparse Adam, alternating with the volume."""

    Config = _NoConfig
    name = "direct"

    def setup(self, ctx: EngineContext) -> None:
        """Lower the decoder learning rate to ``lr_decoder_direct`` (paper: 0.05 -> 0.02)."""
        for group in ctx.dec_opt.param_groups:
            group["lr"] = ctx.cfg.lr_decoder_direct

    def _pred(
        self,
        ctx: EngineContext,
        batch: Batch,
        rows: torch.Tensor,
        omega: torch.Tensor,
        shift: torch.Tensor | None,
    ) -> torch.Tensor:
        pose_step = omega.requires_grad or (shift is not None and shift.requires_grad)
        if pose_step and ctx.pose_decoder is not None:
            ctx = replace(ctx, decoder=ctx.pose_decoder)
        rot = ctx.table.rotations(rows, omega)[:, None]
        return pose_losses(ctx, batch, rot, None if shift is None else shift[:, None])[:, 0]

    def train_step(self, ctx: EngineContext, batch: Batch) -> StepResult:
        """``pose_steps`` pose updates of the batch's rows, then ``volume_steps`` volume updates."""
        rows = torch.as_tensor(batch.indices)
        table = ctx.table
        use_shift = bool(ctx.cfg.shifts)
        for _ in range(ctx.cfg.pose_steps if ctx.cfg.refine_poses else 0):
            table.touch(rows)  # pose_optimizer: dense: skipped steps, fold (pose_table)
            omega = table.omega[rows].clone().to(ctx.device).requires_grad_(True)
            shift = (
                table.shift[rows].clone().to(ctx.device).requires_grad_(True) if use_shift else None
            )
            per = self._pred(ctx, batch, rows, omega, shift)
            wrt = [omega] + ([shift] if shift is not None else [])
            grads = torch.autograd.grad(per.sum(), wrt)
            table.opt_rot.step(rows, grads[0].cpu())
            if shift is not None:
                table.opt_shift.step(rows, grads[1].cpu())
                _clamp_rows(table, rows, ctx.max_shift_px)
        loss = torch.zeros(())
        for _ in range(ctx.cfg.volume_steps):
            omega = table.omega[rows].to(ctx.device)
            shift = table.shift[rows].to(ctx.device) if use_shift else None
            loss = self._pred(ctx, batch, rows, omega, shift).mean()
            ctx.dec_opt.zero_grad(set_to_none=True)
            loss.backward()
            ctx.dec_opt.step()
        with torch.no_grad():
            rot = table.rotations(rows).cpu()
        return StepResult(
            float(loss.detach()), rot, None, table.shift[rows].clone() if use_shift else None
        )

    def state_dict(self) -> dict[str, Any]:
        """No own state (the table is checkpointed by the trainer)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """No own state."""


#: the roles of the stage schedule: the stage class each needs and the config field naming it
ROLES: dict[str, tuple[type[PoseStage], str]] = {
    "amortized": (CandidateStage, "amortized_stage"),
    "direct": (PoseStage, "direct_stage"),
}


def build_stages(cfg: Any, registry: Any) -> dict[str, Any]:
    """Build the stage of each role: ``{"amortized": CandidateStage, "direct": PoseStage}``.

    Role ``r``'s stage is the ``pose_stage`` registered under ``cfg.<r>_stage``, built with its
    ``Config`` validated from ``cfg.<r>_stage_config``.

    Raises:
        PluginError: no pose stage is registered under that name (the message lists them).
        ConfigError: the stage cannot play the role (the amortized role needs a
            :class:`~cryospin.core.interfaces.CandidateStage`), or its config is invalid.
    """
    from cryospin.core.engine.config import validate_component_config

    stages: dict[str, Any] = {}
    for role, (base, field_name) in ROLES.items():
        name = getattr(cfg, field_name)
        cls = registry.get("pose_stage", name)
        if not issubclass(cls, base):
            raise ConfigError(
                f"{field_name}: pose stage '{name}' cannot play the {role} role "
                f"(it is not a {base.__name__})"
            )
        conf = getattr(cfg, f"{field_name}_config")
        stages[role] = cls(validate_component_config(cls, conf, f"{field_name}_config"))
    return stages
