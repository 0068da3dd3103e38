"""Image-path handling for metadata files: ``N@path`` names and data-directory resolution.

A STAR ``rlnImageName`` is ``N@path`` with ``N`` 1-based; a cryoSPARC ``blob/path`` may start with
``>`` (relative to the project folder). A referenced stack is looked for, in order:

1. the path as written, if absolute;
2. relative to the metadata file's folder;
3. relative to ``datadir`` (the path as written, then its trailing parts: ``a/b/c.mrcs``,
   ``b/c.mrcs``), then ``datadir / file name``.

When nothing matches, :class:`~cryospin.core.errors.InputError` lists every path tried.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cryospin.core.errors import InputError


def split_image_names(names: np.ndarray | list[str], source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Split ``N@path`` names into 0-based indices ``(n,)`` int64 and paths ``(n,)`` object.

    Raises:
        InputError: a name lacks ``@`` or its index is not a positive integer (names the row).
    """
    names = np.asarray(names, dtype=object)
    indices = np.empty(len(names), dtype=np.int64)
    paths = np.empty(len(names), dtype=object)
    for row, name in enumerate(names):
        text = str(name).strip()
        number, at, rest = text.partition("@")
        if not at or not rest:
            raise InputError(f"{source}: row {row + 1}: rlnImageName '{text}' is not 'N@path'")
        try:
            index = int(number)
        except ValueError:
            index = 0
        if index < 1:
            raise InputError(
                f"{source}: row {row + 1}: rlnImageName '{text}': the index must be an integer "
                ">= 1 (STAR indices are 1-based)"
            )
        indices[row] = index - 1
        paths[row] = rest
    return indices, paths


def strip_cryosparc_prefix(path: str) -> str:
    """Remove cryoSPARC's leading ``>`` (path relative to the project folder)."""
    return path[1:] if path.startswith(">") else path


def candidate_paths(name: str, base: Path, datadir: Path | None) -> list[Path]:
    """List the paths where a stack named ``name`` is looked for, in order (see module doc)."""
    written = Path(strip_cryosparc_prefix(name))
    if written.is_absolute():
        found = [written]
    else:
        found = [base / written]
    if datadir is not None:
        parts = written.parts[1:] if written.is_absolute() else written.parts
        for start in range(len(parts)):
            found.append(datadir / Path(*parts[start:]))
    unique: list[Path] = []
    for p in found:
        if p not in unique:
            unique.append(p)
    return unique


def resolve_stack_path(name: str, base: Path, datadir: Path | None, source: Path) -> Path:
    """Find the stack file ``name`` referenced by metadata file ``source`` in folder ``base``.

    Raises:
        InputError: no candidate exists; the message lists every path tried.
    """
    tried = candidate_paths(name, base, datadir)
    for p in tried:
        if p.is_file():
            return p
    hint = (
        "; pass --datadir (a folder to search) or --stack (the file, when only one stack is named)"
    )
    raise InputError(
        f"{source}: image stack '{name}' not found; tried: "
        + ", ".join(str(p) for p in tried)
        + hint
    )
