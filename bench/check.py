"""Checker benchmark: 1k / 10k / 100k generated, realistic rules.

The policies look like a real estate: mostly host/port allows (some
from client subnets), rate limits on service ports, block lists scoped to
a DMZ, logging of partner networks, some port ranges and wide CIDRs, a
default-deny catch-all, and about 5% of rules that overlap another one on
purpose (exceptions carved out of allows, duplicates, subnet blocks under
host allows, equal-priority blocks of an allowed host).

For every size it prints the time of `pepc.checker.analyze` (wall and CPU,
without the compiler's capacity check) and the findings per code. The
baseline, measured in the same run, is the same analysis with the
candidate index replaced by a scan of every atom (the naive pairwise
implementation, O(n²)); it runs on the sizes where it finishes within the
time cap, and the run checks that both report the same findings.

    .venv/bin/python bench/check.py [SIZES...] [--naive-cap SECONDS]

Targets (2 cores, pure Python): 10,000 rules < 2 s, 100,000 < 30 s.
"""

from __future__ import annotations

import argparse
import collections
import gc
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pepc.checker import analyze  # noqa: E402
from pepc.config import Config  # noqa: E402
from pepc.model import Action, Location, Policy, PortRange, Prefix, Protocol, Rule  # noqa: E402

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
SERVICE_PORTS = (22, 25, 53, 80, 443, 3306, 5432, 6379, 8080, 8443)


def _host(rng: random.Random, used: set[int], base: int, bits: int) -> int:
    while True:
        addr = base | rng.getrandbits(bits)
        if addr not in used and addr & 0xFF not in (0, 255):
            used.add(addr)
            return addr


def generate(n: int, seed: int = 1) -> Policy:
    """n rules; deterministic for (n, seed)."""
    rng = random.Random(seed)
    hosts: set[int] = set()
    rules: list[Rule] = []
    host_rules: list[Rule] = []
    clients = [Prefix((0xC0A80000 | rng.getrandbits(16)) & 0xFFFFFF00, 24) for _ in range(200)]  # 192.168.x.0/24

    def loc(i: int) -> Location:
        return Location(f"policies.d/generated-{i // 1000:04d}.yaml", 3 + 6 * (i % 1000), 5)

    for i in range(n - 2):
        rid = f"r{i:06d}"
        kind = rng.random()
        if kind < 0.95 or not host_rules:
            kind = rng.random()
            if kind < 0.66:
                src = (Prefix(0, 0),) if rng.random() < 0.5 else (rng.choice(clients),)
                port = rng.choice(SERVICE_PORTS) if rng.random() < 0.7 else rng.randint(1024, 65535)
                rule = Rule(
                    rid, Action.ALLOW, loc(i), priority=100,
                    protocol=rng.choice((Protocol.TCP, Protocol.TCP, Protocol.UDP)),
                    src=src, dst=(Prefix(_host(rng, hosts, 0x0A000000, 24), 32),),
                    dports=(PortRange(port, port),),
                )
                host_rules.append(rule)
            elif kind < 0.76:
                bps = rng.choice((125_000, 1_048_576, 12_500_000))
                port = rng.choice((53, 80, 443, 8080))
                rule = Rule(
                    rid, Action.RATE_LIMIT, loc(i), priority=100, protocol=rng.choice((Protocol.TCP, Protocol.UDP)),
                    dst=(Prefix(_host(rng, hosts, 0x0A000000, 24), 32),), dports=(PortRange(port, port),),
                    rate_limit_bps=bps,
                )
            elif kind < 0.86:
                rule = Rule(  # block list, scoped to the DMZ
                    rid, Action.BLOCK, loc(i), priority=200,
                    src=(Prefix(rng.randrange(0x01000000, 0x64000000), 32),),  # 1.0.0.0 - 99.255.255.255
                    dst=(Prefix.parse("198.18.0.0/15"),),
                )
            elif kind < 0.91:
                rule = Rule(  # partner networks, logged towards monitoring
                    rid, Action.LOG_ONLY, loc(i), priority=100,
                    src=(Prefix(rng.randrange(100 << 8, 150 << 8) << 16, 16),),  # 100.0.0.0 - 149.255.0.0
                    dst=(Prefix(0xAC100000 | rng.getrandbits(12) << 8, 24),),  # 172.16.0.0/12
                )
            elif kind < 0.96:
                lo = rng.randint(1024, 60000)
                rule = Rule(
                    rid, Action.ALLOW, loc(i), priority=100, protocol=Protocol.UDP,
                    dst=(Prefix(_host(rng, hosts, 0x0A000000, 24), 32),),
                    dports=(PortRange(lo, lo + rng.randint(1, 5000)),),
                )
            else:
                plen = rng.choice((8, 12, 16))
                rule = Rule(  # wide client ranges to a reserved service subnet
                    rid, Action.ALLOW, loc(i), priority=100, protocol=Protocol.TCP,
                    src=(Prefix(rng.randrange(100 << (plen - 8), 150 << (plen - 8)) << (32 - plen), plen),),
                    dst=(Prefix(0x0AC80000 | rng.getrandbits(8) << 8, 24),),  # 10.200.x.0/24
                    dports=(PortRange(443, 443),),
                )
        else:
            # ~5%: overlaps with an existing host rule, on purpose
            base = rng.choice(host_rules)
            what = rng.random()
            if what < 0.4:
                rule = Rule(  # an exception: one client subnet blocked from an allowed service
                    rid, Action.BLOCK, loc(i), priority=150, protocol=base.protocol,
                    src=(rng.choice(clients),), dst=base.dst, dports=base.dports,
                )
            elif what < 0.6:
                rule = Rule(  # a duplicate written elsewhere
                    rid, base.action, loc(i), priority=base.priority, protocol=base.protocol,
                    src=base.src, dst=base.dst, dports=base.dports,
                )
            elif what < 0.8:
                d = base.dst[0]
                rule = Rule(  # a subnet block under the host allows
                    rid, Action.BLOCK, loc(i), priority=50,
                    dst=(Prefix(d.addr & 0xFFFFFF00, 24),),
                )
            else:
                rule = Rule(  # the same host blocked at equal priority: only the tie-break decides
                    rid, Action.BLOCK, loc(i), priority=100, dst=base.dst,
                )
        rules.append(rule)
    # the DMZ's public services (what the block lists are there to restrict), and default deny
    rules.append(
        Rule(
            f"r{n - 2:06d}", Action.ALLOW, loc(n - 2), priority=100, protocol=Protocol.TCP,
            dst=(Prefix.parse("198.18.0.0/15"),), dports=(PortRange(80, 80), PortRange(443, 443)),
        )
    )
    rules.append(Rule(f"r{n - 1:06d}", Action.BLOCK, loc(n - 1), priority=0))
    return Policy("policies.d", tuple(rules))


