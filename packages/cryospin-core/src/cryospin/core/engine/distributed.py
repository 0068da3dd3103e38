"""Multi-process reconstruction with ``torch.distributed`` (launched by ``torchrun``).

Launch::

    torchrun --nproc-per-node G -m cryospin.core run --particles P.star --out OUT ...
    cryospin run --launcher torchrun --gpus G --particles P.star --out OUT ...   # the same
    # several nodes: torchrun --nnodes K --node-rank k --rdzv-endpoint HOST:PORT ... (shared OUT)

Backend: ``nccl`` when the run's device is CUDA (rank ``LOCAL_RANK`` uses ``cuda:LOCAL_RANK``),
``gloo`` on CPU. Without ``WORLD_SIZE > 1`` in the environment nothing here runs and the
one-process engine is used unchanged.

What each rank does (:class:`DistributedTrainer`):

* it owns a fixed block of the particles (:mod:`cryospin.core.engine.sharding`): reads only their
  images, holds and updates only their pose-table rows and Adam state, checkpoints them in its own
  shard file; no step gathers the whole table;
* the encoder and decoder are wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`; a
  comm hook scales each rank's gradient by ``n_r / n_t`` (its share of the global batch) before
  the all-reduce sum, so the update equals a one-process update on the global batch of
  ``G * batch_size`` particles, whatever the split. The direct stage's pose steps use the plain
  decoder (per-particle gradients need no all-reduce); its volume steps go through DDP;
* ``batch_size`` is per rank: the global batch is ``G * batch_size`` (reported in the metrics
  and ``summary.json``). Learning rates are those of a one-process run with that global batch;
* losses, images/s, winner-takes-all head statistics, pose changes and the stop request
  (SIGINT/SIGTERM on any rank) are reduced across ranks every step/epoch; only rank 0 writes
  files and draws the progress bar; per-epoch metrics against a truth use up to
  :data:`EVAL_SAMPLE` particles gathered on rank 0;
* at the end rank 0 gathers the final poses once and writes ``poses.star`` and the maps.

Batch norm layers keep per-rank batch statistics (DDP without ``SyncBatchNorm``), so with
``batch_norm`` encoders a G-rank run is not bit-equivalent to one process; without, it is up to
floating-point summation order (see ``tests/integration/test_torchrun.py``).
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from cryospin.core.engine import checkpoint as ckpt
from cryospin.core.engine import sharding
from cryospin.core.engine.ops import geodesic_distance_deg
from cryospin.core.engine.stages import DirectStage
from cryospin.core.engine.trainer import Trainer, TrainResult, Truth
from cryospin.core.errors import ConfigError

#: particles (at most) whose poses are gathered on rank 0 for the per-epoch metrics vs truth
EVAL_SAMPLE = 4096


# ----------------------------------------------------------------------------- process group
def is_active() -> bool:
    """Whether a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """Return this process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Return the number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 (or no process group): the process that writes files."""
    return rank() == 0


def barrier() -> None:
    """Synchronise all ranks (no-op with one process)."""
    if is_active():
        dist.barrier()


