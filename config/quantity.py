"""Kubernetes resource quantities ("500m", "64Gi", "1e3"), parsed the way the API server parses them."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}
_QUANTITY = re.compile(r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
                       r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")

QUANTITY_HELP = ("a Kubernetes quantity such as 500m or 2 (CPU) or 512Mi, 64Gi, 1Ti (memory, storage): "
                 "a non-negative number with an optional suffix n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, "
                 "Pi, Ei or an exponent e3")


def parse_quantity(text: str) -> Decimal:
    """The quantity's value in base units; ValueError if the API server would reject it."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not {QUANTITY_HELP}")
    number = Decimal(match["number"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    try:
        return number * Decimal(10) ** int(suffix[1:])
    except InvalidOperation as exc:  # an exponent too large to mean anything
        raise ValueError(f"{text!r} is not {QUANTITY_HELP}") from exc


def non_negative_quantity(value: object) -> str:
    """Pydantic validator: accepts YAML numbers or strings, returns the quantity as the API would store it."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected {QUANTITY_HELP}, got {type(value).__name__}")
    text = str(value).strip()
    if parse_quantity(text) < 0:
        raise ValueError(f"{text!r} is negative; expected {QUANTITY_HELP}")
    return text
