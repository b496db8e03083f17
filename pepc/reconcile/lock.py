"""One apply at a time per instance: flock on `<run_dir>/<instance>.lock`.

flock is released by the kernel when the holder dies (kill -9 included), so
a crashed apply never leaves a stale lock behind. The file holds the pid of
the holder, for the error message only.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from pepc.policy.diagnostics import EnvironmentProblem


class InstanceLock:
    def __init__(self, run_dir: str, instance: str, wait: float = 0.0):
        self.path = Path(run_dir) / f"{instance}.lock"
        self.instance = instance
        self.wait = wait
        self._fd: int | None = None

    def __enter__(self) -> "InstanceLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise EnvironmentProblem(f"cannot create the lock file {self.path}: {e.strerror}", "run as root, or set run_dir in pepc.yaml") from e
        deadline = time.monotonic() + max(self.wait, 0.0)
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise EnvironmentProblem(f"cannot lock {self.path}: {e.strerror}") from e
                if time.monotonic() >= deadline:
                    holder = _holder(fd)
                    os.close(fd)
                    who = f" (held by pid {holder})" if holder else ""
                    waited = f" after waiting {self.wait:g}s" if self.wait > 0 else ""
                    raise EnvironmentProblem(
                        f"another pepc apply is running on instance {self.instance!r}{who}{waited}",
                        "wait for it to finish, or pass --wait SECONDS to queue behind it",
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
