"""Noticing changes to the policy directory and pepc.yaml.

watchdog (inotify) reports events; this module only decides which ones can
change what `load` would read, and turns them into `notify_change()` calls.
It never loads anything itself: a burst of events (an editor's
write-temp-then-rename, a `git checkout` of a hundred files) is collapsed by
the scheduler's debounce into one reconcile.

The recursive watch follows the directory's identity: when the directory is
replaced (`mv new policies.d`, a deploy tool swapping a symlink), the watch
on the old inode would go deaf, so `rearm()` re-schedules it — on events in
the parent directory right away, and at every reconcile anyway.

Symbolic links on the way to the directory are watched where they live:
git-sync publishes a checkout by renaming a new symlink over
`<root>/<link>` (-> `.worktrees/<sha>`), an event in `<root>`, which no
watch below the link sees. Such a rename re-arms the watches and asks for
one reconcile; the loader then reads one resolved tree (see `resolved`),
so a swap is applied whole.

`fingerprint()` is the safety net for missed events (inotify queue overflow,
network file systems): a stat walk of exactly the files the loader reads.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import PurePath
from typing import Callable, Hashable

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from pepc.report import log as pepclog

LOG = pepclog.get("fs")

POLICY_SUFFIXES = (".yaml", ".yml", ".json")  # what pepc.loader reads (dot-names skipped)

# Opened / closed-without-write are left out: pepc's own reads would wake it.
EVENT_FILTER = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileClosedEvent,
    FileAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
]


def _rel_parts(path: str, root: str) -> tuple[str, ...] | None:
    try:
        return PurePath(os.path.abspath(path)).relative_to(PurePath(root)).parts
    except ValueError:
        return None


def relevant(path: str, is_directory: bool, root: str, config: str | None) -> bool:
    """Can an event on `path` change what the loader reads?

    `root` and `config` are absolute. Dot-names anywhere below the root
    (.git/, editor swap files) are never read; non-policy files neither.
    A directory event counts (a whole subtree may have appeared or gone),
    except a plain "modified" of a directory, which every file event in it
    also causes; callers pass those with is_directory=False filtered out.
    """
    if not path:
        return False
    ap = os.path.abspath(path)
    if config is not None and ap == config:
        return True
    parts = _rel_parts(ap, root)
    if parts is None:
        return False
    if not parts:
        return True  # the root itself (created, removed, moved)
    if any(p.startswith(".") for p in parts):
        return False
    if is_directory:
        return True
    return parts[-1].lower().endswith(POLICY_SUFFIXES)


def symlinks_on_path(path: str) -> list[str]:
    """The symbolic links among `path` and its ancestors, as absolute
    paths written the way `path` is (not resolved): the names whose
    re-pointing changes what `path` means."""
    out = []
    cur = os.path.abspath(path)
    while True:
        if os.path.islink(cur):
            out.append(cur)
        parent = os.path.dirname(cur)
        if parent == cur:
            return out
        cur = parent


def resolved(path: str) -> str:
    """`path` with its symbolic links resolved once, when it has any, so a
    whole load reads one tree even if a link is swapped meanwhile; else
    `path` as given (findings keep the names the user wrote)."""
    return os.path.realpath(path) if symlinks_on_path(path) else path


def event_relevant(event: FileSystemEvent, root: str, config: str | None) -> bool:
    if isinstance(event, DirModifiedEvent):
        return False  # accompanies a child event, which decides
    paths = [event.src_path, getattr(event, "dest_path", "")]
    return any(relevant(os.fsdecode(p), event.is_directory, root, config) for p in paths if p)


def fingerprint(root: str, config: str | None) -> Hashable:
    """Stat of every file the loader would read, and of pepc.yaml.

    Same walk rules as the loader (sorted, dot-names skipped, links followed,
    each real directory once). Includes ctime so a chmod that makes a file
    unreadable counts as a change.
    """
    out: list[tuple] = []

    def st_key(s: os.stat_result) -> tuple:
        return (s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_mode)

    seen: set[str] = set()
    stack: list[tuple[str, tuple[str, ...]]] = [(root, ())]
    while stack:
        d, rel = stack.pop()
        real = os.path.realpath(d)
        if real in seen:
            continue
        seen.add(real)
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            out.append((rel, "unreadable", err.errno))
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            is_policy = e.name.lower().endswith(POLICY_SUFFIXES)
            try:
                s = os.stat(e.path)  # follows links, like the loader
            except OSError as err:
                if is_policy:
                    out.append((rel + (e.name,), "error", err.errno))
                continue
            if stat.S_ISDIR(s.st_mode):
                stack.append((e.path, rel + (e.name,)))
                out.append((rel + (e.name,), "dir", s.st_ino))
            elif is_policy:
                out.append((rel + (e.name,), st_key(s)))
    if config is not None:
        try:
            out.append(("config", st_key(os.stat(config))))
        except OSError as err:
            out.append(("config", "error", err.errno))
    return tuple(out)


class _Handler(FileSystemEventHandler):
    def __init__(self, tree: "TreeWatch") -> None:
        self.tree = tree

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.tree.on_event(event)


class TreeWatch:
    """Recursive watch of the policy directory + a watch of pepc.yaml's and the root's parent."""

    def __init__(self, root: str, config: str | None, on_change: Callable[[str], None]) -> None:
        self.root = os.path.abspath(root)
        self.config = os.path.abspath(config) if config else None
        self.on_change = on_change
        self.observer = Observer()
        self._handler = _Handler(self)
        self._lock = threading.Lock()
        self._root_watch = None
        self._root_id: tuple[int, int] | None = None
        # non-recursive watches: directory -> (its identity, the watch)
        self._parents: dict[str, tuple[tuple[int, int], object]] = {}
        self._links: frozenset[str] = frozenset()

    def start(self) -> None:
        self.rearm()
        self.observer.start()

    def _watched_dirs(self) -> set[str]:
        """The parents of the root and of pepc.yaml, and the directory of
        every symbolic link on the way to either."""
        links = set(symlinks_on_path(self.root)) | (set(symlinks_on_path(self.config)) if self.config else set())
        self._links = frozenset(links)
        dirs = {os.path.dirname(self.root)} | ({os.path.dirname(self.config)} if self.config else set())
        return dirs | {os.path.dirname(p) for p in links}

    def _rearm_parents(self) -> None:
        want = {}
        for d in self._watched_dirs():
            try:
                st = os.stat(d)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                want[d] = (st.st_dev, st.st_ino)
        for d in list(self._parents):
            ident, w = self._parents[d]
            if want.get(d) != ident:  # gone, or now another directory (a link above it moved)
                try:
                    self.observer.unschedule(w)
                except (KeyError, OSError):
                    pass
                del self._parents[d]
        for d, ident in want.items():
            if d not in self._parents:
                try:
                    w = self.observer.schedule(self._handler, d, recursive=False, event_filter=EVENT_FILTER)
                except OSError as err:
                    LOG.warning("cannot watch a directory", fields={"path": d, "error": str(err)})
                    continue
                self._parents[d] = (ident, w)

    def _identity(self) -> tuple[int, int] | None:
        try:
            s = os.stat(self.root)
        except OSError:
            return None
        return (s.st_dev, s.st_ino) if stat.S_ISDIR(s.st_mode) else None

    def rearm(self) -> bool:
        """(Re)schedule the recursive watch if the root is now a different
        directory, and the parent and link watches that moved. True if the
        root's watch changed."""
        with self._lock:
            self._rearm_parents()
            ident = self._identity()
            if ident == self._root_id and (ident is None or self._root_watch is not None):
                return False
            if self._root_watch is not None:
                try:
                    self.observer.unschedule(self._root_watch)
                except (KeyError, OSError):
                    pass
                self._root_watch = None
            self._root_id = ident
            if ident is None:
                return True
            try:
                self._root_watch = self.observer.schedule(self._handler, self.root, recursive=True, event_filter=EVENT_FILTER)
            except OSError as err:  # vanished between stat and schedule: the next event or resync retries
                LOG.warning("cannot watch the policy directory", fields={"path": self.root, "error": str(err)})
                self._root_id = None
            return True

    def on_event(self, event: FileSystemEvent) -> None:
        paths = {os.path.abspath(os.fsdecode(p)) for p in (event.src_path, getattr(event, "dest_path", "")) if p}
        if paths & self._links:
            # a link on the way was re-pointed (git-sync's rename over it):
            # the whole tree may be another one now
            self.rearm()
            self.on_change(self.root)
            return
        if not event_relevant(event, self.root, self.config):
            return
        src = os.path.abspath(os.fsdecode(event.src_path))
        dest = os.path.abspath(os.fsdecode(getattr(event, "dest_path", "") or "")) if getattr(event, "dest_path", "") else ""
        if self.root in (src, dest):
            self.rearm()
        self.on_change(dest or src)  # a rename into place is about its new name

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=5)
