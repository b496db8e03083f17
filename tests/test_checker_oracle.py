"""The checker against a brute-force oracle on small random policies.

The oracle knows nothing of boxes, ranks or the checker's code: it cuts
every dimension at the rules' interval endpoints (coordinate compression),
takes one packet per elementary cell of every protocol kind, and picks
the winner of each packet with a deliberately naive function written
here from docs/semantics.md. Inside one cell every rule item matches all packets
or none, so the cells decide every question exactly.

Policies mix IPv4 and IPv6: each family's addresses are cut on their own
axis, packets pair a source and a destination of one family, and the v6
kinds include ICMPv6 of a type the lockout guard protects (matched only
by ICMPV6 rules; unmatched, it passes whatever the default).
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from itertools import product

from hypothesis import given, settings
from hypothesis import strategies as st

from pepc.checker import analyze
from pepc.policy.config import Config
from pepc.policy.model import ANY_PORT, Action, Location, Policy, PortRange, Prefix, Protocol, Rule

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
BASE = 0x0A000000  # 10.0.0.0
BASE6 = 0x20010DB8 << 96  # 2001:db8::

# Packet kinds: (ip protocol, carries ports, guarded). TCP/UDP without
# ports are non-first fragments; 47 stands for every protocol pepc has no
# name for. Both families get every kind (ICMP in IPv6 and ICMPv6 in IPv4
# are odd, but no rule of that protocol may match them); only IPv6 has
# guarded ICMPv6 (e.g. a neighbour solicitation).
KINDS = {
    False: [(6, True, False), (17, True, False), (6, False, False), (17, False, False), (1, False, False), (47, False, False), (58, False, False)],
    True: [(6, True, False), (17, True, False), (6, False, False), (17, False, False), (1, False, False), (47, False, False), (58, False, False), (58, False, True)],
}
# Which families a protocol names, as the language section says: ICMP is
# IPv4's, ICMPV6 IPv6's, the others both.
PROTO_FAMILIES = {Protocol.ICMP: {False}, Protocol.ICMPV6: {True}}


# --- the naive oracle -------------------------------------------------------


def in_prefix(ip: int, v6: bool, p: Prefix) -> bool:
    bits = 128 if p.v6 else 32
    return p.v6 == v6 and p.addr <= ip <= p.addr + (1 << (bits - p.plen)) - 1


def naive_match_key(rule: Rule, pkt: tuple):
    """Among the rule's item combinations matching pkt, the best sort key
    (smaller wins), or None."""
    v6, proto, has_ports, guarded, src, dst, sport, dport = pkt
    if rule.protocol != Protocol.ANY and int(rule.protocol) != proto:
        return None
    if v6 not in PROTO_FAMILIES.get(rule.protocol, {False, True}):
        return None
    if guarded and rule.protocol != Protocol.ICMPV6:
        return None
    best = None
    for s in rule.src:
        for d in rule.dst:
            for sp in rule.sports:
                for dp in rule.dports:
                    if not (in_prefix(src, v6, s) and in_prefix(dst, v6, d)):
                        continue
                    constrained = sp != ANY_PORT or dp != ANY_PORT
                    if constrained:
                        if proto not in (6, 17) or not has_ports:
                            continue
                        if not (sp.lo <= sport <= sp.hi and dp.lo <= dport <= dp.hi):
                            continue
                    spec = s.plen + d.plen
                    spec += 16 if sp.lo == sp.hi else 0
                    spec += 16 if dp.lo == dp.hi else 0
                    spec += 8 if rule.protocol != Protocol.ANY else 0
                    key = (-rule.priority, -spec, rule.id)
                    if best is None or key < best:
                        best = key
    return best


def naive_winner(rules, pkt, without=None):
    best, best_key = None, None
    for r in rules:
        if r is without:
            continue
        k = naive_match_key(r, pkt)
        if k is not None and (best_key is None or k < best_key):
            best, best_key = r, k
    return best


def cuts(intervals, top):
    points = {0}
    for lo, hi in intervals:
        points.add(lo)
        if hi + 1 <= top:
            points.add(hi + 1)
    return sorted(points)


def cells(rules):
    sp = cuts([(p.lo, p.hi) for r in rules for p in r.sports], 0xFFFF)
    dp = cuts([(p.lo, p.hi) for r in rules for p in r.dports], 0xFFFF)
    for v6 in (False, True):
        top = (1 << (128 if v6 else 32)) - 1
        src = cuts([(p.addr, in_last(p)) for r in rules for p in r.src if p.v6 == v6], top)
        dst = cuts([(p.addr, in_last(p)) for r in rules for p in r.dst if p.v6 == v6], top)
        for proto, ports, guarded in KINDS[v6]:
            for s, d in product(src, dst):
                if ports:
                    for a, b in product(sp, dp):
                        yield (v6, proto, True, False, s, d, a, b)
                else:
                    yield (v6, proto, False, guarded, s, d, 0, 0)


def in_last(p: Prefix) -> int:
    return p.addr + (1 << ((128 if p.v6 else 32) - p.plen)) - 1


def akey(rule: Rule):
    if rule.action == Action.RATE_LIMIT:
        return (rule.action, rule.rate_limit_bps, rule.burst_bytes or rule.rate_limit_bps)
    return (rule.action,)


def oracle(policy: Policy, default: Action) -> dict:
    rules = [r for r in policy.rules if r.enabled and not (r.expires_at and r.expires_at <= NOW)]
    matched = {r.id: [] for r in rules}
    won = {r.id: [] for r in rules}
    winners = []
    for pkt in cells(rules):
        w = naive_winner(rules, pkt)
        ms = [r for r in rules if naive_match_key(r, pkt) is not None]
        winners.append((pkt, w, ms))
        for r in ms:
            matched[r.id].append((pkt, w))
        if w is not None:
            won[w.id].append(pkt)
    shadowed, redundant = {}, {}
    for r in rules:
        if not matched[r.id]:
            continue
        if not won[r.id]:
            shadowed[r.id] = {w.id for _, w in matched[r.id]}
            continue
        takers = set()
        same = True
        for pkt in won[r.id]:
            nxt = naive_winner(rules, pkt, without=r)
            if nxt is None:
                guarded = pkt[3]
                takers.add("guard" if guarded else None)
                same = same and fallback(pkt, default) == r.action and r.action != Action.RATE_LIMIT
            else:
                takers.add(nxt.id)
                same = same and akey(nxt) == akey(r)
        if same:
            redundant[r.id] = takers
    # (code, loser, winner): the winner takes some packet the loser matches
    pairs = set()
    by_id = {r.id: r for r in rules}
    space = {r.id: {pkt for pkt, _ in matched[r.id]} for r in rules}
    for pkt, w, ms in winners:
        if w is None:
            continue
        for lo in ms:
            if lo is w or akey(lo) == akey(w) or lo.id in shadowed:
                continue
            if w.priority == lo.priority:
                code = "conflict"
            else:
                assert w.priority > lo.priority
                code = "generalization" if space[lo.id] >= space[w.id] else "correlation"
            pairs.add((code, lo.id, w.id))
    return {
        "shadowed": shadowed,
        "redundant": redundant,
        "dead": {r.id for r in rules if not matched[r.id]},
        "pairs": pairs,
        # the guarded packets never reach the default: the guard passes them
        "default_unreachable": all(w is not None for pkt, w, _ in winners if not pkt[3]),
        "rules": by_id,
        "live": rules,
    }


def fallback(pkt: tuple, default: Action) -> Action:
    """What decides a packet no rule matches: the lockout guard passes a
    guarded one, the default decides the others."""
    return Action.ALLOW if pkt[3] else default


# --- witnesses ------------------------------------------------------------------

GUARDED_TYPES = {2, 130, 131, 132, 133, 134, 135, 136, 137, 143}


def parse_witness(text: str) -> tuple:
    """A witness in `pepc simulate` syntax, parsed here without pepc's parser."""
    words = text.split()
    proto = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}.get(words[0]) or int(words[0].removeprefix("proto"))
    frag = "frag" in words
    icmp_type = next((int(w[5:]) for w in words if w.startswith("type=")), None)

    def addr(w):
        if w.startswith("["):
            a, p = w[1:].split("]:")
            return int(ipaddress.IPv6Address(a)), int(p), True
        if w.count(":") == 1:
            a, p = w.split(":")
            return int(ipaddress.IPv4Address(a)), int(p), False
        a = ipaddress.ip_address(w)
        return int(a), 0, a.version == 6

    (src, sport, v6), (dst, dport, v6d) = addr(words[1]), addr(words[3])
    assert v6 == v6d, text
    has_ports = proto in (6, 17) and not frag
    guarded = v6 and proto == 58 and icmp_type in GUARDED_TYPES
    return (v6, proto, has_ports, guarded, src, dst, sport, dport)


