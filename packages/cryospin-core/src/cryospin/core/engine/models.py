"""The trainer's models and their optimisers, built from the run configuration and saved whole."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cryospin.core.engine.config import RunConfig, validate_component_config


@dataclass
class Models:
    """Decoder and encoder (``None`` for a direct-only run) with their Adam optimisers.

    ``encoder`` is the plain module (in a multi-process run the DDP wrapper lives in the stages'
    :class:`~cryospin.core.engine.stages.EngineContext`), so its state is the same whatever the
    number of processes.
    """

    decoder: Any  # a registered Decoder (torch.nn.Module with to_map)
    dec_opt: torch.optim.Optimizer
    encoder: Any = None
    enc_opt: torch.optim.Optimizer | None = None

    @property
    def n_heads(self) -> int:
        """Candidates per image: the encoder's heads (1 without an encoder)."""
        return int(self.encoder.n_candidates) if self.encoder is not None else 1

    def volume(self) -> torch.Tensor:
        """Return the decoder's current map ``(L, L, L)`` (real space, float32, CPU)."""
        with torch.no_grad():
            return self.decoder.to_map().detach().float().cpu()

    def state_dict(self) -> dict[str, Any]:
        """Return the states of ``decoder``, ``dec_opt``, ``encoder``, ``enc_opt`` (or ``None``)."""
        enc, opt = self.encoder, self.enc_opt
        return {
            "decoder": self.decoder.state_dict(),
            "dec_opt": self.dec_opt.state_dict(),
            "encoder": None if enc is None else enc.state_dict(),
            "enc_opt": None if opt is None else opt.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (the encoder's only when both sides have one)."""
        self.decoder.load_state_dict(state["decoder"])
        self.dec_opt.load_state_dict(state["dec_opt"])
        if self.encoder is not None and self.enc_opt is not None and state["encoder"] is not None:
            self.encoder.load_state_dict(state["encoder"])
            self.enc_opt.load_state_dict(state["enc_opt"])


def build_models(
    cfg: RunConfig,
    registry: Any,
    box: int,
    pixel_size_A: float,
    crop: int | None,
    device: torch.device,
) -> Models:
    """Build the configured decoder and (unless ``stage_schedule: direct``) encoder.

    The decoder works at ``box`` and ``pixel_size_A``; the encoder sees images Fourier-cropped
    to ``crop`` (coarse to fine, :func:`.schedule.amortized_crop`; ``None``: the full box) and,
    with ``shifts``, predicts a shift per head when it can (paper v2 Sec. 5). Adam with
    ``lr_decoder`` and ``lr_encoder``. Draws from torch's global RNG (the initial weights).

    Raises:
        PluginError, ConfigError: an unknown component or an invalid component config.
    """
    dec_cls = registry.get("decoder", cfg.decoder)
    dec_conf = validate_component_config(dec_cls, cfg.decoder_config, "decoder_config")
    decoder = dec_cls(dec_conf, box, pixel_size_A).to(device)
    encoder = enc_opt = None
    if cfg.stage_schedule != "direct":
        enc_cls = registry.get("encoder", cfg.encoder)
        enc_data = dict(cfg.encoder_config)
        if cfg.shifts and "estimate_shifts" in enc_cls.Config.model_fields:
            enc_data.setdefault("estimate_shifts", True)
        enc_conf = validate_component_config(enc_cls, enc_data, "encoder_config")
        enc_box = crop or box
        encoder = enc_cls(enc_conf, enc_box, pixel_size_A * box / enc_box).to(device)
        enc_opt = torch.optim.Adam(encoder.parameters(), lr=cfg.lr_encoder, foreach=True)
    # foreach: the same update as the per-tensor loop, bit for bit (tests/core/test_models.py),
    # in a few multi-tensor kernels instead of ~10 per parameter tensor
    dec_opt = torch.optim.Adam(decoder.parameters(), lr=cfg.lr_decoder, foreach=True)
    return Models(decoder, dec_opt, encoder, enc_opt)
