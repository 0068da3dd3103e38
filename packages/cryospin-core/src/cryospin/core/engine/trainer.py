"""The training loop: stages, switch rule, per-epoch records, checkpoints, resume, progress bar.

One :class:`Trainer` reconstructs one set of particles (the whole stack, or one half-set). It always
trains a shard of them (:class:`.sharding.ShardData`): in one process the whole set, in a
``torchrun`` run of ``G`` processes rank ``r``'s block. It talks to the other processes only
through its :class:`.collective.Collective` (sums, barrier, gathers, DDP-wrapped models), which
does nothing in one process, so every process of any run executes this same loop.

Its state - models, optimisers, pose table, the pose stages' own states, the loop's position and
bookkeeping (:class:`.loop_state.LoopState`), the per-particle rows
(:class:`.loop_state.ParticleState`), the RNG state - goes into a checkpoint
(:func:`.sharding.save_checkpoint`) at the end of every epoch, on SIGINT/SIGTERM and at
``max_steps``; :meth:`Trainer.fit` with ``resume=True`` continues from it, mid-epoch included, in
either stage and with any number of processes. Batches come in an order fixed by ``(seed, epoch)``
and every update is deterministic on CPU, so a killed-then-resumed run ends with the same map as an
uninterrupted one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryospin.core.engine import checkpoint as ckpt
from cryospin.core.engine import sharding
from cryospin.core.engine.collective import Collective, make_collective
from cryospin.core.engine.config import RunConfig
from cryospin.core.engine.data import ParticleData
from cryospin.core.engine.epoch_end import EpochEnd, EpochEvaluation
from cryospin.core.engine.forward import frequency_mask
from cryospin.core.engine.loop_state import LoopState, ParticleState
from cryospin.core.engine.metrics_log import MetricsLog
from cryospin.core.engine.models import build_models
from cryospin.core.engine.nonfinite import check_loss
from cryospin.core.engine.passes import final_pass, record_search, search_before, switch_pass
from cryospin.core.engine.pose_table import PoseTable
from cryospin.core.engine.results import EpochEvaluator, TrainResult
from cryospin.core.engine.schedule import amortized_crop, resolve_schedule
from cryospin.core.engine.stages import EngineContext, build_stages


class Trainer:
    """Reconstruct the particles of ``data`` with the stages of ``cfg`` (module docstring).

    Args:
        cfg: the run configuration (``batch_size`` is per process).
        data: the particle set; this process trains its shard of it.
        ckpt_dir: folder of ``last.pt`` and the shard files.
        metrics_path: ``metrics.jsonl`` (rank 0 writes it).
        evaluate: the per-epoch evaluation (e.g. against a truth), called on rank 0 with the
            poses of the evaluated particles gathered from every process; ``None``: none.
        tag: fields added to every metrics record (e.g. ``{"half": 1}``).
        console: the rich console of the progress bar.
        collective: the other processes (default :func:`.collective.make_collective`).
        on_checkpoint: ``on_checkpoint(ckpt_dir, state)``, called on rank 0 after each
            checkpoint with what ``last.pt`` holds (the run's pose files).
    """

    def __init__(
        self,
        cfg: RunConfig,
        data: ParticleData,
        ckpt_dir: Path,
        metrics_path: Path,
        *,
        evaluate: EpochEvaluator | None = None,
        tag: dict[str, Any] | None = None,
        console: Any = None,
        collective: Collective | None = None,
        on_checkpoint: Callable[[Path, dict[str, Any]], None] | None = None,
    ) -> None:
        from cryospin.core.registry import get_registry

        self.comm = collective or make_collective()
        #: this process's particles; trainer and stages index them by local row
        self.data = sharding.ShardData(data, self.comm.rank, self.comm.world, cfg.cache_images)
        if not self.comm.is_main and cfg.progress:
            cfg = cfg.model_copy(update={"progress": False})
        #: the configuration with the work schedule resolved for the whole particle set
        self.cfg = resolve_schedule(cfg, self.data.n_set, data.box)
        self.n_epochs = int(self.cfg.epochs or 0)
        self.ckpt_dir = Path(ckpt_dir)
        self.ckpt_path = self.ckpt_dir / ckpt.CHECKPOINT_NAME
        self.tag = tag or {}
        self.log = MetricsLog(metrics_path, self.tag, writer=self.comm.is_main)
        self.console = console
        self.registry = get_registry()
        auto = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = self.comm.device(torch.device(auto if cfg.device == "auto" else cfg.device))
        self.on_checkpoint = on_checkpoint
        self._build()
        volume = self.models.volume  # not a method of the trainer: no reference cycle
        evaluation = EpochEvaluation(evaluate, self.comm, self.data, volume, self.cfg.shifts)
        self.epoch_end = EpochEnd(self.cfg, self.comm, self.n_heads, evaluation, self.log)

    # ------------------------------------------------------------------ construction
    def _build(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.crop = amortized_crop(cfg, self.data.box)
        box, apix = self.data.box, self.data.pixel_size_A
        self.models = build_models(cfg, self.registry, box, apix, self.crop, self.device)
        n = len(self.data)
        self.table = PoseTable(
            n,
            cfg.lr_pose,
            cfg.lr_shift,
            (cfg.pose_betas[0], cfg.pose_betas[1]),
            optimizer=cfg.pose_optimizer,
        )
        m = self.models
        self.ctx = EngineContext(
            cfg,
            m.decoder,
            m.encoder,
            self.table,
            box,
            apix,
            self.device,
            frequency_mask(box, cfg.mask_radius, self.device),
            m.dec_opt,
            m.enc_opt,
            crop=self.crop,
        )
        self.ctx.set_mask(self.ctx.mask)
        self.stages = build_stages(cfg, self.registry)
        self.n_heads = m.n_heads
        m.encoder = self.comm.wrap_models(self.ctx)  # CUDA: with SyncBatchNorm layers
        stage = "direct" if cfg.stage_schedule == "direct" else "amortized"
        if cfg.stage_schedule == "semi-amortized" and cfg.switch == "epoch":
            stage = "direct" if cfg.switch_epoch == 0 else stage
        self.loop = LoopState(stage=stage, global_batch=cfg.batch_size * self.comm.world)
        self.particles = ParticleState.fresh(n)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Return what rank 0 saves in ``last.pt`` (the per-particle rows go to the shard files).

        ``version``, ``config``, ``loop`` (:meth:`.LoopState.to_dict`), the models and their
        Adam states (:meth:`.Models.state_dict`), ``torch_rng``, ``stages`` (each stage's
        ``state_dict()`` by role) and ``sharded`` (``world_size`` and the shard ``files`` of
        this save).
        """
        return {
            "version": ckpt.CHECKPOINT_VERSION,
            "config": self.cfg.model_dump(mode="json"),
            "loop": self.loop.to_dict(),
            **self.models.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "stages": {name: stage.state_dict() for name, stage in self.stages.items()},
            "sharded": sharding.shard_listing(self.comm.world, self.loop.save_seq),
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        """Restore a checkpoint: ``last.pt``'s ``s``, and this shard's rows from the shard files.

        The current stage's ``setup`` runs after the optimisers are restored, the stages' own
        states are loaded last (a checkpoint without ``stages`` leaves them fresh).

        Raises:
            InputError: written by an older format, or a shard file is missing.
        """
        ckpt.check_format(s, self.ckpt_path)
        self.loop = LoopState.from_dict(s["loop"])
        self.models.load_state_dict(s)
        self.particles = sharding.restore_shard(
            s, self.ckpt_dir, self.data.owned_global, self.table, self.particles
        )
        torch.set_rng_state(s["torch_rng"])
        gb = self.loop.global_batch
        if gb != self.cfg.batch_size * self.comm.world and self.comm.is_main:
            print(
                f"resuming with {self.comm.world} process(es): keeping the checkpoint's global "
                f"batch of {gb} particles ({gb / self.comm.world:.1f} per process)",
                file=sys.stderr,
            )
        if self.loop.stage == "direct" and self.loop.table_ready:
            self.stages["direct"].setup(self.ctx)  # the restored optimiser has the lowered lr
        for name, state in (s.get("stages") or {}).items():
            if name in self.stages:
                self.stages[name].load_state_dict(state)

    def save(self) -> None:
        """Checkpoint now (collective): :func:`.sharding.save_checkpoint`."""
        self.loop.save_seq += 1
        sharding.save_checkpoint(
            self.ckpt_dir,
            self.comm,
            self.loop.save_seq,
            {"indices": self.data.owned_global, "table": self.table.state_dict()}
            | self.particles.rows(),
            self.state_dict,
            self.on_checkpoint,
        )

    def metrics(self) -> list[dict[str, Any]]:
        """Return the records of this trainer from ``metrics.jsonl``."""
        return self.log.records()

    # ------------------------------------------------------------------ stage switching
    def _search(self, epoch: int) -> None:
        """Run the grid search before a direct epoch when due (:func:`.search_before`)."""
        if search_before(epoch, self.cfg, self.loop, self.ctx, self.data, self.comm):
            rows = torch.as_tensor(self.data.indices)
            with torch.no_grad():
                self.particles.rot[rows] = self.table.rotations(rows).to(self.particles.rot.dtype)

    # ------------------------------------------------------------------ loop
    def _step(self, stage: Any, lidx: np.ndarray, n_global: int | None = None) -> tuple[float, int]:
        """One step on this process's share ``lidx`` (local rows) of a global batch of ``n_global``.

        Returns ``(summed loss, number of particles)`` of this process. A process that owns none
        of the batch still takes part in the gradient all-reduce, with weight 0 on one of its
        particles, then undoes every change to that particle's table row.
        """
        n_r = len(lidx)
        if n_r == 0:
            snap = self.table.row_state(0)
            self.comm.batch_share(0, n_global or 1)
            stage.train_step(self.ctx, self.data.batch(np.zeros(1, np.int64), self.device))
            self.table.set_row_state(0, snap)
            return 0.0, 0
        self.comm.batch_share(n_r, n_r if n_global is None else n_global)
        res = stage.train_step(self.ctx, self.data.batch(lidx, self.device))
        rows = self.particles
        rows.rot[lidx] = res.rotations.to(rows.rot.dtype)
        if res.winners is not None:
            rows.winners[lidx] = res.winners
        if res.shifts_px is not None:
            rows.shift[lidx] = res.shifts_px.to(rows.shift.dtype)
        return res.loss * n_r, n_r

    def _stop_if_requested(self, requested: float, guard: Any) -> None:
        if requested > 0:
            self.save()
            raise ckpt.StopRequested(guard.requested or "SIGTERM")

    def _run_epoch(self, epoch: int, guard: Any, bar: Any) -> None:
        """Train the steps of ``epoch`` not yet done."""
        cfg, loop = self.cfg, self.loop
        self.ctx.set_mask(frequency_mask(self.data.box, cfg.mask_radius_at(epoch), self.device))
        plan = self.data.plan(cfg.seed, epoch, loop.global_batch)
        stage = self.stages[loop.stage]
        bar.describe(loop.stage, epoch)
        for bi in range(loop.step_in_epoch, len(plan)):
            t0 = time.perf_counter()
            loss_sum, n_mine = self._step(stage, *plan[bi])
            red = self.comm.reduce([loss_sum, n_mine, 1.0 if guard.requested else 0.0])
            check_loss(float(red[0]), self.data.local, epoch, bi, loop.stage)  # before any write
            n_step = int(red[1])
            loop.count_step(float(red[0]), n_step, time.perf_counter() - t0)
            ips = loop.acc["n"] / max(loop.acc["time"], 1e-9)
            bar.advance(n_step, float(red[0]) / max(n_step, 1), ips)
            self._stop_if_requested(red[2], guard)
            if cfg.max_steps is not None and loop.global_step >= cfg.max_steps:
                self.save()
                raise ckpt.StopRequested("max_steps")

    def _switch_if_due(self, bar: Any) -> None:
        """Run the switch pass (:func:`.passes.switch_pass`) when the direct stage starts."""
        if self.loop.stage == "direct" and not self.loop.table_ready:
            bar.describe("switch pass", self.loop.epoch)
            switch_pass(self.cfg, self.loop, self.ctx, self.stages, self.data, self.particles)
            share = self.ctx.extra.get("switch_search_replaced")
            if share is not None:  # the switch pass searched: it is this epoch's search pass
                record_search(self.loop, self.comm, len(self.data), self.loop.epoch, share)

    def fit(self, resume: bool = False) -> TrainResult:
        """Train (or continue training) to ``cfg.epochs``; returns this process's result.

        Collective: every process of the run calls it.

        Raises:
            StopRequested: a signal (on any process) or ``max_steps`` stopped the run after a
                checkpoint.
        """
        cfg, loop = self.cfg, self.loop
        if resume and self.ckpt_path.exists():
            self.load_state_dict(ckpt.load(self.ckpt_path))
            loop = self.loop
            loop.done = loop.epoch >= self.n_epochs  # a larger --epochs extends a finished run
        self.log.trim(loop.epoch)
        self.comm.barrier()
        from cryospin.core.engine.progress import RunProgress

        with (
            ckpt.SignalGuard() as guard,
            RunProgress(cfg, self.data.n_set, self.tag, self.console) as bar,
        ):
            bar.start(loop.epoch, loop.step_in_epoch * loop.global_batch)
            while loop.epoch < self.n_epochs and not loop.done:
                epoch = loop.epoch
                self._switch_if_due(bar)
                self._search(epoch)
                self._run_epoch(epoch, guard, bar)
                bar.epoch_done(self.epoch_end(epoch, loop, self.particles, self.ctx.extra))
                loop.epoch += 1
                loop.step_in_epoch = 0
                self._switch_if_due(bar)
                loop.done = loop.epoch >= self.n_epochs
                self.save()
                self._stop_if_requested(self.comm.reduce([float(bool(guard.requested))])[0], guard)
        return self.result()

    def result(self) -> TrainResult:
        """Return the final map and the poses of this process's particles (global indices)."""
        rows, loop = self.particles, self.loop
        winners = final_pass(self.cfg, loop, self.ctx, self.stages, self.data, rows)
        return TrainResult(
            volume=self.models.volume(),
            indices=self.data.owned_global.copy(),
            rotations=rows.rot.numpy().astype(np.float64),
            shifts_px=rows.shift.numpy().astype(np.float64) if self.cfg.shifts else None,
            winners=winners,
            stage_stats=loop.stage_summary(),
            metrics=self.metrics(),
            n_heads=self.n_heads,
            switch_epoch=loop.switch_epoch,
            epochs=self.cfg.epochs,
            global_batch=loop.global_batch,
        )
