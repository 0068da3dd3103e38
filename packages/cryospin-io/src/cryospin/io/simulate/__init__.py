"""``cryospin simulate``: particle stacks simulated from atomic models or maps (paper Sec. 5).

Python API::

    from cryospin.io.simulate import SimulationConfig, simulate_dataset
    result = simulate_dataset(SimulationConfig(preset="hsp90", box=64, n=5000, snr=0.1, seed=0,
                                               out="sim/"))
    result.particles_star, result.gt_map, result.meta["snr_measured"]

See :mod:`cryospin.io.simulate.simulator` for the image-formation model, the SNR definition, the
contrast and shift conventions, and ``data/PROVENANCE.md`` for the bundled models and CTF table.
"""

from __future__ import annotations

from cryospin.io.simulate.atoms import AtomModel, bundled_model_path, load_atom_model
from cryospin.io.simulate.config import (
    CONTRAST,
    PRESETS,
    SNR_DEFINITION,
    SimulationConfig,
    SimulationResult,
    preset_pixel_size,
)
from cryospin.io.simulate.ctf import bundled_ctf_table, evaluate_ctf, load_ctf_table
from cryospin.io.simulate.draws import haar_rotations
from cryospin.io.simulate.projector import AtomProjector, MapProjector, resample_map
from cryospin.io.simulate.simulator import render_clean, simulate_dataset

__all__ = [
    "CONTRAST",
    "PRESETS",
    "SNR_DEFINITION",
    "AtomModel",
    "AtomProjector",
    "MapProjector",
    "SimulationConfig",
    "SimulationResult",
    "bundled_ctf_table",
    "bundled_model_path",
    "evaluate_ctf",
    "haar_rotations",
    "load_atom_model",
    "load_ctf_table",
    "preset_pixel_size",
    "render_clean",
    "resample_map",
    "simulate_dataset",
]
