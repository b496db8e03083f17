"""Apply benchmark: first apply and one-rule change at 1k / 10k / 100k rules.

For each size, in one run, on a real kernel (root):
  - compile alone (fresh, no previous assignments)          -> "compile"
  - first apply (no instance: build, load, fill both
    generations with batch calls, pin)                         -> target < 2 s at 100k
  - one-rule change, end to end through apply_policy
    (read live, compile, diff, write, flip, RCU barrier,
    sync old generation)                                       -> target < 100 ms at 100k
  - the check gate (`pepc check`'s analysis, which apply runs before any
    write) is timed apart, once per size, and added in the last column
  - baseline for the change: rewriting the inactive generation in full
    and flipping (pepc.kernel.dataplane.load_program), what an apply
    without deltas would do; printed as a ratio.
Also measures the RCU barrier against a plain array update (it must be a
real grace period: milliseconds, not microseconds).

Rules are synthetic: one /32 source BLOCK rule each (one map entry), plus
a handful of port rules so masks are not trivial. Policies are built in
memory (the YAML loader is timed separately by bench/loader, if present).
"""

from __future__ import annotations

import os
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from pepc import layout
from pepc.config import Config
from pepc.model import Action, Location, Policy, Prefix, PortRange, Protocol, Rule

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
SIZES = [int(x) for x in os.environ.get("PEPC_BENCH_SIZES", "1000,10000,100000").split(",")]


def rules(n: int) -> list[Rule]:
    loc = Location("bench.yaml", 1, 1)
    out = [
        Rule(f"r{i:06d}", Action.BLOCK, loc, src=(Prefix((10 << 24) | (i + 1), 32),))
        for i in range(n - 4)
    ]
    out += [
        Rule("web", Action.ALLOW, loc, priority=100, protocol=Protocol.TCP, dst=(Prefix.parse("192.168.1.0/24"),),
             dports=(PortRange(80, 80), PortRange(443, 443))),
        Rule("api", Action.RATE_LIMIT, loc, priority=100, protocol=Protocol.TCP, dst=(Prefix.parse("192.168.1.200/32"),),
             dports=(PortRange(8000, 8099),), rate_limit_bps=1 << 20),
        Rule("dns", Action.ALLOW, loc, protocol=Protocol.UDP, sports=(PortRange(53, 53),)),
        Rule("icmp", Action.ALLOW, loc, protocol=Protocol.ICMP),
    ]
    return out


def caps_for(n: int) -> layout.Capacities:
    return layout.Capacities(max_rules=max(1024, 1 << (n + 16).bit_length()), max_entries=max(4096, 1 << (2 * n + 64).bit_length()), max_masks=64, ring_bytes=4096 * 4)


def ms(s: float) -> str:
    return f"{s * 1000:8.1f} ms"


def barrier_check() -> None:
    import ctypes

    from pepc.kernel.sync import RcuBarrier, _check, _libbpf

    b = RcuBarrier()
    t_bar = []
    for _ in range(10):
        t = time.perf_counter()
        b.wait()
        t_bar.append(time.perf_counter() - t)
    b.close()
    lib = _libbpf()
    fd = _check(lib.bpf_map_create(2, b"pepc_bench", 4, 4, 1, None), "create")
    k, v = ctypes.c_uint32(0), ctypes.c_uint32(1)
    t_plain = []
    for _ in range(10):
        t = time.perf_counter()
        lib.bpf_map_update_elem(fd, ctypes.byref(k), ctypes.byref(v), 0)
        t_plain.append(time.perf_counter() - t)
    os.close(fd)
    mb, mp = statistics.median(t_bar), statistics.median(t_plain)
    print(f"RCU barrier (array-of-maps update): median {mb * 1e3:.2f} ms; plain array update {mp * 1e6:.1f} us; ratio {mb / mp:,.0f}x")
    print("  (a grace period: the kernel's synchronize_rcu() runs inside the update)\n")


