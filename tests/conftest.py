"""Shared test configuration.

Tests marked `kernel` load BPF programs, write maps and create network
namespaces. On a machine that cannot do that they skip, unless
PEPC_REQUIRE_KERNEL=1 (set by .ci/run), where a missing capability is a
failure: CI must prove the kernel path, never quietly skip it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "policies.d"


def doc_pages() -> list[Path]:
    """The user-facing docs: README.md, then docs/*.md."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _kernel_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root (CAP_BPF, CAP_NET_ADMIN)"
    if not Path("/sys/fs/bpf").is_dir():
        return "no bpffs at /sys/fs/bpf"
    try:
        ctypes.CDLL("libbpf.so.1")
    except OSError:
        return "libbpf.so.1 is not installed (apt-get install libbpf1)"
    if not shutil.which("clang"):
        return "clang is not installed (apt-get install clang)"
    return None


KERNEL_PROBLEM = _kernel_problem()
REQUIRE_KERNEL = os.environ.get("PEPC_REQUIRE_KERNEL") == "1"


def pytest_collection_modifyitems(config, items):
    if KERNEL_PROBLEM is None:
        return
    for item in items:
        if "kernel" not in item.keywords:
            continue
        if REQUIRE_KERNEL:
            item.add_marker(pytest.mark.usefixtures("_kernel_required"))
        else:
            item.add_marker(pytest.mark.skip(reason=f"kernel test: {KERNEL_PROBLEM}"))


@pytest.fixture
def _kernel_required():
    pytest.fail(f"PEPC_REQUIRE_KERNEL=1 but this machine cannot run kernel tests: {KERNEL_PROBLEM}")


@pytest.fixture
def examples() -> Path:
    return EXAMPLES


from hypothesis import HealthCheck, settings  # noqa: E402

# CI is derandomized so a red run can be reproduced; deadlines off because
# these 2-core machines are noisy and timing is never a test's business.
settings.register_profile("ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
