"""`pepc watch` behind git-sync: the checkout is published by swapping a symlink.

git-sync (v4) keeps `<root>/.worktrees/<sha>` trees and publishes one by
creating a symlink to it under a temporary name and renaming that over
`<root>/<link>`; later it deletes the old worktree. These tests do exactly
that. The trees are built so that a mixed one cannot load (every file
refers to a network defined in another file of the same tree), and the
kernel test proves from the live maps and the audit trail that each swap
is applied once, whole.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from pepc.watch import fs
from reconcile_helpers import rule_doc

N_FILES = 12


def tree(root: Path, tag: str) -> Path:
    """A worktree whose files only load together: file 0 defines the
    network every other file's rule uses, under a name of this tree."""
    wt = root / ".worktrees" / tag
    d = wt / "policies.d"
    d.mkdir(parents=True)
    (d / "00-objects.yaml").write_text(json.dumps({"networks": {f"net_{tag}": ["10.70.0.0/16"]}}))
    for i in range(1, N_FILES):
        doc = {"policies": [rule_doc(f"{tag}_{i:02d}", "BLOCK", src=f"net_{tag}", dst=f"192.168.{i}.0/24")]}
        (d / f"{i:02d}.yaml").write_text(json.dumps(doc))
    return wt


def publish(root: Path, tag: str, link: str = "link") -> None:
    """git-sync's swap: a new symlink under a temporary name, renamed over the link."""
    tmp = root / f".{link}.tmp"
    os.symlink(os.path.join(".worktrees", tag), tmp)
    os.rename(tmp, root / link)


def ids(tag: str) -> set[str]:
    return {f"{tag}_{i:02d}" for i in range(1, N_FILES)}


def test_symlinks_on_path(tmp_path):
    root = tmp_path / "git"
    tree(root, "a")
    publish(root, "a")
    p = root / "link" / "policies.d"
    assert fs.symlinks_on_path(str(p)) == [str(root / "link")]
    assert fs.resolved(str(p)) == str((root / ".worktrees" / "a" / "policies.d").resolve())
    plain = root / ".worktrees" / "a" / "policies.d"
    assert fs.resolved(str(plain)) == str(plain)  # no link: the path as written


def test_tree_watch_notices_a_swapped_symlink(tmp_path):
    root = tmp_path / "git"
    tree(root, "a")
    publish(root, "a")
    changes: list[str] = []
    hit = threading.Event()

    def on_change(path: str) -> None:
        changes.append(path)
        hit.set()

    w = fs.TreeWatch(str(root / "link" / "policies.d"), str(tmp_path / "pepc.yaml"), on_change)
    w.start()
    try:
        tree(root, "b")
        time.sleep(0.2)
        assert not hit.is_set()  # a new worktree beside is not a change yet
        publish(root, "b")
        assert hit.wait(10), "the swap was not noticed"
        assert changes[-1] == w.root
        # the watches follow the new tree: an edit inside it is seen
        w.rearm()
        hit.clear()
        shutil.rmtree(root / ".worktrees" / "a")  # git-sync removes the old worktree
        (root / ".worktrees" / "b" / "policies.d" / "99-extra.yaml").write_text("policies: []\n")
        assert hit.wait(10), "an edit in the new tree was not noticed"
    finally:
        w.stop()


@pytest.mark.kernel
def test_git_sync_swap_is_applied_once_and_whole(tmp_path):
    from pepc.reconcile import audit
    from test_watch_kernel import live_rule_ids, start, wait_for, watch_env

    with watch_env(tmp_path) as (h, _policies, _iface, procs):
        root = tmp_path / "git"
        tree(root, "a")
        publish(root, "a")
        w = start(h, root / "link" / "policies.d", procs)
        w.wait_ready()
        assert live_rule_ids(h.pin_dir) == ids("a")

        for old, new in (("a", "b"), ("b", "c")):
            ok0 = w.reconciles("ok")
            recs0 = len(list(audit.read(h.config.state_dir, h.instance)))
            tree(root, new)
            publish(root, new)
            wait_for(lambda: live_rule_ids(h.pin_dir) == ids(new), 20, 0.01, f"tree {new} in the live maps")
            shutil.rmtree(root / ".worktrees" / old)  # as git-sync does after the swap
            time.sleep(1.5)  # past the debounce and the max delay: a second apply would have happened
            assert live_rule_ids(h.pin_dir) == ids(new)
            recs = list(audit.read(h.config.state_dir, h.instance))[recs0:]
            applied = [r for r in recs if r.get("result") == "applied"]
            assert len(applied) == 1, recs
            assert applied[0]["rules"] == {"added": N_FILES - 1, "changed": 0, "removed": N_FILES - 1}
            # never a mixed tree: that would not load (refused) or add fewer rules
            assert not [r for r in recs if r.get("result") in ("refused", "failed")]
            assert w.reconciles("invalid") in (None, 0.0)
            assert w.reconciles("ok") - ok0 >= 1
        assert w.stop() == 0
