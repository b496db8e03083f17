"""pepc.frames: frames built from parameters parse back to what those
parameters say, checked against an oracle that reasons from the parameters
(header sizes and offsets), never from the bytes."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from pepc.frames import (
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
from pepc.semantics import Packet


def ip(a: str) -> int:
    return int(ipaddress.IPv4Address(a))


def test_plain_tcp_udp_icmp():
    f = build_frame("10.0.0.1", "192.168.1.100", IPPROTO_TCP, 40000, 443)
    assert len(f) == 14 + 20 + 20
    assert parse_frame(f).packet == Packet(ip("10.0.0.1"), ip("192.168.1.100"), 6, 40000, 443, True, False, len(f))
    assert parse_frame(f).counters == ()
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
    assert parse_frame(three).packet is None and parse_frame(three).counters == ("non_ipv4",)


def test_non_ipv4_passes_uncounted_by_rules():
    for et in (ETH_P_ARP, ETH_P_IPV6, 0x88CC):
        p = parse_frame(build_frame(ethertype=et, payload=46))
        assert p.packet is None and p.counters == ("non_ipv4",)
    p = parse_frame(build_frame(vlans=[5], ethertype=ETH_P_IPV6, payload=40))
    assert p.counters == ("non_ipv4",)


def test_fragments():
    first = parse_frame(build_frame(proto=IPPROTO_UDP, sport=1, dport=2, more_fragments=True, payload=64))
    assert first.packet.has_ports and first.packet.dport == 2 and first.packet.fragment
    assert first.counters == ("fragments",)
    later = parse_frame(build_frame(proto=IPPROTO_UDP, frag_offset=9, payload=64))
    assert not later.packet.has_ports and later.packet.sport == later.packet.dport == 0 and later.packet.fragment
    assert later.counters == ("fragments",)
    last_mf = parse_frame(build_frame(proto=IPPROTO_TCP, frag_offset=1, more_fragments=True, payload=8))
    assert not last_mf.packet.has_ports


def test_tiny_first_fragment_keeps_ports_if_it_holds_them():
    # first fragment holding only 8 bytes of TCP: ports are there, rules see them
    f = build_frame(proto=IPPROTO_TCP, sport=7, dport=22, more_fragments=True, tot_len=28)
    p = parse_frame(f[: 14 + 28])
    assert p.packet.has_ports and p.packet.dport == 22
    # 2 bytes of L4: no ports, counted
    p = parse_frame(build_frame(proto=IPPROTO_TCP, more_fragments=True, tot_len=22)[: 14 + 22])
    assert not p.packet.has_ports and p.counters == ("fragments", "err_l4_truncated")


def test_ports_beyond_total_length_are_padding():
    # a TCP packet whose IP total length ends before its ports; the frame
    # carries (padding) bytes there, which are not ports
    f = build_frame(proto=IPPROTO_TCP, tot_len=21, pad_to=60)
    p = parse_frame(f)
    assert p.packet is not None and not p.packet.has_ports and p.counters == ("err_l4_truncated",)
    assert p.packet.length == len(f)


def test_malformed_ip_headers():
    assert parse_frame(build_frame(version=6)).counters == ("err_ip_bad_header",)
    assert parse_frame(build_frame(ihl=4)).counters == ("err_ip_bad_header",)
    assert parse_frame(build_frame(tot_len=19)).counters == ("err_ip_bad_header",)
    assert parse_frame(build_frame(ip_options=bytes(8), tot_len=24)).counters == ("err_ip_bad_header",)
    # IHL claims options the frame does not have
    assert parse_frame(build_frame(ihl=15, proto=IPPROTO_ICMP)).counters == ("err_ip_truncated",)
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
        assert got.counters == ("err_ip_truncated",)
    else:
        pkt = got.packet
        assert pkt is not None
        assert (pkt.src, pkt.dst, pkt.proto, pkt.fragment, pkt.length) == (params["src"], params["dst"], params["proto"], fragment, n)
        expect = ("fragments",) if fragment else ()
        if port_proto and n >= l4 + 4:
            assert pkt.has_ports and (pkt.sport, pkt.dport) == (params["sport"], params["dport"])
        else:
            assert not pkt.has_ports and pkt.sport == pkt.dport == 0
            if port_proto:
                expect += ("err_l4_truncated",)
        assert got.counters == expect
    if got.packet is None:
        assert len(got.counters) == 1
