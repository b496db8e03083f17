"""The packet space as boxes, exactly as `pepc.policy.semantics` defines matching.

A packet is a point (class, src, dst, sport, dport). The protocol *class*
captures everything `atom_matches` can tell apart about protocol and
ports:

    0 TCP without ports (a non-first fragment)   4 ICMP
    1 TCP with ports                             5 any other IP protocol
    2 UDP with ports                             6 ICMPv6, not guarded
    3 UDP without ports                          7 ICMPv6 the lockout guard protects

A port constraint matches only classes 1 and 2; a port-less rule matches
every class of its protocol (ANY: 0-6, ICMPV6: 6-7; class 7 only rules
naming ICMPV6 match, see semantics.GUARDED_ICMPV6_TYPES). The order above
makes every rule's class set an interval, so an atom is exactly one 5-D box:
`(c0, c1, s0, s1, d0, d1, p0, p1, q0, q1)` with inclusive bounds (p: source
port, q: destination port). In the port-less classes every box spans all
ports, so the port dimensions are degenerate there and coverage questions
have the same answer as if those classes had no ports at all.

Addresses are coordinates on the unified line of `pepc.policy.model` (IPv4 at
[0, 2^32), IPv6 at [2^128, 2^129)): an atom's prefixes are of one family,
so its box lies in one family's quarter of the plane, and the real packets
are the points of UNIVERSE (class 7 exists in IPv6 only).
"""

from __future__ import annotations

from pepc.policy.model import LINE_BITS, V6_BASE, Protocol
from pepc.policy.semantics import Atom, Packet

Box = tuple[int, int, int, int, int, int, int, int, int, int]

TCP_FRAG, TCP_PORTS, UDP_PORTS, UDP_FRAG, ICMP, OTHER, ICMPV6, ICMPV6_GUARD = range(8)
N_CLASSES = 8
#: The IP protocol a witness uses for class OTHER (GRE).
OTHER_PROTO = 47
#: The ICMPv6 type a witness uses for class ICMPV6_GUARD (neighbour solicitation).
GUARD_ICMPV6_TYPE = 135
ADDR_MAX = (1 << LINE_BITS) - 1
V4_MAX = 0xFFFFFFFF
PORT_MAX = 0xFFFF
#: Every IPv4 packet, every IPv6 packet: the packet space is their union.
FULL4: Box = (0, ICMPV6, 0, V4_MAX, 0, V4_MAX, 0, PORT_MAX, 0, PORT_MAX)
FULL6: Box = (0, ICMPV6_GUARD, V6_BASE, ADDR_MAX, V6_BASE, ADDR_MAX, 0, PORT_MAX, 0, PORT_MAX)
UNIVERSE: tuple[Box, ...] = (FULL4, FULL6)
#: The packets no rule but one naming ICMPV6 matches; unmatched, they pass.
GUARDED: Box = (ICMPV6_GUARD, ICMPV6_GUARD, V6_BASE, ADDR_MAX, V6_BASE, ADDR_MAX, 0, PORT_MAX, 0, PORT_MAX)
#: The packets the host's default action decides when no rule matches.
DEFAULTED: tuple[Box, ...] = (FULL4, (0, ICMPV6, V6_BASE, ADDR_MAX, V6_BASE, ADDR_MAX, 0, PORT_MAX, 0, PORT_MAX))
#: A point the corner of each family's space stands for (no rule starts
#: there unless it covers nearly everything): cheap probes before an exact
#: search for a gap in the rules.
CORNERS: tuple[tuple[int, int, int, int, int], ...] = (
    (OTHER, V4_MAX - 1, V4_MAX - 1, PORT_MAX - 1, PORT_MAX - 1),
    (TCP_FRAG, 1, 1, 1, 1),
    (OTHER, ADDR_MAX - 1, ADDR_MAX - 1, PORT_MAX - 1, PORT_MAX - 1),
    (TCP_FRAG, V6_BASE + 1, V6_BASE + 1, 1, 1),
)


def is_guarded(point: tuple[int, int, int, int, int]) -> bool:
    """Whether no rule matching the point leaves it to the lockout guard
    (which passes it) rather than to the default action."""
    return point[0] == ICMPV6_GUARD


def by_fallback(box: Box) -> list[tuple[Box, bool]]:
    """`box` split by what decides its packets when no rule matches them:
    (part, guarded) with guarded True for the part of class ICMPV6_GUARD
    (the lockout guard passes it), False for the rest (the default action)."""
    out: list[tuple[Box, bool]] = []
    if box[0] < ICMPV6_GUARD:
        out.append(((box[0], min(box[1], ICMPV6)) + box[2:], False))  # type: ignore[arg-type]
    if box[1] >= ICMPV6_GUARD:
        out.append(((max(box[0], ICMPV6_GUARD), box[1]) + box[2:], True))  # type: ignore[arg-type]
    return out

