"""cryospin.core.testing accepts correct toy components and rejects broken ones."""

from __future__ import annotations

import pytest
import torch

from cryospin.core.interfaces import ComponentConfig, Decoder, Encoder, PoseCandidates
from cryospin.core.testing import (
    check_decoder,
    check_encoder,
    decoder_contract_tests,
    encoder_contract_tests,
    random_rotations,
)


def _rot_from_6d(x: torch.Tensor) -> torch.Tensor:
    a, b = x[..., :3], x[..., 3:]
    e1 = torch.nn.functional.normalize(a, dim=-1)
    e2 = torch.nn.functional.normalize(b - (e1 * b).sum(-1, keepdim=True) * e1, dim=-1)
    return torch.stack([e1, e2, torch.cross(e1, e2, dim=-1)], dim=-1)


class ToyEncoder(Encoder):
    class Config(ComponentConfig):
        n: int = 2

    def __init__(self, config: Config, box: int, pixel_size_A: float) -> None:
        super().__init__(config, box, pixel_size_A)
        self.lin = torch.nn.Linear(box * box, 6 * config.n)

    @property
    def n_candidates(self) -> int:
        return self.config.n

    def forward(self, images: torch.Tensor) -> PoseCandidates:
        x = self.lin(images.flatten(1)).reshape(-1, self.config.n, 6)
        return PoseCandidates(_rot_from_6d(x))


class ToyDecoder(Decoder):
    """An anisotropic Gaussian blob's transform: real and even, so Hermitian; learns its width."""

    class Config(ComponentConfig):
        width: float = 2.0

    def __init__(self, config: Config, box: int, pixel_size_A: float) -> None:
        super().__init__(config, box, pixel_size_A)
        self.log_w = torch.nn.Parameter(torch.tensor(config.width).log())
        self.amp = torch.nn.Parameter(torch.randn(()))

    def forward(self, rotations: torch.Tensor) -> torch.Tensor:
        k = torch.arange(self.box, dtype=rotations.dtype, device=rotations.device) - self.box // 2
        ky, kx = torch.meshgrid(k, k, indexing="ij")
        k3 = torch.stack([kx, ky, torch.zeros_like(kx)], -1)  # (L, L, 3)
        q = torch.einsum("...ij,yxi->...yxj", rotations, k3)  # k @ R = R^T k
        aniso = torch.tensor([1.0, 2.0, 3.0], dtype=q.dtype, device=q.device)  # anisotropic
        val = self.amp * torch.exp(-(q**2 * aniso).sum(-1) * self.log_w.exp() ** 2 / self.box**2)
        return torch.complex(val, torch.zeros_like(val))

    def to_map(self) -> torch.Tensor:
        return torch.zeros(self.box, self.box, self.box, dtype=self.amp.dtype) + self.amp


def test_good_toys_pass() -> None:
    check_encoder(ToyEncoder, box=16)
    check_decoder(ToyDecoder, box=16)


TestToyEncoderClass = encoder_contract_tests(ToyEncoder, box=16)
TestToyDecoderClass = decoder_contract_tests(ToyDecoder, box=16)


def test_improper_rotation_rejected() -> None:
    class Mirror(ToyEncoder):
        def forward(self, images):
            out = super().forward(images)
            return PoseCandidates(out.rotations * -1)

    with pytest.raises(AssertionError, match="not proper"):
        check_encoder(Mirror, box=16)


def test_extra_fields_must_be_forbidden() -> None:
    class Loose(ToyEncoder):
        class Config(ComponentConfig):
            model_config = {"extra": "ignore"}
            n: int = 1

    with pytest.raises(AssertionError, match="unknown field"):
        check_encoder(Loose, box=16)


def test_dead_parameter_detected() -> None:
    class Dead(ToyEncoder):
        def __init__(self, config, box, pixel_size_A):
            super().__init__(config, box, pixel_size_A)
            self.unused = torch.nn.Parameter(torch.zeros(3))

    with pytest.raises(AssertionError, match="no gradient reached"):
        check_encoder(Dead, box=16)


def test_nondeterminism_detected() -> None:
    class Noisy(ToyEncoder):
        def forward(self, images):
            return super().forward(images + torch.randn(()).item() * 0 + torch.rand(1).item())

    check_encoder(Noisy, box=16)  # random but seeded: allowed

    class Unseeded(ToyEncoder):
        calls = 0

        def forward(self, images):
            type(self).calls += 1
            return super().forward(images * type(self).calls)

    with pytest.raises(AssertionError, match="differ under the same seed"):
        check_encoder(Unseeded, box=16)


def test_off_centre_decoder_rejected() -> None:
    class OffCentre(ToyDecoder):
        def forward(self, rotations):
            return torch.roll(super().forward(rotations), 1, dims=-1)

    with pytest.raises(AssertionError, match="centred|Hermitian"):
        check_decoder(OffCentre, box=16)


def test_random_rotations_are_rotations() -> None:
    r = random_rotations(100, dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64).expand(100, 3, 3)
    assert torch.allclose(r @ r.transpose(-1, -2), eye)
    assert torch.allclose(torch.linalg.det(r), torch.ones(100, dtype=torch.float64))


def test_candidate_layout_mismatch_detected() -> None:
    class Scrambled(ToyDecoder):
        def forward(self, rotations):
            out = super().forward(rotations)
            return out.flip(0) if rotations.dim() == 3 else out

    with pytest.raises(AssertionError, match="disagree"):
        check_decoder(Scrambled, box=16)


def test_wrong_point_order_detected() -> None:
    """A decoder whose own point path returns the mask's pixels column-major is caught."""

    class ColumnMajor(ToyDecoder):
        supports_points = True

        def forward(self, rotations, mask=None):
            out = super().forward(rotations)
            if mask is None:
                return out
            lo = self.box // 2 - mask.shape[-1] // 2
            crop = out[..., lo : lo + mask.shape[-1], lo : lo + mask.shape[-1]]
            return crop.transpose(-1, -2)[..., mask.T]

    with pytest.raises(AssertionError, match="row-major"):
        check_decoder(ColumnMajor, box=16)
