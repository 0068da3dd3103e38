"""cryospin-decoders package."""
