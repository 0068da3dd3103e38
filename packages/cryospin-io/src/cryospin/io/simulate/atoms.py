"""Atomic models for the simulator: coordinates and electron scattering factors, read with gemmi.

An atom of element ``e`` contributes the electron scattering factor (International Tables for
Crystallography Vol. C, Table 4.3.2.2; gemmi's ``Element.c4322``)::

    f_e(q) = sum_i a_i exp(-b_i q^2 / 4)          (q = |k| in 1/Å, i.e. s = sin(theta)/lambda = q/2)

whose inverse 3D Fourier transform is a sum of Gaussians ``a_i (4 pi / b_i)^(3/2) exp(-4 pi^2 r^2
/ b_i)``. Multiplied by ``h^2 / (2 pi m_e e) = 47.878 V Å^2`` this is the atom's electrostatic
potential in volts (non-relativistic, as in cisTEM's simulator and the Mott-Bethe formula), so the
ground-truth maps are in V and the projections in V Å (before the simulator's own scaling; see
:mod:`cryospin.io.simulate.simulator`).

Models are centred on their centre of mass (atomic masses from gemmi), waters are removed, only the
first model and the first alternative conformation are kept, and occupancies scale the atoms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from cryospin.core.errors import CryospinError

#: h^2 / (2 pi m_e e) in V Å^2: converts scattering amplitude in Å to potential in V Å^3.
POTENTIAL_CONSTANT_V_A2 = 47.87801

#: Bundled atomic models, by preset/model name (gzipped PDB files under ``simulate/data``).
BUNDLED_MODELS = {"2cg9": "2cg9.pdb.gz", "6vyb": "6vyb.pdb.gz"}


class ModelError(CryospinError):
    """An atomic model could not be read or is empty."""


@dataclass
class AtomModel:
    """Atoms of a molecule, centred on the centre of mass.

    Attributes:
        xyz_A: ``(n, 3)`` float64 coordinates ``(x, y, z)`` in Å relative to the centre of mass.
        species: ``(n,)`` int index into ``elements``.
        weight: ``(n,)`` float64 per-atom weight (occupancy).
        elements: element symbols, one per species.
        a: ``(n_species, 5)`` C4322 amplitudes (Å) per species.
        b: ``(n_species, 5)`` C4322 widths (Å^2) per species.
        source: where the model came from (path or bundled name).
        center_of_mass_A: the original centre of mass (Å) that was subtracted.
    """

    xyz_A: np.ndarray
    species: np.ndarray
    weight: np.ndarray
    elements: list[str]
    a: np.ndarray
    b: np.ndarray
    source: str = ""
    center_of_mass_A: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __len__(self) -> int:
        return len(self.xyz_A)

    @property
    def max_radius_A(self) -> float:
        """Largest distance of an atom from the centre of mass, in Å."""
        return float(np.sqrt((self.xyz_A**2).sum(1)).max())

    def form_factor(self, q: np.ndarray, bfactor_A2: float = 0.0) -> np.ndarray:
        """Electron form factors ``(n_species, *q.shape)`` at spatial frequency ``|q|`` (1/Å).

        A global B-factor multiplies every factor by ``exp(-B q^2 / 4)``.
        """
        q2 = np.asarray(q, dtype=np.float64) ** 2
        out = np.zeros((len(self.elements), *q2.shape))
        for s in range(len(self.elements)):
            for ai, bi in zip(self.a[s], self.b[s], strict=True):
                out[s] += ai * np.exp(-(bi + bfactor_A2) * q2 / 4.0)
        return out


def bundled_model_path(name: str) -> Path:
    """Path of a bundled atomic model (``"2cg9"`` or ``"6vyb"``) inside the installed package."""
    if name not in BUNDLED_MODELS:
        known = ", ".join(sorted(BUNDLED_MODELS))
        raise ModelError(f"no bundled model '{name}' (bundled: {known})")
    ref = resources.files("cryospin.io.simulate") / "data" / BUNDLED_MODELS[name]
    with resources.as_file(ref) as path:
        return Path(path)


def load_atom_model(path: str | Path) -> AtomModel:
    """Read a PDB or mmCIF file (optionally gzipped) with gemmi into a centred :class:`AtomModel`.

    Raises:
        ModelError: the file cannot be read or holds no atoms with known scattering factors.
    """
    import gemmi

    path = Path(path)
    try:
        st = gemmi.read_structure(str(path))
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise ModelError(f"cannot read atomic model {path}: {exc}") from exc
    if len(st) == 0:
        raise ModelError(f"atomic model {path} has no model")
    st.remove_waters()
    st.remove_alternative_conformations()
    xyz, elem, occ, mass = [], [], [], []
    for chain in st[0]:
        for res in chain:
            for atom in res:
                el = atom.element
                if el.atomic_number <= 0:
                    continue
                xyz.append(atom.pos.tolist())
                elem.append(el.name)
                occ.append(atom.occ)
                mass.append(el.weight)
    if not xyz:
        raise ModelError(f"atomic model {path} holds no atoms")
    xyz_a = np.asarray(xyz, dtype=np.float64)
    occ_a = np.asarray(occ, dtype=np.float64)
    m = np.asarray(mass) * occ_a
    com = (xyz_a * m[:, None]).sum(0) / m.sum()
    names = sorted(set(elem))
    index = {n: i for i, n in enumerate(names)}
    a = np.array([gemmi.Element(n).c4322.a for n in names], dtype=np.float64)
    b = np.array([gemmi.Element(n).c4322.b for n in names], dtype=np.float64)
    return AtomModel(
        xyz_A=xyz_a - com,
        species=np.array([index[e] for e in elem], dtype=np.int64),
        weight=occ_a,
        elements=names,
        a=a,
        b=b,
        source=str(path),
        center_of_mass_A=com,
    )
