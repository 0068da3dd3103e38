"""Every registered decoder (built-in or plugin) passes the cryospin.core.testing contract."""

from __future__ import annotations

import pytest
import torch

from cryospin.core.registry import get_registry
from cryospin.core.testing import check_decoder, random_rotations

DECODERS = get_registry().names("decoder")

# decoder batch for the contract checks (check_decoder also tries (B, 2, 3, 3) and batch 1 paths)
BATCH = 3


def test_builtins_registered() -> None:
    reg = get_registry()
    assert {"hartley", "mlp"} <= set(DECODERS)
    for name in ("hartley", "mlp"):
        assert reg.components["decoder"][name].distribution == "cryospin-decoders"


@pytest.mark.parametrize("name", DECODERS)
def test_decoder_contract(name: str) -> None:
    check_decoder(get_registry().get("decoder", name), box=16, pixel_size_A=4.0, batch=BATCH)


@pytest.mark.parametrize("name", DECODERS)
def test_decoder_contract_box32(name: str) -> None:
    cls = get_registry().get("decoder", name)
    # the default FourierNet (256 wide) is slow on CPU at this size; its defaults run at box 16
    config = cls.Config(hidden=64) if name == "mlp" else None
    check_decoder(cls, box=32, pixel_size_A=2.0, batch=BATCH, config=config)


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("hartley", {"mask_radius": 0.8}),
        ("hartley", {"init_mantissa_std": 1.0, "init_decay": 0.0}),
        ("mlp", {"encoding": "positional", "hidden": 32}),
        ("mlp", {"mask_radius": 0.5, "hidden": 32}),
    ],
)
def test_decoder_contract_configs(name: str, config: dict) -> None:
    cls = get_registry().get("decoder", name)
    check_decoder(cls, box=16, config=cls.Config(**config), batch=BATCH)


@pytest.mark.parametrize("name", DECODERS)
def test_batch_shapes(name: str) -> None:
    """``(B, M, 3, 3)`` gives the same slices as the flattened ``(B*M, 3, 3)`` batch."""
    torch.manual_seed(0)
    cls = get_registry().get("decoder", name)
    config = cls.Config(hidden=64) if name == "mlp" else cls.Config()
    dec = cls(config, 16, 4.0).double()
    rot = random_rotations(6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        flat = dec(rot)
        nested = dec(rot.reshape(3, 2, 3, 3))
        single = torch.stack([dec(r) for r in rot])
    assert nested.shape == (3, 2, 16, 16)
    torch.testing.assert_close(nested.reshape(6, 16, 16), flat, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(single, flat, rtol=1e-10, atol=1e-10)