def _wants_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def init_from_env(cfg: Any) -> int:
    """Join the process group described by torchrun's environment; return the world size.

    Does nothing (returns 1) unless ``WORLD_SIZE > 1``. Backend ``nccl`` for CUDA devices,
    ``gloo`` otherwise; the group is destroyed at exit.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return 1
    if not dist.is_initialized():
        cuda = _wants_cuda(cfg.device)
        if cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            if local >= torch.cuda.device_count():
                raise ConfigError(
                    f"process {local} of this node has no GPU ({torch.cuda.device_count()} "
                    "visible): start at most one process per GPU (--gpus / --nproc-per-node)"
                )
            torch.cuda.set_device(local)
        timeout = datetime.timedelta(seconds=int(os.environ.get("CRYOSPIN_DIST_TIMEOUT", "1800")))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
        atexit.register(_destroy)
    return dist.get_world_size()


def _destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


#: the global batch of the last distributed trainer of this run (a resumed run keeps the
#: checkpoint's, which differs from ``G * batch_size`` when G changed)
_RUN_INFO: dict[str, int] = {}


def summary_fields(cfg: Any) -> dict[str, Any]:
    """``world_size``, ``batch_size_per_rank`` and ``global_batch_size`` for ``summary.json``."""
    g = world_size()
    gb = _RUN_INFO.get("global_batch", g * cfg.batch_size)
    per = gb // g if gb % g == 0 else gb / g
    return {"world_size": g, "batch_size_per_rank": per, "global_batch_size": gb}


# ----------------------------------------------------------------------------- factory / gather
def make_trainer(
    cfg: Any,
    data: Any,
    ckpt_dir: Path,
    metrics_path: Path,
    truth: Truth | None = None,
    tag: dict[str, Any] | None = None,
    console: Any = None,
    resume: bool = False,
    on_checkpoint: Callable[[Path, dict[str, Any]], None] | None = None,
) -> Trainer:
    """Return a :class:`Trainer`, or a :class:`DistributedTrainer` when one is needed.

    Distributed: under a process group of G > 1 ranks, or when resuming a sharded checkpoint
    (with any number of ranks, one included). ``on_checkpoint`` becomes the trainer's
    :attr:`~Trainer.on_checkpoint` (called on rank 0 only).
    """
    if tag is None or tag.get("half", 1) == 1:
        _RUN_INFO.clear()
    tr: Trainer
    if is_active() or (resume and sharding.is_sharded_checkpoint(ckpt_dir)):
        tr = DistributedTrainer(cfg, data, ckpt_dir, metrics_path, truth, tag, console)
    else:
        tr = Trainer(cfg, data, ckpt_dir, metrics_path, truth, tag=tag, console=console)
    tr.on_checkpoint = on_checkpoint if is_main() else None
    return tr


def gather_results(results: list[TrainResult]) -> list[TrainResult] | None:
    """Assemble each trainer's per-rank results on rank 0 (once, at the end).

    Returns the merged results on rank 0, ``None`` on the other ranks, ``results`` unchanged
    without a process group.
    """
    if not is_active():
        return results
    merged: list[TrainResult] = []
    for r in results:
        part = {
            "indices": r.indices,
            "rotations": r.rotations,
            "shifts_px": r.shifts_px,
            "winners": r.winners,
        }
        parts: list[Any] | None = [None] * world_size() if is_main() else None
        dist.gather_object(part, parts, dst=0)  # only rank 0 receives (O(N) there alone)
        if parts is None:
            continue
        idx = np.concatenate([p["indices"] for p in parts])

        def cat(key: str, parts: list[Any] = parts) -> Any:
            return None if parts[0][key] is None else np.concatenate([p[key] for p in parts])

        merged.append(
            dataclasses.replace(
                r,
                indices=idx,
                rotations=cat("rotations"),
                shifts_px=cat("shifts_px"),
                winners=cat("winners"),
            )
        )
    return merged if is_main() else None


# ----------------------------------------------------------------------------- DDP pieces
@dataclasses.dataclass
class WeightState:
    """State of :func:`weighted_allreduce_hook`: this rank's share of the current global batch."""

    weight: float = 1.0
    group: Any = None


