"""cryospin.core.fsc: FSC of a map with itself, of independent noise, resolution interpolation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cryospin.core.fourier import fft3_centered, ifft3_centered, shell_index
from cryospin.core.fsc import fsc, resolution_at_threshold, shell_frequencies

SETTINGS = settings(max_examples=25, deadline=None)


@SETTINGS
@given(D=st.integers(4, 17), b=st.integers(1, 2), seed=st.integers(0, 2**31 - 1))
def test_fsc_with_itself_is_one(D: int, b: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(b, D, D, D, dtype=torch.float64, generator=g)
    c = fsc(m, m)
    assert c.shape == (b, D // 2 + 1)
    torch.testing.assert_close(c, torch.ones_like(c))
    # invariant to positive scaling, flips sign under negation
    torch.testing.assert_close(fsc(m, 3.0 * m), torch.ones_like(c))
    torch.testing.assert_close(fsc(m, -m), -torch.ones_like(c))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("D", [32, 33])
def test_fsc_of_independent_noise_is_small(D: int, seed: int) -> None:
    g = torch.Generator().manual_seed(1000 * D + seed)
    a = torch.randn(D, D, D, dtype=torch.float64, generator=g)
    b = torch.randn(D, D, D, dtype=torch.float64, generator=g)
    c = fsc(a, b)
    counts = torch.bincount(shell_index(D, 3).reshape(-1), minlength=D // 2 + 1)[: D // 2 + 1]
    bound = 3.0 / counts.double().sqrt()
    assert torch.all(c[1:].abs() <= bound[1:]), (c, bound)
    assert c[4:].abs().mean() < 0.05


def test_fsc_masked_unmasked_and_lowpass() -> None:
    D = 24
    g = torch.Generator().manual_seed(5)
    a = torch.randn(D, D, D, dtype=torch.float64, generator=g)
    torch.testing.assert_close(
        fsc(a, a + 0.0, mask=torch.ones(D, D, D)), torch.ones(D // 2 + 1, dtype=torch.float64)
    )
    # same content below shell 6, independent content above: FSC ~1 then ~0
    shells = shell_index(D, 3)
    fa = fft3_centered(a)
    fb = fft3_centered(torch.randn(D, D, D, dtype=torch.float64, generator=g))
    mixed = ifft3_centered(torch.where(shells < 6, fa, fb)).real
    c = fsc(a, mixed)
    torch.testing.assert_close(c[:6], torch.ones(6, dtype=torch.float64))
    assert c[7:].abs().max() < 0.3


def test_fsc_is_differentiable() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, 6, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(6, 6, 6, dtype=torch.float64, generator=g)
    assert torch.autograd.gradcheck(lambda x: fsc(x, b), (a,))


def test_shell_frequencies() -> None:
    f = shell_frequencies(64, 1.5)
    assert f.shape == (33,)
    assert float(f[0]) == 0.0
    assert float(f[-1]) == pytest.approx(1 / 3.0)  # Nyquist 1 / (2 apix)
    assert float(f[10]) == pytest.approx(10 / 96)


def test_resolution_interpolates_between_shells() -> None:
    box, apix = 64, 1.5  # shell s at s / 96 1/A
    curve = torch.tensor([1.0, 0.9, 0.8, 0.6, 0.3, 0.1, 0.05] + [0.0] * 26)
    # 0.5: between shell 3 (0.6) and 4 (0.3), t = 1/3 -> f = 10/3 / 96
    assert resolution_at_threshold(curve, box, apix, 0.5) == pytest.approx(96 / (10 / 3))
    # 0.143: between shell 4 (0.3) and 5 (0.1), t = 0.157 / 0.2
    assert resolution_at_threshold(curve, box, apix, 0.143) == pytest.approx(96 / (4 + 0.785))


@pytest.mark.parametrize("thr", [0.5, 0.143])
def test_resolution_exact_for_linear_curve(thr: float) -> None:
    box, apix = 100, 1.2
    s = torch.arange(box // 2 + 1, dtype=torch.float64)
    slope = 0.037
    curve = 1.0 - slope * s  # crosses thr at s* = (1 - thr) / slope
    s_star = (1 - thr) / slope
    assert resolution_at_threshold(curve, box, apix, thr) == pytest.approx(box * apix / s_star)


def test_resolution_first_crossing_and_never_crossing() -> None:
    box, apix = 32, 2.0
    dip = torch.tensor([1.0, 0.9, 0.4, 0.8, 0.7, 0.2] + [0.0] * 11)
    # first drop below 0.5 is at shell 2 (not the later one at 5)
    t = (0.9 - 0.5) / (0.9 - 0.4)
    assert resolution_at_threshold(dip, box, apix, 0.5) == pytest.approx(64 / (1 + t))
    flat = torch.full((17,), 0.99)
    assert resolution_at_threshold(flat, box, apix, 0.143) == pytest.approx(2 * apix)
    assert math.isfinite(resolution_at_threshold(torch.tensor([1.0, 0.0, 0.0]), 4, 1.0))


def test_resolution_of_maps_agreeing_below_a_shell() -> None:
    """Maps that agree below shell 8 and are independent above: 0.143 crossing between 7 and 9."""
    D, apix = 32, 1.0
    g = torch.Generator().manual_seed(11)
    shells = shell_index(D, 3)
    fa = fft3_centered(torch.randn(D, D, D, dtype=torch.float64, generator=g))
    fb = fft3_centered(torch.randn(D, D, D, dtype=torch.float64, generator=g))
    a = ifft3_centered(fa).real
    b = ifft3_centered(torch.where(shells <= 8, fa, fb)).real
    res = resolution_at_threshold(fsc(a, b), D, apix, 0.143)
    assert D * apix / 10 <= res <= D * apix / 8
    np.testing.assert_array_less(0.99, fsc(a, b)[:9].numpy())
