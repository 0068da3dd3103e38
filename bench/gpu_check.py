"""GPU checks: core slicing on CUDA equals CPU, and every registered encoder/decoder passes its
contract on CUDA. Run on a machine with a GPU (never part of the CPU test suite):

    .venv/bin/python bench/gpu_check.py

Prints one line per check and exits non-zero if any fails; exits 0 with a note when no GPU exists.
"""

from __future__ import annotations

import sys
import traceback

import torch

from cryospin.core.registry import get_registry
from cryospin.core.slicing import extract_central_slices, insert_central_slices
from cryospin.core.so3 import random_rotations
from cryospin.core.testing import check_decoder, check_encoder


def slicing_matches_cpu() -> None:
    gen = torch.Generator().manual_seed(2)
    v = torch.randn(11, 11, 11, dtype=torch.float64, generator=gen)
    R = random_rotations(3, generator=gen, dtype=torch.float64)
    cpu = extract_central_slices(v, R)
    torch.testing.assert_close(extract_central_slices(v.cuda(), R.cuda()).cpu(), cpu)
    s = torch.randn(3, 11, 11, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(
        insert_central_slices(s.cuda(), R.cuda(), 11)[0].cpu(), insert_central_slices(s, R, 11)[0]
    )


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing checked")
        return 0
    registry = get_registry()
    checks = {"slicing cuda == cpu": slicing_matches_cpu}
    for name in registry.names("encoder"):
        checks[f"encoder {name} contract on cuda"] = lambda n=name: check_encoder(
            registry.get("encoder", n), box=32, device="cuda"
        )
    for name in registry.names("decoder"):
        checks[f"decoder {name} contract on cuda"] = lambda n=name: check_decoder(
            registry.get("decoder", n), box=16, device="cuda"
        )
    failed = 0
    for label, fn in checks.items():
        try:
            fn()
            print(f"PASS {label}")
        except Exception:  # noqa: BLE001 - report every failure, then exit non-zero
            failed += 1
            print(f"FAIL {label}\n{traceback.format_exc()}")
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
