"""ctypes bindings for the part of libbpf 1.1 (`libbpf.so.1`) pepc uses.

Conventions of libbpf 1.x: functions returning int return -errno; functions
returning a pointer return NULL and set errno. Every function used gets its
argtypes/restype here so a wrong call fails in Python, not in C.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import os
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_int,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from functools import lru_cache

from pepc.policy.diagnostics import EnvironmentProblem

# ---------------------------------------------------------------- structs


class BpfMapInfo(Structure):
    """struct bpf_map_info (UAPI linux/bpf.h)."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("key_size", c_uint32),
        ("value_size", c_uint32),
        ("max_entries", c_uint32),
        ("map_flags", c_uint32),
        ("name", c_char * 16),
        ("ifindex", c_uint32),
        ("btf_vmlinux_value_type_id", c_uint32),
        ("netns_dev", c_uint64),
        ("netns_ino", c_uint64),
        ("btf_id", c_uint32),
        ("btf_key_type_id", c_uint32),
        ("btf_value_type_id", c_uint32),
        ("_pad", c_uint32),
        ("map_extra", c_uint64),
    ]


class BpfProgInfo(Structure):
    """The leading fields of struct bpf_prog_info; the kernel fills only as
    many bytes as we pass, so the prefix is enough."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("tag", c_char * 8),
        ("jited_prog_len", c_uint32),
        ("xlated_prog_len", c_uint32),
        ("jited_prog_insns", c_uint64),
        ("xlated_prog_insns", c_uint64),
        ("load_time", c_uint64),
        ("created_by_uid", c_uint32),
        ("nr_map_ids", c_uint32),
        ("map_ids", c_uint64),
        ("name", c_char * 16),
    ]


class BpfTestRunOpts(Structure):
    """struct bpf_test_run_opts (libbpf bpf.h); `sz` must be set."""

    _fields_ = [
        ("sz", c_size_t),
        ("data_in", c_void_p),
        ("data_out", c_void_p),
        ("data_size_in", c_uint32),
        ("data_size_out", c_uint32),
        ("ctx_in", c_void_p),
        ("ctx_out", c_void_p),
        ("ctx_size_in", c_uint32),
        ("ctx_size_out", c_uint32),
        ("retval", c_uint32),
        ("repeat", c_int),
        ("duration", c_uint32),
        ("flags", c_uint32),
        ("cpu", c_uint32),
        ("batch_size", c_uint32),
    ]


# BPF_MAP_TYPE_* (UAPI enum bpf_map_type), by the suffix layout.MAPS uses.
MAP_TYPES: dict[int, str] = {
    1: "HASH",
    2: "ARRAY",
    3: "PROG_ARRAY",
    4: "PERF_EVENT_ARRAY",
    5: "PERCPU_HASH",
    6: "PERCPU_ARRAY",
    9: "LRU_HASH",
    10: "LRU_PERCPU_HASH",
    11: "LPM_TRIE",
    12: "ARRAY_OF_MAPS",
    13: "HASH_OF_MAPS",
    27: "RINGBUF",
}

BPF_PROG_TYPE_XDP = 6
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2

#: int (*libbpf_print_fn_t)(enum libbpf_print_level, const char *, va_list)
PRINT_FN = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
#: int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size)
RINGBUF_SAMPLE_FN = CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)

LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2

_P = c_void_p
_SIGNATURES: dict[str, tuple[object, list]] = {
    # objects and programs
    "bpf_object__open_file": (_P, [c_char_p, _P]),
    "bpf_object__load": (c_int, [_P]),
    "bpf_object__close": (None, [_P]),
    "bpf_object__next_map": (_P, [_P, _P]),
    "bpf_object__next_program": (_P, [_P, _P]),
    "bpf_map__name": (c_char_p, [_P]),
    "bpf_map__fd": (c_int, [_P]),
    "bpf_map__reuse_fd": (c_int, [_P, c_int]),
    "bpf_program__name": (c_char_p, [_P]),
    "bpf_program__fd": (c_int, [_P]),
    "libbpf_set_print": (PRINT_FN, [PRINT_FN]),
    "libbpf_num_possible_cpus": (c_int, []),
    # fds, pins, info
    "bpf_obj_pin": (c_int, [c_int, c_char_p]),
    "bpf_obj_get": (c_int, [c_char_p]),
    "bpf_obj_get_info_by_fd": (c_int, [c_int, _P, POINTER(c_uint32)]),
    "bpf_prog_get_fd_by_id": (c_int, [c_uint32]),
    # map elements
    "bpf_map_lookup_elem": (c_int, [c_int, _P, _P]),
    "bpf_map_update_elem": (c_int, [c_int, _P, _P, c_uint64]),
    "bpf_map_delete_elem": (c_int, [c_int, _P]),
    "bpf_map_get_next_key": (c_int, [c_int, _P, _P]),
    "bpf_map_lookup_batch": (c_int, [c_int, _P, _P, _P, _P, POINTER(c_uint32), _P]),
    "bpf_map_update_batch": (c_int, [c_int, _P, _P, POINTER(c_uint32), _P]),
    "bpf_map_delete_batch": (c_int, [c_int, _P, POINTER(c_uint32), _P]),
    # test runs
    "bpf_prog_test_run_opts": (c_int, [c_int, POINTER(BpfTestRunOpts)]),
    # ring buffers
    "ring_buffer__new": (_P, [c_int, RINGBUF_SAMPLE_FN, _P, _P]),
    "ring_buffer__poll": (c_int, [_P, c_int]),
    "ring_buffer__consume": (c_int, [_P]),
    "ring_buffer__free": (None, [_P]),
}


class _Lib:
    """libbpf with typed functions as attributes."""

    def __init__(self, cdll: ctypes.CDLL):
        self._cdll = cdll
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(cdll, name)
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)


@lru_cache(maxsize=1)
def lib() -> _Lib:
    try:
        cdll = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError as e:
        raise EnvironmentProblem(
            f"cannot load libbpf.so.1: {e}", "install libbpf 1.x: apt-get install libbpf1"
        ) from None
    try:
        return _Lib(cdll)
    except AttributeError as e:
        raise EnvironmentProblem(f"libbpf.so.1 is too old: {e}", "pepc needs libbpf >= 1.1") from None


@lru_cache(maxsize=1)
def libc() -> ctypes.CDLL:
    c = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    c.vsnprintf.restype = c_int
    c.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
    return c


@lru_cache(maxsize=1)
def num_possible_cpus() -> int:
    n = lib().libbpf_num_possible_cpus()
    if n <= 0:
        raise EnvironmentProblem(f"cannot count possible CPUs: {os.strerror(-n)}")
    return n


def last_errno(rc: int | None = None) -> int:
    """errno of a failed call: -rc for int calls, errno for pointer calls."""
    if rc is not None and rc < 0:
        return -rc
    return ctypes.get_errno() or _errno.EIO


class LogCapture:
    """Collects libbpf's log lines (including the verifier log it prints
    when a program load fails) while active; a context manager."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._cb = PRINT_FN(self._print)
        self._old = None

    def _print(self, level: int, fmt: bytes, args: int) -> int:
        buf = ctypes.create_string_buffer(8192)
        libc().vsnprintf(buf, len(buf), fmt, args)
        self.lines.append(buf.value.decode("utf-8", "replace"))
        return 0

    def __enter__(self) -> "LogCapture":
        self._old = lib().libbpf_set_print(self._cb)
        return self

    def __exit__(self, *exc) -> None:
        lib().libbpf_set_print(self._old)

    @property
    def text(self) -> str:
        return "".join(self.lines)


def buffer(data: bytes) -> ctypes.Array:
    return ctypes.create_string_buffer(bytes(data), len(data)) if data else ctypes.create_string_buffer(1)


__all__ = [
    "BpfMapInfo",
    "BpfProgInfo",
    "BpfTestRunOpts",
    "MAP_TYPES",
    "LogCapture",
    "lib",
    "num_possible_cpus",
    "last_errno",
]
