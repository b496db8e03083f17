"""Policy directories as of a git revision: `REV:PATH` and `--revision REV`.

A revision's tree is written into a temporary directory (blobs through one
`git cat-file --batch`, no checkout, the repository untouched) and loaded
with the normal loader, so every check of a directory applies to it too.
Locations under the temporary directory are shown as `REV:PATH/file`, the
form `git show` takes, so a finding in an old revision still says where.

Only git is run here; nothing touches the kernel.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from pepc.loader.config import CONFIG_NAME
from pepc.policy.diagnostics import EnvironmentProblem, Finding, PolicyError
from pepc.policy.model import Location

_GIT_TIMEOUT = 60


class RevisionProblem(Exception):
    """A revision form that cannot be resolved; the caller locates it."""

    def __init__(self, message: str, help: str = ""):
        super().__init__(message)
        self.message = message
        self.help = help


def _git(cwd: str, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            ["git", "-C", cwd, *args], input=input, capture_output=True, timeout=_GIT_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise EnvironmentProblem("git is not installed: revision forms need it", "apt-get install git") from None
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(f"git did not answer within {_GIT_TIMEOUT} s in {cwd}") from None


def repo_top(cwd: str) -> str:
    """The top of the work tree holding `cwd`; RevisionProblem outside git."""
    if not os.path.isdir(cwd):
        raise RevisionProblem(f"{cwd} is not a directory", "give a directory inside a git work tree")
    r = _git(cwd, "rev-parse", "--show-toplevel")
    if r.returncode != 0:
        raise RevisionProblem(
            f"{os.path.abspath(cwd)} is not inside a git repository, so a revision cannot be read there",
            "give a plain directory instead, or run pepc inside the policy repository",
        )
    return r.stdout.decode().strip()


def resolve_commit(cwd: str, rev: str) -> str:
    """The full commit id `rev` names in the repository of `cwd`."""
    repo_top(cwd)
    if rev.startswith("-"):
        raise RevisionProblem(f"{rev!r} is not a revision", "revisions do not start with '-'")
    r = _git(cwd, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    if r.returncode != 0:
        raise RevisionProblem(
            f"unknown revision {rev!r}",
            "name a commit, branch or tag of this repository (`git log --oneline` lists them)",
        )
    return r.stdout.decode().strip()


@dataclass
class Checkout:
    """One side of a comparison or an apply: where to load from and how to
    show it. `path` is the directory to load; for a revision it lives in a
    temporary directory removed by `close()`."""

    spec: str
    path: str
    label: str
    revision: str | None = None
    commit: str | None = None
    repo_path: str | None = None  # the directory inside the repository, '/'-separated ('' = top)
    config_path: str | None = None  # pepc.yaml beside it at that revision, if there is one
    top: str | None = None  # the top of the work tree the revision was read from
    _tmp: str | None = field(default=None, repr=False)

    def close(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> "Checkout":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def shown(self, file: str) -> str:
        """How `file` (a path the loader recorded) is shown to users."""
        if self._tmp and self.revision is not None:
            root = os.path.join(self._tmp, "tree") + os.sep
            if file.startswith(root):
                return f"{self.revision}:{file[len(root):].replace(os.sep, '/')}"
        return file

    def relocate(self, err: PolicyError) -> PolicyError:
        """`err` with locations in the temporary tree shown as REV:PATH."""
        return PolicyError([replace(f, loc=replace(f.loc, file=self.shown(f.loc.file))) for f in err.findings])

    def git_record(self) -> dict | None:
        """What the audit trail records about where this policy came from."""
        if self.commit is None:
            return None
        return {"commit": self.commit, "dirty": False, "revision": self.revision, "path": self.repo_path}


def directory(path: str) -> Checkout:
    return Checkout(spec=path, path=path, label=path)


def checkout(cwd: str, revision: str, path: str, spec: str | None = None) -> Checkout:
    """The tree `revision:path` of the repository holding `cwd` (git's
    rules for `REV:PATH`: PATH is from the top of the work tree unless it
    starts with ./ or ../), written into a temporary directory."""
    commit = resolve_commit(cwd, revision)
    top = repo_top(cwd)
    repo_path = _repo_path(cwd, top, path)
    treeish = f"{commit}:{repo_path}" if repo_path else f"{commit}^{{tree}}"
    kind = _git(cwd, "cat-file", "-t", treeish)
    shown = f"{revision}:{repo_path or '.'}"
    if kind.returncode != 0:
        raise RevisionProblem(
            f"{shown} does not exist: revision {revision} has no {repo_path or 'top directory'}",
            f"`git ls-tree --name-only {revision} {posixpath.dirname(repo_path) or '.'}/` lists what it holds",
        )
    if kind.stdout.decode().strip() != "tree":
        raise RevisionProblem(f"{shown} is a file, not a directory", "give the policy directory (e.g. policies.d)")
    tmp = tempfile.mkdtemp(prefix="pepc-rev-")
    try:
        # the tree goes one level down, so that the pepc.yaml looked up
        # beside a top-level policy directory is never a stray /tmp/pepc.yaml
        dest = os.path.normpath(os.path.join(tmp, "tree", repo_path or "."))
        _write_tree(cwd, treeish, dest)
        parent = posixpath.dirname(repo_path)
        config_blob = f"{commit}:{posixpath.join(parent, CONFIG_NAME) if parent else CONFIG_NAME}"
        config_path = None
        if _git(cwd, "cat-file", "-e", config_blob).returncode == 0 and repo_path:
            data = _git(cwd, "cat-file", "blob", config_blob)
            if data.returncode == 0:
                config_path = os.path.join(os.path.dirname(dest), CONFIG_NAME)
                Path(config_path).write_bytes(data.stdout)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Checkout(
        spec=spec or shown, path=dest, label=shown, revision=revision, commit=commit,
        repo_path=repo_path, config_path=config_path, top=top, _tmp=tmp,
    )


def _repo_path(cwd: str, top: str, path: str) -> str:
    """`path` as git reads it in `REV:path`, '/'-separated from the top."""
    if os.path.isabs(path) or path.startswith(("./", "../")) or path in (".", ".."):
        full = os.path.normpath(os.path.join(os.path.realpath(cwd), os.path.realpath(path) if os.path.isabs(path) else path))
        rel = os.path.relpath(full, os.path.realpath(top))
    else:
        rel = os.path.normpath(path) if path else "."
    rel = rel.replace(os.sep, "/")
    if rel == ".":
        return ""
    if rel.startswith("../") or rel == ".." or os.path.isabs(rel):
        raise RevisionProblem(f"{path} is outside the repository at {top}", "give a directory inside the repository")
    return rel


def _write_tree(cwd: str, treeish: str, dest: str) -> None:
    ls = _git(cwd, "ls-tree", "-r", "-z", "--full-tree", treeish)
    if ls.returncode != 0:
        raise EnvironmentProblem(f"git ls-tree {treeish} failed: {ls.stderr.decode(errors='replace').strip()}")
    entries = []
    for item in ls.stdout.split(b"\0"):
        if not item:
            continue
        meta, _, name = item.partition(b"\t")
        mode, kind, oid = meta.split()
        rel = os.fsdecode(name)
        # git never stores '..' or absolute names, but a tree is input: check
        if rel.startswith("/") or ".." in rel.split("/"):
            continue
        if kind == b"blob":
            entries.append((mode, oid.decode(), rel))
    os.makedirs(dest, exist_ok=True)
    if not entries:
        return
    batch = _git(cwd, "cat-file", "--batch", input=b"".join(e[1].encode() + b"\n" for e in entries))
    if batch.returncode != 0:
        raise EnvironmentProblem(f"git cat-file failed: {batch.stderr.decode(errors='replace').strip()}")
    out, pos = batch.stdout, 0
    for mode, _oid, rel in entries:
        nl = out.index(b"\n", pos)
        header = out[pos:nl].split()
        size = int(header[2])
        data = out[nl + 1 : nl + 1 + size]
        pos = nl + 1 + size + 1
        target = os.path.join(dest, *rel.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if mode == b"120000":
            os.symlink(os.fsdecode(data), target)
        else:
            with open(target, "wb") as fh:
                fh.write(data)


def split_spec(text: str) -> tuple[str | None, str | None]:
    """(revision, path) of a command-line side: an existing directory is a
    directory even if its name holds ':'; `REV:PATH` is a tree; anything
    else is a bare revision (path None: the caller supplies one)."""
    if os.path.isdir(text):
        return None, text
    if ":" in text:
        rev, _, path = text.partition(":")
        return rev or "HEAD", path or "."
    return text, None


def open_side(text: str, default_path: str, cwd: str = ".") -> Checkout:
    """A command-line side as a Checkout; a bare revision takes `default_path`."""
    rev, path = split_spec(text)
    if rev is None:
        return directory(path)  # type: ignore[arg-type]
    if path is None:
        try:
            resolve_commit(cwd, rev)
        except RevisionProblem:
            raise RevisionProblem(
                f"{text!r} is neither a directory nor a git revision",
                "give a policy directory, a revision (HEAD~1, origin/main) or REV:PATH (HEAD~1:policies.d)",
            ) from None
    return checkout(cwd, rev, path if path is not None else default_path, spec=text)


def located(problem: RevisionProblem, loc: Location) -> PolicyError:
    return PolicyError([Finding("bad-revision", problem.message, loc, help=problem.help or None)])
