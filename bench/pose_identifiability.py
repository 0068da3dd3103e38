"""Do the data identify the poses, given the right map? Per frequency band (issue 12, ribosome).

Separates "the band holds too little information to fix a pose" from "ab initio does not find
the map". A finished known-pose run (``bench/suite.py``'s ceiling: true poses, map at the
ceiling's resolution) is loaded from its checkpoint; for each band of ``k`` Fourier shells every
particle is scored against the 4,096-rotation grid of the grid search (:mod:`.pose_search`,
same loss) and the best grid rotation is compared with the true pose. Prints, per band, the share
of particles whose best grid rotation lies within the basin angle (19°) of the truth and the
median error (about half the grid spacing when identified).

Measured 2026-12-06 (80S ribosome suite stack, 7.06 Å/px, 1,000 particles; one thread)::

    shells  8 (56 Å): 0.93 within 19°, median 9.0°
    shells 12 (38 Å): 0.98, 8.2°        shells 16 (28 Å): 0.97, 8.1°
    shells 20 (23 Å): 0.96, 8.1°        shells 24 / 32: 0.96 / 0.95, 8.1 / 8.2°

so the lowest 8 shells identify the ribosome's poses given its map, and the failure of the
default run (README "Benchmarks") is one of finding that map.

Example::

    OMP_NUM_THREADS=1 .venv/bin/python bench/pose_identifiability.py \\
        bench/out/suite3/ribosome/ceiling --shells 8 12 16 20 24 32 --n 1000
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from cryospin.core.engine import checkpoint as ckpt
from cryospin.core.engine.config import RunConfig
from cryospin.core.engine.data import ParticleData
from cryospin.core.engine.forward import frequency_mask
from cryospin.core.engine.pose_search import GridSearch
from cryospin.core.engine.stages import coarse_crop
from cryospin.core.engine.trainer import Trainer
from cryospin.core.run.inputs import open_run_stack
from cryospin.core.so3 import geodesic_distance_deg


def load_known_pose_run(run: Path) -> Trainer:
    """The trainer of a finished known-pose run ``run`` (its map and its true-pose table)."""
    cfg = RunConfig(**yaml.safe_load((run / "config.yaml").read_text()))
    cfg = cfg.model_copy(update={"progress": False})
    stack, _ = open_run_stack(cfg)
    data = ParticleData(stack, cfg.box, stack.extra["invert_contrast"], cache=True)
    metrics = Path(tempfile.mkdtemp()) / "metrics.jsonl"
    trainer = Trainer(cfg, data, run / "checkpoints", metrics)
    trainer.load_state_dict(ckpt.load(run / "checkpoints" / ckpt.CHECKPOINT_NAME))
    return trainer


def band_errors(trainer: Trainer, shells: int, n: int, g: int = 4096) -> tuple[np.ndarray, float]:
    """Errors (degrees, ``(n,)``) of the best grid rotation vs the table's, and the basin angle."""
    ctx, data = trainer.ctx, trainer.data
    ctx.set_mask(frequency_mask(data.box, shells / (data.box / 2), ctx.device))
    search = GridSearch(ctx, g)
    idx = data.indices[:n]
    errors = []
    for start in range(0, len(idx), 256):
        gidx = idx[start : start + 256]
        batch = data.batch(gidx, ctx.device)
        truth = trainer.table.rotations(torch.as_tensor(gidx)).double()
        losses = search.scorer.losses(coarse_crop(ctx, batch.fimages), coarse_crop(ctx, batch.ctf))
        best = search.grid[losses.argmin(1)].double()
        errors.append(geodesic_distance_deg(best, truth).numpy())
    return np.concatenate(errors), search.basin_deg


def main() -> None:
    """Print the identified share and median error per band."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a finished known-pose run folder (the ceiling)")
    p.add_argument("--shells", type=int, nargs="+", default=[8, 12, 16, 20, 24, 32])
    p.add_argument("--n", type=int, default=1000, help="particles scored")
    args = p.parse_args()
    torch.set_num_threads(1)
    trainer = load_known_pose_run(args.run)
    apix, box = trainer.data.pixel_size_A, trainer.data.box
    for k in args.shells:
        e, basin = band_errors(trainer, k, args.n)
        print(
            f"shells {k:2d} ({box * apix / k:.0f} Å): within {basin:.0f}°: "
            f"{np.mean(e < basin):.2f}, median {np.median(e):.1f}°",
            flush=True,
        )


if __name__ == "__main__":
    main()
