"""The switch pass's exhaustive grid search: the grid, the expanded loss, and the search itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cryospin.core.engine.forward import candidate_loss, frequency_mask, render
from cryospin.core.engine.pose_search import grid_rotations
from cryospin.decoders.hartley import HartleyDecoder


def test_grid_is_proper_and_covers_so3_evenly() -> None:
    g = grid_rotations(4096).numpy()
    np.testing.assert_allclose(
        g @ g.transpose(0, 2, 1), np.broadcast_to(np.eye(3), g.shape), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(g), 1.0, atol=1e-12)
    grid = Rotation.from_matrix(g)
    probe = Rotation.random(500, random_state=0)
    # distance from each random rotation to its nearest grid rotation (scipy, independent)
    gaps = np.array([np.degrees((grid.inv() * p).magnitude().min()) for p in probe])
    # covering radius of an even grid of 4,096 rotations: about 12-15 degrees (Alexa 2022)
    assert gaps.max() < 16.0 and np.median(gaps) < 9.0
    # no clustering: the closest pair is not much closer than the typical spacing
    near = np.array(
        [np.sort(np.degrees((grid[i].inv() * grid).magnitude()))[1] for i in range(0, 4096, 16)]
    )
    assert near.min() > 3.0


def _hermitian(n: int, L: int, seed: int) -> torch.Tensor:
    """Centred transforms ``(n, L, L)`` of real random images (Hermitian, float64)."""
    from cryospin.core.fourier import fft2_centered

    gen = torch.Generator().manual_seed(seed)
    return fft2_centered(torch.randn(n, L, L, dtype=torch.float64, generator=gen))


def _even(x: torch.Tensor) -> torch.Tensor:
    """Symmetrise ``(n, L, L)`` so that ``x(k) = x(-k)`` wherever ``-k`` is on the grid."""
    out = x.clone()
    out[:, 1:, 1:] = 0.5 * (x[:, 1:, 1:] + x[:, 1:, 1:].flip(1, 2))
    return out


@pytest.mark.parametrize("radius", [0.5, 0.8, 1.0])
def test_friedel_weights_halve_a_hermitian_sum_exactly(radius: float) -> None:
    from cryospin.core.engine.pose_search import friedel_weights

    L = 16
    mask = frequency_mask(L, radius)
    w = friedel_weights(mask)
    assert float(w.sum()) == float(mask.sum())  # every masked pixel counted once overall
    assert int((w > 0).sum()) < 0.6 * int(mask.sum())  # about half the pixels kept
    f = _hermitian(3, L, 0).abs().square()
    np.testing.assert_allclose((f * w).sum((-2, -1)), (f * mask).sum((-2, -1)), rtol=1e-12)


def test_scorer_loss_equals_the_rendered_loss() -> None:
    """The one-product expansion on half the pixels equals the stages' loss (float64)."""
    from cryospin.core.engine.pose_search import GridScorer

    torch.manual_seed(0)
    L = 16
    dec = HartleyDecoder(HartleyDecoder.Config(), L, 3.0).double()
    grid = torch.as_tensor(Rotation.random(7, random_state=1).as_matrix())
    images = _hermitian(5, L, 1)
    ctf = _even(torch.rand(5, L, L, dtype=torch.float64) * 2 - 1)
    for radius in (0.6, 1.0):
        mask = frequency_mask(L, radius)
        with torch.no_grad():
            slices = render(dec, grid[None], torch.ones(1, L, L, dtype=torch.float64))[0]
            ref = candidate_loss(render(dec, grid[None].expand(5, 7, 3, 3), ctf), images, mask)
        scorer = GridScorer(slices, mask)
        np.testing.assert_allclose(scorer.losses(images, ctf).numpy(), ref.numpy(), rtol=1e-9)
        own = scorer.loss_of(slices[:5], images, ctf)
        np.testing.assert_allclose(own.numpy(), ref.numpy()[np.arange(5), np.arange(5)], rtol=1e-9)


