"""Building blocks shared by the encoders: Gaussian pyramid, VGG-style CNN, FC heads, 180° rotation.

Source: paper Sec. 4.1 (VGG16-style shared backbone, FC pose heads, S2S2 output) and the paper's
public code (shekshaa/semi-amortized-cryoem ``encoders.py``, itself from cryoAI
``src/ml_modules.py``): a fixed Gaussian pyramid (11x11 kernels, variance 0.01 px^2 scaled by 10
per octave, 4 octaves -> 5 channels), per-image per-channel standardisation, VGG blocks of 3x3
convolutions with channels ``[64, 128, 256, 256, 256]`` (2, 2, 3, 2, 2 convolutions per block;
max-pooling after the first three blocks, average-pooling after the last two, then one more
max-pool), batch norm, and FC heads ``[512, 256]``. Written from the description, not copied.
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator
from torch import nn

from cryospin.core.errors import ConfigError
from cryospin.core.interfaces import ComponentConfig

#: Paper-sized backbone values (``CNNConfig`` defaults are CPU-sized).
PAPER_CHANNELS = [64, 128, 256, 256, 256]
PAPER_CONVS_PER_BLOCK = [2, 2, 3, 2, 2]
PAPER_HEAD_HIDDEN = [512, 256]


class CNNConfig(ComponentConfig):
    """Backbone and head options shared by the encoders (defaults are CPU-sized).

    Paper values: ``channels=[64, 128, 256, 256, 256]``, ``convs_per_block=[2, 2, 3, 2, 2]``,
    ``head_hidden=[512, 256]``, ``batch_norm=True``, ``gaussian_pyramid=True``,
    ``pyramid_octaves=4``.
    """

    channels: list[int] = Field(default_factory=lambda: [8, 16, 32, 32, 32], min_length=1)
    """Output channels of each VGG block; each block halves the image side."""
    convs_per_block: int | list[int] = 1
    """3x3 convolutions per block: one number for all blocks, or one per block."""
    head_hidden: list[int] = Field(default_factory=lambda: [64, 32])
    """Hidden widths of each fully connected pose head."""
    batch_norm: bool = True
    """Batch norm after every convolution and hidden FC layer (as the paper's code)."""
    gaussian_pyramid: bool = True
    """Fixed Gaussian pyramid in front of the CNN (paper's code and cryoAI)."""
    pyramid_octaves: int = Field(4, ge=0)
    """Number of octaves; the pyramid has ``pyramid_octaves + 1`` channels."""
    estimate_shifts: bool = False
    """Also predict an in-plane shift ``(x, y)`` in Å per candidate."""
    max_shift_A: float | None = Field(None, gt=0)
    """Shifts are ``max_shift_A * tanh(raw)``; ``None`` means one eighth of the box in Å."""

    @field_validator("channels", "head_hidden")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(c < 1 for c in v):
            raise ValueError(f"every width must be >= 1, got {v}")
        return v

    @field_validator("convs_per_block")
    @classmethod
    def _convs(cls, v: int | list[int]) -> int | list[int]:
        values = [v] if isinstance(v, int) else v
        if not values or any(c < 1 for c in values):
            raise ValueError(f"convs_per_block must be >= 1, got {v}")
        return v

    def convs_list(self) -> list[int]:
        """Convolutions per block as a list of ``len(channels)`` numbers."""
        if isinstance(self.convs_per_block, int):
            return [self.convs_per_block] * len(self.channels)
        if len(self.convs_per_block) != len(self.channels):
            raise ConfigError(
                f"convs_per_block has {len(self.convs_per_block)} entries but channels has "
                f"{len(self.channels)}; give one number or one per block"
            )
        return list(self.convs_per_block)


class GaussianPyramid(nn.Module):
    """Fixed (not trained) Gaussian filters: ``(B, 1, L, L)`` -> ``(B, octaves + 1, L, L)``.

    Kernel ``i`` has variance ``variance * scaling**i`` px^2, is truncated to ``kernel_size``
    pixels and normalised to unit sum; borders are reflected. A truncated, normalised 2D Gaussian
    is the outer product of two normalised 1D ones, so it is applied separably (a column pass,
    then a row pass: ``2 k`` instead of ``k^2`` multiplies per pixel). The kernels are a buffer.
    """

    kernels_1d: torch.Tensor  # (octaves + 1, kernel_size), float32; registered as a buffer

    def __init__(
        self, octaves: int = 4, kernel_size: int = 11, variance: float = 0.01, scaling: float = 10.0
    ) -> None:
        super().__init__()
        half = kernel_size // 2
        coords = torch.arange(-half, half + 1, dtype=torch.float64)
        k1d = torch.stack(
            [torch.exp(-(coords**2) / (2 * variance * scaling**i)) for i in range(octaves + 1)]
        )
        k1d = k1d / k1d.sum(dim=1, keepdim=True)
        self.register_buffer("kernels_1d", k1d.to(torch.float32))
        self.pad = half

    def kernels_2d(self) -> torch.Tensor:
        """Return the equivalent 2D kernels ``(octaves + 1, k, k)``."""
        return self.kernels_1d[:, :, None] * self.kernels_1d[:, None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Filter ``(B, 1, L, L)`` images with every kernel."""
        k = self.kernels_1d.to(x.dtype)
        n = k.shape[0]
        x = nn.functional.pad(x, (self.pad,) * 4, mode="reflect")
        x = nn.functional.conv2d(x, k[:, None, :, None])  # along y
        return nn.functional.conv2d(x, k[:, None, None, :], groups=n)  # along x


def standardise(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-image, per-channel zero mean and unit standard deviation of ``(B, C, H, W)``."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True)
    return (x - mean) / (std + eps)


class VGGBackbone(nn.Module):
    """Pyramid (optional), standardisation, VGG blocks; ``(B, L, L)`` -> features ``(B, F)``.

    Block ``i`` is ``convs[i]`` 3x3 convolutions (+ batch norm) + ReLU, then 2x2 pooling: max for
    the first three blocks, average after (as the paper's code); a final 2x2 max-pool when the
    remaining side is at least 2. ``out_features`` is ``F``.
    """

    def __init__(self, config: CNNConfig, box: int) -> None:
        super().__init__()
        n_blocks = len(config.channels)
        if box // 2**n_blocks < 1:
            raise ConfigError(
                f"box {box} is too small for {n_blocks} pooling blocks (needs >= {2**n_blocks}); "
                "use fewer channels entries"
            )
        self.pyramid = GaussianPyramid(config.pyramid_octaves) if config.gaussian_pyramid else None
        in_ch = config.pyramid_octaves + 1 if config.gaussian_pyramid else 1
        layers: list[nn.Module] = []
        side = box
        blocks = zip(config.channels, config.convs_list(), strict=True)
        for i, (out_ch, n_conv) in enumerate(blocks):
            for _ in range(n_conv):
                layers.append(nn.Conv2d(in_ch, out_ch, 3, padding=1))
                if config.batch_norm:
                    layers.append(nn.BatchNorm2d(out_ch))
                layers.append(nn.ReLU())
                in_ch = out_ch
            layers.append(nn.MaxPool2d(2) if i < 3 else nn.AvgPool2d(2))
            side //= 2
        if side >= 2:
            layers.append(nn.MaxPool2d(2))
            side //= 2
        self.net = nn.Sequential(*layers)
        self.out_features = in_ch * side * side

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features ``(B, F)`` of real-space images ``(B, L, L)``."""
        x = images[:, None]
        if self.pyramid is not None:
            x = self.pyramid(x)
        return self.net(standardise(x)).flatten(1)


class BatchNorm1dAnyBatch(nn.BatchNorm1d):
    """``BatchNorm1d`` that accepts a training batch of one (the engine's last batch may be).

    With one sample the batch variance is undefined; such a batch is normalised with the running
    statistics (as in eval mode) and does not update them.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``(B, C)``; batch statistics when training with ``B > 1``."""
        if self.training and x.shape[0] == 1:
            return nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


def fc_block(in_features: int, hidden: list[int], out_features: int, batch_norm: bool) -> nn.Module:
    """Linear (+ batch norm) + ReLU per hidden width, then a final linear layer."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers.append(nn.Linear(in_features, width))
        if batch_norm:
            layers.append(BatchNorm1dAnyBatch(width))
        layers.append(nn.ReLU())
        in_features = width
    layers.append(nn.Linear(in_features, out_features))
    return nn.Sequential(*layers)


def rotate_image_180(images: torch.Tensor) -> torch.Tensor:
    """Rotate real-space images ``(..., L, L)`` by 180° in-plane about the centre ``(L//2, L//2)``.

    Pixel ``[i, j]`` of the result is pixel ``[(2c - i) % L, (2c - j) % L]`` of the input with
    ``c = L // 2``: the point reflection through the image centre of the conventions (RELION's
    ``(int)(L/2)``, the DC index after ``fftshift``). For odd ``L`` this is ``flip``; for even ``L``
    it is ``flip`` followed by a roll of one pixel, and row/column 0 (whose mirror falls off the
    grid) maps onto itself. Exactly an involution. (``torch.flip`` alone rotates about
    ``(L - 1) / 2``, half a pixel off for even ``L``.)
    """
    size = images.shape[-1]
    c = size // 2
    idx = (2 * c - torch.arange(size, device=images.device)) % size
    return images[..., idx[:, None], idx[None, :]]


def rz180_left(rotations: torch.Tensor) -> torch.Tensor:
    """``Rz(pi) @ R`` for ``(..., 3, 3)``, exactly: negate the first two rows.

    ``Rz(pi) = diag(-1, -1, 1)`` is ``cryospin.core.so3.inplane_rotation(180)`` without the
    rounding of ``sin(pi)``.
    """
    sign = torch.tensor([-1.0, -1.0, 1.0], dtype=rotations.dtype, device=rotations.device)
    return rotations * sign[:, None]
