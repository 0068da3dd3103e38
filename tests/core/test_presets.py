"""Presets: the paper's settings by name, overridable field by field."""

from __future__ import annotations

import pytest

from cryospin.core.engine.config import validate_config
from cryospin.core.errors import ConfigError


def _encoder_params(cfg, box: int) -> int:
    from cryospin.encoders.multihead import MultiHeadEncoder

    enc = MultiHeadEncoder(MultiHeadEncoder.Config(**cfg.encoder_config), box, 1.5)
    return sum(p.numel() for p in enc.parameters())


def test_paper_preset_is_the_papers_text() -> None:
    cfg = validate_config({"preset": "paper"})
    assert (cfg.batch_size, cfg.epochs, cfg.switch_epoch) == (64, 20, 7)
    assert (cfg.lr_encoder, cfg.lr_decoder, cfg.lr_decoder_direct) == (1e-4, 0.05, 0.02)
    assert cfg.amortized_box is None and cfg.coarse_to_fine is False
    # Supp. B: the encoder of the synthetic experiments has about 8.7 M parameters at box 128
    assert _encoder_params(cfg, 128) / 1e6 == pytest.approx(8.7, abs=0.05)


def test_paper_real_preset_and_overrides() -> None:
    cfg = validate_config({"preset": "paper-real", "epochs": 40, "encoder_config": {"n_heads": 9}})
    assert cfg.epochs == 40 and cfg.switch_epoch == 15 and cfg.shifts is True
    # encoder_config merged key by key: the paper's channels stay, the heads change
    assert cfg.encoder_config["n_heads"] == 9 and cfg.encoder_config["estimate_shifts"] is True
    assert cfg.encoder_config["channels"] == [64, 128, 256, 256, 256]


def test_unknown_preset_is_one_line() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'papr'.*paper, paper-real"):
        validate_config({"preset": "papr"})


def test_defaults_are_not_the_paper_preset() -> None:
    cfg = validate_config({})
    assert cfg.preset is None and cfg.epochs is None and cfg.batch_size == 32
