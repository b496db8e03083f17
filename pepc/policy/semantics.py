"""Matching semantics (docs/semantics.md), in one place.

A rule is a set of atoms (one source prefix x one destination prefix x one
source-port item x one destination-port item). Atoms are totally ordered by
`rank_key`; the first matching atom wins. The compiler encodes that order in
the data plane, the checker reasons about it geometrically, and the
simulator evaluates packets over the compiled program; all three import the
definitions below so they cannot drift apart.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterator

from pepc.policy.model import Action, Prefix, PortRange, Protocol, Rule

#: IP protocol numbers the parser knows to carry ports.
PORT_PROTOCOLS = (Protocol.TCP.value, Protocol.UDP.value)

SPEC_SINGLE_PORT = 16
SPEC_PROTOCOL = 8
#: The largest specificity an atom can have: /128 + /128 + two single ports
#: + protocol (an IPv4 atom at most /32 + /32 + ...). Atoms of different
#: families never compete for a packet, so their scales need not agree.
MAX_SPECIFICITY = 128 + 128 + 2 * SPEC_SINGLE_PORT + SPEC_PROTOCOL

#: ICMPv6 types that a host needs to stay reachable over IPv6: Packet Too
#: Big (2, path MTU discovery), MLD (130-132, 143) and neighbour discovery
#: (133-137: router/neighbour solicitation and advertisement, redirect).
#: The lockout guard: such a packet is matched only by rules that name
#: protocol ICMPV6; when none does it passes, whatever the default action or
#: a catch-all rule says (docs/decisions.md).
GUARDED_ICMPV6_TYPES = frozenset((2, 130, 131, 132, 133, 134, 135, 136, 137, 143))


@dataclass(frozen=True)
class Atom:
    rule: Rule
    src: Prefix
    dst: Prefix
    sport: PortRange
    dport: PortRange

    @property
    def protocol(self) -> Protocol:
        return self.rule.protocol

    @property
    def has_port_constraint(self) -> bool:
        return not (self.sport.is_any and self.dport.is_any)


def specificity(atom: Atom) -> int:
    spec = atom.src.plen + atom.dst.plen
    spec += SPEC_SINGLE_PORT if atom.sport.is_single else 0
    spec += SPEC_SINGLE_PORT if atom.dport.is_single else 0
    spec += SPEC_PROTOCOL if atom.protocol is not Protocol.ANY else 0
    return spec


def rank_key(atom: Atom) -> tuple[int, int, str]:
    """Sort key of the total order: smaller wins (higher priority, then
    higher specificity, then smaller rule id by plain string comparison)."""
    return (-atom.rule.priority, -specificity(atom), atom.rule.id)


def atoms_of(rule: Rule) -> Iterator[Atom]:
    """The rule's atoms: source x destination prefixes of one family (one
    the protocol allows) x source ports x destination ports."""
    fams = rule.protocol.families
    for src in rule.src:
        if src.family not in fams:
            continue
        for dst in rule.dst:
            if dst.v6 != src.v6:
                continue
            for sport in rule.sports:
                for dport in rule.dports:
                    yield Atom(rule, src, dst, sport, dport)


@dataclass(frozen=True)
class Packet:
    """What the matcher sees of a frame after parsing.

    `has_ports` is False for ICMP, for protocols other than TCP/UDP, for
    non-first fragments and for TCP/UDP first fragments too short to hold
    the ports: such packets never match a rule with a port constraint.
    `length` is the frame length (what rate limits and byte counters charge).
    `v6`: an IPv6 packet (`src`/`dst` are then 128-bit ints; the protocol is
    the upper-layer header after the extension headers). `icmp_type`: the
    ICMPv6 type when the packet is a first fragment of ICMPv6 that carries
    it (None: unknown or not ICMPv6; only the lockout guard reads it).
    """

    src: int
    dst: int
    proto: int
    sport: int = 0
    dport: int = 0
    has_ports: bool = False
    fragment: bool = False
    length: int = 64
    v6: bool = False
    icmp_type: int | None = None

    def __str__(self) -> str:
        """`pepc simulate` syntax: `tcp 192.0.2.1:40000 > 192.0.2.2:443`,
        `tcp [2001:db8::1]:40000 > [2001:db8::2]:443`, `icmpv6 A > B type=135`."""
        names = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
        name = names.get(self.proto, f"proto{self.proto}")
        if self.v6:
            src, dst = str(ipaddress.IPv6Address(self.src)), str(ipaddress.IPv6Address(self.dst))
        else:
            src, dst = str(ipaddress.IPv4Address(self.src)), str(ipaddress.IPv4Address(self.dst))
        if self.has_ports:
            if self.v6:
                src, dst = f"[{src}]", f"[{dst}]"
            text = f"{name} {src}:{self.sport} > {dst}:{self.dport}"
        else:
            text = f"{name} {src} > {dst}"
        if self.icmp_type is not None:
            text += f" type={self.icmp_type}"
        if self.length != 64:
            text += f" len={self.length}"
        if self.fragment:
            text += " frag"
        return text

    @property
    def guarded(self) -> bool:
        """Whether the lockout guard protects this packet (GUARDED_ICMPV6_TYPES)."""
        return self.v6 and self.proto == 58 and self.icmp_type in GUARDED_ICMPV6_TYPES


def atom_matches(atom: Atom, pkt: Packet) -> bool:
    if not (atom.src.contains(pkt.src, pkt.v6) and atom.dst.contains(pkt.dst, pkt.v6)):
        return False
    if atom.protocol is not Protocol.ANY and atom.protocol.value != pkt.proto:
        return False
    if pkt.guarded and atom.protocol is not Protocol.ICMPV6:
        return False
    if atom.has_port_constraint:
        if not pkt.has_ports or pkt.proto not in PORT_PROTOCOLS:
            return False
        if not (atom.sport.contains(pkt.sport) and atom.dport.contains(pkt.dport)):
            return False
    return True


def no_match_action(pkt: Packet, default: Action) -> Action:
    """What decides a packet no rule matches: the host's default action,
    except that the lockout guard passes a guarded ICMPv6 packet."""
    return Action.ALLOW if pkt.guarded else default


def verdict_of(action: Action | None, default: Action) -> str:
    """PASS/DROP for a winning action (None: no rule matched, `default`
    applies: pass no_match_action(pkt, ...) for a packet that may be
    guarded), assuming a rate limit is not exceeded."""
    effective = default if action is None else action
    return "PASS" if effective.passes else "DROP"
