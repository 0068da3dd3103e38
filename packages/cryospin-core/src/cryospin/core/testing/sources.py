"""Image-source contract checks (the rules of :class:`cryospin.core.interfaces.ImageSource`).

Rules checked on an instance (no sample file needed):

* **Declaration**: ``suffixes`` are non-empty, lower case and dotted; if the source is registered,
  :meth:`~cryospin.core.registry.Registry.source_for` routes each suffix to it, whatever the case
  of the file name.
* **Bad files**: a missing file and a file of garbage bytes raise
  :class:`~cryospin.core.errors.InputError`, never another exception.
* **Maps** (when provided): ``write_map`` then ``read_map`` returns the volume and voxel size.

Rules checked with a sample file of the source's format:

* **Read**: a :class:`~cryospin.core.particles.ParticleStack` of ``n >= 1`` particles, an even
  box ``L``, float32 images ``(k, L, L)``, ``n`` CTF values per field; ``default_invert`` is a
  bool; ``measure_contrast`` (when provided) two finite floats.
* **Poses** (when ``write_poses`` is provided): poses written and read back agree (rotations to
  1e-4, shifts to 1e-3 Å).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cryospin.core.errors import InputError
from cryospin.core.interfaces import ImageSource
from cryospin.core.particles import ParticleStack
from cryospin.core.registry import get_registry
from cryospin.core.so3 import random_rotations


def _name(source: ImageSource) -> str:
    return f"{type(source).__module__}.{type(source).__qualname__}"


def check_source_declaration(source: ImageSource) -> None:
    """Check the suffixes and that the registry routes each of them to ``source``."""
    name = _name(source)
    assert isinstance(source, ImageSource), f"{name} must be an interfaces.ImageSource instance"
    sfx = source.suffixes
    assert sfx and all(s.startswith(".") and s == s.lower() for s in sfx), f"{name}: {sfx}"
    registry = get_registry()
    if any(c.obj is source for c in registry.components.get("image_source", {}).values()):
        for s in sfx:
            for file in (f"/d/particles{s}", f"PARTICLES{s.upper()}"):
                got = registry.source_for(file)
                assert got is source, f"{name}: source_for({file!r}) gave {_name(got)}"


def check_source_bad_files(source: ImageSource, tmp: Path) -> None:
    """Check that a missing file and a garbage file raise :class:`InputError`."""
    name = _name(source)
    suffix = source.suffixes[0]
    garbage = tmp / f"garbage{suffix}"
    garbage.write_bytes(np.random.default_rng(0).bytes(333))
    for path in (tmp / f"missing{suffix}", garbage):
        try:
            stack = source.read(path)
            len(stack.images.read(np.arange(len(stack))))
        except InputError:
            continue
        except Exception as exc:  # noqa: BLE001 - the wrong kind of error is the failure
            raise AssertionError(
                f"{name}.read({path.name}) raised {exc!r}, not InputError"
            ) from exc
        raise AssertionError(f"{name}.read({path.name}) did not raise InputError")


def check_source_maps(source: ImageSource, tmp: Path) -> None:
    """When maps are provided: ``write_map`` then ``read_map`` gives back volume and voxel size."""
    if not (source.provides("read_map") and source.provides("write_map")):
        return
    name = _name(source)
    vol = np.random.default_rng(1).standard_normal((8, 8, 8)).astype(np.float32)
    path = tmp / "map.mrc"
    source.write_map(path, vol, 2.5)
    back, apix = source.read_map(path)
    assert np.array_equal(np.asarray(back), vol), f"{name}: map differs after write/read"
    assert abs(apix - 2.5) < 1e-4, f"{name}: voxel size {apix} after writing 2.5"


def check_source_read(source: ImageSource, sample: Path) -> ParticleStack:
    """Read ``sample``: a well-formed stack; ``default_invert`` and ``measure_contrast`` typed."""
    name = _name(source)
    stack = source.read(sample)
    assert isinstance(stack, ParticleStack), f"{name}.read gave {type(stack).__name__}"
    n, box = len(stack), stack.box
    assert n >= 1 and isinstance(box, int) and box % 2 == 0, f"{name}: n={n}, box={box}"
    img = stack.images.read(np.array([0, n - 1]))
    assert img.shape == (2, box, box) and img.dtype == np.float32, f"{name}: {img.shape}"
    assert np.isfinite(img).all(), f"{name}: non-finite pixels"
    for field, values in vars(stack.ctf).items():
        assert values is None or len(values) == n, f"{name}: ctf.{field} has {len(values)} rows"
    assert isinstance(source.default_invert(stack), bool), f"{name}.default_invert not a bool"
    if source.provides("measure_contrast"):
        mean, t = source.measure_contrast(stack)
        assert np.isfinite([mean, t]).all(), f"{name}.measure_contrast gave {mean}, {t}"
    return stack


def check_source_write_poses(source: ImageSource, sample: Path, tmp: Path) -> None:
    """When provided: poses written by ``write_poses`` are read back by ``read``."""
    if not source.provides("write_poses"):
        return
    name = _name(source)
    stack = source.read(sample)
    n = len(stack)
    rots = random_rotations(n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    shifts = np.random.default_rng(3).uniform(-5, 5, (n, 2))
    out = tmp / f"poses{source.suffixes[0]}"
    source.write_poses(out, stack, rots.numpy(), shifts)
    back = source.read(out, sample.parent)  # image names may be relative to the sample
    assert back.rotations is not None and back.shifts_A is not None, f"{name}: no poses read"
    err_r = np.abs(np.asarray(back.rotations) - rots.numpy()).max()
    err_s = np.abs(np.asarray(back.shifts_A) - shifts).max()
    assert err_r < 1e-4 and err_s < 1e-3, f"{name}: poses off by {err_r:.2g}, shifts {err_s:.2g}"
