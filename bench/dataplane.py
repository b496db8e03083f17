"""Per-packet cost of the XDP program, measured by the kernel (BPF_PROG_TEST_RUN).

In one run, on the same frames:

- baseline: an empty XDP program (`return XDP_PASS`), compiled here;
- pepc with realistic policies of 10, 1,000, 10,000 and 100,000 rules, all
  compiling to the same 8 masks (blocklists by /32 and /24, a rate-limited
  UDP service, allowed TCP services, a logged /24, ICMP blocks, ...), for
  three packets: hit-on-first-mask (a blocklisted source), hit-deep (only
  the last mask matches) and miss-to-default (every mask is looked up);
- the same for IPv6: policies of the same sizes and the same 8 shapes in
  IPv6 (/128 and /64 blocklists, /56, /48, /124 ..., ICMPv6), and the same
  three packets as IPv6 frames (rows "v6 ...");
- xdp-filter's program (xdpfilt_dny_all.o from Debian's libxdp1, all
  features on: Ethernet, IPv4/IPv6 and port lookups) when installed.

Each number is the median over ROUNDS of the kernel's average over REPEAT
runs. Needs root. Prints ns/packet, the ratio to the empty program, and
pepc / xdp-filter.
"""

from __future__ import annotations

import glob
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pepc.compiler import layout  # noqa: E402
from pepc.compiler.codegen import render_header  # noqa: E402
from pepc.compiler import compile_program  # noqa: E402
from pepc.policy.config import Config  # noqa: E402
from pepc.simulate.frames import IPPROTO_TCP, build_frame, build_frame6  # noqa: E402
from pepc.policy.model import Action, Location, Policy, PortRange, Prefix, Protocol, Rule  # noqa: E402
from pepc.compiler.objbuild import build_object  # noqa: E402

REPEAT = 1_000_000
ROUNDS = 5
SIZES = tuple(int(x) for x in __import__("os").environ.get("PEPC_BENCH_SIZES", "10,1000,10000,100000").split(","))
CAPS = layout.Capacities(max_rules=131072, max_entries=131072, max_masks=128, ring_bytes=262144)
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
LOC = Location("bench.yaml", 1, 1)

EMPTY_C = """\
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int empty(struct xdp_md *ctx) { return XDP_PASS; }
char LICENSE[] SEC("license") = "GPL";
"""


def _ip(a: int, b: int = 0, c: int = 0, d: int = 0) -> int:
    return (a << 24) | (b << 16) | (c << 8) | d


def _p(addr: int, plen: int) -> tuple[Prefix]:
    return (Prefix(addr & ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF), plen),)


def _port(p: int) -> tuple[PortRange]:
    return (PortRange(p, p),)


# Eight rule shapes = eight masks, in falling priority (so mask order is A..H).
# Each shape draws its addresses from its own first octet, so the three
# bench packets match exactly what they are meant to.
def _rule(shape: int, i: int) -> Rule:
    rid = f"{'ABCDEFGH'[shape]}-{i:06d}"
    if shape == 0:  # blocklisted hosts
        return Rule(rid, Action.BLOCK, LOC, priority=300, src=_p(_ip(11) + i + 1, 32))
    if shape == 1:  # blocklisted networks
        return Rule(rid, Action.BLOCK, LOC, priority=250, src=_p(_ip(12) | (i << 8), 24))
    if shape == 2:  # a rate-limited UDP service per host
        return Rule(
            rid, Action.RATE_LIMIT, LOC, priority=200, protocol=Protocol.UDP, dst=_p(_ip(13) + i, 32), dports=_port(53),
            rate_limit_bps=10**12, burst_bytes=10**12,
        )
    if shape == 3:  # partner networks to HTTPS hosts
        return Rule(
            rid, Action.ALLOW, LOC, priority=150, protocol=Protocol.TCP, src=_p(_ip(14, i % 256), 16), dst=_p(_ip(15) + i, 32),
            dports=_port(443),
        )
    if shape == 4:  # logged web subnets
        return Rule(rid, Action.LOG_ONLY, LOC, priority=100, protocol=Protocol.TCP, dst=_p(_ip(16) | (i << 8), 24), dports=_port(80))
    if shape == 5:  # a management network to hosts
        return Rule(rid, Action.ALLOW, LOC, priority=50, src=_p(_ip(17), 8), dst=_p(_ip(18) + i, 32))
    if shape == 6:  # no ICMP to these hosts
        return Rule(rid, Action.BLOCK, LOC, priority=20, protocol=Protocol.ICMP, dst=_p(_ip(19) + i, 32))
    return Rule(rid, Action.ALLOW, LOC, priority=10, protocol=Protocol.TCP, dst=_p(_ip(20) | (i << 4), 28), dports=_port(22))


