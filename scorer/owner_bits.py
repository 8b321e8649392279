"""Block ownership as bitsets: the shared arithmetic of the approximate and the precise prefix indexes.

Why it exists: both indexes map a block key to an int whose bit i says "the endpoint in slot i holds it", so that
one dict lookup and one AND per block answer "which endpoints still hold the prefix this far" for every endpoint
at once. The longest-prefix walk and the bit clearing are the same for both; they live here once.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence


def longest_prefix(owners: Mapping[int, int], address_of: Mapping[int, str], keys: Sequence[int]) -> dict[str, int]:
    """Per endpoint, how many blocks from block 0 on it holds consecutively (endpoints with none are absent)."""
    matched: dict[str, int] = {}
    if not keys:
        return matched
    get = owners.get
    alive = get(keys[0], 0)
    depth = 1
    for key in keys[1:] if alive else ():
        still = alive & get(key, 0)
        if still != alive:
            _note(matched, address_of, alive & ~still, depth)
            if not still:
                return matched
            alive = still
        depth += 1
    _note(matched, address_of, alive, depth)
    return matched


def clear_bit(owners: MutableMapping[int, int], key: int, bit: int) -> None:
    """Remove one endpoint's bit from a block; forget the block when nobody holds it."""
    mask = owners.get(key, 0) & ~bit
    if mask:
        owners[key] = mask
    else:
        owners.pop(key, None)


def _note(matched: dict[str, int], address_of: Mapping[int, str], mask: int, depth: int) -> None:
    while mask:
        low = mask & -mask
        matched[address_of[low.bit_length() - 1]] = depth
        mask ^= low
