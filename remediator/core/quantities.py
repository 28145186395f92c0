"""Kubernetes resource quantities (``500m``, ``1.5Gi``, ``4Gi``, ``2``), parsed exactly.

``set_resources`` computes new requests and limits from what a playbook says
(``factor: 1.5`` up to ``max: 4Gi``) and from what the cluster holds, and compares
them (is the limit already there? does a request exceed its limit?).  Floats would get
those comparisons wrong for large values (4Gi in nano-units is beyond a float's exact
range), so a quantity is held as a whole number of nano-units, as apimachinery's
``resource.Quantity`` keeps at most nine decimal places; Python's integers make that
exact at any size.

Grammar (apimachinery ``resource/quantity.go``)::

    quantity ::= number suffix
    number   ::= digits | digits "." digits | digits "." | "." digits
    suffix   ::= binarySI | decimalSI | ("e" | "E") signed-integer
    binarySI ::= Ki | Mi | Gi | Ti | Pi | Ei
    decimalSI::= n | u | m | "" | k | M | G | T | P | E

Resources cannot be negative, so a sign on the number is refused here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from remediator.core.errors import InvalidInput

NANO = 10**9
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_QUANTITY = re.compile(
    r"^\+?(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?"
    r"(?:(?P<bin>Ki|Mi|Gi|Ti|Pi|Ei)|(?:[eE](?P<exp>[-+]?[0-9]{1,3}))|(?P<dec>[numkMGTPE]?))\Z"
)
#: Longer texts are not quantities anyone means; the bound also keeps the arithmetic small.
MAX_LENGTH = 64
#: The largest exponent accepted (``1e30``); apimachinery caps quantities far below this anyway.
MAX_EXPONENT = 30

#: The precision a resource is set with: CPU in millicores, memory in bytes (the apiserver
#: warns about fractional bytes and kubelets round CPU to millicores).
UNITS: dict[str, int] = {"cpu": NANO // 1000, "memory": NANO}


class QuantityError(InvalidInput):
    """Text that is not a Kubernetes quantity (or not one a resource may have)."""


@dataclass(frozen=True, order=True)
class Quantity:
    """A non-negative quantity as a whole number of nano-units (``1`` is 10**9, ``500m`` 5*10**8)."""

    nanos: int

    def rounded_up(self, unit: int) -> Quantity:
        """Up to a whole multiple of ``unit`` nano-units (a millicore, a byte): never below what was asked."""
        return Quantity(-(-self.nanos // unit) * unit)

    def rounded_down(self, unit: int) -> Quantity:
        """Down to a whole multiple of ``unit``: a bound (``max``) is never exceeded by rounding."""
        return Quantity(self.nanos // unit * unit)

    def times(self, factor: float | int | str) -> Quantity:
        """Multiplied exactly by a factor written as a decimal (``1.5`` is 3/2, not the nearest float)."""
        num, den = _ratio(factor)
        return Quantity(-(-self.nanos * num // den))


def _ratio(number: float | int | str) -> tuple[int, int]:
    """A decimal number as numerator/denominator, read from its shortest decimal text."""
    text = str(number) if not isinstance(number, float) else repr(number)
    q = parse_quantity(text)
    return q.nanos, NANO


def parse_quantity(value: Any) -> Quantity:
    """Parse a quantity as written in a manifest or a playbook (a string, or a YAML number)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise QuantityError(f"{value!r} is not a quantity (expected e.g. 500m, 1.5Gi, 2)")
    text = value if isinstance(value, str) else (repr(value) if isinstance(value, float) else str(value))
    if len(text) > MAX_LENGTH or (m := _QUANTITY.match(text)) is None:
        raise QuantityError(f"{_shown(text)} is not a quantity (expected e.g. 500m, 1.5Gi, 2)")
    whole, frac = m["int"], m["frac"] or ""
    if not whole and not frac:
        raise QuantityError(f"{_shown(text)} is not a quantity (no digits)")
    digits = int(whole + frac or "0")
    scale = -len(frac)  # digits * 10**scale is the number
    multiplier = 1
    if m["bin"]:
        multiplier = _BINARY[m["bin"]]
    elif m["exp"] is not None:
        exponent = int(m["exp"])
        if abs(exponent) > MAX_EXPONENT:
            raise QuantityError(f"{_shown(text)}: exponent out of range")
        scale += exponent
    else:
        scale += _DECIMAL[m["dec"] or ""]
    scale += 9  # to nano-units
    numerator = digits * multiplier * (10**scale if scale > 0 else 1)
    denominator = 10**-scale if scale < 0 else 1
    return Quantity(-(-numerator // denominator))  # below a nano-unit rounds up, as apimachinery does


def format_quantity(q: Quantity, resource: str, *, binary: bool = True) -> str:
    """The text to send for a quantity of ``resource`` (already rounded to its unit).

    CPU as whole cores or millicores (``2``, ``1500m``); memory in the largest binary
    (``binary``) or decimal suffix that holds it exactly, else in bytes, so ``2Gi`` x 1.5
    is sent as ``3Gi`` and ``1.5Gi`` as ``1536Mi``.
    """
    if resource == "cpu":
        millis = -(-q.nanos // UNITS["cpu"])
        return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"
    count = -(-q.nanos // NANO)
    families = [list(_BINARY.items()), [(s, 10**e) for s, e in _DECIMAL.items() if e > 0]]
    texts = [str(count)]
    for suffixes in families if binary else families[::-1]:
        exact = [f"{count // f}{s}" for s, f in suffixes if count and count % f == 0]
        texts += sorted(exact, key=len)[:1]
    return min(texts, key=len)  # the shortest exact form; on a tie the preferred family


def is_binary(text: Any) -> bool:
    """Whether a quantity was written with a binary suffix (``Mi``, ``Gi``): results keep that form."""
    return isinstance(text, str) and text.endswith("i")


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 40 else f"{text[:30]!r}... ({len(text)} characters)"
