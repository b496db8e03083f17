"""Reading LOG_ONLY events from the `pepc_events` ring buffer."""

from __future__ import annotations

import ctypes
from typing import Iterator

from pepc.compiler import layout
from pepc.kernel.errors import kernel_error
from pepc.kernel.libbpf import RINGBUF_SAMPLE_FN, last_errno, lib
from pepc.kernel.maps import BpfMap


def decode_event(raw: bytes) -> dict:
    """A ring-buffer record as layout.EVENT fields, addresses and ports as
    host integers: `family` says whether `src`/`dst` (4) or `src6`/`dst6`
    (6, 128-bit) hold the addresses."""
    rec = layout.EVENT.unpack(raw)
    rec["src6"] = int.from_bytes(bytes(rec["src6"]), "big")
    rec["dst6"] = int.from_bytes(bytes(rec["dst6"]), "big")
    return rec


class EventReader:
    """Consumes records from a ring buffer map. Use as a context manager;
    `poll(timeout_ms)` returns the events that arrived, decoded."""

    def __init__(self, ring: BpfMap):
        if ring.map_type != "RINGBUF":
            raise TypeError(f"{ring.name} is not a ring buffer")
        self._pending: list[dict] = []
        self._cb = RINGBUF_SAMPLE_FN(self._sample)  # keep the callback alive
        self._rb = lib().ring_buffer__new(ring.fd, self._cb, None, None)
        if not self._rb:
            raise kernel_error("open ring buffer", last_errno(), what=ring.name)

    def _sample(self, ctx: int, data: int, size: int) -> int:
        self._pending.append(decode_event(ctypes.string_at(data, size)))
        return 0

    def _take(self) -> list[dict]:
        out, self._pending = self._pending, []
        return out

    def poll(self, timeout_ms: int = 100) -> list[dict]:
        """Wait up to `timeout_ms` for events; returns those consumed."""
        rc = lib().ring_buffer__poll(self._rb, int(timeout_ms))
        if rc < 0 and -rc != 4:  # EINTR: a signal, not a failure
            raise kernel_error("poll ring buffer", last_errno(rc))
        return self._take()

    def drain(self) -> list[dict]:
        """Every event available now, without waiting."""
        rc = lib().ring_buffer__consume(self._rb)
        if rc < 0:
            raise kernel_error("read ring buffer", last_errno(rc))
        return self._take()

    def __iter__(self) -> Iterator[dict]:
        while True:
            yield from self.poll(1000)

    def close(self) -> None:
        if self._rb:
            lib().ring_buffer__free(self._rb)
            self._rb = None

    def __enter__(self) -> "EventReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
