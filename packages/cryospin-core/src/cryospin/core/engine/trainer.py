"""The training loop: stages, switch rule, per-epoch metrics, checkpoints, resume, progress bar.

One :class:`Trainer` reconstructs one set of particles (the whole stack, or one half-set). Its whole
state - models, optimisers, pose table, the pose stages' own states, epoch and batch position,
per-epoch accumulators, RNG state - goes into ``<ckpt_dir>/last.pt`` at the end of every epoch,
on SIGINT/SIGTERM and at ``max_steps``; :meth:`Trainer.fit` with ``resume=True`` continues from
it, mid-epoch included, in either stage. Batches come in an order fixed by ``(seed, epoch)`` and
every update is deterministic on CPU, so a killed-then-resumed run ends with the same map as an
uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryospin.core.engine import checkpoint as ckpt
from cryospin.core.engine.config import RunConfig, validate_component_config
from cryospin.core.engine.data import ParticleData
from cryospin.core.engine.forward import frequency_mask
from cryospin.core.engine.metrics_log import MetricsLog
from cryospin.core.engine.nonfinite import check_loss
from cryospin.core.engine.ops import geodesic_distance_deg
from cryospin.core.engine.pose_table import PoseTable
from cryospin.core.engine.results import TrainResult, Truth
from cryospin.core.engine.schedule import amortized_crop, resolve_schedule
from cryospin.core.engine.stages import EngineContext, build_stages
from cryospin.core.errors import ConfigError


class Trainer:
    """Reconstruct the particles of ``data`` with the stages of ``cfg``."""

    def __init__(
        self,
        cfg: RunConfig,
        data: ParticleData,
        ckpt_dir: Path,
        metrics_path: Path,
        truth: Truth | None = None,
        tag: dict[str, Any] | None = None,
        console: Any = None,
    ) -> None:
        from cryospin.core.registry import get_registry

        self.data = data
        #: the configuration with the work schedule resolved for this trainer's particles
        self.cfg = resolve_schedule(cfg, self._n_images(), data.box)
        #: total and amortized epochs of the resolved schedule
        self.n_epochs = int(self.cfg.epochs or 0)
        self.n_amortized = int(self.cfg.switch_epoch or 0)
        self.ckpt_path = Path(ckpt_dir) / ckpt.CHECKPOINT_NAME
        self.log = MetricsLog(metrics_path, tag or {})
        self.truth = truth or Truth()
        self.tag = tag or {}
        self.console = console
        self.registry = get_registry()
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
        )
        self.n_total = len(data.stack)
        #: ``on_checkpoint(ckpt_dir, state)``, called after each checkpoint by the process that
        #: writes files: the run's pose files (:class:`.pose_output.CheckpointPoses`)
        self.on_checkpoint: Callable[[Path, dict[str, Any]], None] | None = None
        self._build()

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
        self.table = PoseTable(
            self.n_total,
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
        # loop state
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.stage_name = "direct" if cfg.stage_schedule == "direct" else "amortized"
        if (
            cfg.stage_schedule == "semi-amortized"
            and cfg.switch == "epoch"
            and cfg.switch_epoch == 0
        ):
            self.stage_name = "direct"
        self.table_ready = False
        self.switch_epoch: int | None = None
        #: the last grid search: the epoch it ran before and the share of particles it moved
        self.search_epoch: int | None = None
        self.search_moved: float | None = None
        self.patience = 0
        self.head_changes: list[float | None] = []  # per amortized epoch (switch: auto)
        self.prev_loss: float | None = None
        n = self.n_total
        self.rot = torch.eye(3).repeat(n, 1, 1)
        self.prev_rot: torch.Tensor | None = None
        self.winners = np.full(n, -1, dtype=np.int64)
        self.prev_winners = np.full(n, -1, dtype=np.int64)
        self.shift = torch.zeros(n, 2)
        self.acc = {"loss": 0.0, "n": 0, "time": 0.0}
        self.stage_stats: dict[str, dict[str, float]] = {}
        self.done = False

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Return the complete resumable state (:func:`.checkpoint.trainer_state`)."""
        return ckpt.trainer_state(self)

    def load_state_dict(self, s: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output and restart the current stage where it was.

        The stages' own states are loaded last, after the current stage's ``setup``.
        """
        ckpt.restore_trainer_state(self, s)
        if self.stage_name == "direct" and self.table_ready:
            self.stages["direct"].setup(self.ctx)
            # the optimiser state restored above already carries the lowered learning rate
        ckpt.restore_stage_states(self, s)

    def save(self) -> None:
        """Checkpoint now (atomically), then call :attr:`on_checkpoint`."""
        state = self.state_dict()
        ckpt.save_atomic(state, self.ckpt_path)
        if self.on_checkpoint is not None:
            self.on_checkpoint(self.ckpt_path.parent, state)

    def metrics(self) -> list[dict[str, Any]]:
        """Return the records of this trainer from ``metrics.jsonl``."""
        return self.log.records()

    # ------------------------------------------------------------------ stage switching
    def _switch_pass(self, progress: Callable[[int], None] | None = None) -> None:
        """Initialise the pose table: best encoder candidate per particle (or random poses)."""
        t0 = time.perf_counter()
        self._init_table(progress)
        share = self.ctx.extra.get("switch_search_replaced")
        if share is not None:  # the switch pass searched: it is this epoch's search pass
            self._record_search(self.epoch, share)
        self.ctx.extra["switch_time_s"] = time.perf_counter() - t0

    def _record_search(self, epoch: int, share: float) -> None:
        """Record the share of all particles (all processes) moved by the pass before ``epoch``."""
        n = len(self.data)
        moved, total = self._reduce([share * n, float(n)])
        self.search_epoch, self.search_moved = epoch, float(moved / max(total, 1.0))

    def _init_table(self, progress: Callable[[int], None] | None) -> None:
        rows = torch.as_tensor(self.data.indices)
        if self.encoder is not None:
            idx, rots, shifts, wins = self.stages["amortized"].best_candidates(
                self.ctx, self.data, self.cfg.batch_size, progress, search=self.cfg.switch_search
            )
            rows = torch.as_tensor(idx)
            self.table.set_base(rows, rots)
            if shifts is not None:
                self.table.shift[rows] = shifts.to(self.table.shift.dtype)
            self.winners[idx] = wins
        else:
            rots, shifts_px = self._initial_poses(rows)
            self.table.set_base(rows, rots)
            if shifts_px is not None:
                self.table.shift[rows] = shifts_px.to(self.table.shift.dtype)
        self.rot[rows] = self.table.rotations(rows).detach()
        self.shift[rows] = self.table.shift[rows]
        self.table_ready = True
        self.stages["direct"].setup(self.ctx)

    def _initial_poses(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Start poses of a run without an encoder: ``(rotations (n, 3, 3), shifts_px or None)``.

        ``init_poses: random``: Haar-random rotations (seeded), no shifts. ``init_poses: file``:
        the particle file's rotations (RELION A) and, with ``shifts``, its content shifts
        ``-origin / pixel size`` in working-box pixels (the known-pose ceiling of the
        benchmarks, with ``refine_poses: false``).

        Raises:
            ConfigError: ``init_poses: file`` and the file holds no (finite) poses.
        """
        if self.cfg.init_poses == "random":
            from cryospin.core.so3 import random_rotations

            gen = torch.Generator().manual_seed(self.cfg.seed + 1)
            return random_rotations(len(rows), generator=gen), None
        stack, sel = self.data.stack, rows.numpy()
        rot = None if stack.rotations is None else np.asarray(stack.rotations)[sel]
        if rot is None or not np.isfinite(rot).all():
            raise ConfigError(
                f"init_poses: file: {self.cfg.particles} holds no poses for every "
                "particle (rlnAngleRot/Tilt/Psi)"
            )
        shifts = None
        if self.cfg.shifts and stack.shifts_A is not None:
            shifts = torch.as_tensor(-np.asarray(stack.shifts_A)[sel] / self.data.pixel_size_A)
        return torch.as_tensor(rot), shifts

    def _search_before(self, epoch: int) -> None:
        """Direct stage, while the mask grows: the global grid search of every table pose.

        With ``switch_search > 0`` each direct epoch whose mask is below ``mask_radius`` starts
        with :func:`.pose_search.search_table` (projection matching coarse to fine), until a
        pass moves fewer than ``search_stop`` of the particles to another basin (a convergence
        test, collective over processes). The search scores on the mask of the stage's first
        direct epoch at most (the switch's 16 shells with coarse-to-fine): the grid's spacing
        (about 13° for 4,096 rotations) cannot tell finer detail apart, and the cost of a pass
        stays that of the first. Its share of moved poses goes into the epoch's record.
        """
        cfg = self.cfg
        if not (cfg.switch_search and cfg.refine_poses):  # fixed (known) poses stay as given
            return
        if self.stage_name != "direct" or not self.table_ready or self.step_in_epoch:
            return
        if cfg.mask_radius_at(epoch) >= cfg.mask_radius or self.search_epoch == epoch:
            return
        if self.search_moved is not None and self.search_moved < cfg.search_stop:
            return
        from cryospin.core.engine.pose_search import search_table

        first = self.switch_epoch or 0
        radius = min(cfg.mask_radius_at(epoch), cfg.mask_radius_at(first))
        self.ctx.set_mask(frequency_mask(self.data.box, radius, self.device))
        t0 = time.perf_counter()
        share = search_table(self.ctx, self.data, cfg.batch_size, cfg.switch_search)
        self._record_search(epoch, share)
        self.ctx.extra["search_replaced"] = share
        self.ctx.extra["search_time_s"] = time.perf_counter() - t0
        rows = torch.as_tensor(self.data.indices)
        with torch.no_grad():
            self.rot[rows] = self.table.rotations(rows).to(self.rot.dtype)

    def _decide_switch(self, epoch: int, loss: float, head_change: float | None) -> bool:
        cfg = self.cfg
        if cfg.stage_schedule != "semi-amortized" or self.stage_name != "amortized":
            return False
        done = epoch + 1
        if cfg.switch == "epoch":
            return done >= self.n_amortized
        loss_change = (
            None
            if self.prev_loss in (None, 0)
            else abs(loss - self.prev_loss) / abs(self.prev_loss)
        )
        self.head_changes.append(head_change)
        switch, self.patience = cfg.auto_switch.decide(
            done, self.head_changes, loss_change, self.patience
        )
        return switch

    # ------------------------------------------------------------------ loop
    def _end_epoch(self, epoch: int, n_batches: int) -> dict[str, Any]:
        cfg = self.cfg
        idx = self.data.indices
        loss = self.acc["loss"] / max(self.acc["n"], 1)
        rec: dict[str, Any] = {
            "epoch": epoch,
            "stage": self.stage_name,
            "loss": loss,
            "wall_time_s": self.acc["time"],
            "images_per_s": self.acc["n"] / self.acc["time"] if self.acc["time"] > 0 else None,
            "mask_radius": cfg.mask_radius_at(epoch),
            "steps": self.global_step,
        }
        for key in ("switch_search_replaced", "search_replaced", "search_time_s", "switch_time_s"):
            if key in self.ctx.extra:
                rec[key] = self.ctx.extra.pop(key)
        if self.prev_rot is not None:
            d = geodesic_distance_deg(self.prev_rot[idx].double(), self.rot[idx].double())
            rec["pose_change_deg"] = float(d.mean())
        head_change = None
        if self.stage_name == "amortized":
            w = self.winners[idx]
            counts = np.bincount(w[w >= 0], minlength=self.n_heads)
            rec["head_usage"] = (counts / max(counts.sum(), 1)).round(4).tolist()
            pw = self.prev_winners[idx]
            seen = (pw >= 0) & (w >= 0)
            if seen.any():
                head_change = float((pw[seen] != w[seen]).mean())
                rec["head_change"] = head_change
        return self._close_epoch(rec, epoch, loss, head_change)

    def _truth_metrics(self, with_map: bool) -> dict[str, Any]:
        """Per-epoch metrics vs the truth (pose error, FSC): :func:`.report.epoch_metrics`."""
        from cryospin.core.engine import report  # the evaluation stack, imported when needed

        return report.epoch_metrics(self, self.data.indices, with_map=with_map)

    def _close_epoch(
        self, rec: dict[str, Any], epoch: int, loss: float, head_change: float | None
    ) -> dict[str, Any]:
        """Finish an epoch's record: loss change, truth metrics, the stage switch; write it."""
        if self.prev_loss:
            rec["loss_change"] = abs(loss - self.prev_loss) / abs(self.prev_loss)
        t0 = time.perf_counter()
        rec.update(self._truth_metrics(with_map=(epoch + 1) % self.cfg.eval_every == 0))
        rec["eval_time_s"] = time.perf_counter() - t0  # evaluation vs a truth (not training)
        switch = self._decide_switch(epoch, loss, head_change)
        self.prev_loss = loss
        self.prev_rot = self.rot.clone()
        self.prev_winners = self.winners.copy()
        self.acc = {"loss": 0.0, "n": 0, "time": 0.0}
        if switch:
            rec["switch"] = True
            self.switch_epoch = epoch + 1
            self.stage_name = "direct"
        self.log.append(rec)
        return rec

    # -- hooks of the training loop (overridden by the distributed trainer) --------------
    def _plan(self, epoch: int) -> list[tuple[Any, ...]]:
        """Return the batches of ``epoch`` in order; each item holds the arguments of ``_step``."""
        return [(b,) for b in self.data.batches(self.cfg.seed, epoch, self.cfg.batch_size)]

    def _images_per_step(self) -> int:
        """Particles in one step (the global batch)."""
        return self.cfg.batch_size

    def _n_images(self) -> int:
        """Particles in one epoch (all processes)."""
        return len(self.data)

    def _reduce(self, values: list[float]) -> np.ndarray:
        """Sum ``values`` over processes; one process: the values themselves (float64)."""
        return np.asarray(values, dtype=np.float64)

    def _barrier(self) -> None:
        """Wait for every process; one process: nothing to wait for."""

    def _store_result(self, idx: Any, res: Any) -> None:
        """Keep a step's poses, winning heads and shifts for the particles ``idx``."""
        self.rot[idx] = res.rotations.to(self.rot.dtype)
        if res.winners is not None:
            self.winners[idx] = res.winners
        if res.shifts_px is not None:
            self.shift[idx] = res.shifts_px.to(self.shift.dtype)

    def _step(self, stage: Any, gidx: np.ndarray, n_global: int | None = None) -> tuple[float, int]:
        """One training step on the particles ``gidx``: ``(summed loss, number of particles)``.

        ``n_global`` is the size of the global batch ``gidx`` is a share of (``None``: ``gidx``
        is the whole batch); one process always trains whole batches, so it is unused here.
        """
        res = stage.train_step(self.ctx, self.data.batch(gidx, self.device))
        self._store_result(gidx, res)
        return res.loss * len(gidx), len(gidx)

    def _count_step(self, loss_sum: float, n_step: int, dt: float, bi: int) -> None:
        self.acc["loss"] += loss_sum
        self.acc["n"] += n_step
        self.acc["time"] += dt
        st = self.stage_stats.setdefault(self.stage_name, {"images": 0, "time_s": 0.0})
        st["images"] += n_step
        st["time_s"] += dt
        self.global_step += 1
        self.step_in_epoch = bi + 1

    def _stop_if_requested(self, requested: float, guard: Any) -> None:
        if requested > 0:
            self.save()
            raise ckpt.StopRequested(guard.requested or "SIGTERM")

    def _run_epoch(self, epoch: int, guard: Any, bar: Any) -> int:
        """Train the steps of ``epoch`` not yet done; returns the number of steps in the epoch."""
        cfg = self.cfg
        self.ctx.set_mask(frequency_mask(self.data.box, cfg.mask_radius_at(epoch), self.device))
        plan = self._plan(epoch)
        stage = self.stages[self.stage_name]
        bar.describe(self.stage_name, epoch)
        for bi in range(self.step_in_epoch, len(plan)):
            t0 = time.perf_counter()
            loss_sum, n_mine = self._step(stage, *plan[bi])
            red = self._reduce([loss_sum, n_mine, 1.0 if guard.requested else 0.0])
            check_loss(float(red[0]), self.data, epoch, bi, self.stage_name)  # before any write
            n_step = int(red[1])
            self._count_step(float(red[0]), n_step, time.perf_counter() - t0, bi)
            ips = self.acc["n"] / max(self.acc["time"], 1e-9)
            bar.advance(n_step, float(red[0]) / max(n_step, 1), ips)
            self._stop_if_requested(red[2], guard)
            if cfg.max_steps is not None and self.global_step >= cfg.max_steps:
                self.save()
                raise ckpt.StopRequested("max_steps")
        return len(plan)

    def fit(self, resume: bool = False) -> TrainResult:
        """Train (or continue training) to ``cfg.epochs``; returns the final map and poses.

        Collective when distributed: every process runs the same loop (see
        :mod:`cryospin.core.engine.distributed`).

        Raises:
            StopRequested: a signal (on any process) or ``max_steps`` stopped the run after a
                checkpoint.
        """
        cfg = self.cfg
        if resume and self.ckpt_path.exists():
            self.load_state_dict(ckpt.load(self.ckpt_path))
            self.done = self.epoch >= self.n_epochs  # a larger --epochs extends a finished run
        self.log.trim(self.epoch)
        self._barrier()
        from cryospin.core.engine.progress import RunProgress

        with (
            ckpt.SignalGuard() as guard,
            RunProgress(cfg, self._n_images(), self.tag, self.console) as bar,
        ):
            bar.start(self.epoch, self.step_in_epoch * self._images_per_step())
            while self.epoch < self.n_epochs and not self.done:
                epoch = self.epoch
                if self.stage_name == "direct" and not self.table_ready:
                    bar.describe("switch pass", epoch)
                    self._switch_pass()
                self._search_before(epoch)
                n_steps = self._run_epoch(epoch, guard, bar)
                rec = self._end_epoch(epoch, n_steps)
                bar.epoch_done(rec)
                self.epoch += 1
                self.step_in_epoch = 0
                if self.stage_name == "direct" and not self.table_ready:
                    bar.describe("switch pass", self.epoch)
                    self._switch_pass()
                self.done = self.epoch >= self.n_epochs
                self.save()
                self._stop_if_requested(self._reduce([1.0 if guard.requested else 0.0])[0], guard)
        return self.result()

    def result(self) -> TrainResult:
        """Return the final map and poses of this trainer's particles."""
        idx = self.data.indices
        winners = self.winners[idx].copy()
        if self.stage_name == "amortized" and self.encoder is not None:
            gidx, rots, shifts, wins = self.stages["amortized"].best_candidates(
                self.ctx, self.data, self.cfg.batch_size
            )
            self.rot[gidx] = rots.to(self.rot.dtype)
            winners = wins
            if shifts is not None:
                self.shift[gidx] = shifts.to(self.shift.dtype)
        elif self.table_ready:
            rows = torch.as_tensor(idx)
            with torch.no_grad():
                self.rot[rows] = self.table.rotations(rows)
            self.shift[rows] = self.table.shift[rows]
        with torch.no_grad():
            vol = self.decoder.to_map().detach().float().cpu()
        stats: dict[str, dict[str, float | None]] = {}
        for name, st in self.stage_stats.items():
            stats[name] = {
                **st,
                "images_per_s": st["images"] / st["time_s"] if st["time_s"] else None,
            }
        return TrainResult(
            volume=vol,
            indices=idx.copy(),
            rotations=self.rot[idx].numpy().astype(np.float64),
            shifts_px=self.shift[idx].numpy().astype(np.float64) if self.cfg.shifts else None,
            winners=winners,
            stage_stats=stats,
            metrics=self.metrics(),
            n_heads=self.n_heads,
            switch_epoch=self.switch_epoch,
            epochs=self.cfg.epochs,
        )
