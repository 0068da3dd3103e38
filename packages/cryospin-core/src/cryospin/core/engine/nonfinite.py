"""Stop on a non-finite loss, naming the likely cause.

A NaN or infinite loss poisons the map and the poses from that step on, so the trainer stops at
once (no checkpoint: the last good one and every output stay as they were) with
:class:`NonFiniteLoss`, a one-line error (exit 2 from the CLI). :func:`likely_cause` looks at
the particles' CTF parameters and images for the usual culprits before blaming the settings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cryospin.core.errors import CryospinError

#: CTF fields, their names in messages (RELION labels) and the range the CTF model assumes
_CTF_RANGES: tuple[tuple[str, str, float, float], ...] = (
    ("amplitude_contrast", "amplitude contrast (rlnAmplitudeContrast)", 0.0, 1.0),
    ("voltage_kV", "voltage (rlnVoltage, kV)", 1e-9, np.inf),
    ("defocus_u_A", "defocus U (rlnDefocusU, Å)", -np.inf, np.inf),
    ("defocus_v_A", "defocus V (rlnDefocusV, Å)", -np.inf, np.inf),
    ("defocus_angle_deg", "defocus angle (rlnDefocusAngle)", -np.inf, np.inf),
    ("cs_mm", "spherical aberration (rlnSphericalAberration, mm)", -np.inf, np.inf),
    ("phase_shift_deg", "phase shift (rlnPhaseShift)", -np.inf, np.inf),
)


class NonFiniteLoss(CryospinError):
    """The training loss became NaN or infinite; the run stopped without writing anything."""


def likely_cause(data: Any) -> str:
    """Describe what most likely made the loss non-finite for the particles of ``data``.

    ``data`` is a :class:`~cryospin.core.engine.data.ParticleData`. Checked in order: no CTF at
    all (no particle has a finite defocus), missing (NaN) or infinite CTF values, CTF values out
    of range (amplitude contrast outside [0, 1), voltage <= 0), non-finite images (a sample of up
    to 256), a zero noise level; otherwise the learning rates.
    """
    ctf = data.stack.ctf
    idx = np.asarray(data.indices)
    if not np.isfinite(np.asarray(ctf.defocus_u_A, dtype=np.float64)[idx]).any():
        return (
            "the particles have no CTF parameters (a bare image stack?): give a STAR or .cs "
            "file with the CTF of every particle"
        )
    for field, label, lo, hi in _CTF_RANGES:
        values = np.asarray(getattr(ctf, field), dtype=np.float64)[idx]
        bad = ~np.isfinite(values)
        if bad.any():
            return (
                f"{label} is missing or not finite for {int(bad.sum())} particles "
                "(a stack without CTF parameters?)"
            )
        out = (values < lo) | (values >= hi)
        if out.any():
            first = values[out][0]
            return f"{label} is {first:g} for {int(out.sum())} particles; expected [{lo:g}, {hi:g})"
    sample = idx[:: max(1, len(idx) // 256)][:256]
    images = data.images(sample)
    if not bool(np.isfinite(images.numpy()).all()):
        return "the particle images hold NaN or infinite pixels"
    if not np.isfinite(data.noise_std) or data.noise_std <= 0:
        return f"the images' noise level is {data.noise_std}; constant or empty images?"
    return "CTF and images look valid: check the learning rates (lr_decoder, lr_encoder, lr_pose)"


def check_loss(loss: float, data: Any, epoch: int, step: int, stage: str) -> None:
    """Raise :class:`NonFiniteLoss` when ``loss`` (the summed step loss) is NaN or infinite."""
    if np.isfinite(loss):
        return
    raise NonFiniteLoss(
        f"the loss became {loss} at epoch {epoch}, step {step} ({stage} stage); likely cause: "
        f"{likely_cause(data)}; stopped without writing (the last checkpoint and outputs are kept)"
    )
