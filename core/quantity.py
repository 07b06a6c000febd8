"""Kubernetes resource quantities ("500m", "64Gi", "1e3"), parsed the way the API server parses them."""

from __future__ import annotations

import re
from decimal import Decimal

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}
_QUANTITY = re.compile(r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
                       r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?")

# resource.Quantity: "no quantity may represent a number greater than 2^63-1 in magnitude"
# (k8s.io/apimachinery/pkg/api/resource/quantity.go); larger ones are capped, not refused.
MAX_QUANTITY = Decimal(2**63 - 1)
QUANTITY_HELP = ("a Kubernetes quantity such as 500m or 2 (CPU) or 512Mi, 64Gi, 1Ti (memory, storage): "
                 "a non-negative number with an optional suffix n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, "
                 "Pi, Ei or an exponent e3")


def parse_quantity(text: str) -> Decimal:
    """The quantity's value in base units; ValueError if the API server would reject it."""
    match = _QUANTITY.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not {QUANTITY_HELP}")
    number = Decimal(match["number"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        value = number * _BINARY[suffix]
    elif suffix in _DECIMAL:
        value = number * _DECIMAL[suffix]
    else:
        exponent = int(suffix[1:])
        # Beyond these the value is far outside what the API server holds, and Decimal would overflow.
        if not -40 <= exponent <= 40:
            raise ValueError(f"{text!r} has the exponent {exponent}, outside what Kubernetes holds; expected "
                             f"{QUANTITY_HELP}")
        value = number * Decimal(10) ** exponent
    if abs(value) > MAX_QUANTITY:
        raise ValueError(f"{text!r} is more than a Kubernetes quantity holds (2^63-1 in base units, about 9.2E or "
                         "8Ei); expected a value the API server keeps as written")
    return value


def non_negative_quantity(value: object) -> str:
    """Pydantic validator: accepts YAML numbers or strings, returns the quantity as the API would store it."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected {QUANTITY_HELP}, got {type(value).__name__}")
    text = str(value).strip()
    if parse_quantity(text) < 0:
        raise ValueError(f"{text!r} is negative; expected {QUANTITY_HELP}")
    return text
