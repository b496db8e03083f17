"""Which interfaces run which XDP program, from one rtnetlink dump.

The reconciler never trusts a file to know where an instance is attached:
`plan`, `apply`, `status` and `unload` scan every interface of the current
network namespace for the instance's program id.

This is a raw RTM_GETLINK dump on a netlink socket rather than pyroute2:
importing pyroute2 costs ~0.2 s and its first dump more, which would
dominate a one-rule apply; reading is all we need here (attaching goes
through pepc.kernel.netlink).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

from pepc.kernel.errors import KernelError

RTM_GETLINK = 18
RTM_NEWLINK = 16
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
IFLA_IFNAME = 3
IFLA_XDP = 43
IFLA_XDP_ATTACHED = 2
IFLA_XDP_PROG_ID = 4
IFLA_XDP_DRV_PROG_ID = 5
IFLA_XDP_SKB_PROG_ID = 6
IFLA_XDP_HW_PROG_ID = 7
XDP_ATTACHED_DRV, XDP_ATTACHED_SKB, XDP_ATTACHED_HW, XDP_ATTACHED_MULTI = 1, 2, 3, 4
NLA_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED / NLA_F_NET_BYTEORDER

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")

_MODES = {XDP_ATTACHED_DRV: "native", XDP_ATTACHED_SKB: "generic", XDP_ATTACHED_HW: "offload"}


@dataclass(frozen=True)
class XdpLink:
    ifname: str
    ifindex: int
    prog_id: int
    mode: str  # native | generic | offload


def _attrs(buf: bytes, off: int, end: int) -> dict[int, bytes]:
    out = {}
    while off + 4 <= end:
        ln, typ = _RTATTR.unpack_from(buf, off)
        if ln < 4 or off + ln > end:
            break
        out[typ & NLA_TYPE_MASK] = buf[off + 4 : off + ln]
        off += (ln + 3) & ~3
    return out


def _u32(b: bytes | None) -> int:
    return struct.unpack_from("=I", b)[0] if b and len(b) >= 4 else 0


def parse_link(payload: bytes) -> list[XdpLink]:
    """The XDP programs of one RTM_NEWLINK payload (ifinfomsg + attributes)."""
    _family, _type, index, _flags, _change = _IFINFOMSG.unpack_from(payload, 0)
    attrs = _attrs(payload, _IFINFOMSG.size, len(payload))
    xdp = attrs.get(IFLA_XDP)
    if xdp is None:
        return []
    x = _attrs(xdp, 0, len(xdp))
    attached = x.get(IFLA_XDP_ATTACHED, b"\0")[0]
    if not attached:
        return []
    name = attrs.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode(errors="replace") or f"if{index}"
    if attached == XDP_ATTACHED_MULTI:
        out = []
        for attr, mode in ((IFLA_XDP_DRV_PROG_ID, "native"), (IFLA_XDP_SKB_PROG_ID, "generic"), (IFLA_XDP_HW_PROG_ID, "offload")):
            pid = _u32(x.get(attr))
            if pid:
                out.append(XdpLink(name, index, pid, mode))
        return out
    pid = _u32(x.get(IFLA_XDP_PROG_ID))
    return [XdpLink(name, index, pid, _MODES.get(attached, "native"))] if pid else []


def xdp_links() -> list[XdpLink]:
    """Every interface with an XDP program attached (one entry per mode)."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    except OSError as e:
        raise KernelError(f"cannot open a netlink socket: {e.strerror}", "", e.errno or errno.EIO) from None
    out: list[XdpLink] = []
    with sock:
        sock.bind((0, 0))
        seq = 1
        req = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        hdr = _NLMSGHDR.pack(_NLMSGHDR.size + len(req), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
        sock.send(hdr + req)
        while True:
            data = sock.recv(1 << 20)
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                ln, typ, _flags, mseq, _pid = _NLMSGHDR.unpack_from(data, off)
                if ln < _NLMSGHDR.size:
                    return out
                body = data[off + _NLMSGHDR.size : off + ln]
                off += (ln + 3) & ~3
                if mseq != seq:
                    continue
                if typ == NLMSG_DONE:
                    return out
                if typ == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", body)[0]
                    if err:
                        raise KernelError(f"netlink link dump failed: {os.strerror(err)}", "", err)
                    continue
                if typ == RTM_NEWLINK:
                    out.extend(parse_link(body))


def interface_exists(ifname: str) -> bool:
    try:
        socket.if_nametoindex(ifname)
        return True
    except OSError:
        return False


def links_of(prog_ids: set[int] | frozenset[int]) -> list[XdpLink]:
    return [link for link in xdp_links() if link.prog_id in prog_ids]
