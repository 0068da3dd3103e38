"""cryoAI baseline: the second hypothesis is the first composed with a 180° in-plane rotation.

The side of the composition is proved on rendered projections: with ``A`` the pose (volume ->
image coordinates, column vectors), a volume of Gaussian blobs at ``p_k`` projects to 2D Gaussians
at ``(A p_k)_xy``. Rotating that image by 180° about ``L//2`` gives exactly the projection for
``Rz(pi) @ A`` (and not ``A @ Rz(pi)``), and a content shift ``t`` becomes ``-t``.
"""

from __future__ import annotations

import math

import pytest
import torch

from cryospin.core.so3 import inplane_rotation, random_rotations
from cryospin.encoders.backbone import rotate_image_180, rz180_left
from cryospin.encoders.cryoai import CryoAIEncoder

RZ_PI = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64))


def render(points: torch.Tensor, pose: torch.Tensor, box: int, shift=(0.0, 0.0), sigma=1.5):
    """Project blobs at ``points`` (K, 3) [x, y, z in px] with pose ``A``: image (L, L) [y, x]."""
    c = box // 2
    u = points @ pose.T  # rows: (A p_k)^T
    grid = torch.arange(box, dtype=torch.float64) - c
    y, x = torch.meshgrid(grid, grid, indexing="ij")
    img = torch.zeros(box, box, dtype=torch.float64)
    for ux, uy, _ in u:
        img += torch.exp(-((x - ux - shift[0]) ** 2 + (y - uy - shift[1]) ** 2) / (2 * sigma**2))
    return img


@pytest.fixture
def blobs() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    p = torch.randn(12, 3, generator=g, dtype=torch.float64)
    return 5.0 * p / p.norm(dim=-1, keepdim=True).clamp(min=1.0)  # inside radius 5 px


@pytest.mark.parametrize("box", [24, 25])
def test_rotating_the_image_composes_on_the_left(blobs: torch.Tensor, box: int) -> None:
    poses = random_rotations(5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for a in poses:
        # row/column 0 of an even box has no mirror on the grid: compare the rest
        turned = rotate_image_180(render(blobs, a, box))[1:, 1:]
        assert torch.allclose(turned, render(blobs, RZ_PI @ a, box)[1:, 1:], atol=1e-12)
        assert not torch.allclose(turned, render(blobs, a @ RZ_PI, box)[1:, 1:], atol=1e-3)
        # the same composition through the so3 module (up to the rounding of sin(pi))
        psi = inplane_rotation(torch.tensor(180.0, dtype=torch.float64))
        assert torch.allclose(turned, render(blobs, psi @ a, box)[1:, 1:], atol=1e-9)


def test_rotating_the_image_negates_the_shift(blobs: torch.Tensor) -> None:
    a = random_rotations(1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)[0]
    t = (1.7, -2.3)
    turned = rotate_image_180(render(blobs, a, 32, shift=t))[1:, 1:]
    expected = render(blobs, RZ_PI @ a, 32, shift=(-t[0], -t[1]))[1:, 1:]
    assert torch.allclose(turned, expected, atol=1e-12)
    assert not torch.allclose(turned, render(blobs, RZ_PI @ a, 32, shift=t)[1:, 1:], atol=1e-3)


@pytest.mark.parametrize("box", [8, 9])
def test_rotate_image_180_is_an_exact_involution_about_the_centre(box: int) -> None:
    x = torch.randn(2, box, box)
    assert torch.equal(rotate_image_180(rotate_image_180(x)), x)
    c = box // 2
    delta = torch.zeros(box, box)
    delta[c, c] = 1.0
    assert torch.equal(rotate_image_180(delta), delta)  # the centre is fixed
    delta2 = torch.zeros(box, box)
    delta2[c + 1, c + 2] = 1.0
    assert rotate_image_180(delta2)[c - 1, c - 2] == 1.0


def test_rz180_left_is_exact() -> None:
    r = random_rotations(10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(rz180_left(r), RZ_PI.float() @ r)
    assert torch.equal(rz180_left(rz180_left(r)), r)


@pytest.mark.parametrize("shifts", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_second_hypothesis_is_first_of_turned_image(shifts: bool, training: bool) -> None:
    torch.manual_seed(0)
    enc = CryoAIEncoder(CryoAIEncoder.Config(estimate_shifts=shifts), 32, 3.0).train(training)
    images = torch.randn(6, 32, 32)
    with torch.no_grad():
        a = enc(images)
        b = enc(rotate_image_180(images))
    assert a.rotations.shape == (6, 2, 3, 3)
    tol = dict(atol=1e-5, rtol=0)
    assert torch.allclose(a.rotations[:, 1], rz180_left(b.rotations[:, 0]), **tol)
    assert torch.allclose(b.rotations[:, 1], rz180_left(a.rotations[:, 0]), **tol)
    if shifts:
        assert torch.allclose(a.shifts_A[:, 1], -b.shifts_A[:, 0], **tol)
    else:
        assert a.shifts_A is None


def test_oracle_pose_for_turned_image_recovers_the_true_pose(blobs: torch.Tensor) -> None:
    """If the net is right about the turned image (pose Rz(pi) A), candidate 2 is exactly A."""
    a = random_rotations(4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    true_pose_of_turned = RZ_PI @ a  # proved by test_rotating_the_image_composes_on_the_left
    assert torch.allclose(rz180_left(true_pose_of_turned), a, atol=0)
    assert math.isclose(float(torch.linalg.det(RZ_PI)), 1.0)
