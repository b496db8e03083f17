"""Whole-map reads for the reconciler: one BPF_MAP_LOOKUP_BATCH call per map
(buffers sized to max_entries) and one list comprehension to cut the
buffers into elements.

BpfMap.items() reads 4096 elements per call and yields a tuple per
element, which is right for general use but costs ~0.3 s per 100k-element
map; the reconciler reads both generations of every map on each apply.
Cursor sizes follow KERNEL-NOTES: 4 bytes for hash maps, key_size for
arrays.
"""

from __future__ import annotations

import ctypes
import errno
from ctypes import byref, c_uint32
from typing import Sequence

from pepc.kernel.errors import kernel_error
from pepc.kernel.libbpf import last_errno, lib

_HASH = ("HASH", "PERCPU_HASH", "LRU_HASH", "LRU_PERCPU_HASH")


def _lookup_all(bm) -> tuple[bytes, bytes, int]:
    """(keys, values, count) of every element; values in lookup layout
    (per-CPU maps: value_buf_size per element)."""
    ks, vs = bm.key_size, bm.value_buf_size
    cursor = 4 if bm.map_type in _HASH else ks
    chunk = max(bm.max_entries, 1)
    keys_out: list[bytes] = []
    vals_out: list[bytes] = []
    total = 0
    in_batch = None
    out_batch = ctypes.create_string_buffer(cursor)
    while True:
        keys = ctypes.create_string_buffer(chunk * ks)
        vals = ctypes.create_string_buffer(chunk * vs)
        count = c_uint32(chunk)
        rc = lib().bpf_map_lookup_batch(bm.fd, in_batch, out_batch, keys, vals, byref(count), None)
        err = last_errno(rc) if rc < 0 else 0
        if err and err != errno.ENOENT:
            if err == errno.ENOSPC and chunk < 1 << 24:
                chunk *= 2  # a bucket larger than the buffer (cannot happen with chunk >= max_entries)
                continue
            raise kernel_error("batch lookup", err, what=bm.name)
        n = count.value
        keys_out.append(keys.raw[: n * ks])
        vals_out.append(vals.raw[: n * vs])
        total += n
        if err == errno.ENOENT or n == 0:
            break
        in_batch = ctypes.create_string_buffer(out_batch.raw, cursor)
    return b"".join(keys_out), b"".join(vals_out), total


def read_dict(bm) -> dict[bytes, bytes]:
    """Every element of a (non-per-CPU) map as {key: value}."""
    kr, vr, n = _lookup_all(bm)
    ks, vs = bm.key_size, bm.value_size
    return dict(zip([kr[i : i + ks] for i in range(0, n * ks, ks)], [vr[i : i + vs] for i in range(0, n * vs, vs)]))


def read_nonzero(bm) -> dict[bytes, bytes]:
    """The elements of an array map whose value is not all zero."""
    kr, vr, n = _lookup_all(bm)
    ks, vs = bm.key_size, bm.value_size
    zero = bytes(vs)
    return {kr[j * ks : (j + 1) * ks]: v for j, v in enumerate(vr[i : i + vs] for i in range(0, n * vs, vs)) if v != zero}


class _BatchOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


#: Elements per BPF_MAP_UPDATE_BATCH call: the kernel copies element by
#: element, so large calls cost nothing extra; this bounds the buffers.
CHUNK = 65536


def write(bm, keys: Sequence[bytes], values: Sequence[bytes], flags: int = 0) -> int:
    """BPF_MAP_UPDATE_BATCH of `keys`/`values` (values in lookup layout:
    per-CPU maps take value_buf_size bytes per element). Returns the number
    of calls. On failure raises KernelError with `applied` = elements
    written (the first `applied` of `keys`): batch updates are not atomic."""
    ks, vs = bm.key_size, bm.value_buf_size
    if len(keys) != len(values):
        raise ValueError("keys and values differ in length")
    opts = _BatchOpts(ctypes.sizeof(_BatchOpts), flags, 0)
    done = calls = 0
    for start in range(0, len(keys), CHUNK):
        kb = b"".join(keys[start : start + CHUNK])
        vb = b"".join(values[start : start + CHUNK])
        n = len(kb) // ks if ks else 0
        if len(kb) != n * ks or len(vb) != n * vs or n != min(CHUNK, len(keys) - start):
            raise ValueError(f"{bm.name}: keys must be {ks} bytes and values {vs} bytes")
        count = c_uint32(n)
        rc = lib().bpf_map_update_batch(bm.fd, kb, vb, byref(count), ctypes.addressof(opts))
        calls += 1
        if rc < 0:
            raise kernel_error("batch update", last_errno(rc), what=bm.name, applied=done + count.value)
        done += count.value
    return calls


def delete(bm, keys: Sequence[bytes]) -> int:
    """BPF_MAP_DELETE_BATCH; every key must exist. Returns the number of calls."""
    done = calls = 0
    for start in range(0, len(keys), CHUNK):
        kb = b"".join(keys[start : start + CHUNK])
        count = c_uint32(len(kb) // bm.key_size)
        rc = lib().bpf_map_delete_batch(bm.fd, kb, byref(count), None)
        calls += 1
        if rc < 0:
            raise kernel_error("batch delete", last_errno(rc), what=bm.name, applied=done + count.value)
        done += count.value
    return calls
