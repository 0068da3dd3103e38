"""Particle sharding: ownership, per-step batch plans, checkpoints (one process is one shard).

Ownership. The particles of a set (the whole stack, or one half-set) are split into ``G``
contiguous blocks of their (sorted) global indices, ``np.array_split``: rank ``r`` owns block ``r``
for the whole run. It reads only its block's images (through the lazy stack; with
``cache_images`` it caches only its block) and holds only its block's pose-table rows, Adam moments
and step counts, so memory per rank is O(N / G) (plus one int64 epoch permutation of N entries).

Batches. Every rank computes the same epoch order as a one-process run
(:meth:`ParticleData.order`, seeded by ``(seed, epoch)``) and cuts it into global batches of
``global_batch = G * batch_size`` particles: exactly the batches of a one-process run with batch
``G * batch_size``. At step ``t`` rank ``r`` trains on the particles of global batch ``t`` that it
owns (``batch_size`` in expectation; the count varies from step to step). The trainer's
collective weights each rank's gradient by ``n_r / n_t`` before the all-reduce, so the update
equals the one-process update on the whole global batch (:mod:`cryospin.core.engine.distributed`).

Checkpoints (:func:`save_checkpoint`; one format for one process and ``G``: a one-process run is
rank 0 of 1). ``<ckpt>/poses-rank{r}-of-{G}.{seq}.pt`` holds rank ``r``'s global particle indices,
its pose-table rows with their Adam state, and its per-particle rows
(:class:`.loop_state.ParticleState`); ``last.pt`` (rank 0) holds everything else and names the
shard files of its save ``seq``. Shards are written first, ``last.pt`` is replaced after all ranks
wrote theirs, and older shards are deleted only then, so a kill at any moment leaves a complete,
consistent checkpoint. On load every rank scans the shard files one at a time and keeps the rows of
the particles it owns now (re-partitioning by global index), so a run resumes with any number of
processes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cryospin.core.engine import checkpoint as ckpt
from cryospin.core.engine.data import Batch, ParticleData
from cryospin.core.engine.loop_state import ROW_KEYS, ParticleState
from cryospin.core.engine.pose_table import PoseTable
from cryospin.core.errors import InputError

if TYPE_CHECKING:
    from cryospin.core.engine.collective import Collective

SHARD_RE = re.compile(r"^poses-rank(\d+)-of-(\d+)\.(\d+)\.pt$")


def shard_name(rank: int, world: int, seq: int) -> str:
    """File name of rank ``rank``'s shard of save number ``seq``."""
    return f"poses-rank{rank}-of-{world}.{seq}.pt"


