"""Every registered encoder (built-in or plugin) passes the cryospin.core.testing contract."""

from __future__ import annotations

import pytest

from cryospin.core.registry import get_registry
from cryospin.core.testing import check_encoder

ENCODERS = get_registry().names("encoder")


def test_builtins_registered() -> None:
    assert {"multihead", "cryoai"} <= set(ENCODERS)


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_contract(name: str) -> None:
    check_encoder(get_registry().get("encoder", name), box=32, pixel_size_A=4.0)


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_contract_box64(name: str) -> None:
    check_encoder(get_registry().get("encoder", name), box=64, pixel_size_A=2.0, batch=2)


@pytest.mark.parametrize("name", [n for n in ENCODERS if n in ("multihead", "cryoai")])
def test_encoder_contract_with_shifts(name: str) -> None:
    cls = get_registry().get("encoder", name)
    check_encoder(cls, box=32, config=cls.Config(estimate_shifts=True, batch_norm=False))