@pytest.mark.parametrize("shifted", [False, True])
def test_search_finds_the_grid_pose_the_image_was_made_from(shifted: bool) -> None:
    """Noise-free images of grid rotations, wrong starting poses: the search recovers them."""
    from types import SimpleNamespace

    from cryospin.core.engine.data import Batch
    from cryospin.core.engine.pose_search import GridSearch

    torch.manual_seed(2)
    L = 16
    dec = HartleyDecoder(HartleyDecoder.Config(init_decay=1.0), L, 3.0)
    grid = grid_rotations(256, torch.float32)
    truth = grid[[3, 77, 150, 255]]
    ctf = torch.rand(4, L, L) + 0.5
    shift = torch.randn(4, 2) * 1.5 if shifted else None
    with torch.no_grad():
        f = render(dec, truth[:, None], ctf, None if shift is None else shift[:, None])[:, 0]
    mask = frequency_mask(L, 1.0)
    ctx = SimpleNamespace(decoder=dec, box=L, device=torch.device("cpu"), mask=mask, loss_crop=None)
    search = GridSearch(ctx, 256)
    start = torch.as_tensor(Rotation.random(4, random_state=5).as_matrix(), dtype=torch.float32)
    batch = Batch(np.arange(4), torch.zeros(4, L, L), f, ctf)
    found, replaced = search.improve(batch, start, shift)
    np.testing.assert_allclose(found.numpy(), truth.numpy(), atol=1e-6)
    assert search.replaced == 4 and replaced.all()
    # a pose no grid rotation beats (the truth itself) is kept
    kept, replaced = search.improve(batch, truth, shift)
    np.testing.assert_array_equal(kept.numpy(), truth.numpy())
    assert not replaced.any()


def test_basin_angle_is_twice_the_radius_of_a_1_over_n_ball() -> None:
    """Haar-random rotations (scipy) fall within half the basin angle with probability ~ 1/n."""
    from cryospin.core.engine.pose_search import basin_angle_deg

    angles = np.degrees(Rotation.random(400_000, random_state=3).magnitude())
    for n in (16, 64, 256):
        frac = np.mean(angles < basin_angle_deg(n) / 2)
        assert abs(frac * n - 1.0) < 0.15  # small-angle ball volume t^3 / 6 pi, MC error ~2%
    assert basin_angle_deg(4096) == pytest.approx(19.0, abs=0.5)


def test_search_leaves_a_pose_within_the_grid_spacing_to_local_refinement() -> None:
    """A grid rotation with a lower loss but nearer than the basin angle does not replace."""
    from types import SimpleNamespace

    from cryospin.core.engine.data import Batch
    from cryospin.core.engine.pose_search import GridSearch, basin_angle_deg

    torch.manual_seed(4)
    L = 16
    dec = HartleyDecoder(HartleyDecoder.Config(init_decay=1.0), L, 3.0)
    grid = grid_rotations(256, torch.float32)
    truth = grid[[10, 200]]
    ctf = torch.ones(2, L, L)
    with torch.no_grad():
        f = render(dec, truth[:, None], ctf)[:, 0]
    mask = frequency_mask(L, 1.0)
    ctx = SimpleNamespace(decoder=dec, box=L, device=torch.device("cpu"), mask=mask, loss_crop=None)
    search = GridSearch(ctx, 256)
    tilt = basin_angle_deg(256) / 2  # inside the basin: local refinement's job
    near = torch.as_tensor(
        (
            Rotation.from_matrix(truth.double().numpy())
            * Rotation.from_rotvec([0, 0, np.radians(tilt)])
        ).as_matrix(),
        dtype=torch.float32,
    )
    with torch.no_grad():
        near_loss = candidate_loss(render(dec, near[:, None], ctf), f, mask)[:, 0]
    assert (near_loss > 0).all()  # the grid rotation (the truth, loss 0) is better...
    kept, replaced = search.improve(Batch(np.arange(2), torch.zeros(2, L, L), f, ctf), near, None)
    np.testing.assert_array_equal(kept.numpy(), near.numpy())  # ...but too near to replace
    assert not replaced.any() and search.replaced == 0


