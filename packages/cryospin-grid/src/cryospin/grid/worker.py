"""``python -m cryospin.grid.worker RUN_DIR``: run one grid point in its own process.

Exit status: 0 done, 3 stopped at ``max_steps`` (checkpoint saved), 130 interrupted (checkpoint
saved), 2 a :class:`~cryospin.core.errors.CryospinError` (one line on stderr), 1 anything else
(traceback on stderr). Failures are also recorded in ``RUN_DIR/grid_error.txt``.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from cryospin.core.errors import CryospinError


def main(argv: list[str] | None = None) -> int:
    """Run the point; return the exit status."""
    from cryospin.grid.runs import execute_point

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cryospin.grid.worker RUN_DIR", file=sys.stderr)
        return 2
    try:
        state = execute_point(Path(args[0]))
    except CryospinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1
    return {"done": 0, "stopped": 3, "interrupted": 130}[state]


if __name__ == "__main__":
    sys.exit(main())
