"""`pepc` command line: discovers the command modules and maps outcomes to exit codes."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback
from types import ModuleType

from pepc import __version__, commands
from pepc.policy import gcpause
from pepc.policy.diagnostics import EnvironmentProblem, ExitCode, PolicyError

EPILOG = """\
exit codes:
  0  success; no findings at or above --fail-on; `plan --exit-code`: no changes
  1  findings at or above --fail-on; `test`: a test failed; `plan --exit-code`: changes pending
  2  the policy cannot be loaded (syntax, schema or semantic errors), or bad usage
  3  environment error: missing tool, no permission, the kernel refused

Run `pepc COMMAND --help` for a command's options.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 already; keep the code documented
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(ExitCode.INVALID)


def discover() -> list[ModuleType]:
    mods = []
    for info in pkgutil.iter_modules(commands.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"pepc.commands.{info.name}")
        if hasattr(mod, "run") and hasattr(mod, "NAME"):
            mods.append(mod)
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.NAME))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pepc",
        description="Compile a directory of YAML packet-filter policies into XDP artifacts, "
        "check them for conflicts, and keep live XDP maps equal to them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pepc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for mod in discover():
        p = sub.add_parser(
            mod.NAME,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.register(p)
        p.set_defaults(_run=mod.run, _name=mod.NAME)
    return parser


#: Commands that build a policy's objects once, report and exit: the cyclic
#: GC is held off for the whole command (the stages make no cycles, and
#: after loading, one collection alone would rescan a million young
#: objects). Long-lived commands (watch, stats/events following) keep it.
_GC_PAUSED = frozenset({"check", "compile", "diff", "plan", "simulate", "test"})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return ExitCode.INVALID
    try:
        if args._name in _GC_PAUSED:
            with gcpause.paused():
                return int(args._run(args))
        return int(args._run(args))
    except PolicyError as err:
        from pepc.report.findings import render_findings

        fmt = getattr(args, "format", "text") or "text"
        out = render_findings(list(err.findings), fmt if fmt in ("text", "json", "sarif", "github") else "text")
        stream = sys.stdout if fmt in ("json", "sarif", "github") else sys.stderr
        stream.write(out)
        return ExitCode.INVALID
    except EnvironmentProblem as err:
        print(f"pepc: error: {err.message}", file=sys.stderr)
        if err.hint:
            print(f"  = help: {err.hint}", file=sys.stderr)
        return ExitCode.ENVIRONMENT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return ExitCode.OK
    except Exception:  # a traceback is a bug in pepc, never the user's fault
        traceback.print_exc()
        print("pepc: internal error: this is a bug in pepc, please report it with the output above", file=sys.stderr)
        return 70


if __name__ == "__main__":
    raise SystemExit(main())
