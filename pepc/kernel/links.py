"""Which interfaces run which XDP program, from one rtnetlink dump.

The reconciler never trusts a file to know where an instance is attached:
`status`, `unload` and a reload scan every interface of the current network
namespace for the instance's program id.
"""

from __future__ import annotations

from dataclasses import dataclass

from pepc.kernel.errors import KernelError

_MODES = {"xdp": "native", "xdpgeneric": "generic", "xdpoffload": "offload", "xdpmulti": "multi"}


@dataclass(frozen=True)
class XdpLink:
    ifname: str
    ifindex: int
    prog_id: int
    mode: str  # native | generic | offload | multi


def xdp_links() -> list[XdpLink]:
    """Every interface with an XDP program attached (one per mode; `multi`
    means several modes at once, reported once with the driver program)."""
    try:
        from pyroute2 import IPRoute
    except ImportError as e:  # pragma: no cover - a dependency
        raise KernelError(f"pyroute2 is not installed: {e}", "pip install 'pyroute2>=0.9.1'") from None
    out = []
    with IPRoute() as ipr:
        for msg in ipr.get_links():
            xdp = msg.get_attr("IFLA_XDP")
            if xdp is None:
                continue
            attached = xdp.get_attr("IFLA_XDP_ATTACHED")
            if not attached:
                continue
            name = msg.get_attr("IFLA_IFNAME") or f"if{msg['index']}"
            mode = _MODES.get(attached, str(attached))
            if mode == "multi":
                for attr, m in (("IFLA_XDP_DRV_PROG_ID", "native"), ("IFLA_XDP_SKB_PROG_ID", "generic"), ("IFLA_XDP_HW_PROG_ID", "offload")):
                    pid = xdp.get_attr(attr)
                    if pid:
                        out.append(XdpLink(name, msg["index"], pid, m))
                continue
            pid = xdp.get_attr("IFLA_XDP_PROG_ID")
            if pid:
                out.append(XdpLink(name, msg["index"], pid, mode))
    return out


def interface_exists(ifname: str) -> bool:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=ifname))


def links_of(prog_ids: set[int] | frozenset[int]) -> list[XdpLink]:
    return [link for link in xdp_links() if link.prog_id in prog_ids]
