"""The plugin's own tests: cryospin's contract for encoders, plus registration by name."""

from cryospin_example_plugin.encoder import TinyEncoder

from cryospin.core.registry import get_registry
from cryospin.core.testing import check_encoder, encoder_contract_tests

# One pytest test per contract rule (config, construction, outputs, dtype, gradients, determinism).
TestTinyEncoder = encoder_contract_tests(TinyEncoder, box=32, pixel_size_A=4.0)


def test_other_config() -> None:
    check_encoder(TinyEncoder, box=48, config=TinyEncoder.Config(n_candidates=5, pooled=4))


def test_registered_by_name() -> None:
    assert get_registry(refresh=True).get("encoder", "example-tiny") is TinyEncoder
