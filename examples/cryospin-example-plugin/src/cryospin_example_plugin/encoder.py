"""``example-tiny``: average-pool the image, one linear layer per candidate, S2S2 to rotations."""

from __future__ import annotations

import torch
from pydantic import Field

from cryospin.core.interfaces import ComponentConfig, Encoder, PoseCandidates
from cryospin.core.so3 import s2s2_to_rotation


class TinyEncoder(Encoder):
    """Images ``(B, L, L)`` -> ``n_candidates`` poses from a linear map of a pooled image."""

    class Config(ComponentConfig):
        """Options of ``example-tiny`` (unknown fields are rejected by ``ComponentConfig``)."""

        n_candidates: int = Field(2, ge=1)
        """Number of candidate poses per image."""
        pooled: int = Field(8, ge=1)
        """Side of the average-pooled image fed to the linear layer."""

    def __init__(self, config: Config, box: int, pixel_size_A: float) -> None:
        super().__init__(config, box, pixel_size_A)
        self.config: TinyEncoder.Config = config
        self.pool = torch.nn.AdaptiveAvgPool2d(config.pooled)
        self.linear = torch.nn.Linear(config.pooled**2, 6 * config.n_candidates)

    @property
    def n_candidates(self) -> int:
        """``config.n_candidates``."""
        return self.config.n_candidates

    def forward(self, images: torch.Tensor) -> PoseCandidates:
        """Propose poses for real-space images ``(B, L, L)`` (standardised per image here)."""
        x = images.to(self.linear.weight.dtype)
        x = (x - x.mean(dim=(-2, -1), keepdim=True)) / (x.std(dim=(-2, -1), keepdim=True) + 1e-6)
        raw = self.linear(self.pool(x[:, None]).flatten(1))
        return PoseCandidates(rotations=s2s2_to_rotation(raw.reshape(-1, self.n_candidates, 6)))
