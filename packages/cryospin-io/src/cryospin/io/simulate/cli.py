"""The ``cryospin simulate`` command (registered by :mod:`cryospin.io.plugin`)."""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import ValidationError

from cryospin.core.errors import ConfigError

HELP = """Simulate particles from an atomic model or map: the paper's synthetic protocol.

Haar-uniform poses, real CTFs (default: the bundled EMPIAR-10028 table), optional shifts and
white Gaussian noise at the given SNR (noise variance = var(clean CTF-modulated image) / SNR).
Writes particles.mrcs, particles.star (RELION 3.1), gt_map.mrc, ground_truth.npz and meta.json
into --out.

\b
Example:
    cryospin simulate --preset hsp90 --box 64 --n 5000 --snr 0.1 --seed 0 --out sim/
"""


@click.command("simulate", help=HELP)
@click.option("--preset", type=click.Choice(["hsp90", "spike"]), help="bundled paper dataset")
@click.option(
    "--model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="atomic model (PDB or mmCIF, may be gzipped)",
)
@click.option(
    "--map",
    "map_",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="ground-truth MRC map (resampled to --pixel-size and --box)",
)
@click.option("--box", type=int, required=True, help="image side L in pixels (even)")
@click.option(
    "--pixel-size",
    type=float,
    default=None,
    help="Å/pixel (presets: the paper's field of view, 128 x apix, scaled to --box)",
)
@click.option("--n", "n", type=int, required=True, help="number of particles")
@click.option(
    "--snr",
    type=float,
    default=0.1,
    show_default=True,
    help="per-image SNR: noise variance = var(clean CTF-modulated image) / SNR",
)
@click.option(
    "--ctf",
    default="empiar10028",
    show_default=True,
    help="CTF table (.pkl/.star/.cs/.npz), 'empiar10028' (bundled real table), "
    "'ranges' (--defocus-range...) or 'none'",
)
@click.option(
    "--ctf-rows",
    type=click.Choice(["random", "sequential"]),
    default="random",
    show_default=True,
    help="how table rows are assigned to particles",
)
@click.option(
    "--defocus-range",
    type=float,
    nargs=2,
    default=(10000.0, 25000.0),
    show_default=True,
    help="mean defocus range in Å (--ctf ranges)",
)
@click.option(
    "--astigmatism-range",
    type=float,
    nargs=2,
    default=(0.0, 1000.0),
    show_default=True,
    help="dfU - dfV range in Å (--ctf ranges)",
)
@click.option("--voltage", type=float, default=300.0, show_default=True, help="kV (--ctf ranges)")
@click.option("--cs", type=float, default=2.7, show_default=True, help="mm (--ctf ranges)")
@click.option(
    "--amplitude-contrast", type=float, default=0.1, show_default=True, help="w (--ctf ranges)"
)
@click.option(
    "--contrast",
    type=click.Choice(["bright", "dark"]),
    default="bright",
    show_default=True,
    help="protein-bright stack (RELION/cryoDRGN convention; cryospin-io inverts .star by "
    "default) or protein-dark (raw micrographs)",
)
@click.option(
    "--rotations",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="poses to use (.star, .pkl, .cs, .npy) instead of Haar-uniform ones",
)
@click.option(
    "--shift-sigma",
    type=float,
    default=0.0,
    show_default=True,
    help="Gaussian in-plane origins, sigma per axis in Å",
)
@click.option(
    "--shift-max",
    type=float,
    default=0.0,
    show_default=True,
    help="uniform in-plane origins in [-max, max] Å",
)
@click.option(
    "--bfactor",
    type=float,
    default=0.0,
    show_default=True,
    help="global B-factor applied to the atoms, Å^2",
)
@click.option(
    "--pad",
    type=int,
    default=2,
    show_default=True,
    help="padding factor of the grid the CTF is applied on",
)
@click.option("--seed", type=int, required=True, help="random seed (bit-reproducible output)")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="output folder"
)
@click.option(
    "--cryodrgn/--no-cryodrgn",
    default=True,
    show_default=True,
    help="also write cryoDRGN ctf.pkl and poses.pkl",
)
@click.option("--write-clean", is_flag=True, help="also write the noise-free particles_clean.mrcs")
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="processes (the output does not depend on it)",
)
def simulate(**kw: object) -> None:
    """Run ``cryospin simulate`` (help text: :data:`HELP`)."""
    from cryospin.io.simulate import SimulationConfig, simulate_dataset

    kw["map"] = kw.pop("map_")
    kw["write_cryodrgn"] = kw.pop("cryodrgn")
    if isinstance(kw.get("ctf"), str) and str(kw["ctf"]).lower() == "none":
        kw["ctf"] = None
    try:
        config = SimulationConfig(**kw)  # type: ignore[arg-type]
    except ValidationError as exc:
        msgs = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"simulate: {msgs}") from exc
    result = simulate_dataset(config)
    snr = result.meta["snr_measured"]
    click.echo(
        f"wrote {config.n} particles ({config.box} px, {result.meta['pixel_size_A']:.4g} Å) to "
        f"{result.out}; measured SNR {snr['ratio_of_means']:.4g} (requested {config.snr:g})"
    )
    if "warning" in result.meta["ground_truth"]:
        click.echo(f"warning: {result.meta['ground_truth']['warning']}", err=True)
