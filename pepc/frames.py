"""Ethernet frames: build them, and parse them exactly as the XDP program does.

`parse_frame` is bpf/pepc_xdp.c:parse() in Python, decision for decision
and counter for counter. With it the simulator can be compared with the
kernel on raw bytes: parse a frame here, evaluate the Packet with
pepc.simulate, run the same bytes through BPF_PROG_TEST_RUN, and the two
must agree. Pure: no root, no kernel.

Parse decisions (shared with the C code):
- up to two VLAN tags (0x8100 or 0x88a8, in any order); a third tag, like
  any ethertype other than IPv4, is "non_ipv4" and passes;
- IPv4 needs version 4, IHL >= 5, the whole header (options included) in
  the frame, and a total length of at least the header; otherwise the frame
  passes and counts err_ip_truncated / err_ip_bad_header;
- a fragment (MF set or offset > 0) counts `fragments`; only the first
  fragment of TCP/UDP carries ports;
- ports need the first four L4 bytes inside both the frame and the IP total
  length; a TCP/UDP packet without them has no ports (err_l4_truncated) and
  is still evaluated: it can match rules without a port constraint.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Sequence

from pepc.semantics import Packet

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
VLAN_TPIDS = (ETH_P_8021Q, ETH_P_8021AD)
MAX_VLAN_TAGS = 2

IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP = 1, 6, 17

ETH_HLEN = 14
VLAN_HLEN = 4
IP_HLEN = 20

_MF = 0x2000
_OFFSET = 0x1FFF

SRC_MAC = bytes.fromhex("020000000002")
DST_MAC = bytes.fromhex("020000000001")


@dataclass(frozen=True)
class ParsedFrame:
    """What the XDP parser makes of a frame.

    `packet` is None when the frame passes without evaluation (not IPv4, or
    a header the parser rejects). `counters` are the global counters
    (layout.COUNTERS names) the parser itself bumps, in the order it bumps
    them; the program adds packets/pass/drop and the action counters.
    """

    packet: Packet | None
    counters: tuple[str, ...] = ()

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
    if proto != ETH_P_IP:
        return ParsedFrame(None, ("non_ipv4",))
    if off + IP_HLEN > n:
        return ParsedFrame(None, ("err_ip_truncated",))
    version, ihl = data[off] >> 4, data[off] & 0x0F
    if version != 4 or ihl < 5:
        return ParsedFrame(None, ("err_ip_bad_header",))
    hlen = ihl * 4
    if off + hlen > n:
        return ParsedFrame(None, ("err_ip_truncated",))
    tot_len, _id, frag, _ttl, ip_proto, _csum, src, dst = struct.unpack_from(">HHHBBHII", data, off + 2)
    if tot_len < hlen:
        return ParsedFrame(None, ("err_ip_bad_header",))

    counters: list[str] = []
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
