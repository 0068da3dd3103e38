"""cryospin.core.registry: loading plugins from entry points, names, errors, CRYOSPIN_PLUGINS.

Fake third-party distributions are written to ``tmp_path`` as a ``<name>-<version>.dist-info``
folder (METADATA + entry_points.txt) beside their plugin module, and put on ``sys.path``:
``importlib.metadata`` then finds their ``cryospin`` entry points exactly as for installed ones.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cryospin.core import registry as reg
from cryospin.core.errors import InputError
from cryospin.core.registry import KINDS, PluginError, get_registry

HEADER = """from cryospin.core.hookspecs import hookimpl
from cryospin.core import interfaces as itf


class Enc(itf.Encoder):
    Config = itf.ComponentConfig
    n_candidates = 1

    def forward(self, images):
        raise NotImplementedError


class Dec(itf.Decoder):
    Config = itf.ComponentConfig

    def forward(self, rotations):
        raise NotImplementedError

    def to_map(self):
        raise NotImplementedError


class Stage(itf.PoseStage):
    Config = itf.ComponentConfig
    name = "fake"

    def setup(self, ctx):
        pass

    def train_step(self, ctx, batch):
        raise NotImplementedError

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class Source(itf.ImageSource):
    suffixes = (".fake",)

    def read(self, path, datadir=None, **options):
        raise NotImplementedError
"""


class FakeDists:
    """Writes fake distributions into one folder on sys.path."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.modules: list[str] = []
        monkeypatch.syspath_prepend(str(root))

    def add(self, dist: str, body: str, version: str = "1.2.3") -> str:
        module = f"fake_{dist.replace('-', '_')}_{len(self.modules)}_{id(self)}"
        (self.root / f"{module}.py").write_text(HEADER + textwrap.dedent(body))
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[cryospin]\nplugin = {module}\n")
        self.modules.append(module)
        return module


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDists]:
    monkeypatch.delenv(reg.ENV_VAR, raising=False)
    dists = FakeDists(tmp_path, monkeypatch)
    yield dists
    for m in dists.modules:
        sys.modules.pop(m, None)
    monkeypatch.undo()
    get_registry(refresh=True)  # leave the process-wide registry as it was


ENCODER_X = """
@hookimpl
def register_encoders(register):
    register("{name}", Enc)
"""


def test_builtins_load_with_distribution_and_version() -> None:
    r = get_registry(refresh=True)
    assert {"multihead", "cryoai"} <= set(r.names("encoder"))
    assert {"hartley", "mlp"} <= set(r.names("decoder"))
    comp = r.components["encoder"]["multihead"]
    assert comp.distribution == "cryospin-encoders" and comp.version == "0.1.0"


def test_fake_distribution_is_loaded(fake: FakeDists) -> None:
    fake.add("fake-alpha", ENCODER_X.format(name="alpha-enc"))
    r = get_registry(refresh=True)
    comp = r.components["encoder"]["alpha-enc"]
    assert (comp.distribution, comp.version) == ("fake-alpha", "1.2.3")


def test_duplicate_across_two_plugins_names_both_distributions(fake: FakeDists) -> None:
    fake.add("fake-alpha", ENCODER_X.format(name="same"))
    fake.add("fake-beta", ENCODER_X.format(name="same"))
    with pytest.raises(PluginError) as err:
        get_registry(refresh=True)
    msg = str(err.value)
    assert "fake-alpha" in msg and "fake-beta" in msg and "'same'" in msg


def test_duplicate_of_a_builtin_names_both_distributions(fake: FakeDists) -> None:
    fake.add("fake-alpha", ENCODER_X.format(name="multihead"))
    with pytest.raises(PluginError, match="cryospin-encoders") as err:
        get_registry(refresh=True)
    assert "fake-alpha" in str(err.value)


def test_same_name_in_different_kinds_is_allowed(fake: FakeDists) -> None:
    fake.add(
        "fake-alpha",
        """
    @hookimpl
    def register_decoders(register):
        register("multihead", Dec)
    """,
    )
    r = get_registry(refresh=True)
    assert r.components["decoder"]["multihead"].distribution == "fake-alpha"


