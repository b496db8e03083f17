"""What the reconciler knows about a live instance, as plain values.

`live.read_live` fills a LiveState from the kernel; tests build one from
compiled programs. Nothing in here is read from a file on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from pepc.reconcile import diff


@dataclass(frozen=True)
class Attachment:
    """An interface and the XDP program attached to it, as netlink reports."""

    ifname: str
    ifindex: int
    prog_id: int | None  # None: nothing attached
    mode: str | None  # "native" | "generic" | "offload" | None


@dataclass(frozen=True)
class LiveState:
    instance: str
    pin_dir: str
    layout_digest: str  # 32 hex digits, from pepc_ctrl
    active_gen: int  # 0 or 1
    gens: tuple[Mapping[str, Mapping[bytes, bytes]], Mapping[str, Mapping[bytes, bytes]]]
    prog_id: int | None = None
    capacities: Mapping[str, int] = field(default_factory=dict)  # max_entries by logical map name
    attachments: tuple[Attachment, ...] = ()  # interfaces where this instance's program is attached
    #: words of the mask prefilter (pepc.compiler.bloom) of each generation; None when
    #: the loaded program has no prefilter maps
    bloom_words: int | None = None
    #: homes of the direct table (pepc.compiler.direct) of each generation; None when
    #: the loaded program has no direct-table maps
    direct_homes: int | None = None

    @property
    def inactive_gen(self) -> int:
        return 1 - self.active_gen

    @property
    def active(self) -> Mapping[str, Mapping[bytes, bytes]]:
        return self.gens[self.active_gen]

    @property
    def inactive(self) -> Mapping[str, Mapping[bytes, bytes]]:
        return self.gens[self.inactive_gen]

    def gen_info(self, gen: int) -> dict | None:
        return diff.gen_info(self.gens[gen])
