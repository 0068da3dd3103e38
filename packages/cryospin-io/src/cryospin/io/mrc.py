"""MRC particle stacks and maps: lazy memory-mapped reading, validated headers, atomic writing.

Stacks (``.mrcs``/``.mrc``) hold images ``(n, L, L)`` in modes float32 (2), float16 (12),
int16 (1), uint16 (6) or int8 (0); other modes are rejected. Images are read through
``mrcfile.mmap``, so only the requested images are paged in and RAM does not grow with N.
Maps are written as MRC float32 with the voxel size and a zero origin, axes in MRC order
(the array's ``[z, y, x]`` indexing), which ChimeraX reads at the right scale.
"""

from __future__ import annotations

import mmap
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from cryospin.core.atomic import atomic_path
from cryospin.core.errors import InputError

#: MRC modes accepted for particle stacks, with their names.
SUPPORTED_MODES = {0: "int8", 1: "int16", 2: "float32", 6: "uint16", 12: "float16"}
#: Largest pixel magnitude accepted in a stack (3e38 in a float32 stack is corruption).
MAX_PIXEL = 1e30
_MAX_OPEN = 64
_FAULT_AROUND = max(mmap.PAGESIZE, 65536)  # Linux's default fault_around_bytes


@dataclass(frozen=True)
class StackHeader:
    """What a stack's header says: image count ``n``, side ``box``, pixel size (0 when unset)."""

    path: Path
    n: int
    box: int
    pixel_size_A: float
    mode: int


