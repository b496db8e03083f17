"""`pepc stats`: per-rule and global counters of the live instance.

Per-rule packets / bytes / drops are per-CPU counters summed over CPUs;
rule ids come from the active generation's `pepc_slots`. Rules are sorted
by hits. With --watch SECONDS the counters are read again every SECONDS
and rates (per second) are shown.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from pepc.commands._host import add_config_arg, add_instance_arg, add_text_json, host_config
from pepc.policy.diagnostics import EnvironmentProblem, ExitCode
from pepc.reconcile import diff
from pepc.reconcile.apply import pin_dir

NAME = "stats"
HELP = "show per-rule and global packet counters of the live instance"
ORDER = 43
DESCRIPTION = __doc__.split("\n\n", 1)[1].strip()


def register(parser: argparse.ArgumentParser) -> None:
    add_instance_arg(parser)
    add_config_arg(parser)
    add_text_json(parser)
    parser.add_argument("--rule", metavar="ID", action="append", default=None, help="only this rule (repeatable)")
    parser.add_argument("--watch", metavar="SECONDS", type=float, default=None, help="refresh every SECONDS, with rates")
    parser.add_argument("--count", metavar="N", type=int, default=0, help="with --watch: stop after N refreshes (default: until interrupted)")


def sample(inst) -> dict:
    """One reading: {"rules": [...], "counters": {...}, "t": monotonic}."""
    from pepc.kernel import dataplane

    gen = dataplane.active_gen(inst)
    slots = diff.decode_slots(dict(inst.map(f"pepc_slots_{gen}").items()))
    stats = dataplane.read_all_rule_stats(inst)
    rules = []
    for slot, r in slots.items():
        s = stats.get(slot, {"packets": 0, "bytes": 0, "drops": 0})
        rules.append({"id": r.display_id, "slot": slot, "action": r.fields()["action"], **s})
    rules.sort(key=lambda x: (-x["packets"], x["id"]))
    return {"rules": rules, "counters": dataplane.read_counters(inst), "t": time.monotonic(), "active_gen": gen}


def _filter(s: dict, ids: list[str] | None) -> dict:
    if not ids:
        return s
    return {**s, "rules": [r for r in s["rules"] if r["id"] in ids]}


def _rates(cur: dict, prev: dict | None) -> dict:
    if prev is None:
        return cur
    dt = max(cur["t"] - prev["t"], 1e-9)
    before = {r["slot"]: r for r in prev["rules"]}
    rules = []
    for r in cur["rules"]:
        p = before.get(r["slot"])
        if p is not None and p["id"] == r["id"]:
            r = {**r, **{f"{k}_per_s": (r[k] - p[k]) / dt for k in ("packets", "bytes", "drops")}}
        rules.append(r)
    counters_rate = {k: (v - prev["counters"].get(k, 0)) / dt for k, v in cur["counters"].items()}
    return {**cur, "rules": rules, "counters_per_s": counters_rate, "interval_s": dt}


def render(s: dict) -> str:
    rate = "counters_per_s" in s
    out = []
    hdr = f"{'rule':<32} {'action':<11} {'packets':>12} {'bytes':>14} {'drops':>12}"
    if rate:
        hdr += f" {'pkt/s':>10} {'bytes/s':>12}"
    out.append(hdr)
    for r in s["rules"]:
        line = f"{r['id'][:32]:<32} {r['action']:<11} {r['packets']:>12} {r['bytes']:>14} {r['drops']:>12}"
        if rate:
            line += f" {r.get('packets_per_s', 0):>10.1f} {r.get('bytes_per_s', 0):>12.1f}"
        out.append(line)
    if not s["rules"]:
        out.append("(no rules)")
    out.append("")
    out.append("global counters:")
    c = s["counters"]
    cr = s.get("counters_per_s", {})
    for k, v in c.items():
        if v or k in ("packets", "pass", "drop"):
            out.append(f"  {k:<20} {v:>14}" + (f"  {cr.get(k, 0):>10.1f}/s" if rate else ""))
    return "\n".join(out) + "\n"


def _json(s: dict) -> dict:
    return {k: v for k, v in s.items() if k != "t"}


def run(args: argparse.Namespace) -> int:
    from pepc.kernel.loader import open_instance

    config = host_config(args)
    d = pin_dir(config, args.instance)
    inst = open_instance(d)
    if inst is None:
        raise EnvironmentProblem(f"instance {args.instance!r} is not loaded (nothing pinned at {d})", "run `pepc apply` first")
    try:
        if args.watch is None:
            s = _filter(sample(inst), args.rule)
            if args.format == "json":
                print(json.dumps(_json(s), indent=2))
            else:
                print(render(s), end="")
            return ExitCode.OK
        if args.watch <= 0:
            raise EnvironmentProblem("--watch needs a positive number of seconds")
        prev = None
        n = 0
        while True:
            s = _filter(sample(inst), args.rule)
            shown = _rates(s, prev)
            if args.format == "json":
                print(json.dumps(_json(shown)), flush=True)  # one object per line
            else:
                print(f"--- {time.strftime('%H:%M:%S')}  instance {args.instance}", flush=True)
                print(render(shown), end="", flush=True)
            prev = s
            n += 1
            if args.count and n >= args.count:
                return ExitCode.OK
            time.sleep(args.watch)
    finally:
        inst.close()
        sys.stdout.flush()
