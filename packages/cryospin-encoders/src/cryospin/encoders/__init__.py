"""cryospin-encoders package."""