def test_misspelled_hook_fails_loudly(fake: FakeDists) -> None:
    fake.add(
        "fake-typo",
        """
    @hookimpl
    def register_encoder(register):
        register("never", object())
    """,
    )
    with pytest.raises(PluginError, match="register_encoder") as err:
        get_registry(refresh=True)
    assert "fake-typo" in str(err.value) and "unknown hook" in str(err.value)


def test_hook_without_hookimpl_marker_fails_loudly(fake: FakeDists) -> None:
    # pluggy silently ignores unmarked functions; the registry must not.
    fake.add(
        "fake-nomark",
        """
    def register_encoders(register):
        register("never", object())
    """,
    )
    with pytest.raises(PluginError, match="hookimpl") as err:
        get_registry(refresh=True)
    assert "fake-nomark" in str(err.value)


def test_plugin_that_fails_to_import_is_named(fake: FakeDists) -> None:
    fake.add("fake-broken", "import this_module_does_not_exist_42\n")
    with pytest.raises(PluginError, match="fake-broken"):
        get_registry(refresh=True)


def test_env_var_restricts_external_distributions(
    fake: FakeDists, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.add("fake-alpha", ENCODER_X.format(name="alpha-enc"))
    fake.add("fake-beta", ENCODER_X.format(name="beta-enc"))

    monkeypatch.setenv(reg.ENV_VAR, "fake-alpha")
    names = get_registry(refresh=True).names("encoder")
    assert "alpha-enc" in names and "beta-enc" not in names
    assert {"multihead", "cryoai"} <= set(names)  # built-ins always load

    monkeypatch.setenv(reg.ENV_VAR, " fake-beta , fake-alpha ")
    names = get_registry(refresh=True).names("encoder")
    assert {"alpha-enc", "beta-enc"} <= set(names)

    monkeypatch.setenv(reg.ENV_VAR, "")
    r = get_registry(refresh=True)
    externals = {
        c.distribution for kind in r.components.values() for c in kind.values()
    } - reg.BUILTIN_DISTRIBUTIONS
    assert externals == set()
    assert {"multihead", "cryoai"} <= set(r.names("encoder"))


def test_env_var_skips_broken_plugins_it_does_not_name(
    fake: FakeDists, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.add("fake-broken", "import this_module_does_not_exist_42\n")
    monkeypatch.setenv(reg.ENV_VAR, "")
    assert "multihead" in get_registry(refresh=True).names("encoder")


def test_unknown_name_lists_known_ones() -> None:
    r = get_registry(refresh=True)
    with pytest.raises(PluginError) as err:
        r.get("encoder", "multihed")
    msg = str(err.value)
    assert "multihed" in msg and "multihead" in msg and "cryoai" in msg
    with pytest.raises(PluginError, match="none"):
        r.get("no-such-kind", "x")


def test_cli_plugins_lists_every_kind(fake: FakeDists) -> None:
    fake.add(
        "fake-allkinds",
        """
    @hookimpl
    def register_encoders(register):
        register("ak-encoder", Enc)

    @hookimpl
    def register_decoders(register):
        register("ak-decoder", Dec)

    @hookimpl
    def register_pose_stages(register):
        register("ak-stage", Stage)

    @hookimpl
    def register_image_sources(register):
        register("ak-source", Source())
    """,
        version="4.5.6",
    )
    get_registry(refresh=True)
    from cryospin.core.cli.main import build_cli

    result = CliRunner().invoke(build_cli(), ["plugins"])
    assert result.exit_code == 0, result.output
    for kind in KINDS:
        assert kind in result.output
    for name in ("ak-encoder", "ak-decoder", "ak-stage", "ak-source", "multihead", "hartley"):
        assert name in result.output
    rows = [line for line in result.output.splitlines() if "ak-stage" in line]
    assert rows and "fake-allkinds" in rows[0] and "4.5.6" in rows[0]


@pytest.mark.parametrize(
    ("hook", "obj", "expected"),
    [
        (
            "register_pose_stages",
            "object()",
            "not a subclass of cryospin.core.interfaces.PoseStage",
        ),
        ("register_pose_stages", "itf.PoseStage", "does not implement load_state_dict, setup"),
        ("register_pose_stages", "Enc", "not a subclass of cryospin.core.interfaces.PoseStage"),
        ("register_encoders", "Stage", "not a subclass of cryospin.core.interfaces.Encoder"),
        ("register_decoders", "object", "not a subclass of cryospin.core.interfaces.Decoder"),
        ("register_image_sources", "Source", "not an instance of cryospin.core.interfaces"),
        ("register_image_sources", "object()", "not an instance of cryospin.core.interfaces"),
    ],
)
def test_a_component_that_is_not_its_kind_is_refused_naming_the_plugin(
    fake: FakeDists, hook: str, obj: str, expected: str
) -> None:
    fake.add("fake-wrong", f"@hookimpl\ndef {hook}(register):\n    register('odd', {obj})\n")
    with pytest.raises(PluginError) as err:
        get_registry(refresh=True)
    msg = str(err.value)
    assert "plugin fake-wrong:plugin" in msg and "'odd'" in msg and expected in msg


def test_a_stage_without_a_name_is_refused(fake: FakeDists) -> None:
    fake.add(
        "fake-noname",
        """
    class NoName(Stage):
        name = None

    @hookimpl
    def register_pose_stages(register):
        register("noname", NoName)
    """,
    )
    with pytest.raises(PluginError, match="fake-noname:plugin .* no class attribute name"):
        get_registry(refresh=True)


@pytest.mark.parametrize("suffixes", ["()", "('star',)", "('.STAR2',)"])
def test_bad_suffixes_are_refused(fake: FakeDists, suffixes: str) -> None:
    fake.add(
        "fake-suffix",
        f"""
    class Bad(Source):
        suffixes = {suffixes}

    @hookimpl
    def register_image_sources(register):
        register("bad", Bad())
    """,
    )
    with pytest.raises(
        PluginError, match="fake-suffix:plugin .* suffixes must be non-empty, lower case, dotted"
    ):
        get_registry(refresh=True)


def test_a_suffix_claimed_twice_names_both_sources(fake: FakeDists) -> None:
    fake.add(
        "fake-star",
        """
    class Star(Source):
        suffixes = (".star",)

    @hookimpl
    def register_image_sources(register):
        register("mystar", Star())
    """,
    )
    with pytest.raises(PluginError) as err:
        get_registry(refresh=True)
    msg = str(err.value)
    assert "'mystar' (fake-star)" in msg and "(cryospin-io)" in msg and ".star" in msg


def test_source_for_takes_the_longest_suffix_whatever_the_case(fake: FakeDists) -> None:
    fake.add(
        "fake-long",
        """
    class Long(Source):
        suffixes = (".b.star",)

    @hookimpl
    def register_image_sources(register):
        register("long", Long())
    """,
    )
    r = get_registry(refresh=True)
    long, star = r.get("image_source", "long"), r.get("image_source", "relion-star")
    assert r.source_for("/d/x.B.STAR") is long and r.source_for("x.b.star") is long
    assert r.source_for("x.Star") is star and r.source_for("x.a.star") is star
    assert r.source_for("x.MRCS") is r.source_for("y.mrc") is r.get("image_source", "mrc-stack")
    with pytest.raises(InputError, match="no image source reads '.txt' files; known: .b.star"):
        r.source_for("x.txt")
    with pytest.raises(InputError, match="reads 'star' files"):
        r.source_for("star")  # the name alone, no suffix


def test_provider_is_a_source_that_overrides_the_method(fake: FakeDists) -> None:
    fake.add(
        "fake-read-only",
        """
    @hookimpl
    def register_image_sources(register):
        register("aaa-first-by-name", Source())
    """,
    )
    r = get_registry(refresh=True)
    first = r.get("image_source", "aaa-first-by-name")
    assert not first.provides("read_map")
    with pytest.raises(NotImplementedError, match="does not read maps"):
        first.read_map(Path("x.mrc"))
    assert r.provider("read_map") is r.get("image_source", "cryosparc-cs")
    with pytest.raises(ValueError, match="not an optional"):
        r.provider("read")
