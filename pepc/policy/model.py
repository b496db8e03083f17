"""The validated policy IR: what the loader produces and every later stage reads.

Everything here is immutable and hashable so that stages can cache, compare
and diff values freely. Every user-visible object carries the Location it
was written at, because every finding must point at `file:line:column`.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from itertools import compress, count
from operator import attrgetter, is_not
from typing import Sequence
from datetime import datetime


class Action(enum.IntEnum):
    """Rule actions. The integer values are the data-plane encoding (layout.py)."""

    ALLOW = 1
    BLOCK = 2
    LOG_ONLY = 3
    RATE_LIMIT = 4

    @property
    def passes(self) -> bool:
        """The verdict of this action when no rate limit is exceeded."""
        return self is not Action.BLOCK


class Verdict(enum.Enum):
    PASS = "PASS"
    DROP = "DROP"


class Protocol(enum.IntEnum):
    """Rule protocols; values are IP protocol numbers, ANY is 0 (a wildcard).

    ICMP is ICMP for IPv4 (protocol 1) and ICMPV6 is ICMP for IPv6 (58):
    each names one address family, so a rule with either applies to that
    family only."""

    ANY = 0
    ICMP = 1
    TCP = 6
    UDP = 17
    ICMPV6 = 58

    @property
    def carries_ports(self) -> bool:
        return self in (Protocol.TCP, Protocol.UDP)

    @property
    def families(self) -> tuple[int, ...]:
        """The address families (4, 6) a rule with this protocol can match."""
        if self is Protocol.ICMP:
            return (4,)
        if self is Protocol.ICMPV6:
            return (6,)
        return (4, 6)


@dataclass(frozen=True, order=True)
class Location:
    """A 1-based position in a policy file, as shown to users."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}"
        return self.file


#: The unified address line the checker reasons on (see Prefix.line): IPv4
#: addresses are the integers [0, 2^32), IPv6 addresses [2^128, 2^129). Both
#: families' prefixes are then prefixes of one 129-bit space, so boxes stay
#: 5-dimensional and a v4 prefix never meets a v6 one.
LINE_BITS = 129
V6_BASE = 1 << 128


@dataclass(frozen=True, order=True)
class Prefix:
    """An IPv4 or IPv6 prefix: `addr` is the network address as an int
    (family-local: < 2^32 for v4, < 2^128 for v6), host bits zero."""

    addr: int
    plen: int
    v6: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.plen <= self.bits:
            raise ValueError(f"prefix length {self.plen} out of range")
        if self.addr >> self.bits or self.addr & ~self.mask:
            raise ValueError("host bits set")

    @property
    def family(self) -> int:
        return 6 if self.v6 else 4

    @property
    def bits(self) -> int:
        return 128 if self.v6 else 32

    @property
    def mask(self) -> int:
        b = self.bits
        return ((1 << b) - 1) ^ ((1 << (b - self.plen)) - 1)

    @property
    def first(self) -> int:
        return self.addr

    @property
    def last(self) -> int:
        return self.addr | ((1 << (self.bits - self.plen)) - 1)

    @property
    def line(self) -> tuple[int, int]:
        """(prefix length, address) of this prefix on the unified line."""
        if self.v6:
            return (LINE_BITS - 128 + self.plen, V6_BASE | self.addr)
        return (LINE_BITS - 32 + self.plen, self.addr)

    @property
    def lo(self) -> int:
        """First address of the prefix on the unified line."""
        return V6_BASE | self.addr if self.v6 else self.addr

    @property
    def hi(self) -> int:
        """Last address of the prefix on the unified line."""
        return self.lo | ((1 << (self.bits - self.plen)) - 1)

    def contains(self, ip: int, v6: bool = False) -> bool:
        """Whether the address `ip` of family v6/v4 is in the prefix."""
        return v6 == self.v6 and (ip & self.mask) == self.addr

    def __str__(self) -> str:
        if self.v6:
            return f"{ipaddress.IPv6Address(self.addr)}/{self.plen}"
        return f"{ipaddress.IPv4Address(self.addr)}/{self.plen}"

    @classmethod
    def parse(cls, text: str) -> "Prefix":
        net = ipaddress.ip_network(text, strict=True)
        return cls(int(net.network_address), net.prefixlen, net.version == 6)


