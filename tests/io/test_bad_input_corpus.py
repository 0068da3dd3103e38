"""Bad-input corpus: one mutation at a time of real and small simulated particle files.

Every case copies a valid base (real stacks from ``../shared/data/real-stacks`` or a small
simulated stack written here), changes one thing (a STAR or ``.cs`` value, an MRC header field,
a few bytes, one pixel, a table's rows) and runs ``cryospin info`` in-process. Each must exit
with status 2 and print exactly one line (no warning lines, nothing on stdout) naming the file
and the field. Most cases (:attr:`Case.run`) also run ``cryospin run`` with tiny settings and
check that nothing but ``run.log`` (the failed start's log) was left in ``--out``. The valid
bases themselves must pass (exit 0).
"""

from __future__ import annotations

import os
import shutil
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cryospin.core.cli.main import main
from cryospin.io import write_mrc_stack

REPO = Path(__file__).resolve().parents[2]
REAL = Path(os.environ.get("CRYOSPIN_SHARED_DATA", REPO.parent / "shared" / "data")) / "real-stacks"


@dataclass(frozen=True)
class Base:
    """A valid input: the particle file given to the CLI, its stacks and the files to copy."""

    particles: str  # file name inside the case folder
    stacks: tuple[str, ...]  # stack names inside the case folder (first: the one mutated)
    copies: tuple[tuple[str, str], ...]  # (source, name in the case folder)
    clean_warnings: bool = True  # info prints no warning line on the valid file


BASES = {
    "relion31": Base(
        "relion31.star",
        ("relion31.mrcs",),
        (("relion31/relion31.star", "relion31.star"), ("relion31/relion31.mrcs", "relion31.mrcs")),
        clean_warnings=False,  # its header pixel size (1 Å) disagrees with the STAR's
    ),
    "trpv1": Base(
        "trpv1.star",
        ("batch_0_restacked.mrc",),
        (
            ("trpv1/trpv1_small_stack.star", "trpv1.star"),
            ("trpv1/trpv1_small_stack.mrcs", "batch_0_restacked.mrc"),
        ),
    ),
    "aspire31": Base(
        "aspire.star",
        ("sample.mrcs",),
        (
            ("aspire-sample/sample_particles_relion31.star", "aspire.star"),
            ("aspire-sample/sample.mrcs", "sample.mrcs"),
        ),
    ),
    "empiar30": Base(
        "empiar.star",
        ("empiar_10076_7.mrc",),
        (
            ("empiar-10076/empiar_10076_7.star", "empiar.star"),
            ("empiar-10076/empiar_10076_7.mrc", "empiar_10076_7.mrc"),
        ),
    ),
    "empiar_cs": Base(
        "empiar.cs",
        ("empiar_10076_7.mrc",),
        (
            ("empiar-10076/empiar_10076_7.cs", "empiar.cs"),
            ("empiar-10076/empiar_10076_7.mrc", "empiar_10076_7.mrc"),
        ),
    ),
    "sim": Base("sim.star", ("sim.mrcs",), ()),
    "sim_cs": Base("sim.cs", ("sim.mrcs",), ()),
    "bare": Base("sim.mrcs", ("sim.mrcs",), ()),
}

