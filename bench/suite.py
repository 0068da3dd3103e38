"""Validation suite (issue 12): the default ``cryospin run`` on molecules nobody tuned for.

For every dataset the suite simulates a stack with ``cryospin simulate`` (box 64, N = 5,000,
SNR 0.1, the bundled real EMPIAR-10028 CTFs, the pixel size chosen so that the molecule's largest
extent spans 0.7 of the box), then runs

* ``cryospin run --particles ... --gt-map ...`` with the defaults (``--shifts`` only where the data
  has shifts), and
* the known-pose ceiling: the same decoder trained with the true poses held fixed
  (``stage_schedule: direct``, ``init_poses: file``, ``refine_poses: false``).

Datasets (``--datasets``, default all):

=====================  ===========================================================================
``hsp90``              PDB 2CG9, HSP90-Sba1 (pseudo-C2), Haar-uniform poses
``spike``              PDB 6VYB, SARS-CoV-2 spike, one RBD up (pseudo-C3), uniform poses
``cftr``               PDB 6MSM, CFTR (asymmetric), uniform poses
``ribosome``           the human 80S potential (PDB 4UG0, cisTEM, asymmetric), uniform poses
``hsp90-real``         HSP90 with poses resampled from a real cryoSPARC refinement (non-uniform
                       viewing directions; ``../shared/data/metadata``) and Gaussian in-plane
                       origins of sigma = 2 px; reconstructed with ``--shifts``
``hsp90-20k``          HSP90 at N = 20,000 (the schedule must not depend on N)
``trpv1``              the TRPV1 channel (C4 tetramer), a 9.8 Å-limited map from cryoJAX's tests
                       (``../shared/data/real-stacks/trpv1``), uniform poses: added after the
                       defaults were set, as a molecule they were never tried on
=====================  ===========================================================================

Each run is a separate process with ``OMP_NUM_THREADS=1`` (``--jobs`` runs at a time; on the 2-core
machine use ``--jobs 2``: more threads than free cores slows torch many-fold). It prints one table
(dataset, median and mean rotation error modulo the truth's point group, share under 5°, FSC(0.5)
vs truth, the known-pose ceiling, their ratio, time, peak memory), writes ``OUT/suite.json`` and
``OUT/suite.md``, and per dataset ``OUT/<dataset>-fig3.png``: resolution vs training time
(paper Fig. 3). Time is given three ways: ``work`` (training steps, switch pass and grid
searches from ``metrics.jsonl``: what a run without a truth spends), ``wall`` (the whole process,
evaluation against the truth included) and ``CPU`` (the process's CPU seconds: close to the wall
time of one thread on an idle core when other jobs share the machine). Finished runs are not
rerun (``--rerun`` forces it). Example::

    .venv/bin/python bench/suite.py --out bench/out/suite --jobs 2
    .venv/bin/python bench/suite.py --out bench/out/suite --datasets hsp90 cftr --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

SHARED = Path(os.environ.get("CRYOSPIN_SHARED_DATA", Path(__file__).parents[2] / "shared/data"))
BOX = 64
SPAN = 0.7  # fraction of the box the molecule's largest extent covers


@dataclass
class Dataset:
    """One suite dataset: where its truth comes from and how it is simulated."""

    name: str
    model: str | None = None  # path under SHARED
    map: str | None = None
    n: int = 5000
    real_poses: bool = False
    shift_sigma_px: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def shifts(self) -> bool:
        """Whether the data has in-plane shifts (the run then gets ``--shifts``)."""
        return self.shift_sigma_px > 0


DATASETS = {
    d.name: d
    for d in (
        Dataset("hsp90", model="pdb/2cg9.pdb"),
        Dataset("spike", model="pdb/6vyb.pdb"),
        Dataset("cftr", model="pdb/6msm.pdb"),
        Dataset("ribosome", map="maps/ribosome_4ug0_potential_4A.mrc"),
        Dataset("hsp90-real", model="pdb/2cg9.pdb", real_poses=True, shift_sigma_px=2.0),
        Dataset("hsp90-20k", model="pdb/2cg9.pdb", n=20000),
        Dataset("trpv1", map="real-stacks/trpv1/trpv1_volume.mrc"),
    )
}


def _extent_atoms(path: Path) -> float:
    """Largest distance (Å) between two atoms of a PDB file (on at most 4,000 atoms)."""
    from scipy.spatial.distance import pdist

    xyz = [
        [float(line[30:38]), float(line[38:46]), float(line[46:54])]
        for line in path.read_text().splitlines()
        if line.startswith(("ATOM", "HETATM"))
    ]
    a = np.asarray(xyz)
    return float(pdist(a[:: max(1, len(a) // 4000)]).max())


def _extent_map(path: Path) -> float:
    """Largest distance (Å) between voxels above 5% of the map's maximum."""
    import mrcfile
    from scipy.spatial.distance import pdist

    with mrcfile.open(path, permissive=True) as m:
        vol = np.asarray(m.data, dtype=np.float64)
        apix = float(m.voxel_size.x)
    pts = np.argwhere(vol > 0.05 * vol.max()) * apix
    return float(pdist(pts[:: max(1, len(pts) // 4000)]).max())


def pixel_size(d: Dataset) -> float:
    """Pixel size (Å, 3 significant digits) at which the molecule spans ``SPAN`` of the box."""
    extent = _extent_atoms(SHARED / d.model) if d.model else _extent_map(SHARED / str(d.map))
    return float(f"{extent / (SPAN * BOX):.3g}")


def _real_poses(n: int, out: Path, seed: int) -> Path:
    """Resample ``n`` poses of the real cryoSPARC job (3° isotropic jitter) into ``out``."""
    from scipy.spatial.transform import Rotation

    from cryospin.io.cryosparc import read_cs

    src = read_cs(SHARED / "metadata/cryosparc_P12_J24_001_particles.cs", images=False).rotations
    rng = np.random.default_rng(seed)
    pick = np.asarray(src)[rng.integers(0, len(src), n)]
    jitter = Rotation.from_rotvec(rng.normal(scale=np.deg2rad(3.0) / np.sqrt(3), size=(n, 3)))
    path = out / "real_poses.npy"
    np.save(path, jitter.as_matrix() @ pick)
    return path


def simulate(d: Dataset, root: Path, seed: int) -> Path:
    """Simulate ``d`` into ``root/<name>/data`` unless already there; return the folder."""
    data = root / d.name / "data"
    if (data / "meta.json").exists():
        return data
    data.mkdir(parents=True, exist_ok=True)
    apix = pixel_size(d)
    cmd = [sys.executable, "-m", "cryospin.core", "simulate", "--box", str(BOX), "--n", str(d.n)]
    cmd += ["--pixel-size", str(apix), "--snr", "0.1", "--seed", str(seed), "--out", str(data)]
    cmd += ["--model", str(SHARED / d.model)] if d.model else ["--map", str(SHARED / str(d.map))]
    if d.real_poses:
        cmd += ["--rotations", str(_real_poses(d.n, data, seed))]
    if d.shifts:
        cmd += ["--shift-sigma", str(d.shift_sigma_px * apix)]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return data


#: The ceiling: the same decoder and schedule with the true poses held fixed.
CEILING = {"stage_schedule": "direct", "init_poses": "file", "refine_poses": False}
#: Evaluation only (training is the default): per-epoch metrics vs truth every 5 epochs.
EVAL = {"eval_every": 5}


def reconstruct(d: Dataset, root: Path, kind: str, rerun: bool) -> dict[str, Any]:
    """Run the default reconstruction (``kind = "default"``) or the ceiling of ``d``."""
    data, out = root / d.name / "data", root / d.name / kind
    summary_path = out / "summary.json"
    if summary_path.exists() and not rerun:
        return {**json.loads(summary_path.read_text()), "suite_wall_s": None}
    config = root / d.name / f"{kind}.yaml"
    config.write_text(yaml.safe_dump({**EVAL, **(CEILING if kind == "ceiling" else {})}))
    cmd = [sys.executable, "-m", "cryospin.core", "run"]
    cmd += ["--particles", str(data / "particles.star"), "--gt-map", str(data / "gt_map.mrc")]
    cmd += ["--out", str(out), "--config", str(config)]
    cmd += ["--shifts"] if d.shifts else []
    if out.exists():  # rerun, or an earlier attempt that did not finish
        cmd += ["--overwrite"]
    t0 = time.time()
    with open(root / d.name / f"{kind}.log", "w") as log:
        done = subprocess.run(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )
    wall = time.time() - t0
    if done.returncode != 0 or not summary_path.exists():
        return {"failed": f"exit {done.returncode}, see {root / d.name / f'{kind}.log'}"}
    return {**json.loads(summary_path.read_text()), "suite_wall_s": wall}


def _err(s: dict[str, Any], stat: str) -> float | None:
    """Rotation error ``stat`` (median/mean) modulo the point group when known, else plain."""
    for key in (
        f"rotation_error_group_{stat}_deg",
        f"rotation_error_sym_{stat}_deg",
        f"rotation_error_{stat}_deg",
    ):
        if s.get(key) is not None:
            return float(s[key])
    return None


def work_seconds(folder: Path) -> float | None:
    """Seconds a run without a truth spends: training steps, switch pass and grid searches.

    Summed over ``metrics.jsonl`` (``wall_time_s`` + ``switch_time_s`` + ``search_time_s``);
    the evaluation against the truth (``eval_time_s``), which a user's run does not do, is left
    out, as are start-up and the final writes (seconds).
    """
    from cryospin.grid.collect import read_epochs

    recs = read_epochs(folder)
    if not recs:
        return None
    keys = ("wall_time_s", "switch_time_s", "search_time_s")
    return float(sum(r.get(k) or 0.0 for r in recs for k in keys))


def row(d: Dataset, run: dict[str, Any], ceiling: dict[str, Any], root: Path) -> dict[str, Any]:
    """One table row; ``passed``: median < 2°, FSC within 1.25x the ceiling, work <= 15 min."""
    res, ceil = run.get("resolution_vs_truth_A"), ceiling.get("resolution_vs_truth_A")
    wall = run.get("suite_wall_s") or run.get("wall_time_s")
    work = work_seconds(root / d.name / "default")
    med = _err(run, "median")
    ok = (
        med is not None
        and med < 2.0
        and res is not None
        and ceil is not None
        and res <= 1.25 * ceil
        and work is not None
        and work <= 900
    )
    return {
        "dataset": d.name,
        "n": d.n,
        "group": run.get("point_group", run.get("symmetry_name")),
        "median_deg": med,
        "mean_deg": _err(run, "mean"),
        "fsc05_A": res,
        "ceiling_A": ceil,
        "ratio": res / ceil if res and ceil else None,
        "wall_s": wall,
        "work_s": work,
        "cpu_s": run.get("cpu_time_s"),
        "peak_MB": run.get("peak_memory_MB"),
        "under5": run.get("rotation_error_sym_under5_frac"),
        "failed": run.get("failed"),
        "passed": ok,
    }


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[dict[str, Any]]) -> str:
    """The suite's Markdown table."""
    head = (
        "| dataset | N | group | median / mean rotation error | under 5° | FSC(0.5) vs truth "
        "| ceiling | ratio | work / wall / CPU | peak memory | passed |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        mins = "/".join(_fmt(r[k] and r[k] / 60, ".1f") for k in ("work_s", "wall_s", "cpu_s"))
        lines.append(
            f"| {r['dataset']} | {r['n']:,} | {r['group'] or '-'} | "
            f"{_fmt(r['median_deg'], '.2f')}° / {_fmt(r['mean_deg'], '.2f')}° | "
            f"{_fmt(r['under5'] and 100 * r['under5'], '.0f')}% | "
            f"{_fmt(r['fsc05_A'], '.2f')} Å | {_fmt(r['ceiling_A'], '.2f')} Å | "
            f"{_fmt(r['ratio'], '.2f')} | {mins} min | "
            f"{_fmt(r['peak_MB'], ',.0f')} MB | {'yes' if r['passed'] else 'NO'} |"
        )
    return "\n".join(lines)


def plot(d: Dataset, root: Path) -> None:
    """Resolution vs training time (paper Fig. 3) of the default run and the ceiling."""
    from cryospin.grid.collect import RunRecord, read_epochs
    from cryospin.grid.report import Row, plot_metric

    rows = []
    for kind in ("default", "ceiling"):
        folder = root / d.name / kind
        if (folder / "summary.json").exists():
            summary = json.loads((folder / "summary.json").read_text())
            rec = RunRecord(kind, 0, folder, summary=summary, epochs=read_epochs(folder))
            rows.append(Row(kind, {}, [rec]))
    plot_metric(
        rows,
        "resolution_vs_truth_A",
        root / f"{d.name}-fig3.png",
        True,
        "training time (s)",
        "FSC 0.5 vs truth (Å)",
        f"{d.name}: resolution vs time",
    )


def run_dataset(d: Dataset, root: Path, seed: int, rerun: bool) -> dict[str, Any]:
    """Simulate, reconstruct, reconstruct with the true poses, plot; the table row."""
    simulate(d, root, seed)
    run = reconstruct(d, root, "default", rerun)
    ceiling = reconstruct(d, root, "ceiling", rerun)
    plot(d, root)
    return row(d, run, ceiling, root)


def main() -> None:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/out/suite"))
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--jobs", type=int, default=2, help="datasets at a time (one thread each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rerun", action="store_true", help="rerun finished reconstructions")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(
            pool.map(
                lambda n: run_dataset(DATASETS[n], args.out, args.seed, args.rerun), args.datasets
            )
        )
    text = table(rows)
    print(text)
    (args.out / "suite.md").write_text(text + "\n")
    (args.out / "suite.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
