"""cryospin.core.ctf against an independent numpy transcription of RELION's CTF (``CTF::initialise``
and ``getGamma``; ``getCTF`` returns ``-sin(gamma)``), analytic zeros, astigmatism geometry, and the
Thon rings of three real particle stacks."""

from __future__ import annotations

import math
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cryospin.core.ctf import compute_ctf, compute_ctf_grid, ctf_from_params, wavelength_A
from cryospin.core.fourier import fft2_centered, radial_average
from cryospin.core.particles import CTFParams

SETTINGS = settings(max_examples=40, deadline=None)


def relion_ctf_numpy(
    L: int,
    apix: float,
    dfu: float,
    dfv: float,
    az_deg: float,
    kv: float,
    cs_mm: float,
    q0: float,
    ps_deg: float = 0.0,
    bfac: float = 0.0,
) -> np.ndarray:
    """RELION's formula, written out from its source/documentation (negative defocus convention,
    K1..K5), on numpy's ``fftshift(fftfreq)`` grid, ``[y, x]``. Returns RELION's CTF value."""
    f = np.fft.fftshift(np.fft.fftfreq(L, d=apix))
    X, Y = np.meshgrid(f, f, indexing="xy")  # X varies along columns (x), Y along rows (y)
    local_cs = cs_mm * 1e7
    local_kv = kv * 1e3
    lam = 12.2639 / np.sqrt(local_kv * (1.0 + local_kv * 0.97845e-6))
    defocus_average = -(dfu + dfv) * 0.5
    defocus_deviation = -(dfu - dfv) * 0.5
    K1 = np.pi / 2 * 2 * lam
    K2 = np.pi / 2 * local_cs * lam**3
    K3 = np.arctan(q0 / np.sqrt(1 - q0 * q0))
    K4 = -bfac / 4.0
    K5 = np.deg2rad(ps_deg)
    u2 = X * X + Y * Y
    deltaf = defocus_average + defocus_deviation * np.cos(
        2 * (np.arctan2(Y, X) - np.deg2rad(az_deg))
    )
    argument = K1 * deltaf * u2 + K2 * u2 * u2 - K5 - K3
    return -np.sin(argument) * np.exp(K4 * u2)


ctf_params = st.fixed_dictionaries(
    {
        "dfu": st.floats(3000, 40000),
        "dfv": st.floats(3000, 40000),
        "az": st.floats(-180, 180),
        "kv": st.sampled_from([100.0, 200.0, 300.0]),
        "cs": st.floats(0.0, 4.0),
        "w": st.floats(0.0, 0.3),
        "ps": st.floats(0.0, 180.0),
        "b": st.floats(0.0, 200.0),
    }
)