def owned_block(n: int, rank: int, world: int) -> tuple[int, int]:
    """``[start, stop)`` positions (into the set's index array) owned by ``rank`` of ``world``."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world of {world}")
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class ShardData:
    """A rank's block of a :class:`ParticleData`, seen in local index space ``0 .. n_local - 1``.

    The trainer indexes its pose table and per-particle arrays with local indices; this adapter
    maps them to global particle indices for image reads and checkpoints. It offers what the
    trainer and the stages use of :class:`ParticleData`: ``indices``, ``len``, ``batch``, ``box``,
    ``pixel_size_A``, ``stack``, ``noise_std``, ``invert``.
    """

    def __init__(self, full: ParticleData, rank: int, world: int, cache: bool = True) -> None:
        self.full = full
        self.rank, self.world = rank, world
        self.n_set = len(full)
        self.start, self.stop = owned_block(self.n_set, rank, world)
        if self.stop <= self.start:
            raise InputError(
                f"{self.n_set} particles cannot be shared by {world} processes "
                "(each needs at least one); use fewer processes"
            )
        self.owned_global = np.asarray(full.indices[self.start : self.stop], dtype=np.int64)
        self.local = full  # one process: the set itself (its cache too)
        if world > 1:
            self.local = ParticleData(
                full.stack,
                full.box,
                full.invert,
                subset=self.owned_global,
                cache=cache,
                noise_std=full.noise_std,
            )
        self.indices = np.arange(self.stop - self.start, dtype=np.int64)
        self.stack = full.stack
        self.box = full.box
        self.pixel_size_A = full.pixel_size_A
        self.noise_std = full.noise_std
        self.invert = full.invert
        self._sorted = bool(np.all(np.diff(full.indices) > 0))

    def __len__(self) -> int:
        return len(self.indices)

    def positions(self, gidx: np.ndarray) -> np.ndarray:
        """Positions of global indices ``gidx`` in the set's index array."""
        if self._sorted:
            return np.searchsorted(self.full.indices, gidx)
        inv = np.argsort(self.full.indices)
        return inv[np.searchsorted(self.full.indices[inv], gidx)]

    def plan(self, seed: int, epoch: int, global_batch: int) -> list[tuple[np.ndarray, int]]:
        """Return the epoch's steps: ``(this rank's local indices, global batch size)``."""
        pos = self.positions(self.full.order(seed, epoch))
        steps = []
        for s in range(0, len(pos), global_batch):
            chunk = pos[s : s + global_batch]
            mine = chunk[(chunk >= self.start) & (chunk < self.stop)] - self.start
            steps.append((mine.astype(np.int64), len(chunk)))
        return steps

    def batch(self, lidx: np.ndarray, device: torch.device | str = "cpu") -> Batch:
        """Return a :class:`Batch` of local indices ``lidx`` (its ``indices`` are local)."""
        lidx = np.asarray(lidx, dtype=np.int64)
        b = self.local.batch(self.owned_global[lidx], device)
        b.indices = lidx
        return b


# ---------------------------------------------------------------------------------- checkpoints
def table_rows(table_state: dict[str, Any], sel: Any) -> dict[str, Any]:
    """Rows ``sel`` of a :meth:`PoseTable.state_dict` (hyper-parameters kept)."""

    def opt(o: dict[str, Any]) -> dict[str, Any]:
        return {
            **o,
            "exp_avg": o["exp_avg"][sel],
            "exp_avg_sq": o["exp_avg_sq"][sel],
            "steps": o["steps"][sel],
        }

    return {
        "base": table_state["base"][sel],
        "omega": table_state["omega"][sel],
        "shift": table_state["shift"][sel],
        "opt_rot": opt(table_state["opt_rot"]),
        "opt_shift": opt(table_state["opt_shift"]),
    }


def _put(dst: Any, rows: np.ndarray, src: Any) -> None:
    dst[torch.as_tensor(rows) if isinstance(dst, torch.Tensor) else rows] = src


def _fill_table(dst: dict[str, Any], rows: np.ndarray, src: dict[str, Any]) -> None:
    for k in ("base", "omega", "shift"):
        _put(dst[k], rows, src[k])
    for o in ("opt_rot", "opt_shift"):
        for k in ("exp_avg", "exp_avg_sq", "steps"):
            _put(dst[o][k], rows, src[o][k])
        for k in ("lr", "betas", "eps"):
            dst[o][k] = src[o][k]


def write_shard(path: Path, owned_global: np.ndarray, table_state: dict, rows: dict) -> None:
    """Write one rank's shard atomically (:func:`checkpoint.save_atomic`)."""
    ckpt.save_atomic(
        {"indices": np.asarray(owned_global, np.int64), "table": table_state, **rows}, path
    )


