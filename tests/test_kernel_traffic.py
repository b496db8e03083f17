"""Real traffic: the program attached to the root end of a veth pair, packets
sent from a network namespace the test creates. Drops and passes are seen
on the wire (what arrives at root-namespace sockets, what ping and TCP
connects report) and in the counters. Also attach / replace / detach.

All addresses are on the veth pair only (10.199.x.0/24, the ULA
fd00:199:x::/64): nothing leaves the test's namespaces.
"""

from __future__ import annotations

import json
import socket
import textwrap

import pytest

from kernel_fixtures import LOC, compile_policy, object_for, pinned_instance, veth_netns, veth_pair
from pepc.compiler import layout
from pepc.policy.config import XdpMode
from pepc.policy.diagnostics import EnvironmentProblem
from pepc.policy.model import ANY6, Action, PortRange, Prefix, Protocol, Rule

pytestmark = pytest.mark.kernel

CAPS = layout.Capacities(max_rules=32, max_entries=256, max_masks=16, ring_bytes=4096 * 4)
PREFIX = "10.199.7"
HOST, GOOD, BAD = f"{PREFIX}.1", f"{PREFIX}.2", f"{PREFIX}.3"


def one(port: int) -> tuple[PortRange]:
    return (PortRange(port, port),)


RULES = [
    Rule("block-icmp-from-bad", Action.BLOCK, LOC, protocol=Protocol.ICMP, src=(Prefix.parse(f"{BAD}/32"),)),
    Rule("log-udp-7001", Action.LOG_ONLY, LOC, protocol=Protocol.UDP, dports=one(7001)),
    Rule("block-udp-7002", Action.BLOCK, LOC, protocol=Protocol.UDP, dst=(Prefix.parse(f"{HOST}/32"),), dports=one(7002)),
    Rule("allow-tcp-8001", Action.ALLOW, LOC, protocol=Protocol.TCP, dports=one(8001)),
    Rule("block-tcp-8002", Action.BLOCK, LOC, protocol=Protocol.TCP, dports=one(8002)),
]

# Runs inside the namespace: UDP datagrams and TCP connects (to the ports
# given as comma lists, either family), results as JSON.
CLIENT = textwrap.dedent(
    """
    import json, socket, sys
    host, src = sys.argv[1], sys.argv[2]
    udp, tcp = ([int(p) for p in a.split(",") if p] for a in sys.argv[3:5])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    out = {}
    for port in udp:
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind((src, 0))
        for i in range(3):
            s.sendto(b"pepc-%d-%d" % (port, i), (host, port))
        s.close()
    for port in tcp:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(1.5)
        s.bind((src, 0))
        try:
            s.connect((host, port))
            s.sendall(b"hello")
            out[str(port)] = "connected"
        except OSError as e:
            out[str(port)] = type(e).__name__
        finally:
            s.close()
    print(json.dumps(out))
    """
)


def _udp_server(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, port))
    s.settimeout(0.2)
    return s