@SETTINGS
@given(p=ctf_params, L=st.integers(8, 40), apix=st.floats(0.6, 5.0))
def test_matches_relion_formula_with_opposite_sign(p: dict, L: int, apix: float) -> None:
    ref = relion_ctf_numpy(
        L, apix, p["dfu"], p["dfv"], p["az"], p["kv"], p["cs"], p["w"], p["ps"], p["b"]
    )
    got = compute_ctf_grid(
        L,
        apix,
        p["dfu"],
        p["dfv"],
        p["az"],
        p["kv"],
        p["cs"],
        p["w"],
        p["ps"],
        p["b"],
        dtype=torch.float64,
    ).numpy()
    # cryospin's sign is cryoDRGN's: the negative of RELION's getCTF (CTF(0) = -w)
    np.testing.assert_allclose(got, -ref, atol=1e-10)
    ps = math.radians(p["ps"])
    dc = math.sqrt(1 - p["w"] ** 2) * math.sin(-ps) - p["w"] * math.cos(ps)
    assert got[L // 2, L // 2] == pytest.approx(dc, abs=1e-12)  # -w without phase plate


def test_wavelength_against_physical_constants() -> None:
    h, m0, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 2.99792458e8
    for kv in (100.0, 200.0, 300.0):
        V = kv * 1e3
        lam = h / math.sqrt(2 * m0 * e * V * (1 + e * V / (2 * m0 * c * c))) * 1e10
        assert float(wavelength_A(kv)) == pytest.approx(lam, rel=2e-4)
    assert float(wavelength_A(300.0)) == pytest.approx(0.019687, abs=2e-6)


@pytest.mark.parametrize("w", [0.0, 0.07, 0.1])
@pytest.mark.parametrize("cs", [0.0, 2.7])
def test_zeros_of_isotropic_ctf(w: float, cs: float) -> None:
    """sqrt(1-w^2) sin(g) - w cos(g) = sin(g - asin w) vanishes at g = asin(w) + n pi, n < 0; with
    g = -pi df lam s^2 + pi/2 Cs lam^3 s^4 that is a quadratic in s^2."""
    df, kv, ps = 12000.0, 300.0, 0.0
    lam = float(wavelength_A(kv))
    cs_a = cs * 1e7
    alpha = math.asin(w)
    s_zero = []
    for n in range(-1, -8, -1):
        target = alpha + n * math.pi + ps  # = pi/2 Cs lam^3 u^2 - pi df lam u, u = s^2
        if cs_a == 0:
            u = -target / (math.pi * df * lam)
        else:
            a, b = 0.5 * math.pi * cs_a * lam**3, -math.pi * df * lam
            u = (-b - math.sqrt(b * b + 4 * a * target)) / (2 * a)
        s_zero.append(math.sqrt(u))
    s = torch.tensor(s_zero, dtype=torch.float64)
    freqs = torch.stack([s * math.cos(0.3), s * math.sin(0.3)], -1)
    vals = compute_ctf(freqs, df, df, 17.0, kv, cs, w)
    assert vals.abs().max() < 1e-9
    # and the CTF changes sign across each zero
    eps = 1e-4 * s
    lo = compute_ctf(torch.stack([s - eps, 0 * s], -1), df, df, 0.0, kv, cs, w)
    hi = compute_ctf(torch.stack([s + eps, 0 * s], -1), df, df, 0.0, kv, cs, w)
    assert torch.all(lo * hi < 0)
    if w == 0.0 and cs == 0.0:  # textbook: zeros at s^2 = n / (df lam)
        expect = [math.sqrt(n / (df * lam)) for n in range(1, 8)]
        np.testing.assert_allclose(s_zero, expect, rtol=1e-12)


@SETTINGS
@given(p=ctf_params, seed=st.integers(0, 2**31 - 1))
def test_astigmatism_is_the_ctf_rotated_by_dfang(p: dict, seed: int) -> None:
    k = torch.as_tensor(np.random.default_rng(seed).uniform(-0.3, 0.3, size=(50, 2)))
    a = math.radians(p["az"])
    rot = torch.tensor(
        [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64
    )
    # CTF(dfang)(k) == CTF(0)(R(-dfang) k): row vectors k @ R(dfang) = R(-dfang) k
    args = (p["dfu"], p["dfv"])
    rest = (p["kv"], p["cs"], p["w"], p["ps"], p["b"])
    c_ang = compute_ctf(k, *args, p["az"], *rest)
    c_0 = compute_ctf(k @ rot, *args, 0.0, *rest)
    torch.testing.assert_close(c_ang, c_0)


def test_defocus_u_lies_along_dfang() -> None:
    dfu, dfv, ang, kv = 20000.0, 12000.0, 30.0, 300.0
    lam = float(wavelength_A(kv))
    s = torch.linspace(0.01, 0.2, 30, dtype=torch.float64)
    for theta, df in ((ang, dfu), (ang + 90.0, dfv), (ang + 180.0, dfu)):
        t = math.radians(theta)
        k = torch.stack([s * math.cos(t), s * math.sin(t)], -1)
        got = compute_ctf(k, dfu, dfv, ang, kv, 0.0, 0.0)
        torch.testing.assert_close(got, torch.sin(-math.pi * df * lam * s * s))


def test_grid_rotation_by_90_degrees_on_odd_grid() -> None:
    L, apix = 33, 1.5
    c = L // 2
    base = compute_ctf_grid(L, apix, 18000.0, 11000.0, 0.0, 300.0, 2.7, 0.1, dtype=torch.float64)
    rot = compute_ctf_grid(L, apix, 18000.0, 11000.0, 90.0, 300.0, 2.7, 0.1, dtype=torch.float64)
    # C_90(kx, ky) = C_0(ky, -kx): pixel [i, j] -> [2c - j, i]
    i, j = torch.meshgrid(torch.arange(L), torch.arange(L), indexing="ij")
    torch.testing.assert_close(rot, base[2 * c - j, i])


def test_bfactor_envelope_and_batching() -> None:
    L, apix = 32, 1.2
    du = torch.tensor([10000.0, 15000.0, 20000.0], dtype=torch.float64)
    plain = compute_ctf_grid(L, apix, du, du - 500, 10.0, 300.0, 2.7, 0.1, dtype=torch.float64)
    env = compute_ctf_grid(
        L, apix, du, du - 500, 10.0, 300.0, 2.7, 0.1, 0.0, 80.0, dtype=torch.float64
    )
    assert plain.shape == (3, L, L)
    f = (torch.arange(L, dtype=torch.float64) - L // 2) / (L * apix)
    s2 = f[:, None] ** 2 + f[None, :] ** 2
    torch.testing.assert_close(env, plain * torch.exp(-80.0 * s2 / 4))
    for n in range(3):
        one = compute_ctf_grid(
            L, apix, float(du[n]), float(du[n]) - 500, 10.0, 300.0, 2.7, 0.1, dtype=torch.float64
        )
        torch.testing.assert_close(plain[n], one)


def test_ctf_from_params_and_gradients() -> None:
    n, L, apix = 4, 24, 1.3
    rng = np.random.default_rng(0)
    p = CTFParams(
        defocus_u_A=rng.uniform(8000, 30000, n),
        defocus_v_A=rng.uniform(8000, 30000, n),
        defocus_angle_deg=rng.uniform(-90, 90, n),
        voltage_kV=np.full(n, 300.0),
        cs_mm=np.full(n, 2.7),
        amplitude_contrast=np.full(n, 0.07),
        phase_shift_deg=np.zeros(n),
        bfactor_A2=np.full(n, 50.0),
    )
    out = ctf_from_params(p, L, apix)
    assert out.shape == (n, L, L) and out.dtype == torch.float32
    for i in range(n):
        ref = relion_ctf_numpy(
            L,
            apix,
            p.defocus_u_A[i],
            p.defocus_v_A[i],
            p.defocus_angle_deg[i],
            300.0,
            2.7,
            0.07,
            0.0,
            50.0,
        )
        np.testing.assert_allclose(out[i].numpy(), -ref, atol=1e-6)
    sub = ctf_from_params(p.subset(np.array([2])), L, apix, dtype=torch.float64)
    np.testing.assert_allclose(sub[0].numpy(), out[2].numpy(), atol=1e-6)
    df = torch.tensor([15000.0], dtype=torch.float64, requires_grad=True)
    k = torch.tensor([[0.05, 0.02], [0.1, -0.03]], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda d: compute_ctf(k, d, d - 300, 20.0, 300.0, 2.7, 0.1), (df,)
    )


# ------------------------------------------------------------------------------ Thon rings
def _image_index(name: str) -> int:
    return int(str(name).split("@")[0]) - 1  # rlnImageName is index@path, 1-based


def _load_stack(shared: Path, which: str) -> tuple[np.ndarray, dict[str, np.ndarray], float, float]:
    """Images (aligned with the STAR rows by rlnImageName), CTF columns, pixel size, low cut."""
    base = shared / "real-stacks"
    if which == "empiar-10076":
        rows = starfile.read(base / "empiar-10076" / "empiar_10076_7.star")
        stack = base / "empiar-10076" / "empiar_10076_7.mrc"
        # RELION 3.0: no optics block; pixel size = detector pixel (um) / magnification
        apix = float(rows["rlnDetectorPixelSize"].iloc[0] * 1e4 / rows["rlnMagnification"].iloc[0])
        smin = 1 / 40
    elif which == "aspire-sample":
        rows = starfile.read(base / "aspire-sample" / "sample_relion_data.star")
        stack = base / "aspire-sample" / "sample.mrcs"
        apix = float(rows["rlnDetectorPixelSize"].iloc[0] * 1e4 / rows["rlnMagnification"].iloc[0])
        smin = 1 / 40
    else:  # trpv1, RELION 3.1 with an optics block
        star = starfile.read(base / "trpv1" / "trpv1_small_stack.star")
        rows = star["particles"].merge(
            star["optics"], on="rlnOpticsGroup", suffixes=("", "_optics")
        )
        stack = base / "trpv1" / "trpv1_small_stack.mrcs"
        apix = float(rows["rlnImagePixelSize"].iloc[0])
        smin = 1 / 100
    with mrcfile.open(stack, permissive=True) as m:
        data = np.array(m.data, dtype=np.float64)
    images = data[[_image_index(n) for n in rows["rlnImageName"]]]
    cols = {
        c: rows[c].to_numpy(dtype=np.float64, copy=True)
        for c in (
            "rlnDefocusU",
            "rlnDefocusV",
            "rlnDefocusAngle",
            "rlnVoltage",
            "rlnSphericalAberration",
            "rlnAmplitudeContrast",
        )
    }
    return images, cols, apix, smin


@pytest.mark.parametrize(
    "which,expect_apix",
    [("empiar-10076", 1.31), ("aspire-sample", 1.338), ("trpv1", 4.88)],
)
def test_thon_rings_of_real_stacks(shared_data: Path, which: str, expect_apix: float) -> None:
    """Rotationally averaged, whitened power spectrum vs rotationally averaged CTF^2.

    Power spectra of the mean-subtracted particle images are averaged over particles and shells
    (DC to Nyquist), divided by a smooth background (exp of a degree-6 polynomial fit of the log
    spectrum over the band, band = [smin, Nyquist]). The Pearson correlation with the
    particle-averaged, shell-averaged CTF^2 from the metadata must be high, and clearly higher
    than with the defocus shifted by +-8000 A (measured: 10076 0.66 vs <= -0.04; aspire 0.68 vs
    <= -0.03; TRPV1 0.66 vs <= 0.06).
    """
    images, p, apix, smin = _load_stack(shared_data, which)
    assert apix == pytest.approx(expect_apix, abs=2e-3)
    L = images.shape[-1]
    x = torch.as_tensor(images)
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = radial_average(fft2_centered(x).abs() ** 2).mean(0).numpy()
    s = np.arange(L // 2 + 1) / (L * apix)
    band = s >= smin
    logp = np.log(power)
    coef = np.polyfit(s[band], logp[band], 6)
    white = np.exp(logp - np.polyval(coef, s))

    def corr(shift: float) -> float:
        ctf = compute_ctf_grid(
            L,
            apix,
            torch.as_tensor(p["rlnDefocusU"] + shift),
            torch.as_tensor(p["rlnDefocusV"] + shift),
            torch.as_tensor(p["rlnDefocusAngle"]),
            torch.as_tensor(p["rlnVoltage"]),
            torch.as_tensor(p["rlnSphericalAberration"]),
            torch.as_tensor(p["rlnAmplitudeContrast"]),
            dtype=torch.float64,
        )
        c2 = radial_average(ctf**2).mean(0).numpy()
        return float(np.corrcoef(white[band], c2[band])[0, 1])

    true = corr(0.0)
    shifted = max(corr(8000.0), corr(-8000.0))
    assert true > 0.5, f"{which}: Thon-ring correlation {true:.3f}"
    assert true - shifted > 0.4, f"{which}: {true:.3f} vs shifted defocus {shifted:.3f}"