ANY4 = Prefix(0, 0)
ANY6 = Prefix(0, 0, True)
#: IPv4's "any" (kept under its old name for v4-only callers)
ANY_PREFIX = ANY4
#: "any" on a side of a rule: every address of both families
ANY_BOTH = (ANY4, ANY6)


@dataclass(frozen=True, order=True)
class PortRange:
    """A port item: one port (lo == hi), one range as written, or any (0-65535).

    Port 0 is not a port a rule can name: in the language 0 means "any".
    """

    lo: int
    hi: int

    @property
    def is_any(self) -> bool:
        return self.lo == 0 and self.hi == 0xFFFF

    @property
    def is_single(self) -> bool:
        return self.lo == self.hi

    def contains(self, port: int) -> bool:
        return self.lo <= port <= self.hi

    def __str__(self) -> str:
        if self.is_any:
            return "any"
        if self.is_single:
            return str(self.lo)
        return f"{self.lo}-{self.hi}"


ANY_PORT = PortRange(0, 0xFFFF)


@dataclass(frozen=True)
class Network:
    name: str
    prefixes: tuple[Prefix, ...]
    loc: Location


@dataclass(frozen=True)
class Service:
    name: str
    ports: tuple[PortRange, ...]
    loc: Location


@dataclass(frozen=True)
class Rule:
    """One policy rule, fully resolved: names replaced by prefixes and ports.

    `src`/`dst` are never empty and `sports`/`dports` are never empty (any
    is ANY_PORT). "any" address is the /0 of each family the rule applies
    to (ANY4, ANY6): the loader resolves it, so that every later stage sees
    concrete prefixes. A rule's atoms pair only prefixes of one family
    (`pepc.policy.semantics.atoms_of`); `families` says which. `refs` keeps the names as written, for
    reports; `field_locs` maps a field path such as "dst.port" to where it
    was written so findings can point at the exact field.
    """

    id: str
    action: Action
    loc: Location
    priority: int = 0
    protocol: Protocol = Protocol.ANY
    src: tuple[Prefix, ...] = ANY_BOTH
    dst: tuple[Prefix, ...] = ANY_BOTH
    sports: tuple[PortRange, ...] = (ANY_PORT,)
    dports: tuple[PortRange, ...] = (ANY_PORT,)
    rate_limit_bps: int = 0
    burst_bytes: int = 0
    created_at: datetime | None = None
    expires_at: datetime | None = None
    enabled: bool = True
    description: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    suppress: tuple[str, ...] = ()
    allow_overlap: tuple[str, ...] = ()
    legacy: bool = False
    field_locs: tuple[tuple[str, Location], ...] = field(default=(), compare=False)

    def loc_of(self, path: str) -> Location:
        """Where `path` (e.g. "dst.port") was written, else the rule itself."""
        for key, loc in self.field_locs:
            if key == path:
                return loc
        return self.loc

    @property
    def families(self) -> tuple[int, ...]:
        """The address families (4, 6) the rule matches packets of: those
        named on both sides and allowed by the protocol. Empty: the rule
        can match nothing (the loader reports `family-mismatch`)."""
        src = {p.v6 for p in self.src}
        dst = {p.v6 for p in self.dst}
        return tuple(f for f in self.protocol.families if (f == 6) in src and (f == 6) in dst)

    @property
    def has_port_constraint(self) -> bool:
        return not (all(p.is_any for p in self.sports) and all(p.is_any for p in self.dports))

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def is_live(self, now: datetime) -> bool:
        """Whether the rule exists for the data plane at `now`."""
        return self.enabled and not self.is_expired(now)


