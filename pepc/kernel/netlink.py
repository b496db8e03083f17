"""Attaching the XDP program to interfaces, through rtnetlink (pyroute2).

pepc attaches with netlink only, never with bpf_link: the two cannot
replace each other's programs (EBUSY), and netlink's XDP_FLAGS_REPLACE with
the expected fd gives the atomic compare-and-swap a reload needs.
"""

from __future__ import annotations

import errno
import os

from pepc.policy.config import XdpMode
from pepc.kernel.errors import KernelError, kernel_error

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4

_MODE_FLAGS = {
    XdpMode.NATIVE: XDP_FLAGS_DRV_MODE,
    XdpMode.GENERIC: XDP_FLAGS_SKB_MODE,
    XdpMode.OFFLOAD: XDP_FLAGS_HW_MODE,
}
# IFLA_XDP_ATTACHED as pyroute2 decodes it
_ATTACHED = {"xdp": XdpMode.NATIVE, "xdpgeneric": XdpMode.GENERIC, "xdpoffload": XdpMode.OFFLOAD}
# errors that mean "this driver cannot run XDP natively": fall back to generic
_NO_NATIVE = (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTSUP)


def _ipr():
    try:
        from pyroute2 import IPRoute
    except ImportError as e:  # pragma: no cover - a dependency
        raise KernelError(f"pyroute2 is not installed: {e}", "pip install 'pyroute2>=0.9.1'") from None
    return IPRoute(ext_ack=True)


def _index(ipr, ifname: str) -> int:
    idx = ipr.link_lookup(ifname=ifname)
    if not idx:
        raise KernelError(f"interface {ifname} does not exist", "check `interfaces` in pepc.yaml (ip link shows the names)")
    return idx[0]


def _netlink_error(op: str, ifname: str, e: Exception) -> KernelError:
    code = getattr(e, "code", 0) or errno.EIO
    if code in (errno.EPERM, errno.EACCES):
        return kernel_error(op, code, what=ifname)
    text = e.args[1] if len(getattr(e, "args", ())) > 1 else os.strerror(code)
    hint = ""
    if code == errno.EEXIST:
        hint = "another XDP program, or one in a different mode, is attached: detach it or use the mode it runs in"
    elif code == errno.EBUSY:
        hint = "the attached program changed meanwhile, or it was attached through a bpf_link (pepc uses netlink)"
    return KernelError(f"{op} {ifname}: {text} ({errno.errorcode.get(code, code)})", hint, code)


def _set(ipr, idx: int, fd: int, flags: int, expected_fd: int | None = None) -> None:
    attrs = [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", flags)]
    if expected_fd is not None:
        attrs.append(("IFLA_XDP_EXPECTED_FD", expected_fd))
    ipr.link("set", index=idx, xdp={"attrs": attrs})


def query(ifname: str) -> tuple[int, XdpMode] | None:
    """(program id, mode) of the XDP program attached to `ifname`, or None."""
    with _ipr() as ipr:
        idx = _index(ipr, ifname)
        msg = ipr.link("get", index=idx)[0]
    xdp = msg.get_attr("IFLA_XDP")
    if xdp is None:
        return None
    attached = xdp.get_attr("IFLA_XDP_ATTACHED")
    prog_id = xdp.get_attr("IFLA_XDP_PROG_ID")
    if not attached or not prog_id:
        return None
    return prog_id, _ATTACHED.get(attached, XdpMode.NATIVE)


def attach(ifname: str, prog_fd: int, mode: XdpMode = XdpMode.AUTO, replace_prog_fd: int | None = None) -> XdpMode:
    """Attach `prog_fd` to `ifname`; returns the mode actually used.

    AUTO tries native first and falls back to generic where the driver has
    no native XDP. With `replace_prog_fd`, the swap happens only if that
    program is still the attached one (XDP_FLAGS_REPLACE, a compare-and-
    swap in the kernel), and in the mode it is attached in; without it, the
    attach fails if any program is attached already (UPDATE_IF_NOEXIST),
    so pepc never silently replaces someone else's program.
    """
    with _ipr() as ipr:
        idx = _index(ipr, ifname)
        if replace_prog_fd is not None:
            flags = XDP_FLAGS_REPLACE
            modes = [mode]
            if mode is XdpMode.AUTO:
                cur = query(ifname)
                modes = [cur[1]] if cur else [XdpMode.NATIVE, XdpMode.GENERIC]
        else:
            flags = XDP_FLAGS_UPDATE_IF_NOEXIST
            modes = [XdpMode.NATIVE, XdpMode.GENERIC] if mode is XdpMode.AUTO else [mode]
        last: Exception | None = None
        for m in modes:
            try:
                _set(ipr, idx, prog_fd, flags | _MODE_FLAGS[m], replace_prog_fd)
                return m
            except Exception as e:  # pyroute2's NetlinkError
                last = e
                code = getattr(e, "code", None)
                if mode is XdpMode.AUTO and m is XdpMode.NATIVE and code in _NO_NATIVE:
                    continue
                raise _netlink_error("attach XDP program to", ifname, e) from None
        raise _netlink_error("attach XDP program to", ifname, last or OSError(errno.EIO, "no mode"))


def detach(ifname: str, mode: XdpMode | None = None) -> bool:
    """Detach whatever XDP program `ifname` runs; False if none was attached.

    Detaching needs the mode flag the program was attached with (fd -1
    without SKB_MODE leaves a generic program in place), so the mode is
    read back when not given.
    """
    cur = query(ifname)
    if cur is None:
        return False
    use = cur[1] if mode in (None, XdpMode.AUTO) else mode
    with _ipr() as ipr:
        idx = _index(ipr, ifname)
        try:
            _set(ipr, idx, -1, _MODE_FLAGS[use])
        except Exception as e:
            raise _netlink_error("detach XDP program from", ifname, e) from None
    return True
