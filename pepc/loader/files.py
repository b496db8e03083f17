"""Finding and reading the policy files of a directory, defensively.

Directory walk: `os.scandir`, iteratively, in sorted order. Symbolic links
are followed (a policies.d/ assembled from links is common), but every
directory is entered at most once by its real path, and a link back to a
directory being walked is a `symlink-loop`. Entries whose name starts with a
dot (.git, editor lock files) are skipped.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from pepc.policy.diagnostics import Finding
from pepc.policy.model import Location
from pepc.loader.reader import DEFAULT_MAX_FILE_BYTES, ParsedFile, _offset_to_pos, parse_text

POLICY_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class SourceFile:
    path: str  # what to open
    display: str  # what to show: the directory as given joined with the relative path


def _is_policy_name(name: str) -> bool:
    return name.lower().endswith(POLICY_SUFFIXES)


def discover(root: str | os.PathLike) -> tuple[list[SourceFile], list[Finding]]:
    """The policy files under `root`, sorted by relative path, and problems found."""
    root_s = os.fspath(root)
    here = Location(root_s)
    try:
        st = os.stat(root_s)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return [], [Finding("symlink-loop", "symbolic link loop: the link resolves to itself", here)]
        return [], [Finding("io-error", f"cannot read {root_s}: {err.strerror or err}", here)]
    if not stat.S_ISDIR(st.st_mode):
        return [], [Finding("not-a-directory", f"{root_s} is not a directory", here)]

    found: list[tuple[tuple[str, ...], SourceFile]] = []
    findings: list[Finding] = []
    # (path to open, relative parts, real paths of the directories above and including it)
    stack: list[tuple[str, tuple[str, ...], frozenset[str]]] = []
    root_real = os.path.realpath(root_s)
    stack.append((root_s, (), frozenset([root_real])))
    seen_dirs = {root_real}
    while stack:
        dir_path, rel, ancestors = stack.pop()
        dir_display = os.path.join(root_s, *rel) if rel else root_s
        try:
            with os.scandir(dir_path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            findings.append(
                Finding("io-error", f"cannot read directory {dir_display}: {err.strerror or err}", Location(dir_display))
            )
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            display = os.path.join(root_s, *rel, entry.name)
            try:
                st = os.stat(entry.path)  # follows links
            except OSError as err:
                if err.errno == errno.ELOOP:
                    findings.append(Finding("symlink-loop", "symbolic link loop: the link resolves to itself", Location(display)))
                elif _is_policy_name(entry.name):
                    findings.append(
                        Finding("io-error", f"cannot read the file: {err.strerror or err}", Location(display))
                    )
                continue
            if stat.S_ISDIR(st.st_mode):
                real = os.path.realpath(entry.path)
                if real in ancestors:
                    findings.append(
                        Finding(
                            "symlink-loop",
                            f"{display} links back to {real}, a directory that contains it",
                            Location(display),
                        )
                    )
                    continue
                if real in seen_dirs:  # the same directory reached twice through links: read it once
                    continue
                seen_dirs.add(real)
                stack.append((entry.path, rel + (entry.name,), ancestors | {real}))
            elif _is_policy_name(entry.name):
                if not stat.S_ISREG(st.st_mode):
                    findings.append(
                        Finding("io-error", "not a regular file (a device, FIFO or socket cannot hold policy)", Location(display))
                    )
                    continue
                found.append((rel + (entry.name,), SourceFile(entry.path, display)))
    found.sort(key=lambda item: "/".join(item[0]))  # like `find | LC_ALL=C sort`
    files = [sf for _, sf in found]
    if not files and not findings:
        findings.append(
            Finding("empty-directory", f"{root_s} holds no policy files (*.yaml, *.yml, *.json)", here)
        )
    return files, findings


def read_source(path: str, display: str, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> tuple[str | None, list[Finding]]:
    """The text of a file, or the findings that say why it cannot be had."""
    data, findings = read_bytes(path, display, max_file_bytes=max_file_bytes)
    if data is None:
        return None, findings
    return decode_source(data, display)


def read_bytes(path: str, display: str, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> tuple[bytes | None, list[Finding]]:
    """The bytes of a file (within the size limit), or why they cannot be had."""
    here = Location(display)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_file_bytes:
                return None, [_too_large(display, size, max_file_bytes)]
            data = fh.read(max_file_bytes + 1)  # the file may grow while we read
    except OSError as err:
        return None, [Finding("io-error", f"cannot read the file: {err.strerror or err}", here)]
    if len(data) > max_file_bytes:
        return None, [_too_large(display, len(data), max_file_bytes)]
    return data, []


def decode_source(data: bytes, display: str) -> tuple[str | None, list[Finding]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line, col = _offset_to_pos(data, err.start)
        return None, [
            Finding(
                "encoding",
                f"invalid UTF-8: byte 0x{data[err.start]:02x} at offset {err.start} ({err.reason})",
                Location(display, line, col),
            )
        ]
    return text, []


def _too_large(display: str, size: int, limit: int) -> Finding:
    return Finding(
        "file-too-large",
        f"the file is {size} bytes, over the limit of {limit} bytes",
        Location(display, 1, 1),
        help="split it into several files (the limit guards against runaway or hostile input)",
    )


def read_and_parse(path: str, display: str, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> ParsedFile:
    text, findings = read_source(path, display, max_file_bytes=max_file_bytes)
    if text is None:
        from pepc.loader.reader import Marks

        return ParsedFile(display, [], Marks(display), findings)
    return parse_text(text, display)


def display_path(p: str | Path) -> str:
    return os.fspath(p)
