"""Port ranges as masked prefixes: the tuple-space encoding of a port item."""

from __future__ import annotations

from functools import lru_cache

from pepc.policy.model import PortRange

PORT_BITS = 16


@lru_cache(maxsize=65536)
def range_to_prefixes(lo: int, hi: int, bits: int = PORT_BITS) -> tuple[tuple[int, int], ...]:
    """The minimal list of (plen, value) prefixes whose union is exactly
    [lo, hi], in ascending order. The whole space is one prefix of length 0.

    Greedy from the low end: at each step take the largest aligned block that
    starts at `lo` and does not pass `hi`. This is the classic minimal cover
    (at most 2*bits - 2 prefixes).
    """
    top = (1 << bits) - 1
    if not 0 <= lo <= hi <= top:
        raise ValueError(f"bad range {lo}-{hi} for {bits} bits")
    out = []
    while lo <= hi:
        # the largest power of two dividing lo (any size when lo == 0) ...
        size = (lo & -lo) if lo else 1 << bits
        # ... shrunk until the block fits under hi
        while lo + size - 1 > hi:
            size >>= 1
        plen = bits - (size.bit_length() - 1)
        out.append((plen, lo))
        lo += size
    return tuple(out)


def port_prefixes(item: PortRange) -> tuple[tuple[int, int], ...]:
    if item.is_any:
        return ((0, 0),)
    return range_to_prefixes(item.lo, item.hi)