def run(policy: Policy, naive: bool) -> tuple[float, float, list]:
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    findings = analyze(policy, Config(), NOW, capacity=False, naive_index=naive)
    return time.perf_counter() - w0, time.process_time() - c0, findings


def comparable(findings: list) -> list:
    """Findings as the baseline must reproduce them: all of it, except
    which partners a capped pairwise finding names (the first ones each
    index happens to meet)."""
    out = []
    for f in findings:
        if "there may be more" in f.message:
            out.append((f.code, f.rule, f.loc, f.severity))
        else:
            out.append(f)
    return out


def summary(findings: list) -> str:
    counts = collections.Counter(f.code for f in findings)
    return " ".join(f"{code}={counts[code]}" for code in sorted(counts))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[1000, 5000, 10000, 100000])
    ap.add_argument("--naive-cap", type=float, default=120.0, help="skip the naive baseline where it would take longer (s)")
    args = ap.parse_args(argv)
    print(f"{'rules':>7} {'atoms':>7} {'wall s':>7} {'cpu s':>7} {'naive s':>8} {'speed-up':>8}  findings")
    naive_rate = None  # seconds per rule², from the last naive run
    ok = True
    for n in args.sizes:
        policy = generate(n)
        atoms = sum(len(r.src) * len(r.dst) * len(r.sports) * len(r.dports) for r in policy.rules)
        wall, cpu, findings = run(policy, naive=False)
        naive_text, ratio = "-", "-"
        estimate = naive_rate * n * n if naive_rate else 0.0
        if estimate <= args.naive_cap:
            nwall, _, nfindings = run(policy, naive=True)
            naive_rate = nwall / (n * n)
            naive_text, ratio = f"{nwall:8.2f}", f"{nwall / wall:7.1f}x"
            if comparable(nfindings) != comparable(findings):
                ok = False
                print(f"  !! the naive baseline reports different findings at n={n}")
        else:
            naive_text = f"~{estimate:.0f}"
            ratio = f"~{estimate / wall:.0f}x"
        print(f"{n:>7} {atoms:>7} {wall:7.2f} {cpu:7.2f} {naive_text:>8} {ratio:>8}  {summary(findings)}")
    print("naive: same analysis, candidate index replaced by a scan of every atom (O(n^2));")
    print("       '~' marks an estimate from the previous size where it would exceed --naive-cap")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
