"""The domain of the Roman Numeral Service: canonical numerals 1..3999 and the right answer to a call.

Every numeral is precomputed once at import, so conversions and canonicality checks are dict look-ups
(the simulator and the silver validation call them millions of times).
"""

from __future__ import annotations

MIN_VALUE = 1
MAX_VALUE = 3999
DIRECTIONS = ("to_roman", "from_roman")

_SYMBOLS = (
    (1000, "M"), (900, "CM"), (500, "D"), (400, "CD"),
    (100, "C"), (90, "XC"), (50, "L"), (40, "XL"),
    (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"),
)


def _compose(n: int) -> str:
    """Greedy composition; yields the canonical form because the table holds the subtractive pairs."""
    parts = []
    for value, symbol in _SYMBOLS:
        count, n = divmod(n, value)
        parts.append(symbol * count)
    return "".join(parts)


NUMERALS: tuple[str, ...] = ("",) + tuple(_compose(n) for n in range(MIN_VALUE, MAX_VALUE + 1))
"""``NUMERALS[n]`` is the canonical numeral of n; index 0 is a placeholder, not a numeral."""

VALUES: dict[str, int] = {numeral: n for n, numeral in enumerate(NUMERALS) if n}
"""Canonical numeral -> value; a string absent from it is not a canonical numeral."""


def to_roman(n: int) -> str:
    """The canonical numeral of ``n``; raises ValueError outside 1..3999 (no zero, no negatives)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"expected an integer in {MIN_VALUE}..{MAX_VALUE}, got {n!r}")
    if not MIN_VALUE <= n <= MAX_VALUE:
        raise ValueError(f"{n} is outside {MIN_VALUE}..{MAX_VALUE}")
    return NUMERALS[n]


def from_roman(s: str) -> int:
    """The value of a canonical upper-case numeral; anything else (IIII, IC, iv, '') raises ValueError."""
    value = VALUES.get(s) if isinstance(s, str) else None
    if value is None:
        raise ValueError(f"{s!r} is not a canonical Roman numeral in {MIN_VALUE}..{MAX_VALUE}")
    return value


def is_canonical(s: str) -> bool:
    """True when ``s`` is exactly the canonical numeral of some value in 1..3999."""
    return isinstance(s, str) and s in VALUES


def parse_decimal(s: str) -> int | None:
    """The integer a to_roman input denotes, or None when it is not a plain decimal in 1..3999.

    Plain means ASCII digits only: no sign, spaces, or leading zeros, as the service accepts.
    """
    if not isinstance(s, str) or not s.isascii() or not s.isdigit() or s[0] == "0" or len(s) > 4:
        return None
    n = int(s)
    return n if n <= MAX_VALUE else None


def expected_output(direction: str, input: str) -> str | None:  # noqa: A002 - the contract's field name
    """The right answer to a call, or None when the input is invalid; tells wrong conversions apart."""
    if direction == "to_roman":
        n = parse_decimal(input)
        return None if n is None else NUMERALS[n]
    if direction == "from_roman":
        value = VALUES.get(input) if isinstance(input, str) else None
        return None if value is None else str(value)
    raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
