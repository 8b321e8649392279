"""Byte sizes as operators write them in Kubernetes: `256Mi`, `1Gi`, `500M`, `1048576`.

Why it exists: the picker's memory budgets (the prefix index's `maxIndexBytes`) sit next to the container's memory
limit in the same manifests, so they are read in the same notation. Only what a byte count needs: a non-negative
integer with an optional binary (`Ki Mi Gi Ti`, powers of 1024) or decimal (`k M G T`, powers of 1000) suffix.
No fractions, exponents or milli-units (a byte count has none); anything else is a `ValueError` that says what is
accepted. `ByteSize` is the pydantic field type: an int, or a string parsed here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

SUFFIXES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
SUFFIXES |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
MAX_DIGITS = 18  # 10**18 bytes is an exabyte: a longer number is a typo, and int() of a huge string is slow
_PATTERN = re.compile("([0-9]{1,%s})(%s)" % (MAX_DIGITS, "|".join(s for s in SUFFIXES if s)))  # noqa: UP031


def parse_byte_size(text: str) -> int:
    """`"256Mi"` -> 268435456. Surrounding spaces are allowed; a `ValueError` names the accepted forms."""
    stripped = text.strip()
    if stripped.isascii() and stripped.isdigit() and len(stripped) <= MAX_DIGITS:
        return int(stripped)
    found = _PATTERN.fullmatch(stripped)
    if found is None:
        raise ValueError(
            f"{text!r} is not a byte size: an integer of at most {MAX_DIGITS} digits with an optional suffix "
            "Ki, Mi, Gi, Ti (powers of 1024) or k, M, G, T (powers of 1000), e.g. 256Mi"
        )
    return int(found.group(1)) * SUFFIXES[found.group(2)]


def format_byte_size(size: int) -> str:
    """The shortest exact binary form: 268435456 -> `"256Mi"`, 1000 -> `"1000"`."""
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        unit = SUFFIXES[suffix]
        if size and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def _coerce(value: Any) -> Any:
    return parse_byte_size(value) if isinstance(value, str) else value


ByteSize = Annotated[int, BeforeValidator(_coerce)]
