"""The trainer of one rank of a multi-process run (design: :mod:`cryospin.core.engine.distributed`).

:class:`DistributedTrainer` overrides the hooks of the one-process
:class:`~cryospin.core.engine.trainer.Trainer` (batch plan, step, reductions, barrier, checkpoint,
metrics, switch pass): the training loop itself is the same code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from cryospin.core.engine import checkpoint as ckpt
from cryospin.core.engine import ddp, sharding
from cryospin.core.engine.ops import geodesic_distance_deg
from cryospin.core.engine.process_group import barrier, rank, world_size
from cryospin.core.engine.trainer import Trainer, TrainResult, Truth

#: particles (at most) whose poses are gathered on rank 0 for the per-epoch metrics vs truth
EVAL_SAMPLE = 4096

#: the global batch of the last distributed trainer of this run (a resumed run keeps the
#: checkpoint's, which differs from ``G * batch_size`` when G changed); read for ``summary.json``
RUN_INFO: dict[str, int] = {}


class DistributedTrainer(Trainer):
    """A :class:`Trainer` over this rank's particle block (module docstring); works with 1 rank."""

    def __init__(
        self,
        cfg: Any,
        data: Any,
        ckpt_dir: Path,
        metrics_path: Path,
        truth: Truth | None = None,
        tag: dict[str, Any] | None = None,
        console: Any = None,
    ) -> None:
        self.rank, self.world = rank(), world_size()
        self.ckpt_dir = Path(ckpt_dir)
        shard = sharding.ShardData(data, self.rank, self.world, cache=cfg.cache_images)
        self.n_set = shard.n_set
        self.global_batch = cfg.batch_size * self.world
        self.save_seq = 0
        if self.rank != 0 and cfg.progress:
            cfg = cfg.model_copy(update={"progress": False})
        self.shard = shard  # also ``self.data`` (the trainer and stages see local indices)
        super().__init__(
            cfg,
            shard,  # type: ignore[arg-type]
            ckpt_dir,
            metrics_path,
            truth,
            tag=tag,
            console=console,
        )
        self.log.writer = self.rank == 0  # rank 0 owns metrics.jsonl
        # sample of particles for per-epoch metrics vs truth (all of them for small sets)
        if self.n_set > EVAL_SAMPLE:
            pick = np.random.default_rng(12345).choice(self.n_set, EVAL_SAMPLE, replace=False)
            pos = np.sort(pick)
            self.eval_local = pos[(pos >= shard.start) & (pos < shard.stop)] - shard.start
        else:
            self.eval_local = shard.indices.copy()

    # -- construction ------------------------------------------------------------------
    def _build(self) -> None:
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.n_total = len(self.data)  # local rows: table and per-particle arrays are O(N / G)
        super()._build()
        self.hook_state = ddp.WeightState()
        self.comm_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        if self.world > 1:
            self.encoder = ddp.wrap_models(self.ctx, self.hook_state, self.device)

    # -- collectives -------------------------------------------------------------------
    def _reduce(self, values: list[float], op: Any = None) -> np.ndarray:
        t = torch.tensor(values, dtype=torch.float64)
        if self.world > 1:
            t = t.to(self.comm_device)
            dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
        return t.cpu().numpy()

    def _barrier(self) -> None:
        barrier()

    # -- checkpoints -------------------------------------------------------------------
    def _rows(self) -> dict[str, Any]:
        return {
            "rot": self.rot,
            "prev_rot": self.prev_rot,
            "winners": self.winners,
            "prev_winners": self.prev_winners,
            "shift": self.shift,
        }

    def state_dict(self) -> dict[str, Any]:
        """Rank 0's part: everything but the per-particle rows (those are in the shards)."""
        s = super().state_dict()
        s["table"] = s["indices"] = None  # the shards hold them (global indices)
        for k in sharding.ROW_KEYS:
            s[k] = None
        s["global_batch"] = self.global_batch
        s["save_seq"] = self.save_seq
        s["sharded"] = {
            "world_size": self.world,
            "files": [sharding.shard_name(r, self.world, self.save_seq) for r in range(self.world)],
        }
        return s

    def save(self) -> None:
        """Checkpoint collectively: shards, then ``last.pt`` (rank 0), then old shards removed.

        Rank 0 then calls :attr:`on_checkpoint` (which reads the shards one at a time to write the
        pose files) before the closing barrier, so no shard it reads is replaced meanwhile.
        """
        self.save_seq += 1
        name = sharding.shard_name(self.rank, self.world, self.save_seq)
        sharding.write_shard(
            self.ckpt_dir / name, self.shard.owned_global, self.table.state_dict(), self._rows()
        )
        self._barrier()
        if self.rank == 0:
            state = self.state_dict()
            ckpt.save_atomic(state, self.ckpt_path)
            keep = set(state["sharded"]["files"])
            for p in sharding.shard_files(self.ckpt_dir):
                if p.name not in keep:
                    p.unlink(missing_ok=True)
            if self.on_checkpoint is not None:
                self.on_checkpoint(self.ckpt_dir, state)
        self._barrier()

    def load_state_dict(self, s: dict[str, Any]) -> None:
        """Restore from a sharded or one-process ``last.pt``, keeping this rank's particles."""
        template = {
            "table": self.table.state_dict(),
            "rot": self.rot.clone(),
            "prev_rot": self.rot.clone(),
            "winners": self.winners.copy(),
            "prev_winners": self.prev_winners.copy(),
            "shift": self.shift.clone(),
        }
        rows = sharding.restore_rows(s, self.ckpt_dir, self.shard.owned_global, template)
        if s.get("prev_rot") is None and not s.get("sharded"):
            rows["prev_rot"] = None
        super().load_state_dict({**s, **rows})
        self.save_seq = int(s.get("save_seq", 0))
        self.global_batch = int(s.get("global_batch", s["config"]["batch_size"]))
        if self.global_batch != self.cfg.batch_size * self.world and self.rank == 0:
            print(
                f"resuming with {self.world} process(es): keeping the checkpoint's global batch "
                f"of {self.global_batch} particles ({self.global_batch / self.world:.1f} per rank)",
                file=sys.stderr,
            )

    # -- metrics -----------------------------------------------------------------------
    def _truth_metrics(self, with_map: bool) -> dict[str, Any]:
        """Per-epoch metrics vs truth on rank 0, on the gathered sample of particles."""
        truth = self.truth
        if truth.rotations is None and truth.volume is None:
            return {}
        from cryospin.core.engine import report

        loc = self.eval_local
        part = (self.shard.owned_global[loc], self.rot[loc].numpy(), self.shift[loc].numpy())
        parts: list[Any] = [part]
        if self.world > 1 and truth.rotations is not None:
            parts = [None] * self.world
            dist.all_gather_object(parts, part)
        if self.rank != 0:
            return {}
        gidx = np.concatenate([p[0] for p in parts])

        def sample(x: np.ndarray | None) -> np.ndarray | None:
            return None if x is None else x[gidx]

        view = SimpleNamespace(
            truth=Truth(truth.volume, sample(truth.rotations), sample(truth.shifts_A)),
            rot=torch.as_tensor(np.concatenate([p[1] for p in parts])),
            shift=torch.as_tensor(np.concatenate([p[2] for p in parts])),
            cfg=self.cfg,
            decoder=self.decoder,
            data=self.data,
        )
        return report.epoch_metrics(view, np.arange(len(gidx)), with_map=with_map)

    def _end_epoch(self, epoch: int, n_batches: int) -> dict[str, Any]:
        cfg = self.cfg
        idx = self.data.indices
        loss = self.acc["loss"] / max(self.acc["n"], 1)  # already global (reduced every step)
        rec: dict[str, Any] = {
            "epoch": epoch,
            "stage": self.stage_name,
            "loss": loss,
            "wall_time_s": self.acc["time"],
            "images_per_s": self.acc["n"] / self.acc["time"] if self.acc["time"] > 0 else None,
            "mask_radius": cfg.mask_radius_at(epoch),
            "steps": self.global_step,
            "world_size": self.world,
            "global_batch_size": self.global_batch,
        }
        vals = [0.0, 0.0, 0.0, 0.0] + [0.0] * self.n_heads
        if self.prev_rot is not None:
            d = geodesic_distance_deg(self.prev_rot[idx].double(), self.rot[idx].double())
            vals[0], vals[1] = float(d.sum()), float(len(d))
        if self.stage_name == "amortized":
            w = self.winners[idx]
            pw = self.prev_winners[idx]
            seen = (pw >= 0) & (w >= 0)
            vals[2], vals[3] = float((pw[seen] != w[seen]).sum()), float(seen.sum())
            vals[4:] = np.bincount(w[w >= 0], minlength=self.n_heads).astype(float).tolist()
        red = self._reduce(vals)
        if self.prev_rot is not None and red[1] > 0:
            rec["pose_change_deg"] = float(red[0] / red[1])
        head_change = None
        if self.stage_name == "amortized":
            counts = red[4:]
            rec["head_usage"] = (counts / max(counts.sum(), 1)).round(4).tolist()
            if red[3] > 0:
                head_change = float(red[2] / red[3])
                rec["head_change"] = head_change
        return self._close_epoch(rec, epoch, loss, head_change)

    # -- stage switch --------------------------------------------------------------------
    def _switch_pass(self, progress: Callable[[int], None] | None = None) -> None:
        if self.encoder is not None:
            return super()._switch_pass(progress)
        from cryospin.core.so3 import random_rotations

        # the same draw as one process (over the whole set), then this rank's block
        gen = torch.Generator().manual_seed(self.cfg.seed + 1)
        rots = random_rotations(self.n_set, generator=gen)[self.shard.start : self.shard.stop]
        rows = torch.as_tensor(self.data.indices)
        self.table.set_base(rows, rots)
        self.rot[rows] = self.table.rotations(rows).detach()
        self.table_ready = True
        self.stages["direct"].setup(self.ctx)

    # -- the loop --------------------------------------------------------------------------
    def _step(self, stage: Any, lidx: np.ndarray, n_global: int | None = None) -> tuple[float, int]:
        """One training step on this rank's share ``lidx`` of a global batch of ``n_global``.

        ``n_global`` ``None`` means ``lidx`` is the whole global batch.
        """
        n_r = len(lidx)
        if n_r == 0:
            # no particle of this global batch is ours: take part in the all-reduce with weight
            # 0 on one of our particles, then undo every change to its rows
            snap = self.table.row_state(0)
            self.hook_state.weight = 0.0
            stage.train_step(self.ctx, self.data.batch(np.zeros(1, np.int64), self.device))
            self.table.set_row_state(0, snap)
            return 0.0, 0
        self.hook_state.weight = n_r / (n_r if n_global is None else n_global)
        res = stage.train_step(self.ctx, self.data.batch(lidx, self.device))
        self._store_result(lidx, res)
        return res.loss * n_r, n_r

    def _plan(self, epoch: int) -> list[tuple[Any, ...]]:
        """Return this rank's share of each global batch: ``(local indices, global batch)``."""
        return self.shard.plan(self.cfg.seed, epoch, self.global_batch)

    def _images_per_step(self) -> int:
        return self.global_batch

    def _n_images(self) -> int:
        return self.n_set

    def result(self) -> TrainResult:
        """Return this rank's particles (global indices), the shared map, global statistics."""
        r = super().result()
        r.indices = self.shard.owned_global.copy()
        RUN_INFO["global_batch"] = self.global_batch
        return r
