"""Options shared by the host commands (plan, apply, status, stats, unload,
history): --instance, and --config for the commands that take no PATH."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pepc.policy.config import Config
from pepc.policy.diagnostics import EnvironmentProblem
from pepc.loader import load_config
from pepc.reconcile.apply import check_instance_name


def instance_name(text: str) -> str:
    """argparse type for --instance (bad names are usage errors, exit 2)."""
    try:
        return check_instance_name(text)
    except EnvironmentProblem as e:
        raise argparse.ArgumentTypeError(f"{e.message}: {e.hint}") from None


def add_instance_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--instance",
        metavar="NAME",
        type=instance_name,
        default="default",
        help="which pepc instance (pins under <pin_root>/NAME/, default: default)",
    )


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="host configuration for pin_root / state_dir / run_dir (default: built-in defaults)",
    )


def add_iface_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--iface",
        metavar="IF",
        action="append",
        default=None,
        help="interface to attach to (repeatable; default: `interfaces` of pepc.yaml). "
        "When interfaces are given, the instance is detached from any other interface.",
    )


def add_text_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")


def host_config(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None), None)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()
