"""pepc.simulate.frames: frames built from parameters parse back to what those
parameters say, checked against an oracle that reasons from the parameters
(header sizes and offsets), never from the bytes."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from pepc.simulate.frames import (
    IPPROTO_ICMPV6,
    MAX_IP6_EXT,
    NH_AH,
    NH_DSTOPTS,
    NH_FRAGMENT,
    NH_HOPOPTS,
    NH_NONE,
    NH_ROUTING,
    Ext,
    build_frame6,
    ETH_P_8021AD,
    ETH_P_8021Q,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    build_frame,
    ip_checksum,
    parse_frame,
)
from pepc.policy.semantics import GUARDED_ICMPV6_TYPES, Packet


def ip(a: str) -> int:
    return int(ipaddress.IPv4Address(a))


def test_plain_tcp_udp_icmp():
    f = build_frame("10.0.0.1", "192.168.1.100", IPPROTO_TCP, 40000, 443)
    assert len(f) == 14 + 20 + 20
    assert parse_frame(f).packet == Packet(ip("10.0.0.1"), ip("192.168.1.100"), 6, 40000, 443, True, False, len(f))
    assert parse_frame(f).counters == ("ipv4",)
    u = build_frame("10.0.0.1", "10.0.0.2", IPPROTO_UDP, 53, 5353, payload=100)
    assert parse_frame(u).packet == Packet(ip("10.0.0.1"), ip("10.0.0.2"), 17, 53, 5353, True, False, 14 + 20 + 8 + 100)
    i = build_frame("10.0.0.1", "10.0.0.2", IPPROTO_ICMP)
    assert parse_frame(i).packet == Packet(ip("10.0.0.1"), ip("10.0.0.2"), 1, 0, 0, False, False, len(i))
    gre = build_frame("10.0.0.1", "10.0.0.2", 47, payload=8)
    assert parse_frame(gre).packet.has_ports is False


def test_ip_header_checksum_is_valid():
    f = build_frame(ip_options=b"\x01\x01\x01\x00")
    assert ip_checksum(f[14 : 14 + 24]) == 0


def test_vlan_tags():
    one = build_frame(vlans=[100])
    assert one[12:14] == b"\x81\x00"
    assert parse_frame(one).packet.dport == 80
    two = build_frame(vlans=[100, 200])
    assert two[12:14] == b"\x88\xa8" and two[16:18] == b"\x81\x00"
    assert parse_frame(two).packet.dport == 80
    # any order of the two TPIDs is accepted
    assert parse_frame(build_frame(vlans=[1, 2], vlan_tpids=[ETH_P_8021Q, ETH_P_8021Q])).packet is not None
    # a third tag is not looked into
    three = build_frame(vlans=[1, 2, 3], vlan_tpids=[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q])
    assert parse_frame(three).packet is None and parse_frame(three).counters == ("non_ip",)


def test_non_ip_passes_uncounted_by_rules():
    for et in (ETH_P_ARP, 0x88CC, 0x8847):
        p = parse_frame(build_frame(ethertype=et, payload=46))
        assert p.packet is None and p.counters == ("non_ip",) and not p.drop
    p = parse_frame(build_frame(vlans=[5], ethertype=ETH_P_ARP, payload=40))
    assert p.counters == ("non_ip",)


def test_fragments():
    first = parse_frame(build_frame(proto=IPPROTO_UDP, sport=1, dport=2, more_fragments=True, payload=64))
    assert first.packet.has_ports and first.packet.dport == 2 and first.packet.fragment
    assert first.counters == ("ipv4", "fragments")
    later = parse_frame(build_frame(proto=IPPROTO_UDP, frag_offset=9, payload=64))
    assert not later.packet.has_ports and later.packet.sport == later.packet.dport == 0 and later.packet.fragment
    assert later.counters == ("ipv4", "fragments")
    last_mf = parse_frame(build_frame(proto=IPPROTO_TCP, frag_offset=1, more_fragments=True, payload=8))
    assert not last_mf.packet.has_ports


def test_tiny_first_fragment_keeps_ports_if_it_holds_them():
    # first fragment holding only 8 bytes of TCP: ports are there, rules see them
    f = build_frame(proto=IPPROTO_TCP, sport=7, dport=22, more_fragments=True, tot_len=28)
    p = parse_frame(f[: 14 + 28])
    assert p.packet.has_ports and p.packet.dport == 22
    # 2 bytes of L4: no ports, counted
    p = parse_frame(build_frame(proto=IPPROTO_TCP, more_fragments=True, tot_len=22)[: 14 + 22])
    assert not p.packet.has_ports and p.counters == ("ipv4", "fragments", "err_l4_truncated")


def test_ports_beyond_total_length_are_padding():
    # a TCP packet whose IP total length ends before its ports; the frame
    # carries (padding) bytes there, which are not ports
    f = build_frame(proto=IPPROTO_TCP, tot_len=21, pad_to=60)
    p = parse_frame(f)
    assert p.packet is not None and not p.packet.has_ports and p.counters == ("ipv4", "err_l4_truncated")
    assert p.packet.length == len(f)


def test_malformed_ip_headers():
    assert parse_frame(build_frame(version=6)).counters == ("ipv4", "err_ip_bad_header")
    assert parse_frame(build_frame(ihl=4)).counters == ("ipv4", "err_ip_bad_header")
    assert parse_frame(build_frame(tot_len=19)).counters == ("ipv4", "err_ip_bad_header")
    assert parse_frame(build_frame(ip_options=bytes(8), tot_len=24)).counters == ("ipv4", "err_ip_bad_header")
    # IHL claims options the frame does not have
    assert parse_frame(build_frame(ihl=15, proto=IPPROTO_ICMP)).counters == ("ipv4", "err_ip_truncated")
    for p in (parse_frame(b""), parse_frame(bytes(13))):
        assert p.packet is None and p.counters == ("err_eth_truncated",)


# --------------------------------------------------------------- property


@st.composite
def frame_params(draw):
    proto = draw(st.sampled_from([IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, 47, 0, 132]))
    return dict(
        src=draw(st.integers(0, 2**32 - 1)),
        dst=draw(st.integers(0, 2**32 - 1)),
        proto=proto,
        sport=draw(st.integers(0, 65535)),
        dport=draw(st.integers(0, 65535)),
        vlans=draw(st.lists(st.integers(0, 4095), max_size=2)),
        ip_options=bytes(draw(st.sampled_from([0, 4, 8, 40]))),
        more_fragments=draw(st.booleans()),
        frag_offset=draw(st.sampled_from([0, 0, 0, 1, 185, 8191])),
        payload=draw(st.integers(0, 64)),
    )


@given(frame_params(), st.data())
def test_parse_of_truncated_frames_matches_an_offset_oracle(params, data):
    full = build_frame(**params)
    n = data.draw(st.integers(0, len(full)))
    got = parse_frame(full[:n])

    # The oracle knows where every header starts from the parameters alone.
    l3 = 14 + 4 * len(params["vlans"])
    hlen = 20 + len(params["ip_options"])
    l4 = l3 + hlen
    fragment = params["more_fragments"] or params["frag_offset"] != 0
    port_proto = params["proto"] in (IPPROTO_TCP, IPPROTO_UDP) and params["frag_offset"] == 0
    if n < 14:
        assert got.counters == ("err_eth_truncated",)
    elif n < l3:
        assert got.counters == ("err_vlan_truncated",)
    elif n < l4:
        assert got.counters == ("ipv4", "err_ip_truncated")
    else:
        pkt = got.packet
        assert pkt is not None
        assert (pkt.src, pkt.dst, pkt.proto, pkt.fragment, pkt.length) == (params["src"], params["dst"], params["proto"], fragment, n)
        expect = ("ipv4", "fragments") if fragment else ("ipv4",)
        if port_proto and n >= l4 + 4:
            assert pkt.has_ports and (pkt.sport, pkt.dport) == (params["sport"], params["dport"])
        else:
            assert not pkt.has_ports and pkt.sport == pkt.dport == 0
            if port_proto:
                expect += ("err_l4_truncated",)
        assert got.counters == expect
    if got.packet is None:
        assert len(got.counters) == (1 if n < l3 else 2) and not got.drop


# ------------------------------------------------------------------ IPv6


def ip6(a: str) -> int:
    return int(ipaddress.IPv6Address(a))


def test_plain_ipv6_tcp_udp_icmpv6():
    f = build_frame6("2001:db8::1", "2001:db8::10", IPPROTO_TCP, 40000, 443)
    assert len(f) == 14 + 40 + 20 and f[12:14] == b"\x86\xdd"
    got = parse_frame(f)
    assert got.packet == Packet(ip6("2001:db8::1"), ip6("2001:db8::10"), 6, 40000, 443, True, False, len(f), v6=True)
    assert got.counters == ("ipv6",)
    assert str(got.packet) == "tcp [2001:db8::1]:40000 > [2001:db8::10]:443 len=74"
    u = parse_frame(build_frame6(proto=IPPROTO_UDP, sport=53, dport=5353, vlans=[3, 4]))
    assert (u.packet.proto, u.packet.sport, u.packet.dport, u.packet.v6) == (17, 53, 5353, True)
    echo = parse_frame(build_frame6(proto=IPPROTO_ICMPV6, icmp_type=128)).packet
    assert (echo.proto, echo.icmp_type, echo.has_ports, echo.guarded) == (58, 128, False, False)
    nothing = parse_frame(build_frame6(proto=NH_NONE))
    assert nothing.packet.proto == 59 and nothing.counters == ("ipv6",)


def test_icmpv6_types_the_guard_protects():
    for t in range(256):
        p = parse_frame(build_frame6(proto=IPPROTO_ICMPV6, icmp_type=t)).packet
        assert p.icmp_type == t and p.guarded == (t in GUARDED_ICMPV6_TYPES)
    # the type byte past the payload length is padding: no type, not guarded
    f = build_frame6(proto=IPPROTO_ICMPV6, icmp_type=135, payload_len=0)
    got = parse_frame(f)
    assert got.packet.icmp_type is None and not got.packet.guarded and got.counters == ("ipv6", "err_l4_truncated")


def test_extension_headers_are_walked_to_the_upper_layer():
    chain = [Ext(NH_HOPOPTS, 16), Ext(NH_DSTOPTS), Ext(NH_ROUTING, 24), Ext(NH_FRAGMENT), Ext(NH_AH, 12), Ext(NH_DSTOPTS)]
    got = parse_frame(build_frame6(ext=chain, dport=22))
    assert got.packet.dport == 22 and got.packet.proto == 6 and not got.packet.fragment and got.counters == ("ipv6",)
    got = parse_frame(build_frame6(ext=[Ext(NH_HOPOPTS), Ext(NH_DSTOPTS)], proto=IPPROTO_ICMPV6, icmp_type=136))
    assert got.packet.guarded


def test_long_or_truncated_chains_are_dropped():
    seven = [Ext(NH_DSTOPTS)] * (MAX_IP6_EXT + 1)
    got = parse_frame(build_frame6(ext=seven, dport=22))
    assert got.packet is None and got.drop and got.counters == ("ipv6", "err_ip6_ext")
    # a header claiming more bytes than the payload holds
    got = parse_frame(build_frame6(ext=[Ext(NH_HOPOPTS, length_byte=10)], dport=22))
    assert got.drop and got.counters == ("ipv6", "err_ip6_ext")
    # ... or than the frame holds
    f = build_frame6(ext=[Ext(NH_ROUTING, 64)], dport=22)
    assert parse_frame(f[:-30]).drop
    # a chain ending exactly at the upper layer, whose ports are cut off, is evaluated without them
    got = parse_frame(build_frame6(ext=[Ext(NH_ROUTING, 64)], dport=22, truncate=14 + 40 + 64 + 2))
    assert got.packet is not None and not got.packet.has_ports and got.counters == ("ipv6", "err_l4_truncated")


def test_ipv6_fragments():
    first = parse_frame(build_frame6(ext=[Ext(NH_FRAGMENT, more=True)], proto=IPPROTO_UDP, dport=53, payload=100))
    assert first.packet.fragment and first.packet.has_ports and first.packet.dport == 53
    assert first.counters == ("ipv6", "fragments")
    later = parse_frame(build_frame6(ext=[Ext(NH_HOPOPTS), Ext(NH_FRAGMENT, offset=100)], proto=IPPROTO_TCP, payload=64))
    assert later.packet.fragment and not later.packet.has_ports and later.packet.proto == 6
    assert later.counters == ("ipv6", "fragments")
    # data that looks like headers after a non-first fragment is not walked
    fake = parse_frame(build_frame6(ext=[Ext(NH_FRAGMENT, offset=8)], proto=NH_DSTOPTS, payload=bytes([6, 255]) + bytes(30)))
    assert fake.packet.proto == NH_DSTOPTS and fake.counters == ("ipv6", "fragments")
    # a non-first ICMPv6 fragment carries no type and is not guarded
    icmp = parse_frame(build_frame6(ext=[Ext(NH_FRAGMENT, offset=1)], proto=IPPROTO_ICMPV6, icmp_type=135, payload=64)).packet
    assert icmp.icmp_type is None and not icmp.guarded
    # an atomic fragment (offset 0, no M) is no fragment
    atomic = parse_frame(build_frame6(ext=[Ext(NH_FRAGMENT)], dport=80))
    assert not atomic.packet.fragment and atomic.packet.has_ports and atomic.counters == ("ipv6",)


def test_malformed_ipv6_headers_pass():
    assert parse_frame(build_frame6(version=4)).counters == ("ipv6", "err_ip6_bad_header")
    for n in (14, 30, 14 + 39):
        got = parse_frame(build_frame6()[:n])
        assert got.packet is None and not got.drop and got.counters == ("ipv6", "err_ip6_truncated")
    # bytes past the payload length are padding: ports there are not ports
    got = parse_frame(build_frame6(payload_len=3, pad_to=80))
    assert not got.packet.has_ports and got.counters == ("ipv6", "err_l4_truncated")


EXT_KINDS = [NH_HOPOPTS, NH_ROUTING, NH_DSTOPTS, NH_AH, NH_FRAGMENT]


@st.composite
def ext_header(draw):
    kind = draw(st.sampled_from(EXT_KINDS))
    if kind == NH_FRAGMENT:
        return Ext(kind, offset=draw(st.sampled_from([0, 0, 1, 8191])), more=draw(st.booleans()))
    unit = 4 if kind == NH_AH else 8
    return Ext(kind, size=unit * draw(st.integers(8 // unit, 4)))


@st.composite
def frame6_params(draw):
    return dict(
        src=draw(st.integers(0, 2**128 - 1)),
        dst=draw(st.integers(0, 2**128 - 1)),
        proto=draw(st.sampled_from([IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6, NH_NONE, 132])),
        sport=draw(st.integers(0, 65535)),
        dport=draw(st.integers(0, 65535)),
        icmp_type=draw(st.integers(0, 255)),
        vlans=draw(st.lists(st.integers(0, 4095), max_size=2)),
        ext=draw(st.lists(ext_header(), max_size=MAX_IP6_EXT + 2)),
        payload=draw(st.integers(0, 40)),
    )


@given(frame6_params(), st.data())
def test_parse_of_ipv6_frames_matches_an_offset_oracle(params, data):
    full = build_frame6(**params)
    n = data.draw(st.integers(0, len(full)))
    l3 = 14 + 4 * len(params["vlans"])
    real_plen = len(full) - l3 - 40
    plen = data.draw(st.sampled_from([real_plen, real_plen, max(0, real_plen - 5), 0]))
    frame = build_frame6(**params, payload_len=plen)[:n]
    got = parse_frame(frame)

    # The oracle walks the headers it asked for, by their sizes alone.
    if n < 14:
        assert got.counters == ("err_eth_truncated",)
        return
    if n < l3:
        assert got.counters == ("err_vlan_truncated",)
        return
    if n < l3 + 40:
        assert got.counters == ("ipv6", "err_ip6_truncated") and not got.drop
        return
    limit = min(n - l3, 40 + plen)
    at, fragment, later = 40, False, False
    kinds = [e.kind for e in params["ext"]] + [params["proto"]]
    proto = params["proto"]
    for i, e in enumerate(params["ext"]):
        size = 8 if e.kind == NH_FRAGMENT else e.size
        if i == MAX_IP6_EXT or at + size > limit:
            assert got.drop and got.packet is None and got.counters == ("ipv6", "err_ip6_ext")
            return
        at += size
        if e.kind == NH_FRAGMENT:
            fragment = fragment or bool(e.offset or e.more)
            if e.offset:
                # the fragment header names the first header of the fragmentable part
                later, proto = True, kinds[i + 1]
                break
    pkt = got.packet
    assert not got.drop and pkt is not None
    assert (pkt.src, pkt.dst, pkt.proto, pkt.v6, pkt.fragment, pkt.length) == (params["src"], params["dst"], proto, True, fragment, n)
    expect = ("ipv6", "fragments") if fragment else ("ipv6",)
    if not later and proto in (IPPROTO_TCP, IPPROTO_UDP):
        if at + 4 <= limit:
            assert pkt.has_ports and (pkt.sport, pkt.dport) == (params["sport"], params["dport"])
        else:
            expect += ("err_l4_truncated",)
    elif not later and proto == IPPROTO_ICMPV6:
        if at + 1 <= limit:
            assert pkt.icmp_type == params["icmp_type"]
        else:
            expect += ("err_l4_truncated",)
    if later or proto not in (IPPROTO_TCP, IPPROTO_UDP) or "err_l4_truncated" in expect:
        assert not pkt.has_ports and pkt.sport == pkt.dport == 0
    if later or proto != IPPROTO_ICMPV6 or "err_l4_truncated" in expect:
        assert pkt.icmp_type is None
    assert got.counters == expect
