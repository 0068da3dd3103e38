"""Grids shipped with cryospin (package data): ``paper-table2``, ``heads``, ``switch``."""
