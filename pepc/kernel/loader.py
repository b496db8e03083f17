"""Loading the object, pinning it, and opening a pinned instance.

A loaded or opened instance is plain file descriptors: the libbpf object is
closed right after load (the kernel keeps program and maps alive while an fd
or a pin refers to them), so nothing here holds libbpf state.

Pin directory layout (one directory per instance, default
/sys/fs/bpf/pepc/<instance>/):
    prog            the XDP program
    <map name>      every map of the object under its kernel name
                    (pepc_ctrl, pepc_gen, pepc_masks_0, pepc_masks_1, ...)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from pepc.kernel.errors import KernelError, kernel_error
from pepc.kernel.libbpf import BpfProgInfo, LogCapture, last_errno, lib
from pepc.kernel.maps import BpfMap, open_pinned

PROG_PIN = "prog"
#: bpffs refuses any name containing "." (EPERM, even for lookups), so
#: temporary pins use a suffix instead of the usual dot-file convention.
TMP_SUFFIX = "__new"
BPFFS = Path("/sys/fs/bpf")


@dataclass
class Instance:
    """A program and its maps, by name. Owns its fds: call close()."""

    prog_fd: int
    maps: dict[str, BpfMap]
    pin_dir: Path | None = None
    prog_id: int = 0
    prog_name: str = ""
    prog_tag: str = ""
    extra: dict = field(default_factory=dict)

    def map(self, name: str) -> BpfMap:
        try:
            return self.maps[name]
        except KeyError:
            raise KernelError(
                f"map {name} is missing from the instance" + (f" at {self.pin_dir}" if self.pin_dir else ""),
                "the pinned instance is incomplete or from another pepc version: run `pepc apply` to reload it",
            ) from None

    def close(self) -> None:
        for m in self.maps.values():
            m.close()
        if self.prog_fd >= 0:
            os.close(self.prog_fd)
            self.prog_fd = -1

    def __enter__(self) -> "Instance":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: What load_object returns: an Instance that is not pinned (yet).
LoadedObject = Instance


def prog_info(prog_fd: int) -> BpfProgInfo:
    info = BpfProgInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    rc = lib().bpf_obj_get_info_by_fd(prog_fd, ctypes.byref(info), ctypes.byref(size))
    if rc < 0:
        raise kernel_error("program info", last_errno(rc))
    return info


def _fill_prog(inst: Instance) -> Instance:
    info = prog_info(inst.prog_fd)
    inst.prog_id = info.id
    inst.prog_name = info.name.decode()
    inst.prog_tag = info.tag.hex()
    return inst


def _log_tail(text: str, lines: int = 40) -> str:
    rows = [r for r in text.splitlines() if r.strip()]
    return "\n".join(rows[-lines:])


def load_object(obj_path: str | os.PathLike, reuse: Mapping[str, BpfMap | int] | None = None) -> Instance:
    """Load a BPF object file: its one program and all its maps.

    `reuse` maps kernel map names to open maps (or fds) the new program
    should use instead of creating fresh ones (bpf_map__reuse_fd): this is
    how a reload keeps per-rule counters, token buckets and the ring buffer
    when their layout did not change. libbpf refuses a reused map whose
    type, key/value size or max_entries differ (EINVAL): copy such maps
    instead.
    """
    L = lib()
    path = os.fspath(obj_path)
    if not os.path.isfile(path):
        raise KernelError(f"BPF object {path} does not exist", "run `pepc compile` to build it")
    with LogCapture() as log:
        obj = L.bpf_object__open_file(os.fsencode(path), None)
        if not obj:
            err = last_errno()
            raise KernelError(
                f"cannot open BPF object {path}: {os.strerror(err)}",
                _log_tail(log.text) or "rebuild it with `pepc compile`",
                err,
            )
        try:
            m = L.bpf_object__next_map(obj, None)
            wanted = dict(reuse or {})
            while m:
                name = L.bpf_map__name(m).decode()
                if name in wanted:
                    src = wanted.pop(name)
                    fd = src.fd if isinstance(src, BpfMap) else int(src)
                    rc = L.bpf_map__reuse_fd(m, fd)
                    if rc < 0:
                        raise kernel_error("reuse map", last_errno(rc), what=name)
                m = L.bpf_object__next_map(obj, m)
            if wanted:
                raise KernelError(f"cannot reuse maps the object does not define: {', '.join(sorted(wanted))}")

            rc = L.bpf_object__load(obj)
            if rc < 0:
                err = last_errno(rc)
                # EACCES here is the verifier saying no; only EPERM is privilege
                if err == errno.EPERM:
                    raise kernel_error("load BPF program", err)
                tail = _log_tail(log.text)
                raise KernelError(
                    f"the kernel refused to load {path}: {os.strerror(err)}"
                    + (f"\n--- verifier / libbpf log (tail) ---\n{tail}" if tail else ""),
                    "this kernel may be too old for pepc (needs >= 5.19: bpf_loop, ring buffers, BTF spin locks)",
                    err,
                )
            return _collect(obj)
        finally:
            L.bpf_object__close(obj)


def _collect(obj: int) -> Instance:
    """Dup every fd out of a loaded libbpf object (which is then closed)."""
    L = lib()
    maps: dict[str, BpfMap] = {}
    prog_fd = -1
    try:
        p = L.bpf_object__next_program(obj, None)
        while p:
            if prog_fd >= 0:
                raise KernelError("the BPF object holds more than one program")
            prog_fd = os.dup(L.bpf_program__fd(p))
            p = L.bpf_object__next_program(obj, p)
        if prog_fd < 0:
            raise KernelError("the BPF object holds no program")
        m = L.bpf_object__next_map(obj, None)
        while m:
            name = L.bpf_map__name(m).decode()
            fd = L.bpf_map__fd(m)
            if fd >= 0 and not name.startswith("."):  # skip .rodata/.bss if any
                maps[name] = BpfMap(os.dup(fd), name)
            m = L.bpf_object__next_map(obj, m)
        return _fill_prog(Instance(prog_fd, maps))
    except Exception:
        for bm in maps.values():
            bm.close()
        if prog_fd >= 0:
            os.close(prog_fd)
        raise


# ------------------------------------------------------------------ bpffs


def _is_bpffs(path: Path) -> bool:
    try:
        with open("/proc/self/mounts") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return False
    return any(m[1] == str(path) and m[2] == "bpf" for m in mounts if len(m) > 2)


def ensure_bpffs(root: Path = BPFFS) -> None:
    """Mount bpffs at /sys/fs/bpf unless it is mounted already."""
    if _is_bpffs(root):
        return
    root.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "bpf", "bpf", str(root)], capture_output=True, text=True)
    if r.returncode != 0:
        raise KernelError(
            f"bpffs is not mounted at {root} and mounting it failed: {r.stderr.strip()}",
            "mount it: mount -t bpf bpf /sys/fs/bpf (needs root)",
        )


def _pin_fd(fd: int, path: Path) -> None:
    rc = lib().bpf_obj_pin(fd, os.fsencode(path))
    if rc < 0:
        raise kernel_error("pin", last_errno(rc), what=str(path))


def pin(inst: Instance, pin_dir: str | os.PathLike, replace: bool = False) -> None:
    """Pin program and maps under `pin_dir` (created, bpffs mounted if
    needed). With `replace`, existing pins are swapped by rename, each one
    atomically, so readers always find a complete object under each name."""
    d = Path(pin_dir)
    if str(d).startswith(str(BPFFS) + "/") or d == BPFFS:
        ensure_bpffs(BPFFS)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise kernel_error("create pin directory", e.errno or errno.EIO, what=str(d)) from None
    items: list[tuple[str, int]] = [(PROG_PIN, inst.prog_fd)] + [(n, m.fd) for n, m in sorted(inst.maps.items())]
    for name, fd in items:
        target = d / name
        if replace:
            tmp = d / f"{name}{TMP_SUFFIX}"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            _pin_fd(fd, tmp)
            os.replace(tmp, target)
        else:
            _pin_fd(fd, target)
    inst.pin_dir = d


def open_instance(pin_dir: str | os.PathLike) -> Instance | None:
    """Open a pinned instance; None when nothing is pinned there."""
    d = Path(pin_dir)
    if not (d / PROG_PIN).exists():
        return None
    L = lib()
    fd = L.bpf_obj_get(os.fsencode(d / PROG_PIN))
    if fd < 0:
        err = last_errno(fd)
        if err == errno.ENOENT:
            return None
        raise kernel_error("open pin", err, what=str(d / PROG_PIN))
    maps: dict[str, BpfMap] = {}
    try:
        for entry in sorted(os.listdir(d)):
            if entry == PROG_PIN or entry.endswith(TMP_SUFFIX):
                continue
            maps[entry] = open_pinned(d / entry)
        return _fill_prog(Instance(fd, maps, d))
    except Exception:
        for m in maps.values():
            m.close()
        os.close(fd)
        raise


def unpin(pin_dir: str | os.PathLike) -> None:
    """Remove every pin of an instance and its directory. The program and
    maps live on while attached or open elsewhere."""
    d = Path(pin_dir)
    if not d.exists():
        return
    for entry in os.listdir(d):
        try:
            (d / entry).unlink()
        except FileNotFoundError:
            pass
    try:
        d.rmdir()
    except FileNotFoundError:
        pass
