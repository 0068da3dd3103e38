"""``setup_torch``: the thread count is torch's own unless the configuration sets it."""

from __future__ import annotations

import torch

from cryospin.core.engine.config import validate_config
from cryospin.core.run.train import setup_torch


def test_num_threads_default_leaves_torch_alone_and_a_value_is_applied():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        setup_torch(validate_config({"deterministic": False}))
        assert torch.get_num_threads() == 3
        setup_torch(validate_config({"num_threads": 1, "deterministic": False}))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
