"""The oracle: simulating packets over the compiled program gives the same
answer as a deliberately naive reading of docs/semantics.md.

The reference below scans every rule and every atom and applies the order
of docs/semantics.md literally. It imports nothing from pepc.policy.semantics: prefix
containment, the port rules, specificity and the tie-breaks are written out
again here, differently, so that a shared mistake is unlikely.
"""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compile_helpers import NOW
from pepc.compiler import compile_program, pack
from pepc.policy.config import Config
from pepc.compiler.layout import Capacities
from pepc.policy.model import Action, Location, Policy, PortRange, Prefix, Protocol, Rule
from pepc.policy.semantics import Packet
from pepc.simulate.evaluate import evaluate

# --- the naive reference ---------------------------------------------------------------

TCP, UDP, ICMPV6 = 6, 17, 58
#: ICMPv6 types a default-BLOCK host must still receive (docs/semantics.md: the lockout guard)
REF_GUARDED_TYPES = {2, 130, 131, 132, 133, 134, 135, 136, 137, 143}


def _bits(x: int, v6: bool = False) -> str:
    return format(x, "0128b" if v6 else "032b")


def ref_in_prefix(ip: int, addr: int, plen: int, v6: bool = False) -> bool:
    return _bits(ip, v6)[:plen] == _bits(addr, v6)[:plen]


def ref_family_ok(r: Rule, s: Prefix, d: Prefix, pkt: Packet) -> bool:
    """Both prefixes of the packet's family, and a protocol of that family
    (ICMP is IPv4's, ICMPV6 is IPv6's)."""
    if s.v6 != pkt.v6 or d.v6 != pkt.v6:
        return False
    if r.protocol == Protocol.ICMP and pkt.v6:
        return False
    if r.protocol == Protocol.ICMPV6 and not pkt.v6:
        return False
    return True


def ref_guarded(pkt: Packet) -> bool:
    return pkt.v6 and pkt.proto == ICMPV6 and pkt.icmp_type in REF_GUARDED_TYPES


def ref_port_item_is_any(lo: int, hi: int) -> bool:
    return lo == 0 and hi == 65535


def ref_decide(rules, pkt: Packet, now, default: Action):
    """(winning rule or None, action, verdict) by docs/semantics.md, read literally."""
    best = None  # (priority, specificity, id, rule)
    for r in rules:
        if not r.enabled:
            continue
        if r.expires_at is not None and not (now < r.expires_at):
            continue
        for s in r.src:
            for d in r.dst:
                for sp in r.sports:
                    for dp in r.dports:
                        if not ref_family_ok(r, s, d, pkt):
                            continue
                        if not ref_in_prefix(pkt.src, s.addr, s.plen, pkt.v6):
                            continue
                        if not ref_in_prefix(pkt.dst, d.addr, d.plen, pkt.v6):
                            continue
                        if r.protocol != Protocol.ANY and int(r.protocol) != pkt.proto:
                            continue
                        if ref_guarded(pkt) and r.protocol != Protocol.ICMPV6:
                            continue  # the lockout guard: only ICMPV6 rules see it
                        port_constraint = not (ref_port_item_is_any(sp.lo, sp.hi) and ref_port_item_is_any(dp.lo, dp.hi))
                        if port_constraint:
                            if pkt.proto not in (TCP, UDP) or not pkt.has_ports or pkt.fragment:
                                continue
                            if not (sp.lo <= pkt.sport <= sp.hi and dp.lo <= pkt.dport <= dp.hi):
                                continue
                        spec = s.plen + d.plen
                        if sp.lo == sp.hi:
                            spec += 16
                        if dp.lo == dp.hi:
                            spec += 16
                        if r.protocol != Protocol.ANY:
                            spec += 8
                        cand = (r.priority, spec, r.id, r)
                        if best is None:
                            best = cand
                        elif cand[0] > best[0]:
                            best = cand
                        elif cand[0] == best[0] and cand[1] > best[1]:
                            best = cand
                        elif cand[0] == best[0] and cand[1] == best[1] and cand[2] < best[2]:
                            best = cand
    if best is None:
        action = None
        verdict = "DROP" if default == Action.BLOCK and not ref_guarded(pkt) else "PASS"
        return None, action, verdict
    r = best[3]
    return r, r.action, ("DROP" if r.action == Action.BLOCK else "PASS")


