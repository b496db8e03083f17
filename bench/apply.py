"""Apply benchmark: first apply and one-rule change at 1k / 10k / 100k rules.

For each size, in one run, on a real kernel (root):
  - compile alone (fresh, no previous assignments)          -> "compile"
  - first apply (no instance: build, load, fill both
    generations with batch calls, pin)                         -> target < 2 s at 100k
    timed twice: as `pepc apply` runs it, check gate included
    (it runs in a forked child while the parent compiles; the
    program is built and loaded by another child meanwhile),
    and without the gate (check=False)
  - one-rule change, end to end through apply_policy
    (read live, compile, diff, write, flip, RCU barrier,
    sync old generation)                                       -> target < 100 ms at 100k
  - the check gate (the errors of `pepc check`'s analysis, which apply
    runs before any write; decided rule by rule when the config allows)
    is timed apart, once per size, and added in the last column
  - baseline for the change: rewriting the inactive generation in full
    and flipping (pepc.kernel.dataplane.load_program), what an apply
    without deltas would do; printed as a ratio.
Also measures the RCU barrier against a plain array update (it must be a
real grace period: milliseconds, not microseconds).

Rules are synthetic: one /32 source BLOCK rule each (one map entry), plus
a handful of port rules so masks are not trivial. The cold rows build
policies in memory.

The WARM rows are `pepc watch`'s path (pepc.reconcile.session): the same
policy written as a directory of FILES files, loaded through a LoadCache,
converged by a ReconcileSession that takes over the instance the cold rows
left (its first, full, reconcile is a restart with zero writes); then one
rule is changed in one file and timed end to end: cached reload of the
directory + compile + check gate + plan against the mirror + writes, flip
and barriers. The session's gate is incremental (pepc.checker.incremental:
the rules the edit can have changed are decided again; the restart ran the
full analysis); it is reported in its own column, "warm total" is
everything else, and the target row adds it back.
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
FILES = 100
EDITS = 5  # warm one-rule edits per size (the median is reported)
FIRSTS = 3  # first applies with the gate per size (the median is reported)


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
             dports=(PortRange(8000, 8099),), rate_limit_bps=1 << 20, burst_bytes=1 << 20),
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


def _rule_doc(r: Rule) -> str:
    """One rule of rules(n) (or the extra one) as YAML, the same IR once loaded."""
    def ports(ps):
        return "[" + ", ".join(str(p.lo) if p.lo == p.hi else f'"{p.lo}-{p.hi}"' for p in ps) + "]"

    out = [f"  - id: {r.id}", f"    action: {r.action.name}"]
    if r.priority:
        out.append(f"    priority: {r.priority}")
    if r.rate_limit_bps:
        out.append(f"    rate_limit_bps: {r.rate_limit_bps}")
    if r.protocol is not Protocol.ANY:
        out.append(f"    protocol: {r.protocol.name}")
    src = {}
    if r.src != (Prefix(0, 0),):
        src["ip"] = "[" + ", ".join(str(p) for p in r.src) + "]"
    if r.sports != (PortRange(0, 65535),):
        src["port"] = ports(r.sports)
    dst = {}
    if r.dst != (Prefix(0, 0),):
        dst["ip"] = "[" + ", ".join(str(p) for p in r.dst) + "]"
    if r.dports != (PortRange(0, 65535),):
        dst["port"] = ports(r.dports)
    for side, d in (("src", src), ("dst", dst)):
        if d:
            out.append(f"    {side}:")
            out += [f"      {k}: {v}" for k, v in d.items()]
    return "\n".join(out) + "\n"


def write_dir(root: Path, rs: list[Rule]) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    per = max(1, -(-len(rs) // FILES))
    paths = []
    for f in range(0, len(rs), per):
        p = root / f"part{f // per:03d}.yaml"
        p.write_text("policies:\n" + "".join(_rule_doc(r) for r in rs[f:f + per]))
        paths.append(p)
    return paths


def bench_warm(n: int, tmp: Path, cfg: Config, inst_name: str, rs: list[Rule]) -> dict:
    """The watch path on the instance the cold rows left (holding rs)."""
    from pepc.loader import load_policy
    from pepc.loader.cache import LoadCache
    from pepc.reconcile.session import ReconcileSession, settle_heap

    from pepc.reconcile.apply import apply_policy

    out: dict = {}
    # the baseline above left a fresh compile (new slots) live: converge back
    apply_policy(Policy("/bench", tuple(rs)), cfg, NOW, instance=inst_name, write_audit=False, check=False)
    d = tmp / f"dir{n}"
    paths = write_dir(d, rs)
    time.sleep(RACY_WAIT)  # files on a host are older than the cache's racy window
    cache = LoadCache()
    t = time.perf_counter()
    pol = load_policy(d, cache=cache)
    out["cold_load"] = time.perf_counter() - t
    s = ReconcileSession(inst_name, cfg, write_audit=False)  # its gate: pepc.checker.incremental
    t = time.perf_counter()
    r = s.reconcile(pol, NOW, full=True)
    out["restart"] = time.perf_counter() - t
    settle_heap(collect=True)  # what pepc watch does after a full reconcile
    out["restart_writes"] = r.writes
    out["restart_read"] = s.last_read

    # one rule changed in one file, EDITS times (a different file and rule
    # each time: the 8th rule of file k gets another source address); the
    # edit with the median total is reported, with the spread
    edits = []
    per = -(-len(rs) // FILES)
    for k in range(min(EDITS, len(paths))):
        g = k * per + 7
        target = paths[k]
        text = target.read_text()
        old_ip = str(Prefix((10 << 24) | (g + 1), 32))
        assert f"{old_ip}]" in text, (target, old_ip)
        t0 = time.perf_counter()
        target.write_text(text.replace(f"{old_ip}]", f"10.200.{k}.8/32]", 1))
        t = time.perf_counter()
        pol2 = load_policy(d, cache=cache)
        load_s = time.perf_counter() - t
        stats = cache.stats
        r2 = s.reconcile(pol2, NOW, full=False)
        total = time.perf_counter() - t0
        settle_heap(collect=False)
        assert s.last_read == "mirror", s.last_read
        edits.append((total, load_s, stats, r2))
    edits.sort(key=lambda e: e[0])
    total, load_s, stats, r2 = edits[len(edits) // 2]
    out["warm_spread"] = (edits[0][0], edits[-1][0], len(edits))
    out["warm_edits"] = [
        {"total": e[0], "load": e[1], **{k: v for k, v in e[3].timings.items() if v >= 0.0005}} for e in edits
    ]
    out["load_stats"] = stats
    tm = r2.timings
    out["warm"] = {
        "load": load_s,
        "read": tm.get("read", 0.0),
        "compile": tm.get("compile", 0.0),
        "gate": tm.get("check", 0.0),
        "plan": tm.get("plan", 0.0),
        "write": tm.get("write", 0.0) + tm.get("barrier", 0.0) + tm.get("attach", 0.0),
    }
    out["warm_total"] = total - tm.get("check", 0.0)
    out["warm_writes"] = r2.writes
    out["warm_incremental"] = s._compiler.incremental

    # nothing changed: a stat walk and a zero-write reconcile
    t = time.perf_counter()
    pol3 = load_policy(d, cache=cache)
    r3 = s.reconcile(pol3, NOW, full=False)
    out["idle"] = time.perf_counter() - t
    settle_heap(collect=True)
    out["idle_writes"] = r3.writes
    return out


RACY_WAIT = 2.1


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
        errs = check_errors(pol, cfg, NOW, capacity=False)  # as apply's gate (its compile checks capacity)
        out["check"] = time.perf_counter() - t
        assert not errs, errs[:3]
        t = time.perf_counter()
        program = compile_program(pol, cfg, NOW)
        out["compile"] = time.perf_counter() - t
        out["entries"] = len(program.entries)

        gated = []
        for _ in range(FIRSTS):
            t = time.perf_counter()  # wall clock around the call: the gate's fork happens before converge starts its clock
            apply_policy(pol, cfg, NOW, instance=inst_name, write_audit=False, check=True)
            gated.append(time.perf_counter() - t)
            unload_instance(cfg, inst_name)
        gated.sort()
        out["first_gated"] = gated[len(gated) // 2]
        out["first_gated_spread"] = (gated[0], gated[-1])
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
        out.update(bench_warm(n, tmp, cfg, inst_name, list(rs) + [extra]))
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
    print(f"{'rules':>7} {'entries':>8} | {'compile':>11} | {'1st w/ gate':>11} {'first apply':>11} {'writes':>7} {'calls':>5} | "
          f"{'no-op':>11} {'wr':>3} | {'1-rule chg':>11} {'writes':>6} {'calls':>5} | {'check gate':>11} {'chg+check':>11}")
    for r in results:
        print(
            f"{r['n']:>7} {r['entries']:>8} | {ms(r['compile'])} | {ms(r['first_gated'])} {ms(r['first'])} {r['first_writes']:>7} {r['first_calls']:>5} | "
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
    print(f"\nwarm path (pepc watch: LoadCache + ReconcileSession), one rule changed in one of {FILES} files; ms:")
    print(f"{'rules':>7} | {'cold load':>10} {'restart':>9} {'wr':>3} | {'load':>7} {'read':>6} {'compile':>8} {'plan':>7} {'write':>7} | "
          f"{'warm total':>10} {'writes':>6} | {'gate':>9} | {'vs cold chg':>11} | {'idle':>7}")
    for r in results:
        w = r["warm"]
        print(
            f"{r['n']:>7} | {r['cold_load'] * 1000:>10.1f} {r['restart'] * 1000:>9.1f} {r['restart_writes']:>3} | "
            f"{w['load'] * 1000:>7.1f} {w['read'] * 1000:>6.1f} {w['compile'] * 1000:>8.1f} {w['plan'] * 1000:>7.1f} {w['write'] * 1000:>7.1f} | "
            f"{r['warm_total'] * 1000:>10.1f} {r['warm_writes']:>6} | {w['gate'] * 1000:>9.1f} | "
            f"{r['change'] / r['warm_total']:>10.1f}x | {r['idle'] * 1000:>7.1f}"
        )
    for r in results:
        st = r["load_stats"]
        print(f"  {r['n']:>7}: reload parsed {st.parsed} file(s), stat hits {st.stat_hits}, rules resolved {st.rules_resolved}; "
              f"compile incremental: {r['warm_incremental']}; restart read: {r['restart_read']}")
    print("  (vs cold chg: the cold one-rule change through apply_policy, already without YAML loading, over the warm total)")
    for r in results:
        print(f"  {r['n']:>7} edits (ms): " + "; ".join(
            ", ".join(f"{k} {v * 1000:.1f}" for k, v in e.items()) for e in r["warm_edits"]))
    big = results[-1]
    print()
    lo, hi = big["first_gated_spread"]
    print(f"target first apply of {big['n']} rules < 2 s: {big['first']:.3f} s -> {'OK' if big['first'] < 2 else 'MISSED'}; "
          f"with the check gate, as pepc apply runs it (gate in a forked child, overlapped): {big['first_gated']:.3f} s "
          f"(median of {FIRSTS}, {lo:.3f}-{hi:.3f}; the gate alone: {big['check']:.1f} s)")
    ok = big["change"] < 0.1
    print(f"target one-rule change at {big['n']} rules < 100 ms: {big['change'] * 1000:.1f} ms -> {'OK' if ok else 'MISSED'}")
    print(f"  with the check gate: {(big['change'] + big['check']) * 1000:.1f} ms")
    warm_all = big["warm_total"] + big["warm"]["gate"]
    wok = warm_all < 0.1
    wlo, whi, wn = big["warm_spread"]
    print(f"target one-rule change at {big['n']} rules < 100 ms, warm (watch: reload of the directory and the incremental "
          f"check gate included): {warm_all * 1000:.1f} ms -> {'OK' if wok else 'MISSED'} "
          f"(median of {wn} edits, {wlo * 1000:.1f}-{whi * 1000:.1f} ms; gate {big['warm']['gate'] * 1000:.1f} ms)")
    if not wok:
        top = sorted(big["warm"].items(), key=lambda kv: -kv[1])[:3]
        print("  dominated by: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in top))
    if not ok:
        t = big["change_t"]
        top = sorted(t.items(), key=lambda kv: -kv[1])[:3]
        print("  dominated by: " + ", ".join(f"{k} {v * 1000:.1f} ms ({100 * v / big['change']:.0f}%)" for k, v in top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
