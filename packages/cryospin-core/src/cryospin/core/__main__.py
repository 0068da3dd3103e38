"""``python -m cryospin.core`` runs the CLI (used by ``torchrun -m``)."""

from cryospin.core.cli.main import main

main()
