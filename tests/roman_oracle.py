"""Roman numerals computed by the tests themselves, apart from tasks/roman.py: the independent
truth the contract checks of the tests compare against."""

from __future__ import annotations


def roman(n: int) -> str:
    out = ""
    for value, symbol in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"), (50, "L"),
                          (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while n >= value:
            out, n = out + symbol, n - value
    return out


ROMAN = {n: roman(n) for n in range(1, 4000)}
ROMAN_VALUE = {numeral: n for n, numeral in ROMAN.items()}
