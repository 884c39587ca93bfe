"""The few bpf(2) commands the benchmarks need, through ctypes: no libbpf binding required.

    fd = obj_get("/sys/fs/bpf/fastban/eth0/bans_v4")      # a pinned map
    update_batch(fd, keys_bytes, values_bytes, count)      # many entries in one syscall
    retval, ns = prog_test_run(prog_fd, frame, repeat=1_000_000)   # BPF_PROG_TEST_RUN

prog_test_run returns the kernel's own figure: the average duration of one run, in ns, measured
in the kernel around the program call (bpf_test_run), so no syscall or Python time is in it.
"""

from __future__ import annotations

import ctypes
import os
import platform

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

BPF_OBJ_GET = 7
BPF_PROG_TEST_RUN = 10
BPF_MAP_UPDATE_BATCH = 26
BPF_MAP_DELETE_BATCH = 27


class _TestAttr(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


class _BatchAttr(ctypes.Structure):
    _fields_ = [("in_batch", ctypes.c_uint64), ("out_batch", ctypes.c_uint64),
                ("keys", ctypes.c_uint64), ("values", ctypes.c_uint64),
                ("count", ctypes.c_uint32), ("map_fd", ctypes.c_uint32),
                ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _ObjAttr(ctypes.Structure):
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32),
                ("file_flags", ctypes.c_uint32), ("path_fd", ctypes.c_int32),
                ("_pad", ctypes.c_uint32)]


class BpfError(OSError):
    pass


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    if _SYS_BPF is None:
        raise BpfError(f"bpf(2) syscall number unknown for {platform.machine()}")
    result = _libc.syscall(_SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if result < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"bpf cmd {cmd}: {os.strerror(err)}")
    return result


def obj_get(path: str) -> int:
    """A new fd for the pinned object at path (caller closes it)."""
    name = ctypes.create_string_buffer(path.encode())
    attr = _ObjAttr(pathname=ctypes.addressof(name))
    return _bpf(BPF_OBJ_GET, attr)


def prog_test_run(prog_fd: int, data: bytes, repeat: int = 1_000_000) -> tuple[int, int]:
    """Runs the program `repeat` times on `data`; returns (verdict, average ns per run)."""
    buf_in = ctypes.create_string_buffer(data, len(data))
    buf_out = ctypes.create_string_buffer(len(data) + 512)
    attr = _TestAttr(prog_fd=prog_fd, data_size_in=len(data), data_size_out=len(buf_out),
                     data_in=ctypes.addressof(buf_in), data_out=ctypes.addressof(buf_out),
                     repeat=repeat)
    _bpf(BPF_PROG_TEST_RUN, attr)
    return attr.retval, attr.duration


def update_batch(map_fd: int, keys: bytes, values: bytes, count: int) -> int:
    """Inserts or replaces `count` entries (keys and values packed back to back)."""
    kbuf = ctypes.create_string_buffer(keys, len(keys))
    vbuf = ctypes.create_string_buffer(values, len(values))
    attr = _BatchAttr(keys=ctypes.addressof(kbuf), values=ctypes.addressof(vbuf),
                      count=count, map_fd=map_fd)
    _bpf(BPF_MAP_UPDATE_BATCH, attr)
    return attr.count


def delete_batch(map_fd: int, keys: bytes, count: int) -> int:
    kbuf = ctypes.create_string_buffer(keys, len(keys))
    attr = _BatchAttr(keys=ctypes.addressof(kbuf), count=count, map_fd=map_fd)
    _bpf(BPF_MAP_DELETE_BATCH, attr)
    return attr.count


def fill_map(map_fd: int, keys: bytes, key_size: int, value: bytes, chunk: int = 65536) -> None:
    """Inserts every key of the packed `keys` with the same value, in batches."""
    total = len(keys) // key_size
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        update_batch(map_fd, keys[start * key_size:(start + n) * key_size], value * n, n)


def empty_map(map_fd: int, keys: bytes, key_size: int, chunk: int = 65536) -> None:
    total = len(keys) // key_size
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        delete_batch(map_fd, keys[start * key_size:(start + n) * key_size], n)