def read_stack_header(path: Path, bare: bool = False) -> StackHeader:
    """Read and validate the header of a particle stack, as ``mrcfile.validate`` would.

    The file size must equal what the header promises (1024 + extended header + data): a
    header describing 16 x 16 images over 32 x 32 data is an error, not garbage images. A
    3-D map is refused (:func:`_looks_like_volume`; ``bare``: the file is the input itself,
    not a stack named by metadata).

    Raises:
        InputError: not an MRC file, unsupported mode, non-square images, a file shorter or
            longer than its header promises, or a 3-D volume (names the file and the field).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, header_only=True, permissive=True) as mrc:
                h = mrc.header
                mode = int(h.mode)
                nx, ny, nz = int(h.nx), int(h.ny), int(h.nz)
                nsymbt = int(h.nsymbt)
                ispg, mz = int(h.ispg), int(h.mz)
                volume = _looks_like_volume(path, h, bare)
                data_bytes = _data_bytes(h) if mode in SUPPORTED_MODES else 0
                voxel = float(mrc.voxel_size.x)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable MRC file ({exc})") from exc
    if mode not in SUPPORTED_MODES:
        names = ", ".join(f"{m} ({n})" for m, n in SUPPORTED_MODES.items())
        raise InputError(f"{path}: unsupported MRC mode {mode}; expected one of {names}")
    if nx != ny:
        raise InputError(f"{path}: header nx = {nx}, ny = {ny}; expected square images")
    if nx <= 0 or nz <= 0 or nsymbt < 0:
        raise InputError(
            f"{path}: header nx, ny, nz = {nx}, {ny}, {nz} (nsymbt {nsymbt}); "
            "expected positive dimensions"
        )
    expected = 1024 + nsymbt + data_bytes
    size = os.path.getsize(path)
    if size != expected:
        state = "truncated" if size < expected else "larger than its header says"
        raise InputError(
            f"{path}: file is {state}: {size} bytes, the header (nx, ny, nz = {nx}, {ny}, "
            f"{nz}, mode {mode}, nsymbt {nsymbt}) needs {expected}"
        )
    if volume:
        raise InputError(
            f"{path}: a 3-D map, not a particle stack (nx = ny = nz = {nx}, ispg {ispg}, "
            f"mz {mz}, {path.suffix}); expected a stack of 2-D images (saved as .mrcs)"
        )
    return StackHeader(path, nz, nx, voxel if np.isfinite(voxel) else 0.0, mode)


def _data_bytes(h: np.recarray) -> int:
    """Return the size in bytes of the data block the header promises.

    That is nx * ny * nz values of the mode's dtype (mrcfile's ``data_dtype_from_header``),
    the size ``mrcfile.validate`` compares with the file's.
    """
    voxels = int(h.nx) * int(h.ny) * int(h.nz)
    return voxels * mrcfile.utils.data_dtype_from_header(h).itemsize


def _looks_like_volume(path: Path, h: np.recarray, bare: bool) -> bool:
    """Whether a square-image MRC header ``h`` describes a 3-D map, not a stack of images.

    MRC2014 marks stacks with space group ``ispg`` 0 (mrcfile's ``is_image_stack``) and maps
    with a crystallographic group, but RELION writes stacks with ``ispg`` 1 (and ``cella`` 0)
    and cryoDRGN writes maps with ``ispg`` 0, so the space group alone decides nothing. A cube
    (``nx = ny = nz``) is a map when its header says so in full: ``ispg`` 1 to 230, ``mz = nz``
    and equal, non-zero voxel sizes ``cella / m`` along x and z. Given on its own (``bare``,
    no metadata naming its images), a cubic ``.mrc`` file is a map too: stacks are ``.mrcs``.
    """
    nx, nz, mx, mz = int(h.nx), int(h.nz), int(h.mx), int(h.mz)
    if nz != nx or nz <= 1:
        return False
    ax, az = float(h.cella.x), float(h.cella.z)
    isotropic = mx > 0 and mz > 0 and ax > 0 and bool(np.isclose(ax / mx, az / mz, rtol=1e-3))
    if 1 <= int(h.ispg) <= 230 and mz == nz and isotropic:
        return True
    return bare and path.suffix.lower() == ".mrc"


def _open_mmap(path: Path) -> tuple[mrcfile.mrcmemmap.MrcMemmap, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mrc = mrcfile.mmap(path, mode="r", permissive=True)
    data = mrc.data
    if data is None:
        mrc.close()
        raise InputError(f"{path}: MRC data block could not be mapped (truncated or corrupt)")
    mm = getattr(data, "_mmap", None)
    if mm is not None and hasattr(mmap, "MADV_RANDOM"):
        # Particle access is random: no read-around, which would map (and keep resident)
        # neighbouring images that were not asked for.
        mm.madvise(mmap.MADV_RANDOM)
    return mrc, (data[None] if data.ndim == 2 else data)


def _release(data: np.ndarray, rows: np.ndarray, flush: bool = False) -> None:
    """Unmap the pages of images ``rows`` of ``data`` (a memory map) from this process.

    Pages of a file mapping stay resident (and count in the process's RSS) once touched; an
    epoch over a large stack would otherwise map the whole file. ``MADV_DONTNEED`` drops them
    from this process; the kernel's page cache keeps them, so a re-read is still fast. With
    ``flush`` (a writable shared map) the pages are written back first.
    """
    mm = getattr(data, "_mmap", None)
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if not isinstance(data, np.memmap) or mm is None or advice is None or data.ndim != 3:
        return
    size = data[0].nbytes
    base = int(data.offset) % mmap.ALLOCATIONGRANULARITY  # numpy maps from this boundary
    rows = np.unique(rows)
    breaks = np.nonzero(np.diff(rows) != 1)[0] + 1
    for run in np.split(rows, breaks):  # runs of consecutive images: one call each
        start = base + int(run[0]) * size
        end = base + (int(run[-1]) + 1) * size
        aligned = start - start % mmap.PAGESIZE
        if flush:
            mm.flush(aligned, end - aligned)
        # A read fault also maps the cached pages of its 64 KiB "fault-around" window, which
        # reach into the neighbouring images: drop whole windows.
        lo = start - start % _FAULT_AROUND
        hi = min(-(-end // _FAULT_AROUND) * _FAULT_AROUND, len(mm))
        mm.madvise(advice, lo, hi - lo)


class MrcImageReader:
    """Lazy reader over particles stored in one or more MRC stacks.

    Particle ``i`` is image ``indices[i]`` (0-based) of stack ``files[file_ids[i]]``. At most
    64 stacks are mapped at a time (least recently used are unmapped), so a STAR referencing
    thousands of stacks does not exhaust file handles. The reader pickles without its maps
    (for data-loader workers). ``read`` returns float32 ``(n, L, L)`` and raises
    :class:`InputError` naming the file and image on NaN, inf or absurd pixels
    (``|x| >`` :data:`MAX_PIXEL`).
    """

    def __init__(self, files: list[Path], file_ids: np.ndarray, indices: np.ndarray, box: int):
        self.files = [Path(f) for f in files]
        self.file_ids = np.asarray(file_ids, dtype=np.int32)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.box = int(box)
        self._maps: OrderedDict[int, tuple] = OrderedDict()

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"] = OrderedDict()
        return state

    def _data(self, file_id: int) -> np.ndarray:
        entry = self._maps.pop(file_id, None)
        if entry is None:
            entry = _open_mmap(self.files[file_id])
        self._maps[file_id] = entry
        while len(self._maps) > _MAX_OPEN:
            self._maps.popitem(last=False)[1][0].close()
        return entry[1]

    def close(self) -> None:
        """Unmap every open stack (they are reopened on the next read)."""
        while self._maps:
            self._maps.popitem()[1][0].close()

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Float32 images ``(n, L, L)`` ``[y, x]`` of particles ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            bad = idx[(idx < -n) | (idx >= n)][0]
            raise IndexError(f"particle index {bad} out of range for {n} particles")
        out = np.empty((idx.size, self.box, self.box), dtype=np.float32)
        fids = self.file_ids[idx]
        local = self.indices[idx]
        for fid in np.unique(fids):
            sel = np.nonzero(fids == fid)[0]
            data = self._data(int(fid))
            rows = local[sel]
            order = np.argsort(rows, kind="stable")
            # Sorted access reads the file front to back; then scatter back to request order.
            out[sel[order]] = data[rows[order]]
            _release(data, rows)
        flat = out.reshape(out.shape[0], -1)
        with np.errstate(invalid="ignore"):
            bad_pixel = ~(np.abs(flat) <= MAX_PIXEL)  # NaN compares false
        bad = bad_pixel.any(axis=1)
        if bad.any():
            k = int(np.nonzero(bad)[0][0])
            value = flat[k][bad_pixel[k]][0]
            raise InputError(
                f"{self.files[fids[k]]}: image {local[k] + 1} (particle {idx[k]}) has a pixel "
                f"value {value:g}; expected finite values (not NaN or inf) with "
                f"|x| <= {MAX_PIXEL:g}"
            )
        return out


def check_indices(
    reader: MrcImageReader, headers: list[StackHeader], source: Path, field: str
) -> None:
    """Check every particle's image index (from metadata ``field``) against its stack.

    Raises:
        InputError: an index is beyond its stack, or stacks differ in box (names file and row).
    """
    counts = np.array([h.n for h in headers])
    over = reader.indices >= counts[reader.file_ids]
    if over.any():
        row = int(np.nonzero(over)[0][0])
        h = headers[reader.file_ids[row]]
        raise InputError(
            f"{source}: row {row + 1}: {field} names image {reader.indices[row] + 1}, out of "
            f"range for {h.path}, which holds {h.n} images"
        )
    for h in headers:
        if h.box != reader.box:
            raise InputError(
                f"{h.path}: images are {h.box} px; expected {reader.box} px like the other stacks"
            )


def open_stacks(
    paths: list[Path], file_ids: np.ndarray, indices: np.ndarray, source: Path, field: str
):
    """Validate the stacks and build a :class:`MrcImageReader` with their headers.

    ``field`` is the metadata field holding the indices (for messages). Returns
    ``(reader, headers)``.
    """
    headers = [read_stack_header(p) for p in paths]
    reader = MrcImageReader(paths, file_ids, indices, headers[0].box if headers else 0)
    check_indices(reader, headers, source, field)
    return reader, headers


def write_mrc_stack(path: str | os.PathLike[str], images: np.ndarray, pixel_size_A: float) -> None:
    """Write images ``(n, L, L)`` ``[y, x]`` as a float32 MRC stack (``ispg`` 0), atomically."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise InputError(f"{path}: images have shape {images.shape}; expected (n, L, L)")
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(images)
            mrc.set_image_stack()
            mrc.voxel_size = float(pixel_size_A)
            mrc.header.origin = (0.0, 0.0, 0.0)


class StackWriter:
    """Append images to an MRC float32 stack in batches, without holding the stack in RAM.

    The file is created at its full size (``n`` images) and filled through a memory map whose
    pages are written back and released after each batch (RSS stays flat); it appears under
    its final name only on :meth:`close` (written atomically)::

        with StackWriter(path, n, box, pixel_size_A) as w:
            for batch in batches:
                w.write(batch)
    """

    def __init__(self, path: str | os.PathLike[str], n: int, box: int, pixel_size_A: float):
        self.path = Path(path)
        self.n = int(n)
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        self._mrc = mrcfile.new_mmap(
            tmp, shape=(self.n, int(box), int(box)), mrc_mode=2, overwrite=True
        )
        self._mrc.set_image_stack()
        self._mrc.voxel_size = float(pixel_size_A)
        self._mrc.header.origin = (0.0, 0.0, 0.0)
        self.count = 0

    def write(self, images: np.ndarray) -> None:
        """Append float images ``(b, L, L)``."""
        images = np.asarray(images, dtype=np.float32)
        end = self.count + len(images)
        if end > self.n:
            raise ValueError(f"{self.path}: writing image {end} of a stack sized for {self.n}")
        self._mrc.data[self.count : end] = images
        _release(self._mrc.data, np.arange(self.count, end), flush=True)
        self.count = end

    def close(self, exc: BaseException | None = None) -> None:
        """Finish the file (update header statistics) and move it into place."""
        if exc is None and self.count != self.n:
            exc = ValueError(f"{self.path}: {self.count} images written, {self.n} expected")
        self._mrc.update_header_stats()
        self._mrc.close()
        if exc is None:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)
            raise exc

    def __enter__(self) -> StackWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(exc)


def write_map(path: str | os.PathLike[str], volume: np.ndarray, voxel_size_A: float) -> None:
    """Write a map ``(D, D, D)`` indexed ``[z, y, x]`` as MRC float32, atomically.

    The header gets the voxel size in Å, a zero origin, ``nxstart = nystart = nzstart = 0``,
    axis order (1, 2, 3) and space group 1, so ChimeraX shows it at the right scale.
    """
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError(f"{path}: a map must be 3-D (D, D, D), got shape {vol.shape}")
    if voxel_size_A <= 0:
        raise ValueError(f"{path}: voxel size must be positive, got {voxel_size_A}")
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(vol)
            mrc.set_volume()
            mrc.voxel_size = float(voxel_size_A)
            mrc.header.origin = (0.0, 0.0, 0.0)
            mrc.header.nxstart = mrc.header.nystart = mrc.header.nzstart = 0
            mrc.update_header_stats()


def read_map(path: str | os.PathLike[str]) -> tuple[np.ndarray, float]:
    """Read a cubic map: returns ``(volume (D, D, D) float32 [z, y, x], voxel_size_A)``.

    Raises:
        InputError: not a 3-D map, non-cubic grid, anisotropic voxels, axes not in (x, y, z)
            order, zero voxel size, or NaN/inf values.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, mode="r", permissive=True) as mrc:
                if mrc.data is None:
                    raise InputError(f"{path}: map data could not be read (truncated or corrupt)")
                data = np.array(mrc.data, dtype=np.float32)
                voxel = mrc.voxel_size
                axes = (int(mrc.header.mapc), int(mrc.header.mapr), int(mrc.header.maps))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable MRC file ({exc})") from exc
    if data.ndim != 3 or len(set(data.shape)) != 1:
        raise InputError(f"{path}: map has shape {data.shape}; expected a cubic (D, D, D) grid")
    if axes != (1, 2, 3):
        raise InputError(f"{path}: axis order (mapc, mapr, maps) = {axes}; expected (1, 2, 3)")
    sizes = (float(voxel.x), float(voxel.y), float(voxel.z))
    if not np.allclose(sizes, sizes[0], rtol=1e-4):
        raise InputError(f"{path}: voxel size {sizes} is anisotropic; expected equal x, y, z")
    if sizes[0] <= 0:
        raise InputError(f"{path}: voxel size is {sizes[0]}; expected a positive size in Å")
    if not np.isfinite(data).all():
        raise InputError(f"{path}: map contains NaN or inf values; expected finite values")
    return data, sizes[0]
