"""LOG_ONLY events from the `pepc_events` ring buffer, made readable.

The XDP program records the slot, the 5-tuple, the length and
`bpf_ktime_get_ns()` (CLOCK_MONOTONIC); this module names the rule from the
live `pepc_slots` of the active generation and turns the time into wall
time. `EventTap` exposes the ring buffer's fd so a loop can wait on it with
everything else (`select`), consuming only when the kernel says data is
there: no polling.

The ring buffer has ONE consumer position: two readers of one instance
(`pepc watch` and `pepc events --follow`) split the events between them.
"""

from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from pepc.compiler import layout
from pepc.policy.model import Action, Protocol


def _mono_to_wall(ts_ns: int) -> float:
    return ts_ns / 1e9 + (time.time() - time.monotonic())


@dataclass(frozen=True)
class Event:
    time: float  # Unix seconds
    rule: str | None  # None: the slot holds no rule any more
    slot: int
    action: str
    proto: str
    src: str
    dst: str
    sport: int
    dport: int
    length: int

    @classmethod
    def from_record(cls, rec: dict, rule: str | None, wall: float | None = None) -> "Event":
        try:
            proto = Protocol(rec["proto"]).name
        except ValueError:
            proto = str(rec["proto"])
        try:
            action = Action(rec["action"]).name
        except ValueError:
            action = str(rec["action"])
        if rec.get("family") == 6:
            src, dst = str(ipaddress.IPv6Address(rec["src6"])), str(ipaddress.IPv6Address(rec["dst6"]))
        else:
            src, dst = str(ipaddress.IPv4Address(rec["src"])), str(ipaddress.IPv4Address(rec["dst"]))
        return cls(
            time=wall if wall is not None else _mono_to_wall(rec["ts_ns"]),
            rule=rule,
            slot=rec["slot"],
            action=action,
            proto=proto,
            src=src,
            dst=dst,
            sport=rec["sport"],
            dport=rec["dport"],
            length=rec["len"],
        )

    @property
    def iso_time(self) -> str:
        return datetime.fromtimestamp(self.time, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")

    def as_json(self) -> dict:
        return {
            "time": self.iso_time,
            "rule": self.rule,
            "slot": self.slot,
            "action": self.action,
            "proto": self.proto,
            "src": self.src,
            "sport": self.sport,
            "dst": self.dst,
            "dport": self.dport,
            "len": self.length,
        }

    def text(self) -> str:
        ports = self.proto in ("TCP", "UDP")
        v6 = ":" in self.src
        src = (f"[{self.src}]:{self.sport}" if v6 else f"{self.src}:{self.sport}") if ports else self.src
        dst = (f"[{self.dst}]:{self.dport}" if v6 else f"{self.dst}:{self.dport}") if ports else self.dst
        rule = self.rule if self.rule is not None else f"<slot {self.slot}>"
        return f"{self.iso_time} {self.action} rule={rule} {self.proto} {src} -> {dst} len={self.length}"


def slot_rule_id(raw_slot: bytes | None) -> str | None:
    """The rule id a `pepc_slots` value names (ids longer than 64 bytes end in '…')."""
    if raw_slot is None or not any(raw_slot):
        return None
    s = layout.SLOT.unpack(raw_slot)
    if not s["flags"] & layout.SLOT_FLAG_USED:
        return None
    text = bytes(s["id"]).decode("utf-8", errors="replace")
    return text + "…" if s["id_len"] > layout.RULE_ID_LEN else text


class SlotNames:
    """slot -> rule id from the active generation, re-read when the generation flips."""

    def __init__(self, ctrl_lookup: Callable[[], bytes | None], slots_lookup: Callable[[int, int], bytes | None]) -> None:
        self._ctrl = ctrl_lookup
        self._slots = slots_lookup
        self._gen: int | None = None
        self._cache: dict[int, str | None] = {}

    def refresh(self) -> None:
        raw = self._ctrl()
        gen = layout.CTRL.unpack(raw)["active_gen"] & 1 if raw else 0
        if gen != self._gen:
            self._gen, self._cache = gen, {}

    def __call__(self, slot: int) -> str | None:
        if slot not in self._cache:
            self._cache[slot] = slot_rule_id(self._slots(self._gen or 0, slot))
        return self._cache[slot]

    def forget(self) -> None:
        self._cache = {}


class EventTap:
    """An open ring buffer of a pinned instance plus the rule names of its slots."""

    def __init__(self, pin_dir: str | os.PathLike) -> None:
        from pepc.kernel.maps import open_pinned
        from pepc.kernel.ringbuf import EventReader

        d = Path(pin_dir)
        self.pin_dir = d
        self._maps = []
        try:
            self.ring = self._open(open_pinned, d / "pepc_events")
            self.map_id = self.ring.id
            ctrl = self._open(open_pinned, d / "pepc_ctrl")
            slots = [self._open(open_pinned, d / f"pepc_slots_{g}") for g in (0, 1)]
            self.reader = EventReader(self.ring)
        except Exception:
            self.close()
            raise
        u32 = layout.U32_KEY.pack
        self.names = SlotNames(lambda: ctrl.lookup(u32({"v": 0})), lambda g, s: slots[g].lookup(u32({"v": s})))

    def _open(self, opener, path):
        m = opener(path)
        self._maps.append(m)
        return m

    def fileno(self) -> int:
        return self.ring.fd

    def read(self) -> list[Event]:
        """Every event available now (never waits)."""
        records = self.reader.drain()
        if not records:
            return []
        self.names.refresh()
        offset = time.time() - time.monotonic()
        out = []
        for rec in records:
            name = self.names(rec["slot"])
            if name is None:  # a rule added since the cache was filled
                self.names.forget()
                name = self.names(rec["slot"])
            out.append(Event.from_record(rec, name, rec["ts_ns"] / 1e9 + offset))
        return out

    def stale(self) -> bool:
        """Whether the pinned ring buffer is no longer this one (the instance was reloaded or removed)."""
        from pepc.kernel.maps import open_pinned

        try:
            m = open_pinned(self.pin_dir / "pepc_events")
        except Exception:
            return True
        try:
            return m.id != self.map_id
        finally:
            m.close()

    def close(self) -> None:
        r = getattr(self, "reader", None)
        if r is not None:
            r.close()
            self.reader = None
        for m in self._maps:
            try:
                m.close()
            except Exception:
                pass
        self._maps = []