def rule_changes(old: Sequence[Rule], new: Sequence[Rule]) -> tuple[list[Rule], list[Rule]]:
    """(gone, came): the Rule objects of `old` that `new` does not hold and
    the reverse, by identity, for sequences as a reload makes them
    (unchanged rules handed over as the same objects, mostly in place).
    Found at C speed: the longest common prefix and suffix, then the
    middles position by position when they are as long, else whole (an
    object in both middles, moved, is in neither list). Policy.edit_from
    gives the same without looking, when the loader knows it."""
    m = min(len(old), len(new))
    p = next(compress(count(), map(is_not, old, new)), m)
    q = min(next(compress(count(), map(is_not, reversed(old), reversed(new))), m), m - p)
    mid_old, mid_new = old[p : len(old) - q], new[p : len(new) - q]
    if len(mid_old) == len(mid_new):
        at = list(compress(count(), map(is_not, mid_old, mid_new)))
        return [mid_old[i] for i in at], [mid_new[i] for i in at]
    moved = set(map(id, mid_old)) & set(map(id, mid_new))
    return [r for r in mid_old if id(r) not in moved], [r for r in mid_new if id(r) not in moved]


_ANY_TIME = object()
_EXPIRES_AT = attrgetter("expires_at")
_ENABLED = attrgetter("enabled")


@dataclass(frozen=True)
class Policy:
    """A whole policy directory, validated. Rules are in load order."""

    root: str
    rules: tuple[Rule, ...]
    networks: tuple[Network, ...] = ()
    services: tuple[Service, ...] = ()
    files: tuple[str, ...] = ()
    # (now, live rules) of the last live_rules call: a reconcile asks it of
    # the same policy several times (gate, compiler, slots), 10^5 rules each
    _live: tuple = field(default=(None, ()), init=False, repr=False, compare=False)
    _edit: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def live_rules(self, now: datetime) -> tuple[Rule, ...]:
        at, live = self._live
        if at is not None and (at is _ANY_TIME or at == now):
            return live
        rules = self.rules
        if any(map(_EXPIRES_AT, rules)):
            live = tuple(r for r in rules if r.is_live(now))
            object.__setattr__(self, "_live", (now, live))
        else:  # the usual case, at C speed: liveness is `enabled`, at any time
            live = tuple(filter(_ENABLED, rules))
            object.__setattr__(self, "_live", (_ANY_TIME, live))
        return live

    def edit_from(self, base: "Policy") -> tuple[tuple[Rule, ...], tuple[Rule, ...]] | None:
        """(gone, came) when the loader knows this policy as `base` edited:
        its rules are base's minus `gone` plus `came` (Rule objects, by
        identity; the order of the others may differ). None when unknown:
        callers then compare the rule sequences themselves."""
        e = self._edit
        if e is None or e[0]() is not base:
            return None
        return e[1], e[2]

    @property
    def live_is_static(self) -> bool:
        """Whether live_rules is the same at every time (no rule expires;
        known once live_rules ran, or the loader seeded it)."""
        return self._live[0] is _ANY_TIME

    def live_edit_from(self, base: "Policy", now: datetime, base_now: datetime | None) -> tuple[list[Rule], list[Rule]] | None:
        """edit_from restricted to live rules: (live rules of base gone, live
        rules come) when base's live rules were taken at `base_now`; None
        when unknown (no edit, or liveness may have moved with the clock)."""
        e = self.edit_from(base)
        if e is None:
            return None
        if now == base_now:
            return [r for r in e[0] if r.is_live(now)], [r for r in e[1] if r.is_live(now)]
        if self.live_is_static and base.live_is_static:
            return [r for r in e[0] if r.enabled], [r for r in e[1] if r.enabled]
        return None

    def set_edit(self, base: "Policy", gone: tuple[Rule, ...], came: tuple[Rule, ...]) -> None:
        """For a loader that built this policy from `base` (see edit_from).
        Holds `base` weakly: a chain of edits keeps no old policy alive."""
        import weakref

        object.__setattr__(self, "_edit", (weakref.ref(base), gone, came))

    def seed_live(self, live: tuple[Rule, ...]) -> None:
        """For a loader that knows no rule of the policy expires: `live` (the
        enabled rules, in order) is live_rules(now) for every now."""
        object.__setattr__(self, "_live", (_ANY_TIME, live))

    def rule(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    def next_expiry(self, now: datetime) -> datetime | None:
        """The earliest future `expires_at` of an enabled rule (for watch timers)."""
        times = [r.expires_at for r in self.rules if r.enabled and r.expires_at and r.expires_at > now]
        return min(times) if times else None
