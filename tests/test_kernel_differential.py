"""Differential test: the kernel and the simulator on the same bytes.

For random mixed-family policies (seeded, reproducible) and thousands of
random frames — IPv4 and IPv6, VLAN-tagged, fragmented, ICMP and ICMPv6
(guarded types included), other protocols, IP options, IPv6 extension
header chains (too long ones too), truncated at any byte, malformed, not
IP — every frame goes through the loaded program with
BPF_PROG_TEST_RUN, and through pepc.simulate.frames.parse_frame + pepc.simulate.evaluate on
the same compiled Program. Verdict, the per-rule counter that moved (and by
how much), and every global counter must agree on every frame. Half the
policies run with the mask prefilter (pepc.compiler.bloom), half without.
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter

import pytest

from kernel_fixtures import LOC, compile_policy, pinned_instance
from pepc.compiler import layout
from pepc.simulate.frames import (
    ETH_P_8021AD,
    ETH_P_8021Q,
    ETH_P_ARP,
    MAX_IP6_EXT,
    NH_AH,
    NH_DSTOPTS,
    NH_FRAGMENT,
    NH_HOPOPTS,
    NH_ROUTING,
    Ext,
    build_frame,
    build_frame6,
    parse_frame,
)
from pepc.policy.model import ANY4, ANY6, Action, PortRange, Prefix, Protocol, Rule
from pepc.policy.semantics import GUARDED_ICMPV6_TYPES, no_match_action, verdict_of

pytestmark = pytest.mark.kernel

POLICIES = 24
PACKETS = 1000
# max_masks 1024: also proves the mask walk verifies and runs far past the default 128
CAPS = layout.Capacities(max_rules=64, max_entries=4096, max_masks=1024, ring_bytes=4096 * 16)

# A small address/port universe so that random packets hit random rules.
NETS = ["10.0.0.0", "10.0.1.0", "10.1.0.0", "192.168.1.0", "172.16.5.0"]
PORTS = [22, 53, 80, 443, 1000, 1023, 1024, 8080, 65535]
PLENS = [0, 8, 16, 24, 24, 28, 32, 32]
NETS6 = ["2001:db8::", "2001:db8:0:1::", "2001:db8:1::", "fd00::", "fe80::"]
PLENS6 = [0, 16, 32, 48, 64, 64, 96, 120, 127, 128, 128]
ICMP6_TYPES = sorted(GUARDED_ICMPV6_TYPES) + [1, 3, 4, 128, 129, 138, 142, 144]
BIG = 10**12  # rate-limit rate and burst: never exceeded in this test


def _addr(rng: random.Random) -> int:
    base = int.from_bytes(bytes(map(int, rng.choice(NETS).split("."))), "big")
    return base | rng.randrange(256) if rng.random() < 0.9 else rng.getrandbits(32)


def _prefix(rng: random.Random) -> Prefix:
    plen = rng.choice(PLENS)
    mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
    return Prefix(_addr(rng) & mask, plen)


def _addr6(rng: random.Random) -> int:
    base = int(ipaddress.IPv6Address(rng.choice(NETS6)))
    return base | rng.getrandbits(rng.choice([8, 16, 64])) if rng.random() < 0.9 else rng.getrandbits(128)


def _prefix6(rng: random.Random) -> Prefix:
    plen = rng.choice(PLENS6)
    mask = ((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1)
    return Prefix(_addr6(rng) & mask, plen, True)


def _side(rng: random.Random, family: str, n: int) -> tuple[Prefix, ...]:
    """Prefixes of one side of a rule: v4, v6 or both families."""
    out = set()
    for _ in range(n):
        if family in ("4", "46"):
            out.add(_prefix(rng))
        if family in ("6", "46"):
            out.add(_prefix6(rng))
    if rng.random() < 0.1:  # "any", as the loader resolves it
        out = {ANY4, ANY6} if family == "46" else {ANY6 if family == "6" else ANY4}
    return tuple(out)


def _port_item(rng: random.Random) -> PortRange:
    r = rng.random()
    if r < 0.75:
        p = rng.choice(PORTS)
        return PortRange(p, p)
    lo = rng.choice(PORTS)
    hi = min(65535, lo + rng.choice([1, 7, 100, 1000, 40000]))
    return PortRange(lo, hi)


def random_rules(rng: random.Random) -> list[Rule]:
    rules = []
    for i in range(rng.randint(1, 30)):
        proto = rng.choice([Protocol.ANY, Protocol.TCP, Protocol.TCP, Protocol.UDP, Protocol.ICMP, Protocol.ICMPV6])
        ports = proto not in (Protocol.ICMP, Protocol.ICMPV6) and rng.random() < 0.6
        family = {Protocol.ICMP: "4", Protocol.ICMPV6: "6"}.get(proto) or rng.choice(["4", "4", "6", "6", "46"])
        action = rng.choice(list(Action))
        rules.append(
            Rule(
                id=f"r{rng.randrange(100):02d}-{i}",
                action=action,
                loc=LOC,
                priority=rng.choice([0, 0, 0, 10, 10, 100, 65535]),
                protocol=proto,
                src=_side(rng, family, rng.choice([1, 1, 2, 3])),
                dst=_side(rng, family, rng.choice([1, 1, 2])),
                sports=tuple({_port_item(rng) for _ in range(rng.choice([1, 2]))}) if ports and rng.random() < 0.3 else (PortRange(0, 65535),),
                dports=tuple({_port_item(rng) for _ in range(rng.choice([1, 2, 3]))}) if ports else (PortRange(0, 65535),),
                rate_limit_bps=BIG if action is Action.RATE_LIMIT else 0,
                burst_bytes=BIG if action is Action.RATE_LIMIT else 0,
            )
        )
    return rules


def _ext(rng: random.Random) -> Ext:
    kind = rng.choice([NH_HOPOPTS, NH_ROUTING, NH_DSTOPTS, NH_AH, NH_FRAGMENT, NH_FRAGMENT])
    if kind == NH_FRAGMENT:
        return Ext(kind, offset=rng.choice([0, 0, 1, 185, 8191]), more=rng.random() < 0.5)
    unit = 4 if kind == NH_AH else 8
    e = Ext(kind, size=unit * rng.randint(8 // unit, 6))
    if rng.random() < 0.05:  # a length field claiming more than is there
        e = Ext(kind, size=e.size, length_byte=rng.randrange(256))
    return e


def _common(rng: random.Random, protos: list[int]) -> dict:
    """The frame parameters both families share: protocol, ports, VLAN tags, payload."""
    vl = rng.choice([0, 0, 0, 1, 2, 3])
    return dict(
        proto=rng.choice(protos),
        sport=rng.choice(PORTS) if rng.random() < 0.6 else rng.randrange(65536),
        dport=rng.choice(PORTS) if rng.random() < 0.7 else rng.randrange(65536),
        vlans=[rng.randrange(4096) for _ in range(vl)],
        vlan_tpids=[rng.choice([ETH_P_8021Q, ETH_P_8021AD]) for _ in range(vl)],
        payload=rng.choice([0, 0, 6, 64, 200, 1400]),
    )


def _cut_or_pad(rng: random.Random, frame: bytes) -> bytes:
    if rng.random() < 0.15:
        return frame[: rng.randint(14, len(frame))]  # test runs need an Ethernet header
    if rng.random() < 0.2:
        return frame + bytes(max(0, 60 - len(frame)))  # Ethernet minimum-size padding
    return frame


def random_frame6(rng: random.Random) -> bytes:
    r = rng.random()
    n_ext = 0 if r < 0.5 else rng.randint(1, 3) if r < 0.9 else rng.randint(4, MAX_IP6_EXT + 2)
    kw = _common(rng, [6, 6, 6, 17, 17, 58, 58, 58, 59, 47, 0, 132])
    kw.update(
        src=_addr6(rng),
        dst=_addr6(rng),
        icmp_type=rng.choice(ICMP6_TYPES) if rng.random() < 0.9 else rng.randrange(256),
        ext=[_ext(rng) for _ in range(n_ext)],
    )
    m = rng.random()
    if m < 0.03:
        kw["version"] = rng.choice([0, 4, 5, 15])
    elif m < 0.08:
        kw["payload_len"] = rng.choice([0, 1, 3, 7, 8, 20, 65535])
    return _cut_or_pad(rng, build_frame6(**kw))


def random_frame(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.03:
        return build_frame(ethertype=rng.choice([ETH_P_ARP, 0x88CC, 0x8847]), payload=rng.randint(0, 60), vlans=[7] * rng.randint(0, 2))
    if kind < 0.5:
        return random_frame6(rng)
    frag = rng.random()
    kw = _common(rng, [6, 6, 6, 17, 17, 17, 1, 1, 47, 0, 132])
    kw.update(
        src=_addr(rng),
        dst=_addr(rng),
        ip_options=bytes(rng.choice([0, 0, 0, 4, 12, 40])),
        more_fragments=frag < 0.1,
        frag_offset=rng.choice([1, 100, 8191]) if 0.1 <= frag < 0.18 else 0,
    )
    m = rng.random()
    if m < 0.03:
        kw["version"] = rng.choice([0, 5, 6, 15])
    elif m < 0.06:
        kw["ihl"] = rng.choice([0, 1, 4, 15])
    elif m < 0.09:
        kw["tot_len"] = rng.choice([0, 19, 20, 21, 23, 24, 28, 65535])
    return _cut_or_pad(rng, build_frame(**kw))


def expected_counters(parsed, decision) -> Counter:
    """Global counter deltas the data plane must produce for one frame
    (events excluded: which event counter moves depends on budgets)."""
    c = Counter({"packets": 1})
    c.update(parsed.counters)
    if parsed.packet is None:
        c["drop" if parsed.drop else "pass"] += 1
        return c
    if decision.action is None:
        if parsed.packet.guarded:
            c["guard_pass"] += 1
        else:
            c["default_pass" if decision.verdict == "PASS" else "default_drop"] += 1
    else:
        c[{Action.ALLOW: "allow", Action.BLOCK: "block", Action.LOG_ONLY: "log_only", Action.RATE_LIMIT: "rate_limit_pass"}[decision.action]] += 1
    c["pass" if decision.verdict == "PASS" else "drop"] += 1
    return c


EVENT_COUNTERS = ("events_sent", "events_suppressed", "events_lost")


def _snapshot(inst) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    """Raw per-CPU contents of the global and per-rule counters (two batch reads)."""
    return dict(inst.map("pepc_counters").items_raw()), dict(inst.map("pepc_stats").items_raw())


def _total(m, raw: bytes, width: int) -> tuple[int, ...]:
    """Sum a raw per-CPU value over CPUs: `width` u64 fields per CPU."""
    step = (m.value_size + 7) & ~7
    fields = [0] * width
    for cpu in range(len(raw) // step):
        for f in range(width):
            fields[f] += int.from_bytes(raw[cpu * step + 8 * f : cpu * step + 8 * f + 8], "little")
    return tuple(fields)


def _changes(m, before: dict[bytes, bytes], after: dict[bytes, bytes], width: int) -> dict[int, tuple[int, ...]]:
    out = {}
    for k, raw in after.items():
        if before.get(k) != raw:
            old = _total(m, before[k], width) if k in before else (0,) * width
            new = _total(m, raw, width)
            out[int.from_bytes(k, "little")] = tuple(b - a for a, b in zip(old, new))
    return out


def _want_verdict(parsed, decision) -> int:
    if decision is None:
        return layout.XDP_DROP if parsed.drop else layout.XDP_PASS
    return layout.XDP_PASS if decision.verdict == "PASS" else layout.XDP_DROP


def test_kernel_agrees_with_simulator_on_random_policies_and_frames():
    from pepc.kernel import dataplane
    from pepc.kernel.testrun import test_run
    from pepc.simulate.evaluate import evaluate

    disagreements: list[str] = []
    seen = Counter()
    with pinned_instance(CAPS) as inst:
        stats_map, counters_map = inst.map("pepc_stats"), inst.map("pepc_counters")
        for seed in range(POLICIES):
            rng = random.Random(seed)
            default = rng.choice([Action.ALLOW, Action.BLOCK])
            _, program = compile_policy(random_rules(rng), CAPS, default=default)
            # alternate generations, so both code paths of the program run
            dataplane.write_generation(inst, seed % 2, program)
            if seed % 4 >= 2:
                # half the policies without the mask prefilter: a stale
                # marker makes the program do every lookup (pepc.compiler.bloom)
                bm = inst.map(f"pepc_bloom_{seed % 2}")
                bm.update(dataplane.u32(bm.max_entries - 1), bytes(8))
            dataplane.set_active(inst, seed % 2)
            counters, stats = _snapshot(inst)
            for n in range(PACKETS):
                frame = random_frame(rng)
                parsed = parse_frame(frame)
                decision = evaluate(program, parsed.packet) if parsed.packet is not None else None
                want_verdict = _want_verdict(parsed, decision)

                got = test_run(inst.prog_fd, frame).retval
                counters2, stats2 = _snapshot(inst)
                moved = _changes(stats_map, stats, stats2, 3)
                dc = {layout.COUNTERS[i]: d[0] for i, d in _changes(counters_map, counters, counters2, 1).items()}
                counters, stats = counters2, stats2

                want_moved = {}
                if decision is not None and decision.slot is not None:
                    want_moved = {decision.slot: (1, len(frame), int(want_verdict == layout.XDP_DROP))}
                want_counters = expected_counters(parsed, decision)
                events = sum(dc.pop(k, 0) for k in EVENT_COUNTERS)
                want_events = int(decision is not None and decision.action is Action.LOG_ONLY)

                if got != want_verdict or moved != want_moved or dc != dict(want_counters) or events != want_events:
                    disagreements.append(
                        f"policy seed {seed} frame {n} {frame.hex()}: parsed {parsed}, simulator {decision}; "
                        f"kernel verdict {got} (want {want_verdict}), rule counters {moved} (want {want_moved}), "
                        f"counters {dc} (want {dict(want_counters)}), events {events} (want {want_events})"
                    )
                seen["evaluated" if parsed.packet else "passed-unparsed"] += 1
                seen[decision.action_name if decision else parsed.counters[-1]] += 1
                seen.update(parsed.counters)
                if parsed.packet is not None and parsed.packet.v6:
                    seen[f"v6-{decision.action_name}"] += 1
                    seen["guarded" if parsed.packet.guarded else "unguarded"] += 1
    assert not disagreements, f"{len(disagreements)} disagreements, first: " + "\n".join(disagreements[:5])
    # the random mix really covered every class of frame and every outcome
    for what in ("ALLOW", "BLOCK", "LOG_ONLY", "RATE_LIMIT", "DEFAULT", "non_ip", "err_ip_truncated",
                 "err_ip_bad_header", "err_l4_truncated", "fragments", "err_vlan_truncated", "ipv4", "ipv6",
                 "err_ip6_truncated", "err_ip6_bad_header", "err_ip6_ext", "guarded", "unguarded",
                 "v6-ALLOW", "v6-BLOCK", "v6-LOG_ONLY", "v6-RATE_LIMIT", "v6-DEFAULT"):
        assert seen[what] >= 10, (what, seen)
    assert seen["evaluated"] + seen["passed-unparsed"] == POLICIES * PACKETS


def test_kernel_parser_agrees_with_frames_on_random_frames():
    """The parser alone, with no rules: every frame's verdict and global
    counters follow from pepc.simulate.frames.parse_frame and the default action (or
    the lockout guard), for both defaults."""
    from pepc.kernel import dataplane
    from pepc.kernel.testrun import test_run

    disagreements: list[str] = []
    seen = Counter()
    with pinned_instance(CAPS) as inst:
        counters_map = inst.map("pepc_counters")
        for gen, default in enumerate((Action.ALLOW, Action.BLOCK)):
            _, program = compile_policy((), CAPS, default=default)
            dataplane.write_generation(inst, gen, program)
            dataplane.set_active(inst, gen)
            rng = random.Random(1000 + gen)
            counters = dict(counters_map.items_raw())
            for n in range(3000):
                frame = random_frame6(rng) if n % 4 else random_frame(rng)
                parsed = parse_frame(frame)
                want = Counter({"packets": 1}) + Counter(parsed.counters)
                if parsed.packet is None:
                    verdict = "DROP" if parsed.drop else "PASS"
                else:
                    verdict = verdict_of(no_match_action(parsed.packet, default), default)
                    want["guard_pass" if parsed.packet.guarded else f"default_{verdict.lower()}"] += 1
                want[verdict.lower()] += 1
                got = test_run(inst.prog_fd, frame).retval
                counters2 = dict(counters_map.items_raw())
                dc = {layout.COUNTERS[i]: d[0] for i, d in _changes(counters_map, counters, counters2, 1).items()}
                counters = counters2
                want_retval = layout.XDP_DROP if verdict == "DROP" else layout.XDP_PASS
                if got != want_retval or dc != dict(want):
                    disagreements.append(f"default {default.name} frame {n} {frame.hex()}: parsed {parsed}; kernel {got} {dc}, want {want_retval} {dict(want)}")
                seen.update(parsed.counters)
                seen[verdict] += 1
                if parsed.packet is not None and parsed.packet.guarded:
                    seen["guarded"] += 1
    assert not disagreements, f"{len(disagreements)} disagreements, first: " + "\n".join(disagreements[:5])
    for what in ("ipv6", "ipv4", "non_ip", "err_ip6_truncated", "err_ip6_bad_header", "err_ip6_ext", "err_l4_truncated", "fragments", "guarded", "DROP", "PASS"):
        assert seen[what] >= 10, (what, seen)
