"""cryospin-encoders: the cryoSPIN multi-head encoder (``multihead``) and the cryoAI baseline.

Both are registered through the ``cryospin`` entry point (:mod:`cryospin.encoders.plugin`) and
obtained by name: ``get_registry().get("encoder", "multihead")``.
"""

__version__ = "0.1.0"