# --- random policies ------------------------------------------------------------

IDS = ["a", "b", "c", "d", "e", "f", "g"]

# A rule is decoded from 16 small integers: one flat draw per rule keeps
# generation cheap (1000 examples), and 0 always decodes to the simplest
# choice so that hypothesis shrinks toward simple rules.
GENES = 16


def _prefix(v: int) -> tuple[Prefix, ...]:
    """One prefix of either family, or "any" (both families' /0)."""
    family = (v // 40) % 3
    if family == 2:
        return (Prefix(0, 0), Prefix(0, 0, True))
    bits, base = (128, BASE6) if family else (32, BASE)
    plen = (0, bits - 3, bits - 2, bits - 1, bits)[v % 5]
    mask = ((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1)
    return (Prefix((base + (v // 5) % 8) & mask if plen else 0, plen, bool(family)),)


def _side(first: int, second: int, two: bool) -> tuple[Prefix, ...]:
    return tuple(dict.fromkeys(_prefix(first) + (_prefix(second) if two else ())))


def _families(rule: Rule) -> Rule:
    """The rule as the loader would give it: only prefixes of the families
    both sides and the protocol name; a rule the loader rejects
    (family-mismatch) becomes one that applies to src's families."""
    fams = {p.v6 for p in rule.src} & {p.v6 for p in rule.dst} & PROTO_FAMILIES.get(rule.protocol, {False, True})
    if not fams:
        fams = {p.v6 for p in rule.src} & PROTO_FAMILIES.get(rule.protocol, {False, True}) or {p.v6 for p in rule.src}
        if not fams & PROTO_FAMILIES.get(rule.protocol, {False, True}):
            rule = replace(rule, protocol=Protocol.ANY)
        rule = replace(rule, dst=tuple(Prefix(0, 0, f) for f in sorted(fams)))
    return replace(rule, src=tuple(p for p in rule.src if p.v6 in fams), dst=tuple(p for p in rule.dst if p.v6 in fams))


def _range(v: int) -> PortRange:
    lo = 1 + v % 3
    return PortRange(lo, lo + (v // 3) % (4 - lo))


def _port_item(v: int) -> PortRange:
    return ANY_PORT if v % 4 == 3 else _range(v // 4)


def decode_rule(rid: str, line: int, g: list[int]) -> Rule:
    action = list(Action)[g[0] % 4]
    return _families(Rule(
        id=rid,
        action=action,
        loc=Location("p.yaml", line, 3),
        priority=g[2] % 3,
        protocol=list(Protocol)[g[3] % 5],
        src=_side(g[5], g[6], g[4] % 3 == 2),
        dst=_side(g[8], g[9], g[7] % 3 == 2),
        sports=(_range(g[11]),) if g[10] % 3 == 2 else (ANY_PORT,),
        dports=((ANY_PORT,), (_port_item(g[13]),), (_port_item(g[13]), _port_item(g[14])))[g[12] % 3],
        rate_limit_bps=(1000, 2000)[g[1] % 2] if action == Action.RATE_LIMIT else 0,
        enabled=g[15] % 4 != 3,
        expires_at=(None, None, None, NOW - timedelta(days=1), NOW + timedelta(days=1))[(g[15] // 4) % 5],
    ))


def policies(max_rules=5):
    genes = st.lists(st.integers(0, 255), min_size=GENES, max_size=GENES)
    return st.tuples(st.permutations(IDS), st.lists(genes, min_size=1, max_size=max_rules)).map(
        lambda t: Policy("p", tuple(decode_rule(rid, 10 * (i + 1), g) for i, (rid, g) in enumerate(zip(t[0], t[1]))))
    )


def related_ids(f) -> set:
    out = set()
    for r in f.related:
        out.add(r.message.split("`")[1])
    return out


@settings(max_examples=1000)
@given(policies(), st.sampled_from([Action.ALLOW, Action.BLOCK]))
def test_checker_matches_the_cell_oracle(policy, default):
    truth = oracle(policy, default)
    findings = analyze(policy, Config(default_action=default), NOW)
    by_code: dict[str, list] = {}
    for f in findings:
        by_code.setdefault(f.code, []).append(f)
    rules = truth["rules"]
    live = truth["live"]

    shadowed = {f.rule: f for f in by_code.get("shadowed", [])}
    assert set(shadowed) == set(truth["shadowed"])
    for rid, f in shadowed.items():
        assert related_ids(f) == truth["shadowed"][rid]
        pkt = parse_witness(f.witness)
        assert naive_match_key(rules[rid], pkt) is not None
        assert naive_winner(live, pkt).id in truth["shadowed"][rid]

    redundant = {f.rule: f for f in by_code.get("redundant", [])}
    assert set(redundant) == set(truth["redundant"])
    for rid, f in redundant.items():
        takers = truth["redundant"][rid]
        assert related_ids(f) == {t for t in takers if t not in (None, "guard")}
        assert ("the default action" in f.message) == (None in takers)
        assert ("the lockout guard" in f.message) == ("guard" in takers)
        pkt = parse_witness(f.witness)
        assert naive_winner(live, pkt) is rules[rid]
        nxt = naive_winner(live, pkt, without=rules[rid])
        assert (akey(nxt) if nxt else (fallback(pkt, default),)) == akey(rules[rid])

    never = {f.rule for f in by_code.get("never-matches", [])}
    assert truth["dead"] <= never
    for rid in never:
        r = rules[rid]
        assert r.protocol in (Protocol.ICMP, Protocol.ICMPV6) and (r.sports != (ANY_PORT,) or r.dports != (ANY_PORT,))
        assert ("part of" not in next(f for f in by_code["never-matches"] if f.rule == rid).message) == (rid in truth["dead"])

    got_pairs = set()
    for code in ("conflict", "correlation", "generalization"):
        for f in by_code.get(code, []):
            winners = related_ids(f)
            got_pairs |= {(code, f.rule, w) for w in winners}
            pkt = parse_witness(f.witness)
            assert naive_match_key(rules[f.rule], pkt) is not None
            assert naive_winner(live, pkt).id in winners
    assert got_pairs == truth["pairs"]

    assert bool(by_code.get("unreachable-default")) == (bool(live) and truth["default_unreachable"])
    assert findings == sorted(findings, key=lambda f: f.sort_key())


@settings(max_examples=200)
@given(policies(max_rules=7))
def test_index_finds_what_the_all_pairs_scan_finds(policy):
    fast = analyze(policy, Config(), NOW)
    naive = analyze(policy, Config(), NOW, naive_index=True)
    assert fast == naive


# --- the index on its own, with buckets big enough to be indexed again ----------

from pepc.checker.index import _SCAN, BoxIndex, ScanIndex  # noqa: E402
from pepc.checker.space import Space  # noqa: E402


def _dense_rule(rid: str, g: list[int]) -> Rule:
    # few prefixes, protocols and ports, so that buckets and the port groups
    # inside them outgrow _SCAN and get indexed again
    src = (Prefix(0, 0), Prefix(BASE, 24), Prefix(0, 0), Prefix(BASE, 24), Prefix(BASE | 0x10, 28), Prefix(BASE | 0x11, 32))[g[0] % 6]
    dst = (Prefix(0, 0), Prefix(BASE | 0x105, 32), Prefix(0, 0), Prefix(BASE | 0x105, 32), Prefix(BASE, 16), Prefix(BASE | 0x100, 24))[g[1] % 6]
    dport = (ANY_PORT, PortRange(1000, 2000), PortRange(80 + g[3] % 8, 80 + g[3] % 8))[min(g[2] % 8, 2)]
    protocol = (Protocol.TCP, Protocol.TCP, Protocol.TCP, Protocol.UDP, Protocol.ANY, Protocol.ICMP)[g[4] % 6]
    if protocol is Protocol.ICMP:
        dport = ANY_PORT
    return Rule(rid, Action.ALLOW, Location("p.yaml", 1, 1), protocol=protocol, src=(src,), dst=(dst,), dports=(dport,))


@settings(max_examples=60)
@given(
    st.lists(st.lists(st.integers(0, 255), min_size=5, max_size=5), min_size=20, max_size=120),
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 0x1FF), st.integers(0, 0x1FF), st.sampled_from([0, 80, 83, 87, 1500, 2100])), min_size=10, max_size=30),
    st.booleans(),
    st.sampled_from([1, 2, 4, _SCAN]),
)
def test_box_index_agrees_with_a_scan(genes, probes, classes, scan):
    space = Space.build([_dense_rule(f"r{i:03d}", g) for i, g in enumerate(genes)])
    fast = BoxIndex(space.boxes, space.dsts, space.srcs, classes=classes, scan=scan)
    scan = ScanIndex(space.boxes, space.dsts, space.srcs)
    for i in range(len(space.boxes)):  # incremental, as the sweeps use it
        fast.add(i)
        scan.add(i)
        if i % 7 == 0:
            assert sorted(fast.meeting(space.boxes[i], space.dsts[i], space.srcs[i])) == sorted(
                scan.meeting(space.boxes[i], space.dsts[i], space.srcs[i])
            )
    for cls, s, d, port in probes:
        point = (cls, BASE | s, BASE | d, 40000, port)
        assert sorted(fast.stab(point)) == sorted(scan.stab(point))
    for i in range(len(space.boxes)):
        assert sorted(fast.meeting(space.boxes[i], space.dsts[i], space.srcs[i])) == sorted(
            scan.meeting(space.boxes[i], space.dsts[i], space.srcs[i])
        )


def _ported_rule(rid: str, g: list[int]) -> Rule:
    # a few address pairs, so that buckets fill up and get indexed again,
    # and port ranges of many widths
    src = (Prefix(0, 0), Prefix(BASE, 24), Prefix(BASE | 0x11, 32))[g[0] % 3]
    dst = (Prefix(0, 0), Prefix(BASE, 16), Prefix(BASE | 0x105, 32))[g[1] % 3]
    lo = g[2] * 257
    width = (0, 9, 63, 64, 900, 1023, 1024, 5000, 8191, 8192, 40000, 65535)[g[3] % 12]
    dport = PortRange(lo, min(0xFFFF, lo + width)) if width < 65535 else ANY_PORT
    return Rule(rid, Action.ALLOW, Location("p.yaml", 1, 1), priority=g[4] % 3, protocol=Protocol.TCP,
                src=(src,), dst=(dst,), dports=(dport,))


@settings(max_examples=60)
@given(
    st.lists(st.lists(st.integers(0, 255), min_size=5, max_size=5), min_size=20, max_size=150),
    st.sampled_from([1, 2, 4, _SCAN]),
)
def test_box_index_rank_windows_agree_with_a_scan(genes, scan):
    """A frozen index answers from its flat lists, and windows cut every
    list to a rank range: each as a scan would, added in rank order (the
    static index) or as the sweeps add them."""
    space = Space.build([_ported_rule(f"r{i:03d}", g) for i, g in enumerate(genes)])
    fast = BoxIndex(space.boxes, space.dsts, space.srcs, classes=False, scan=scan)
    ref = ScanIndex(space.boxes, space.dsts, space.srcs)
    arank = space.arank
    for n, i in enumerate(space.order):
        fast.add(i)
        ref.add(i)
        if n % 5 == 0:
            assert sorted(fast.meeting(space.boxes[i], space.dsts[i], space.srcs[i])) == sorted(
                ref.meeting(space.boxes[i], space.dsts[i], space.srcs[i])
            )
    fast.freeze()
    last = len(space.order)
    for i in range(len(space.boxes)):
        q = (space.boxes[i], space.dsts[i], space.srcs[i])
        for lo, hi in ((-1, last), (-1, arank[i]), (arank[i], last), (arank[i] // 2, arank[i] + 3)):
            want = sorted(j for j in ref.meeting(*q) if lo < arank[j] < hi)
            got = sorted(fast.meeting(*q, (arank, lo, hi)))
            assert got == want
        assert sorted(fast.meeting(*q)) == sorted(ref.meeting(*q))