def _received(s: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(s.recv(100))
        except (socket.timeout, BlockingIOError):
            return out


def _ping(v, src: str) -> bool:
    r = v.run(["ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", "-I", src, HOST], timeout=20)
    return r.returncode == 0


def test_real_traffic_through_a_veth_pair():
    from pepc.kernel import dataplane, netlink
    from pepc.kernel.ringbuf import EventReader

    _, prog = compile_policy(RULES, CAPS)
    slot = {r.id: prog.slot_of(r.id) for r in RULES}
    with pinned_instance(CAPS) as inst, veth_netns(PREFIX) as v:
        dataplane.load_program(inst, prog)
        # before the program: everything gets through (the test's own control)
        assert _ping(v, BAD)

        mode = netlink.attach(v.host, inst.prog_fd, XdpMode.AUTO)
        assert mode is XdpMode.NATIVE  # veth has native XDP
        assert netlink.query(v.host) == (inst.prog_id, XdpMode.NATIVE)

        udp = {p: _udp_server(p) for p in (7001, 7002)}
        tcp = {}
        for p in (8001, 8002):
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            t.bind((HOST, p))
            t.listen(8)
            tcp[p] = t
        try:
            with EventReader(inst.map("pepc_events")) as events:
                assert _ping(v, GOOD)
                assert not _ping(v, BAD)
                r = v.python(CLIENT, HOST, GOOD, "7001,7002", "8001,8002", timeout=60)
                assert r.returncode == 0, r.stderr
                client = json.loads(r.stdout)
                got = {p: _received(s) for p, s in udp.items()}
                logged = events.poll(500) + events.drain()
        finally:
            for s in (*udp.values(), *tcp.values()):
                s.close()

        # on the wire
        assert sorted(got[7001]) == [b"pepc-7001-0", b"pepc-7001-1", b"pepc-7001-2"]
        assert got[7002] == []
        assert client["8001"] == "connected"
        assert client["8002"] in ("timeout", "TimeoutError")

        # in the counters
        stats = {rid: dataplane.read_rule_stats(inst, s) for rid, s in slot.items()}
        assert stats["block-icmp-from-bad"]["drops"] >= 2 and stats["block-icmp-from-bad"]["drops"] == stats["block-icmp-from-bad"]["packets"]
        assert stats["log-udp-7001"] == {"packets": 3, "bytes": stats["log-udp-7001"]["bytes"], "drops": 0}
        assert stats["log-udp-7001"]["bytes"] == 3 * (14 + 20 + 8 + len(b"pepc-7001-0"))
        assert stats["block-udp-7002"]["packets"] == stats["block-udp-7002"]["drops"] == 3
        assert stats["allow-tcp-8001"]["packets"] >= 3 and stats["allow-tcp-8001"]["drops"] == 0  # SYN, ACK, data...
        assert stats["block-tcp-8002"]["drops"] >= 1  # the SYN and its retransmissions
        c = dataplane.read_counters(inst)
        assert c["non_ip"] >= 1  # ARP went through untouched
        assert c["drop"] == sum(s["drops"] for s in stats.values())
        assert c["default_pass"] >= 2  # the good pings

        # LOG_ONLY events for the three datagrams
        mine = [e for e in logged if e["slot"] == slot["log-udp-7001"]]
        assert len(mine) == 3
        assert all(e["dport"] == 7001 and e["src"] == 0x0AC70702 and e["dst"] == 0x0AC70701 for e in mine)

        assert netlink.detach(v.host) is True
        assert netlink.query(v.host) is None
        assert _ping(v, BAD)  # detached: the filter is gone


PREFIX6 = "fd00:199:8::"
HOST6, GOOD6, BAD6 = f"{PREFIX6}1", f"{PREFIX6}2", f"{PREFIX6}3"


def _host6(plen: int = 128) -> tuple[Prefix]:
    return (Prefix.parse(f"{HOST6}/128" if plen == 128 else f"{PREFIX6}/{plen}"),)


# A default-BLOCK host on IPv6. No rule names neighbour discovery: the
# lockout guard alone must keep it working (the peer's solicitations go to
# a multicast address, which no rule below has as destination).
RULES6 = [
    Rule("allow-ping6-good", Action.ALLOW, LOC, protocol=Protocol.ICMPV6, src=(Prefix.parse(f"{GOOD6}/128"),), dst=_host6()),
    Rule("block-bad6", Action.BLOCK, LOC, priority=10, src=(Prefix.parse(f"{BAD6}/128"),), dst=(ANY6,)),
    Rule("allow-tcp6-8001", Action.ALLOW, LOC, protocol=Protocol.TCP, src=(ANY6,), dst=_host6(64), dports=one(8001)),
    Rule("block-tcp6-8002", Action.BLOCK, LOC, protocol=Protocol.TCP, src=(ANY6,), dst=_host6(64), dports=one(8002)),
    Rule("log-udp6-7001", Action.LOG_ONLY, LOC, protocol=Protocol.UDP, src=(ANY6,), dst=_host6(), dports=one(7001)),
]

def _ping6(v, src: str) -> bool:
    r = v.run(["ping", "-6", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", "-I", src, HOST6], timeout=20)
    return r.returncode == 0


def test_real_ipv6_traffic_default_block_keeps_neighbour_discovery():
    import ipaddress
    import subprocess

    from pepc.kernel import dataplane, netlink
    from pepc.kernel.ringbuf import EventReader
    from pepc.watch.events import Event

    _, prog = compile_policy(RULES6, CAPS, default=Action.BLOCK)
    slot = {r.id: prog.slot_of(r.id) for r in RULES6}
    with pinned_instance(CAPS) as inst, veth_netns("10.199.8", prefix6=PREFIX6) as v:
        dataplane.load_program(inst, prog)
        assert _ping6(v, BAD6)  # the test's own control: no filter yet
        assert netlink.attach(v.host, inst.prog_fd, XdpMode.AUTO) is XdpMode.NATIVE
        # forget what the control ping resolved: from here on every
        # neighbour solicitation and advertisement crosses the filter
        v.run(["ip", "-6", "neigh", "flush", "dev", v.peer], check=True)
        subprocess.run(["ip", "-6", "neigh", "flush", "dev", v.host], check=True)

        udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        udp.bind((HOST6, 7001))
        udp.settimeout(0.2)
        servers = [udp]
        for p in (8001, 8002, 8003):
            t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            t.bind((HOST6, p))
            t.listen(8)
            servers.append(t)
        try:
            bad_ping = _ping6(v, BAD6)
            # BAD6 is blocked by a protocol-ANY rule, yet it resolved the host
            neigh = v.run(["ip", "-6", "neigh", "show", HOST6, "dev", v.peer]).stdout
            good_ping = _ping6(v, GOOD6)
            with EventReader(inst.map("pepc_events")) as events:
                r = v.python(CLIENT, HOST6, GOOD6, "7001", "8001,8002,8003", timeout=60)
                assert r.returncode == 0, r.stderr
                good = json.loads(r.stdout)
                datagrams = _received(udp)
                logged = events.poll(500) + events.drain()
            r = v.python(CLIENT, HOST6, BAD6, "", "8001,8002,8003", timeout=60)
            assert r.returncode == 0, r.stderr
            bad = json.loads(r.stdout)
        finally:
            for t in servers:
                t.close()

        assert good_ping and not bad_ping
        assert "lladdr" in neigh and "FAILED" not in neigh, neigh
        assert good["8001"] == "connected"
        assert good["8002"] in ("timeout", "TimeoutError")  # block-tcp6-8002
        assert good["8003"] in ("timeout", "TimeoutError")  # unlisted: default BLOCK
        assert all(bad[p] in ("timeout", "TimeoutError") for p in ("8001", "8002", "8003"))  # block-bad6
        # LOG_ONLY passes and reports the IPv6 addresses
        assert sorted(datagrams) == [b"pepc-7001-0", b"pepc-7001-1", b"pepc-7001-2"]
        mine = [e for e in logged if e["slot"] == slot["log-udp6-7001"]]
        assert len(mine) == 3
        assert all(e["family"] == 6 and e["dport"] == 7001 and e["src"] == e["dst"] == 0 for e in mine)
        assert all((e["src6"], e["dst6"]) == (int(ipaddress.IPv6Address(GOOD6)), int(ipaddress.IPv6Address(HOST6))) for e in mine)
        text = Event.from_record(mine[0], "log-udp6-7001").text()
        assert f"UDP [{GOOD6}]:" in text and f"-> [{HOST6}]:7001" in text

        stats = {rid: dataplane.read_rule_stats(inst, s) for rid, s in slot.items()}
        c = dataplane.read_counters(inst)
        assert stats["allow-ping6-good"]["packets"] >= 2 and stats["allow-ping6-good"]["drops"] == 0
        assert stats["block-bad6"]["drops"] >= 2 + 3  # two echo requests, three SYNs (and retransmissions)
        assert stats["allow-tcp6-8001"]["packets"] >= 3 and stats["allow-tcp6-8001"]["drops"] == 0
        assert stats["block-tcp6-8002"]["drops"] >= 1
        assert c["guard_pass"] >= 1  # the solicitations for the host's address
        assert c["default_drop"] >= 1  # the SYN to 8003
        assert c["ipv6"] >= c["guard_pass"] + c["default_drop"] + sum(s["packets"] for s in stats.values())
        assert c["drop"] == c["default_drop"] + sum(s["drops"] for s in stats.values())

        assert netlink.detach(v.host) is True
        assert _ping6(v, BAD6)  # detached: the filter is gone


def test_attach_replace_detach_semantics():
    from pepc.kernel import loader, netlink

    with pinned_instance(CAPS) as inst, veth_pair() as (a, b):
        other = loader.load_object(object_for(CAPS))
        try:
            assert netlink.query(a) is None
            assert netlink.detach(a) is False
            assert netlink.attach(a, inst.prog_fd, XdpMode.NATIVE) is XdpMode.NATIVE
            # never replaces silently
            with pytest.raises(EnvironmentProblem):
                netlink.attach(a, other.prog_fd, XdpMode.AUTO)
            # compare-and-swap: the wrong expected program is refused ...
            with pytest.raises(EnvironmentProblem):
                netlink.attach(a, other.prog_fd, XdpMode.AUTO, replace_prog_fd=other.prog_fd)
            assert netlink.query(a) == (inst.prog_id, XdpMode.NATIVE)
            # ... the right one swaps atomically, in the mode already in use
            assert netlink.attach(a, other.prog_fd, XdpMode.AUTO, replace_prog_fd=inst.prog_fd) is XdpMode.NATIVE
            assert netlink.query(a) == (other.prog_id, XdpMode.NATIVE)
            assert netlink.detach(a) is True and netlink.query(a) is None

            # generic mode: detach must use the generic flag (read back by detach)
            assert netlink.attach(b, inst.prog_fd, XdpMode.GENERIC) is XdpMode.GENERIC
            assert netlink.query(b) == (inst.prog_id, XdpMode.GENERIC)
            assert netlink.detach(b) is True and netlink.query(b) is None

            with pytest.raises(EnvironmentProblem) as err:
                netlink.attach("pepc-no-such-if", inst.prog_fd)
            assert "does not exist" in err.value.message
        finally:
            other.close()
