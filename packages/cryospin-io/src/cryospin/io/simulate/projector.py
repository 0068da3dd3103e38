"""Exact projectors of the simulator's ground truth (atoms or a map), and its ground-truth map.

Both sources produce, for a pose ``R`` (RELION ``A``: map -> image coordinates), the spectrum of the
projection along the image ``z`` axis on the DFT grid of a box padded to ``P = pad * L`` pixels, in
numpy rfft layout ``(P, P // 2 + 1)`` (``[ky, kx]``, ky in fft order). No voxel grid is ever
interpolated: the spectrum is the continuous Fourier transform of the atoms (or of the
band-limited map) evaluated at the DFT frequencies by a non-uniform FFT (FINUFFT,
:mod:`cryospin.io.simulate.nufft`), so the simulator shares no interpolation error with a
reconstructor's trilinear slicing (``docs/CONVENTIONS.md`` item 6).

Units: the ground-truth map is the electrostatic potential in volts sampled at voxel centres
(band-limited to the voxel grid); an image is the sum of that map along the beam (volts, the value a
Fourier-slice decoder of ``gt_map`` renders): ``irfft2(spectrum)`` then crop, and for the identity
pose it equals ``gt_map.sum(axis=0)`` up to periodic wrap-around.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cryospin.io.simulate import nufft
from cryospin.io.simulate.atoms import (
    POTENTIAL_CONSTANT_V_A2,
    AtomModel,
    bundled_model_path,
    load_atom_model,
)
from cryospin.io.simulate.config import PRESETS, SimulationConfig


def rfft_frequencies(n: int, pixel_size_A: float) -> tuple[np.ndarray, np.ndarray]:
    """``(ky (n, 1), kx (1, n//2+1))`` in 1/Å for an ``n``-pixel rfft layout."""
    ky = np.fft.fftfreq(n, d=pixel_size_A)[:, None]
    kx = np.fft.rfftfreq(n, d=pixel_size_A)[None, :]
    return ky, kx


def drop_nyquist(spec: np.ndarray) -> np.ndarray:
    """Zero the Nyquist planes of an rfft-layout spectrum (every axis; even sizes), in place.

    The DFT of an even grid holds the Nyquist frequency on one side only, so a rotation by 90
    degrees does not map it onto itself; removing it makes images, maps and their rotations
    consistent (the band kept is ``|j| < n / 2`` on every axis).
    """
    for ax in range(spec.ndim - 1):
        n = spec.shape[ax]
        if n % 2 == 0:
            index = [slice(None)] * spec.ndim
            index[ax] = n // 2
            spec[tuple(index)] = 0
    last = spec.shape[-1]
    index = [slice(None)] * spec.ndim
    index[-1] = last - 1
    spec[tuple(index)] = 0  # rfft axis of an even length n: the last column is Nyquist
    return spec


def crop_indices(box: int, padded: int) -> np.ndarray:
    """Return the indices of a centred ``box`` window (centre ``box // 2``) in fft order."""
    return (np.arange(box) - box // 2) % padded


class AtomProjector:
    """Projections and ground-truth map of an :class:`AtomModel` at one pixel size and box.

    Args:
        model: the atoms (centred on the centre of mass, which lands on pixel ``L // 2``).
        box: image side ``L`` (even).
        pixel_size_A: pixel size in Å.
        pad: padding factor of the image grid on which spectra are computed.
        bfactor_A2: global B-factor applied to every atom (``exp(-B q^2 / 4)``).
        eps: relative tolerance of the NUFFTs (images and ground-truth map).
    """

    kind = "atoms"

    def __init__(
        self,
        model: AtomModel,
        box: int,
        pixel_size_A: float,
        pad: int = 2,
        bfactor_A2: float = 0.0,
        eps: float = nufft.EPS,
    ) -> None:
        self.model = model
        self.box = int(box)
        self.pixel_size_A = float(pixel_size_A)
        self.pad = int(pad)
        self.padded = self.pad * self.box
        self.bfactor_A2 = float(bfactor_A2)
        self.eps = float(eps)
        ky, kx = rfft_frequencies(self.padded, self.pixel_size_A)
        self.ky, self.kx = ky, kx
        q = np.sqrt(ky**2 + kx**2)
        scale = POTENTIAL_CONSTANT_V_A2 / self.pixel_size_A**3
        self._transfer = scale * model.form_factor(q, self.bfactor_A2)

    def spectrum(self, rotation: np.ndarray) -> np.ndarray:
        """Projection spectrum ``(P, P // 2 + 1)`` for pose ``rotation`` (3x3 RELION ``A``)."""
        rotated = self.model.xyz_A @ np.asarray(rotation, dtype=np.float64).T
        coords = rotated[:, [1, 0]] / self.pixel_size_A  # (y, x) in pixels
        c = nufft.type1_rfft(
            coords,
            self.model.weight,
            self.model.species,
            len(self.model.elements),
            self.padded,
            eps=self.eps,
        )
        spec = np.einsum("syx,syx->yx", self._transfer, c)
        return drop_nyquist(spec)

    def ground_truth_map(self) -> np.ndarray:
        """Compute the potential (V) on the ``L^3`` grid ``[z, y, x]``, centre of mass at L // 2."""
        n = self.box
        coords = self.model.xyz_A[:, [2, 1, 0]] / self.pixel_size_A
        kz = np.fft.fftfreq(n, d=self.pixel_size_A)[:, None, None]
        ky = np.fft.fftfreq(n, d=self.pixel_size_A)[None, :, None]
        kx = np.fft.rfftfreq(n, d=self.pixel_size_A)[None, None, :]
        q = np.sqrt(kz**2 + ky**2 + kx**2)
        ff = self.model.form_factor(q, self.bfactor_A2)
        spec = np.zeros(q.shape, dtype=np.complex128)
        for s in range(len(self.model.elements)):  # one species at a time bounds the memory
            sel = self.model.species == s
            c = nufft.type1_rfft(
                coords[sel],
                self.model.weight[sel],
                np.zeros(sel.sum(), np.int64),
                1,
                n,
                eps=self.eps,
            )
            spec += ff[s] * c[0]
        spec *= POTENTIAL_CONSTANT_V_A2 / self.pixel_size_A**3
        spec = drop_nyquist(spec)
        vol = np.fft.irfftn(spec, s=(n, n, n), axes=(0, 1, 2))
        idx = crop_indices(n, n)
        return vol[np.ix_(idx, idx, idx)]


class MapProjector:
    """Projections of a band-limited map (e.g. a resampled MRC), by a type-2 NUFFT.

    The map ``(L, L, L)`` ``[z, y, x]`` (voxel ``L // 2`` at the origin) is read as the band-limited
    function whose samples it holds; a projection spectrum is its Fourier transform at the rotated
    frequencies ``R^T k`` of the padded image grid, zero beyond the Nyquist radius ``1 / (2 apix)``.
    """

    kind = "map"

    def __init__(
        self, volume: np.ndarray, pixel_size_A: float, pad: int = 2, eps: float = nufft.EPS
    ) -> None:
        self.volume = np.asarray(volume, dtype=np.float64)
        self.box = self.volume.shape[0]
        self.pixel_size_A = float(pixel_size_A)
        self.pad = int(pad)
        self.padded = self.pad * self.box
        self._transform = nufft.Type2(self.volume, eps=eps)
        ky, kx = rfft_frequencies(self.padded, self.pixel_size_A)
        self.ky, self.kx = ky, kx
        kyy, kxx = np.broadcast_arrays(ky, kx)
        self._k = np.stack([kxx.ravel(), kyy.ravel(), np.zeros(kxx.size)], axis=1)  # (x, y, z)
        self._inside = (kxx**2 + kyy**2).ravel() <= (0.5 / self.pixel_size_A) ** 2

    def spectrum(self, rotation: np.ndarray) -> np.ndarray:
        """Projection spectrum ``(P, P // 2 + 1)`` (image = ``irfft2`` then crop) for ``A``."""
        k3 = self._k[self._inside] @ np.asarray(rotation, dtype=np.float64)  # rows: R^T k
        q = k3[:, [2, 1, 0]] * (self.box * self.pixel_size_A)  # mode units, (z, y, x)
        out = np.zeros(len(self._k), dtype=np.complex128)
        out[self._inside] = self._transform(q)
        return drop_nyquist(out.reshape(self.ky.shape[0], self.kx.shape[1]))

    def ground_truth_map(self) -> np.ndarray:
        """Return a copy of the map."""
        return self.volume.copy()


def resample_map(
    volume: np.ndarray, voxel_A: float, box: int, pixel_size_A: float, eps: float = nufft.EPS
) -> np.ndarray:
    """Resample a cubic map to ``box`` voxels of ``pixel_size_A`` (Fourier-exact, by type-2 NUFFT).

    The map's centre voxel ``D // 2`` stays at the centre ``box // 2``. Frequencies beyond the lower
    of the two Nyquist limits are cut (a cube, both grids being axis-aligned). Content outside the
    new box wraps
    around (choose a box that holds the molecule). Values keep their units (density per voxel).
    """
    volume = np.asarray(volume, dtype=np.float64)
    d = volume.shape[0]
    if d == box and abs(voxel_A - pixel_size_A) <= 1e-9 * pixel_size_A:
        return volume.copy()
    kz = np.fft.fftfreq(box, d=pixel_size_A)
    ky = np.fft.fftfreq(box, d=pixel_size_A)
    kx = np.fft.rfftfreq(box, d=pixel_size_A)
    zz, yy, xx = np.meshgrid(kz, ky, kx, indexing="ij")
    kmax = 0.5 / max(voxel_A, pixel_size_A)
    inside = (np.abs(zz) < kmax) & (np.abs(yy) < kmax) & (np.abs(xx) < kmax)
    q = np.stack([zz[inside], yy[inside], xx[inside]], axis=1) * (d * voxel_A)
    spec = np.zeros(zz.shape, dtype=np.complex128)
    spec[inside] = nufft.Type2(volume, eps=eps)(q)
    spec = drop_nyquist(spec)
    # continuous FT = voxel_A^3 * S; samples on the new grid = irfftn(FT) / pixel_size_A^3
    vol = np.fft.irfftn(spec, s=(box, box, box), axes=(0, 1, 2))
    vol *= (voxel_A / pixel_size_A) ** 3
    idx = crop_indices(box, box)
    return vol[np.ix_(idx, idx, idx)]


def build_projector(
    config: SimulationConfig,
) -> tuple[AtomProjector | MapProjector, float, dict[str, Any]]:
    """Build the projector of ``config``'s ground truth; return it, its pixel size (Å), a record.

    A map is resampled to ``config.box`` at ``config.pixel_size`` (default: its voxel size); a
    model (a preset's bundled one or ``config.model``) is projected atom by atom, and the
    description warns when it reaches beyond the half box.
    """
    info: dict[str, Any] = {}
    if config.map is not None:
        from cryospin.io.mrc import read_map

        vol, voxel = read_map(config.map)
        apix = float(config.pixel_size) if config.pixel_size is not None else float(voxel)
        vol = resample_map(vol, voxel, config.box, apix)
        info.update(
            source="map",
            map=str(config.map),
            map_voxel_A=float(voxel),
            map_box=int(np.shape(vol)[0]),
        )
        return MapProjector(vol, apix, pad=config.pad), apix, info
    if config.preset is not None:
        name = PRESETS[config.preset]["model"]
        model: AtomModel = load_atom_model(bundled_model_path(name))
        info.update(
            source="atoms",
            preset=config.preset,
            model=f"bundled {name}.pdb.gz",
            what=PRESETS[config.preset]["what"],
        )
    else:
        assert config.model is not None
        model = load_atom_model(config.model)
        info.update(source="atoms", model=str(config.model))
    apix = config.resolved_pixel_size
    info.update(
        n_atoms=len(model),
        elements=model.elements,
        max_radius_A=model.max_radius_A,
        center_of_mass_A=model.center_of_mass_A.tolist(),
        form_factors="electron, International Tables C 4.3.2.2 (gemmi Element.c4322)",
    )
    half_box = 0.5 * config.box * apix
    if model.max_radius_A > half_box:
        info["warning"] = (
            f"the model reaches {model.max_radius_A:.1f} Å from its centre of mass, beyond the "
            f"half box {half_box:.1f} Å: it is cut by the box"
        )
    proj = AtomProjector(model, config.box, apix, pad=config.pad, bfactor_A2=config.bfactor)
    return proj, apix, info
