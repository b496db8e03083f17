"""`pepc check PATH`: load and validate a policy directory and report every
problem found: load errors, lifecycle (expired/disabled) and rule anomalies.
When some files cannot be loaded, the anomalies of the others are still
reported, marked as computed without them; the exit code is 2 all the same."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from pepc.checker import analyze
from pepc.commands._common import add_format_arg, add_output_arg, add_policy_args, load_what_loads, now_of, write_output
from pepc.compiler import capacity_findings
from pepc.policy.diagnostics import ExitCode, Finding, Severity
from pepc.loader import lifecycle_findings
from pepc.report.findings import DEFAULT_MAX_FINDINGS, render_findings

NAME = "check"
HELP = "validate a policy directory and report problems (CI)"
ORDER = 10
DESCRIPTION = (
    "Load PATH (a policies.d/ directory), validate it and report every problem found, "
    "with file:line:column and a stable code. Expired and disabled rules are reported as info."
)


def register(parser: argparse.ArgumentParser) -> None:
    add_policy_args(parser)
    add_format_arg(parser)
    parser.add_argument(
        "--fail-on",
        choices=("error", "warning", "info"),
        default="error",
        help="exit 1 if a finding has this severity or worse (default: error)",
    )
    parser.add_argument(
        "--max-findings",
        type=int,
        default=DEFAULT_MAX_FINDINGS,
        metavar="N",
        help=f"text: show at most N entries (a group of findings is one), 0 for all (default: {DEFAULT_MAX_FINDINGS}); "
        "json/sarif/github always carry every finding",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="processes the conflict analysis is split over (default: the CPUs available, for policies of "
        "20,000 atoms or more; env PEPC_CHECK_JOBS); 1 runs it in this process",
    )
    add_output_arg(parser)


def run(args: argparse.Namespace) -> int:
    if args.max_findings < 0:
        print("pepc check: error: --max-findings must be 0 (all) or more", file=sys.stderr)
        return ExitCode.INVALID
    if args.jobs is not None and args.jobs < 1:
        print("pepc check: error: --jobs must be 1 or more", file=sys.stderr)
        return ExitCode.INVALID
    loaded = load_what_loads(args)
    policy, config = loaded.policy, loaded.config
    findings = list(loaded.findings)
    summary: dict = {}
    if policy is not None and config is not None:
        # Also when some files failed to load: an error in one file must not
        # hide the anomalies of the others (the summary says what was left out).
        now = now_of(args)
        analysis = lifecycle_findings(policy, now) + analyze(policy, config, now, capacity=capacity_findings, jobs=args.jobs)
        findings += [
            f if (sev := config.severity_of(f.code, f.severity)) == f.severity else dataclasses.replace(f, severity=sev)
            for f in analysis
        ]
        summary = {"files": len(policy.files), "rules": len(policy.rules)}
        if loaded.findings:
            summary["computed_without"] = list(loaded.without)
    if loaded.findings:
        write_output(render_findings(findings, args.format, summary={"ok": False, **summary}, max_findings=args.max_findings), args.output)
        return ExitCode.INVALID
    fail_on = Severity.parse(args.fail_on)
    failing = any(f.severity >= fail_on for f in findings)
    write_output(render_findings(findings, args.format, summary={"ok": not failing, **summary}, max_findings=args.max_findings), args.output)
    return ExitCode.FINDINGS if failing else ExitCode.OK
