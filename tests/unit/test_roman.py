"""The Roman domain: canonical numerals only, with errors that name the offending value."""

from __future__ import annotations

import pytest

from tasks.roman import expected_output, from_roman, is_canonical, parse_decimal, to_roman


@pytest.mark.parametrize(
    ("n", "numeral"),
    [(1, "I"), (4, "IV"), (9, "IX"), (14, "XIV"), (40, "XL"), (90, "XC"), (400, "CD"),
     (900, "CM"), (1994, "MCMXCIV"), (2024, "MMXXIV"), (3888, "MMMDCCCLXXXVIII"), (3999, "MMMCMXCIX")],
)
def test_known_numerals(n, numeral):
    assert to_roman(n) == numeral
    assert from_roman(numeral) == n


def test_round_trip_of_every_value():
    seen = set()
    for n in range(1, 4000):
        numeral = to_roman(n)
        assert from_roman(numeral) == n
        assert is_canonical(numeral)
        seen.add(numeral)
    assert len(seen) == 3999


@pytest.mark.parametrize("n", [0, -1, 4000, 10**9])
def test_to_roman_out_of_range_names_the_value(n):
    with pytest.raises(ValueError, match=str(n)):
        to_roman(n)


@pytest.mark.parametrize("n", [1.0, "5", True, None])
def test_to_roman_rejects_non_integers(n):
    with pytest.raises(ValueError):
        to_roman(n)


@pytest.mark.parametrize(
    "s", ["IIII", "IC", "iv", "", "MMMM", "VV", "IL", "XM", "IIV", "MCMC", " IV", "IV ", "DD", "LL", "CCCC", "ↀ", "0"]
)
def test_from_roman_rejects_non_canonical(s):
    assert not is_canonical(s)
    with pytest.raises(ValueError, match="not a canonical"):
        from_roman(s)


def test_from_roman_rejects_non_strings():
    with pytest.raises(ValueError):
        from_roman(None)  # type: ignore[arg-type]
    assert not is_canonical(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("s", "n"), [("1", 1), ("3999", 3999), ("0", None), ("4000", None), ("-5", None), ("007", None),
                 ("1.5", None), (" 12", None), ("", None), ("١٢", None), ("abc", None), ("99999", None)],
)
def test_parse_decimal(s, n):
    assert parse_decimal(s) == n


def test_expected_output():
    assert expected_output("to_roman", "1994") == "MCMXCIV"
    assert expected_output("from_roman", "MCMXCIV") == "1994"
    assert expected_output("to_roman", "0") is None
    assert expected_output("to_roman", "MCM") is None
    assert expected_output("from_roman", "IIII") is None
    assert expected_output("from_roman", "iv") is None
    with pytest.raises(ValueError, match="sideways"):
        expected_output("sideways", "1")