def weighted_allreduce_hook(state, bucket):  # type: ignore[no-untyped-def]  # noqa: ANN001
    """DDP comm hook: ``sum_r w_r g_r`` with ``w_r = n_r / n_t`` (instead of ``mean_r g_r``).

    (No annotations: DDP checks them against ``dist.GradBucket`` at registration.) Each
    rank's loss is a mean over its ``n_r`` images, so the weighted sum is the mean gradient
    over the whole global batch of ``n_t`` images, as one process would compute it.
    """
    buf = bucket.buffer()
    buf.mul_(state.weight)
    fut = dist.all_reduce(buf, group=state.group, async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


class ShardedDirectStage(DirectStage):
    """:class:`DirectStage` whose pose steps use the plain decoder, volume steps the DDP one."""

    def _pred(self, ctx, batch, rows, omega, shift):  # type: ignore[no-untyped-def]
        local = ctx.extra.get("local_decoder")
        pose_step = omega.requires_grad or (shift is not None and shift.requires_grad)
        if pose_step and local is not None:
            ctx = dataclasses.replace(ctx, decoder=local)
        return super()._pred(ctx, batch, rows, omega, shift)


# ----------------------------------------------------------------------------- the trainer
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
        if type(self.stages["direct"]) is DirectStage:
            self.stages["direct"] = ShardedDirectStage()
        self.hook_state = WeightState()
        self.comm_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # rank-local buffers (batch-norm statistics): no broadcast; a decoder uses all its
            # parameters in every forward, an encoder may not (e.g. an unused shift head)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # broadcast_buffers deprecation
                ddp_dec = DDP(
                    self.decoder,
                    device_ids=ids,
                    broadcast_buffers=False,
                    find_unused_parameters=False,
                )
                ddp_enc = None
                if self.encoder is not None:
                    ddp_enc = DDP(
                        self.encoder,
                        device_ids=ids,
                        broadcast_buffers=False,
                        find_unused_parameters=True,
                    )
            ddp_dec.register_comm_hook(self.hook_state, weighted_allreduce_hook)
            self.ctx.extra["local_decoder"] = self.decoder
            self.ctx.decoder = ddp_dec
            if ddp_enc is not None:
                ddp_enc.register_comm_hook(self.hook_state, weighted_allreduce_hook)
                self.ctx.encoder = ddp_enc

    # -- collectives -------------------------------------------------------------------
    def _reduce(self, values: list[float], op: Any = None) -> np.ndarray:
        t = torch.tensor(values, dtype=torch.float64)
        if self.world > 1:
            t = t.to(self.comm_device)
            dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
        return t.cpu().numpy()

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

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
    def _write_metrics(self, record: dict[str, Any]) -> None:
        if self.rank == 0:
            super()._write_metrics(record)

    def _trim_metrics(self) -> None:
        if self.rank == 0:
            super()._trim_metrics()

    def metrics(self) -> list[dict[str, Any]]:
        """Rank 0's view of ``metrics.jsonl`` (empty on other ranks)."""
        return super().metrics() if self.rank == 0 else []

    def _truth_metrics(self, with_map: bool) -> dict[str, Any]:
        """Per-epoch metrics vs truth on rank 0, on the gathered sample of particles."""
        truth = self.truth
        if truth.rotations is None and truth.volume is None:
            return {}
        from cryospin.core.engine import report

        loc = self.eval_local
        part = (self.shard.owned_global[loc], self.rot[loc].numpy())
        parts: list[Any] = [part]
        if self.world > 1 and truth.rotations is not None:
            parts = [None] * self.world
            dist.all_gather_object(parts, part)
        if self.rank != 0:
            return {}
        gidx = np.concatenate([p[0] for p in parts])
        rot = torch.as_tensor(np.concatenate([p[1] for p in parts]))
        view = SimpleNamespace(
            truth=Truth(truth.volume, None if truth.rotations is None else truth.rotations[gidx]),
            rot=rot,
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
    def _snapshot_row(self, row: int) -> dict[str, torch.Tensor]:
        t = self.table
        return {
            "base": t.base[row].clone(),
            "omega": t.omega[row].clone(),
            "shift": t.shift[row].clone(),
            **{
                f"{o}.{k}": getattr(getattr(t, o), k)[row].clone()
                for o in ("opt_rot", "opt_shift")
                for k in ("exp_avg", "exp_avg_sq", "steps")
            },
        }

    def _restore_row(self, row: int, snap: dict[str, torch.Tensor]) -> None:
        t = self.table
        t.base[row], t.omega[row], t.shift[row] = snap["base"], snap["omega"], snap["shift"]
        for o in ("opt_rot", "opt_shift"):
            for k in ("exp_avg", "exp_avg_sq", "steps"):
                getattr(getattr(t, o), k)[row] = snap[f"{o}.{k}"]

    def _step(self, stage: Any, lidx: np.ndarray, n_global: int) -> tuple[float, int]:
        """One training step on this rank's share ``lidx`` of a global batch of ``n_global``."""
        n_r = len(lidx)
        if n_r == 0:
            # no particle of this global batch is ours: take part in the all-reduce with weight
            # 0 on one of our particles, then undo every change to its rows
            snap = self._snapshot_row(0)
            self.hook_state.weight = 0.0
            stage.train_step(self.ctx, self.data.batch(np.zeros(1, np.int64), self.device))
            self._restore_row(0, snap)
            return 0.0, 0
        self.hook_state.weight = n_r / n_global
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
        _RUN_INFO["global_batch"] = self.global_batch
        return r


# ----------------------------------------------------------------------------- CLI launcher
def torchrun_command(nproc: int, args: list[str], nnodes: int = 1) -> list[str]:
    """Return the command ``python -m torch.distributed.run ... -m cryospin.core run ARGS``."""
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    if nnodes == 1:
        cmd += ["--standalone"]
    cmd += ["--nproc-per-node", str(nproc), "-m", "cryospin.core", "run", *args]
    return cmd


def relaunch(nproc: int, args: list[str]) -> int:
    """Run ``cryospin run ARGS`` under torchrun with ``nproc`` processes; return its exit code.

    SIGTERM received by this process is passed on to torchrun, which sends SIGTERM to every rank
    (each checkpoints and stops). Ctrl-C reaches torchrun directly (same process group).
    """
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.Popen(torchrun_command(nproc, args), env=env)

    def forward(signum: int, frame: Any) -> None:
        proc.send_signal(signum)

    old = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
    }
    try:
        return proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def cli_args(flags: dict[str, Any], resume: bool, out: str, config: str | None) -> list[str]:
    """Rebuild ``cryospin run`` arguments from parsed options (``None`` = not given)."""
    args = ["--out", out]
    if config:
        args += ["--config", config]
    for key, value in flags.items():
        if value is None:
            continue
        opt = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(opt if value else "--no-" + key.replace("_", "-"))
        else:
            args += [opt, str(value)]
    if resume:
        args.append("--resume")
    return args