# --- random policies ---------------------------------------------------------------------

ANCHORS = [0x00000000, 0x0A000000, 0x0A000080, 0x0A0000FF, 0x0A010000, 0xC0A80101, 0xC0A801FF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]
PORT_ANCHORS = [1, 2, 22, 53, 79, 80, 81, 443, 1023, 1024, 8080, 32767, 32768, 60999, 65534, 65535]
# Random policies need many masks; capacity is tested in test_compiler.py.
BIG = Capacities(max_rules=64, max_entries=1 << 20, max_masks=1 << 16)
IDS = ["a", "b", "ab", "a0", "B", "r1", "r10", "r2", "z", "_x", "web", "web_allow", "Web"]


def _mask(plen: int, bits: int = 32) -> int:
    full = (1 << bits) - 1
    return (full << (bits - plen)) & full


ANCHORS6 = [
    0,
    0x20010DB8 << 96,
    (0x20010DB8 << 96) | 1,
    (0x20010DB8 << 96) | (1 << 64),
    (0x20010DB8 << 96) | ((1 << 96) - 1),
    (0xFE80 << 112) | 1,
    (0xFF02 << 112) | 1,
    1 << 127,
    (1 << 127) - 1,
    (1 << 128) - 1,
]


# Hypothesis costs per draw, so every rule field is one draw: a pool index.
# Pools hold nested and overlapping items around the anchors; indexes past
# the pool decode to arbitrary items (every prefix length, any range).
PREFIX_POOL = sorted({Prefix(a & _mask(p), p) for a in ANCHORS for p in (0, 1, 7, 8, 9, 16, 23, 24, 25, 30, 31, 32)})
# and IPv6 ones: mixed-family policies (a rule may name both families)
PREFIX_POOL += sorted(
    {Prefix(a & _mask(p, 128), p, True) for a in ANCHORS6 for p in (0, 1, 8, 16, 31, 32, 48, 63, 64, 65, 96, 127, 128)}
)
PORT_POOL = [PortRange(0, 65535)] + [PortRange(p, p) for p in PORT_ANCHORS] + [
    PortRange(lo, hi) for lo in PORT_ANCHORS for hi in PORT_ANCHORS if lo < hi
]
_SPREAD = 2654435761  # Knuth's multiplicative hash: scatter indexes over the space


def _prefix_of(i: int) -> Prefix:
    if i < len(PREFIX_POOL):
        return PREFIX_POOL[i]
    if i % 2:
        plen = i % 129
        return Prefix(((i * _SPREAD) ** 4) & _mask(plen, 128), plen, True)
    plen = i % 33
    return Prefix((i * _SPREAD) & 0xFFFFFFFF & _mask(plen), plen)


def _port_item_of(i: int) -> PortRange:
    if i < len(PORT_POOL):
        return PORT_POOL[i]
    a, b = (i * _SPREAD) % 65535 + 1, (i * 40503) % 65535 + 1
    return PortRange(min(a, b), max(a, b))


