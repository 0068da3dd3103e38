"""Coarse-to-fine training: cropped slices, the cropped forward model and the work schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cryospin.core.engine.config import validate_config
from cryospin.core.engine.forward import candidate_loss, render
from cryospin.core.engine.schedule import amortized_crop, resolve_schedule
from cryospin.core.interfaces import Decoder
from cryospin.decoders.hartley import HartleyDecoder


def _rotations(n: int, seed: int) -> torch.Tensor:
    return torch.as_tensor(Rotation.random(n, random_state=seed).as_matrix())


def _crop(x: torch.Tensor, c: int) -> torch.Tensor:
    lo = x.shape[-1] // 2 - c // 2
    return x[..., lo : lo + c, lo : lo + c]


@pytest.mark.parametrize("size", [8, 16, 20])
def test_hartley_cropped_slices_equal_the_crop_of_full_slices(size: int) -> None:
    torch.manual_seed(0)
    dec = HartleyDecoder(HartleyDecoder.Config(), 24, 3.0).double()
    rot = _rotations(5, 1)
    full = dec(rot)
    np.testing.assert_allclose(
        dec.slices(rot, size).detach().numpy(),
        _crop(full, size).detach().numpy(),
        rtol=0,
        atol=1e-12,
    )
    # a decoder that cannot crop (compute all, then crop) gives the same numbers
    dec.supports_crop = False
    np.testing.assert_allclose(
        Decoder.slices(dec, rot, size).detach().numpy(),
        _crop(full, size).detach().numpy(),
        rtol=0,
        atol=0,
    )


def _disc(c: int, radius: float) -> torch.Tensor:
    """Boolean ``(c, c)`` disc ``|k| <= radius`` (Fourier pixels), DC at ``c // 2``."""
    k = torch.arange(c) - c // 2
    return (k[:, None] ** 2 + k[None, :] ** 2) <= radius**2


@pytest.mark.parametrize(
    ("c", "radius"),
    [(24, 12.0), (24, 9.5), (16, 7.0), (10, 4.0), (12, 5.5)],  # 12.0 reaches -c/2: asymmetric
)
def test_hartley_masked_slices_equal_the_crop_read_at_the_mask(c: int, radius: float) -> None:
    """The point path (mask pixels and their negatives only) gives the crop's numbers and the
    same gradients for the rotations and both parameter grids."""
    torch.manual_seed(2)
    dec = HartleyDecoder(HartleyDecoder.Config(), 24, 3.0).double()
    mask = _disc(c, radius)
    out = []
    for points in (True, False):
        dec.zero_grad()
        rot = _rotations(6, 3).reshape(2, 3, 3, 3).requires_grad_(True)
        got = dec.masked_slices(rot, mask) if points else dec.slices(rot, c)[..., mask]
        weights = torch.linspace(-1, 2, int(mask.sum()), dtype=torch.float64)
        (got.real * weights + got.imag.square()).sum().backward()
        assert rot.grad is not None and dec.mantissa.grad is not None
        out.append((got.detach(), rot.grad, dec.mantissa.grad.clone(), dec.exponent.grad.clone()))
    assert out[0][0].shape == (2, 3, int(mask.sum()))
    for a, b in zip(out[0], out[1], strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-12 * float(b.abs().max()))
    # a decoder without the point path (compute the crop, then read it) gives the same numbers
    dec.supports_points = False
    np.testing.assert_allclose(
        Decoder.masked_slices(dec, _rotations(3, 3), mask).detach().numpy(),
        out[0][0][0].numpy(),
        rtol=0,
        atol=1e-12,
    )


def test_masked_slices_reject_bad_masks() -> None:
    dec = HartleyDecoder(HartleyDecoder.Config(), 16, 3.0)
    rot = _rotations(1, 0).float()
    for bad in (_disc(7, 3.0), _disc(18, 3.0), torch.ones(8, 6, dtype=torch.bool)):
        with pytest.raises(ValueError, match="mask must be|even"):
            dec.masked_slices(rot, bad)
    with pytest.raises(ValueError, match="boolean"):
        dec.masked_slices(rot, _disc(8, 3.0).float())


