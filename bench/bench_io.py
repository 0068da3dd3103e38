"""Benchmark of lazy particle reading: images/s, MB/s and peak RSS at two stack sizes.

Generates float32 MRC stacks of 128-px images (default 10^4 and 10^5 particles; ``--sizes``)
with a RELION 3.1 STAR each, then, in a fresh process per size, opens the STAR with
:func:`cryospin.io.open_particles` and reads one full epoch in shuffled batches of 64. Peak RSS
must stay flat as N grows tenfold: images are memory-mapped, read per index, and their pages
released after each batch. Reads come from the page cache when the stack fits in RAM (the
stacks were just written); the numbers are the reader's own cost, not the disk's.

Usage::

    .venv/bin/python bench/bench_io.py                      # 10^4 and 10^5 (6.6 GB on disk)
    .venv/bin/python bench/bench_io.py --sizes 2000 20000   # quicker
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def generate(folder: Path, n: int, box: int, chunk: int = 2048) -> Path:
    """Write ``folder/stack_{n}.mrcs`` (random float32 images) and its STAR; return the STAR."""
    from cryospin.core.particles import CTFParams
    from cryospin.io import StackWriter, new_particle_stack, stack_image_names, write_star

    star = folder / f"stack_{n}.star"
    stack = folder / f"stack_{n}.mrcs"
    if star.is_file() and stack.is_file():
        return star
    rng = np.random.default_rng(n)
    with StackWriter(stack, n, box, 1.0) as writer:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            writer.write(rng.standard_normal((m, box, box), dtype=np.float32))
    ones = np.ones(n)
    ctf = CTFParams(
        rng.uniform(8e3, 3e4, n),
        rng.uniform(8e3, 3e4, n),
        rng.uniform(-90, 90, n),
        300 * ones,
        2.7 * ones,
        0.1 * ones,
        0 * ones,
    )
    write_star(star, new_particle_stack(stack_image_names(stack.name, n), ctf, 1.0, box))
    return star


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB.

    ``VmHWM`` from ``/proc/self/status`` (reset at exec, unlike ``ru_maxrss``, which a child
    inherits from its parent at fork); ``ru_maxrss`` where ``/proc`` is missing.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(star: Path, batch: int, seed: int) -> dict:
    """Read one shuffled epoch of ``star``; return the measurements."""
    from cryospin.io import open_particles

    t0 = time.perf_counter()
    particles = open_particles(star)
    open_s = time.perf_counter() - t0
    rss_open = peak_rss_mb()
    order = np.random.default_rng(seed).permutation(len(particles))
    checksum = 0.0
    t0 = time.perf_counter()
    for start in range(0, len(order), batch):
        images = particles.images.read(order[start : start + batch])
        checksum += float(images[:, 0, 0].sum())
    seconds = time.perf_counter() - t0
    n = len(particles)
    mb = n * particles.box * particles.box * 4 / 1e6
    return {
        "n": n,
        "box": particles.box,
        "open_s": open_s,
        "read_s": seconds,
        "images_per_s": n / seconds,
        "MB_per_s": mb / seconds,
        "peak_rss_after_open_MB": rss_open,
        "peak_rss_MB": peak_rss_mb(),
        "checksum": checksum,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--box", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "io")
    parser.add_argument("--keep", action="store_true", help="keep the generated stacks")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.batch, args.seed)))
        return

    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        t0 = time.perf_counter()
        star = generate(args.out, n, args.box)
        gen_s = time.perf_counter() - t0
        result = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                str(star),
                "--batch",
                str(args.batch),
                "--seed",
                str(args.seed),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        row = json.loads(result.stdout.strip().splitlines()[-1])
        row["generate_s"] = gen_s
        rows.append(row)
        if not args.keep:
            star.unlink()
            star.with_suffix(".mrcs").unlink()
    print(
        f"{'N':>9} {'box':>4} {'open s':>7} {'images/s':>10} {'MB/s':>8} "
        f"{'RSS open MB':>12} {'peak RSS MB':>12}"
    )
    for r in rows:
        print(
            f"{r['n']:>9} {r['box']:>4} {r['open_s']:>7.2f} {r['images_per_s']:>10.0f} "
            f"{r['MB_per_s']:>8.0f} {r['peak_rss_after_open_MB']:>12.0f} "
            f"{r['peak_rss_MB']:>12.0f}"
        )
    if len(rows) > 1:
        ratio = rows[-1]["peak_rss_MB"] / rows[0]["peak_rss_MB"]
        growth = rows[-1]["n"] / rows[0]["n"]
        verdict = "flat" if ratio < 1.5 else "NOT flat"
        print(f"peak RSS x{ratio:.2f} for N x{growth:.0f}: {verdict}")


if __name__ == "__main__":
    main()