@pytest.mark.parametrize("stop, searched", [(0.0, [0, 1, 2]), (1.0, [0])])
def test_search_repeats_while_the_mask_grows_until_a_pass_moves_few_particles(
    tmp_path, stop: float, searched: list[int]
) -> None:
    """Random start poses: a pass before each direct epoch whose mask is below Nyquist, until
    one moves fewer than ``search_stop`` of the particles (1.0: the first pass always does)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
    from run_toy_data import make_dataset

    from cryospin.core.engine.config import validate_config
    from cryospin.core.engine.data import ParticleData
    from cryospin.core.engine.trainer import Trainer
    from cryospin.io.star import read_star

    toy = make_dataset(tmp_path / "toy", n=16, box=16, snr=2.0, seed=0)
    cfg = validate_config(
        {
            "stage_schedule": "direct",
            "epochs": 4,
            "mask_radius_start": 0.4,
            "mask_grow_epochs": 3,
            "switch_search": 64,
            "search_stop": stop,
            "batch_size": 8,
            "progress": False,
            "num_threads": 1,
        }
    )
    tr = Trainer(cfg, ParticleData(read_star(toy["star"]), None, True), tmp_path, tmp_path / "m")
    tr.fit()
    recs = tr.metrics()
    assert [r["epoch"] for r in recs if "search_time_s" in r] == searched
    assert tr.loop.search_epoch == searched[-1] and 0.0 <= tr.loop.search_moved <= 1.0


def test_posterior_scale_is_the_real_space_gaussian_log_likelihood() -> None:
    """``n l / (2 L^2)`` differences equal ``sum (y - x)^2 / 2`` over real pixels (sigma = 1).

    Parseval with the unnormalised FFT, on the full plane: the independent reference is the
    Gaussian log-likelihood of the image in real space, float64.
    """
    from cryospin.core.engine.pose_search import GridScorer
    from cryospin.core.fourier import fft2_centered

    L = 12
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, L, L, dtype=torch.float64, generator=gen)  # 5 candidate projections
    y = x[2] + torch.randn(L, L, dtype=torch.float64, generator=gen)  # image: x2 + unit noise
    mask = torch.ones(L, L, dtype=torch.bool)
    scorer = GridScorer(fft2_centered(x), mask)
    losses = scorer.losses(fft2_centered(y)[None], torch.ones(1, L, L, dtype=torch.float64))[0]
    nats = scorer.n / (2.0 * L**2) * losses
    reference = 0.5 * ((y[None] - x) ** 2).sum((-2, -1))
    np.testing.assert_allclose(nats - nats[0], reference - reference[0], rtol=1e-10, atol=1e-9)


def test_posterior_draw_follows_the_softmax_of_the_log_likelihood() -> None:
    from cryospin.core.engine.pose_search import posterior_draw

    torch.manual_seed(0)
    losses = torch.tensor([[1.0, 2.0, 3.0]]).repeat(40_000, 1)
    current = torch.full((40_000,), 1.5)
    take, j = posterior_draw(losses, current, scale=1.0)
    p = np.exp(-np.array([1.0, 2.0, 3.0, 1.5]))
    p /= p.sum()
    freq = np.bincount(np.where(take.numpy(), j.numpy(), 3), minlength=4) / 40_000
    np.testing.assert_allclose(freq, p, atol=0.01)  # 4 sd of a binomial share at n = 40,000
    # a sharp posterior draws the best candidate: projection matching's hard assignment
    take, j = posterior_draw(losses[:100], current[:100], scale=1e4)
    assert bool(take.all()) and bool((j == 0).all())
