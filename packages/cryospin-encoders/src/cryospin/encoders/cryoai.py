"""cryoAI's encoder as a baseline: one pose head, two hypotheses from an image and its 180° turn.

Source: cryoAI (Levy et al. 2022; compSPI/cryoAI ``src/cryoai.py``, ``src/ml_modules.py``,
``src/loss_utils.py``): with ``flip_images`` the batch is augmented with each image rotated by 180°,
the same VGG16 encoder and single S2S2 regressor (FC ``[512, 256]``) predict a pose for both, the
projection predicted for the rotated copy is rotated back, and the "symmetrized" loss keeps the
better of the two. cryoSPIN (Sec. 4.1) calls this the ``M = 2`` special case of its winner-takes-all
loss; here the two hypotheses are returned as candidates of the *original* image, so the engine's
winner-takes-all over ``M = 2`` is cryoAI's symmetrized loss. Written from the description.

Why the second candidate is ``Rz(pi) @ R'`` (left side). With ``A`` the pose (volume -> image
coordinates, column vectors), the projection is ``P_A(x, y) = integral V(A^T (x, y, z)) dz``. The
image rotated by 180° about its centre is ``P_A(-x, -y) = integral V(A^T Rz(pi) (x, y, z')) dz'``
(substitute ``z' = z``; ``Rz(pi) = diag(-1, -1, 1)`` maps ``(x, y, z)`` to ``(-x, -y, z)``), which
is ``P_{Rz(pi)^T A} = P_{Rz(pi) A}``. So if the network says ``R'`` for the rotated image, the pose
it implies for the original is ``Rz(pi)^{-1} R' = Rz(pi) R'``, an in-plane rotation composed on the
left (RELION's psi side). A shift ``t`` of the image content becomes ``-t`` in the rotated image,
so the implied shift is ``-t'``. ``tests/encoders/test_cryoai.py`` checks both on rendered images.
"""

from __future__ import annotations

import torch

from cryospin.core.interfaces import Encoder, PoseCandidates
from cryospin.core.so3 import s2s2_to_rotation
from cryospin.encoders.backbone import (
    CNNConfig,
    VGGBackbone,
    fc_block,
    rotate_image_180,
    rz180_left,
)


class CryoAIEncoder(Encoder):
    """cryoAI baseline: ``M = 2`` candidates ``(R(I), Rz(pi) R(rot180 I))``, shifts ``(t, -t')``.

    Images are real-space ``(B, L, L)`` of any scale (standardised inside). The network runs once
    on the batch of ``2B`` images. The defaults are CPU-sized; cryoAI's configuration::

        CryoAIEncoder.Config(channels=[64, 128, 256, 256, 256],
                             convs_per_block=[2, 2, 3, 2, 2], head_hidden=[512, 256])
    """

    class Config(CNNConfig):
        """Options of the ``cryoai`` encoder (see :class:`CNNConfig`)."""

    def __init__(self, config: Config, box: int, pixel_size_A: float) -> None:
        super().__init__(config, box, pixel_size_A)
        self.backbone = VGGBackbone(config, box)
        feats, bn = self.backbone.out_features, config.batch_norm
        self.orientation = fc_block(feats, config.head_hidden, 6, bn)
        # cryoAI regresses the shift with its own FC block from the latent code.
        self.shift = fc_block(feats, config.head_hidden, 2, bn) if config.estimate_shifts else None
        self.max_shift_A = (
            config.max_shift_A if config.max_shift_A is not None else box * pixel_size_A / 8
        )

    @property
    def n_candidates(self) -> int:
        """Always 2: the image and its 180° in-plane rotation."""
        return 2

    def forward(self, images: torch.Tensor) -> PoseCandidates:
        """Two candidate poses per real-space image ``(B, L, L)``."""
        dtype = next(self.parameters()).dtype
        images = images.to(dtype)
        batch = images.shape[0]
        features = self.backbone(torch.cat([images, rotate_image_180(images)], dim=0))
        rot = s2s2_to_rotation(self.orientation(features))  # (2B, 3, 3)
        rotations = torch.stack([rot[:batch], rz180_left(rot[batch:])], dim=1)
        shifts = None
        if self.shift is not None:
            t = self.max_shift_A * torch.tanh(self.shift(features))  # (2B, 2)
            shifts = torch.stack([t[:batch], -t[batch:]], dim=1)
        return PoseCandidates(rotations=rotations, shifts_A=shifts)