# ---------------------------------------------------------------------------------------------
# The mutations. STAR values are text as written into the file; a field absent from a base is
# not mutated there. What each error line must name is set in _prepare (the field, else the
# header word, the image or the missing file).
# ---------------------------------------------------------------------------------------------
STAR_VALUES = {
    "rlnAmplitudeContrast": ["7", "-0.1", "1", "nan", "abc"],
    "rlnDefocusU": ["-15000", "0", "1e9", "nan", "inf"],
    "rlnDefocusV": ["-15000", "1e9", "inf"],
    "rlnDefocusAngle": ["1e30", "nan"],
    "rlnVoltage": ["0", "-300", "1e7", "nan", "kV"],
    "rlnSphericalAberration": ["-2.7", "2700", "nan"],
    "rlnImagePixelSize": ["0", "-1.2", "3e38", "nan"],
    "rlnDetectorPixelSize": ["0", "-5"],
    "rlnMagnification": ["0", "-38168"],
    "rlnPhaseShift": ["1e30"],
    "rlnCtfBfactor": ["1e30"],
    "rlnAngleRot": ["nan", "1e30"],
    "rlnAngleTilt": ["inf"],
    "rlnAnglePsi": ["1e30"],
    "rlnOriginXAngst": ["1e30", "nan"],
    "rlnOriginYAngst": ["-1e30"],
    "rlnOriginX": ["1e30"],
    "rlnOriginY": ["nan"],
    "rlnImageSize": ["0", "-48", "nan"],
    "rlnOpticsGroup": ["99", "abc", "1.5"],
    "rlnRandomSubset": ["3"],
    "rlnImageName": ["0@{stack}", "999@{stack}", "garbage", "1@missing.mrcs"],
}
CS_VALUES = {
    "ctf/amp_contrast": [7.0, -0.1, np.nan],
    "ctf/df1_A": [-15000.0, 0.0, 1e9, np.nan],
    "ctf/df2_A": [-1.0, np.inf],
    "ctf/accel_kv": [0.0, -300.0, 1e7],
    "ctf/cs_mm": [-1.0, 1e3],
    "ctf/df_angle_rad": [1e30],
    "ctf/phase_shift_rad": [np.nan],
    "ctf/bfactor": [1e30],
    "blob/psize_A": [0.0, -1.0, 3e38, np.nan],
    "blob/idx": [999],
    "blob/shape": [8],
}
#: MRC header word -> (byte offset, new value as a function of the old one, expected text).
MRC_HEADER = {
    "nx_half": (0, lambda v: v // 2, "nx"),
    "ny_half": (4, lambda v: v // 2, "ny"),
    "nxy_half": (None, lambda v: v // 2, "nx, ny, nz"),  # nx and ny halved: L/2 over L data
    "nz_plus": (8, lambda v: v + 1, "nz"),
    "nz_minus": (8, lambda v: v - 1, "nz"),
    "nz_zero": (8, lambda v: 0, "nz"),
    "mode_complex": (12, lambda v: 4, "mode 4"),
    "mode_unknown": (12, lambda v: 99, "mode 99"),
    "mode_int16": (12, lambda v: 1, "mode 1"),
    "nsymbt": (92, lambda v: 1 << 20, "nsymbt"),
}
BYTES = {"truncated": -1, "one_byte_more": 1, "page_more": 4096}
PIXELS = ["nan", "inf", "-inf", "3e38", "-1e31"]
#: The bases each family of mutations applies to.
STAR_BASES = ("relion31", "trpv1", "aspire31", "empiar30", "sim")
STACK_BASES = ("relion31", "trpv1", "aspire31", "empiar30", "empiar_cs", "sim", "sim_cs", "bare")
PIXEL_BASES = ("trpv1", "empiar30", "empiar_cs", "sim", "sim_cs", "bare")


# ---------------------------------------------------------------------------------------------
# Base files and mutation helpers
# ---------------------------------------------------------------------------------------------
SIM_STAR = """data_optics

loop_
_rlnOpticsGroup
_rlnVoltage
_rlnSphericalAberration
_rlnAmplitudeContrast
_rlnImagePixelSize
_rlnImageSize
1 300 2.7 0.1 2.0 16

data_particles

loop_
_rlnImageName
_rlnDefocusU
_rlnDefocusV
_rlnDefocusAngle
_rlnPhaseShift
_rlnCtfBfactor
_rlnAngleRot
_rlnAngleTilt
_rlnAnglePsi
_rlnOriginXAngst
_rlnOriginYAngst
_rlnOpticsGroup
_rlnRandomSubset
{rows}
"""
SIM_N = 6


def _write_sim(folder: Path) -> None:
    """A small simulated stack (6 Gaussian blobs in noise, 16 px, 2 Å) as .star, .cs, .mrcs."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:16, :16] - 8
    images = np.exp(-(x**2 + y**2) / 8.0)[None] + 0.3 * rng.normal(size=(SIM_N, 16, 16))
    write_mrc_stack(folder / "sim.mrcs", images, 2.0)
    rows = "\n".join(
        f"{i + 1}@sim.mrcs {15000 + 100 * i} {14500 + 100 * i} 30 0 0 10 20 30 1.5 -2.0 1 "
        f"{1 + i % 2}"
        for i in range(SIM_N)
    )
    (folder / "sim.star").write_text(SIM_STAR.format(rows=rows))
    fields = ["ctf/amp_contrast", "ctf/df1_A", "ctf/df2_A", "ctf/accel_kv", "ctf/cs_mm"]
    fields += ["ctf/df_angle_rad", "ctf/phase_shift_rad", "ctf/bfactor", "blob/psize_A"]
    dtype = [(f, "<f4") for f in fields] + [("blob/path", "S16"), ("blob/idx", "<u4")]
    dtype.append(("blob/shape", "<u4", (2,)))
    cs = np.zeros(SIM_N, dtype=dtype)
    for name, value in zip(fields, (0.1, 15000, 14500, 300, 2.7, 0.5, 0, 0, 2.0), strict=True):
        cs[name] = value
    cs["blob/path"], cs["blob/idx"], cs["blob/shape"] = b"sim.mrcs", np.arange(SIM_N), 16
    with open(folder / "sim.cs", "wb") as fh:
        np.save(fh, cs)


def _star_fields(text: str) -> set[str]:
    return {line.split()[0][1:] for line in text.splitlines() if line.startswith("_rln")}


def _star_loop(lines: list[str], field: str) -> tuple[int, int, list[int]]:
    """Header line of ``field`` in its (last) loop, its column, and the loop's row lines."""
    head = max(i for i, line in enumerate(lines) if line.split()[:1] == [f"_{field}"])
    first = head
    while lines[first - 1].startswith("_"):
        first -= 1
    last = head
    while last + 1 < len(lines) and lines[last + 1].startswith("_"):
        last += 1
    rows = []
    for i in range(last + 1, len(lines)):
        if lines[i].strip().startswith("data_"):
            break
        if lines[i].strip() and not lines[i].lstrip().startswith("#"):
            rows.append(i)
    return head, head - first, rows


def set_star_value(path: Path, field: str, value: str) -> int:
    """Write ``value`` into ``field`` of the last row of its loop; returns that row (1-based)."""
    lines = path.read_text().splitlines()
    _, col, rows = _star_loop(lines, field)
    tokens = lines[rows[-1]].split()
    tokens[col] = value
    lines[rows[-1]] = " ".join(tokens)
    path.write_text("\n".join(lines) + "\n")
    return len(rows)


def drop_rows(path: Path, field: str) -> None:
    """Delete every row of the loop holding ``field`` (its header stays)."""
    lines = path.read_text().splitlines()
    rows = set(_star_loop(lines, field)[2])
    path.write_text("\n".join(line for i, line in enumerate(lines) if i not in rows) + "\n")


def drop_column(path: Path, field: str) -> None:
    """Delete ``field``: its header line and its value in every row."""
    lines = path.read_text().splitlines()
    head, col, rows = _star_loop(lines, field)
    for i in rows:
        tokens = lines[i].split()
        lines[i] = " ".join(tokens[:col] + tokens[col + 1 :])
    del lines[head]
    path.write_text("\n".join(lines) + "\n")


def add_column(path: Path, beside: str, field: str, values: list[str]) -> None:
    """Add ``field`` at the end of the loop holding ``beside``, one value per row."""
    lines = path.read_text().splitlines()
    _, _, rows = _star_loop(lines, beside)
    for i, value in zip(rows, values, strict=True):
        lines[i] = f"{lines[i].rstrip()} {value}"
    lines.insert(rows[0], f"_{field}")
    path.write_text("\n".join(lines) + "\n")


def set_header(path: Path, offset: int, change) -> None:
    """Replace the little-endian int32 at ``offset`` of an MRC header by ``change(old)``."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        old = struct.unpack("<i", fh.read(4))[0]
        fh.seek(offset)
        fh.write(struct.pack("<i", change(old)))


def set_last_pixel(path: Path, value: float) -> int:
    """Set the centre pixel of the last image of a float32 stack; returns the image count."""
    with open(path, "r+b") as fh:
        nx, _, nz, mode = struct.unpack("<4i", fh.read(16))
        fh.seek(92)
        nsymbt = struct.unpack("<i", fh.read(4))[0]
        assert mode == 2
        fh.seek(1024 + nsymbt + 4 * ((nz - 1) * nx * nx + (nx // 2) * nx + nx // 2))
        fh.write(struct.pack("<f", value))
    return nz


# ---------------------------------------------------------------------------------------------
# The case table
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One mutation (``kind``, ``target``, ``value``) of one base."""

    id: str
    base: str
    kind: str
    target: object
    value: object = None

    @property
    def run(self) -> bool:
        """Also run ``cryospin run``: every case failing at open on the simulated bases, and
        every structural case (value cases of the real files take the same path as ``info``;
        pixel values are found only as images are read, after the run started)."""
        if self.kind == "pixel":
            return False
        return self.base in ("sim", "sim_cs", "bare") or self.kind not in ("star", "cs")


def _base_text(base: str) -> str:
    if base == "sim":
        return SIM_STAR
    src = dict((name, s) for s, name in BASES[base].copies)[BASES[base].particles]
    return (REAL / src).read_text()


def _cases() -> list[Case]:
    cases = []
    for base in STAR_BASES:
        present = _star_fields(_base_text(base))
        for field, values in STAR_VALUES.items():
            if field in present:
                cases += [Case(f"{base}-{field}={v}", base, "star", field, v) for v in values]
        cases.append(Case(f"{base}-no-particle-rows", base, "empty", "rlnImageName"))
        cases.append(Case(f"{base}-no-rlnDefocusU", base, "drop", "rlnDefocusU"))
        if "rlnImagePixelSize" in present:
            cases.append(Case(f"{base}-no-optics-rows", base, "empty", "rlnImagePixelSize"))
    for base in ("empiar_cs", "sim_cs"):
        cases += [
            Case(f"{base}-{field}={v}", base, "cs", field, v)
            for field, values in CS_VALUES.items()
            for v in values
        ]
        cases.append(Case(f"{base}-no-rows", base, "cs_empty", None))
    for base in STACK_BASES:
        cases += [Case(f"{base}-mrc-{name}", base, "header", name) for name in MRC_HEADER]
        cases += [Case(f"{base}-bytes-{name}", base, "bytes", n) for name, n in BYTES.items()]
    for base in PIXEL_BASES:
        cases += [Case(f"{base}-pixel={v}", base, "pixel", v) for v in PIXELS]
    cases += [
        Case("aspire31-two-box-sizes", "aspire31", "box_sizes", None),
        Case("trpv1-map-as-stack", "trpv1", "volume", "../maps/ribosome_4ug0_potential_4A.mrc"),
        Case("bare-volume", "bare", "volume", "trpv1/trpv1_volume.mrc"),
        Case("bare-pixel-size-0", "bare", "cella", 0.0),
        Case("bare-pixel-size-1e30", "bare", "cella", 1e30),
        Case("sim-duplicate-optics-group", "sim", "dup_group", None),
        Case("sim-not-a-star", "sim", "junk", b"\x00\x01garbage", "no particle table"),
        Case("sim_cs-not-a-cs", "sim_cs", "junk", b"data_\nloop_\n", "not a readable"),
    ]
    return cases


CASES = _cases()


def _prepare(case: Case, folder: Path, sim: Path) -> tuple[Path, list[str]]:
    """Build the mutated case in ``folder``; returns the file for the CLI and expected texts."""
    base = BASES[case.base]
    for name in ("sim.star", "sim.cs", "sim.mrcs"):
        shutil.copy(sim / name, folder / name)
    for src, name in base.copies:
        shutil.copy(REAL / src, folder / name)
    particles, stack = folder / base.particles, folder / base.stacks[0]
    expect = [base.particles]
    if case.kind == "star":
        value = str(case.value).format(stack=base.stacks[0])
        row = set_star_value(particles, case.target, value)
        expect += ["missing.mrcs"] if "missing" in value else [case.target]
        if case.target == "rlnImageName" and "missing" not in value:
            expect.append(f"row {row}")
    elif case.kind == "empty":
        drop_rows(particles, case.target)
        expect.append("has no rows")
    elif case.kind == "drop":
        drop_column(particles, case.target)
        expect.append(case.target)
    elif case.kind == "cs":
        data = np.load(particles)
        data[case.target][-1] = case.value
        with open(particles, "wb") as fh:
            np.save(fh, data)
        expect.append(case.target)
    elif case.kind == "cs_empty":
        data = np.load(particles)[:0]
        with open(particles, "wb") as fh:
            np.save(fh, data)
        expect.append("no rows")
    elif case.kind == "header":
        offset, change, text = MRC_HEADER[case.target]
        for off in (0, 4) if offset is None else (offset,):
            set_header(stack, off, change)
        expect = [stack.name, text]
    elif case.kind == "bytes":
        size = os.path.getsize(stack)
        with open(stack, "r+b") as fh:
            fh.truncate(size + case.target)
        expect = [stack.name, "nx, ny, nz"]
    elif case.kind == "pixel":
        n = set_last_pixel(stack, float(case.target))
        expect = [stack.name, f"image {n} ", "pixel value"]
    elif case.kind == "box_sizes":
        add_column(particles, "rlnImagePixelSize", "rlnImageSize", ["256", "200"])
        expect += ["rlnImageSize", "256 px (group 1)", "200 px (group 2)"]
    elif case.kind == "volume":  # cryoDRGN's map (ispg 0) alone; a map with ispg 1 as a stack
        if case.base == "bare":
            stack = particles = folder / "volume.mrc"
        shutil.copy(REAL / case.target, stack)
        expect = [stack.name, "3-D map", "ispg"]
    elif case.kind == "cella":
        with open(stack, "r+b") as fh:
            fh.seek(40)
            fh.write(struct.pack("<3f", *(3 * [case.target * 16])))
        expect.append("header pixel size")
    elif case.kind == "dup_group":
        row = "1 300 2.7 0.1 2.0 16"
        particles.write_text(particles.read_text().replace(row, f"{row}\n1 200 2.7 0.1 2.0 16"))
        expect.append("rlnOpticsGroup")
    elif case.kind == "junk":
        particles.write_bytes(case.target)
        expect.append(case.value)
    return particles, expect


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sim")
    _write_sim(folder)
    (folder / "tiny.yaml").write_text("num_threads: 1\nepochs: 1\nbatch_size: 2\n")
    return folder


def _cli(args: list[str], capsys) -> tuple[int, list[str], str]:
    """Run the CLI in-process: (exit status, stderr lines with warnings added, stdout)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, err.strip().splitlines() + [str(w.message) for w in caught], out


def test_corpus_size():
    assert len(CASES) >= 150
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("base", sorted(BASES))
def test_valid_bases_pass(base, sim, tmp_path, capsys):
    particles, _ = _prepare(Case("valid", base, "none", None), tmp_path, sim)
    code, lines, out = _cli(["info", str(particles)], capsys)
    assert code == 0, lines
    assert "particles (N)" in out
    assert (lines == []) == BASES[base].clean_warnings, lines


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, sim, tmp_path, capsys):
    particles, expect = _prepare(case, tmp_path, sim)
    code, lines, out = _cli(["info", str(particles)], capsys)
    assert code == 2 and out == "", (code, out)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for text in expect:
        assert text in lines[0], (text, lines[0])
    if case.run:
        outdir = tmp_path / "out"
        args = ["run", "--particles", str(particles), "--out", str(outdir)]
        code, lines, out = _cli([*args, "--config", str(sim / "tiny.yaml")], capsys)
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
        left = [p.name for p in outdir.rglob("*") if p.is_file()] if outdir.exists() else []
        assert set(left) <= {"run.log"}, left  # the log of the failed start, nothing else
