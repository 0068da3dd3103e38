"""cryospin-io package."""