_CLASSES_WITH_PORTS = {
    Protocol.ANY: (TCP_PORTS, UDP_PORTS),
    Protocol.TCP: (TCP_PORTS, TCP_PORTS),
    Protocol.UDP: (UDP_PORTS, UDP_PORTS),
}
_CLASSES_NO_PORTS = {
    Protocol.ANY: (TCP_FRAG, ICMPV6),
    Protocol.TCP: (TCP_FRAG, TCP_PORTS),
    Protocol.UDP: (UDP_PORTS, UDP_FRAG),
    Protocol.ICMP: (ICMP, ICMP),
    Protocol.ICMPV6: (ICMPV6, ICMPV6_GUARD),
}


def atom_box(atom: Atom) -> Box | None:
    """The box of packets `atom` matches, or None when it matches none
    (a port constraint on ICMP or ICMPv6)."""
    if atom.has_port_constraint:
        cls = _CLASSES_WITH_PORTS.get(atom.protocol)
        if cls is None:
            return None
    else:
        cls = _CLASSES_NO_PORTS[atom.protocol]
    return (
        cls[0], cls[1],
        atom.src.lo, atom.src.hi,
        atom.dst.lo, atom.dst.hi,
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
_SRC_PREFERRED = (0xC6336407, V6_BASE | 0x20010DB8_0000_0000_0000_0000_0000_0007)  # 198.51.100.7, 2001:db8::7
_DST_PREFERRED = (0xCB00710A, V6_BASE | 0x20010DB8_0000_0000_0000_0000_0000_0010)  # 203.0.113.10, 2001:db8::10
_SPORT_PREFERRED = (40000,)
_DPORT_PREFERRED = (443, 80)
_CLASS_PREFERRED_V4 = (TCP_PORTS, UDP_PORTS, ICMP, TCP_FRAG, UDP_FRAG, OTHER, ICMPV6, ICMPV6_GUARD)
_CLASS_PREFERRED_V6 = (TCP_PORTS, UDP_PORTS, ICMPV6, TCP_FRAG, UDP_FRAG, OTHER, ICMP, ICMPV6_GUARD)


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


def _classes(region: Box) -> list[int]:
    """The protocol classes of `region`, likeliest first for real packets
    of its family."""
    order = _CLASS_PREFERRED_V6 if region[2] >= V6_BASE else _CLASS_PREFERRED_V4
    return [c for c in order if region[0] <= c <= region[1]]


def pick_point(region: Box) -> tuple[int, int, int, int, int]:
    """A readable point inside `region` (a region of one family)."""
    return (
        _classes(region)[0],
        _pick(region[2], region[3], _SRC_PREFERRED, True),
        _pick(region[4], region[5], _DST_PREFERRED, True),
        _pick(region[6], region[7], _SPORT_PREFERRED, True),
        _pick(region[8], region[9], _DPORT_PREFERRED, True),
    )


def packet_of(point: tuple[int, int, int, int, int]) -> Packet:
    """The packet a point stands for (its `str` is `pepc simulate` syntax)."""
    cls, src, dst, sport, dport = point
    v6 = src >= V6_BASE
    if v6:
        src, dst = src - V6_BASE, dst - V6_BASE
    if cls == TCP_PORTS:
        return Packet(src, dst, Protocol.TCP.value, sport, dport, has_ports=True, v6=v6)
    if cls == UDP_PORTS:
        return Packet(src, dst, Protocol.UDP.value, sport, dport, has_ports=True, v6=v6)
    if cls == TCP_FRAG:
        return Packet(src, dst, Protocol.TCP.value, fragment=True, v6=v6)
    if cls == UDP_FRAG:
        return Packet(src, dst, Protocol.UDP.value, fragment=True, v6=v6)
    if cls == ICMP:
        return Packet(src, dst, Protocol.ICMP.value, v6=v6)
    if cls == ICMPV6:
        return Packet(src, dst, Protocol.ICMPV6.value, v6=v6)
    if cls == ICMPV6_GUARD:
        return Packet(src, dst, Protocol.ICMPV6.value, v6=v6, icmp_type=GUARD_ICMPV6_TYPE)
    return Packet(src, dst, OTHER_PROTO, v6=v6)


def sample_points(region: Box, k: int) -> list[tuple[int, int, int, int, int]]:
    """k points spread over `region` pseudo-randomly, the same for the
    same region on every run. A block list covers thousands of thin slices
    of a wide region and almost none of its volume: a random point falls
    between them where the readable one (pick_point) may not."""
    x = hash(region) & _MASK64
    # the points go round the region's classes (a wide rule's free packets
    # are often of a protocol the specific rules never name)
    classes = _classes(region)
    out = []
    for i in range(k):
        point = [classes[i % len(classes)]]
        for d in range(2, 10, 2):
            x = (x * 6364136223846793005 + 1442695040888963407) & _MASK64  # an LCG: cheap and deterministic
            point.append(region[d] + (x >> 16) % (region[d + 1] - region[d] + 1))
        out.append(tuple(point))
    return out  # type: ignore[return-value]


_MASK64 = (1 << 64) - 1
