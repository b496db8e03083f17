"""Compile benchmark: 1k / 10k / 100k generated, realistic rules.

Prints, per size: YAML parse time of the policy text (the baseline measured
in the same run, PyYAML's C loader when available), load time (pepc's
loader: parse + validate + resolve), compile time (wall and CPU: on a
shared machine wall time includes waiting for a core), atoms, entries,
masks, and the ratio compile / YAML parse. Target: 100k rules compile in < 10 s
on a 2-core machine.

Then, per size, the incremental compiler (pepc.compiler.IncrementalCompiler)
after a first compile: the time of one compile after a one-rule change
(a rule's ports changed, a rule added, a rule removed; `previous` is the
last program's assignments, as the reconciler passes them), median of a
few changes, and the ratio to the fresh compile of the same run; "own-prev"
is a change with previous = inc.last_assignments() (no map comparison). Every
incremental result is checked equal to compile_program once per size.

    .venv/bin/python bench/compile.py [SIZES...]
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pepc.compiler import layout  # noqa: E402
from pepc.compiler import Assignments, IncrementalCompiler, compile_program, rule_stats  # noqa: E402
from pepc.policy.config import Config  # noqa: E402

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _ip(rng: random.Random, plen: int) -> str:
    addr = rng.getrandbits(32) & ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF) if plen else 0
    text = ".".join(str((addr >> s) & 0xFF) for s in (24, 16, 8, 0))
    return text if plen == 32 else f"{text}/{plen}"


def generate(n: int, seed: int = 1) -> dict:
    """A policy set of n rules shaped like a real estate: block lists of
    single hosts, service allows to hosts and subnets, port ranges, rate
    limits, logging rules, a few lists. Deterministic for (n, seed)."""
    rng = random.Random(seed)
    services = {
        "web": [80, 443, "8000-8099"],
        "dns": [53],
        "ephemeral": ["32768-60999"],
        "mgmt": [22, 3389, "9100-9110"],
    }
    networks = {
        "office": ["192.168.0.0/16", "172.16.0.0/12"],
        "monitoring": ["10.255.0.0/24", "10.255.1.0/24"],
    }
    rules = []
    for i in range(n):
        kind = rng.random()
        prio = rng.choice((0, 0, 10, 50, 100, 200))
        rid = f"r{i:06d}"
        if kind < 0.40:
            rule = {"id": rid, "action": "BLOCK", "priority": prio, "src": {"ip": _ip(rng, 32)}}
        elif kind < 0.60:
            rule = {
                "id": rid, "action": "ALLOW", "priority": prio,
                "src": {"ip": _ip(rng, rng.choice((0, 8, 16, 24)))},
                "dst": {"ip": _ip(rng, 32), "port": rng.choice((22, 80, 443, 8080, 5432, rng.randint(1024, 65535))), "protocol": "TCP"},
            }
        elif kind < 0.70:
            rule = {
                "id": rid, "action": "ALLOW", "priority": prio,
                "src": {"ip": "office"},
                "dst": {"ip": _ip(rng, rng.choice((24, 32))), "port": rng.choice(("web", "mgmt", "dns")), "protocol": rng.choice(("TCP", "UDP", "ANY"))},
            }
        elif kind < 0.80:
            lo = rng.randint(1024, 60000)
            rule = {
                "id": rid, "action": rng.choice(("ALLOW", "BLOCK")), "priority": prio,
                "dst": {"ip": _ip(rng, 24), "port": f"{lo}-{lo + rng.randint(1, 5000)}", "protocol": "UDP"},
            }
        elif kind < 0.90:
            rule = {
                "id": rid, "action": "RATE_LIMIT", "priority": prio, "rate_limit_bps": rng.choice((125000, 1048576, 12500000)),
                "dst": {"ip": _ip(rng, 32), "port": rng.choice((53, 80, 443, 8080)), "protocol": rng.choice(("TCP", "UDP"))},
            }
        elif kind < 0.95:
            rule = {"id": rid, "action": "LOG_ONLY", "priority": prio, "src": {"ip": _ip(rng, 16)}, "dst": {"ip": "monitoring"}}
        else:
            rule = {
                "id": rid, "action": "BLOCK", "priority": prio,
                "src": {"ip": [_ip(rng, rng.choice((24, 32))) for _ in range(rng.randint(2, 4))]},
                "dst": {"protocol": "ICMP"},
            }
        rules.append(rule)
    return {"networks": networks, "services": services, "policies": rules}


PER_FILE = 1000


def dump(doc: dict) -> list[str]:
    """The policy as YAML files of PER_FILE rules each (the names and
    services in the first), as a repository would split it."""
    rules = doc["policies"]
    head = {k: v for k, v in doc.items() if k != "policies"}
    texts = []
    for i in range(0, max(len(rules), 1), PER_FILE):
        part = dict(head) if i == 0 else {}
        part["policies"] = rules[i : i + PER_FILE]
        texts.append(yaml.dump(part, sort_keys=False, default_flow_style=None, width=200))
    return texts


def load(texts: list[str]):
    """The Policy for the files, through pepc's loader from a temporary directory."""
    from pepc.loader import load_policy

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "policies.d"
        d.mkdir()
        for i, text in enumerate(texts):
            (d / f"generated-{i:04d}.yaml").write_text(text)
        t0 = time.perf_counter()
        policy = load_policy(d)
        return policy, time.perf_counter() - t0


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [1000, 10000, 100000]
    # large enough for the biggest run: what is measured is the compiler
    caps = layout.Capacities(max_rules=262144, max_entries=4 * 1024 * 1024, max_masks=4096)
    config = Config(capacities=caps)
    rows = []
    print(f"{'rules':>8} {'yaml s':>8} {'load s':>8} {'compile s':>10} {'cpu s':>7} {'atoms':>8} {'entries':>8} {'masks':>6} {'compile/yaml':>13}")
    for n in sizes:
        doc = generate(n)
        texts = dump(doc)
        t0 = time.perf_counter()
        for text in texts:
            yaml.load(text, Loader=YAML_LOADER)
        t_yaml = time.perf_counter() - t0
        policy, t_load = load(texts)
        t0, c0 = time.perf_counter(), time.process_time()
        program = compile_program(policy, config, NOW)
        t_compile, c_compile = time.perf_counter() - t0, time.process_time() - c0
        stats = rule_stats(policy, program)
        atoms = sum(s.atoms for s in stats.values())
        print(
            f"{n:>8} {t_yaml:>8.2f} {t_load:>8.2f} {t_compile:>10.2f} {c_compile:>7.2f} {atoms:>8} {len(program.entries):>8} "
            f"{len(program.masks):>6} {t_compile / t_yaml:>12.2f}x"
        )
        rows.append((n, policy, t_compile))
    print()
    print(f"{'rules':>8} {'first s':>8} {'change ms':>10} {'add ms':>8} {'remove ms':>10} {'own-prev ms':>10} {'fresh s':>8} {'fresh/change':>13}")
    for n, policy, t_fresh in rows:
        print(incremental_row(n, policy, config, t_fresh))
    return 0


