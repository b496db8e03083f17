"""Kernel errors as messages a user can act on (exit code 3)."""

from __future__ import annotations

import errno
import os

from pepc.policy.diagnostics import EnvironmentProblem

_PERM_HINT = "run as root, or grant CAP_BPF+CAP_NET_ADMIN (and CAP_PERFMON for test runs)"


class KernelError(EnvironmentProblem):
    """A bpf(2)/netlink call failed. `errno` is the kernel's error number;
    `applied` is how many elements a batch call wrote before it stopped."""

    def __init__(self, message: str, hint: str = "", err: int = 0, applied: int = 0):
        super().__init__(message, hint)
        self.errno = err
        self.applied = applied


def kernel_error(op: str, err: int, *, what: str = "", applied: int = 0) -> KernelError:
    """The KernelError for `op` (e.g. "update pepc_rules_0") failing with `err`."""
    subject = f"{op} {what}".strip()
    text = os.strerror(err) if err else "unknown error"
    if err in (errno.EPERM, errno.EACCES):
        return KernelError(f"{subject}: permission denied: pepc needs root or CAP_BPF+CAP_NET_ADMIN", _PERM_HINT, err, applied)
    if err == errno.E2BIG:
        return KernelError(
            f"{subject}: the map is full (E2BIG)",
            "raise the capacities in pepc.yaml (max_entries / max_rules / max_masks) and apply again",
            err,
            applied,
        )
    if err == errno.ENOENT and "pin" in op:
        return KernelError(f"{subject}: instance not loaded (no such pin)", "run `pepc apply` first", err, applied)
    if err == errno.ENOMEM:
        return KernelError(f"{subject}: out of memory (ENOMEM)", "lower the capacities in pepc.yaml or raise RLIMIT_MEMLOCK", err, applied)
    return KernelError(f"{subject}: {text} ({errno.errorcode.get(err, err)})", "", err, applied)
