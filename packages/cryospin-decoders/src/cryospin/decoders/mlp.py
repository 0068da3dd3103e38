"""``mlp``: an implicit coordinate network in Fourier space, cryoAI's FourierNet (slow baseline).

The network maps a 3D frequency ``p`` (in units of Nyquist, so the inscribed sphere is ``|p| <= 1``)
to a real Hartley coefficient ``H(p) = exp(env(p) + log_scale) * mod(p)``:

* ``mod`` (the modulant) and ``env`` (the log-envelope, the exponential amplitude branch) are two
  MLPs over the coordinates. With ``encoding="siren"`` (cryoAI's choice and the default) each is a
  SIREN, whose first sine layer ``sin(w0 (W p + b))`` is a learned Fourier-feature encoding of
  ``p``; with ``encoding="positional"`` the coordinates pass through a fixed NeRF-style positional
  encoding ``[p, sin(2^j pi p), cos(2^j pi p)]`` followed by ReLU MLPs;
* ``log_scale = log(init_amplitude * L)`` puts the initial amplitude at the size of the unnormalised
  2D transform of a unit-variance image (as in the ``hartley`` decoder).

Predicting the real Hartley coefficient and forming ``F = ((H(p) + H(-p)) - i (H(p) - H(-p))) / 2``
makes every slice Hermitian (the map real) by construction. The network is evaluated once per
slice on the odd ``(L+1) x (L+1)`` grid of rotated frequencies ``k @ R`` (``k`` in
``[-L/2, L/2]^2``, DC at ``L // 2``); ``H(-k @ R)`` is the index reversal of that slice, and the
crop ``[:L, :L]`` restores the ``L`` grid. This costs ``(L+1)^2`` network evaluations per slice
instead of ``2 L^2`` for evaluating at ``k`` and ``-k`` separately. ``to_map`` evaluates the
``(L+1)^3`` grid without gradients.

**Memory bound.** The network runs on at most ``chunk`` coordinates at a time. With gradients
enabled, each chunk is wrapped in :func:`torch.utils.checkpoint.checkpoint` (non-reentrant): its
activations are freed after the forward pass and recomputed during the backward pass, so the peak
memory is that of one chunk plus the inputs and outputs, whatever the batch; the price is one more
forward pass per chunk. Values and gradients equal the unchunked evaluation's up to the order of
floating-point summation. The default ``chunk = 32768`` makes each hidden activation
(``chunk x hidden`` float32 = 32 MB at the default width) large enough for glibc to serve it by
``mmap`` and return it when freed; smaller chunks fragment the heap and the resident memory grows
with the batch anyway (16384: 2.9 GB). Measured peak RSS for a forward and backward pass at box 64
(one CPU thread): 1.15 GB for 64 slices, 1.30 GB for 128 (9.5 GB unchunked for 64).

The defaults reproduce FourierNet's sizes (modulant: 3 hidden sine layers of 256, ``w0 = 40``;
envelope: 2 hidden sine layers of 256, ``w0 = 30``), about 0.33 M parameters, the paper's Table 2
count for the implicit decoder.

Source: cryoAI (compSPI/cryoAI, ``FourierNet`` and ``SIREN``, also copied in the paper's code
``utils/nets.py``); SIREN initialisation from Sitzmann et al. 2020.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch.utils.checkpoint import checkpoint

from cryospin.core.fourier import fourier_from_hartley, ifft3_centered
from cryospin.core.interfaces import ComponentConfig, Decoder
from cryospin.decoders import _grid


class MLPConfig(ComponentConfig):
    """Configuration of the ``mlp`` decoder (FourierNet).

    Attributes:
        encoding: ``siren``: sine MLPs (cryoAI); ``positional``: fixed positional encoding and
            ReLU MLPs.
        modulant_layers: hidden layers of the modulant network.
        envelope_layers: hidden layers of the envelope (log-amplitude) network.
        hidden: hidden width of both networks.
        modulant_w0: SIREN frequency factor of the modulant (``siren`` only).
        envelope_w0: SIREN frequency factor of the envelope (``siren`` only).
        n_frequencies: octaves of the positional encoding (``positional`` only).
        init_amplitude: amplitude scale, in units of the box ``L``.
        chunk: coordinates per network call, in slices and in :meth:`MLPDecoder.to_map` (bounds
            the memory; see the module doc).
        mask_radius: zero the Fourier coefficients beyond this radius, in units of Nyquist;
            ``None``: no mask.
    """

    encoding: Literal["siren", "positional"] = "siren"
    modulant_layers: int = Field(default=3, ge=1)
    envelope_layers: int = Field(default=2, ge=1)
    hidden: int = Field(default=256, ge=1)
    modulant_w0: float = Field(default=40.0, gt=0)
    envelope_w0: float = Field(default=30.0, gt=0)
    n_frequencies: int = Field(default=8, ge=1)
    init_amplitude: float = Field(default=1.0, gt=0)
    chunk: int = Field(default=32768, ge=1)
    mask_radius: float | None = Field(default=None, gt=0)


class _Sine(torch.nn.Module):
    def __init__(self, w0: float) -> None:
        super().__init__()
        self.w0 = w0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * x)


def _siren(in_features: int, hidden: int, n_hidden: int, w0: float) -> torch.nn.Sequential:
    """SIREN: first sine layer, ``n_hidden`` sine layers, a final linear layer to one output.

    Initialisation (Sitzmann et al.): first layer ``U(-1/in, 1/in)``, later layers
    ``U(-sqrt(6/in)/w0, sqrt(6/in)/w0)``; biases keep PyTorch's default.
    """
    layers: list[torch.nn.Module] = []
    first = torch.nn.Linear(in_features, hidden)
    with torch.no_grad():
        first.weight.uniform_(-1 / in_features, 1 / in_features)
    layers += [first, _Sine(w0)]
    for _ in range(n_hidden):
        lin = torch.nn.Linear(hidden, hidden)
        bound = math.sqrt(6 / hidden) / w0
        with torch.no_grad():
            lin.weight.uniform_(-bound, bound)
        layers += [lin, _Sine(w0)]
    last = torch.nn.Linear(hidden, 1)
    bound = math.sqrt(6 / hidden) / w0
    with torch.no_grad():
        last.weight.uniform_(-bound, bound)
    layers.append(last)
    return torch.nn.Sequential(*layers)


def _relu_mlp(in_features: int, hidden: int, n_hidden: int) -> torch.nn.Sequential:
    """ReLU MLP: ``in -> hidden`` then ``n_hidden`` hidden layers, a linear layer to one output."""
    layers: list[torch.nn.Module] = [torch.nn.Linear(in_features, hidden), torch.nn.ReLU()]
    for _ in range(n_hidden):
        layers += [torch.nn.Linear(hidden, hidden), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(hidden, 1))
    return torch.nn.Sequential(*layers)


class PositionalEncoding(torch.nn.Module):
    """``p -> [p, sin(2^j pi p), cos(2^j pi p)]``, ``j = 0 .. n - 1`` (NeRF): ``3 (1 + 2n)`` out."""

    scales: torch.Tensor

    def __init__(self, n_frequencies: int) -> None:
        super().__init__()
        self.register_buffer(
            "scales", (2.0 ** torch.arange(n_frequencies)) * math.pi, persistent=False
        )

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        """Encode coordinates ``(..., 3)`` -> ``(..., 3 (1 + 2n))``."""
        x = p[..., None] * self.scales.to(p.dtype)  # (..., 3, n)
        return torch.cat([p, torch.sin(x).flatten(-2), torch.cos(x).flatten(-2)], dim=-1)


class MLPDecoder(Decoder):
    """Implicit Fourier-space coordinate network (FourierNet), registered as ``mlp``.

    Attributes:
        modulant: the network ``mod(p)``.
        envelope: the network ``env(p)``; the amplitude is ``exp(env + log_scale)``.
        mask_radius: Fourier mask radius in units of Nyquist (``None``: no mask); mutable.
    """

    Config = MLPConfig

    def __init__(self, config: MLPConfig, box: int, pixel_size_A: float) -> None:
        super().__init__(config, box, pixel_size_A)
        if box % 2:
            raise ValueError(f"mlp decoder: the box must be even, got {box}")
        self.config: MLPConfig = config
        self.log_scale = math.log(config.init_amplitude * box)
        self.encoding: torch.nn.Module
        if config.encoding == "siren":
            self.encoding = torch.nn.Identity()
            self.modulant = _siren(3, config.hidden, config.modulant_layers, config.modulant_w0)
            self.envelope = _siren(3, config.hidden, config.envelope_layers, config.envelope_w0)
        else:
            self.encoding = PositionalEncoding(config.n_frequencies)
            n_in = 3 * (1 + 2 * config.n_frequencies)
            self.modulant = _relu_mlp(n_in, config.hidden, config.modulant_layers)
            self.envelope = _relu_mlp(n_in, config.hidden, config.envelope_layers)
        self.mask_radius: float | None = config.mask_radius

    def hartley(self, coords: torch.Tensor) -> torch.Tensor:
        """Hartley coefficients ``H(p)`` at coordinates ``(..., 3)`` ``(x, y, z)``, Nyquist = 1."""
        x = self.encoding(coords)
        env = self.envelope(x)[..., 0]
        mod = self.modulant(x)[..., 0]
        return torch.exp(env + self.log_scale) * mod

    def hartley_chunked(self, coords: torch.Tensor) -> torch.Tensor:
        """:meth:`hartley` on ``(..., 3)`` coordinates, ``config.chunk`` at a time (module doc).

        With gradients enabled and more than one chunk, each chunk is checkpointed: only its
        inputs and output are kept for the backward pass. Returns ``(...)``.
        """
        flat = coords.reshape(-1, 3)
        parts = flat.split(self.config.chunk)
        if len(parts) > 1 and torch.is_grad_enabled():
            out = [checkpoint(self.hartley, c, use_reentrant=False) for c in parts]
        else:
            out = [self.hartley(c) for c in parts]
        return torch.cat(out).reshape(coords.shape[:-1])

    def _axis(self) -> torch.Tensor:
        """Frequencies ``k / (L/2)`` of the odd grid, ``(L+1,)``, in the parameters' dtype."""
        ref = self._ref()
        n = _grid.odd_size(self.box)
        k = _grid.centred_freqs(n, self.box // 2, dtype=torch.float64, device=ref.device)
        return (k / (self.box / 2)).to(ref.dtype)

    def _ref(self) -> torch.Tensor:
        """Return a parameter; its dtype and device are the module's."""
        return next(self.parameters())

    def _mask(self, ndim: int, ref: torch.Tensor) -> torch.Tensor | None:
        return _grid.radius_mask(
            self.box, self.mask_radius, ndim, dtype=ref.dtype, device=ref.device
        )

    def forward(self, rotations: torch.Tensor) -> torch.Tensor:
        """Centred complex Fourier slices ``(..., L, L)`` (DC at ``L // 2``) for ``(..., 3, 3)``."""
        L = self.box
        batch_shape = rotations.shape[:-2]
        k = self._axis()
        ky, kx = torch.meshgrid(k, k, indexing="ij")
        plane = torch.stack([kx, ky, torch.zeros_like(kx)], dim=-1)  # (L+1, L+1, 3): (kx, ky, 0)
        rot = rotations.reshape(-1, 3, 3).to(plane.dtype)
        coords = torch.einsum("yxj,njk->nyxk", plane, rot)  # k @ R, (N, L+1, L+1, 3)
        h = self.hartley_chunked(coords)
        f = fourier_from_hartley(h, 2)[..., :L, :L]
        mask = self._mask(2, h)
        if mask is not None:
            f = f * mask
        return f.reshape(*batch_shape, L, L)

    @torch.no_grad()
    def to_map(self) -> torch.Tensor:
        """Return the real-space map ``(L, L, L)`` ``[z, y, x]`` (network on the odd grid)."""
        L = self.box
        k = self._axis()
        kz, ky, kx = torch.meshgrid(k, k, k, indexing="ij")
        h = self.hartley_chunked(torch.stack([kx, ky, kz], dim=-1))
        f = fourier_from_hartley(h, 3)[:L, :L, :L]
        mask = self._mask(3, h)
        if mask is not None:
            f = f * mask
        return ifft3_centered(f).real
