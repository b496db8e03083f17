"""The package's shape: one package per pipeline stage, imports only backwards.

`ls pepc/` reads as the pipeline (docs/architecture.md): each stage may
import the stages before it and itself, never a later one, and no two
modules import each other, directly or round a longer circle. Imports are
read with `ast` from the source, including the ones inside functions (a
lazy import is still a dependency; it only moves the failure to run time).
"""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT

#: The pipeline, first to last. `pepc` itself (the version) is below them
#: all; `cli` (and `__main__`, which only calls it) is above them all.
STAGES = (
    "policy",  # the IR, semantics, host config model, diagnostics: what every stage speaks
    "loader",  # files -> Policy, Config
    "checker",  # Policy -> findings
    "compiler",  # Policy + Config -> Program, header, plan, object
    "simulate",  # Program + packets -> verdicts; `pepc test`
    "diff",  # two Policies -> the packets they decide differently
    "report",  # findings -> text, JSON, SARIF; logging
    "kernel",  # the one layer that touches bpf(2), netlink and pins
    "reconcile",  # Program + live maps -> the writes that make them equal
    "watch",  # the service: reconcile on every change
    "commands",  # one module per subcommand
    "cli",
)
TOP_LEVEL = {"__init__.py", "__main__.py", "cli.py"}


@dataclass(frozen=True)
class Imports:
    modules: dict[str, Path]  # dotted name -> file
    edges: dict[str, set[str]]  # module -> the pepc modules it imports


def read_imports(package_dir: Path) -> Imports:
    root = package_dir.name
    modules: dict[str, Path] = {}
    for p in sorted(package_dir.rglob("*.py")):
        parts = list(p.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = p

    def known(name: str) -> str | None:
        # `from pepc.x import y` names module pepc.x.y if there is one, else pepc.x
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                targets = [f"{src}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                if t == root or t.startswith(root + "."):
                    k = known(t)
                    if k and k != mod:
                        out.add(k)
        edges[mod] = out
    return Imports(modules, edges)


def stage_of(mod: str) -> int:
    """-1 for the root package, len(STAGES) - 1 for the cli and __main__."""
    parts = mod.split(".")
    if len(parts) == 1:
        return -1
    name = parts[1]
    if name == "__main__":
        return len(STAGES) - 1
    return STAGES.index(name)


def backwards(imports: Imports) -> list[str]:
    """Every import of a later stage, as 'a (stage) -> b (stage)'."""
    out = []
    for a, deps in sorted(imports.edges.items()):
        for b in sorted(deps):
            if stage_of(b) > stage_of(a):
                out.append(f"{a} ({STAGES[stage_of(a)] if stage_of(a) >= 0 else 'pepc'}) imports {b} ({STAGES[stage_of(b)]})")
    return out


def cycles(imports: Imports) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(imports.edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(imports.modules):
        if v not in index:
            visit(v)
    return found


def test_the_top_level_is_the_pipeline():
    entries = {p.name for p in (ROOT / "pepc").iterdir() if p.name != "__pycache__"}
    packages = {n for n in entries if (ROOT / "pepc" / n).is_dir()}
    assert entries - packages == TOP_LEVEL, "only __init__.py, __main__.py and cli.py stay loose"
    assert packages == set(STAGES) - {"cli"}


def test_no_stage_imports_a_later_one():
    found = backwards(read_imports(ROOT / "pepc"))
    assert not found, "imports against the stage order (docs/architecture.md):\n" + "\n".join(found)


def test_no_import_cycles():
    found = cycles(read_imports(ROOT / "pepc"))
    assert not found, "modules that import each other round a circle:\n" + "\n".join(" <-> ".join(c) for c in found)


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "pepc"
    shutil.copytree(ROOT / "pepc", dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@pytest.mark.parametrize(
    "line",
    [
        "from pepc.reconcile.apply import pin_dir",  # absolute, at the top
        "def later():\n    from pepc.kernel import maps\n",  # lazy, inside a function
        "from ..compiler import layout",  # relative
    ],
)
def test_a_backwards_import_is_caught(tmp_path, line):
    pkg = _copy(tmp_path)
    model = pkg / "policy" / "model.py"
    model.write_text(model.read_text(encoding="utf-8") + "\n" + line + "\n", encoding="utf-8")
    found = backwards(read_imports(pkg))
    assert len(found) == 1 and found[0].startswith("pepc.policy.model (policy) imports"), found


def test_a_cycle_is_caught(tmp_path):
    pkg = _copy(tmp_path)
    # the loader's files module already imports its reader; the reader importing it back closes a circle
    assert "pepc.loader.reader" in read_imports(pkg).edges["pepc.loader.files"]
    reader = pkg / "loader" / "reader.py"
    reader.write_text(reader.read_text(encoding="utf-8") + "\nfrom pepc.loader import files\n", encoding="utf-8")
    assert ["pepc.loader.files", "pepc.loader.reader"] in cycles(read_imports(pkg))


def test_every_stage_says_what_it_takes_and_gives():
    """Each package's docstring: what it takes, what it gives, which module to open first (and that module exists)."""
    for name in STAGES[:-1]:
        init = ROOT / "pepc" / name / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        for label in ("Takes:", "Gives:", "Start with:"):
            assert label in doc, f"pepc/{name}/__init__.py: no {label!r} in its docstring"
        first = doc.split("Start with:", 1)[1].split()[0].strip("`.,")
        assert (ROOT / "pepc" / name / first).is_file(), f"pepc/{name}: 'Start with: {first}' names no module there"


def test_the_architecture_page_lists_the_stages_in_order():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    # the rows of its table of stages
    where = [text.find(f"| `pepc/{s}/`" if s != "cli" else "| `pepc/cli.py`") for s in STAGES]
    assert -1 not in where, [s for s, w in zip(STAGES, where) if w == -1]
    assert where == sorted(where), "docs/architecture.md names the stages out of order"