def test_render_on_a_mask_is_the_render_read_at_the_mask() -> None:
    """CTF product and phase ramp (shift in pixels of the full box) at the mask's pixels."""
    torch.manual_seed(4)
    L, c = 24, 14
    dec = HartleyDecoder(HartleyDecoder.Config(), L, 3.0).double()
    rot = _rotations(6, 5).reshape(3, 2, 3, 3)
    ctf = torch.rand(3, c, c, dtype=torch.float64)
    shifts = torch.randn(3, 2, 2, dtype=torch.float64) * 3
    mask = _disc(c, 6.0)
    full = render(dec, rot, ctf, shifts)[..., mask]
    np.testing.assert_allclose(
        render(dec, rot, ctf, shifts, mask).detach().numpy(),
        full.detach().numpy(),
        rtol=0,
        atol=1e-12,
    )
    obs = torch.randn(3, c, c, dtype=torch.complex128)
    np.testing.assert_allclose(
        candidate_loss(render(dec, rot, ctf, shifts, mask), obs[..., mask], None).detach(),
        candidate_loss(render(dec, rot, ctf, shifts), obs, mask).detach(),
        rtol=1e-13,
    )


def test_cropped_slices_reject_odd_or_too_large_sizes() -> None:
    dec = HartleyDecoder(HartleyDecoder.Config(), 16, 3.0)
    for bad in (7, 18, 0):
        with pytest.raises(ValueError, match="even"):
            dec.slices(_rotations(1, 0).float(), bad)


def test_render_on_a_crop_is_the_crop_of_the_full_render() -> None:
    """CTF product and phase ramp (shift in pixels of the full box) commute with the crop."""
    torch.manual_seed(1)
    L, c = 24, 12
    dec = HartleyDecoder(HartleyDecoder.Config(), L, 3.0).double()
    rot = _rotations(6, 2).reshape(3, 2, 3, 3)
    ctf = torch.rand(3, L, L, dtype=torch.float64)
    shifts = torch.randn(3, 2, 2, dtype=torch.float64) * 3
    full = render(dec, rot, ctf, shifts)
    coarse = render(dec, rot, _crop(ctf, c), shifts)
    np.testing.assert_allclose(
        coarse.detach().numpy(), _crop(full, c).detach().numpy(), rtol=0, atol=1e-12
    )


def test_work_schedule_counts_images_not_epochs() -> None:
    cfg = validate_config({})
    for n in (1000, 5000, 20000, 10**6):
        r = resolve_schedule(cfg, n, 64)
        assert r.switch_epoch == math.ceil(200_000 / n)
        assert r.epochs - r.switch_epoch == max(5, math.ceil(100_000 / n))
        assert r.switch_epoch * n >= 200_000 > (r.switch_epoch - 1) * n
    # explicit values win
    r = resolve_schedule(validate_config({"epochs": 9, "switch_epoch": 4}), 5000, 64)
    assert (r.epochs, r.switch_epoch) == (9, 4)


def test_coarse_to_fine_mask_knots() -> None:
    cfg = validate_config({})
    r = resolve_schedule(cfg, 5000, 64)  # 40 amortized + 20 direct epochs
    assert amortized_crop(r, 64) == 32
    # the crop's 16 shells, whole from the start to the switch
    assert [r.mask_radius_at(e) for e in (0, 20, 40)] == pytest.approx([0.5, 0.5, 0.5])
    assert r.mask_radius_at(47) == pytest.approx(0.75)
    assert r.mask_radius_at(40 + 14) == pytest.approx(1.0)
    assert r.mask_radius_at(59) == pytest.approx(1.0)
    # at box 32 (the demo) there is no crop: the amortized stage's band is the whole box
    r32 = resolve_schedule(cfg, 5000, 32)
    assert amortized_crop(r32, 32) is None
    assert [r32.mask_radius_at(e) for e in (0, 40, 59)] == pytest.approx([1.0, 1.0, 1.0])
    # direct and fully amortized runs start from the same coarse band and grow over 2/3
    for schedule in ("direct", "amortized"):
        rs = resolve_schedule(validate_config({"stage_schedule": schedule}), 5000, 64)
        third = math.ceil(2 * int(rs.epochs or 0) / 3)
        assert rs.mask_radius_at(0) == pytest.approx(0.5)
        assert rs.mask_radius_at(third) == pytest.approx(1.0)
    # a user's linear growth is kept
    lin = resolve_schedule(
        validate_config({"mask_radius_start": 0.3, "mask_grow_epochs": 10}), 5000, 64
    )
    assert lin.mask_knots is None and lin.mask_radius_at(5) == pytest.approx(0.65)
    # fully amortized runs never crop
    assert amortized_crop(validate_config({"stage_schedule": "amortized"}), 64) is None


