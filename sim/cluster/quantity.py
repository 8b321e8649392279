"""Kubernetes resource quantities ("500m", "4", "8Gi", "1.5G", "1e3") to integers and back.

Why it exists: node capacity, pod requests and VMI resources arrive as quantity strings; the scheduler and the
migration model need millicores and bytes, and objects the twin writes must carry canonical strings.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}
_RE = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")


class QuantityError(ValueError):
    pass


def parse(q: str | int | float) -> Decimal:
    """The quantity's value in base units (cores, bytes)."""
    if isinstance(q, bool):
        raise QuantityError(f"not a quantity: {q!r}")
    if isinstance(q, int | float):
        return Decimal(str(q))
    m = _RE.match(str(q).strip())
    if not m:
        raise QuantityError(
            f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {q!r}"
        )
    try:
        number = Decimal(m.group(1))
    except InvalidOperation as exc:
        raise QuantityError(f"not a quantity: {q!r}") from exc
    suffix = m.group(2) or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    return number * (Decimal(10) ** int(suffix[1:]))


def cpu_millis(q: str | int | float) -> int:
    return int((parse(q) * 1000).to_integral_value(rounding="ROUND_CEILING"))


def bytes_(q: str | int | float) -> int:
    return int(parse(q).to_integral_value(rounding="ROUND_CEILING"))


def format_cpu(millis: int) -> str:
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_bytes(n: int) -> str:
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        if n and n % _BINARY[suffix] == 0:
            return f"{n // _BINARY[suffix]}{suffix}"
    return str(n)
