"""Focused cases for every checker code: the exact rules named, and every
witness replayed through the simulator over the compiled program (a
different implementation of the semantics than the checker's geometry)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from pepc.checker import analyze
from pepc.checker.anomalies import PAIR_CAP
from pepc.compiler import compile_program
from pepc.policy.config import Config
from pepc.policy.diagnostics import Severity
from pepc.compiler.layout import Capacities
from pepc.policy.model import ANY_PORT, Action, Location, Policy, PortRange, Prefix, Protocol, Rule
from pepc.policy.semantics import atom_matches, atoms_of
from pepc.simulate.evaluate import evaluate, parse_packet

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
P = Prefix.parse


def rule(rid: str, action: Action, line: int, **kw) -> Rule:
    for side in ("src", "dst"):
        if isinstance(kw.get(side), str):
            kw[side] = (P(kw[side]),)
    for side in ("sports", "dports"):
        if isinstance(kw.get(side), int):
            kw[side] = (PortRange(kw[side], kw[side]),)
    return Rule(rid, action, Location("p.yaml", line, 5), **kw)


def check(*rules: Rule, default: Action = Action.ALLOW, **cfg) -> dict[str, list]:
    findings = analyze(Policy("p", rules), Config(default_action=default, **cfg), NOW)
    assert findings == sorted(findings, key=lambda f: f.sort_key())
    out: dict[str, list] = {}
    for f in findings:
        out.setdefault(f.code, []).append(f)
    return out


def simulate(rules, witness: str, default: Action = Action.ALLOW):
    """Where the witness goes in the data plane the rules compile to."""
    pkt = parse_packet(witness)
    assert str(pkt) == witness  # the witness is in `pepc simulate` syntax
    program = compile_program(Policy("p", tuple(rules)), Config(default_action=default), NOW)
    return evaluate(program, pkt)


def matches(r: Rule, witness: str) -> bool:
    pkt = parse_packet(witness)
    return any(atom_matches(a, pkt) for a in atoms_of(r))


def related_locs(f) -> set[Location]:
    return {r.loc for r in f.related}


# --- shadowed --------------------------------------------------------------------


def test_union_shadowing_names_both_covering_rules():
    lo = rule("lo_half", Action.BLOCK, 1, priority=10, dst="10.0.0.0/25")
    hi = rule("hi_half", Action.BLOCK, 2, priority=10, dst="10.0.0.128/25")
    whole = rule("whole", Action.ALLOW, 3, priority=5, dst="10.0.0.0/24")
    got = check(lo, hi, whole)
    (f,) = got["shadowed"]
    assert f.rule == "whole" and f.loc == whole.loc and f.severity == Severity.ERROR
    assert related_locs(f) == {lo.loc, hi.loc}
    assert "`hi_half`" in f.message and "`lo_half`" in f.message
    assert matches(whole, f.witness)
    assert simulate([lo, hi, whole], f.witness).rule_id in {"lo_half", "hi_half"}
    # neither /25 alone covers it: no pairwise generalization/correlation on a shadowed rule
    assert set(got) == {"shadowed"}


def test_a_hole_in_the_union_is_not_shadowing():
    lo = rule("lo_half", Action.BLOCK, 1, priority=10, dst="10.0.0.0/25")
    quarter = rule("quarter", Action.BLOCK, 2, priority=10, dst="10.0.0.128/26")
    whole = rule("whole", Action.ALLOW, 3, priority=5, dst="10.0.0.0/24")
    got = check(lo, quarter, whole)
    assert "shadowed" not in got
    # the rule still loses packets to both, by priority: they are exceptions inside it
    (f,) = got["generalization"]
    assert f.rule == "whole" and related_locs(f) == {lo.loc, quarter.loc}
    assert simulate([lo, quarter, whole], f.witness).rule_id in {"lo_half", "quarter"}


def test_shadowing_by_a_rule_of_the_same_action_and_by_specificity():
    wide = rule("wide", Action.BLOCK, 1, dst="10.0.0.0/8", protocol=Protocol.TCP, dports=22)
    narrow = rule("narrow", Action.BLOCK, 2, dst="10.1.0.0/16", protocol=Protocol.TCP, dports=22, priority=0)
    # equal priority: the /16 is more specific and wins its packets, so it is not shadowed;
    # the /8 loses the /16's packets but still wins the rest
    got = check(wide, narrow)
    assert "shadowed" not in got
    (f,) = got["redundant"]  # without `narrow`, `wide` blocks the same packets
    assert f.rule == "narrow" and related_locs(f) == {wide.loc}
    assert simulate([wide, narrow], f.witness).rule_id == "narrow"
    assert simulate([wide], f.witness).rule_id == "wide"


# --- redundant -------------------------------------------------------------------


def test_redundant_when_a_later_rule_does_the_same():
    host = rule("host", Action.ALLOW, 1, priority=10, dst="10.0.0.1/32", protocol=Protocol.TCP, dports=80)
    net = rule("net", Action.ALLOW, 2, dst="10.0.0.0/24", protocol=Protocol.TCP)
    other = rule("other", Action.BLOCK, 3, dst="10.0.0.0/8")
    got = check(host, net, other)
    (f,) = got["redundant"]
    assert f.rule == "host" and f.severity == Severity.WARNING
    assert related_locs(f) == {net.loc} and "default" not in f.message
    assert simulate([host, net, other], f.witness).rule_id == "host"
    after = simulate([net, other], f.witness)
    assert after.rule_id == "net" and after.action == Action.ALLOW


def test_redundant_with_the_default_action():
    block = rule("block_ssh", Action.BLOCK, 1, protocol=Protocol.TCP, dports=22)
    got = check(block, default=Action.BLOCK)
    (f,) = got["redundant"]
    assert f.related == () and "the default action BLOCK" in f.message
    assert simulate([block], f.witness, Action.BLOCK).rule_id == "block_ssh"
    assert simulate([], f.witness, Action.BLOCK).action is None  # the default decides
    assert "redundant" not in check(block, default=Action.ALLOW)


def test_a_different_action_below_makes_a_rule_matter():
    host = rule("host", Action.ALLOW, 1, priority=10, dst="10.0.0.1/32")
    net = rule("net", Action.ALLOW, 2, dst="10.0.0.0/24")
    assert {f.rule for f in check(host, net)["redundant"]} == {"host", "net"}
    hole = rule("hole", Action.BLOCK, 3, priority=5, dst="10.0.0.1/32", protocol=Protocol.UDP)
    got = check(host, net, hole)
    assert {f.rule for f in got["redundant"]} == {"net"}  # without `host`, `hole` blocks UDP
    assert [f.rule for f in got["shadowed"]] == ["hole"]


def test_rate_limits_with_different_parameters_are_different_actions():
    fast = rule("fast", Action.RATE_LIMIT, 1, priority=10, dst="10.0.0.1/32", rate_limit_bps=1000)
    slow = rule("slow", Action.RATE_LIMIT, 2, dst="10.0.0.0/24", rate_limit_bps=2000)
    got = check(fast, slow)
    assert "redundant" not in got
    (f,) = got["generalization"]  # `slow` is the wide rule `fast` is carved out of
    assert f.rule == "slow" and related_locs(f) == {fast.loc}
    same = replace(slow, rate_limit_bps=1000)
    (f,) = check(fast, same)["redundant"]
    assert f.rule == "fast" and related_locs(f) == {same.loc}
    burst = replace(same, burst_bytes=5000)
    assert "redundant" not in check(fast, burst)


# --- conflict / correlation / generalization ------------------------------------


def test_conflict_decided_by_specificity_names_the_winner_and_shows_a_packet():
    net = rule("block_net", Action.BLOCK, 1, dst="10.0.0.0/8")
    svc = rule("allow_svc", Action.ALLOW, 2, dst="10.1.1.1/32", protocol=Protocol.TCP, dports=443)
    got = check(net, svc)
    (f,) = got["conflict"]
    assert f.rule == "block_net" and f.severity == Severity.WARNING
    assert related_locs(f) == {svc.loc}
    assert "specificity 56 > 8" in f.message and f"`{f.witness}`" in f.message
    assert matches(net, f.witness) and matches(svc, f.witness)
    assert simulate([net, svc], f.witness).rule_id == "allow_svc"


def test_conflict_decided_by_rule_id():
    b = rule("b_block", Action.BLOCK, 1, src="10.0.0.0/8")
    a = rule("a_allow", Action.ALLOW, 2, dst="10.0.0.0/8")
    (f,) = check(b, a)["conflict"]
    assert f.rule == "b_block" and related_locs(f) == {a.loc}
    assert "id `a_allow` < `b_block`" in f.message
    assert simulate([b, a], f.witness).rule_id == "a_allow" and matches(b, f.witness)


def test_generalization_when_the_lower_priority_rule_contains_the_other():
    deny = rule("deny_net", Action.BLOCK, 1, dst="10.0.0.0/8")
    ssh = rule("ssh", Action.ALLOW, 2, priority=10, dst="10.0.0.5/32", protocol=Protocol.TCP, dports=22)
    got = check(deny, ssh)
    (f,) = got["generalization"]
    assert f.rule == "deny_net" and f.severity == Severity.INFO and related_locs(f) == {ssh.loc}
    assert simulate([deny, ssh], f.witness).rule_id == "ssh" and matches(deny, f.witness)
    assert set(got) == {"generalization"}


def test_correlation_for_a_partial_overlap():
    ban = rule("ban", Action.BLOCK, 1, priority=10, src="192.0.2.0/24")
    ssh = rule("ssh", Action.ALLOW, 2, dst="10.0.0.5/32", protocol=Protocol.TCP, dports=22)
    (f,) = check(ban, ssh)["correlation"]
    assert f.rule == "ssh" and related_locs(f) == {ban.loc}
    assert parse_packet(f.witness).src >> 8 == 0xC00002
    assert simulate([ban, ssh], f.witness).rule_id == "ban" and matches(ssh, f.witness)


def test_a_third_rule_that_takes_the_whole_overlap_hides_the_pair():
    top = rule("top", Action.LOG_ONLY, 1, priority=100, dst="10.0.0.0/24")
    block = rule("block", Action.BLOCK, 2, priority=10, dst="10.0.0.0/24", protocol=Protocol.TCP)
    allow = rule("allow", Action.ALLOW, 3, dst="10.0.0.0/16", protocol=Protocol.TCP)
    got = check(top, block, allow)
    # `block` never wins (`top` takes all of it), so `allow` loses nothing to it
    assert [f.rule for f in got["shadowed"]] == ["block"]
    assert all("`block`" not in f.message for code in ("correlation", "generalization") for f in got.get(code, []))


def test_many_partners_are_capped_and_say_so():
    wide = rule("wide", Action.BLOCK, 1, dst="10.0.0.0/8")
    hosts = [
        rule(f"h{i:02d}", Action.ALLOW, 10 + i, priority=5, dst=f"10.0.0.{i + 1}/32") for i in range(PAIR_CAP + 3)
    ]
    (f,) = check(wide, *hosts)["generalization"]
    assert len(f.related) == PAIR_CAP and "there may be more" in f.message



def test_a_capped_higher_tier_leaves_every_equal_priority_partner_named():
    # the tiers are capped apart: a rule that loses to many higher-priority
    # rules still names every rule it loses to by the tie-break
    wide = rule("wide", Action.BLOCK, 1, dst="10.0.0.0/8")
    hosts = [
        rule(f"h{i:02d}", Action.ALLOW, 10 + i, priority=5, dst=f"10.0.{i}.0/24") for i in range(PAIR_CAP + 3)
    ]
    ties = [rule(f"t{i}", Action.ALLOW, 30 + i, dst=f"10.1.0.{i + 1}/32") for i in range(3)]
    got = check(wide, *hosts, *ties)
    (gen,) = got["generalization"]
    assert len(gen.related) == PAIR_CAP and "there may be more" in gen.message
    (conflict,) = got["conflict"]
    assert {r.rule for r in conflict.related} == {"t0", "t1", "t2"}


# --- protocol classes -----------------------------------------------------------


def test_port_constraints_leave_fragments_and_port_zero_to_portless_rules():
    ported = rule("ported", Action.ALLOW, 1, priority=10, protocol=Protocol.TCP, dports=(PortRange(1, 0xFFFF),))
    portless = rule("portless", Action.BLOCK, 2, protocol=Protocol.TCP)
    got = check(ported, portless, default=Action.BLOCK)
    assert "shadowed" not in got
    (f,) = got["redundant"]  # what it still wins (fragments, port 0) the default blocks too
    assert f.rule == "portless"
    pkt = parse_packet(f.witness)
    assert pkt.fragment or pkt.dport == 0
    assert simulate([ported, portless], f.witness, Action.BLOCK).rule_id == "portless"


def test_icmp_and_other_protocols_escape_port_rules():
    web = rule("web", Action.ALLOW, 1, priority=10, dports=80)  # protocol ANY, port 80: TCP/UDP only
    rest = rule("rest", Action.BLOCK, 2, dst="10.0.0.0/8")
    got = check(web, rest)
    assert "shadowed" not in got
    (f,) = got["correlation"]
    assert f.rule == "rest" and related_locs(f) == {web.loc}
    covered = rule("covered", Action.BLOCK, 3, priority=20, protocol=Protocol.ICMP)
    # ICMP is taken by `covered`, but GRE and fragments still reach `rest`
    assert "shadowed" not in check(web, rest, covered)


# --- never-matches / unreachable-default -------------------------------------------


def test_never_matches_points_at_the_port_field():
    port_loc = Location("p.yaml", 7, 22)
    dead = replace(
        rule("dead", Action.BLOCK, 6, protocol=Protocol.ICMP, dports=80), field_locs=(("dst.port", port_loc),)
    )
    got = check(dead)
    (f,) = got["never-matches"]
    assert f.loc == port_loc and f.rule == "dead" and "can never match" in f.message
    assert set(got) == {"never-matches"}
    partial = rule("partial", Action.BLOCK, 8, protocol=Protocol.ICMP, dports=(ANY_PORT, PortRange(80, 80)))
    (f,) = check(partial)["never-matches"]
    assert f.message.startswith("part of rule `partial`")


def test_unreachable_default():
    catch_all = rule("catch_all", Action.BLOCK, 1)
    (f,) = check(catch_all)["unreachable-default"]
    assert f.rule == "catch_all" and f.loc == catch_all.loc and f.severity == Severity.INFO
    halves = [rule("low", Action.BLOCK, 1, src="0.0.0.0/1"), rule("high", Action.BLOCK, 2, src="128.0.0.0/1")]
    # IPv4's halves leave every IPv6 packet to the default
    assert "unreachable-default" not in check(*halves)
    halves6 = [rule("low6", Action.BLOCK, 3, src="::/1"), rule("high6", Action.BLOCK, 4, src="8000::/1")]
    (f,) = check(*halves, *halves6)["unreachable-default"]
    assert f.rule is None and f.loc == Location("p")
    # a catch-all of one family is no catch-all
    assert "unreachable-default" not in check(rule("v4", Action.BLOCK, 1, src="0.0.0.0/0", dst="0.0.0.0/0"))
    (f,) = check(rule("v4", Action.BLOCK, 1, src="0.0.0.0/0"), rule("v6", Action.BLOCK, 2, src="::/0"))["unreachable-default"]
    assert f.rule is None
    # the guarded ICMPv6 packets pass unmatched, but never by the default:
    # a catch-all leaves no packet to the default all the same
    (f,) = check(catch_all, default=Action.BLOCK)["unreachable-default"]
    assert f.rule == "catch_all"
    # TCP everywhere still leaves UDP, ICMP and everything else to the default
    assert "unreachable-default" not in check(rule("tcp", Action.BLOCK, 1, protocol=Protocol.TCP))


# --- both families ----------------------------------------------------------------


def test_ipv6_shadowing_has_an_ipv6_witness():
    net = rule("net6", Action.BLOCK, 1, priority=10, src="2001:db8::/32")
    host = rule("host6", Action.ALLOW, 2, src="2001:db8:1::1/128", protocol=Protocol.TCP, dports=22)
    (f,) = check(net, host)["shadowed"]
    assert f.rule == "host6" and related_locs(f) == {net.loc}
    assert f.witness.startswith("tcp [2001:db8:1::1]:") and f.witness.endswith(":22")
    assert matches(host, f.witness) and parse_packet(f.witness).v6
    assert simulate([net, host], f.witness).rule_id == "net6"


def test_rules_of_different_families_never_overlap():
    v4 = rule("v4", Action.BLOCK, 1, priority=10, src="0.0.0.0/0")
    v6 = rule("v6", Action.ALLOW, 2, priority=10, src="::/0")
    both = rule("both", Action.LOG_ONLY, 3, priority=5)  # any/any: both families
    got = check(v4, v6, both)
    # equal priorities and different actions, but no packet is of both families: no conflict
    assert set(got) == {"shadowed", "unreachable-default"}
    assert got["unreachable-default"][0].rule == "both"
    # the two /0s together, neither alone, leave nothing to the default
    assert [f.rule for f in check(v4, v6)["unreachable-default"]] == [None]
    (f,) = got["shadowed"]
    assert f.rule == "both" and related_locs(f) == {v4.loc, v6.loc}
    # an IPv4 catch-all takes only the IPv4 half of an any/any rule
    (g,) = check(v4, both)["generalization"]
    assert g.rule == "both" and related_locs(g) == {v4.loc} and not parse_packet(g.witness).v6


def test_an_icmpv6_block_under_default_block_matters_for_the_guarded_types():
    """Without the rule, a neighbour solicitation would pass (the lockout
    guard): the rule decides those packets, so it is not redundant."""
    nd = rule("no_icmpv6", Action.BLOCK, 1, protocol=Protocol.ICMPV6)
    assert "redundant" not in check(nd, default=Action.BLOCK)
    # an ICMPV6 ALLOW under default ALLOW: the default takes the unguarded
    # types, the guard the guarded ones
    ok = rule("ok_icmpv6", Action.ALLOW, 1, protocol=Protocol.ICMPV6)
    (f,) = check(ok, default=Action.ALLOW)["redundant"]
    assert "the default action ALLOW" in f.message and "the lockout guard" in f.message


def test_an_icmpv6_allow_under_default_block():
    ping = rule("ping6", Action.ALLOW, 1, protocol=Protocol.ICMPV6)
    assert "redundant" not in check(ping, default=Action.BLOCK)  # echo requests would be dropped without it
    catch = rule("catch", Action.BLOCK, 2)
    assert {f.rule for f in check(ping, catch, default=Action.BLOCK)["redundant"]} == {"catch"}
    wider = rule("wider", Action.ALLOW, 3, protocol=Protocol.ICMPV6, src="2001:db8::/32")
    (f,) = check(wider, ping, default=Action.BLOCK)["redundant"]
    assert f.rule == "wider" and related_locs(f) == {ping.loc} and "lockout guard" not in f.message


def test_the_lockout_guard_takes_over_a_redundant_rules_guarded_packets():
    # `nd` matches ICMPv6 to ff02::/16; without it the unguarded types go to
    # `multicast` (ALLOW; a rule of protocol ANY, which the guarded types
    # escape) and the guarded ones to the lockout guard, which passes them
    nd = rule("nd", Action.ALLOW, 1, protocol=Protocol.ICMPV6, dst="ff02::/16")
    multicast = rule("multicast", Action.ALLOW, 2, dst="ff02::/16")
    got = check(nd, multicast, default=Action.BLOCK)
    (f,) = got["redundant"]
    assert f.rule == "nd" and related_locs(f) == {multicast.loc}
    assert "the lockout guard" in f.message and "the default action" not in f.message
    assert matches(nd, f.witness) and parse_packet(f.witness).v6


def test_never_matches_icmpv6_with_ports():
    r = rule("v6ports", Action.ALLOW, 1, protocol=Protocol.ICMPV6, dports=80)
    (f,) = check(r)["never-matches"]
    assert "protocol ICMPV6" in f.message and f.loc == r.loc_of("dst.port")


# --- lifecycle, suppressions, severities --------------------------------------------


def test_only_live_rules_take_part():
    cover = rule("cover", Action.BLOCK, 1, priority=10, dst="10.0.0.0/24")
    inner = rule("inner", Action.ALLOW, 2, dst="10.0.0.0/25")
    assert "shadowed" in check(cover, inner)
    for dead in (replace(cover, enabled=False), replace(cover, expires_at=NOW - timedelta(seconds=1))):
        got = check(dead, inner)
        assert "shadowed" not in got
        assert "expired" not in got and "disabled" not in got  # the loader's lifecycle code reports those


def test_suppress_silences_codes_on_the_rule_and_unused_entries_are_reported():
    cover = rule("cover", Action.BLOCK, 1, priority=10, dst="10.0.0.0/24")
    inner = rule("inner", Action.ALLOW, 2, dst="10.0.0.0/25", suppress=("shadowed",))
    assert check(cover, inner) == {}
    suppress_loc = Location("p.yaml", 9, 15)
    fine = replace(
        rule("fine", Action.BLOCK, 3, dst="192.0.2.1/32", suppress=("redundant", "expired")),
        field_locs=(("suppress", suppress_loc),),
    )
    got = check(cover, inner, fine)
    (f,) = got["unused-suppression"]
    assert f.rule == "fine" and f.loc == suppress_loc and "suppress: [redundant]" in f.message
    quiet = replace(fine, suppress=("redundant", "unused-suppression"))
    assert check(cover, inner, quiet) == {}


def test_allow_overlap_needs_every_covering_rule():
    lo = rule("lo_half", Action.BLOCK, 1, priority=10, dst="10.0.0.0/25")
    hi = rule("hi_half", Action.BLOCK, 2, priority=10, dst="10.0.0.128/25")
    whole = rule("whole", Action.ALLOW, 3, priority=5, dst="10.0.0.0/24", allow_overlap=("lo_half",))
    got = check(lo, hi, whole)
    assert [f.rule for f in got["shadowed"]] == ["whole"]
    (unused,) = got["unused-suppression"]
    assert "allow_overlap: [lo_half]" in unused.message
    # either side may acknowledge: the other half lists `whole`
    hi_ack = replace(hi, allow_overlap=("whole",))
    assert check(lo, hi_ack, whole) == {}


def test_allow_overlap_silences_a_pair_from_either_side():
    net = rule("block_net", Action.BLOCK, 1, dst="10.0.0.0/8", allow_overlap=("allow_svc",))
    svc = rule("allow_svc", Action.ALLOW, 2, dst="10.1.1.1/32", protocol=Protocol.TCP, dports=443)
    assert check(net, svc) == {}
    assert check(replace(net, allow_overlap=()), replace(svc, allow_overlap=("block_net",))) == {}
    ghost = replace(net, allow_overlap=("allow_svc", "no_such_rule"))
    (f,) = check(ghost, svc)["unused-suppression"]
    assert "no_such_rule" in f.message and "names no live rule" in f.message
    # a partner left out of a multi-partner finding: the finding stays, naming the rest
    svc2 = rule("allow_svc2", Action.ALLOW, 3, dst="10.1.1.2/32", protocol=Protocol.TCP, dports=443)
    (f,) = check(net, svc, svc2)["conflict"]
    assert related_locs(f) == {svc2.loc}


def test_severity_overrides_from_config():
    net = rule("block_net", Action.BLOCK, 1, dst="10.0.0.0/8")
    svc = rule("allow_svc", Action.ALLOW, 2, dst="10.1.1.1/32")
    (f,) = check(net, svc, severity=(("conflict", Severity.ERROR),))["conflict"]
    assert f.severity == Severity.ERROR


def test_capacity_comes_from_the_compiler():
    from pepc.compiler import capacity_findings

    rules = (rule("a", Action.BLOCK, 1, dst="10.0.0.1/32"), rule("b", Action.BLOCK, 2, dst="10.0.0.2/32"))
    config = Config(capacities=Capacities(max_rules=1))
    findings = analyze(Policy("p", rules), config, NOW, capacity=capacity_findings)
    assert [f.code for f in findings if f.code == "capacity"] == ["capacity"]
    assert not [f for f in analyze(Policy("p", rules), Config(), NOW, capacity=capacity_findings) if f.code == "capacity"]
    # without the compiler's check, `capacity` is neither reported nor judged
    assert not [f for f in analyze(Policy("p", rules), config, NOW) if f.code == "capacity"]


# --- determinism --------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_findings_do_not_depend_on_rule_order(seed):
    rng = random.Random(seed)
    rules = [_random_rule(rng, i) for i in range(40)]
    first = analyze(Policy("p", tuple(rules)), Config(), NOW)
    rng.shuffle(rules)
    again = analyze(Policy("p", tuple(rules)), Config(), NOW)
    assert first == again
    for f in first:
        if f.witness:
            assert str(parse_packet(f.witness)) == f.witness


def _random_rule(rng: random.Random, i: int) -> Rule:
    action = rng.choice(list(Action))
    plen = rng.choice((22, 24, 32))
    addr = (0x0A000000 | rng.randrange(1024) << 2) & ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF)
    dports = (rng.choice((PortRange(80, 80), PortRange(1000, 2000))),) if rng.random() < 0.5 else (ANY_PORT,)
    return rule(
        f"r{i:02d}", action, i + 1,
        priority=rng.choice((0, 0, 10)),
        protocol=rng.choice((Protocol.ANY, Protocol.TCP, Protocol.UDP)),
        dst=(Prefix(addr, plen),),
        dports=dports,
        rate_limit_bps=1000 if action == Action.RATE_LIMIT else 0,
    )


# --- at scale: related rule ids, crowded shadowed rules ------------------------------


def test_related_entries_name_their_rule_by_id():
    lo = rule("lo_half", Action.BLOCK, 1, priority=10, dst="10.0.0.0/25")
    hi = rule("hi_half", Action.BLOCK, 2, priority=10, dst="10.0.0.128/25")
    whole = rule("whole", Action.ALLOW, 3, priority=5, dst="10.0.0.0/24")
    part = rule("part", Action.ALLOW, 4, priority=50, dst="10.0.0.0/30")
    under = rule("under", Action.ALLOW, 5, priority=1, dst="10.0.0.0/8")
    got = check(lo, hi, whole, part, under, default=Action.BLOCK)
    for f in [f for fs in got.values() for f in fs]:
        assert f.related, f
        by_loc = {r.loc: r.id for r in (lo, hi, whole, part, under)}
        for rel in f.related:
            assert rel.rule == by_loc[rel.loc] and f"`{rel.rule}`" in rel.message


def test_a_wide_rule_under_a_block_list_and_a_cover_is_shadowed_without_walking_the_list():
    """300 /32 blocks and a wider port range above a wide range: shadowed,
    decided from the covering rule; too many rules around it to name every
    winner, so those of a few probes are named and the message says so."""
    blocks = [rule(f"b{i:03d}", Action.BLOCK, 10 + i, priority=200, src=f"203.0.{i // 250}.{i % 250 + 1}/32") for i in range(300)]
    cover = rule("cover", Action.ALLOW, 400, priority=50, protocol=Protocol.TCP, dports=(PortRange(1024, 65535),))
    wide = rule("wide", Action.LOG_ONLY, 401, priority=10, protocol=Protocol.TCP, dports=(PortRange(32768, 60999),))
    rules = [*blocks, cover, wide]
    got = check(*rules, default=Action.BLOCK)
    (f,) = [f for f in got["shadowed"] if f.rule == "wide"]
    assert "cut short" in f.message and "`cover`" in f.message
    named = {r.rule for r in f.related}
    assert "cover" in named and named <= {r.id for r in rules} - {"wide"}
    assert matches(wide, f.witness) and simulate(rules, f.witness, Action.BLOCK).rule_id in named
