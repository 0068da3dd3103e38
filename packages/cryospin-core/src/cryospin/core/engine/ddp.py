"""DistributedDataParallel for the engine's models: gradient weights, batch norm, direct stage.

* :func:`weighted_allreduce_hook` scales each rank's gradient by ``n_r / n_t`` (its share of the
  global batch) before the all-reduce sum, so the update equals a one-process update on the whole
  global batch, however it is split (a rank may own none of a batch: weight 0);
* :func:`wrap_models` wraps the decoder and encoder of an
  :class:`~cryospin.core.engine.stages.EngineContext` in DDP with that hook. On CUDA it first
  converts the encoder's batch-norm layers to :class:`torch.nn.SyncBatchNorm`, so batch statistics
  are those of the global batch, as in one process (except in a step where a rank owns none of the
  batch: its weight-0 stand-in image then joins the statistics). On CPU it does not: PyTorch
  (2.13) refuses SyncBatchNorm
  there (DDP raises ``ValueError: SyncBatchNorm layers only work with GPU modules``, the layer
  itself ``SyncBatchNorm expected input tensor to be on GPU or XPU``), so on CPU with gloo each
  rank normalises with its own batch's statistics and keeps its own running statistics;
* the plain decoder stays in ``ctx.pose_decoder``: the direct stage's per-particle pose steps
  run on it (nothing to all-reduce), its volume steps through DDP.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from cryospin.core.engine.stages import EngineContext


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


def has_batch_norm(module: torch.nn.Module) -> bool:
    """Whether ``module`` holds a batch-norm layer (any ``torch.nn`` ``BatchNorm*d``)."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


def wrap_models(
    ctx: EngineContext, hook_state: WeightState, device: torch.device
) -> torch.nn.Module | None:
    """Put DDP-wrapped decoder and encoder into ``ctx`` (collective); return the inner encoder.

    ``ctx.pose_decoder`` keeps the plain decoder (the direct stage's pose steps use it).
    On CUDA, the encoder's batch-norm layers become :class:`torch.nn.SyncBatchNorm` (same
    parameters and running buffers, so optimisers built on them stay valid); on CPU they stay
    per-rank (module docstring). Buffers are not broadcast (``broadcast_buffers=False``); a
    decoder uses all its parameters in every forward, an encoder may not (e.g. an unused shift
    head).
    """
    ids = [device.index] if device.type == "cuda" else None
    encoder = ctx.encoder
    if device.type == "cuda" and encoder is not None and has_batch_norm(encoder):
        encoder = torch.nn.SyncBatchNorm.convert_sync_batchnorm(encoder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # broadcast_buffers deprecation
        ddp_dec = DDP(ctx.decoder, device_ids=ids, broadcast_buffers=False)
        ddp_enc = None
        if encoder is not None:
            ddp_enc = DDP(
                encoder, device_ids=ids, broadcast_buffers=False, find_unused_parameters=True
            )
    ddp_dec.register_comm_hook(hook_state, weighted_allreduce_hook)
    ctx.pose_decoder = ctx.decoder
    ctx.decoder = ddp_dec
    if ddp_enc is not None:
        ddp_enc.register_comm_hook(hook_state, weighted_allreduce_hook)
        ctx.encoder = ddp_enc
    return encoder
