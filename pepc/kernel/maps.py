"""BPF maps by file descriptor: element, batch and per-CPU access."""

from __future__ import annotations

import ctypes
import errno
import os
from ctypes import byref, c_uint32, sizeof
from typing import Iterator, Sequence

from pepc.kernel.errors import KernelError, kernel_error
from pepc.kernel.libbpf import MAP_TYPES, BpfMapInfo, last_errno, lib, num_possible_cpus

_PERCPU = ("PERCPU_ARRAY", "PERCPU_HASH", "LRU_PERCPU_HASH")
_ARRAYS = ("ARRAY", "PERCPU_ARRAY")
# Batch lookups walk hash maps bucket by bucket: the cursor is a 4-byte
# bucket index there, but a full key for arrays and tries (KERNEL-NOTES).
_HASH_CURSOR = ("HASH", "PERCPU_HASH", "LRU_HASH", "LRU_PERCPU_HASH")
_BATCH = 4096


def _round8(n: int) -> int:
    return (n + 7) & ~7


class BpfMap:
    """One open map. Keys and values are bytes in the map's own layout
    (pack/unpack them with pepc.compiler.layout). Owns its fd: call close()."""

    def __init__(self, fd: int, name: str | None = None):
        info = BpfMapInfo()
        size = c_uint32(sizeof(info))
        rc = lib().bpf_obj_get_info_by_fd(fd, byref(info), byref(size))
        if rc < 0:
            raise kernel_error("map info", last_errno(rc), what=name or f"fd {fd}")
        self.fd = fd
        self.id: int = info.id
        self.name: str = name or info.name.decode()
        self.type_id: int = info.type
        self.map_type: str = MAP_TYPES.get(info.type, f"TYPE_{info.type}")
        self.key_size: int = info.key_size
        self.value_size: int = info.value_size
        self.max_entries: int = info.max_entries
        self.flags: int = info.map_flags

    def __repr__(self) -> str:
        return f"BpfMap({self.name!r}, {self.map_type}, key={self.key_size}, value={self.value_size}, max={self.max_entries}, fd={self.fd})"

    # ---------------------------------------------------------------- basics

    @property
    def percpu(self) -> bool:
        return self.map_type in _PERCPU

    @property
    def is_array(self) -> bool:
        return self.map_type in _ARRAYS

    @property
    def value_buf_size(self) -> int:
        """Bytes one lookup writes: per-CPU maps return one value per possible CPU."""
        if self.percpu:
            return num_possible_cpus() * _round8(self.value_size)
        return self.value_size

    def _key(self, key: bytes) -> ctypes.Array:
        if len(key) != self.key_size:
            raise ValueError(f"{self.name}: key is {len(key)} bytes, map key is {self.key_size}")
        return ctypes.create_string_buffer(bytes(key), self.key_size)

    def _fail(self, op: str, rc: int, applied: int = 0) -> KernelError:
        return kernel_error(op, last_errno(rc), what=self.name, applied=applied)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "BpfMap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------- elements

    def lookup_raw(self, key: bytes) -> bytes | None:
        """The value as the kernel returns it (all CPUs for per-CPU maps)."""
        k = self._key(key)
        v = ctypes.create_string_buffer(self.value_buf_size)
        rc = lib().bpf_map_lookup_elem(self.fd, k, v)
        if rc < 0:
            if -rc == errno.ENOENT:
                return None
            raise self._fail("lookup", rc)
        return v.raw

    def lookup(self, key: bytes) -> bytes | None:
        if self.percpu:
            raise TypeError(f"{self.name} is per-CPU: use lookup_percpu()")
        return self.lookup_raw(key)

    def lookup_percpu(self, key: bytes) -> list[bytes] | None:
        """One value per possible CPU."""
        raw = self.lookup_raw(key)
        return None if raw is None else self._split_percpu(raw)

    def _split_percpu(self, raw: bytes) -> list[bytes]:
        step = _round8(self.value_size)
        return [raw[i * step : i * step + self.value_size] for i in range(num_possible_cpus())]

    def _percpu_value(self, values: Sequence[bytes]) -> bytes:
        step = _round8(self.value_size)
        n = num_possible_cpus()
        if len(values) != n:
            raise ValueError(f"{self.name}: {len(values)} per-CPU values for {n} possible CPUs")
        return b"".join(bytes(v).ljust(step, b"\0") for v in values)

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        if self.percpu:
            raise TypeError(f"{self.name} is per-CPU: use update_percpu()")
        if len(value) != self.value_size:
            raise ValueError(f"{self.name}: value is {len(value)} bytes, map value is {self.value_size}")
        rc = lib().bpf_map_update_elem(self.fd, self._key(key), ctypes.create_string_buffer(bytes(value), len(value)), flags)
        if rc < 0:
            raise self._fail("update", rc)

    def update_percpu(self, key: bytes, values: Sequence[bytes], flags: int = 0) -> None:
        """Write one value per possible CPU (e.g. zeroes to reset a counter)."""
        raw = self._percpu_value(values)
        rc = lib().bpf_map_update_elem(self.fd, self._key(key), ctypes.create_string_buffer(raw, len(raw)), flags)
        if rc < 0:
            raise self._fail("update", rc)

    def zero_value(self) -> list[bytes] | bytes:
        """A zero value in the form update()/update_percpu() take."""
        z = bytes(self.value_size)
        return [z] * num_possible_cpus() if self.percpu else z

    def delete(self, key: bytes) -> bool:
        """False when the key was not there."""
        rc = lib().bpf_map_delete_elem(self.fd, self._key(key))
        if rc < 0:
            if -rc == errno.ENOENT:
                return False
            raise self._fail("delete", rc)
        return True

    # ------------------------------------------------------------- iteration

    def keys(self) -> list[bytes]:
        if self.is_array:
            return [i.to_bytes(4, "little") for i in range(self.max_entries)]
        out: list[bytes] = []
        prev = None
        nxt = ctypes.create_string_buffer(self.key_size)
        while True:
            rc = lib().bpf_map_get_next_key(self.fd, prev, nxt)
            if rc < 0:
                if -rc == errno.ENOENT:
                    return out
                raise self._fail("iterate", rc)
            out.append(nxt.raw)
            prev = ctypes.create_string_buffer(nxt.raw, self.key_size)

    def _batches(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, raw value) pairs via BPF_MAP_LOOKUP_BATCH."""
        cursor_size = 4 if self.map_type in _HASH_CURSOR else self.key_size
        vsize = self.value_buf_size
        chunk = min(_BATCH, max(self.max_entries, 1))
        in_batch = None
        out_batch = ctypes.create_string_buffer(cursor_size)
        while True:
            keys = ctypes.create_string_buffer(chunk * self.key_size)
            vals = ctypes.create_string_buffer(chunk * vsize)
            count = c_uint32(chunk)
            rc = lib().bpf_map_lookup_batch(self.fd, in_batch, out_batch, keys, vals, byref(count), None)
            err = last_errno(rc) if rc < 0 else 0
            if err and err not in (errno.ENOENT,):
                if err == errno.ENOSPC and chunk < 1 << 20:
                    chunk *= 2  # a hash bucket holds more entries than the chunk
                    continue
                raise self._fail("batch lookup", rc)
            kr, vr = keys.raw, vals.raw
            for i in range(count.value):
                yield kr[i * self.key_size : (i + 1) * self.key_size], vr[i * vsize : (i + 1) * vsize]
            if err == errno.ENOENT:
                return
            in_batch = ctypes.create_string_buffer(out_batch.raw, cursor_size)

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value); arrays list every index."""
        if self.percpu:
            raise TypeError(f"{self.name} is per-CPU: use items_percpu()")
        return list(self._batches())

    def items_raw(self) -> list[tuple[bytes, bytes]]:
        """items() with values as the kernel returns them (per-CPU maps:
        every CPU's value, each padded to 8 bytes, concatenated). Cheap to
        compare for changes."""
        return list(self._batches())

    def items_percpu(self) -> list[tuple[bytes, list[bytes]]]:
        return [(k, self._split_percpu(v)) for k, v in self._batches()]

    # ----------------------------------------------------------------- batch

    def update_batch(self, keys: Sequence[bytes], values: Sequence[bytes], flags: int = 0) -> int:
        """Write many elements with few syscalls. Not atomic: on failure
        raises KernelError whose `applied` says how many were written
        (they are the first `applied` of `keys`)."""
        if self.percpu:
            raise TypeError(f"{self.name} is per-CPU: use update_batch_percpu()")
        for v in values:
            if len(v) != self.value_size:
                raise ValueError(f"{self.name}: value is {len(v)} bytes, map value is {self.value_size}")
        return self._update_batch(keys, values, flags)

    def update_batch_percpu(self, keys: Sequence[bytes], values: Sequence[Sequence[bytes]], flags: int = 0) -> int:
        """update_batch for per-CPU maps: one list of per-CPU values per key."""
        return self._update_batch(keys, [self._percpu_value(v) for v in values], flags)

    def _update_batch(self, keys: Sequence[bytes], values: Sequence[bytes], flags: int) -> int:
        if len(keys) != len(values):
            raise ValueError("keys and values differ in length")
        opts = _BatchOpts(sizeof(_BatchOpts), flags, 0)
        done = 0
        for start in range(0, len(keys), _BATCH):
            ks, vs = keys[start : start + _BATCH], values[start : start + _BATCH]
            for k in ks:
                if len(k) != self.key_size:
                    raise ValueError(f"{self.name}: key is {len(k)} bytes, map key is {self.key_size}")
            kb, vb = b"".join(ks), b"".join(vs)
            count = c_uint32(len(ks))
            rc = lib().bpf_map_update_batch(
                self.fd,
                ctypes.create_string_buffer(kb, len(kb)),
                ctypes.create_string_buffer(vb, len(vb)),
                byref(count),
                ctypes.addressof(opts),
            )
            if rc < 0:
                raise self._fail("batch update", rc, applied=done + count.value)
            done += count.value
        return done

    def delete_batch(self, keys: Sequence[bytes]) -> int:
        """Delete many keys; every key must exist (ENOENT stops the batch,
        like update_batch, with `applied` on the KernelError)."""
        done = 0
        for start in range(0, len(keys), _BATCH):
            ks = keys[start : start + _BATCH]
            for k in ks:
                if len(k) != self.key_size:
                    raise ValueError(f"{self.name}: key is {len(k)} bytes, map key is {self.key_size}")
            kb = b"".join(ks)
            count = c_uint32(len(ks))
            rc = lib().bpf_map_delete_batch(self.fd, ctypes.create_string_buffer(kb, len(kb)), byref(count), None)
            if rc < 0:
                raise self._fail("batch delete", rc, applied=done + count.value)
            done += count.value
        return done

    def clear(self) -> None:
        """Remove every element (hash maps) or zero every element (arrays)."""
        if self.is_array:
            if self.percpu:
                keys = self.keys()
                self.update_batch_percpu(keys, [self.zero_value()] * len(keys))  # type: ignore[list-item]
            else:
                keys = self.keys()
                self.update_batch(keys, [bytes(self.value_size)] * len(keys))
            return
        keys = [k for k, _ in self._batches()]
        if keys:
            self.delete_batch(keys)


class _BatchOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


def open_pinned(path: str | os.PathLike) -> BpfMap:
    """Open the map pinned at `path`; its name is the file name."""
    fd = lib().bpf_obj_get(os.fsencode(path))
    if fd < 0:
        raise kernel_error("open pin", last_errno(fd), what=str(path))
    try:
        return BpfMap(fd, os.path.basename(os.fspath(path)))
    except Exception:
        os.close(fd)
        raise


def open_fd(fd: int, name: str | None = None) -> BpfMap:
    return BpfMap(fd, name)
