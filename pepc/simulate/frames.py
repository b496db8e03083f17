"""Ethernet frames: build them, and parse them exactly as the XDP program does.

`parse_frame` is bpf/pepc_xdp.c:parse() in Python, decision for decision
and counter for counter. With it the simulator can be compared with the
kernel on raw bytes: parse a frame here, evaluate the Packet with
pepc.simulate.evaluate, run the same bytes through BPF_PROG_TEST_RUN, and the two
must agree. Pure: no root, no kernel.

Parse decisions (shared with the C code):
- up to two VLAN tags (0x8100 or 0x88a8, in any order); a third tag, like
  any ethertype other than IPv4 and IPv6, is "non_ip" and passes;
- every IPv4 / IPv6 frame counts `ipv4` / `ipv6`, malformed ones included;
- IPv4 needs version 4, IHL >= 5, the whole header (options included) in
  the frame, and a total length of at least the header; otherwise the frame
  passes and counts err_ip_truncated / err_ip_bad_header;
- a fragment (MF set or offset > 0) counts `fragments`; only the first
  fragment of TCP/UDP carries ports;
- ports need the first four L4 bytes inside both the frame and the IP total
  length; a TCP/UDP packet without them has no ports (err_l4_truncated) and
  is still evaluated: it can match rules without a port constraint;
- IPv6 needs the 40-byte header in the frame (else err_ip6_truncated) and
  version 6 (else err_ip6_bad_header); both pass. Then at most
  MAX_IP6_EXT extension headers (hop-by-hop, routing, fragment,
  destination options, AH) are walked to the upper-layer header, every
  one inside both the frame and the payload length; a longer chain, or a
  header that does not fit, is DROPPED (err_ip6_ext): passing it, or
  evaluating it without knowing its upper layer, would make padding
  headers a way around a BLOCK rule. A fragment header with an offset or
  M counts `fragments`; one with an offset ends the walk (a non-first
  fragment: its next header is the protocol, there are no ports);
- IPv6 TCP/UDP ports and the ICMPv6 type (the first L4 byte, which decides
  the lockout guard) are read like IPv4's ports: inside frame and payload
  length, else err_l4_truncated and the packet is evaluated without them.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Sequence

from pepc.policy.semantics import Packet

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
VLAN_TPIDS = (ETH_P_8021Q, ETH_P_8021AD)
MAX_VLAN_TAGS = 2

IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6 = 1, 6, 17, 58
NH_HOPOPTS, NH_ROUTING, NH_FRAGMENT, NH_AH, NH_DSTOPTS, NH_NONE = 0, 43, 44, 51, 60, 59
EXT_HEADERS = frozenset((NH_HOPOPTS, NH_ROUTING, NH_FRAGMENT, NH_AH, NH_DSTOPTS))
MAX_IP6_EXT = 6  # bpf/pepc_xdp.c PEPC_IP6_MAX_EXT
IP6_MAX_OFF = 0xFF00  # bpf/pepc_xdp.c PEPC_IP6_MAX_OFF

ETH_HLEN = 14
VLAN_HLEN = 4
IP_HLEN = 20
IP6_HLEN = 40

_MF = 0x2000
_OFFSET = 0x1FFF

SRC_MAC = bytes.fromhex("020000000002")
DST_MAC = bytes.fromhex("020000000001")


@dataclass(frozen=True)
class ParsedFrame:
    """What the XDP parser makes of a frame.

    `packet` is None when the frame is decided without evaluation: it
    passes (not IP, or an IP header the parser rejects) or, when `drop`, is
    dropped (an IPv6 header chain it cannot walk). `counters` are the global counters
    (layout.COUNTERS names) the parser itself bumps, in the order it bumps
    them; the program adds packets/pass/drop and the action counters.
    """

    packet: Packet | None
    counters: tuple[str, ...] = ()
    drop: bool = False

    @property
    def evaluated(self) -> bool:
        return self.packet is not None


def parse_frame(data: bytes) -> ParsedFrame:
    """Mirror of parse() in bpf/pepc_xdp.c."""
    n = len(data)
    if n < ETH_HLEN:
        return ParsedFrame(None, ("err_eth_truncated",))
    (proto,) = struct.unpack_from(">H", data, 12)
    off = ETH_HLEN
    for _ in range(MAX_VLAN_TAGS):
        if proto not in VLAN_TPIDS:
            break
        if off + VLAN_HLEN > n:
            return ParsedFrame(None, ("err_vlan_truncated",))
        (proto,) = struct.unpack_from(">H", data, off + 2)
        off += VLAN_HLEN
    if proto == ETH_P_IP:
        return _parse_ip4(data, off)
    if proto == ETH_P_IPV6:
        return _parse_ip6(data, off)
    return ParsedFrame(None, ("non_ip",))


def _parse_ip4(data: bytes, off: int) -> ParsedFrame:
    n = len(data)
    if off + IP_HLEN > n:
        return ParsedFrame(None, ("ipv4", "err_ip_truncated"))
    version, ihl = data[off] >> 4, data[off] & 0x0F
    if version != 4 or ihl < 5:
        return ParsedFrame(None, ("ipv4", "err_ip_bad_header"))
    hlen = ihl * 4
    if off + hlen > n:
        return ParsedFrame(None, ("ipv4", "err_ip_truncated"))
    tot_len, _id, frag, _ttl, ip_proto, _csum, src, dst = struct.unpack_from(">HHHBBHII", data, off + 2)
    if tot_len < hlen:
        return ParsedFrame(None, ("ipv4", "err_ip_bad_header"))

    counters: list[str] = ["ipv4"]
    fragment = bool(frag & (_MF | _OFFSET))
    if fragment:
        counters.append("fragments")
    sport = dport = 0
    has_ports = False
    if ip_proto in (IPPROTO_TCP, IPPROTO_UDP) and not frag & _OFFSET:
        l4 = off + hlen
        if l4 + 4 > n or hlen + 4 > tot_len:
            counters.append("err_l4_truncated")
        else:
            sport, dport = struct.unpack_from(">HH", data, l4)
            has_ports = True
    pkt = Packet(src=src, dst=dst, proto=ip_proto, sport=sport, dport=dport, has_ports=has_ports, fragment=fragment, length=n)
    return ParsedFrame(pkt, tuple(counters))


def _parse_ip6(data: bytes, l3: int) -> ParsedFrame:
    n = len(data)
    if l3 + IP6_HLEN > n:
        return ParsedFrame(None, ("ipv6", "err_ip6_truncated"))
    if data[l3] >> 4 != 6:
        return ParsedFrame(None, ("ipv6", "err_ip6_bad_header"))
    payload_len, nh = struct.unpack_from(">HB", data, l3 + 4)
    src = int.from_bytes(data[l3 + 8 : l3 + 24], "big")
    dst = int.from_bytes(data[l3 + 24 : l3 + 40], "big")
    end = IP6_HLEN + payload_len  # offsets count from the IPv6 header
    frame_end = n - l3

    def fits(off: int, size: int) -> bool:
        return off + size <= end and off + size <= frame_end

    bad = ParsedFrame(None, ("ipv6", "err_ip6_ext"), drop=True)
    off = IP6_HLEN
    fragment = later = False
    for i in range(MAX_IP6_EXT + 1):
        if nh not in EXT_HEADERS:
            break
        if i == MAX_IP6_EXT or off > IP6_MAX_OFF or not fits(off, 8):
            return bad
        p = l3 + off
        if nh == NH_FRAGMENT:
            (fo,) = struct.unpack_from(">H", data, p + 2)
            fragment = fragment or bool(fo & 0xFFF9)
            nh = data[p]
            off += 8
            if fo & 0xFFF8:
                later = True
                break
            continue
        hlen = (data[p + 1] + 2) * 4 if nh == NH_AH else (data[p + 1] + 1) * 8
        if not fits(off, hlen):
            return bad
        nh = data[p]
        off += hlen

    counters = ["ipv6"]
    if fragment:
        counters.append("fragments")
    sport = dport = 0
    has_ports = False
    icmp_type = None
    if not later and off <= IP6_MAX_OFF:
        p = l3 + off
        if nh in (IPPROTO_TCP, IPPROTO_UDP):
            if fits(off, 4):
                sport, dport = struct.unpack_from(">HH", data, p)
                has_ports = True
            else:
                counters.append("err_l4_truncated")
        elif nh == IPPROTO_ICMPV6:
            if fits(off, 1):
                icmp_type = data[p]
            else:
                counters.append("err_l4_truncated")
    pkt = Packet(
        src=src, dst=dst, proto=nh, sport=sport, dport=dport, has_ports=has_ports, fragment=fragment, length=n, v6=True, icmp_type=icmp_type
    )
    return ParsedFrame(pkt, tuple(counters))


# ------------------------------------------------------------------ building


def _addr(a: str | int) -> int:
    return a if isinstance(a, int) else int(ipaddress.IPv4Address(a))


def ip_checksum(header: bytes) -> int:
    if len(header) % 2:
        header += b"\0"
    total = sum(struct.unpack(f">{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def l4_header(proto: int, sport: int, dport: int, payload_len: int) -> bytes:
    """A plausible L4 header (checksums zero: XDP does not check them)."""
    if proto == IPPROTO_TCP:
        # seq, ack, data offset 5 words, SYN, window 64240
        return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    if proto == IPPROTO_UDP:
        return struct.pack(">HHHH", sport, dport, 8 + payload_len, 0)
    if proto == IPPROTO_ICMP:
        return struct.pack(">BBHHH", 8, 0, 0, 0x1234, 1)  # echo request
    return b""


def build_frame(
    src: str | int = "10.0.0.1",
    dst: str | int = "10.0.0.2",
    proto: int = IPPROTO_TCP,
    sport: int = 1024,
    dport: int = 80,
    *,
    vlans: Sequence[int] = (),
    vlan_tpids: Sequence[int] | None = None,
    ethertype: int = ETH_P_IP,
    ip_options: bytes = b"",
    more_fragments: bool = False,
    frag_offset: int = 0,
    payload: int | bytes = 0,
    version: int = 4,
    ihl: int | None = None,
    tot_len: int | None = None,
    ttl: int = 64,
    truncate: int | None = None,
    pad_to: int = 0,
) -> bytes:
    """An Ethernet frame carrying IPv4 (or `ethertype` with `payload`).

    vlans: VLAN ids, outermost first; tags use 802.1ad (0x88a8) outside and
    802.1Q (0x8100) inside unless `vlan_tpids` says otherwise.
    ip_options: raw option bytes, zero-padded to a multiple of four.
    more_fragments/frag_offset (8-byte units): a non-zero offset makes a
    non-first fragment, which carries no L4 header.
    payload: bytes, or a length of zero bytes, after the L4 header.
    version/ihl/tot_len: override header fields to make malformed packets.
    truncate: cut the finished frame to this many bytes.
    pad_to: zero-pad the frame (like Ethernet's 60-byte minimum).
    """
    body = bytes(payload) if isinstance(payload, (bytes, bytearray)) else bytes(int(payload))
    if ethertype == ETH_P_IP:
        opts = bytes(ip_options) + bytes(-len(ip_options) % 4)
        hlen = IP_HLEN + len(opts)
        l4 = l4_header(proto, sport, dport, len(body)) if frag_offset == 0 else b""
        data = l4 + body
        total = hlen + len(data) if tot_len is None else tot_len
        ihl_field = hlen // 4 if ihl is None else ihl
        frag = (_MF if more_fragments else 0) | (frag_offset & _OFFSET)
        hdr = struct.pack(
            ">BBHHHBBHII", (version << 4) | (ihl_field & 0xF), 0, total & 0xFFFF, 0x4242, frag, ttl, proto, 0, _addr(src), _addr(dst)
        ) + opts
        hdr = hdr[:10] + struct.pack(">H", ip_checksum(hdr)) + hdr[12:]
        l3 = hdr + data
    else:
        l3 = body
    tpids = list(vlan_tpids) if vlan_tpids is not None else (
        [ETH_P_8021AD, ETH_P_8021Q] if len(vlans) == 2 else [ETH_P_8021Q] * len(vlans)
    )
    if len(tpids) != len(vlans):
        raise ValueError("vlan_tpids must name one TPID per VLAN tag")
    eth = DST_MAC + SRC_MAC
    types = tpids + [ethertype]
    eth += struct.pack(">H", types[0])
    for vid, nxt in zip(vlans, types[1:]):
        eth += struct.pack(">HH", vid & 0x0FFF, nxt)
    frame = eth + l3
    if len(frame) < pad_to:
        frame += bytes(pad_to - len(frame))
    if truncate is not None:
        frame = frame[:truncate]
    return frame


# ------------------------------------------------------------------ IPv6


def _addr6(a: str | int) -> int:
    return a if isinstance(a, int) else int(ipaddress.IPv6Address(a))


@dataclass(frozen=True)
class Ext:
    """One IPv6 extension header for build_frame6.

    kind: NH_HOPOPTS, NH_ROUTING, NH_DSTOPTS (size: a multiple of 8, >= 8),
    NH_AH (size: a multiple of 4, >= 8) or NH_FRAGMENT (always 8 bytes;
    `offset` in 8-byte units, `more` the M flag). `length_byte` overrides
    the header's length field (to claim more than is there).
    """

    kind: int
    size: int = 8
    offset: int = 0
    more: bool = False
    length_byte: int | None = None

    def encode(self, next_header: int) -> bytes:
        if self.kind == NH_FRAGMENT:
            return struct.pack(">BBHI", next_header, 0, ((self.offset & 0x1FFF) << 3) | int(self.more), 0x4242)
        unit = 4 if self.kind == NH_AH else 8
        if self.size < 8 or self.size % unit:
            raise ValueError(f"extension header {self.kind} cannot be {self.size} bytes")
        length = self.size // unit - (2 if self.kind == NH_AH else 1) if self.length_byte is None else self.length_byte
        return struct.pack(">BB", next_header, length) + bytes(self.size - 2)


def icmp6_header(icmp_type: int, code: int = 0) -> bytes:
    return struct.pack(">BBHI", icmp_type, code, 0, 0)


def build_frame6(
    src: str | int = "2001:db8::1",
    dst: str | int = "2001:db8::2",
    proto: int = IPPROTO_TCP,
    sport: int = 1024,
    dport: int = 80,
    *,
    ext: Sequence[Ext] = (),
    icmp_type: int = 128,
    vlans: Sequence[int] = (),
    vlan_tpids: Sequence[int] | None = None,
    payload: int | bytes = 0,
    version: int = 6,
    payload_len: int | None = None,
    hop_limit: int = 64,
    truncate: int | None = None,
    pad_to: int = 0,
) -> bytes:
    """An Ethernet frame carrying IPv6: `ext` headers in order, then the
    upper-layer header of `proto` (TCP/UDP with the ports, ICMPv6 with
    `icmp_type`) and `payload`. After a fragment header with a non-zero
    offset only data follows (no upper-layer header), like a real
    non-first fragment. payload_len overrides the IPv6 payload length;
    vlans, truncate, pad_to as for build_frame."""
    body = bytes(payload) if isinstance(payload, (bytes, bytearray)) else bytes(int(payload))
    nonfirst = any(e.kind == NH_FRAGMENT and e.offset for e in ext)
    if nonfirst:
        upper = b""
    elif proto == IPPROTO_ICMPV6:
        upper = icmp6_header(icmp_type)
    else:
        upper = l4_header(proto, sport, dport, len(body))
    chain = b""
    kinds = [e.kind for e in ext] + [proto]
    for e, nxt in zip(ext, kinds[1:]):
        chain += e.encode(nxt)
    l3_payload = chain + upper + body
    plen = len(l3_payload) if payload_len is None else payload_len
    hdr = struct.pack(">IHBB", (version & 0xF) << 28, plen & 0xFFFF, kinds[0], hop_limit)
    hdr += _addr6(src).to_bytes(16, "big") + _addr6(dst).to_bytes(16, "big")
    return build_frame(ethertype=ETH_P_IPV6, payload=hdr + l3_payload, vlans=vlans, vlan_tpids=vlan_tpids, truncate=truncate, pad_to=pad_to)
