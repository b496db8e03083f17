"""The data-plane program of a first apply, built and loaded while the policy
compiles.

The program depends on the layout only (capacities; the rules, the default
action and the event cap live in maps), and the layout is known from the
config before anything is compiled. So when an apply finds no instance, it
starts a child process that renders the header for that layout, runs clang
and loads the object (the verifier, map creation), pinning program and maps
under `<pin_root>/_pre-<instance>`, while the parent compiles the policy on
the other core. The parent then opens those pins (`take`), removes them,
and goes on as if it had loaded the object itself: nothing is attached or
pinned where anyone looks until the apply's own pin and attach steps.

A process, not a thread: clang and the kernel calls would release the GIL,
but the many small Python steps between them would queue behind the
compiler's long C calls (measured: a 0.5 s build and load took 2 s in a
thread). When the child fails, or its layout is not the program's,
`take` returns None and the apply builds and loads as usual, reporting
any error itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pepc.compiler import layout
from pepc.policy.config import Config
from pepc.policy.model import Action


def prefetch_dir(config: Config, instance: str) -> Path:
    return Path(config.pin_root) / f"_pre-{instance}"


class Prefetch:
    def __init__(self, config: Config, instance: str) -> None:
        from pepc.kernel import pinswap

        self.dir = prefetch_dir(config, instance)
        if self.dir.exists():  # left by an apply that was killed
            pinswap.remove(self.dir)
        caps = config.capacities
        spec = {
            "dir": str(self.dir),
            "caps": [caps.max_rules, caps.max_entries, caps.max_masks, caps.ring_bytes],
            "default_action": config.default_action.name,
            "event_cap": config.event_cap,
        }
        self.proc: subprocess.Popen | None
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pepc.reconcile.prefetch", json.dumps(spec)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        except OSError:  # only a head start: the apply then builds and loads by itself
            self.proc = None

    def take(self, layout_digest: str) -> Any:
        """The loaded Instance (its pins removed) if the child built it for
        `layout_digest`, else None."""
        from pepc.kernel import pinswap
        from pepc.kernel.loader import open_instance

        proc, self.proc = self.proc, None
        if proc is None:
            return None
        out, _ = proc.communicate()
        inst = None
        try:
            if proc.returncode == 0 and out.strip() == layout_digest:
                inst = open_instance(self.dir)
        finally:
            if self.dir.exists():
                pinswap.remove(self.dir)  # the open fds keep program and maps alive
        return inst

    def discard(self) -> None:
        from pepc.kernel import pinswap

        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.communicate()
        if self.dir.exists():
            pinswap.remove(self.dir)


def _main(argv: list[str]) -> int:
    from pepc.compiler import pack
    from pepc.kernel import loader
    from pepc.compiler.prebuilt import layout_object

    spec = json.loads(argv[0])
    caps = layout.Capacities(*spec["caps"])
    with tempfile.TemporaryDirectory(prefix="pepc-build-") as tmp:
        obj = layout_object(caps, Action[spec["default_action"]], spec["event_cap"], "", Path(tmp))
        inst = loader.load_object(obj)
    try:
        loader.pin(inst, spec["dir"])
    finally:
        inst.close()
    print(pack.layout_digest(caps))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
