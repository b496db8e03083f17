"""Shared helpers for kernel tests: build the XDP object, load a pinned test
instance, make a veth pair into a fresh network namespace, compile policies.

Everything a helper creates is removed in a `finally`, so a failing test
leaves no pins, links or namespaces behind. Names carry a random suffix so
parallel or aborted runs never collide.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

from pepc.compiler import layout
from pepc.policy.config import Config
from pepc.policy.model import Action, Location, Policy, Rule

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
LOC = Location("test.yaml", 1, 1)

_OBJECTS: dict[layout.Capacities, Path] = {}


def compile_policy(rules: Sequence[Rule], caps: layout.Capacities = layout.Capacities(), default: Action = Action.ALLOW, event_cap: int = 100):
    """(policy, program) for `rules` as written (no loader involved)."""
    from pepc.compiler import compile_program

    policy = Policy("/policies.d", tuple(rules))
    config = Config(default_action=default, capacities=caps, event_cap=event_cap)
    return policy, compile_program(policy, config, NOW)


def object_for(caps: layout.Capacities = layout.Capacities()) -> Path:
    """The XDP object for a layout, built once per test session."""
    if caps not in _OBJECTS:
        from pepc.compiler.codegen import render_header
        from pepc.compiler.objbuild import build_object

        policy, program = compile_policy((), caps)
        d = Path(tempfile.mkdtemp(prefix="pepc-test-obj-"))
        (d / "pepc_policy.h").write_text(render_header(program, policy))
        build_object(d, d / "pepc_xdp.o")
        _OBJECTS[caps] = d / "pepc_xdp.o"
    return _OBJECTS[caps]


@contextlib.contextmanager
def pinned_instance(caps: layout.Capacities = layout.Capacities()) -> Iterator:
    """A freshly loaded program pinned under /sys/fs/bpf/pepc-test-<random>."""
    from pepc.kernel import dataplane, loader

    pin_dir = Path(f"/sys/fs/bpf/pepc-test-{secrets.token_hex(4)}")
    inst = loader.load_object(object_for(caps))
    try:
        dataplane.init_ctrl(inst, layout.layout_digest(caps))
        loader.pin(inst, pin_dir)
        yield inst
    finally:
        inst.close()
        loader.unpin(pin_dir)


@dataclass
class VethNs:
    """A veth pair: `host` in the root namespace, `peer` inside `netns`."""

    netns: str
    host: str
    peer: str
    host_ip: str
    peer_ips: tuple[str, ...]
    host_ip6: str | None = None
    peer_ips6: tuple[str, ...] = ()

    def run(self, argv: Sequence[str], timeout: float = 30, check: bool = False) -> subprocess.CompletedProcess:
        """Run a command inside the namespace."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], capture_output=True, text=True, timeout=timeout, check=check)

    def python(self, script: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a Python script inside the namespace (pepc itself stays outside:
        `ip netns exec` remounts /sys, hiding the bpffs pins)."""
        return self.run([sys.executable, "-c", script, *args], timeout=timeout)


IFA_F_NODAD = 0x02


@contextlib.contextmanager
def veth_netns(prefix: str = "10.199.0", peer_hosts: Sequence[int] = (2, 3), prefix6: str | None = None) -> Iterator[VethNs]:
    """veth pair h<rand> (root, PREFIX.1/24) <-> n<rand> (new netns, PREFIX.N/24).

    With `prefix6` (e.g. "fd00:199:7::", a ULA /64 the test owns) also
    PREFIX6 1/64 on the host end and PREFIX6 N/64 in the namespace, without
    duplicate address detection (no wait before the addresses work)."""
    from pyroute2 import IPRoute, netns

    tag = secrets.token_hex(3)
    ns, host, peer = f"pepc-t-{tag}", f"pt{tag}h", f"pt{tag}n"
    netns.create(ns)
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=host, kind="veth", peer={"ifname": peer, "net_ns_fd": ns})
            try:
                idx = ipr.link_lookup(ifname=host)[0]
                ipr.addr("add", index=idx, address=f"{prefix}.1", prefixlen=24)
                if prefix6:
                    ipr.addr("add", index=idx, address=f"{prefix6}1", prefixlen=64, flags=IFA_F_NODAD)
                ipr.link("set", index=idx, state="up")
                with IPRoute(netns=ns) as nipr:
                    pidx = nipr.link_lookup(ifname=peer)[0]
                    for h in peer_hosts:
                        nipr.addr("add", index=pidx, address=f"{prefix}.{h}", prefixlen=24)
                        if prefix6:
                            nipr.addr("add", index=pidx, address=f"{prefix6}{h:x}", prefixlen=64, flags=IFA_F_NODAD)
                    nipr.link("set", index=pidx, state="up")
                    lo = nipr.link_lookup(ifname="lo")[0]
                    nipr.link("set", index=lo, state="up")
                yield VethNs(
                    ns, host, peer, f"{prefix}.1", tuple(f"{prefix}.{h}" for h in peer_hosts),
                    f"{prefix6}1" if prefix6 else None, tuple(f"{prefix6}{h:x}" for h in peer_hosts) if prefix6 else (),
                )
            finally:
                with contextlib.suppress(Exception):
                    ipr.link("del", ifname=host)
    finally:
        netns.remove(ns)


@contextlib.contextmanager
def veth_pair() -> Iterator[tuple[str, str]]:
    """A bare veth pair in the root namespace (for attach/detach tests)."""
    from pyroute2 import IPRoute

    tag = secrets.token_hex(3)
    a, b = f"pa{tag}a", f"pa{tag}b"
    with IPRoute() as ipr:
        ipr.link("add", ifname=a, kind="veth", peer={"ifname": b})
        try:
            for name in (a, b):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
            yield a, b
        finally:
            with contextlib.suppress(Exception):
                ipr.link("del", ifname=a)
