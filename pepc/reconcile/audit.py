"""The audit trail: one JSON line per apply, refused ones included.

`<state_dir>/<instance>/audit.jsonl`, appended with O_APPEND in one write
so concurrent writers (a refused apply does not hold the lock) never
interleave lines; a torn last line from a crash is skipped on reading.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator


def audit_path(state_dir: str, instance: str) -> Path:
    return Path(state_dir) / instance / "audit.jsonl"


def git_info(path: str) -> dict[str, Any] | None:
    """Commit, dirty flag and directory inside the repository (`path`,
    '/'-separated from the top) of the work tree holding `path`, or None
    when it is not in one (or git is missing). `pepc rollback` reads the
    commit and path back to re-apply exactly that tree."""
    try:
        top = subprocess.run(
            ["git", "-C", path, "rev-parse", "--show-toplevel", "--show-prefix", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if top.returncode != 0:
            return None
        lines = top.stdout.splitlines()
        if len(lines) < 3:
            return None
        st = subprocess.run(
            ["git", "-C", path, "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return {
            "commit": lines[2].strip(),
            "dirty": bool(st.stdout.strip()) if st.returncode == 0 else None,
            "path": lines[1].strip().rstrip("/"),
        }
    except (OSError, subprocess.SubprocessError):
        return None


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def append(state_dir: str, instance: str, record: dict[str, Any]) -> Path:
    path = audit_path(state_dir, instance)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return path


def read(state_dir: str, instance: str) -> Iterator[dict[str, Any]]:
    """Records oldest first; lines that do not parse are skipped."""
    path = audit_path(state_dir, instance)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    yield rec
    except FileNotFoundError:
        return


def last(state_dir: str, instance: str, result: str | None = None) -> dict[str, Any] | None:
    out = None
    for rec in read(state_dir, instance):
        if result is None or rec.get("result") == result:
            out = rec
    return out