def restore_rows(
    state: dict[str, Any], ckpt_dir: Path, owned_global: np.ndarray, template: dict[str, Any]
) -> dict[str, Any]:
    """Rows of the particles ``owned_global`` from a checkpoint, re-partitioned by global index.

    ``state`` is ``last.pt``; it names its shard files (read one at a time). ``template`` is the
    local ``{"table": PoseTable.state_dict(), "rot": ..., ...}`` to fill (modified in place and
    returned). A particle missing from every shard raises :class:`InputError`.
    """
    owned_global = np.asarray(owned_global, np.int64)
    found = np.zeros(len(owned_global), dtype=bool)
    order = np.argsort(owned_global)
    srt = owned_global[order]

    def take(gidx: np.ndarray, src_table: dict, src_rows: dict, src_sel: Any) -> None:
        p = np.searchsorted(srt, gidx)
        p_ok = p < len(srt)
        hit = np.zeros(len(gidx), dtype=bool)
        hit[p_ok] = srt[p[p_ok]] == gidx[p_ok]
        if not hit.any():
            return
        local = order[p[hit]]
        src_pos = np.asarray(src_sel)[hit]
        _fill_table(template["table"], local, table_rows(src_table, torch.as_tensor(src_pos)))
        for k in ROW_KEYS:
            v = src_rows.get(k)
            if v is None or template.get(k) is None:
                if v is None:
                    template[k] = None
                continue
            sel = torch.as_tensor(src_pos) if torch.is_tensor(v) else src_pos
            _put(template[k], local, v[sel])
        found[local] = True

    for name in state["sharded"]["files"]:
        path = Path(ckpt_dir) / name
        if not path.exists():
            raise InputError(f"checkpoint shard missing: {path}")
        sh = ckpt.load(path)
        gidx = np.asarray(sh["indices"], np.int64)
        take(gidx, sh["table"], sh, np.arange(len(gidx)))
        del sh
    if not found.all():
        miss = owned_global[~found][:3].tolist()
        raise InputError(f"checkpoint in {ckpt_dir} has no pose rows for particles {miss}")
    return template


def shard_listing(world: int, seq: int) -> dict[str, Any]:
    """``last.pt``'s ``sharded`` entry of save ``seq``: ``world_size`` and every shard's name."""
    return {"world_size": world, "files": [shard_name(r, world, seq) for r in range(world)]}


def save_checkpoint(
    ckpt_dir: Path,
    comm: Collective,
    seq: int,
    shard: dict[str, Any],
    main_state: Callable[[], dict[str, Any]],
    on_checkpoint: Callable[[Path, dict[str, Any]], None] | None = None,
) -> None:
    """Checkpoint save ``seq`` (collective): shards, then ``last.pt`` (rank 0), then old shards.

    Every rank writes its ``shard`` (``indices`` (global), ``table`` and the
    :data:`.loop_state.ROW_KEYS` rows); after a barrier rank 0 writes ``main_state()``
    (which names the shard files of ``seq``), deletes every other shard file, and calls
    ``on_checkpoint(ckpt_dir, state)`` (which may read the shards: the pose files) before the
    closing barrier, so no shard it reads is replaced meanwhile.
    """
    ckpt_dir = Path(ckpt_dir)
    write_shard(
        ckpt_dir / shard_name(comm.rank, comm.world, seq),
        shard["indices"],
        shard["table"],
        {k: shard[k] for k in ROW_KEYS},
    )
    comm.barrier()
    if comm.is_main:
        state = main_state()
        ckpt.save_atomic(state, ckpt_dir / ckpt.CHECKPOINT_NAME)
        keep = set(state["sharded"]["files"])
        for p in shard_files(ckpt_dir):
            if p.name not in keep:
                p.unlink(missing_ok=True)
        if on_checkpoint is not None:
            on_checkpoint(ckpt_dir, state)
    comm.barrier()


def restore_shard(
    state: dict[str, Any],
    ckpt_dir: Path,
    owned_global: np.ndarray,
    table: PoseTable,
    fresh: ParticleState,
) -> ParticleState:
    """Load the rows of the particles ``owned_global`` from a checkpoint (:func:`restore_rows`).

    Their pose-table rows go into ``table``; the per-particle rows come back as a new
    :class:`.loop_state.ParticleState` (``fresh``, of the same length, gives their types).
    """
    template = {"table": table.state_dict(), **fresh.rows()}
    template["prev_rot"] = fresh.rot.clone()
    rows = restore_rows(state, ckpt_dir, owned_global, template)
    table.load_state_dict(rows.pop("table"))
    return ParticleState(**rows)


def shard_files(ckpt_dir: Path) -> list[Path]:
    """Every shard file in ``ckpt_dir``."""
    d = Path(ckpt_dir)
    return sorted(p for p in d.glob("poses-rank*-of-*.pt") if SHARD_RE.match(p.name))
