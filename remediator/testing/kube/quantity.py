"""Resource quantities in the canonical form the apiserver stores them in.

kube-apiserver decodes every quantity (``resources.limits.memory: 1.5Gi``) into
apimachinery's ``resource.Quantity`` and serialises it back canonically
(``CanonicalizeBytes``): binary quantities as the largest exact power of 1024
(``1.5Gi`` -> ``1536Mi``, ``2048Ki`` -> ``2Mi``), decimal ones as an integer with an
exponent that is a multiple of three (``1000m`` -> ``1``, ``0.5`` -> ``500m``), and a
binary quantity that is not a whole number, or below 1024, in decimal form.  A client
comparing what it wrote with what it reads back (set_resources does) sees this, so the
fake stores quantities the same way.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

_QUANTITY = re.compile(
    r"^(?P<sign>[+-]?)(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?"
    r"(?:(?P<bin>Ki|Mi|Gi|Ti|Pi|Ei)|(?:[eE](?P<exp>[-+]?[0-9]+))|(?P<dec>[numkMGTPE]?))$"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {e: s for s, e in _DECIMAL.items()}
_BINARY_SUFFIX = {e: s for s, e in _BINARY.items()} | {0: ""}
_NANO = Fraction(1, 10**9)


def canonical(value: Any) -> Any:
    """The stored form of a quantity; anything that is not one is returned unchanged (validation's business)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return value
    text = str(value) if not isinstance(value, float) else repr(value)
    m = _QUANTITY.match(text)
    if m is None or not (m["int"] or m["frac"]):
        return value
    number = Fraction(int((m["int"] or "0") + (m["frac"] or "")), 10 ** len(m["frac"] or ""))
    if m["bin"]:
        amount, form = number * 1024 ** _BINARY[m["bin"]], "binary"
    elif m["exp"] is not None:
        amount, form = number * Fraction(10) ** int(m["exp"]), "exponent"
    else:
        amount, form = number * Fraction(10) ** _DECIMAL[m["dec"] or ""], "decimal"
    amount = -(-amount // _NANO) * _NANO  # at most nine decimal places, rounded up
    sign = "-" if m["sign"] == "-" and amount else ""
    if amount == 0:
        return "0"
    if form == "binary" and (amount < 1024 or amount.denominator != 1):
        form = "decimal"
    if form == "binary":
        whole, power = int(amount), 0
        while whole % 1024 == 0 and power < 6:
            whole, power = whole // 1024, power + 1
        return f"{sign}{whole}{_BINARY_SUFFIX[power]}"
    mantissa, exponent = _decimal(amount)
    if form == "exponent":
        return f"{sign}{mantissa}" + (f"e{exponent}" if exponent else "")
    if exponent > 18:
        mantissa, exponent = mantissa * 10 ** (exponent - 18), 18
    return f"{sign}{mantissa}{_DECIMAL_SUFFIX[exponent]}"


def _decimal(amount: Fraction) -> tuple[int, int]:
    """``amount`` as mantissa * 10**exponent, the exponent a multiple of 3, the mantissa as small as that allows."""
    exponent = -9
    mantissa = int(amount * 10**9)
    while mantissa % 1000 == 0 and mantissa:
        mantissa, exponent = mantissa // 1000, exponent + 3
    return mantissa, exponent


def canonical_resources(resources: Any) -> Any:
    """A container's (or pod's) ``resources`` with every request and limit in canonical form."""
    if not isinstance(resources, dict):
        return resources
    for section in ("requests", "limits"):
        held = resources.get(section)
        if isinstance(held, dict):
            resources[section] = {name: canonical(value) for name, value in held.items()}
    return resources
