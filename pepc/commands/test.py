"""`pepc test PATH [TESTDIR]`: policy unit tests for CI (like `opa test`).

Each case names a packet and the expected outcome; cases run over the
compiled program, like `pepc simulate`. The file format is documented in
pepc/simulate/policytest.py and docs/cli.md.
"""

from __future__ import annotations

import argparse
import os
import sys

from pepc.commands._common import add_policy_args, load_all, now_of
from pepc.commands.simulate import allow_intermixed
from pepc.policy.diagnostics import EnvironmentProblem, ExitCode
from pepc.simulate.policytest import default_test_dir, junit_xml, load_cases, run_cases

NAME = "test"
HELP = "run policy unit tests (packets with expected actions) for CI"
ORDER = 35
DESCRIPTION = (
    "Run the test cases in TESTDIR (default: tests.d/ beside PATH) against the compiled policy. "
    "Prints one line per failure and a summary 'N passed, M failed'; exits 1 when a test fails. "
    "A test file holds `tests:`, a list of cases with `packet`, `expect` "
    "(ALLOW, BLOCK, LOG_ONLY, RATE_LIMIT, DEFAULT, or the verdict PASS/DROP) and optionally `rule` and `name`."
)


def register(parser: argparse.ArgumentParser) -> None:
    allow_intermixed(parser)
    add_policy_args(parser)
    parser.add_argument("testdir", metavar="TESTDIR", nargs="?", default=None, help="test files (default: tests.d/ beside PATH); a file or a directory")
    parser.add_argument("--junit", metavar="FILE", default=None, help="also write JUnit XML to FILE")
    parser.add_argument("-v", "--verbose", action="store_true", help="print passing cases too")


def run(args: argparse.Namespace) -> int:
    policy, config = load_all(args)
    test_dir = args.testdir or default_test_dir(args.path)
    cases = load_cases(test_dir, policy)
    outcome = run_cases(cases, policy, config, now_of(args))
    out = sys.stdout
    for r in outcome.results:
        if not r.passed:
            what = r.case.name if r.case.name == r.case.packet_text else f"{r.case.name} [{r.case.packet_text}]"
            out.write(f"{r.case.loc}: FAIL {what}: {r.message}\n")
        elif args.verbose:
            out.write(f"{r.case.loc}: ok {r.case.name}\n")
    out.write(f"{outcome.passed} passed, {outcome.failed} failed\n")
    if args.junit:
        tmp = f"{args.junit}.tmp.{os.getpid()}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(junit_xml(outcome))
            os.replace(tmp, args.junit)
        except OSError as err:
            raise EnvironmentProblem(f"cannot write {args.junit}: {err.strerror or err}") from None
    return ExitCode.FINDINGS if outcome.failed else ExitCode.OK
