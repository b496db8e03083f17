"""`pepc diff OLD NEW`: which packets are decided differently, exactly.

Each side is a policy directory, `REV:PATH` (a directory as of a git
revision, e.g. HEAD~1:policies.d) or a bare revision (origin/main: the
other side's directory as of that revision). The report lists the regions
of packets (protocol, source, destination, ports) whose outcome changes,
with the old and new action and rule and one witness packet per region,
checked on both compiled programs by the simulator; then the rules added,
removed and changed. Each side's pepc.yaml (as of its revision) gives its
default action, unless --config names one for both.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from pepc.commands._common import add_output_arg, now_of, parse_now, write_output
from pepc.compiler import compile_program
from pepc.policy.config import Config
from pepc.policy.diagnostics import ExitCode, Finding, PolicyError
from pepc.diff.render import DEFAULT_MAX_REGIONS, RENDERERS, Side
from pepc.loader import load_config, load_policy
from pepc.policy.model import Location, Policy
from pepc.diff.semantic import Kind, PolicyDiff, diff_policies
from pepc.loader.revisions import Checkout, RevisionProblem, directory, located, open_side, split_spec
from pepc.policy.semantics import no_match_action
from pepc.simulate.evaluate import Index

NAME = "diff"
HELP = "show the packets whose verdict or action changes between two policy directories or git revisions"
ORDER = 25
DESCRIPTION = __doc__.split("\n\n", 1)[1].strip()

DEFAULT_DIR = "policies.d"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("old", metavar="OLD", help="DIR, REV:PATH (HEAD~1:policies.d) or REV (origin/main)")
    parser.add_argument("new", metavar="NEW", nargs="?", default=None, help="the same forms (default: the directory of OLD as it is now)")
    parser.add_argument("--config", metavar="FILE", default=None, help="host configuration for both sides (default: each side's pepc.yaml)")
    parser.add_argument("--now", metavar="RFC3339", type=parse_now, default=None, help="the clock used for expiry (default: now)")
    parser.add_argument("--format", choices=tuple(RENDERERS), default="text", help="output format; markdown fits a PR comment (default: text)")
    parser.add_argument(
        "--level", choices=[k.label for k in Kind], default="action",
        help="list regions where the verdict changes, also the action, or also only the deciding rule (default: action)",
    )
    parser.add_argument("--exit-code", action="store_true", help="exit 1 when the verdict of any packet changes")
    parser.add_argument(
        "--max-regions", metavar="N", type=_count, default=DEFAULT_MAX_REGIONS,
        help=f"text and markdown list at most N regions, the most serious first (0: all; default {DEFAULT_MAX_REGIONS}; json lists all)",
    )
    add_output_arg(parser)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return int(text)


def _open(text: str, default_path: str, which: str) -> Checkout:
    try:
        return open_side(text, default_path)
    except RevisionProblem as p:
        raise located(p, Location(f"<{which}>", 1, 1)) from None


def _load(side: Checkout, config_file: str | None) -> tuple[Policy, Config]:
    findings: list[Finding] = []
    policy = config = None
    try:
        config = load_config(config_file, side.path)
    except PolicyError as err:
        findings += side.relocate(err).findings
    try:
        policy = load_policy(side.path)
    except PolicyError as err:
        findings += side.relocate(err).findings
    if findings or policy is None or config is None:
        raise PolicyError(findings)
    return policy, config


def _side(c: Checkout, policy: Policy) -> Side:
    label = c.label if c.revision is not None else c.path
    return Side(label=label, root=policy.root, shown=c.shown, commit=c.commit)


def confirm(d: PolicyDiff, old_index: Index, new_index: Index, level: Kind) -> None:
    """Every listed region's witness, run through both compiled programs,
    gets the outcomes the region claims (else pepc has a bug)."""
    for r in d.shown(level):
        pkt = r.witness
        for want, index in ((r.old, old_index), (r.new, new_index)):
            got = index.evaluate(pkt)
            if got.rule_id != want.rule_id or got.verdict != want.verdict or (got.action or no_match_action(pkt, want.default)) != want.action:
                raise AssertionError(
                    f"the simulator decides {pkt} by {got.rule_id} ({got.action_name}), "
                    f"the region says {want.rule_id} ({want.action_text})"
                )


def _specs(old: str, new: str | None) -> tuple[str, str | None, str]:
    """(OLD, NEW, default directory for bare revisions). NEW omitted: a
    directory OLD is compared as of HEAD with itself now (as `git diff`
    does); a revision OLD with its directory in the work tree now."""
    o_rev, o_path = split_spec(old)
    if new is None:
        if o_rev is None:
            return "HEAD", old, os.path.abspath(old)
        return old, None, o_path or DEFAULT_DIR
    n_rev, n_path = split_spec(new)
    given = o_path if o_rev is None else n_path if n_rev is None else o_path or n_path
    if given is None:
        return old, new, DEFAULT_DIR
    # a directory given as a plain path is where it is now, not git's top-relative form
    is_dir = (o_rev is None and given == o_path) or (n_rev is None and given == n_path)
    return old, new, os.path.abspath(given) if is_dir else given


def run(args: argparse.Namespace) -> int:
    now = now_of(args)
    old_text, new_text, default_dir = _specs(args.old, args.new)
    sides: list[Checkout] = []
    try:
        sides.append(_open(old_text, default_dir, "OLD"))
        if new_text is None:
            first = sides[0]
            assert first.top is not None
            here = os.path.join(first.top, *(first.repo_path or ".").split("/"))
            sides.append(directory(os.path.relpath(here)))
        else:
            sides.append(_open(new_text, default_dir, "NEW"))
        loaded: list[Any] = []
        findings: list[Finding] = []
        for s in sides:
            try:
                loaded.append(_load(s, args.config))
            except PolicyError as err:
                findings += err.findings
        if findings:
            raise PolicyError(findings)
        (op, oc), (np_, nc) = loaded
        d = diff_policies(op, oc.default_action, np_, nc.default_action, now)
        level = Kind[args.level.upper()]
        try:
            old_prog, new_prog = compile_program(op, oc, now), compile_program(np_, nc, now)
        except PolicyError as err:
            raise sides[0].relocate(sides[1].relocate(err)) from None
        confirm(d, Index(old_prog), Index(new_prog), level)
        old_side, new_side = _side(sides[0], op), _side(sides[1], np_)
        limit = None if args.format == "json" else args.max_regions
        write_output(RENDERERS[args.format](d, old_side, new_side, level, limit), args.output)
    finally:
        for s in sides:
            s.close()
    if args.exit_code and d.count(Kind.VERDICT):
        return ExitCode.FINDINGS
    return ExitCode.OK
