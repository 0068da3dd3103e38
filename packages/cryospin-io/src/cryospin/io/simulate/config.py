"""Settings of the simulator: presets, contrast and SNR definitions, the config and result types.

See :mod:`cryospin.io.simulate.simulator` for the image-formation model these settings drive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Paper Sec. 5: ground truths of 128^3 at these pixel sizes (HSP 1.5 Å, spike 2.13 Å).
PRESETS: dict[str, dict[str, Any]] = {
    "hsp90": {
        "model": "2cg9",
        "paper_box": 128,
        "paper_pixel_A": 1.5,
        "what": "HSP90-Sba1 closed complex, PDB 2CG9 (the paper's HSP)",
    },
    "spike": {
        "model": "6vyb",
        "paper_box": 128,
        "paper_pixel_A": 2.13,
        "what": "SARS-CoV-2 spike (open), PDB 6VYB (the paper's spike)",
    },
}

CONTRASTS = {
    "bright": "protein bright (RELION stack convention): image = -IDFT[CTF * projection] + noise "
    "with CTF(0) = -w (cryospin.core.ctf sign), i.e. RELION's CTF times the projection; "
    "cryospin-io inverts .star stacks by default (default_invert), as cryoDRGN does",
    "dark": "protein dark (raw-micrograph convention): image = IDFT[CTF * projection] + noise "
    "with CTF(0) = -w (cryospin.core.ctf sign); read it with invert=False",
}
CONTRAST = CONTRASTS["bright"]
SNR_DEFINITION = (
    "per image: noise variance = var(clean CTF-modulated projection over the L x L box) / SNR"
)


def preset_pixel_size(preset: str, box: int) -> float:
    """Return the preset's pixel size for ``box``, keeping the paper's field of view."""
    p = PRESETS[preset]
    return p["paper_pixel_A"] * p["paper_box"] / box


class SimulationConfig(BaseModel):
    """Settings of :func:`simulate_dataset` (every one is written to ``meta.json``).

    Exactly one ground truth: ``preset``, ``model`` (PDB/mmCIF) or ``map`` (MRC).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["hsp90", "spike"] | None = None
    model: Path | None = None
    map: Path | None = None
    box: int = Field(128, ge=16, description="image side L (even)")
    pixel_size: float | None = Field(
        None, gt=0, description="Å; presets default to the paper's field of view"
    )
    n: int = Field(1000, ge=1, description="number of particles")
    snr: float = Field(0.1, gt=0, description="per-image SNR (see SNR_DEFINITION)")
    ctf: str | None = Field(
        "empiar10028",
        description="CTF table (.pkl/.star/.cs/.npz, or 'empiar10028' bundled), 'ranges', or "
        "None for no CTF",
    )
    ctf_rows: Literal["random", "sequential"] = "random"
    defocus_range: tuple[float, float] = (10000.0, 25000.0)
    astigmatism_range: tuple[float, float] = (0.0, 1000.0)
    voltage: float = 300.0
    cs: float = 2.7
    amplitude_contrast: float = 0.1
    contrast: Literal["bright", "dark"] = "bright"
    rotations: Path | None = Field(None, description="poses file (.star, .pkl, .cs, .npy)")
    shift_sigma: float = Field(0.0, ge=0, description="Gaussian origin sigma per axis, Å")
    shift_max: float = Field(0.0, ge=0, description="uniform origins in [-max, max], Å")
    bfactor: float = Field(0.0, ge=0, description="global B-factor on the atoms, Å^2")
    pad: int = Field(2, ge=1, le=4)
    seed: int = 0
    out: Path = Path("simulated")
    write_cryodrgn: bool = True
    write_clean: bool = False
    workers: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> SimulationConfig:
        given = [x for x in (self.preset, self.model, self.map) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of preset, model or map")
        if self.box % 2:
            raise ValueError(f"box must be even, got {self.box}")
        if self.preset is None and self.pixel_size is None and self.model is not None:
            raise ValueError("pixel_size is required with a model")
        if self.shift_sigma and self.shift_max:
            raise ValueError("give shift_sigma (Gaussian) or shift_max (uniform), not both")
        return self

    @property
    def resolved_pixel_size(self) -> float:
        """The pixel size used (the preset's when none is given)."""
        if self.pixel_size is not None:
            return float(self.pixel_size)
        if self.preset is not None:
            return preset_pixel_size(self.preset, self.box)
        return float("nan")  # map input: its own voxel size (resolved when loaded)


@dataclass
class SimulationResult:
    """Paths written by :func:`simulate_dataset` and a summary."""

    out: Path
    particles_star: Path
    particles_mrcs: Path
    gt_map: Path
    meta_json: Path
    ground_truth: Path
    meta: dict[str, Any]
