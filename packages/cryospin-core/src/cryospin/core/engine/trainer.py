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
from cryospin.core.engine.config import RunConfig, validate_component_config
from cryospin.core.engine.data import ParticleData
from cryospin.core.engine.epoch_end import EpochEvaluation, decide_switch, epoch_record
from cryospin.core.engine.forward import frequency_mask
from cryospin.core.engine.loop_state import LoopState, ParticleState
from cryospin.core.engine.metrics_log import MetricsLog
from cryospin.core.engine.nonfinite import check_loss
from cryospin.core.engine.pose_table import PoseTable
from cryospin.core.engine.results import EpochEvaluator, TrainResult
from cryospin.core.engine.schedule import amortized_crop, resolve_schedule
from cryospin.core.engine.stages import EngineContext, build_stages
from cryospin.core.engine.switch_pass import initial_poses, record_search, search_before
from cryospin.core.errors import InputError


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
        self.n_amortized = int(self.cfg.switch_epoch or 0)
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
        self.evaluation = EpochEvaluation(
            evaluate, self.comm, self.data, self._volume, bool(self.cfg.shifts)
        )

    # ------------------------------------------------------------------ construction
    def _build(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.crop = amortized_crop(cfg, self.data.box)
        dec_cls = self.registry.get("decoder", cfg.decoder)
        dec_conf = validate_component_config(dec_cls, cfg.decoder_config, "decoder_config")
        self.decoder = dec_cls(dec_conf, self.data.box, self.data.pixel_size_A).to(self.device)
        self.encoder = None
        self.enc_opt = None
        if cfg.stage_schedule != "direct":
            enc_cls = self.registry.get("encoder", cfg.encoder)
            enc_data = dict(cfg.encoder_config)
            if cfg.shifts and "estimate_shifts" in enc_cls.Config.model_fields:
                # paper v2 Sec. 5: with shifts every head also predicts a translation
                enc_data.setdefault("estimate_shifts", True)
            enc_conf = validate_component_config(enc_cls, enc_data, "encoder_config")
            # coarse-to-fine: the encoder sees the images Fourier-cropped to the amortized box
            enc_box = self.crop or self.data.box
            enc_apix = self.data.pixel_size_A * self.data.box / enc_box
            self.encoder = enc_cls(enc_conf, enc_box, enc_apix).to(self.device)
            self.enc_opt = torch.optim.Adam(self.encoder.parameters(), lr=cfg.lr_encoder)
        self.dec_opt = torch.optim.Adam(self.decoder.parameters(), lr=cfg.lr_decoder)
        n = len(self.data)
        self.table = PoseTable(
            n,
            cfg.lr_pose,
            cfg.lr_shift,
            (cfg.pose_betas[0], cfg.pose_betas[1]),
            optimizer=cfg.pose_optimizer,
        )
        self.ctx = EngineContext(
            cfg,
            self.decoder,
            self.encoder,
            self.table,
            self.data.box,
            self.data.pixel_size_A,
            self.device,
            frequency_mask(self.data.box, cfg.mask_radius, self.device),
            self.dec_opt,
            self.enc_opt,
            crop=self.crop,
        )
        self.ctx.set_mask(self.ctx.mask)
        self.stages = build_stages(cfg, self.registry)
        self.n_heads = int(self.encoder.n_candidates) if self.encoder is not None else 1
        self.encoder = self.comm.wrap_models(self.ctx)
        stage = "direct" if cfg.stage_schedule == "direct" else "amortized"
        if cfg.stage_schedule == "semi-amortized" and cfg.switch == "epoch":
            stage = "direct" if cfg.switch_epoch == 0 else stage
        self.loop = LoopState(stage=stage, global_batch=cfg.batch_size * self.comm.world)
        self.particles = ParticleState.fresh(n)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Return what rank 0 saves in ``last.pt`` (the per-particle rows go to the shard files).

        ``version``, ``config``, ``loop`` (:meth:`.LoopState.to_dict`), the models and their
        Adam states, ``torch_rng``, ``stages`` (each stage's ``state_dict()`` by role) and
        ``sharded`` (``world_size`` and the shard ``files`` of this save).
        """
        return {
            "version": ckpt.CHECKPOINT_VERSION,
            "config": self.cfg.model_dump(mode="json"),
            "loop": self.loop.to_dict(),
            "decoder": self.decoder.state_dict(),
            "dec_opt": self.dec_opt.state_dict(),
            "encoder": None if self.encoder is None else self.encoder.state_dict(),
            "enc_opt": None if self.enc_opt is None else self.enc_opt.state_dict(),
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
        if s.get("version") != ckpt.CHECKPOINT_VERSION:
            raise InputError(
                f"checkpoint {self.ckpt_path} has format {s.get('version')}, this cryospin "
                f"reads format {ckpt.CHECKPOINT_VERSION}: start the run anew (--overwrite)"
            )
        self.loop = LoopState.from_dict(s["loop"])
        self.decoder.load_state_dict(s["decoder"])
        self.dec_opt.load_state_dict(s["dec_opt"])
        if self.encoder is not None and self.enc_opt is not None and s["encoder"] is not None:
            self.encoder.load_state_dict(s["encoder"])
            self.enc_opt.load_state_dict(s["enc_opt"])
        template = {"table": self.table.state_dict(), **self.particles.rows()}
        template["prev_rot"] = self.particles.rot.clone()
        rows = sharding.restore_rows(s, self.ckpt_dir, self.data.owned_global, template)
        self.table.load_state_dict(rows.pop("table"))
        self.particles = ParticleState(**rows)
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
    def _switch_pass(self, progress: Callable[[int], None] | None = None) -> None:
        """Initialise the pose table: best encoder candidate per particle (or initial poses)."""
        t0 = time.perf_counter()
        rows = torch.as_tensor(self.data.indices)
        if self.encoder is not None:
            idx, rots, shifts, wins = self.stages["amortized"].best_candidates(
                self.ctx, self.data, self.cfg.batch_size, progress, search=self.cfg.switch_search
            )
            rows = torch.as_tensor(idx)
            self.particles.winners[idx] = wins
        else:
            rots, shifts = initial_poses(self.cfg, self.data)
        self.table.set_base(rows, rots)
        if shifts is not None:
            self.table.shift[rows] = shifts.to(self.table.shift.dtype)
        self.particles.rot[rows] = self.table.rotations(rows).detach()
        self.particles.shift[rows] = self.table.shift[rows]
        self.loop.table_ready = True
        self.stages["direct"].setup(self.ctx)
        share = self.ctx.extra.get("switch_search_replaced")
        if share is not None:  # the switch pass searched: it is this epoch's search pass
            record_search(self.loop, self.comm, len(self.data), self.loop.epoch, share)
        self.ctx.extra["switch_time_s"] = time.perf_counter() - t0

    def _search(self, epoch: int) -> None:
        """Run the grid search before a direct epoch when due (:func:`.search_before`)."""
        if search_before(epoch, self.cfg, self.loop, self.ctx, self.data, self.comm):
            rows = torch.as_tensor(self.data.indices)
            with torch.no_grad():
                self.particles.rot[rows] = self.table.rotations(rows).to(self.particles.rot.dtype)

    # ------------------------------------------------------------------ end of an epoch
    def _volume(self) -> torch.Tensor:
        """Return the current map ``(L, L, L)`` (real space, float32, CPU)."""
        with torch.no_grad():
            return self.decoder.to_map().detach().float().cpu()

    def _end_epoch(self, epoch: int) -> dict[str, Any]:
        """Write the epoch's record (evaluation included), then switch stage when due."""
        cfg, loop = self.cfg, self.loop
        rec, loss, head_change = epoch_record(
            epoch, cfg, loop, self.particles, self.comm, self.n_heads, self.ctx.extra
        )
        if loop.prev_loss:
            rec["loss_change"] = abs(loss - loop.prev_loss) / abs(loop.prev_loss)
        t0 = time.perf_counter()
        rec.update(self.evaluation(epoch, self.particles, (epoch + 1) % cfg.eval_every == 0))
        rec["eval_time_s"] = time.perf_counter() - t0  # evaluation vs a truth (not training)
        switch = decide_switch(cfg, loop, epoch, loss, head_change)
        loop.prev_loss = loss
        self.particles.end_epoch()
        loop.reset_epoch()
        if switch:
            rec["switch"] = True
            loop.switch_epoch = epoch + 1
            loop.stage = "direct"
        self.log.append(rec)
        return rec

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
        if self.loop.stage == "direct" and not self.loop.table_ready:
            bar.describe("switch pass", self.loop.epoch)
            self._switch_pass()

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
                bar.epoch_done(self._end_epoch(epoch))
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
        local = torch.as_tensor(self.data.indices)
        winners = rows.winners.copy()
        if loop.stage == "amortized" and self.encoder is not None:
            idx, rots, shifts, winners = self.stages["amortized"].best_candidates(
                self.ctx, self.data, self.cfg.batch_size
            )
            rows.rot[idx] = rots.to(rows.rot.dtype)
            if shifts is not None:
                rows.shift[idx] = shifts.to(rows.shift.dtype)
        elif loop.table_ready:
            with torch.no_grad():
                rows.rot[local] = self.table.rotations(local)
            rows.shift[local] = self.table.shift[local]
        with torch.no_grad():
            vol = self.decoder.to_map().detach().float().cpu()
        stats: dict[str, dict[str, float | None]] = {}
        for name, st in loop.stage_stats.items():
            ips = st["images"] / st["time_s"] if st["time_s"] else None
            stats[name] = {**st, "images_per_s": ips}
        return TrainResult(
            volume=vol,
            indices=self.data.owned_global.copy(),
            rotations=rows.rot.numpy().astype(np.float64),
            shifts_px=rows.shift.numpy().astype(np.float64) if self.cfg.shifts else None,
            winners=winners,
            stage_stats=stats,
            metrics=self.metrics(),
            n_heads=self.n_heads,
            switch_epoch=loop.switch_epoch,
            epochs=self.cfg.epochs,
            global_batch=loop.global_batch,
        )
