"""Scaling efficiency of multi-process runs (torchrun + DDP, pose table sharded by particle).

For each G in ``--procs`` the same reconstruction runs with G processes and ``--batch`` particles
per process (global batch G x batch); efficiency is

    E(G) = images/s with G processes / (G x images/s with 1 process)

per stage (``amortized``, ``direct``) from each run's ``summary.json`` (images of the global batch
per second of training steps, excluding start-up, data loading and evaluation).

``ceiling`` is what the machine allows: G independent one-process runs started together,
their summed images/s over G x images/s of one run alone (shared or hyper-threaded cores, memory
bandwidth and other load keep it below 1). ``vs ceiling`` = efficiency / ceiling is the part of
the loss due to cryospin (all-reduce, per-step imbalance of the ranks' shares, synchronisation).

On CPU each process uses ``--threads`` threads (default 1, so G processes use G cores); on GPUs
use ``--device cuda`` and G up to the number of GPUs (one per process, nccl backend).

Measured on the 2-vCPU development VM (shared with other jobs; three runs, box 32, 512
particles, batch 32 per process): E(2) = 0.46-0.69 (amortized), 0.38-0.61 (direct); two
independent one-process runs started together reach only 0.49-0.55 of twice one run (the ceiling
of this machine), so the distributed run loses little beyond what the hardware imposes. A GPU
node was not available for this work: run the GPU command above there.

Command (CPU, 2 cores)::

    .venv/bin/python bench/bench_scaling.py --procs 1 2 --box 32 --n 512 --epochs 2

GPU node::

    .venv/bin/python bench/bench_scaling.py --procs 1 2 4 8 --device cuda --box 128 --n 20000 \\
        --batch 64 --epochs 2 --threads 4

Writes ``bench/out/scaling_<device>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CRYOSPIN = str(Path(sys.executable).with_name("cryospin"))


def simulate(box: int, n: int, out: Path) -> Path:
    """Simulate the hsp90 preset once per (box, n); return the particle file."""
    folder = out / f"data-hsp90-L{box}-N{n}"
    star = folder / "particles.star"
    if not star.exists():
        subprocess.run(
            [CRYOSPIN, "simulate", "--preset", "hsp90", "--box", str(box), "--n", str(n)]
            + ["--snr", "0.1", "--seed", "0", "--out", str(folder)],
            check=True,
        )
    return star


def run_one(
    star: Path, procs: int, args: argparse.Namespace, out: Path, name: str = "", wait: bool = True
) -> dict | tuple:
    """Run one reconstruction with ``procs`` processes; return its summary."""
    folder = out / f"scaling-{args.device}-G{procs}{name}"
    cfg = {
        "particles": str(star),
        "encoder": "multihead",
        "decoder": "hartley",
        "batch_size": args.batch,
        "epochs": args.epochs,
        "switch_epoch": max(1, args.epochs // 2),
        "num_threads": args.threads,
        "device": args.device,
        "progress": False,
        "eval_every": 1000,
        "seed": 0,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [CRYOSPIN, "run", "--config", str(folder / "bench.yaml"), "--out", str(folder / "run")]
    if procs > 1:
        cmd += ["--launcher", "torchrun", "--gpus", str(procs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    if not wait:
        return proc, folder
    if proc.wait() != 0:
        raise SystemExit(f"run failed: {' '.join(cmd)}")
    return json.loads((folder / "run" / "summary.json").read_text())


def ceiling(star: Path, g: int, args: argparse.Namespace, out: Path) -> dict:
    """Summed images/s per stage of ``g`` independent one-process runs started together."""
    started = [run_one(star, 1, args, out, name=f"-indep{k}", wait=False) for k in range(g)]
    total: dict[str, float] = {}
    for proc, folder in started:
        if proc.wait() != 0:
            raise SystemExit("independent run failed")
        ips = json.loads((folder / "run" / "summary.json").read_text())["images_per_s"]
        for stage, v in ips.items():
            total[stage] = total.get(stage, 0.0) + (v or 0.0)
    return total


def main() -> None:
    """Parse arguments, run every G, print and save the efficiencies."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--box", type=int, default=32)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32, help="particles per process and step")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the independent-runs ceiling")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    star = simulate(args.box, args.n, args.out)
    rows = {}
    for g in sorted(set([1, *args.procs])):
        s = run_one(star, g, args, args.out)
        rows[g] = {
            "images_per_s": s["images_per_s"],
            "wall_time_s": s["wall_time_s"],
            "global_batch_size": s.get("global_batch_size"),
            "world_size": s.get("world_size"),
        }
        if g > 1 and not args.no_ceiling:
            rows[g]["independent_images_per_s"] = ceiling(star, g, args, args.out)
    base = rows[1]["images_per_s"]
    head = f"{'G':>3} {'stage':>10} {'images/s':>10} {'efficiency':>10} {'ceiling':>8}"
    print(head + f" {'vs ceiling':>10} {'wall s':>8}")
    for g, r in rows.items():
        r["efficiency"], r["ceiling"] = {}, {}
        for stage, ips in r["images_per_s"].items():
            eff = ips / (g * base[stage]) if ips and base.get(stage) else float("nan")
            ind = r.get("independent_images_per_s", {}).get(stage)
            ceil = ind / (g * base[stage]) if ind and base.get(stage) else 1.0
            r["efficiency"][stage], r["ceiling"][stage] = eff, ceil
            print(
                f"{g:>3} {stage:>10} {ips:>10.1f} {eff:>10.2f} {ceil:>8.2f} {eff / ceil:>10.2f}"
                f" {r['wall_time_s']:>8.1f}"
            )
    result = {"config": vars(args) | {"out": str(args.out)}, "results": rows}
    path = args.out / f"scaling_{args.device}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
