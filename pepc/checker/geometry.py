"""The packet space as boxes, exactly as `pepc.semantics` defines matching.

A packet is a point (class, src, dst, sport, dport). The protocol *class*
captures everything `atom_matches` can tell apart about protocol and
ports:

    0 TCP without ports (a non-first fragment)   3 UDP without ports
    1 TCP with ports                             4 ICMP
    2 UDP with ports                             5 any other IP protocol

A port constraint matches only classes 1 and 2; a port-less rule matches
every class of its protocol (ANY: all six). The order above makes every
rule's class set an interval, so an atom is exactly one 5-D box:
`(c0, c1, s0, s1, d0, d1, p0, p1, q0, q1)` with inclusive bounds (p: source
port, q: destination port). In the port-less classes every box spans all
ports, so the port dimensions are degenerate there and coverage questions
have the same answer as if those classes had no ports at all.
"""

from __future__ import annotations

from pepc.model import Protocol
from pepc.semantics import Atom, Packet

Box = tuple[int, int, int, int, int, int, int, int, int, int]

TCP_FRAG, TCP_PORTS, UDP_PORTS, UDP_FRAG, ICMP, OTHER = range(6)
N_CLASSES = 6
#: The IP protocol a witness uses for class OTHER (GRE).
OTHER_PROTO = 47
ADDR_MAX = 0xFFFFFFFF
PORT_MAX = 0xFFFF
FULL: Box = (0, N_CLASSES - 1, 0, ADDR_MAX, 0, ADDR_MAX, 0, PORT_MAX, 0, PORT_MAX)

_CLASSES_WITH_PORTS = {
    Protocol.ANY: (TCP_PORTS, UDP_PORTS),
    Protocol.TCP: (TCP_PORTS, TCP_PORTS),
    Protocol.UDP: (UDP_PORTS, UDP_PORTS),
}
_CLASSES_NO_PORTS = {
    Protocol.ANY: (TCP_FRAG, OTHER),
    Protocol.TCP: (TCP_FRAG, TCP_PORTS),
    Protocol.UDP: (UDP_PORTS, UDP_FRAG),
    Protocol.ICMP: (ICMP, ICMP),
}


def atom_box(atom: Atom) -> Box | None:
    """The box of packets `atom` matches, or None when it matches none
    (a port constraint on ICMP)."""
    if atom.has_port_constraint:
        cls = _CLASSES_WITH_PORTS.get(atom.protocol)
        if cls is None:
            return None
    else:
        cls = _CLASSES_NO_PORTS[atom.protocol]
    return (
        cls[0], cls[1],
        atom.src.first, atom.src.last,
        atom.dst.first, atom.dst.last,
        atom.sport.lo, atom.sport.hi,
        atom.dport.lo, atom.dport.hi,
    )


def intersects(a: Box, b: Box) -> bool:
    return (
        a[0] <= b[1] and b[0] <= a[1]
        and a[2] <= b[3] and b[2] <= a[3]
        and a[4] <= b[5] and b[4] <= a[5]
        and a[6] <= b[7] and b[6] <= a[7]
        and a[8] <= b[9] and b[8] <= a[9]
    )


def covers(a: Box, b: Box) -> bool:
    """Whether box a contains box b."""
    return (
        a[0] <= b[0] and b[1] <= a[1]
        and a[2] <= b[2] and b[3] <= a[3]
        and a[4] <= b[4] and b[5] <= a[5]
        and a[6] <= b[6] and b[7] <= a[7]
        and a[8] <= b[8] and b[9] <= a[9]
    )


def intersection(a: Box, b: Box) -> Box | None:
    lo_hi = []
    for k in range(0, 10, 2):
        lo = a[k] if a[k] > b[k] else b[k]
        hi = a[k + 1] if a[k + 1] < b[k + 1] else b[k + 1]
        if lo > hi:
            return None
        lo_hi += (lo, hi)
    return tuple(lo_hi)  # type: ignore[return-value]


def contains_point(b: Box, p: tuple[int, int, int, int, int]) -> bool:
    return (
        b[0] <= p[0] <= b[1] and b[2] <= p[1] <= b[3] and b[4] <= p[2] <= b[5]
        and b[6] <= p[3] <= b[7] and b[8] <= p[4] <= b[9]
    )


# Witnesses are read by people: inside a region, prefer documentation
# addresses and familiar ports over the region's corner (0.0.0.0:0).
_SRC_PREFERRED = (0xC6336407,)  # 198.51.100.7
_DST_PREFERRED = (0xCB00710A,)  # 203.0.113.10
_SPORT_PREFERRED = (40000,)
_DPORT_PREFERRED = (443, 80)
_CLASS_PREFERRED = (TCP_PORTS, UDP_PORTS, ICMP, TCP_FRAG, UDP_FRAG, OTHER)


def _pick(lo: int, hi: int, preferred: tuple[int, ...], avoid_zero: bool) -> int:
    for v in preferred:
        if lo <= v <= hi:
            return v
    if lo == hi:
        return lo
    if lo == 0 and avoid_zero:
        return 1
    # an address range's first value is usually a network address: step in
    return lo + 1 if hi - lo >= 2 else lo


def pick_point(region: Box) -> tuple[int, int, int, int, int]:
    """A readable point inside `region`."""
    cls = next(c for c in _CLASS_PREFERRED if region[0] <= c <= region[1])
    return (
        cls,
        _pick(region[2], region[3], _SRC_PREFERRED, True),
        _pick(region[4], region[5], _DST_PREFERRED, True),
        _pick(region[6], region[7], _SPORT_PREFERRED, True),
        _pick(region[8], region[9], _DPORT_PREFERRED, True),
    )


def packet_of(point: tuple[int, int, int, int, int]) -> Packet:
    """The packet a point stands for (its `str` is `pepc simulate` syntax)."""
    cls, src, dst, sport, dport = point
    if cls == TCP_PORTS:
        return Packet(src, dst, Protocol.TCP.value, sport, dport, has_ports=True)
    if cls == UDP_PORTS:
        return Packet(src, dst, Protocol.UDP.value, sport, dport, has_ports=True)
    if cls == TCP_FRAG:
        return Packet(src, dst, Protocol.TCP.value, fragment=True)
    if cls == UDP_FRAG:
        return Packet(src, dst, Protocol.UDP.value, fragment=True)
    if cls == ICMP:
        return Packet(src, dst, Protocol.ICMP.value)
    return Packet(src, dst, OTHER_PROTO)


def sample_points(region: Box, k: int) -> list[tuple[int, int, int, int, int]]:
    """k points spread over `region` pseudo-randomly, the same for the
    same region on every run. A block list covers thousands of thin slices
    of a wide region and almost none of its volume: a random point falls
    between them where the readable one (pick_point) may not."""
    x = hash(region) & _MASK64
    out = []
    for _ in range(k):
        point = []
        for d in range(0, 10, 2):
            x = (x * 6364136223846793005 + 1442695040888963407) & _MASK64  # an LCG: cheap and deterministic
            point.append(region[d] + (x >> 16) % (region[d + 1] - region[d] + 1))
        out.append(tuple(point))
    return out  # type: ignore[return-value]


_MASK64 = (1 << 64) - 1
