"""`pepc apply PATH`: make the instance's live maps equal to PATH.

Refuses a policy with `check` errors (exit 2, live state untouched, audit
line "refused"). Otherwise compiles with the live slot assignments, loads
and attaches the program if needed, writes the minimal delta into the
inactive generation, flips the active generation with one write, and
brings the old generation up to date after an RCU grace period. A no-op
apply writes nothing. Every apply appends a line to the audit trail.

--revision REV applies PATH as of a git commit (the work tree is not
touched; this host's pepc.yaml still gives the settings); the audit trail
records the commit, and `pepc rollback` can return to it.
"""

from __future__ import annotations

import argparse
import time

from pepc.commands._common import add_policy_args, now_of
from pepc.commands._host import add_iface_arg, add_instance_arg, add_text_json, print_json
from pepc.policy.diagnostics import ExitCode, PolicyError
from pepc.loader import load_config, load_policy
from pepc.policy.model import Location
from pepc.reconcile.apply import ApplyResult, apply_policy, record_refusal
from pepc.loader.revisions import Checkout, RevisionProblem, checkout, directory, located, repo_top

NAME = "apply"
HELP = "apply a policy directory to this host's XDP maps (minimal, atomic, crash-safe)"
ORDER = 41
DESCRIPTION = __doc__.split("\n\n", 1)[1].strip()


def register(parser: argparse.ArgumentParser) -> None:
    add_policy_args(parser)
    add_iface_arg(parser)
    add_instance_arg(parser)
    parser.add_argument(
        "--wait", metavar="SECONDS", type=float, default=0.0,
        help="when another apply holds the instance lock, wait up to SECONDS for it (default: fail at once)",
    )
    parser.add_argument(
        "--revision", metavar="REV", default=None,
        help="apply PATH as of this git revision (commit, tag, branch, HEAD~1) instead of the files on disk",
    )
    add_text_json(parser)


def open_revision(path: str, revision: str | None, repo_path: str | None = None) -> Checkout:
    """PATH as it is, or as of `revision` (a located error outside git)."""
    if revision is None:
        return directory(path)
    try:
        if repo_path is not None:
            return checkout(repo_top(path), revision, repo_path)
        return checkout(path, revision, "./")
    except RevisionProblem as p:
        raise located(p, Location(path)) from None


def apply_checkout(args: argparse.Namespace, side: Checkout, started: float, source: dict | None) -> ApplyResult:
    config = load_config(args.config, args.path)  # PolicyError: nothing to audit into yet
    try:
        policy = load_policy(side.path)
    except PolicyError as err:
        err = side.relocate(err)
        record_refusal(config, args.instance, err.findings, args.path, started, source)
        raise err from None
    return apply_policy(
        policy, config, now_of(args), instance=args.instance, iface_names=args.iface, wait=args.wait,
        policy_path=args.path, source=source,
    )


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    with open_revision(args.path, args.revision) as side:
        result = apply_checkout(args, side, started, side.git_record())
    if args.format == "json":
        print_json(result.to_json())
    else:
        print(render_result(result), end="")
    return ExitCode.OK


def render_result(r: ApplyResult) -> str:
    p = r.plan
    out = []
    verb = "applied" if r.result == "applied" else "no changes"
    out.append(f"pepc apply: instance {r.instance!r}: {verb} in {r.duration_s * 1000:.1f} ms")
    how = f"loaded ({p.load_reason})" if p.load_reason else "kept"
    out.append(f"  program {r.prog_id} {how}, active generation {r.generation}")
    if r.attached:
        out.append("  attached: " + ", ".join(f"{i} ({m})" for i, m in r.attached))
    else:
        out.append("  attached: nowhere (pass --iface or set interfaces in pepc.yaml)")
    if r.detached:
        out.append("  detached: " + ", ".join(r.detached))
    c = p.rule_counts
    out.append(f"  rules: {c['added']} added, {c['changed']} changed, {c['removed']} removed")
    if p.drift is not None and p.drift.found:
        out.append("  drift in the active generation: repaired")
    out.append(f"  map elements written: {r.writes} in {r.syscalls} calls")
    for name in sorted(r.per_map):
        out.append(f"    {name:<16} {r.per_map[name]:>7}")
    for note in r.recovered:
        out.append(f"  recovered: {note}")
    t = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in r.timings.items())
    out.append(f"  time: {t}")
    return "\n".join(out) + "\n"
