"""Paper Table 2 comparisons on simulated data: rotation errors, FSC(0.5) resolution, speed, memory.

Methods (each a separate ``cryospin run`` process, so peak memory is per method):

* ``semi-amortized``: multihead + hartley, amortized then direct (cryoSPIN);
* ``fully-amortized``: multihead + hartley, amortized only;
* ``cryoai-hartley``: cryoai + hartley, amortized only;
* ``cryoai-mlp``: cryoai + mlp, amortized only (cryoAI's setting).

Datasets: ``hsp90`` and ``spike`` simulated with ``cryospin simulate`` (bundled PDB 2CG9 / 6VYB,
real EMPIAR-10028 CTFs, SNR 0.1). Defaults follow the task (L = 64, N = 5,000); use small values
first, e.g.::

    .venv/bin/python bench/bench_reconstruction.py --datasets hsp90 --box 32 --n 500 --epochs 2

Prints one table row per dataset and method and writes ``bench/out/results.json``. ``sym med°`` is
the median rotation error modulo a symmetry of the truth map (HSP90 2CG9 is a C2 dimer, so the
plain error mixes ~0 and ~180 degree branches; see ``cryospin.core.engine.report``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

METHODS = {
    "semi-amortized": {
        "encoder": "multihead",
        "decoder": "hartley",
        "stage_schedule": "semi-amortized",
    },
    "fully-amortized": {
        "encoder": "multihead",
        "decoder": "hartley",
        "stage_schedule": "amortized",
    },
    "cryoai-hartley": {"encoder": "cryoai", "decoder": "hartley", "stage_schedule": "amortized"},
    "cryoai-mlp": {"encoder": "cryoai", "decoder": "mlp", "stage_schedule": "amortized"},
}

ROOT = Path(__file__).resolve().parents[1]
CRYOSPIN = str(Path(sys.executable).with_name("cryospin"))


def simulate(dataset: str, box: int, n: int, seed: int, out: Path, workers: int) -> Path:
    """Simulate once per (dataset, box, n, seed); returns the folder."""
    folder = out / f"data-{dataset}-L{box}-N{n}-s{seed}"
    if not (folder / "particles.star").exists():
        subprocess.run(
            [
                CRYOSPIN,
                "simulate",
                "--preset",
                dataset,
                "--box",
                str(box),
                "--n",
                str(n),
                "--snr",
                "0.1",
                "--seed",
                str(seed),
                "--out",
                str(folder),
                "--workers",
                str(workers),
            ],
            check=True,
        )
    return folder


def run_method(name: str, data: Path, args: argparse.Namespace) -> dict:
    """Run one method in its own process; returns its summary.json plus the exit status."""
    out = args.out / f"{data.name}-{name}"
    cfg = {
        **METHODS[name],
        "epochs": args.epochs,
        "switch_epoch": args.switch_epoch,
        "batch_size": args.batch_size,
        "device": args.device,
        "num_threads": args.threads,
        "eval_every": 1000,
        "progress": False,
        "seed": args.seed,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.yaml").write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            CRYOSPIN,
            "run",
            "--particles",
            str(data / "particles.star"),
            "--out",
            str(out),
            "--config",
            str(out / "bench.yaml"),
            "--gt-map",
            str(data / "gt_map.mrc"),
        ],
        capture_output=True,
        text=True,
    )
    summary = {}
    if proc.returncode == 0 and (out / "summary.json").exists():
        summary = json.loads((out / "summary.json").read_text())
    else:
        print(proc.stderr[-2000:], file=sys.stderr)
    summary["exit_status"] = proc.returncode
    summary["process_wall_s"] = time.perf_counter() - t0
    return summary


def _fmt(x: object, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["hsp90", "spike"], choices=["hsp90", "spike"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--switch-epoch", type=int, default=7)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="simulation processes")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    results = []
    header = (
        f"{'dataset':8} {'method':16} {'rot med°':>8} {'rot mean°':>9} {'sym med°':>8} "
        f"{'FSC0.5 Å':>9} "
        f"{'img/s amort':>11} {'img/s direct':>12} {'peak MB':>8} {'wall s':>7}"
    )
    print(header)
    for dataset in args.datasets:
        data = simulate(dataset, args.box, args.n, args.seed, args.out, args.workers)
        for name in args.methods:
            s = run_method(name, data, args)
            ips = s.get("images_per_s") or {}
            row = {
                "dataset": dataset,
                "method": name,
                "box": args.box,
                "n": args.n,
                "epochs": args.epochs,
                **{
                    k: s.get(k)
                    for k in (
                        "rotation_error_median_deg",
                        "rotation_error_mean_deg",
                        "rotation_error_sym_median_deg",
                        "symmetry_deg",
                        "resolution_vs_truth_A",
                        "peak_memory_MB",
                        "wall_time_s",
                        "pixel_size_A",
                        "exit_status",
                        "device",
                    )
                },
                "images_per_s": ips,
            }
            results.append(row)
            print(
                f"{dataset:8} {name:16} {_fmt(row['rotation_error_median_deg']):>8} "
                f"{_fmt(row['rotation_error_mean_deg']):>9} "
                f"{_fmt(row['rotation_error_sym_median_deg']):>8} "
                f"{_fmt(row['resolution_vs_truth_A']):>9} {_fmt(ips.get('amortized'), '.1f'):>11} "
                f"{_fmt(ips.get('direct'), '.1f'):>12} {_fmt(row['peak_memory_MB'], '.0f'):>8} "
                f"{_fmt(row['wall_time_s'], '.0f'):>7}",
                flush=True,
            )
    (args.out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
