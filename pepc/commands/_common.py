"""Argument helpers shared by the commands that read a policy directory
(check, compile, simulate, plan, apply, ...), so they all spell PATH,
--config and --now the same way and load the same way."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone

from pepc.policy.config import Config
from pepc.policy.diagnostics import EnvironmentProblem, Finding, PolicyError
from pepc.loader import load_config, load_policy
from pepc.loader.values import ValueProblem, parse_time
from pepc.policy.model import Policy

FORMATS = ("text", "json", "sarif", "github")


def parse_now(text: str) -> datetime:
    """argparse type for --now: an RFC 3339 time (or Unix seconds), as UTC."""
    try:
        return parse_time(text)
    except ValueProblem as p:
        raise argparse.ArgumentTypeError(f"{p.message}; {p.help}" if p.help else p.message) from None


def add_policy_args(parser: argparse.ArgumentParser, *, path_help: str = "the policy directory (e.g. policies.d/)") -> None:
    parser.add_argument("path", metavar="PATH", help=path_help)
    parser.add_argument(
        "--config", metavar="FILE", default=None, help="host configuration (default: pepc.yaml beside PATH, if present)"
    )
    parser.add_argument(
        "--now",
        metavar="RFC3339",
        type=parse_now,
        default=None,
        help="the clock used for expiry, e.g. 2026-12-01T00:00:00Z (default: the current time)",
    )


def add_format_arg(parser: argparse.ArgumentParser, *, default: str = "text") -> None:
    parser.add_argument(
        "--format", choices=FORMATS, default=default, help=f"output format (default: {default})"
    )


def add_output_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", metavar="FILE", default=None, help="write the report to FILE instead of stdout")


def now_of(args: argparse.Namespace) -> datetime:
    now = getattr(args, "now", None)
    return now if now is not None else datetime.now(timezone.utc)


@dataclass(frozen=True)
class Loaded:
    """What loaded of a policy directory and its host configuration.

    With `findings`, `policy` is the Policy of the files that loaded cleanly
    (None when none did) and `without` lists the others; `config` is None
    when the configuration is what failed."""

    policy: Policy | None
    config: Config | None
    findings: tuple[Finding, ...] = ()
    without: tuple[str, ...] = ()


def load_what_loads(args: argparse.Namespace) -> Loaded:
    """Load the policy at args.path and the host configuration, keeping
    whatever of them loaded (`pepc check` reports on it)."""
    findings: list[Finding] = []
    config = None
    policy = None
    without: tuple[str, ...] = ()
    try:
        config = load_config(getattr(args, "config", None), args.path)
    except PolicyError as err:
        findings.extend(err.findings)
    try:
        policy = load_policy(args.path)
    except PolicyError as err:
        findings.extend(err.findings)
        policy, without = err.partial, err.without
    return Loaded(policy, config, tuple(findings), without)


def load_all(args: argparse.Namespace) -> tuple[Policy, Config]:
    """Load the policy at args.path and the host configuration; raises
    PolicyError with the findings of both if either cannot be loaded."""
    loaded = load_what_loads(args)
    if loaded.findings or loaded.policy is None or loaded.config is None:
        raise PolicyError(loaded.findings)
    return loaded.policy, loaded.config


def write_output(text: str, output: str | None) -> None:
    """Write a report to FILE (atomically) or stdout."""
    if not output or output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    tmp = f"{output}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, output)
    except OSError as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise EnvironmentProblem(f"cannot write {output}: {err.strerror or err}", "check the path and its permissions") from None
