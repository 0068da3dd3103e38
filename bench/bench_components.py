"""Encoder x decoder benchmark, in the spirit of the paper's Table 2 (Supp. B).

For every registered encoder and decoder (or the ones named), at each box size, one training step
is timed: encoder candidates -> decoder slices -> a winner-takes-all loss against the images'
transforms -> backward. Reported per combination: images/s (forward + backward), the extrapolated
time of one epoch over ``--epoch-images`` images, peak memory (CPU: peak RSS of the process from
``resource.getrusage``; GPU: ``torch.cuda.max_memory_allocated``), and parameter counts.

Each combination runs in its own subprocess, so the peak RSS is that combination's alone and an
out-of-memory kill loses only that row. Before timing, the worker measures the peak memory at
batches of 2 and 4 and extrapolates linearly; if the requested batch would not fit into
``--mem-budget-gb``, it halves the batch until it does (the "batch" column shows what was
used). The implicit ``mlp`` decoder at the paper's sizes needs tens of GB per batch of 64 x M
slices, which is the paper's point.

Usage::

    .venv/bin/python bench/bench_components.py --box 64                # CPU, registered defaults
    .venv/bin/python bench/bench_components.py --box 64 128 --device cuda
    .venv/bin/python bench/bench_components.py --box 64 --paper-encoders  # paper-sized CNNs
    .venv/bin/python bench/bench_components.py --box 64 --json bench/out/components.json

The encoders' registered defaults are CPU-sized backbones (see ``cryospin.encoders.backbone``);
``--paper-encoders`` switches to the paper's VGG16-like ``[64, 128, 256, 256, 256]`` channels,
``[2, 2, 3, 2, 2]`` convolutions and ``[512, 256]`` heads. Decoder defaults are the paper's sizes
(``hartley``: ``2 (L+1)^3`` parameters; ``mlp``: FourierNet, 0.33 M).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

PAPER_ENCODER = {
    "channels": [64, 128, 256, 256, 256],
    "convs_per_block": [2, 2, 3, 2, 2],
    "head_hidden": [512, 256],
}


# ------------------------------------------------------------------------------------ worker
def _rss_now_bytes() -> int:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from cryospin.core.fourier import fft2_centered
    from cryospin.core.registry import get_registry

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    reg = get_registry()
    enc_cls = reg.get("encoder", spec["encoder"])
    dec_cls = reg.get("decoder", spec["decoder"])
    enc_cfg = dict(spec.get("encoder_config") or {})
    if spec["paper_encoders"]:
        fields = getattr(enc_cls.Config, "model_fields", {})
        enc_cfg = {**{k: v for k, v in PAPER_ENCODER.items() if k in fields}, **enc_cfg}
    box, apix = spec["box"], spec["pixel_size_A"]
    enc = enc_cls(enc_cls.Config(**enc_cfg), box, apix).to(device).train()
    dec = dec_cls(dec_cls.Config(**(spec.get("decoder_config") or {})), box, apix)
    dec = dec.to(device).train()
    n_enc = sum(p.numel() for p in enc.parameters())
    n_dec = sum(p.numel() for p in dec.parameters())

    def step(batch: int) -> None:
        images = torch.randn(batch, box, box, device=device)
        cand = enc(images)
        rot = cand.rotations  # (B, M, 3, 3)
        slices = dec(rot)  # (B, M, L, L)
        obs = fft2_centered(images)[:, None]
        per = (slices - obs).abs().pow(2).mean(dim=(-2, -1))  # (B, M)
        loss = per.min(dim=1).values.mean()
        loss.backward()
        enc.zero_grad(set_to_none=True)
        dec.zero_grad(set_to_none=True)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def peak() -> int:
        return torch.cuda.max_memory_allocated(device) if cuda else _peak_rss_bytes()

    # calibrate memory at batches 2 and 4 (peak = fixed + per_image * batch), then pick the
    # largest batch (halving from the request) whose estimated peak fits the budget
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    step(2)
    sync()
    p2 = peak()
    step(4)
    sync()
    p4 = peak()
    per_image = max(p4 - p2, 0) / 2
    fixed = p4 - 4 * per_image
    budget = spec["mem_budget_gb"] * 1e9
    batch = spec["batch"]
    while batch > 1 and fixed + per_image * batch * 1.15 > budget:
        batch //= 2
    est = fixed + per_image * batch

    step(batch)  # warm-up at the final size (allocator, thread pools)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times: list[float] = []
    t_start = time.perf_counter()

    def more() -> bool:
        n, elapsed = len(times), time.perf_counter() - t_start
        if n == 0:
            return True
        if elapsed > spec["max_time"]:
            return False  # slow combination: fewer timed steps
        return n < spec["iters"] or (elapsed < spec["min_time"] and n < 50)

    while more():
        t0 = time.perf_counter()
        step(batch)
        sync()
        times.append(time.perf_counter() - t0)
    t = sorted(times)[len(times) // 2]  # median
    return {
        "encoder": spec["encoder"],
        "decoder": spec["decoder"],
        "box": box,
        "device": str(device),
        "batch": batch,
        "requested_batch": spec["batch"],
        "candidates": int(enc.n_candidates),
        "seconds_per_step": t,
        "images_per_s": batch / t,
        "steps_timed": len(times),
        "peak_mem_bytes": peak(),
        "estimated_mem_bytes": est,
        "encoder_params": n_enc,
        "decoder_params": n_dec,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


# ------------------------------------------------------------------------------------ driver
def _run_one(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--_worker", json.dumps(spec)]
    base = {"encoder": spec["encoder"], "decoder": spec["decoder"], "box": spec["box"]}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**base, "error": f"timeout > {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        if proc.returncode in (-9, 137):
            tail = ["killed (out of memory?)"]
        return {**base, "error": tail[0][:120]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _total_memory_gb(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_properties(0).total_memory / 1e9
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9


def _print_table(rows: list[dict[str, Any]], epoch_images: int, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in (
        "encoder",
        "decoder",
        "L",
        "M",
        "batch",
        "images/s",
        "s/step",
        f"epoch ({epoch_images // 1000}k) s",
        "peak mem GB",
        "enc params M",
        "dec params M",
    ):
        table.add_column(col, justify="left" if col in ("encoder", "decoder") else "right")
    for r in rows:
        if "error" in r:
            table.add_row(
                r["encoder"], r["decoder"], str(r["box"]), "", "", r["error"], "", "", "", "", ""
            )
            continue
        table.add_row(
            r["encoder"],
            r["decoder"],
            str(r["box"]),
            str(r["candidates"]),
            str(r["batch"]) + ("*" if r["batch"] != r["requested_batch"] else ""),
            f"{r['images_per_s']:.1f}",
            f"{r['seconds_per_step']:.3f}",
            f"{epoch_images / r['images_per_s']:.0f}",
            f"{r['peak_mem_bytes'] / 1e9:.2f}",
            f"{r['encoder_params'] / 1e6:.2f}",
            f"{r['decoder_params'] / 1e6:.2f}",
        )
    console = Console(width=160)
    console.print(table)
    if any(r.get("batch") != r.get("requested_batch") for r in rows if "error" not in r):
        console.print("* batch reduced to fit the memory budget (--mem-budget-gb)")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--_worker``, one combination) and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--box", type=int, nargs="+", default=[64])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--encoders", nargs="*", help="default: every registered encoder")
    p.add_argument("--decoders", nargs="*", help="default: every registered decoder")
    p.add_argument(
        "--paper-encoders",
        action="store_true",
        help="paper-sized CNN backbones instead of the registered (CPU) defaults",
    )
    p.add_argument("--iters", type=int, default=3, help="timed steps (at least)")
    p.add_argument("--min-time", type=float, default=2.0, help="keep timing until this many s")
    p.add_argument(
        "--max-time",
        type=float,
        default=60.0,
        help="stop timing after this many s, even before --iters steps (>= 1 step)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--mem-budget-gb",
        type=float,
        default=None,
        help="halve the batch until the estimated peak fits (default: 70%% of RAM or of the GPU)",
    )
    p.add_argument("--timeout", type=float, default=900, help="seconds per combination")
    p.add_argument("--pixel-size", type=float, default=2.0)
    p.add_argument(
        "--epoch-images",
        type=int,
        default=50_000,
        help="images per epoch for the extrapolated epoch time (paper: 50k synthetic)",
    )
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._worker:
        print(json.dumps(_worker(json.loads(args._worker))))
        return 0

    from cryospin.core.registry import get_registry

    reg = get_registry()
    encoders = args.encoders or reg.names("encoder")
    decoders = args.decoders or reg.names("decoder")
    budget = args.mem_budget_gb or 0.7 * _total_memory_gb(args.device)
    rows = []
    for box in args.box:
        for enc in encoders:
            for dec in decoders:
                spec = {
                    "encoder": enc,
                    "decoder": dec,
                    "box": box,
                    "batch": args.batch,
                    "device": args.device,
                    "paper_encoders": args.paper_encoders,
                    "iters": args.iters,
                    "min_time": args.min_time,
                    "max_time": args.max_time,
                    "threads": args.threads,
                    "mem_budget_gb": budget,
                    "pixel_size_A": args.pixel_size,
                }
                t0 = time.perf_counter()
                row = _run_one(spec, args.timeout)
                row["wall_s"] = time.perf_counter() - t0
                rows.append(row)
                status = row.get("error") or f"{row['images_per_s']:.1f} images/s"
                print(
                    f"[{enc} x {dec} L={box}] {status} ({row['wall_s']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    sizes = "paper-sized encoders" if args.paper_encoders else "registered default encoders"
    title = f"forward+backward, batch {args.batch}, {args.device}, {sizes} (budget {budget:.0f} GB)"
    _print_table(rows, args.epoch_images, title)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