def test_a_run_trains_the_amortized_stage_on_the_crop_then_the_full_box(tmp_path) -> None:
    """End to end: encoder built for the crop, per-epoch mask radii follow the knots."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
    from run_toy_data import make_dataset

    from cryospin.core.run import run_reconstruction

    toy = make_dataset(tmp_path / "toy", n=32, box=24, snr=2.0, seed=0)
    cfg = validate_config(
        {
            "particles": str(toy["star"]),
            "amortized_box": 12,
            "amortized_images": 64,
            "direct_images": 32,
            "direct_min_epochs": 3,
            "batch_size": 16,
            "progress": False,
            "eval_every": 100,
            "num_threads": 1,
            "encoder_config": {"n_heads": 2, "channels": [4, 8], "head_hidden": [8]},
        }
    )
    summary = run_reconstruction(cfg, tmp_path / "run")
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in recs] == ["amortized"] * 2 + ["direct"] * 3
    # 12 of 24 pixels: 6 shells through the amortized stage, then to Nyquist
    assert [r["mask_radius"] for r in recs] == pytest.approx([0.5, 0.5, 0.5, 0.75, 1.0])
    assert summary["switch_epoch"] == 2


def test_known_pose_reconstruction_keeps_the_file_poses(tmp_path) -> None:
    """init_poses: file + refine_poses: false is a reconstruction with the true poses."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
    from run_toy_data import make_dataset

    from cryospin.core.run import run_reconstruction

    toy = make_dataset(tmp_path / "toy", n=24, box=16, snr=2.0, seed=3, max_shift_px=1.5)
    cfg = validate_config(
        {
            "particles": str(toy["star"]),
            "gt_map": str(toy["truth"]),
            "stage_schedule": "direct",
            "init_poses": "file",
            "refine_poses": False,
            "shifts": True,
            "epochs": 2,
            "batch_size": 8,
            "progress": False,
            "num_threads": 1,
        }
    )
    summary = run_reconstruction(cfg, tmp_path / "run")
    # float32 storage of the table: the poses come back to 1e-4 degrees
    assert summary["rotation_error_median_deg"] < 1e-3
    assert summary["shift_error_median_A"] < 1e-3


def test_with_shifts_every_head_predicts_a_translation(tmp_path) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
    from run_toy_data import make_dataset

    from cryospin.core.engine.data import ParticleData
    from cryospin.core.engine.trainer import Trainer
    from cryospin.io.star import read_star

    toy = make_dataset(tmp_path / "toy", n=8, box=16, snr=2.0, seed=0)
    data = ParticleData(read_star(toy["star"]), None, True)
    enc = {"channels": [4], "head_hidden": [8], "n_heads": 2}
    for shifts, explicit, expected in (
        (True, None, True),
        (False, None, False),
        (True, False, False),
    ):
        conf = dict(enc) if explicit is None else {**enc, "estimate_shifts": explicit}
        cfg = validate_config({"shifts": shifts, "encoder_config": conf, "progress": False})
        tr = Trainer(cfg, data, tmp_path / f"c{shifts}{explicit}", tmp_path / "m.jsonl")
        out = tr.models.encoder(data.batch(data.indices[:4]).images)
        assert (out.shifts_A is not None) is expected


@pytest.mark.parametrize("box", [16, 17, 24])
@pytest.mark.parametrize("radius", [0.2, 0.37, 0.5, 0.81, 1.0])
def test_mask_crop_is_the_smallest_even_crop_holding_the_mask(box: int, radius: float) -> None:
    from cryospin.core.engine.forward import frequency_mask
    from cryospin.core.engine.stages import mask_crop

    mask = frequency_mask(box, radius)
    c = mask_crop(mask)
    if c is None:  # the whole box is needed: no smaller even crop holds the mask
        for c2 in range(2, box, 2):
            assert _crop(mask, c2).sum() < mask.sum()
        return
    assert c % 2 == 0 and _crop(mask, c).sum() == mask.sum()
    assert _crop(mask, c - 2).sum() < mask.sum()
