"""Checker benchmark: generated policies of the shapes operators have.

Shapes (each deterministic for its size and seed):

- estate: mostly host/port allows (some from client subnets), rate limits
  on service ports, block lists scoped to a DMZ, logging of partner
  networks, some port ranges and wide CIDRs, a default-deny catch-all, and
  about 5% of rules that overlap another one on purpose.
- a, enterprise host firewall: thousands of /32 blocks, a few hundred
  service allows, /16-/28 nets of mixed actions, wide port-range rules with
  any source and destination (reply ports, ephemeral ranges), catch-alls.
- b, merged threat feeds: /32 blocks inside /24s and /16s the feeds also
  list (duplicates across feeds), partner allows carved out of them, a
  few service allows.
- c, 1% wide rules over specific ones: host/port rules of every action,
  and 1% rules with any source over /8-/16 destinations and port ranges.
- d, many arbitrary port ranges: every rule a random source and
  destination port range over a /16-/24, mixed actions and priorities.

For every shape and size it prints the time of `pepc.checker.analyze`
(wall and CPU, without the compiler's capacity check) as `pepc check`
runs it, split over as many worker processes as it picks (`jobs`;
pepc/checker/workers.py), and the wall time of the same analysis in one
process (`1-job`, which must report the same findings); the peak RSS of
the processes that ran it (each case runs in its own forked child; the
larger of it and its workers) and the findings per code. The baseline,
measured in the same run, is the same analysis with the candidate index
replaced by a scan of every atom (the naive pairwise implementation,
O(n^2)); it runs where it finishes within --naive-cap (estimated from the
previous size), and the run checks that both report the same findings.

    .venv/bin/python bench/check.py [SIZES...] [--shapes a,b,c,d] [--naive-cap SECONDS]

Targets (2 cores, pure Python): shapes a-d at 20,000 rules < 5 s each,
100,000 < 30 s each.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import random
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pepc.checker import analyze, workers  # noqa: E402
from pepc.checker.space import Space  # noqa: E402
from pepc.policy.config import Config  # noqa: E402
from pepc.policy.model import Action, Location, Policy, PortRange, Prefix, Protocol, Rule  # noqa: E402

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
SERVICE_PORTS = (22, 25, 53, 80, 443, 3306, 5432, 6379, 8080, 8443)


def _host(rng: random.Random, used: set[int], base: int, bits: int) -> int:
    while True:
        addr = base | rng.getrandbits(bits)
        if addr not in used and addr & 0xFF not in (0, 255):
            used.add(addr)
            return addr


def estate(n: int, seed: int = 1) -> Policy:
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


def _loc(i: int) -> Location:
    return Location(f"policies.d/generated-{i // 1000:04d}.yaml", 3 + 6 * (i % 1000), 5)


def _any_port_range(rng: random.Random) -> PortRange:
    lo = rng.randint(1, 65000)
    return PortRange(lo, min(0xFFFF, lo + rng.choice((1, 10, 100, 1000, 5000))))


def _net(rng: random.Random, plen: int, base: int = 0, base_len: int = 0) -> Prefix:
    bits = rng.getrandbits(plen - base_len) if plen > base_len else 0
    return Prefix(base | (bits << (32 - plen)), plen)


def enterprise(n: int, seed: int = 1) -> Policy:
    """(a) An enterprise host firewall, as issue 13 measured it: /32
    blocks, service allows, /16-/28 nets of mixed actions, wide port-range
    rules with any source and destination, catch-alls."""
    rng = random.Random(seed)
    rules: list[Rule] = []
    n_wide = max(4, n // 20)  # ~1,000 at 20k
    n_nets = max(4, n // 10)  # ~2,000 at 20k
    n_services = max(4, min(300, n // 60))  # a few hundred
    hosts: set[int] = set()
    actions = (Action.ALLOW, Action.BLOCK, Action.LOG_ONLY, Action.BLOCK)
    for i in range(n - 3):
        rid = f"a{i:06d}"
        if i < n_wide:
            # reply ports and ephemeral ranges, from anywhere to anywhere
            proto = rng.choice((Protocol.TCP, Protocol.UDP))
            if rng.random() < 0.5:
                ports = (rng.choice((PortRange(32768, 60999), PortRange(49152, 65535), PortRange(1024, 65535))),)
            else:
                ports = (_any_port_range(rng),)
            rule = Rule(rid, rng.choice((Action.ALLOW, Action.ALLOW, Action.BLOCK, Action.LOG_ONLY)), _loc(i),
                        priority=rng.choice((10, 20, 50)), protocol=proto, dports=ports)
        elif i < n_wide + n_nets:
            plen = rng.randint(16, 28)
            side = rng.random() < 0.5
            net = _net(rng, plen, 0x0A000000, 8) if side else _net(rng, plen)
            rule = Rule(rid, rng.choice(actions), _loc(i), priority=rng.choice((50, 100, 150)),
                        **({"dst": (net,)} if side else {"src": (net,)}))
        elif i < n_wide + n_nets + n_services:
            port = rng.choice(SERVICE_PORTS)
            rule = Rule(rid, Action.ALLOW, _loc(i), priority=100, protocol=Protocol.TCP,
                        dst=(Prefix(_host(rng, hosts, 0x0A000000, 24), 32),), dports=(PortRange(port, port),))
        else:
            rule = Rule(rid, Action.BLOCK, _loc(i), priority=200, src=(Prefix(rng.randrange(0x01000000, 0xDF000000), 32),))
        rules.append(rule)
    # catch-alls: established replies allowed, the rest logged then denied
    rules.append(Rule(f"a{n - 3:06d}", Action.ALLOW, _loc(n - 3), priority=5, protocol=Protocol.TCP,
                      sports=(PortRange(80, 80), PortRange(443, 443))))
    rules.append(Rule(f"a{n - 2:06d}", Action.LOG_ONLY, _loc(n - 2), priority=1, dst=(Prefix.parse("10.0.0.0/8"),)))
    rules.append(Rule(f"a{n - 1:06d}", Action.BLOCK, _loc(n - 1), priority=0))
    return Policy("policies.d", tuple(rules))


def threat_feeds(n: int, seed: int = 1) -> Policy:
    """(b) Merged threat feeds: /32s inside /24s and /16s also listed,
    the same entry in several feeds, partner allows carved out."""
    rng = random.Random(seed)
    rules: list[Rule] = []
    n16 = max(2, n // 500)
    n24 = max(4, n // 50)
    sixteens = [_net(rng, 16, 0x01000000 * rng.randint(1, 200), 0) for _ in range(n16)]
    sixteens = [Prefix(p.addr & 0xFFFF0000, 16) for p in sixteens]
    twentyfours = [Prefix((rng.choice(sixteens).addr if rng.random() < 0.5 else rng.randrange(0x01000000, 0xDF000000)) & 0xFFFFFF00
                          | (rng.getrandbits(8) << 8 if rng.random() < 0.5 else 0), 24) for _ in range(n24)]
    twentyfours = [Prefix(p.addr & 0xFFFFFF00, 24) for p in twentyfours]
    singles: list[Prefix] = []
    for i in range(n - 1):
        rid = f"b{i:06d}"
        feed = i % 4
        prio = (100, 100, 110, 120)[feed]
        what = rng.random()
        if i < n16:
            pfx = sixteens[i]
        elif i < n16 + n24:
            pfx = twentyfours[i - n16]
        elif what < 0.03 and singles:
            pfx = rng.choice(singles)  # listed by another feed too
        elif what < 0.05:
            # a partner inside a listed net, allowed above the feeds
            outer = rng.choice(twentyfours)
            rules.append(Rule(rid, Action.ALLOW, _loc(i), priority=300, protocol=Protocol.TCP,
                              src=(Prefix(outer.addr | rng.randint(1, 254), 32),), dports=(PortRange(443, 443),)))
            continue
        elif what < 0.06:
            rules.append(Rule(rid, Action.ALLOW, _loc(i), priority=50, protocol=Protocol.TCP,
                              dst=(Prefix(0x0A000000 | rng.getrandbits(16) << 8, 24),),
                              dports=(PortRange(rng.choice(SERVICE_PORTS), rng.choice(SERVICE_PORTS)),) if False else
                              (PortRange(p := rng.choice(SERVICE_PORTS), p),)))
            continue
        elif what < 0.5:
            outer = rng.choice(twentyfours if rng.random() < 0.7 else sixteens)
            pfx = Prefix(outer.addr | rng.getrandbits(32 - outer.plen), 32)
            singles.append(pfx)
        else:
            pfx = Prefix(rng.randrange(0x01000000, 0xDF000000), 32)
            singles.append(pfx)
        rules.append(Rule(rid, Action.BLOCK, _loc(i), priority=prio, src=(pfx,)))
    rules.append(Rule(f"b{n - 1:06d}", Action.ALLOW, _loc(n - 1), priority=0))
    return Policy("policies.d", tuple(rules))


def wide_over_specific(n: int, seed: int = 1) -> Policy:
    """(c) 1% wide rules (any source, /8-/16 destinations, port ranges)
    over host/port rules of every action."""
    rng = random.Random(seed)
    hosts: set[int] = set()
    rules: list[Rule] = []
    actions = (Action.ALLOW, Action.ALLOW, Action.BLOCK, Action.LOG_ONLY)
    for i in range(n - 1):
        rid = f"c{i:06d}"
        if i % 100 == 0:
            plen = rng.choice((8, 12, 16))
            dst = _net(rng, plen, 0x0A000000, 8) if plen > 8 else Prefix(0x0A000000, 8)
            # mostly underneath the specific rules; one in ten above them
            above = rng.random() < 0.1
            rule = Rule(rid, rng.choice(actions), _loc(i), priority=150 if above else rng.choice((20, 50)),
                        protocol=rng.choice((Protocol.TCP, Protocol.UDP)), dst=(dst,),
                        dports=(_any_port_range(rng),) if above or rng.random() < 0.7 else (PortRange(0, 0xFFFF),))
        else:
            port = rng.choice(SERVICE_PORTS) if rng.random() < 0.7 else rng.randint(1024, 65535)
            src = (Prefix(0, 0),) if rng.random() < 0.6 else (_net(rng, 24, 0xC0A80000, 16),)
            act = rng.choice(actions + (Action.RATE_LIMIT,))
            rule = Rule(rid, act, _loc(i), priority=100, protocol=rng.choice((Protocol.TCP, Protocol.UDP)), src=src,
                        dst=(Prefix(_host(rng, hosts, 0x0A000000, 24), 32),), dports=(PortRange(port, port),),
                        rate_limit_bps=1_048_576 if act is Action.RATE_LIMIT else 0)
        rules.append(rule)
    rules.append(Rule(f"c{n - 1:06d}", Action.BLOCK, _loc(n - 1), priority=0))
    return Policy("policies.d", tuple(rules))


def port_ranges(n: int, seed: int = 1) -> Policy:
    """(d) Many arbitrary port ranges over /16-/24 networks."""
    rng = random.Random(seed)
    rules: list[Rule] = []
    for i in range(n - 1):
        rid = f"d{i:06d}"
        proto = rng.choice((Protocol.TCP, Protocol.UDP))
        dst = _net(rng, rng.choice((16, 20, 24)), 0x0A000000, 8)
        src = (Prefix(0, 0),) if rng.random() < 0.7 else (_net(rng, rng.choice((8, 16)), 0, 0),)
        sports = (_any_port_range(rng),) if rng.random() < 0.2 else (PortRange(0, 0xFFFF),)
        rules.append(Rule(rid, rng.choice((Action.ALLOW, Action.BLOCK, Action.LOG_ONLY)), _loc(i),
                          priority=rng.choice((10, 20, 30, 40)), protocol=proto, src=src, dst=(dst,),
                          sports=sports, dports=(_any_port_range(rng),)))
    rules.append(Rule(f"d{n - 1:06d}", Action.BLOCK, _loc(n - 1), priority=0))
    return Policy("policies.d", tuple(rules))


SHAPES = {"estate": estate, "a": enterprise, "b": threat_feeds, "c": wide_over_specific, "d": port_ranges}


def comparable(findings: list) -> list:
    """Findings as the baseline must reproduce them: all of it, except
    which partners a capped finding names (the first ones each index
    happens to meet). A capped pair tier (higher priority: correlation and
    generalization together) may name partners of only one of its codes,
    so it counts once per rule and tier."""
    out, capped = [], set()
    for f in findings:
        if "there may be more" in f.message:
            capped.add(("capped", "equal" if f.code == "conflict" else "higher", f.rule, f.severity))
        elif "cut short" in f.message:
            out.append((f.code, f.rule, f.loc, f.severity))
        else:
            out.append(f)
    return out + sorted(capped)


def _case(shape: str, n: int, naive: bool, jobs: int | None) -> dict:
    """One measurement, in a child: generation excluded from the times;
    the CPU time counts the analysis's worker processes too."""
    policy = SHAPES[shape](n)
    atoms = len(Space.build(list(policy.live_rules(NOW))).boxes)  # what the analysis sizes its split by
    gc.collect()
    t0 = os.times()
    w0 = time.perf_counter()
    findings = analyze(policy, Config(), NOW, naive_index=naive, jobs=jobs)
    wall = time.perf_counter() - w0
    t1 = os.times()
    cpu = sum(t1[k] - t0[k] for k in range(4))  # self and reaped children, user and system
    counts = collections.Counter(f.code for f in findings)
    return {"atoms": atoms, "wall": wall, "cpu": cpu, "counts": dict(counts), "findings": repr(comparable(findings)),
            "jobs": workers.jobs_for(atoms, jobs)}


