"""`pepc compile PATH -o OUTDIR`: the reviewable build artifacts.

Writes OUTDIR/pepc_policy.h (the generated C header) and OUTDIR/plan.json
(every map's exact intended contents), both byte-identical for the same
policy meaning, and -- unless --no-object, or when clang is absent --
OUTDIR/pepc_xdp.o built against that header.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pepc.compiler import objbuild
from pepc.compiler.codegen import render_header
from pepc.compiler.objbuild import HEADER_NAME, OBJECT_NAME
from pepc.commands._common import add_policy_args, load_all, now_of
from pepc.compiler import Assignments, compile_program, rule_stats
from pepc.policy.diagnostics import EnvironmentProblem, ExitCode, Finding, PolicyError
from pepc.policy.model import Location
from pepc.compiler.plan import load_plan, plan_json

NAME = "compile"
HELP = "compile a policy directory into pepc_policy.h, plan.json (and the XDP object)"
ORDER = 20
DESCRIPTION = (
    "Compile PATH (a policies.d/ directory) into OUTDIR/pepc_policy.h (generated C header), "
    "OUTDIR/plan.json (the exact map contents, as fields and hex) and OUTDIR/pepc_xdp.o. "
    "The header and plan are byte-identical for the same policy, so they can be committed and reviewed. "
    "With --previous, rules present in that plan keep their slots and order keys."
)
PLAN_NAME = "plan.json"


def register(parser: argparse.ArgumentParser) -> None:
    add_policy_args(parser)
    parser.add_argument("-o", "--output-dir", metavar="OUTDIR", required=True, help="where to write the artifacts")
    parser.add_argument(
        "--previous", metavar="PLAN", default=None, help="an earlier plan.json: unchanged rules keep their slots"
    )
    parser.add_argument("--no-object", action="store_true", help="do not build the XDP object (no clang needed)")


def previous_assignments(path: str | None) -> Assignments | None:
    if path is None:
        return None
    doc = load_plan(path)
    try:
        return Assignments.from_plan_json(doc)
    except ValueError as err:
        raise PolicyError([Finding("bad-plan", f"the rule table is not usable: {err}", Location(path))]) from None


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise EnvironmentProblem(f"cannot write {path}: {err.strerror or err}", "check the output directory and its permissions") from None


def run(args: argparse.Namespace) -> int:
    policy, config = load_all(args)
    now = now_of(args)
    previous = previous_assignments(args.previous)
    program = compile_program(policy, config, now, previous)

    out = Path(args.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EnvironmentProblem(f"cannot create {out}: {err.strerror or err}") from None
    header = out / HEADER_NAME
    plan = out / PLAN_NAME
    write_atomic(header, render_header(program, policy))
    write_atomic(plan, plan_json(program, policy))
    written = [str(header), str(plan)]

    if not args.no_object:
        if not objbuild.clang_path():
            print("pepc: note: clang is not installed; skipped pepc_xdp.o (use --no-object to silence)", file=sys.stderr)
        else:
            objbuild.build_object(out, out / OBJECT_NAME)
            written.append(str(out / OBJECT_NAME))

    stats = rule_stats(policy, program)
    atoms = sum(s.atoms for s in stats.values())
    inactive = len(policy.rules) - len(program.slots)
    caps = program.caps
    print(
        f"compiled {args.path}: {len(program.slots)} live rules ({inactive} inactive), {atoms} atoms, "
        f"{len(program.rule_contents())}/{caps.max_entries} entries, {len(program.masks)}/{caps.max_masks} masks, "
        + (
            f"IPv6 {len(program.rule6_contents())}/{caps.max_entries} entries, {len(program.masks6)}/{caps.max_masks} masks, "
            if program.masks6 else ""
        )
        + f"default {program.default_action.name}"
    )
    print(f"  policy digest {program.policy_digest}")
    print(f"  layout digest {program.layout_digest}")
    for w in written:
        print(f"  wrote {w}")
    return ExitCode.OK
