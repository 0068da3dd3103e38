"""``hartley``: the explicit voxel decoder of cryoSPIN, a Hartley-space grid ``H = m * exp(e)``.

The volume is stored as two real voxel arrays, the mantissa ``m`` and the exponent ``e``, on the
odd grid of ``(L+1)^3`` frequencies ``k`` in ``[-L/2, L/2]^3`` (index ``[z, y, x]``, DC at
``L // 2``), and its Hartley transform is ``H(k) = m(k) * exp(e(k))`` (paper Eq. 8). The exponent
absorbs the high dynamic range of the coefficients (orders of magnitude from DC to Nyquist), so
that the mantissa stays of order one and Adam's per-parameter step (about ``lr``) is a *relative*
change of the coefficient at every frequency. With ``L = 128`` the decoder has
``2 * 129^3 = 4.29 M`` parameters, the number in the paper's Table 2.

Hartley convention: ``H(k) = Re F(k) - Im F(k)`` (paper Eq. 7); for the transform of a real map
``F(k) = ((H(k) + H(-k)) - i (H(k) - H(-k))) / 2``.

Forward pass for rotations ``R`` (RELION matrix A; the slice samples the volume at ``k @ R``, see
:mod:`cryospin.core.interfaces`):

1. ``H = m * exp(e)`` on the whole odd grid (cheap next to the slicing, and it keeps the model
   linear in ``H``: the slice interpolates ``H`` itself, not ``m`` and ``e`` separately as the
   paper's code does, so a decoder set from a map reproduces that map's slices exactly);
2. the ``(L+1) x (L+1)`` Hartley central slices ``H(k @ R)`` with the core slicing function
   :func:`cryospin.core.slicing.extract_central_slices`;
3. ``H(-k @ R)`` is the point reflection of each slice, which on the odd grid is the index reversal
   of both axes (no roll, no off-by-one: docs/CONVENTIONS.md item 2);
4. ``F = ((H + H_r) - i (H - H_r)) / 2``, Hermitian by construction;
5. crop to ``L x L`` by dropping the last row and column (frequency ``+L/2``), keeping DC at
   ``L // 2``; optionally zero everything beyond ``mask_radius`` (units of Nyquist).

Initialisation (no map given): ``e(k) = log(init_amplitude * L * exp(-init_decay * r^2))`` with
``r = |k| / (L/2)`` the radius in units of Nyquist, and ``m ~ N(0, init_mantissa_std^2)``. The
amplitude scale ``L`` is that of the unnormalised centred 2D transform of a unit-variance ``L x L``
image (Parseval), which is what the engine compares the slices with; the Gaussian fall-off mimics a
protein's decaying spectrum. Then ``exp(e)`` is about the size of the coefficients being fitted, so
Adam at ``lr = 0.05`` moves each ``H`` by about 5 % of its expected size per step, and ``e`` itself
corrects any scale error by 5 % per step. (The paper's code draws ``m`` and ``e`` both from
``N(0, 1)``, which mixes random scales over ``e^{+-3}``.) A map can be loaded exactly with
:meth:`HartleyDecoder.from_map` / :meth:`HartleyDecoder.load_map`.

Source: paper Sec. 4.3, Eq. 7-8; the paper's code ``decoders.py`` (``Explicit3D``) in
shekshaa/semi-amortized-cryoem for the odd ``(L+1)`` grid and the crop; cryoDRGN ``fft.py`` for the
Hartley sign.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from cryospin.core.fourier import (
    fft3_centered,
    fourier_from_hartley,
    hartley_from_fourier,
    ifft3_centered,
)
from cryospin.core.interfaces import ComponentConfig, Decoder
from cryospin.decoders import _grid


class HartleyConfig(ComponentConfig):
    """Configuration of the ``hartley`` decoder (see the module docstring for the initialisation).

    Attributes:
        init_amplitude: initial ``|H|`` at DC, in units of the box ``L``.
        init_decay: initial exponent fall-off, ``e = log(amp) - init_decay * r^2`` (``r`` in units
            of Nyquist).
        init_mantissa_std: standard deviation of the random initial mantissa ``m``.
        mask_radius: zero the Fourier coefficients beyond this radius, in units of Nyquist
            (1.0: the sphere inscribed in the box); ``None``: no mask.
    """

    init_amplitude: float = Field(default=1.0, gt=0)
    init_decay: float = Field(default=4.0, ge=0)
    init_mantissa_std: float = Field(default=0.1, ge=0)
    mask_radius: float | None = Field(default=None, gt=0)


class HartleyDecoder(Decoder):
    """Explicit Hartley-space voxel grid ``H = m * exp(e)`` on ``(L+1)^3`` (registered ``hartley``).

    Attributes:
        mantissa: parameter ``m``, ``(L+1, L+1, L+1)`` indexed ``[z, y, x]``.
        exponent: parameter ``e``, same shape.
        mask_radius: the Fourier mask radius in units of Nyquist (``None``: no mask); initialised
            from the config and may be changed at run time (e.g. frequency marching).
    """

    Config = HartleyConfig

    def __init__(self, config: HartleyConfig, box: int, pixel_size_A: float) -> None:
        super().__init__(config, box, pixel_size_A)
        if box % 2:
            raise ValueError(f"hartley decoder: the box must be even, got {box}")
        self.config: HartleyConfig = config
        n = _grid.odd_size(box)
        r = _grid.radius_grid(n, box // 2, 3, dtype=torch.float32) / (box / 2)
        log_amp = math.log(config.init_amplitude * box)
        self.exponent = torch.nn.Parameter(log_amp - config.init_decay * r**2)
        self.mantissa = torch.nn.Parameter(torch.randn(n, n, n) * config.init_mantissa_std)
        self.mask_radius: float | None = config.mask_radius

    # ------------------------------------------------------------------------------ volume
    @property
    def grid_size(self) -> int:
        """Samples per axis of the internal odd grid, ``L + 1``."""
        return self.mantissa.shape[-1]

    def hartley_volume(self) -> torch.Tensor:
        """Return ``H = m * exp(e)``, ``(L+1)^3``, DC at ``L // 2`` (with autograd)."""
        return self.mantissa * torch.exp(self.exponent)

    def fourier_volume(self) -> torch.Tensor:
        """Return the centred Fourier volume ``(L, L, L)`` (complex, DC at ``L // 2``), masked."""
        f = fourier_from_hartley(self.hartley_volume(), 3)
        L = self.box
        f = f[:L, :L, :L]
        mask = _grid.radius_mask(L, self.mask_radius, 3, dtype=f.real.dtype, device=f.device)
        return f if mask is None else f * mask

    # ------------------------------------------------------------------------------ decoder
    supports_crop = True
    supports_points = True

    def forward(
        self, rotations: torch.Tensor, size: int | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Centred complex Fourier slices ``(..., L, L)`` (DC at ``L // 2``) for ``(..., 3, 3)``.

        With an even ``size < L`` only the central ``(..., size, size)`` crop is computed: the
        ``(size+1)^2`` Hartley samples at frequencies ``-size/2 .. size/2`` are interpolated,
        turned into Fourier values by the same index reversal, and cropped (DC at
        ``size // 2``): equal to cropping the full slices, at ``(size / L)^2`` of the cost
        (coarse-to-fine training; :meth:`slices` checks ``size``).

        With a boolean ``(c, c)`` ``mask`` (``size`` is then ``c``) only its ``P`` pixels are
        computed and ``(..., P)`` returned, in row-major order (:meth:`masked_slices` checks
        ``c``; :meth:`_masked`).
        """
        if mask is not None:
            return self._masked(rotations, mask)
        from cryospin.core.slicing import extract_central_slices

        L = self.box
        n = L if size is None else size
        batch_shape = rotations.shape[:-2]
        rot = rotations.reshape(-1, 3, 3).to(self.mantissa.dtype)
        h = extract_central_slices(self.hartley_volume(), rot, out_box=n + 1)  # (N, n+1, n+1)
        f = fourier_from_hartley(h, 2)[..., :n, :n]
        mask = _grid.radius_mask(L, self.mask_radius, 2, dtype=h.dtype, device=h.device)
        if mask is not None:
            lo = L // 2 - n // 2
            f = f * mask[lo : lo + n, lo : lo + n]
        return f.reshape(*batch_shape, n, n)

    def _masked(self, rotations: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Fourier values ``(..., P)`` at the pixels of ``mask`` ``(c, c)`` (DC at ``c // 2``).

        The Hartley samples are interpolated at the mask's frequencies and their negatives (a
        disc about DC is its own negative but for the ``-c/2`` row and column), and
        ``F(k) = ((H(k) + H(-k)) - i (H(k) - H(-k))) / 2`` as in :meth:`forward`: equal to
        ``forward(rotations, size=c)[..., mask]``.

        Raises:
            ValueError: ``mask`` is not a boolean ``(c, c)`` array with ``c`` even, at most ``L``.
        """
        from cryospin.core.slicing import extract_points

        self.check_mask(mask)
        freqs, at_k = self._mask_points(mask)
        batch_shape = rotations.shape[:-2]
        rot = rotations.reshape(-1, 3, 3).to(self.mantissa.dtype)
        h = extract_points(self.hartley_volume(), rot, freqs)  # (N, U)
        hm = h.flip(-1)  # H(-k): the point set is its own negative, sorted (see _mask_points)
        f = torch.complex(0.5 * (h + hm), 0.5 * (hm - h))
        if at_k is not None:
            f = f[:, at_k]
        L, c = self.box, mask.shape[-1]
        radius = _grid.radius_mask(L, self.mask_radius, 2, dtype=h.dtype, device=h.device)
        if radius is not None:
            lo = L // 2 - c // 2
            f = f * radius[lo : lo + c, lo : lo + c][mask]
        return f.reshape(*batch_shape, f.shape[-1])

    def _mask_points(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(freqs (U, 2) as (kx, ky), positions of the mask's pixels in freqs or None)``.

        ``freqs`` are the mask's frequencies ``k`` and their negatives, sorted by ``(ky, kx)``:
        the order of a row-major scan, in which negation reverses the order, so ``H(-k)`` is the
        reversal of the samples. When the mask is its own negative (a disc inside its crop)
        ``freqs`` are its pixels in row-major order and no positions are needed (``None``).
        Cached for the last mask (the engine's mask changes once per epoch at most).
        """
        from cryospin.core.slicing import mask_frequencies

        cached = getattr(self, "_points_cache", None)
        if cached is not None and torch.equal(cached[0], mask):  # False for another shape
            return cached[1]
        k = mask_frequencies(mask).flip(-1)  # (P, 2) as (ky, kx): sorted, row-major
        both, index = torch.unique(torch.cat([k, -k]), dim=0, return_inverse=True)
        at_k = None if len(both) == len(k) else index[: len(k)]
        out = (both.flip(-1).to(self.mantissa.dtype), at_k)
        self._points_cache = (mask.clone(), out)
        return out

    def to_map(self) -> torch.Tensor:
        """Return the real-space map ``(L, L, L)`` ``[z, y, x]`` (inverse centred FFT)."""
        return ifft3_centered(self.fourier_volume()).real

    # ------------------------------------------------------------------------------ from a map
    @torch.no_grad()
    def load_map(self, volume: torch.Tensor, *, floor: float = 1e-6) -> None:
        """Set ``m`` and ``e`` so that ``m * exp(e)`` is the Hartley transform of ``volume``.

        ``volume`` is a real ``(L, L, L)`` map ``[z, y, x]``. Its centred transform (DC at
        ``L // 2``) is padded to ``(L+1)^3`` by repeating the ``-L/2`` planes at ``+L/2`` (the same
        coefficients, by periodicity; this keeps the odd grid exactly Hermitian), and
        ``H = Re F - Im F``. The exponent is the log of the radially averaged RMS of ``H`` (shells
        one frequency index thick, clamped below at ``floor`` times the largest shell RMS); the
        mantissa is ``H / exp(e)``, of order one. Afterwards :meth:`to_map` returns ``volume``
        (to rounding) and :meth:`forward` returns its central slices.
        """
        L = self.box
        if tuple(volume.shape) != (L, L, L):
            raise ValueError(f"hartley decoder: map shape {tuple(volume.shape)} != {(L, L, L)}")
        work = torch.float64
        f = fft3_centered(volume.to(device=self.mantissa.device, dtype=work))
        h = hartley_from_fourier(_grid.pad_high_wrap(f, 3))
        n = self.grid_size
        shell = _grid.radius_grid(n, L // 2, 3, dtype=work, device=h.device).round().long()
        n_shells = int(shell.max().item()) + 1
        power = torch.zeros(n_shells, dtype=work, device=h.device).index_add_(
            0, shell.reshape(-1), h.reshape(-1) ** 2
        )
        count = torch.bincount(shell.reshape(-1), minlength=n_shells).to(work)
        rms = (power / count).sqrt()
        rms = rms.clamp_min(max(rms.max().item() * floor, torch.finfo(torch.float32).tiny))
        e = rms.log()[shell]
        self.exponent.copy_(e.to(self.exponent.dtype))
        self.mantissa.copy_((h / torch.exp(e)).to(self.mantissa.dtype))

    @classmethod
    def from_map(
        cls, volume: torch.Tensor, pixel_size_A: float, config: HartleyConfig | None = None
    ) -> HartleyDecoder:
        """Build a decoder whose volume is the real map ``volume`` ``(L, L, L)`` (:meth:`load_map`).

        The parameters take ``volume``'s floating dtype (float32 or float64) and device.
        """
        box = volume.shape[-1]
        dec = cls(config or cls.Config(), box, pixel_size_A)
        dtype = volume.dtype if volume.dtype in (torch.float32, torch.float64) else torch.float32
        dec = dec.to(device=volume.device, dtype=dtype)
        dec.load_map(volume)
        return dec
