"""BPF_PROG_TEST_RUN: run the program on a byte string, in the kernel."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from pepc.kernel.errors import kernel_error
from pepc.kernel.libbpf import BpfTestRunOpts, last_errno, lib

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = 0, 1, 2, 3, 4
#: XDP test runs need at least an Ethernet header (bpf_test_init).
MIN_FRAME = 14


@dataclass(frozen=True)
class TestRun:
    __test__ = False  # not a pytest class

    retval: int  # the XDP action of the last run
    duration_ns: int  # average per repetition, as measured by the kernel
    data_out: bytes  # the frame after the last run


def test_run(prog_fd: int, frame: bytes, repeat: int = 1) -> TestRun:
    """Run the program `repeat` times on `frame` (>= 14 bytes)."""
    if len(frame) < MIN_FRAME:
        raise ValueError(f"XDP test runs need a frame of at least {MIN_FRAME} bytes, got {len(frame)}")
    data_in = ctypes.create_string_buffer(bytes(frame), len(frame))
    out_size = len(frame) + 256  # room for a program that grows the tail
    data_out = ctypes.create_string_buffer(out_size)
    opts = BpfTestRunOpts()
    opts.sz = ctypes.sizeof(opts)
    opts.data_in = ctypes.addressof(data_in)
    opts.data_size_in = len(frame)
    opts.data_out = ctypes.addressof(data_out)
    opts.data_size_out = out_size
    opts.repeat = max(1, int(repeat))
    rc = lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts))
    if rc < 0:
        raise kernel_error("test run", last_errno(rc))
    return TestRun(opts.retval, opts.duration, data_out.raw[: opts.data_size_out])


test_run.__test__ = False  # type: ignore[attr-defined]