def incremental_row(n: int, policy, config: Config, t_fresh: float) -> str:
    import dataclasses
    import statistics

    from pepc.policy.model import PortRange, Policy

    inc = IncrementalCompiler(config)
    t0 = time.perf_counter()
    program = inc.compile(policy, NOW)
    t_first = time.perf_counter() - t0
    rules = list(policy.rules)
    rng = random.Random(n)
    times: dict[str, list[float]] = {"change": [], "add": [], "remove": []}
    for step in range(15):
        kind = ("change", "add", "remove")[step % 3]
        i = rng.randrange(len(rules))
        if kind == "change":
            lo = rng.randint(1024, 60000)
            rules[i] = dataclasses.replace(rules[i], dports=(PortRange(lo, lo + rng.randint(0, 300)),))
        elif kind == "add":
            rules.append(dataclasses.replace(rules[i], id=f"{rules[i].id}-copy{step}"))
        else:
            rules.pop(i)
        pol = Policy(policy.root, tuple(rules))
        previous = Assignments.from_program(program)  # an equal, new object each time, as from the live slots
        t0 = time.perf_counter()
        program = inc.compile(pol, NOW, previous)
        times[kind].append(time.perf_counter() - t0)
    if program != compile_program(pol, config, NOW, previous):
        raise AssertionError("incremental result differs from compile_program")
    # the same changes with previous = inc.last_assignments() (the reconciler
    # knows the live state holds the last result): no map comparison
    own = []
    for step in range(5):
        i = rng.randrange(len(rules))
        rules[i] = dataclasses.replace(rules[i], dports=(PortRange(100 + step, 200 + step),))
        pol = Policy(policy.root, tuple(rules))
        previous = inc.last_assignments()
        t0 = time.perf_counter()
        program = inc.compile(pol, NOW, previous)
        own.append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    return (
        f"{n:>8} {t_first:>8.2f} {med['change']:>10.1f} {med['add']:>8.1f} {med['remove']:>10.1f} "
        f"{statistics.median(own) * 1000:>10.1f} {t_fresh:>8.2f} {t_fresh * 1000 / med['change']:>12.0f}x"
    )


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
