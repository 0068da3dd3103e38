"""Grid files: expansion (points x axes x seeds, precedence, labels) and up-front validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cryospin.core.errors import ConfigError
from cryospin.grid.spec import (
    load_grid,
    load_spec,
    parse_set,
    resolve_grid_path,
    shipped_grids,
)

TINY_ENC = {"channels": [4, 8, 8], "head_hidden": [16]}


@pytest.fixture()
def particles(tmp_path: Path) -> str:
    """A path that exists (expansion checks files exist; it does not read them)."""
    p = tmp_path / "particles.star"
    p.write_text("data_\n")
    return str(p)


def _grid(tmp_path: Path, body: dict, name: str = "g.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def test_product_of_points_axes_and_seeds_in_order(tmp_path, particles):
    path = _grid(
        tmp_path,
        {
            "base": {"encoder": "multihead", "epochs": 5, "encoder_config": TINY_ENC},
            "points": [
                {"name": "a", "stage_schedule": "amortized"},
                {"name": "b", "stage_schedule": "semi-amortized", "switch_epoch": 2},
            ],
            "axes": {"encoder_config.n_heads": [1, 3], "lr_pose": [0.01, 0.1]},
            "seeds": [4, 7],
        },
    )
    g = load_grid(path, particles=particles)
    assert len(g.points) == 2 * 2 * 2 * 2
    assert g.labels() == [
        "a__encoder_config.n_heads=1__lr_pose=0.01",
        "a__encoder_config.n_heads=1__lr_pose=0.1",
        "a__encoder_config.n_heads=3__lr_pose=0.01",
        "a__encoder_config.n_heads=3__lr_pose=0.1",
        "b__encoder_config.n_heads=1__lr_pose=0.01",
        "b__encoder_config.n_heads=1__lr_pose=0.1",
        "b__encoder_config.n_heads=3__lr_pose=0.01",
        "b__encoder_config.n_heads=3__lr_pose=0.1",
    ]
    first, last = g.points[0], g.points[-1]
    assert [p.seed for p in g.points[:2]] == [4, 7]
    assert first.config.stage_schedule == "amortized" and first.config.seed == 4
    assert first.config.encoder_config == {**TINY_ENC, "n_heads": 1}  # dotted key merged
    assert last.config.switch_epoch == 2 and last.config.lr_pose == 0.1
    assert last.config.encoder_config["n_heads"] == 3 and last.config.epochs == 5
    assert str(last.run_dir) == "runs/b__encoder_config.n_heads=3__lr_pose=0.1/seed7"
    assert first.values == {
        "stage_schedule": "amortized",
        "encoder_config.n_heads": 1,
        "lr_pose": 0.01,
    }


def test_precedence_base_config_base_point_axes_seed_set_particles(tmp_path, particles):
    (tmp_path / "base.yaml").write_text(
        yaml.safe_dump({"epochs": 9, "batch_size": 8, "lr_pose": 0.5, "encoder": "multihead"})
    )
    path = _grid(
        tmp_path,
        {
            "base_config": "base.yaml",
            "base": {"epochs": 3, "encoder_config": TINY_ENC},
            "points": [{"name": "p", "batch_size": 16, "epochs": 4}],
            "axes": {"epochs": [6]},
            "seeds": 2,
        },
    )
    over = parse_set(["lr_pose=0.02", "encoder_config.n_heads=2", "seed=11"])
    g = load_grid(path, overrides=over, particles=particles)
    cfgs = [p.config for p in g.points]
    assert [c.epochs for c in cfgs] == [6, 6]  # axes over point over base over base_config
    assert [c.batch_size for c in cfgs] == [16, 16]  # point over base_config
    assert [c.lr_pose for c in cfgs] == [0.02, 0.02]  # --set over everything
    assert [c.seed for c in cfgs] == [11, 11]  # --set even over the grid seed
    assert [p.seed for p in g.points] == [0, 1]  # ... but the folders keep the grid seed
    assert cfgs[0].encoder_config == {**TINY_ENC, "n_heads": 2}
    assert cfgs[0].particles == particles


def test_unnamed_points_labels_and_seed_override(tmp_path, particles):
    path = _grid(
        tmp_path,
        {
            "base": {"encoder_config": TINY_ENC},
            "points": [{"decoder": "hartley"}, {"decoder": "mlp"}],
            "seeds": [0, 1, 2],
        },
    )
    g = load_grid(path, particles=particles, seeds=[5])
    assert [(p.label, p.seed) for p in g.points] == [("decoder=hartley", 5), ("decoder=mlp", 5)]
    g = load_grid(_grid(tmp_path, {"base": {"epochs": 1}}, "plain.yaml"), particles=particles)
    assert [(p.label, p.seed) for p in g.points] == [("base", 0)]


def test_parse_set_values_are_yaml():
    assert parse_set(["a=1", "b=[4, 8]", "c=null", "d=x y", "e.f=0.5", "g=true"]) == {
        "a": 1,
        "b": [4, 8],
        "c": None,
        "d": "x y",
        "e.f": 0.5,
        "g": True,
    }
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_set(["epochs"])


@pytest.mark.parametrize(
    "body, override, message",
    [
        (
            {"axes": {"epochs": [1, 0]}},
            [],
            r"^grid point 'epochs=0' \(seed 0\): invalid config field 'epochs': "
            r".*greater than or equal",
        ),
        (
            {"axes": {"encoder_config.n_heads": [2, 0]}},
            [],
            r"^grid point 'encoder_config.n_heads=0' \(seed 0\): invalid config field "
            r"'encoder_config.n_heads'",
        ),
        (
            {"points": [{"name": "typo", "epoch": 3}]},
            [],
            r"^grid point 'typo' \(seed 0\): invalid config field 'epoch': Extra inputs",
        ),
        (
            {"points": [{"name": "enc", "encoder": "nope"}]},
            [],
            r"^grid point 'enc' \(seed 0\): field 'encoder': unknown encoder 'nope' "
            r"\(registered: .*multihead",
        ),
        (
            {"points": [{"name": "dec", "decoder": "mlp", "decoder_config": {"hidden": 0}}]},
            [],
            r"^grid point 'dec' \(seed 0\): invalid config field 'decoder_config.hidden'",
        ),
        (
            {"base": {"box": 16}, "points": [{"name": "deep"}]},
            [],
            r"^grid point 'deep' \(seed 0\): field 'encoder_config' at box 16: box 16 is too small",
        ),
        (
            {"axes": {"epochs": [2]}},
            ["epochs.x=1"],
            r"^grid point 'epochs=2' \(seed 0\): key 'epochs.x': 'epochs' is not a mapping",
        ),
        (
            {"points": [{"name": "gt", "gt_map": "/nonexistent/map.mrc"}]},
            [],
            r"^grid point 'gt' \(seed 0\): field 'gt_map': file /nonexistent/map.mrc not found",
        ),
    ],
)
def test_invalid_point_fails_whole_grid_naming_point_and_field(
    tmp_path, particles, body, override, message
):
    path = _grid(tmp_path, {"base": {}, **body} if "base" not in body else body)
    with pytest.raises(ConfigError, match=message) as info:
        load_grid(path, particles=particles, overrides=parse_set(override))
    assert "\n" not in str(info.value)


def test_grid_file_errors_name_file_and_field(tmp_path, particles):
    with pytest.raises(ConfigError, match=r"g.yaml: field 'axis': Extra inputs"):
        load_spec(_grid(tmp_path, {"axis": {"epochs": [1]}}))
    with pytest.raises(ConfigError, match=r"field 'axes': .*axis 'epochs' has no values"):
        load_spec(_grid(tmp_path, {"axes": {"epochs": []}}))
    with pytest.raises(ConfigError, match=r"field 'seeds': .*repeated seed"):
        load_spec(_grid(tmp_path, {"seeds": [1, 1]}))
    bad = tmp_path / "bad.yaml"
    bad.write_text("axes: [unclosed\n")
    with pytest.raises(ConfigError, match=r"cannot read grid file .*bad.yaml"):
        load_spec(bad)
    with pytest.raises(
        ConfigError,
        match=r"grid file nosuch not found \(shipped grids: heads, "
        r"paper-table2, switch\)",
    ):
        resolve_grid_path("nosuch")
    # two unnamed points that give the same label
    path = _grid(tmp_path, {"points": [{"name": "x"}, {"name": "x"}]}, "dup.yaml")
    with pytest.raises(ConfigError, match=r"two points share the label 'x'"):
        load_grid(path, particles=particles)


def test_input_data_rules(tmp_path, particles):
    # no particles and no simulate block: invalid, pointing at --particles
    with pytest.raises(ConfigError, match=r"no particles: give --particles"):
        load_grid(_grid(tmp_path, {"base": {}}))
    sim = {"preset": "hsp90", "box": 16, "n": 8, "snr": 1.0, "seed": 3}
    path = _grid(
        tmp_path,
        {
            "simulate": sim,
            "points": [{"name": "a"}, {"name": "b", "gt_map": None, "invert_contrast": False}],
            "base": {"encoder_config": TINY_ENC},
        },
        "sim.yaml",
    )
    data = tmp_path / "out" / "data"
    g = load_grid(path, data_dir=data)
    a, b = (p.config for p in g.points)
    assert a.particles == str(data / "particles.star") and a.gt_map == str(data / "gt_map.mrc")
    assert a.invert_contrast is True  # simulated stacks are protein-dark
    assert b.gt_map is None and b.invert_contrast is False  # explicit settings win
    assert g.simulate == sim
    # --particles wins over the simulate block; simulate.* overrides change the block
    g = load_grid(path, data_dir=data, particles=particles, overrides={"simulate.n": 4})
    assert g.points[0].config.particles == particles and g.simulate["n"] == 4
    with pytest.raises(ConfigError, match=r"field 'simulate.snr'"):
        load_grid(path, data_dir=data, overrides={"simulate.snr": -1})
    with pytest.raises(ConfigError, match=r"has no simulate block"):
        load_grid(
            _grid(tmp_path, {}, "nosim.yaml"), particles=particles, overrides={"simulate.n": 4}
        )


@pytest.mark.parametrize("name", sorted(shipped_grids()))
def test_shipped_grids_expand_and_validate(name):
    g = load_grid(name)  # by name, as `cryospin grid NAME`
    assert g.name == name and g.simulate is not None and len(g.points) >= 4
    assert len({(p.label, p.seed) for p in g.points}) == len(g.points)
    if name == "paper-table2":
        got = {
            p.label: (p.config.encoder, p.config.decoder, p.config.stage_schedule) for p in g.points
        }
        assert got == {
            "semi-amortized": ("multihead", "hartley", "semi-amortized"),
            "fully-amortized": ("multihead", "hartley", "amortized"),
            "cryoAI-explicit": ("cryoai", "hartley", "amortized"),
            "cryoAI": ("cryoai", "mlp", "amortized"),
        }
    if name == "heads":
        assert sorted({p.config.encoder_config["n_heads"] for p in g.points}) == [1, 2, 4, 7, 15]
    if name == "switch":
        rules = {
            (p.config.switch, p.config.switch_epoch if p.config.switch == "epoch" else None)
            for p in g.points
        }
        assert ("auto", None) in rules and len([r for r in rules if r[0] == "epoch"]) >= 4
