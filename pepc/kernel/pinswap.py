"""Swapping an instance's pin directory for a new program, crash-safely.

A reload (first load or layout change) never pins into the live directory
`<root>/<NAME>` directly. It pins the complete new set into
`<root>/_new-<NAME>`, switches the interfaces (netlink compare-and-swap),
then renames directories, each rename atomic on bpffs:

    1. pin everything into _new-NAME
    2. replace the program on every interface that runs the old one
    3. NAME -> _old-NAME            (skipped on a first load)
    4. _new-NAME -> NAME
    5. remove _old-NAME

`recover()` (called under the instance lock before every apply/unload)
reads where a killed run stopped and finishes or undoes it:

- `_new-` incomplete (killed while pinning): removed;
- `_new-` complete and NAME missing (killed between 3 and 4, or a first
  load killed before 4): step 4, then 5;
- `_new-` complete, NAME present, the new program attached somewhere
  (killed during or after 2): finish 2 on interfaces still running the
  old program, then 3-5;
- `_new-` complete, NAME present, the new program attached nowhere (killed
  before 2): removed, the next load starts afresh;
- `_old-` with NAME present (killed before 5): removed.
"""

from __future__ import annotations

import os
from pathlib import Path

from pepc.compiler import layout
from pepc.policy.config import XdpMode
from pepc.kernel import links, netlink
from pepc.kernel.loader import PROG_PIN, Instance, open_instance, unpin


def live_dir(root: str | os.PathLike, name: str) -> Path:
    return Path(root) / name


# bpffs refuses '.' in names (EPERM), so no dot files: the prefixes start
# with '_', which an instance name cannot (reconcile.apply.check_instance_name).
def staging_dir(root: str | os.PathLike, name: str) -> Path:
    return Path(root) / f"_new-{name}"


def retired_dir(root: str | os.PathLike, name: str) -> Path:
    return Path(root) / f"_old-{name}"


def expected_pins() -> list[str]:
    return [PROG_PIN] + [n for m in layout.MAPS for n in m.kernel_names()]


def complete(d: Path) -> bool:
    """Every pin a pepc instance of this layout has is present."""
    try:
        names = set(os.listdir(d))
    except OSError:
        return False
    return all(p in names for p in expected_pins())


def remove(d: Path) -> None:
    unpin(d)


def _mode(m: str) -> XdpMode:
    return {"native": XdpMode.NATIVE, "generic": XdpMode.GENERIC, "offload": XdpMode.OFFLOAD}.get(m, XdpMode.AUTO)


def switch_interfaces(old: Instance, new: Instance) -> list[str]:
    """Replace `old`'s program with `new`'s on every interface running it,
    each an atomic compare-and-swap in the mode it runs in. Returns the
    interfaces switched."""
    done = []
    for link in links.links_of({old.prog_id}):
        netlink.attach(link.ifname, new.prog_fd, _mode(link.mode), replace_prog_fd=old.prog_fd)
        done.append(link.ifname)
    return done


def promote(root: str | os.PathLike, name: str) -> None:
    """Steps 3-5: make the staged set the live one."""
    live, new, old = live_dir(root, name), staging_dir(root, name), retired_dir(root, name)
    if old.exists():
        remove(old)
    if live.exists():
        os.rename(live, old)
    os.rename(new, live)
    if old.exists():
        remove(old)


def recover(root: str | os.PathLike, name: str) -> list[str]:
    """Finish or undo an interrupted reload; returns what was done (for logs)."""
    live, new, old = live_dir(root, name), staging_dir(root, name), retired_dir(root, name)
    done: list[str] = []
    if new.exists():
        if not complete(new):
            remove(new)
            done.append(f"removed incomplete {new}")
        elif not live.exists():
            promote(root, name)
            done.append(f"promoted {new}")
        else:
            staged = open_instance(new)
            current = open_instance(live)
            try:
                attached = staged is not None and bool(links.links_of({staged.prog_id}))
                if attached and staged is not None:
                    if current is not None:
                        switch_interfaces(current, staged)
                    promote(root, name)
                    done.append(f"finished the switch to {new}")
                else:
                    remove(new)
                    done.append(f"removed unused {new}")
            finally:
                for inst in (staged, current):
                    if inst is not None:
                        inst.close()
    if old.exists() and live.exists():
        remove(old)
        done.append(f"removed {old}")
    return done