_prefix = st.integers(0, len(PREFIX_POOL) * 3 // 2).map(_prefix_of)
_port_item = st.integers(0, len(PORT_POOL) * 3 // 2).map(_port_item_of)
_prefix_lists = st.lists(_prefix, min_size=1, max_size=2)
# Source ports are mostly "any" in real policies, and ranges on both sides
# multiply the entries: keep that combination, but rare.
_sport_lists = st.one_of(st.just([PortRange(0, 65535)]), st.just([PortRange(0, 65535)]), st.lists(_port_item, min_size=1, max_size=2))
# Rules without a port constraint are what ICMP, ICMPv6 and the lockout
# guard meet: give them a fair share.
_dport_lists = st.one_of(st.just([PortRange(0, 65535)]), st.lists(_port_item, min_size=1, max_size=3))
_LIFECYCLE = [(True, None)] * 5 + [(False, None), (True, NOW), (True, NOW - timedelta(days=1)), (True, NOW + timedelta(seconds=1))]
# action x priority (ties are likely) x protocol x lifecycle, in one draw
_meta = st.sampled_from(
    [
        (a, p, proto, life)
        for proto in (Protocol.ANY, Protocol.TCP, Protocol.UDP, Protocol.ICMP, Protocol.ANY, Protocol.ICMPV6)
        for p in (0, 0, 0, 1, 5, 100, 65535)
        for a in Action
        for life in _LIFECYCLE
    ]
)
_ids = st.lists(st.sampled_from(IDS), min_size=0, max_size=6, unique=True)


@st.composite
def policies(draw):
    rules = []
    for line, rid in enumerate(draw(_ids), 1):
        action, priority, protocol, (enabled, expires_at) = draw(_meta)
        rules.append(
            Rule(
                id=rid,
                action=action,
                loc=Location("p/r.yaml", line, 3),
                priority=priority,
                protocol=protocol,
                src=tuple(draw(_prefix_lists)),
                dst=tuple(draw(_prefix_lists)),
                sports=tuple(draw(_sport_lists)),
                dports=tuple(draw(_dport_lists)),
                rate_limit_bps=1000,
                enabled=enabled,
                expires_at=expires_at,
            )
        )
    return Policy(root="p", rules=tuple(rules))


def _edges(pol: Policy) -> tuple[dict[bool, list[int]], list[int]]:
    addrs = {False: set(ANCHORS), True: set(ANCHORS6)}
    ports = set(PORT_ANCHORS) | {0}
    for r in pol.rules:
        for p in r.src + r.dst:
            full = (1 << p.bits) - 1
            addrs[p.v6].update({p.first, p.last, (p.first - 1) & full, (p.last + 1) & full})
        for it in r.sports + r.dports:
            ports.update({it.lo, it.hi, max(it.lo - 1, 0), min(it.hi + 1, 65535)})
    return {v6: sorted(a) for v6, a in addrs.items()}, sorted(ports)


def _inside(rnd, lo: int, hi: int, edges: list[int]) -> int:
    """A value in [lo, hi]: an end, an edge of another item inside it, or any."""
    inner = [e for e in edges if lo <= e <= hi] if rnd.random() < 0.5 else []
    r = rnd.random()
    if inner and r < 0.5:
        return rnd.choice(inner)
    if r < 0.75:
        return rnd.choice((lo, hi))
    return rnd.randint(lo, hi)


def _meet_prefix(a: Prefix, b: Prefix) -> Prefix:
    if a.plen <= b.plen and ref_in_prefix(b.addr, a.addr, a.plen):
        return b
    if b.plen <= a.plen and ref_in_prefix(a.addr, b.addr, b.plen):
        return a
    return a  # disjoint: stay inside the first


def _meet_range(a: PortRange, b: PortRange) -> PortRange:
    lo, hi = max(a.lo, b.lo), min(a.hi, b.hi)
    return PortRange(lo, hi) if lo <= hi else a


def random_packet(rnd, pol: Policy, edges) -> Packet:
    """Packets from a seeded Random (hypothesis draws the seed): eight per
    policy at a fraction of the cost of hypothesis draws, reproducible from
    the failing example. Most land where two live rules overlap (so that
    priority, specificity and id have to decide) or inside one rule; the
    rest on the edges of prefixes and ranges, or anywhere."""
    all_addrs, ports = edges
    live = [r for r in pol.rules if r.is_live(NOW)]
    pick = rnd.random()

    def addr(v6: bool) -> int:
        return rnd.choice(all_addrs[v6]) if rnd.random() < 0.7 else rnd.getrandbits(128 if v6 else 32)

    if live and pick < 0.75:
        r1 = rnd.choice(live)
        r2 = rnd.choice(live) if pick < 0.45 else r1
        s1 = rnd.choice(r1.src)
        v6 = s1.v6
        s2 = [p for p in r2.src if p.v6 == v6]
        s = _meet_prefix(s1, rnd.choice(s2)) if s2 else s1
        d1, d2 = [p for p in r1.dst if p.v6 == v6], [p for p in r2.dst if p.v6 == v6]
        d = _meet_prefix(rnd.choice(d1), rnd.choice(d2)) if d1 and d2 else (d1 or d2 or [None])[0]
        sp = _meet_range(rnd.choice(r1.sports), rnd.choice(r2.sports))
        dp = _meet_range(rnd.choice(r1.dports), rnd.choice(r2.dports))
        protos = [p.value for p in (r1.protocol, r2.protocol) if p is not Protocol.ANY]
        proto = protos[0] if protos else rnd.choice([6, 17, 6, 17, 58 if v6 else 1, 47])
        addrs = all_addrs[v6]
        src = _inside(rnd, s.first, s.last, addrs)
        dst = _inside(rnd, d.first, d.last, addrs) if d is not None else addr(v6)
        sport, dport = _inside(rnd, sp.lo, sp.hi, ports), _inside(rnd, dp.lo, dp.hi, ports)
    else:
        def port() -> int:
            return rnd.choice(ports) if rnd.random() < 0.7 else rnd.randrange(65536)

        v6 = rnd.random() < 0.5
        proto = rnd.choice([6, 6, 17, 17, 1, 47, 0, 58])
        src, dst, sport, dport = addr(v6), addr(v6), port(), port()
    kind = rnd.choice(["ports"] * 8 + ["frag", "truncated"]) if proto in (6, 17) else "none"
    icmp_type = None
    if v6 and proto == 58 and rnd.random() < 0.9:
        icmp_type = rnd.choice([128, 129, 1, 2, 3, 4, 130, 131, 132, 133, 134, 135, 136, 137, 143, 144])
    return Packet(
        src=src,
        dst=dst,
        proto=proto,
        sport=sport if kind == "ports" else 0,
        dport=dport if kind == "ports" else 0,
        has_ports=kind == "ports",
        fragment=kind == "frag",
        length=rnd.randrange(20, 1515),
        v6=v6,
        icmp_type=icmp_type,
    )


@settings(
    max_examples=int(os.environ.get("ORACLE_EXAMPLES", 2000)),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(policies(), st.sampled_from([Action.ALLOW, Action.BLOCK]), st.randoms(use_true_random=True))
def test_compiled_program_agrees_with_the_naive_reference(pol, default, rnd):
    program = compile_program(pol, Config(default_action=default, capacities=BIG), NOW)
    edges = _edges(pol)
    for _ in range(8):
        pkt = random_packet(rnd, pol, edges)
        want_rule, want_action, want_verdict = ref_decide(pol.rules, pkt, NOW, default)
        got = evaluate(program, pkt)
        assert (got.rule_id, got.action, got.verdict) == (
            want_rule.id if want_rule else None,
            want_action,
            want_verdict,
        ), f"{pkt}"


@settings(max_examples=50)
@given(policies())
def test_fast_packing_equals_layout_packing(pol):
    program = compile_program(pol, Config(capacities=BIG), NOW)
    assert pack.map_contents(program) == program.map_contents()
    # the compiler's packed rule map is what its entries say, packed field by
    # field through layout.Struct.pack (entries are decoded from that map)
    contents = program.map_contents()
    assert contents["pepc_rules"] == {e.key.key_bytes(): e.value_bytes() for e in program.entries if not e.key.shape.v6}
    assert contents["pepc_rules6"] == {e.key.key_bytes(): e.value_bytes() for e in program.entries if e.key.shape.v6}
    assert len(program.entries) == program.n_entries
