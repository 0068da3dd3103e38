"""engine.models: the optimisers' multi-tensor (foreach) Adam is torch's per-tensor Adam, bit for
bit, so the speed-up changes no result."""

from __future__ import annotations

import copy

import torch

from cryospin.core.engine.config import validate_config
from cryospin.core.engine.models import build_models
from cryospin.core.registry import get_registry


def test_built_optimisers_step_exactly_as_the_per_tensor_adam() -> None:
    torch.manual_seed(0)
    cfg = validate_config({})
    m = build_models(cfg, get_registry(), 64, 4.0, 32, torch.device("cpu"))
    assert m.encoder is not None and m.enc_opt is not None
    before = m.decoder.mantissa.detach().clone()
    pairs = []
    for model, opt, lr in ((m.encoder, m.enc_opt, cfg.lr_encoder), (m.decoder, m.dec_opt, None)):
        assert opt.defaults["foreach"] is True
        ref = copy.deepcopy(model)
        lr = cfg.lr_decoder if lr is None else lr
        ref_opt = torch.optim.Adam(ref.parameters(), lr=lr, foreach=False)
        pairs.append((model, opt, ref, ref_opt))
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        for model, opt, ref, ref_opt in pairs:
            for p, q in zip(model.parameters(), ref.parameters(), strict=True):
                grad = torch.randn(p.shape, generator=g) * 10.0 ** torch.randint(-6, 2, (1,)).item()
                p.grad, q.grad = grad.clone(), grad.clone()
            opt.step()
            ref_opt.step()
    for model, _, ref, _ in pairs:
        for p, q in zip(model.parameters(), ref.parameters(), strict=True):
            assert torch.equal(p, q)
    # the steps did move the parameters (the comparison is not between two untouched models)
    assert not torch.equal(before, m.decoder.mantissa)
