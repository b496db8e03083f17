"""An RCU grace period on demand, for the reconciler's generation flip.

After flipping `pepc_ctrl.active_gen`, a packet that read the old value may
still be looking up the old generation. Before that generation is rewritten
every such packet must be done. XDP programs run inside an RCU read-side
critical section, and the kernel ends every successful userspace update of
an ARRAY_OF_MAPS / HASH_OF_MAPS element with `synchronize_rcu()`
(`maybe_wait_bpf_programs()` in kernel/bpf/syscall.c, there precisely so
that userspace can know running programs see the new value). So updating
one element of a private, unpinned, one-element array-of-maps is a real
grace period: when the call returns, every program run that started before
it has finished. tests/test_reconcile_kernel.py measures that it waits.

The maps are anonymous and die with their file descriptors.
"""

from __future__ import annotations

import ctypes
import os
import time

BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_ARRAY_OF_MAPS = 12
BPF_ANY = 0


class _CreateOpts(ctypes.Structure):
    # struct bpf_map_create_opts of libbpf 1.x (bpf/bpf.h); `sz` makes it
    # forward and backward compatible.
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("btf_fd", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
        ("numa_node", ctypes.c_uint32),
        ("map_ifindex", ctypes.c_uint32),
    ]


_lib: ctypes.CDLL | None = None


def _libbpf() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        lib.bpf_map_create.argtypes = [
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_uint32,
            ctypes.c_uint32,
            ctypes.c_uint32,
            ctypes.POINTER(_CreateOpts),
        ]
        lib.bpf_map_create.restype = ctypes.c_int
        lib.bpf_map_update_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64]
        lib.bpf_map_update_elem.restype = ctypes.c_int
        _lib = lib
    return _lib


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = -rc
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


class RcuBarrier:
    """`wait()` returns after a full RCU grace period."""

    def __init__(self) -> None:
        lib = _libbpf()
        self._inner = _check(lib.bpf_map_create(BPF_MAP_TYPE_ARRAY, b"pepc_rcu_in", 4, 4, 1, None), "create barrier inner map")
        try:
            opts = _CreateOpts(sz=ctypes.sizeof(_CreateOpts), inner_map_fd=self._inner)
            self._outer = _check(
                lib.bpf_map_create(BPF_MAP_TYPE_ARRAY_OF_MAPS, b"pepc_rcu", 4, 4, 1, ctypes.byref(opts)),
                "create barrier map",
            )
        except BaseException:
            os.close(self._inner)
            raise
        self.waits = 0
        self.seconds = 0.0

    def wait(self) -> None:
        key = ctypes.c_uint32(0)
        val = ctypes.c_uint32(self._inner)
        t = time.perf_counter()
        _check(_libbpf().bpf_map_update_elem(self._outer, ctypes.byref(key), ctypes.byref(val), BPF_ANY), "RCU barrier")
        self.seconds += time.perf_counter() - t
        self.waits += 1

    def close(self) -> None:
        for fd in (getattr(self, "_outer", -1), getattr(self, "_inner", -1)):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._outer = self._inner = -1

    def __enter__(self) -> "RcuBarrier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
