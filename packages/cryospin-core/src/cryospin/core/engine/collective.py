"""What the trainer asks of the other processes of a run: the collective object.

:class:`Collective` is one process (rank 0 of 1): every operation returns its input or does
nothing. :class:`ProcessGroupCollective` is one rank of a ``torch.distributed`` group (launch and
backends: :mod:`cryospin.core.engine.process_group`): sums are all-reduces, the models are wrapped
in DistributedDataParallel with gradient weights (:mod:`cryospin.core.engine.ddp`), objects are
gathered on rank 0. The :class:`~cryospin.core.engine.trainer.Trainer` uses nothing else, so the
one-process run and every rank of a multi-process run execute the same loop.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from cryospin.core.engine import ddp
from cryospin.core.engine.process_group import is_active
from cryospin.core.engine.stages import EngineContext

T = TypeVar("T")


class Collective:
    """One process: rank 0 of a world of 1; nothing to exchange, nothing to wait for."""

    rank = 0
    world = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and draws the progress bar (rank 0)."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """Return this rank's device for a run on ``device`` (one process: ``device`` itself)."""
        return device

    def reduce(self, values: Sequence[float]) -> np.ndarray:
        """Sum ``values`` over processes: ``(len(values),)`` float64 (one process: the values)."""
        return np.asarray(values, dtype=np.float64)

    def barrier(self) -> None:
        """Wait until every process arrives (one process: returns at once)."""

    def gather(self, obj: T) -> list[T] | None:
        """Every rank's ``obj`` on rank 0, in rank order; ``None`` on the other ranks."""
        return [obj]

    def wrap_models(self, ctx: EngineContext) -> torch.nn.Module | None:
        """Make ``ctx``'s models synchronise their gradients; return the encoder to checkpoint.

        One process: nothing to synchronise; ``ctx.encoder``.
        """
        return ctx.encoder

    def batch_share(self, n_mine: int, n_global: int) -> None:
        """Announce that this rank trains ``n_mine`` of the ``n_global`` particles of the step.

        Gradients are weighted by that share before they are summed (one process: nothing).
        """


class ProcessGroupCollective(Collective):
    """One rank of the running ``torch.distributed`` process group (gloo or nccl)."""

    def __init__(self) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.weights = ddp.WeightState()
        self.run_device = self.comm_device = torch.device("cpu")

    def device(self, device: torch.device) -> torch.device:
        """CUDA: this node's GPU ``LOCAL_RANK`` (collectives run there too); else ``device``."""
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            self.comm_device = device
        self.run_device = device
        return device

    def reduce(self, values: Sequence[float]) -> np.ndarray:
        """All-reduce (sum) ``values`` in float64 over every rank."""
        t = torch.tensor(values, dtype=torch.float64).to(self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu().numpy()

    def barrier(self) -> None:
        """``dist.barrier()``."""
        dist.barrier()

    def gather(self, obj: T) -> list[T] | None:
        """``dist.gather_object`` on rank 0 (only rank 0 holds the list)."""
        parts: list[Any] | None = [None] * self.world if self.rank == 0 else None
        dist.gather_object(obj, parts, dst=0)
        return parts

    def wrap_models(self, ctx: EngineContext) -> torch.nn.Module | None:
        """DDP-wrap ``ctx``'s decoder and encoder (:func:`.ddp.wrap_models`); the inner encoder."""
        return ddp.wrap_models(ctx, self.weights, self.run_device)

    def batch_share(self, n_mine: int, n_global: int) -> None:
        """Weight this rank's gradients by ``n_mine / n_global`` (0 for a stand-in step)."""
        self.weights.weight = n_mine / n_global if n_global else 0.0


def make_collective() -> Collective:
    """Return this process's collective (one rank of a process group, or one process).

    A :class:`ProcessGroupCollective` inside a process group of more than one rank, else the
    one-process :class:`Collective`.
    """
    return ProcessGroupCollective() if is_active() else Collective()
