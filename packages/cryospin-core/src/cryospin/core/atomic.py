"""Atomic file output: write a temporary file beside the target, then rename it over the target.

:func:`os.replace` is atomic within one file system (POSIX and Windows), so a reader, or a run
killed mid-write, sees either the old file or the complete new one, never a partial file. Parent
folders are created. Every cryospin writer (maps, STAR, checkpoints, reports) goes through here.

Permissions follow the umask like a plain ``open(path, "w")``: :func:`tempfile.mkstemp` creates
owner-only (0600) files, so the temporary file is set to ``0o666 & ~umask`` (0644 under umask 022)
before it replaces the target. Temporary names are ``.<name>.<random>.tmp<suffix>``; a killed run
can leave one behind, and :func:`remove_stale_temp_files` deletes them on the next start.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "current_umask",
    "remove_stale_temp_files",
]


def current_umask() -> int:
    """Return the process umask (read from ``/proc/self/status`` where possible).

    Elsewhere it is read by setting and restoring it (:func:`os.umask` has no pure getter).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left untouched. The temporary
    name keeps the destination's suffix, so writers that infer the format from it (e.g.
    ``matplotlib.savefig``, ``mrcfile``) still work.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dest.name}.", suffix=f".tmp{dest.suffix}", dir=dest.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (fsync before the rename); returns the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temp_files(folder: str | os.PathLike[str], depth: int = 2) -> list[Path]:
    """Delete temporary files that :func:`atomic_path` left behind; returns the removed paths.

    A process killed mid-write leaves them in ``folder`` or ``depth`` levels of subfolders
    (``checkpoints/``, ``half1/checkpoints/``). Only names of the form
    ``.<name>.<random>.tmp<suffix>`` are touched. Call it only while no other process writes
    there (a run holds the folder's lock).
    """
    root = Path(folder)
    removed = []
    patterns = [".*.tmp*"] + ["/".join(["*"] * k + [".*.tmp*"]) for k in range(1, depth + 1)]
    for pattern in patterns:
        for path in root.glob(pattern):
            if path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
