"""CTFs for the simulator: numpy evaluation (by :mod:`cryospin.core.ctf`) and CTF sources.

CTF formula (RELION / cryoDRGN ``ctf.compute_ctf``; ``docs/CONVENTIONS.md`` item 12)::

    lambda = 12.2639 / sqrt(V + 0.97845e-6 V^2)           (Å, V in volts)
    df(theta) = 0.5 (dfU + dfV) + 0.5 (dfU - dfV) cos(2 (theta - dfAng))
    gamma = 2 pi (-0.5 df lambda s^2 + 0.25 Cs lambda^3 s^4) - phase_shift
    CTF = sqrt(1 - w^2) sin(gamma) - w cos(gamma)

with ``theta`` the azimuth of the frequency ``(kx, ky)`` and ``s = |k|`` in 1/Å. ``CTF(0) = -w < 0``
and, for underfocus (``df > 0``), ``sin(gamma) < 0`` at low frequency: multiplying a positive
potential by it makes the protein **dark**, as in raw micrographs (the simulator's contrast).

CTF sources: rows of a real table (cryoDRGN ``ctf.pkl``, RELION STAR, cryoSPARC ``.cs``, or the
bundled EMPIAR-10028 table ``empiar10028``), used as they are, or uniform ranges.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from cryospin.core.ctf import compute_ctf
from cryospin.core.errors import InputError
from cryospin.core.particles import CTFParams

#: The per-particle CTFParams fields, named as compute_ctf's arguments.
_CTF_FIELDS = (
    "defocus_u_A",
    "defocus_v_A",
    "defocus_angle_deg",
    "voltage_kV",
    "cs_mm",
    "amplitude_contrast",
    "phase_shift_deg",
)

#: Name of the bundled real CTF table (all 105,247 rows of EMPIAR-10028's cryoDRGN ctf.pkl).
BUNDLED_CTF = "empiar10028"


def evaluate_ctf(
    ky: np.ndarray, kx: np.ndarray, ctf: CTFParams, index: int, bfactor_A2: float | None = None
) -> np.ndarray:
    """Evaluate the CTF of particle ``index`` at frequencies ``(ky, kx)`` (1/Å, broadcastable).

    The formula is :func:`cryospin.core.ctf.compute_ctf`'s, evaluated in float64 on the
    broadcast shape of ``ky`` and ``kx`` (e.g. the simulator's padded rfft grid). A B-factor
    (``bfactor_A2`` or the particle's own ``ctf.bfactor_A2``) multiplies the CTF by
    ``exp(-B s^2 / 4)``.
    """
    freqs = torch.as_tensor(np.stack(np.broadcast_arrays(kx, ky), axis=-1), dtype=torch.float64)
    b = bfactor_A2
    if b is None and ctf.bfactor_A2 is not None:
        b = float(ctf.bfactor_A2[index])
    params = {name: float(getattr(ctf, name)[index]) for name in _CTF_FIELDS}
    return compute_ctf(freqs, **params, bfactor_A2=b).numpy()


def _from_array(arr: np.ndarray, source: str) -> CTFParams:
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 9:
        raise InputError(f"{source}: CTF array has shape {arr.shape}; expected (N, 9)")
    return CTFParams(
        defocus_u_A=arr[:, 2].copy(),
        defocus_v_A=arr[:, 3].copy(),
        defocus_angle_deg=arr[:, 4].copy(),
        voltage_kV=arr[:, 5].copy(),
        cs_mm=arr[:, 6].copy(),
        amplitude_contrast=arr[:, 7].copy(),
        phase_shift_deg=arr[:, 8].copy(),
    )


def _shortest_float32(values: np.ndarray) -> np.ndarray:
    """Return float32-stored values (e.g. cryoDRGN ctf.pkl) as their shortest decimal.

    0.1, not 0.10000000149: they are then written to STAR files as the table means them.
    """
    v = np.asarray(values, dtype=np.float64)
    as32 = v.astype(np.float32)
    if np.array_equal(as32.astype(np.float64), v):
        return as32.astype(str).astype(np.float64)
    return v


def map_ctf(ctf: CTFParams, fn: Callable[[np.ndarray], np.ndarray]) -> CTFParams:
    """Apply ``fn`` to every per-particle array of ``ctf`` (``None`` B-factors stay ``None``)."""
    return CTFParams(
        defocus_u_A=fn(ctf.defocus_u_A),
        defocus_v_A=fn(ctf.defocus_v_A),
        defocus_angle_deg=fn(ctf.defocus_angle_deg),
        voltage_kV=fn(ctf.voltage_kV),
        cs_mm=fn(ctf.cs_mm),
        amplitude_contrast=fn(ctf.amplitude_contrast),
        phase_shift_deg=fn(ctf.phase_shift_deg),
        bfactor_A2=None if ctf.bfactor_A2 is None else fn(ctf.bfactor_A2),
    )


def _clean(ctf: CTFParams) -> CTFParams:
    return map_ctf(ctf, _shortest_float32)


def bundled_ctf_table() -> CTFParams:
    """Load the bundled real CTF table of EMPIAR-10028 (105,247 rows; ``data/PROVENANCE.md``)."""
    ref = resources.files("cryospin.io.simulate") / "data" / "empiar10028_ctf.npz"
    with resources.as_file(ref) as path, np.load(path) as z:
        return _from_array(z["ctf"], "bundled empiar10028_ctf.npz")


def load_ctf_table(source: str | Path) -> CTFParams:
    """Read a CTF table: ``empiar10028`` (bundled), cryoDRGN ``.pkl``, ``.npz``, ``.star``, ``.cs``.

    Values are taken as they are (defocus, astigmatism, kV, Cs, w, phase shift).

    Raises:
        InputError: unknown suffix or malformed file.
    """
    return _clean(_load_ctf_table(source))


def _load_ctf_table(source: str | Path) -> CTFParams:
    if str(source) == BUNDLED_CTF:
        return bundled_ctf_table()
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        from cryospin.io.cryodrgn import read_ctf_pkl

        return read_ctf_pkl(path)[0]
    if suffix == ".npz":
        with np.load(path) as z:
            return _from_array(z["ctf"], str(path))
    if suffix == ".star":
        from cryospin.io.star import read_star

        return read_star(path, images=False).ctf
    if suffix == ".cs":
        from cryospin.io.cryosparc import read_cs

        return read_cs(path, images=False).ctf
    raise InputError(f"{path}: unknown CTF table format (use .pkl, .npz, .star or .cs)")


def ctf_from_ranges(
    rng: np.random.Generator,
    n: int,
    defocus_A: tuple[float, float],
    astigmatism_A: tuple[float, float],
    voltage_kV: float,
    cs_mm: float,
    amplitude_contrast: float,
) -> CTFParams:
    """Draw random CTFs from ranges.

    Mean defocus uniform in ``defocus_A``, dfU - dfV uniform in ``astigmatism_A``, astigmatism
    angle uniform in [-90, 90) degrees; fixed voltage, Cs and ``w``.
    """
    mean = rng.uniform(*defocus_A, size=n)
    astig = rng.uniform(*astigmatism_A, size=n)
    angle = rng.uniform(-90.0, 90.0, size=n)
    return CTFParams(
        defocus_u_A=mean + 0.5 * astig,
        defocus_v_A=mean - 0.5 * astig,
        defocus_angle_deg=angle,
        voltage_kV=np.full(n, float(voltage_kV)),
        cs_mm=np.full(n, float(cs_mm)),
        amplitude_contrast=np.full(n, float(amplitude_contrast)),
        phase_shift_deg=np.zeros(n),
    )