def measure(shape: str, n: int, naive: bool, jobs: int | None = None) -> dict:
    """`_case` in a forked child; adds the peak RSS (MiB) of it and of
    the analysis's workers (the larger)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        try:
            got = _case(shape, n, naive, jobs)
            got["worker_rss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            out = json.dumps(got).encode()
        except BaseException as err:  # noqa: BLE001 - reported by the parent
            out = json.dumps({"error": repr(err)}).encode()
        with os.fdopen(w, "wb") as f:
            f.write(out)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, _, usage = os.wait4(pid, 0)
    got = json.loads(data)
    got["rss"] = max(usage.ru_maxrss / 1024, got.get("worker_rss", 0))
    return got


def summary(counts: dict) -> str:
    return " ".join(f"{code}={counts[code]}" for code in sorted(counts))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[1000, 10000, 20000, 100000])
    ap.add_argument("--shapes", default="a,b,c,d", help="comma-separated: " + ", ".join(SHAPES))
    ap.add_argument("--naive-cap", type=float, default=60.0, help="skip the naive baseline where it would take longer (s)")
    ap.add_argument("--naive-max", type=int, default=10000, help="largest first size the naive baseline runs at unestimated")
    args = ap.parse_args(argv)
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")
    print(f"{'shape':>6} {'rules':>7} {'atoms':>7} {'wall s':>7} {'jobs':>4} {'cpu s':>7} {'RSS MiB':>8} {'1-job s':>8} "
          f"{'naive s':>8} {'naive MiB':>9} {'speed-up':>8}  findings")
    ok = True
    for shape in args.shapes.split(","):
        naive_rate = None  # seconds per rule^2, from the last naive run
        for n in args.sizes:
            got = measure(shape, n, naive=False)
            if "error" in got:
                print(f"{shape:>6} {n:>7}  !! {got['error']}")
                ok = False
                continue
            one = measure(shape, n, naive=False, jobs=1) if got["jobs"] > 1 else got
            if "error" in one:
                print(f"{shape:>6} {n:>7}  !! in one process: {one['error']}")
                ok = False
                continue
            if one["findings"] != got["findings"]:
                ok = False
                print(f"  !! the analysis in one process reports different findings for shape {shape} at n={n}")
            naive_text, nrss, ratio = "-", "-", "-"
            estimate = naive_rate * n * n if naive_rate else (0.0 if n <= args.naive_max else float("inf"))
            if estimate <= args.naive_cap:
                base = measure(shape, n, naive=True, jobs=1)
                naive_rate = base["wall"] / (n * n)
                naive_text, nrss, ratio = f"{base['wall']:8.2f}", f"{base['rss']:9.0f}", f"{base['wall'] / one['wall']:7.1f}x"
                if base["findings"] != got["findings"]:
                    ok = False
                    print(f"  !! the naive baseline reports different findings for shape {shape} at n={n}")
            else:
                if estimate == float("inf"):
                    naive_text, ratio = "-", "-"
                else:
                    naive_text, ratio = f"~{estimate:.0f}", f"~{estimate / one['wall']:.0f}x"
            print(f"{shape:>6} {n:>7} {got['atoms']:>7} {got['wall']:7.2f} {got['jobs']:>4} {got['cpu']:7.2f} {got['rss']:8.0f} "
                  f"{one['wall']:8.2f} "
                  f"{naive_text:>8} {nrss:>9} {ratio:>8}  {summary(got['counts'])}", flush=True)
    print("wall/cpu: the analysis as `pepc check` runs it (split over `jobs` processes, pepc/checker/workers.py;")
    print("          cpu counts every process); 1-job: the same in one process, which must report the same findings")
    print("naive: same analysis in one process, candidate index replaced by a scan of every atom (O(n^2));")
    print("       speed-up = naive / 1-job;")
    print("       '~' marks an estimate from the previous size where it would exceed --naive-cap")
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0 if ok else 1



if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
