"""cryospin-decoders: the ``hartley`` explicit Hartley-space voxel grid and the ``mlp`` baseline.

Both implement :class:`cryospin.core.interfaces.Decoder` and register through
:mod:`cryospin.decoders.plugin`.
"""

from cryospin.decoders.hartley import HartleyConfig, HartleyDecoder
from cryospin.decoders.mlp import MLPConfig, MLPDecoder

__all__ = ["HartleyConfig", "HartleyDecoder", "MLPConfig", "MLPDecoder"]
