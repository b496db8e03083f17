"""Build the XDP object: clang -target bpf on bpf/pepc_xdp.c + the generated header.

Pure with respect to the kernel (needs clang and the UAPI/libbpf headers,
not root). `pepc compile` calls it to write OUTDIR/pepc_xdp.o;
prebuilt.py calls it to build the object of a layout.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from pepc.policy.diagnostics import EnvironmentProblem
from pepc.policy.resources import BPF_DIR

SOURCE = BPF_DIR / "pepc_xdp.c"
OBJECT_NAME = "pepc_xdp.o"
HEADER_NAME = "pepc_policy.h"

_APT_HINT = "install the BPF toolchain: apt-get install clang llvm libbpf-dev linux-libc-dev (or run `make setup`)"

# Debian's multiarch include directory for asm/types.h, by machine
_MULTIARCH = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu", "arm64": "aarch64-linux-gnu"}


def clang_path() -> str | None:
    return os.environ.get("PEPC_CLANG") or shutil.which("clang")


def _include_dirs() -> list[Path]:
    machine = platform.machine()
    triple = _MULTIARCH.get(machine, f"{machine}-linux-gnu")
    return [Path("/usr/include") / triple]


def check_toolchain() -> str:
    """The clang to use; EnvironmentProblem when something is missing."""
    clang = clang_path()
    if not clang:
        raise EnvironmentProblem("clang is not installed: it is needed to build the XDP object", _APT_HINT)
    if not Path("/usr/include/bpf/bpf_helpers.h").is_file():
        raise EnvironmentProblem("libbpf headers are missing (/usr/include/bpf/bpf_helpers.h)", _APT_HINT)
    if not Path("/usr/include/linux/bpf.h").is_file():
        raise EnvironmentProblem("kernel UAPI headers are missing (/usr/include/linux/bpf.h)", _APT_HINT)
    if not any((d / "asm" / "types.h").is_file() for d in _include_dirs()) and not Path("/usr/include/asm/types.h").is_file():
        raise EnvironmentProblem("asm/types.h is missing (multiarch UAPI headers)", _APT_HINT)
    return clang


def build_command(header_dir: Path, out: Path, source: Path = SOURCE) -> list[str]:
    cmd = [check_toolchain(), "-O2", "-g", "-target", "bpf", "-Wall", f"-I{header_dir}"]
    cmd += [f"-I{d}" for d in _include_dirs()]
    cmd += ["-c", str(source), "-o", str(out)]
    return cmd


def build_object(header_dir: Path, out: Path, source: Path = SOURCE) -> None:
    """Compile `source` against `header_dir/pepc_policy.h` into `out`.

    The object is written next to `out` first and renamed into place, so a
    failed build never leaves a half-written object behind.
    """
    header_dir, out = Path(header_dir), Path(out)
    if not (header_dir / HEADER_NAME).is_file():
        raise EnvironmentProblem(f"{header_dir / HEADER_NAME} does not exist", "render it with `pepc compile` first")
    if not source.is_file():
        raise EnvironmentProblem(f"the data-plane source {source} is missing", "reinstall pepc from its source tree")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    cmd = build_command(header_dir, tmp, source)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except OSError as e:
        raise EnvironmentProblem(f"cannot run clang: {e}", _APT_HINT) from None
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem("clang did not finish within 5 minutes") from None
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        # the first error is the cause; later ones are usually its echoes
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        first = "\n".join(lines[:20]) + ("\n..." if len(lines) > 20 else "")
        raise EnvironmentProblem(
            f"building the XDP object failed (clang exit {r.returncode}):\n{first}",
            "the generated header and bpf/pepc_xdp.c disagree, or the toolchain is too old (clang >= 14 needed)",
        )
    os.replace(tmp, out)

