"""The Containerfile, read: no container engine runs where the tests do, so
what can be checked without building it is checked here. Each COPY from
the build context names something that exists; the runtime stage installs
pepc's wheel (which carries schema/, templates/ and bpf/ as package data,
pepc/policy/resources.py) and no source tree; it has no compiler and points PEPC_OBJECT_DIR at the objects
the builder prebuilt, for configs that exist and load."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from pepc.compiler import prebuilt
from pepc.loader import load_config

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "Containerfile").read_text()


def stages() -> list[list[str]]:
    lines, out = [], []
    for raw in TEXT.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
        lines.append(line)
    return out


def test_copies_from_the_context_exist():
    builder, runtime = stages()
    for line in builder:
        if line.startswith("COPY ") and "--from" not in line:
            for src in shlex.split(line)[1:-1]:
                assert (ROOT / src).exists(), src


def test_the_runtime_stage_installs_the_wheel_and_no_compiler():
    builder, runtime = stages()
    assert any(line.startswith("COPY ") and "LICENSE" in line for line in builder)  # license-files
    copied = {shlex.split(line)[-2] for line in runtime if line.startswith("COPY --from=builder")}
    assert copied == {"/wheels", "/objects"}
    assert any(re.search(r"pip install .*--no-index .*\bpepc$", line) for line in runtime)
    installs = " ".join(line for line in runtime if "apt-get install" in line)
    assert "libbpf1" in installs and "git" in installs
    assert not re.search(r"\b(clang|llvm|gcc|libbpf-dev)\b", installs)
    assert f"ENV {prebuilt.ENV}=/usr/lib/pepc/objects" in " ".join(runtime)
    assert any(line.startswith("COPY --from=builder /objects /usr/lib/pepc/objects") for line in runtime)


def test_prebuilt_configs_exist_and_load():
    (arg,) = [line for line in stages()[0] if line.startswith("ARG PEPC_CONFIGS=")]
    configs = shlex.split(arg.split("=", 1)[1])[0].split()
    assert configs
    for c in configs:
        load_config(str(ROOT / c), None)
    assert any("python -m pepc.compiler.prebuilt /objects" in line for line in stages()[0])
