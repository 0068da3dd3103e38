"""The cryoSPIN multi-head encoder: a shared VGG-style backbone and ``M`` pose heads.

Source: paper Sec. 4.1, Eq. (4): ``phi_ij = (R_ij, t_ij) = H_theta_j(VGG(I_i))``, ``1 <= j <= M``;
each head is a fully connected block with its own randomly initialised weights, ending in a 6D
S2S2 vector (Supp. A, :func:`cryospin.core.so3.s2s2_to_rotation`) and, for real data (Sec. 5,
"augmenting each head to return translation parameters"), a 2D shift. Trained with the
winner-takes-all loss ``L_i = min_j L_ij`` (Eq. 5), which the engine computes.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from cryospin.core.interfaces import Encoder, PoseCandidates
from cryospin.core.so3 import s2s2_to_rotation
from cryospin.encoders.backbone import CNNConfig, VGGBackbone, fc_block


class MultiHeadEncoder(Encoder):
    """Images ``(B, L, L)`` -> ``M`` candidate poses per image from ``M`` heads on one backbone.

    Input: real-space images, any scale: the encoder standardises each image (and each pyramid
    channel) itself, so the engine need not normalise. Output rotations follow the RELION ``A``
    convention of :mod:`cryospin.core.interfaces`; shifts ``(x, y)`` are in Å, bounded by
    ``max_shift_A`` through ``tanh``, or ``None`` unless ``estimate_shifts``.

    The defaults are CPU-sized. The paper's configuration::

        MultiHeadEncoder.Config(channels=[64, 128, 256, 256, 256],
                                convs_per_block=[2, 2, 3, 2, 2], head_hidden=[512, 256],
                                n_heads=7)   # 7 synthetic; 15 (and estimate_shifts=True) real
    """

    class Config(CNNConfig):
        """Options of the ``multihead`` encoder (see :class:`CNNConfig` for the backbone)."""

        n_heads: int = Field(7, ge=1)
        """Number ``M`` of pose heads (paper: 7 synthetic, 15 real data)."""

    def __init__(self, config: Config, box: int, pixel_size_A: float) -> None:
        super().__init__(config, box, pixel_size_A)
        self.config: MultiHeadEncoder.Config = config
        self.backbone = VGGBackbone(config, box)
        out = 8 if config.estimate_shifts else 6
        self.heads = nn.ModuleList(
            fc_block(self.backbone.out_features, config.head_hidden, out, config.batch_norm)
            for _ in range(config.n_heads)
        )
        self.max_shift_A = (
            config.max_shift_A if config.max_shift_A is not None else box * pixel_size_A / 8
        )

    @property
    def n_candidates(self) -> int:
        """``n_heads``."""
        return self.config.n_heads

    def forward(self, images: torch.Tensor) -> PoseCandidates:
        """Propose ``n_heads`` poses for each real-space image ``(B, L, L)``."""
        dtype = next(self.parameters()).dtype
        features = self.backbone(images.to(dtype))
        raw = torch.stack([head(features) for head in self.heads], dim=1)  # (B, M, 6 or 8)
        rotations = s2s2_to_rotation(raw[..., :6])
        shifts = None
        if self.config.estimate_shifts:
            shifts = self.max_shift_A * torch.tanh(raw[..., 6:])
        return PoseCandidates(rotations=rotations, shifts_A=shifts)