def policy(n: int) -> Policy:
    return Policy("/bench", tuple(_rule(k % 8, k // 8) for k in range(n)))


# The same eight shapes in IPv6: shape k draws from 2001:db8:(0x11 + k)::/48
# (and its second address set from the next /48), like the v4 octets.
def _ip6(k: int, low: int = 0) -> int:
    return (0x20010DB8 << 96) | ((0x11 + k) << 80) | low


def _p6(addr: int, plen: int) -> tuple[Prefix]:
    return (Prefix(addr & (((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1)), plen, True),)


def _rule6(shape: int, i: int) -> Rule:
    rid = f"v6{'ABCDEFGH'[shape]}-{i:06d}"
    any6 = _p6(0, 0)
    if shape == 0:  # blocklisted hosts
        return Rule(rid, Action.BLOCK, LOC, priority=300, src=_p6(_ip6(0, i + 1), 128), dst=any6)
    if shape == 1:  # blocklisted /64s
        return Rule(rid, Action.BLOCK, LOC, priority=250, src=_p6(_ip6(1, i << 64), 64), dst=any6)
    if shape == 2:
        return Rule(
            rid, Action.RATE_LIMIT, LOC, priority=200, protocol=Protocol.UDP, src=any6, dst=_p6(_ip6(2, i), 128),
            dports=_port(53), rate_limit_bps=10**12, burst_bytes=10**12,
        )
    if shape == 3:  # partner /56s to HTTPS hosts
        return Rule(
            rid, Action.ALLOW, LOC, priority=150, protocol=Protocol.TCP, src=_p6(_ip6(3, (i % 256) << 72), 56),
            dst=_p6(_ip6(4, 0x10000 + i), 128), dports=_port(443),
        )
    if shape == 4:  # logged web /64s
        return Rule(rid, Action.LOG_ONLY, LOC, priority=100, protocol=Protocol.TCP, src=any6, dst=_p6(_ip6(5, i << 64), 64), dports=_port(80))
    if shape == 5:  # a management /48 to hosts
        return Rule(rid, Action.ALLOW, LOC, priority=50, src=_p6(_ip6(6), 48), dst=_p6(_ip6(7, i), 128))
    if shape == 6:  # no ICMPv6 to these hosts
        return Rule(rid, Action.BLOCK, LOC, priority=20, protocol=Protocol.ICMPV6, src=any6, dst=_p6(_ip6(8, i), 128))
    return Rule(rid, Action.ALLOW, LOC, priority=10, protocol=Protocol.TCP, src=any6, dst=_p6(_ip6(9, i << 4), 124), dports=_port(22))


def policy6(n: int) -> Policy:
    return Policy("/bench6", tuple(_rule6(k % 8, k // 8) for k in range(n)))


OUTSIDE = _ip(99, 0, 0, 1)  # matches no rule of any shape
FRAMES = {
    "hit-first": build_frame(_ip(11) + 1, OUTSIDE, IPPROTO_TCP, 40000, 80),  # blocklisted source: mask 0
    "hit-deep": build_frame(OUTSIDE, _ip(20) | 1, IPPROTO_TCP, 40000, 22),  # only the last mask
    "miss": build_frame(OUTSIDE, OUTSIDE + 1, IPPROTO_TCP, 40000, 12345),  # every mask, then default
}
OUTSIDE6 = (0x20010DB8 << 96) | (0x99 << 80) | 1
FRAMES6 = {
    "hit-first": build_frame6(_ip6(0, 1), OUTSIDE6, IPPROTO_TCP, 40000, 80),
    "hit-deep": build_frame6(OUTSIDE6, _ip6(9, 1), IPPROTO_TCP, 40000, 22),
    "miss": build_frame6(OUTSIDE6, OUTSIDE6 + 1, IPPROTO_TCP, 40000, 12345),
}


def measure(prog_fd: int, frame: bytes) -> float:
    from pepc.kernel.testrun import test_run

    return float(test_run(prog_fd, frame, repeat=REPEAT).duration_ns)


def main() -> int:
    from pepc.kernel import dataplane, loader
    from pepc.simulate.evaluate import evaluate
    from pepc.simulate.frames import parse_frame

    work = Path(tempfile.mkdtemp(prefix="pepc-bench-"))
    (work / "empty.c").write_text(EMPTY_C)
    subprocess.run(
        ["clang", "-O2", "-g", "-target", "bpf", f"-I/usr/include/{__import__('os').uname().machine}-linux-gnu",
         "-c", str(work / "empty.c"), "-o", str(work / "empty.o")],
        check=True,
    )
    config = Config(default_action=Action.ALLOW, capacities=CAPS)
    empty_policy = policy(0)
    (work / "pepc_policy.h").write_text(render_header(compile_program(empty_policy, config, NOW), empty_policy))
    build_object(work, work / "pepc_xdp.o")

    programs: dict[str, object] = {"empty": loader.load_object(work / "empty.o")}
    frames: dict[str, dict[str, bytes]] = {"empty": FRAMES, "empty v6": FRAMES6}
    programs["empty v6"] = programs["empty"]
    masks: dict[str, int] = {}
    for family, make, fams in (("", policy, FRAMES), ("v6 ", policy6, FRAMES6)):
        for n in SIZES:
            t0 = time.perf_counter()
            prog = compile_program(make(n), config, NOW)
            t1 = time.perf_counter()
            inst = loader.load_object(work / "pepc_xdp.o")
            dataplane.load_program(inst, prog, gen=0)
            t2 = time.perf_counter()
            name = f"{family}pepc {n:,} rules"
            programs[name], frames[name] = inst, fams
            masks[name] = len(prog.masks) + len(prog.masks6)
            # the packets do what they are meant to, per the simulator
            want = {"hit-first": "BLOCK", "hit-deep": "ALLOW", "miss": "DEFAULT"}
            for kind, frame in fams.items():
                got = evaluate(prog, parse_frame(frame).packet).action_name
                assert got == want[kind] or (n < 8 and kind == "hit-deep"), (name, kind, got)
            print(f"# {name}: {len(prog.entries):,} entries, {masks[name]} masks; "
                  f"compile {t1 - t0:.2f} s, load+write {t2 - t1:.2f} s")

    xdpfilt = sorted(glob.glob("/usr/lib/*/bpf/xdpfilt_dny_all.o") + glob.glob("/usr/lib/bpf/xdpfilt_dny_all.o"))
    if xdpfilt:
        programs["xdp-filter"] = loader.load_object(xdpfilt[0])
        programs["xdp-filter v6"] = programs["xdp-filter"]
        frames["xdp-filter"], frames["xdp-filter v6"] = FRAMES, FRAMES6
        print(f"# xdp-filter: {xdpfilt[0]}")
    else:
        print("# xdp-filter: not installed (apt-get install xdp-tools libxdp1)")

    # ROUNDS interleaved rounds, so drift on a noisy machine hits everyone alike
    samples: dict[tuple[str, str], list[float]] = {}
    for _ in range(ROUNDS):
        for name, inst in programs.items():
            for kind, frame in frames[name].items():
                samples.setdefault((name, kind), []).append(measure(inst.prog_fd, frame))
    ns = {k: statistics.median(v) for k, v in samples.items()}

    def base(name: str, what: str) -> str:
        return f"{what} v6" if name.startswith("v6") or name.endswith("v6") else what

    print(f"\nns/packet (median of {ROUNDS} x {REPEAT:,} BPF_PROG_TEST_RUN repetitions); ratio to the empty program")
    header = f"{'program':<24}{'masks':>6}" + "".join(f"{k:>22}" for k in FRAMES)
    print(header)
    for name in programs:
        row = f"{name:<24}{masks.get(name, '-')!s:>6}"
        for kind in FRAMES:
            v = ns[(name, kind)]
            row += f"{v:>12.1f} ({v / ns[(base(name, 'empty'), kind)]:>5.2f}x)"
        print(row)

    if "xdp-filter" in programs:
        print("\npepc / xdp-filter (same frames)")
        for name in programs:
            if "pepc" in name:
                xf = base(name, "xdp-filter")
                print(f"{name:<24}" + "".join(f"{kind:>12} {ns[(name, kind)] / ns[(xf, kind)]:5.2f}" for kind in FRAMES))

    for family in ("", "v6 "):
        first, last = f"{family}pepc {SIZES[0]:,} rules", f"{family}pepc {SIZES[-1]:,} rules"
        print(f"\nflatness, {last} / {first} at {masks[first]} masks:")
        for kind in FRAMES:
            print(f"  {kind:<10} {ns[(last, kind)] / ns[(first, kind)]:5.2f}")
    for inst in {id(i): i for i in programs.values()}.values():
        inst.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