def bench_size(n: int, tmp: Path) -> dict:
    from pepc.compiler import compile_program
    from pepc.kernel import dataplane
    from pepc.kernel.loader import open_instance
    from pepc.reconcile.apply import apply_policy, unload_instance

    tag = secrets.token_hex(3)
    caps = caps_for(n)
    cfg = Config(
        default_action=Action.ALLOW,
        capacities=caps,
        pin_root=f"/sys/fs/bpf/pepc-bench-{tag}",
        state_dir=str(tmp / "state"),
        run_dir=str(tmp / "run"),
    )
    inst_name = f"b{tag}"
    rs = rules(n)
    pol = Policy("/bench", tuple(rs))
    out: dict = {"n": n}
    try:
        from pepc.reconcile.apply import check_errors

        t = time.perf_counter()
        errs = check_errors(pol, cfg, NOW)
        out["check"] = time.perf_counter() - t
        assert not errs, errs[:3]
        t = time.perf_counter()
        program = compile_program(pol, cfg, NOW)
        out["compile"] = time.perf_counter() - t
        out["entries"] = len(program.entries)

        r1 = apply_policy(pol, cfg, NOW, instance=inst_name, write_audit=False, check=False)
        out["first"] = r1.duration_s
        out["first_writes"] = r1.writes
        out["first_calls"] = r1.syscalls
        out["first_t"] = r1.timings

        r0 = apply_policy(pol, cfg, NOW, instance=inst_name, write_audit=False, check=False)
        out["noop"] = r0.duration_s
        out["noop_writes"] = r0.writes

        extra = Rule("zz_added", Action.BLOCK, Location("bench.yaml", 2, 1), src=(Prefix.parse("172.16.0.0/12"),),
                     protocol=Protocol.TCP, dports=(PortRange(22, 22),))
        pol2 = Policy("/bench", tuple(rs) + (extra,))
        r2 = apply_policy(pol2, cfg, NOW, instance=inst_name, write_audit=False, check=False)
        out["change"] = r2.duration_s
        out["change_writes"] = r2.writes
        out["change_calls"] = r2.syscalls
        out["change_t"] = r2.timings

        # baseline: full rewrite of the inactive generation + flip
        program2 = compile_program(pol2, cfg, NOW)
        inst = open_instance(Path(cfg.pin_root) / inst_name)
        try:
            t = time.perf_counter()
            dataplane.load_program(inst, program2)
            out["baseline"] = time.perf_counter() - t
            out["baseline_writes"] = caps.max_masks + len(program2.entries) + caps.max_rules + 1 + 1
        finally:
            inst.close()
    finally:
        unload_instance(cfg, inst_name)
        try:
            os.rmdir(cfg.pin_root)
        except OSError:
            pass
    return out


def main() -> int:
    if os.geteuid() != 0:
        print("bench/apply.py needs root (it loads XDP programs)", file=sys.stderr)
        return 3
    print(f"pepc apply benchmark, {os.cpu_count()} CPUs, kernel {os.uname().release}\n")
    barrier_check()
    results = []
    with tempfile.TemporaryDirectory(prefix="pepc-bench-") as tmp:
        for n in SIZES:
            results.append(bench_size(n, Path(tmp)))
    print("end to end (apply_policy; the check gate is timed apart and added in the last column):")
    print(f"{'rules':>7} {'entries':>8} | {'compile':>11} | {'first apply':>11} {'writes':>7} {'calls':>5} | "
          f"{'no-op':>11} {'wr':>3} | {'1-rule chg':>11} {'writes':>6} {'calls':>5} | {'check gate':>11} {'chg+check':>11}")
    for r in results:
        print(
            f"{r['n']:>7} {r['entries']:>8} | {ms(r['compile'])} | {ms(r['first'])} {r['first_writes']:>7} {r['first_calls']:>5} | "
            f"{ms(r['noop'])} {r['noop_writes']:>3} | {ms(r['change'])} {r['change_writes']:>6} {r['change_calls']:>5} | "
            f"{ms(r['check'])} {ms(r['change'] + r['check'])}"
        )
    print("\nthe kernel side of a one-rule change: minimal delta (both generations, flip, 2 RCU grace periods)")
    print("vs the baseline, a full rewrite of the inactive generation + flip (pepc.kernel.dataplane.load_program):")
    print(f"{'rules':>7} | {'delta writes':>12} {'delta time':>11} | {'full writes':>11} {'full time':>11} | {'writes ratio':>12} {'time ratio':>10}")
    for r in results:
        t = r["change_t"]
        ours = t.get("write", 0.0) + t.get("barrier", 0.0)
        print(
            f"{r['n']:>7} | {r['change_writes']:>12} {ms(ours):>11} | {r['baseline_writes']:>11} {ms(r['baseline']):>11} | "
            f"{r['change_writes'] / r['baseline_writes']:>12.5f} {ours / r['baseline']:>9.3f}x"
        )
    print("\nbreakdown (ms):")
    for r in results:
        for label, key in (("first apply", "first_t"), ("1-rule change", "change_t")):
            parts = ", ".join(f"{k} {v * 1000:.1f}" for k, v in r[key].items())
            print(f"  {r['n']:>7} {label:<14} {parts}")
    big = results[-1]
    print()
    print(f"target first apply of {big['n']} rules < 2 s: {big['first']:.3f} s -> {'OK' if big['first'] < 2 else 'MISSED'}"
          f" (plus the check gate: {big['check']:.1f} s)")
    ok = big["change"] < 0.1
    print(f"target one-rule change at {big['n']} rules < 100 ms: {big['change'] * 1000:.1f} ms -> {'OK' if ok else 'MISSED'}")
    print(f"  with the check gate: {(big['change'] + big['check']) * 1000:.1f} ms")
    if not ok:
        t = big["change_t"]
        top = sorted(t.items(), key=lambda kv: -kv[1])[:3]
        print("  dominated by: " + ", ".join(f"{k} {v * 1000:.1f} ms ({100 * v / big['change']:.0f}%)" for k, v in top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
