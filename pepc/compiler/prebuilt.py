"""Prebuilt XDP objects, for hosts without clang (a container image, a fleet).

The object depends only on the layout (capacities: the rules, the default
action and the event cap live in maps) and on pepc's own data-plane
sources. So an image can carry objects built at image build time, one per
layout it expects, in a directory named by `PEPC_OBJECT_DIR`; each file is
`pepc_xdp-<layout digest>-<source digest>.o`, so an object is used only
for the layout and the program it was built for. When there is none for
the layout an apply needs, pepc builds one with clang as usual (and says
what to prebuild when clang is missing).

    python -m pepc.compiler.prebuilt OUTDIR [--config pepc.yaml ...]

builds the objects for the capacities of each config (and of the built-in
defaults), e.g. in a Containerfile's builder stage.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from pepc.compiler import layout, pack
from pepc.compiler.objbuild import HEADER_NAME, OBJECT_NAME, build_object
from pepc.compiler.program import Program
from pepc.policy.diagnostics import EnvironmentProblem
from pepc.policy.model import Action, Policy
from pepc.policy.resources import BPF_DIR, TEMPLATES_DIR

ENV = "PEPC_OBJECT_DIR"


@lru_cache(maxsize=1)
def source_digest() -> str:
    """Of everything the object is built from besides the layout."""
    h = hashlib.sha256()
    for d, pattern in ((BPF_DIR, "*.[ch]"), (TEMPLATES_DIR, "*.j2")):
        for p in sorted(d.glob(pattern)):
            h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def object_name(caps: layout.Capacities) -> str:
    return f"pepc_xdp-{layout.layout_digest(caps)}-{source_digest()}.o"


def find(caps: layout.Capacities) -> Path | None:
    """The prebuilt object for `caps` in $PEPC_OBJECT_DIR, if there is one."""
    d = os.environ.get(ENV)
    if not d:
        return None
    p = Path(d) / object_name(caps)
    return p if p.is_file() else None


def missing_hint(caps: layout.Capacities) -> str:
    d = os.environ.get(ENV)
    if not d:
        return ""
    return (
        f"{d} (${ENV}) holds no object for these capacities ({caps.max_rules} rules, {caps.max_entries} entries, "
        f"{caps.max_masks} masks, {caps.ring_bytes} ring bytes): build the image with this pepc.yaml "
        f"(python -m pepc.compiler.prebuilt {d} --config pepc.yaml) or use the capacities it was built for"
    )


def build_layout_object(caps: layout.Capacities, default_action: Action, event_cap: int, root: str, workdir: Path) -> Path:
    """The object for a layout, built with clang in `workdir`. The header is
    rendered for an empty program of that layout: the object depends only
    on the layout (rules, the default action and the event cap live in
    maps; the policy digest appears in the header only as text), and a
    100k-rule comment table costs clang seconds."""
    from pepc.compiler.codegen import render_header  # jinja2: only when an object is built

    shell = Program(
        caps=caps, default_action=default_action, event_cap=event_cap,
        masks=(), entries=(), slots=(), policy_digest="", layout_digest=pack.layout_digest(caps),
    )
    (workdir / HEADER_NAME).write_text(render_header(shell, Policy(root, ())), encoding="utf-8")
    out = workdir / OBJECT_NAME
    build_object(workdir, out)
    return out


def layout_object(caps: layout.Capacities, default_action: Action, event_cap: int, root: str, workdir: Path) -> Path:
    """The object for a layout: the prebuilt one in $PEPC_OBJECT_DIR as it
    is (no clang), else one built with clang in `workdir`; when clang is
    missing, the error says what to prebuild."""
    found = find(caps)
    if found is not None:
        return found
    try:
        return build_layout_object(caps, default_action, event_cap, root, workdir)
    except EnvironmentProblem as err:
        hint = missing_hint(caps)
        if hint:
            raise EnvironmentProblem(err.message, hint) from None
        raise


def build(outdir: Path, caps: layout.Capacities) -> Path:
    outdir.mkdir(parents=True, exist_ok=True)
    dest = outdir / object_name(caps)
    with tempfile.TemporaryDirectory(prefix="pepc-prebuild-") as tmp:
        obj = build_layout_object(caps, Action.ALLOW, 100, "", Path(tmp))
        tmp_dest = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(obj, tmp_dest)
        os.replace(tmp_dest, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    from pepc.policy.config import Config
    from pepc.policy.diagnostics import PolicyError
    from pepc.loader import load_config

    ap = argparse.ArgumentParser(prog="python -m pepc.compiler.prebuilt", description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", metavar="OUTDIR")
    ap.add_argument("--config", metavar="FILE", action="append", default=[], help="a pepc.yaml whose capacities to build for (repeatable)")
    args = ap.parse_args(argv)
    try:
        configs = [Config()] + [load_config(f, None) for f in args.config]
        done = set()
        for c in configs:
            if c.capacities in done:
                continue
            done.add(c.capacities)
            print(build(Path(args.outdir), c.capacities))
    except PolicyError as err:
        for f in err.findings:
            print(f"{f.loc}: error: {f.message} [{f.code}]", file=sys.stderr)
        return 2
    except EnvironmentProblem as err:
        print(f"pepc.compiler.prebuilt: error: {err.message}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
