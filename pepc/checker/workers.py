"""The analysis split over CPUs.

Each rule's coverage verdict, and each losing rule's pair findings, are
its own: the analysis can compute them for a slice of the rules
(`part=(k, m)`: the rules `owns` gives slice k of m) and merge. `split`
runs slice 0 in this process and the others in forked children, which
inherit the built space (copy on write) and send back their results, the
rules they found shadowed and the suppressions they used. The merged
result is the sequential one: the same verdicts, witnesses and partners.

Workers are forked only where that is safe and pays:

- Linux, and a process with no other thread (a fork copies one thread:
  a lock another thread held would never be released in the child, so
  `pepc watch`, with its HTTP and file-watch threads, analyzes in-line);
- at least `MIN_ATOMS` atoms (below that a fork costs more than it saves);
- `PEPC_CHECK_JOBS` (or `analyze(jobs=)`) overrides the count; 1 turns the
  split off. The default is the CPUs this process may run on, at most
  `MAX_JOBS`.

A worker that dies without answering (the OOM killer: each worker's copy
of what it touches adds to the memory in use) is an environment problem,
reported with the way out (`--jobs 1`); one whose code fails is a bug,
and reported as one with its traceback.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
import traceback
from typing import Any, Callable

from pepc.policy.diagnostics import EnvironmentProblem

#: Below this many atoms the analysis runs in one process.
MIN_ATOMS = 20_000
#: At most this many processes by default (each holds a copy of what it touches).
MAX_JOBS = 4


def owns(part: tuple[int, int], i: int) -> bool:
    """Whether slice part = (k, m) holds rule index i. The index is mixed
    first: policies are often periodic (a wide rule every hundred host
    rules, a feed's rules in turn), and plain i % m would hand every wide
    rule to one worker."""
    k, m = part
    return m == 1 or (((i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> 32) % m == k


def jobs_for(n_atoms: int, jobs: int | None = None) -> int:
    """How many processes the analysis of n_atoms atoms uses."""
    if jobs is None:
        env = os.environ.get("PEPC_CHECK_JOBS", "")
        if env:
            if not env.isdigit() or int(env) < 1:
                raise EnvironmentProblem(
                    f"PEPC_CHECK_JOBS must be a whole number of 1 or more, not {env!r}",
                    "unset it to use the CPUs available, or set it to 1 to analyze in one process",
                )
            jobs = int(env)
    if not can_fork():
        return 1
    if jobs is None:
        if n_atoms < MIN_ATOMS:
            return 1
        jobs = min(len(os.sched_getaffinity(0)), MAX_JOBS)
    return max(1, jobs)


def can_fork() -> bool:
    return sys.platform == "linux" and hasattr(os, "fork") and threading.active_count() == 1


def split(an: Any, run: Callable[..., list], jobs: int) -> list:
    """`run(part=(k, jobs))` (a method of the analysis `an`) for every k,
    concatenated in part order; slice 0 here, the others in forked
    children. The rules the parts found shadowed and the suppressions
    they used are merged into `an`."""
    if jobs <= 1:
        return run()
    children: list[tuple[int, int]] = []
    try:
        for k in range(1, jobs):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: compute, send, and leave without cleanup
                os.close(r)
                try:
                    data = pickle.dumps((True, run(part=(k, jobs)), an.shadowed, an.sup.used), pickle.HIGHEST_PROTOCOL)
                except BaseException:  # noqa: BLE001 - reported by the parent
                    data = pickle.dumps((False, traceback.format_exc(), None, None))
                with os.fdopen(w, "wb") as f:
                    f.write(data)
                os._exit(0)
            os.close(w)
            children.append((pid, r))
        parts = [run(part=(0, jobs))]
    finally:
        # always reap the children, also when this part failed
        results = []
        for pid, r in children:
            with os.fdopen(r, "rb") as f:
                data = f.read()
            _, status = os.waitpid(pid, 0)
            results.append((data, status))
    for data, status in results:
        if not data:
            # killed before it could answer: the OOM killer, most likely
            raise EnvironmentProblem(
                f"a checker worker process died ({_how(status)}) before it sent its results",
                "if memory is short, run the analysis in one process: --jobs 1 (or PEPC_CHECK_JOBS=1)",
            )
        ok, got, shadowed, used = pickle.loads(data)
        if not ok:
            raise AssertionError(f"a checker worker failed:\n{got}")
        an.shadowed |= shadowed
        an.sup.used |= used
        parts.append(got)
    return [x for part in parts for x in part]


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
