"""Matching semantics of DESIGN.md, in one place.

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

from pepc.model import Action, Prefix, PortRange, Protocol, Rule

#: IP protocol numbers the parser knows to carry ports.
PORT_PROTOCOLS = (Protocol.TCP.value, Protocol.UDP.value)

SPEC_SINGLE_PORT = 16
SPEC_PROTOCOL = 8
#: The largest specificity an atom can have: /32 + /32 + two single ports + protocol.
MAX_SPECIFICITY = 32 + 32 + 2 * SPEC_SINGLE_PORT + SPEC_PROTOCOL


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
    for src in rule.src:
        for dst in rule.dst:
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
    """

    src: int
    dst: int
    proto: int
    sport: int = 0
    dport: int = 0
    has_ports: bool = False
    fragment: bool = False
    length: int = 64

    def __str__(self) -> str:
        name = {1: "icmp", 6: "tcp", 17: "udp"}.get(self.proto, f"proto{self.proto}")
        src = str(ipaddress.IPv4Address(self.src))
        dst = str(ipaddress.IPv4Address(self.dst))
        if self.has_ports:
            text = f"{name} {src}:{self.sport} > {dst}:{self.dport}"
        else:
            text = f"{name} {src} > {dst}"
        if self.length != 64:
            text += f" len={self.length}"
        if self.fragment:
            text += " frag"
        return text


def atom_matches(atom: Atom, pkt: Packet) -> bool:
    if not (atom.src.contains(pkt.src) and atom.dst.contains(pkt.dst)):
        return False
    if atom.protocol is not Protocol.ANY and atom.protocol.value != pkt.proto:
        return False
    if atom.has_port_constraint:
        if not pkt.has_ports or pkt.proto not in PORT_PROTOCOLS:
            return False
        if not (atom.sport.contains(pkt.sport) and atom.dport.contains(pkt.dport)):
            return False
    return True


def verdict_of(action: Action | None, default: Action) -> str:
    """PASS/DROP for a winning action (None: no rule matched, default applies),
    assuming a rate limit is not exceeded."""
    effective = default if action is None else action
    return "PASS" if effective.passes else "DROP"
