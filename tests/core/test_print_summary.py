"""The headline lines of ``cryospin run``: each number once, under its own label."""

from __future__ import annotations

from cryospin.core.cli.run import print_summary


def _summary(**extra: object) -> dict[str, object]:
    return {
        "rotation_error_median_deg": 91.25,
        "rotation_error_sym_median_deg": 91.25,
        "symmetry_deg": None,
        "shift_error_median_A": 0.75,
        **extra,
    }


def test_symmetry_line_only_when_a_symmetry_was_accepted(capsys) -> None:
    print_summary(_summary())
    out = capsys.readouterr().out
    assert "modulo the truth's symmetry" not in out
    assert out.count("91.25") == 1

    print_summary(_summary(symmetry_deg=180.0, rotation_error_sym_median_deg=2.5))
    out = capsys.readouterr().out
    assert "median rotation error modulo the truth's symmetry: 2.50 °" in out
    assert "median rotation error: 91.25 °" in out


def test_shift_error_is_printed_in_angstrom(capsys) -> None:
    print_summary(_summary())
    out = capsys.readouterr().out
    assert "median shift error (after the best global translation): 0.75 Å" in out


def test_symmetry_line_names_the_point_group(capsys) -> None:
    print_summary(_summary(symmetry_deg=51.4, point_group="D7", rotation_error_sym_median_deg=1.5))
    out = capsys.readouterr().out
    assert "median rotation error modulo the truth's D7: 1.50 °" in out
