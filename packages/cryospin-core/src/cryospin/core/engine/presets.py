"""Named sets of run settings (``preset: NAME`` in a config, ``--preset NAME`` on the command line).

``cryospin run``'s defaults are not the paper's: they are the work schedule and coarse-to-fine
mask of :mod:`cryospin.core.engine.schedule`, batch 32 and the learning rates of the paper's code
(README "Defaults"), with a CPU-sized encoder. The presets restore the paper's text:

* ``paper`` (Sec. 5 and Supp. A-B, synthetic data): the VGG16-style encoder of the paper
  (channels 64-128-256-256-256, 2-2-3-2-2 convolutions, heads 512-256; 8.7 M parameters at box
  128 with M = 7 heads), batch 64, 20 epochs with the switch after 7, encoder lr 1e-4, decoder
  lr 0.05 then 0.02, the full box and no frequency marching;
* ``paper-real`` (Sec. 5, EMPIAR-10028): ``paper`` with M = 15 heads that also predict in-plane
  shifts, 30 epochs with the switch after 15, shifts estimated.

A preset is a base: every field given next to it (config file, flags, ``--set``) overrides the
preset's value; ``encoder_config`` and ``decoder_config`` are merged key by key.
"""

from __future__ import annotations

from typing import Any

from cryospin.core.errors import ConfigError

_PAPER_ENCODER = {
    "channels": [64, 128, 256, 256, 256],
    "convs_per_block": [2, 2, 3, 2, 2],
    "head_hidden": [512, 256],
    "n_heads": 7,
}
_PAPER = {
    "encoder": "multihead",
    "decoder": "hartley",
    "encoder_config": _PAPER_ENCODER,
    "batch_size": 64,
    "epochs": 20,
    "switch_epoch": 7,
    "lr_encoder": 1e-4,
    "lr_decoder": 0.05,
    "lr_decoder_direct": 0.02,
    "amortized_box": None,
    "coarse_to_fine": False,
}

PRESETS: dict[str, dict[str, Any]] = {
    "paper": _PAPER,
    "paper-real": {
        **_PAPER,
        "encoder_config": {**_PAPER_ENCODER, "n_heads": 15, "estimate_shifts": True},
        "epochs": 30,
        "switch_epoch": 15,
        "shifts": True,
    },
}


def apply_preset(data: dict[str, Any]) -> dict[str, Any]:
    """Return ``data`` on top of the preset it names (``data["preset"]``), or ``data`` itself.

    Raises:
        ConfigError: the preset name is unknown (the message lists the known ones).
    """
    name = data.get("preset")
    if name is None:
        return data
    if name not in PRESETS:
        raise ConfigError(
            f"invalid config field 'preset': unknown preset {name!r} (known: {', '.join(PRESETS)})"
        )
    merged = {**PRESETS[name], **data}
    for key in ("encoder_config", "decoder_config"):
        if isinstance(data.get(key), dict) and key in PRESETS[name]:
            merged[key] = {**PRESETS[name][key], **data[key]}
    return merged
