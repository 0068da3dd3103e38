"""Batch norm under DDP on CPU: PyTorch refuses ``SyncBatchNorm`` there, so it stays per rank.

``cryospin.core.engine.ddp.wrap_models`` converts batch-norm layers to ``SyncBatchNorm`` only on
CUDA. These tests pin the reason (torch 2.13 raises for a CPU module wrapped in DDP; if a later
torch accepts it, the first test fails and the CPU path can convert too) and check that on CPU
the models are wrapped with their plain ``BatchNorm`` layers and still train. They run in one
process with a one-rank gloo group (file rendezvous), which they destroy.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from cryospin.core.engine import ddp


@pytest.fixture
def group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdzv'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU())


def test_torch_refuses_sync_batch_norm_on_cpu(group):
    sync = torch.nn.SyncBatchNorm.convert_sync_batchnorm(_encoder())
    with pytest.raises(ValueError, match="SyncBatchNorm layers only work with GPU modules"):
        DDP(sync)
    with pytest.raises(ValueError, match="SyncBatchNorm expected input tensor to be on GPU"):
        sync.train()(torch.randn(4, 1, 6, 6))


def test_cpu_models_keep_per_rank_batch_norm_and_train(group):
    enc, dec = _encoder(), torch.nn.Linear(3, 1)
    assert ddp.has_batch_norm(enc) and not ddp.has_batch_norm(dec)
    bn = enc[1]
    ctx = SimpleNamespace(encoder=enc, decoder=dec, pose_decoder=None)
    inner = ddp.wrap_models(ctx, ddp.WeightState(weight=1.0), torch.device("cpu"))
    assert inner is enc and ctx.pose_decoder is dec
    assert isinstance(ctx.encoder, DDP) and isinstance(ctx.decoder, DDP)
    assert type(enc[1]) is torch.nn.BatchNorm2d and enc[1] is bn  # not converted on CPU
    x = torch.randn(5, 1, 6, 6)
    feats = ctx.encoder(x).mean(dim=(2, 3))
    # training-mode batch norm over this rank's batch: per channel, mean 0 and variance 1
    z = enc[1](enc[0](x))
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        z.var(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3, rtol=0
    )
    ctx.decoder(feats).sum().backward()
    assert bn.weight.grad is not None and torch.isfinite(bn.weight.grad).all()
