"""Loader cost beyond the YAML parse.

Generates 10,000 rules over 100 files (plus networks and services) in a
temporary directory, then times, in the same run:

- baseline: bare `yaml.load` of every file with the loader class pepc uses
  (CSafeLoader when libyaml is present) -- the cost of parsing alone;
- pepc: `load_policy` of the directory (read, parse with locations, schema
  validation, semantic resolution into the IR).

Prints both, the loader's own time (pepc - baseline) and the ratio.
Best of several interleaved rounds, so a noisy neighbour does not decide the numbers.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pepc.policy import gcpause  # noqa: E402
from pepc.loader import LOADER_CLASS, load_policy  # noqa: E402

FILES = 100
RULES_PER_FILE = 100
ROUNDS = 7


def generate(root: Path) -> None:
    actions = ["ALLOW", "BLOCK", "LOG_ONLY", "RATE_LIMIT"]
    for f in range(FILES):
        lines = [f"# generated file {f}", "networks:"]
        lines.append(f"  net_{f}: [10.{f}.0.0/16, 172.16.{f}.0/24]")
        lines.append("services:")
        lines.append(f"  svc_{f}: [{1000 + f}, \"{2000 + f * 10}-{2000 + f * 10 + 9}\"]")
        lines.append("policies:")
        for r in range(RULES_PER_FILE):
            n = f * RULES_PER_FILE + r
            action = actions[n % 4]
            lines.append(f"  - id: rule_{n:05d}")
            lines.append(f"    description: generated rule {n}")
            lines.append(f"    priority: {n % 1000}")
            lines.append(f"    action: {action}")
            if action == "RATE_LIMIT":
                lines.append(f"    rate_limit_bps: {1000 * (n + 1)}")
            if n % 3 == 0:
                lines.append(f"    src: {{ip: net_{f}, port: any}}")
            else:
                lines.append(f"    src: {{ip: [192.168.{n % 256}.0/24, 10.{n % 256}.{r}.1]}}")
            port = f"svc_{f}" if n % 5 == 0 else str(1 + n % 65535)
            lines.append(f"    dst: {{ip: 203.0.{n % 256}.{r}, port: {port}, protocol: {'TCP' if n % 2 else 'udp'}}}")
            if n % 7 == 0:
                lines.append(f"    expires_at: \"2030-01-{1 + n % 28:02d}T00:00:00Z\"")
            if n % 11 == 0:
                lines.append("    labels: {team: net, tier: \"1\"}")
        (root / f"policy_{f:03d}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def interleaved(fns: dict, rounds: int = ROUNDS) -> dict:
    """Best time of each function, run alternately so that a burst of load
    from elsewhere on the machine hits both sides alike."""
    times: dict = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(ts) for name, ts in times.items()}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "policies.d"
        root.mkdir()
        generate(root)
        paths = sorted(root.iterdir())

        def bare() -> None:
            # with the cyclic GC held off, as load_policy holds it off
            with gcpause.paused():
                for p in paths:
                    with open(p, "rb") as fh:
                        yaml.load(fh.read(), Loader=LOADER_CLASS)

        def with_gc() -> None:
            real = gcpause.paused
            gcpause.paused = contextlib.nullcontext  # type: ignore[assignment]
            try:
                load_policy(root)
            finally:
                gcpause.paused = real

        policy = load_policy(root)
        assert len(policy.rules) == FILES * RULES_PER_FILE, len(policy.rules)
        best = interleaved({"yaml": bare, "pepc": lambda: load_policy(root), "gc": with_gc})
        t_yaml, t_load = best["yaml"], best["pepc"]
        print(f"files: {FILES}, rules: {len(policy.rules)}, loader class: {LOADER_CLASS.__name__}")
        print(f"bare yaml.load:  {t_yaml * 1000:8.1f} ms  (baseline)")
        print(f"pepc load_policy:{t_load * 1000:8.1f} ms")
        print(f"  with the cyclic GC running: {best['gc'] * 1000:8.1f} ms ({best['gc'] / t_load:.2f}x)")
        print(f"loader's own time beyond the parse: {(t_load - t_yaml) * 1000:8.1f} ms")
        print(f"ratio load_policy / yaml.load: {t_load / t_yaml:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
