"""Time one training step of each stage at several frequency masks (seconds per batch of 32).

The per-step cost behind a run's time, with no schedule around it: a :class:`Trainer` is built
for a particle file with the default configuration, then for each ``stage@radius`` (the mask
radius in units of Nyquist) a few warm-up steps are followed by ``--repeats`` timed passes over
the same ``--steps`` batches; the fastest pass is printed (this machine's per-step times vary by
up to 1.5x between identical runs, so compare codes by alternating runs, several times).

To compare two versions of the code, run it once with a copy of the old packages first on
``PYTHONPATH`` and once without, alternately. Measured 2026-12-06 on the CFTR suite stack with
``--shifts``, one thread, the code before (146821e) and after (8ad115a) the losses were sampled
at the mask's pixels only and Adam went multi-tensor, two alternating runs each (ms per step)::

    amortized@0.5: 71-76 -> 60-65    direct@0.5: 50-75 -> 42-43
    direct@0.75: 83-106 -> 68-73     direct@1.0: 125-138 -> 106-115

Example::

    OMP_NUM_THREADS=1 .venv/bin/python bench/step_time.py \\
        --particles bench/out/suite/cftr/data/particles.star --shifts
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from cryospin.core.engine.config import RunConfig
from cryospin.core.engine.data import ParticleData
from cryospin.core.engine.forward import frequency_mask
from cryospin.core.engine.trainer import Trainer
from cryospin.core.run.inputs import open_run_stack


def build_trainer(particles: str, shifts: bool, folder: Path) -> Trainer:
    """A :class:`Trainer` of the default configuration on ``particles``, images cached."""
    cfg = RunConfig(particles=particles, progress=False, shifts=shifts)
    stack, _ = open_run_stack(cfg)
    data = ParticleData(stack, cfg.box, stack.extra["invert_contrast"], cache=True)
    return Trainer(cfg, data, folder / "checkpoints", folder / "metrics.jsonl")


def time_stage(tr: Trainer, stage_name: str, radius: float, batches: list, repeats: int) -> float:
    """Fastest mean seconds per step over ``repeats`` passes through ``batches``."""
    tr.ctx.set_mask(frequency_mask(tr.data.box, radius, tr.device))
    stage = tr.stages[stage_name]
    stage.setup(tr.ctx)
    for rows in batches[:3]:
        tr._step(stage, rows)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for rows in batches:
            tr._step(stage, rows)
        best = min(best, (time.perf_counter() - t0) / len(batches))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--particles", required=True)
    ap.add_argument("--shifts", action="store_true")
    ap.add_argument("--steps", type=int, default=27, help="batches per timed pass")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--cases", nargs="+", default=["amortized@0.5", "direct@0.5", "direct@0.75", "direct@1.0"]
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tr = build_trainer(args.particles, args.shifts, Path(tmp))
        rng = np.random.default_rng(0)
        n = len(tr.data)
        batches = [rng.choice(n, min(32, n), replace=False) for _ in range(args.steps)]
        for case in args.cases:
            name, radius = case.split("@")
            sec = time_stage(tr, name, float(radius), batches, args.repeats)
            print(f"{case}: {sec * 1e3:.1f} ms per step", flush=True)


if __name__ == "__main__":
    main()
