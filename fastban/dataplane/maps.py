"""BPF maps by file descriptor: the raw operations, with the errno when one fails.

A Map is a map of the compiled program or one opened from its pin; Maps is a set of them by
name, with lookups, updates, deletes and key walks through libbcc's bpf() wrappers, whole
hash maps read BPF_MAP_LOOKUP_BATCH at a time, and many new elements written
BPF_MAP_UPDATE_BATCH at a time.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno
import os
from pathlib import Path

from fastban.dataplane.errors import DataPlaneError

BPF_NOEXIST = 1         # bpf_update_elem flag: create only


def import_bcc():
    try:
        import bcc
    except ImportError:
        raise DataPlaneError("BCC is not importable: install Debian's python3-bpfcc "
                             "(run `make host`), not the PyPI package 'bcc'") from None
    return bcc


def lib():
    """libbcc's bpf() wrappers (ctypes)."""
    return import_bcc().libbcc.lib


class Map:
    """One map: its fd, and what the kernel says of it (fdinfo)."""

    def __init__(self, name: str, fd: int, owned: bool = False):
        self.name = name
        self.map_fd = fd
        self.owned = owned          # opened by bpf_obj_get: close it ourselves
        fields = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
        self.max_entries = int(fields.get("max_entries", 0))
        self.key_size = int(fields.get("key_size", 0))
        self.value_size = int(fields.get("value_size", 0))

    def close(self) -> None:
        if self.owned and self.map_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.map_fd)
            self.map_fd = -1


class Maps:
    """Maps by name; every operation on one returns what the kernel said."""

    def __init__(self, tables: dict[str, Map]):
        self._tables = tables

    def close_maps(self) -> None:
        for table in self._tables.values():
            table.close()

    def _update(self, name: str, key, value, flags: int = 0) -> int:
        """0, or the errno of the failed update."""
        fd = self._tables[name].map_fd
        if lib().bpf_update_elem(fd, ct.byref(key), ct.byref(value), flags) < 0:
            return ct.get_errno()
        return 0

    def _update_batch(self, name: str, keys: bytes, values: bytes, count: int) -> tuple[int, int]:
        """Writes ``count`` packed keys and values in one BPF_MAP_UPDATE_BATCH (each element
        created or replaced); returns (elements written, 0 or the errno that stopped it)."""
        fd = self._tables[name].map_fd
        written = ct.c_uint32(count)
        key_buffer = ct.create_string_buffer(keys, len(keys))
        value_buffer = ct.create_string_buffer(values, len(values))
        if lib().bpf_update_batch(fd, key_buffer, value_buffer, ct.byref(written)) < 0:
            return written.value, ct.get_errno()
        return written.value, 0

    def _lookup(self, name: str, key, value) -> bool:
        fd = self._tables[name].map_fd
        return lib().bpf_lookup_elem(fd, ct.byref(key), ct.byref(value)) == 0

    def _delete(self, name: str, key) -> bool:
        return lib().bpf_delete_elem(self._tables[name].map_fd, ct.byref(key)) == 0

    def _keys(self, name: str, key_type) -> list:
        """All keys of a map (works for hash maps and LPM tries)."""
        fd, libbcc = self._tables[name].map_fd, lib()
        keys = []
        following = key_type()
        if libbcc.bpf_get_first_key(fd, ct.byref(following), ct.sizeof(key_type)) != 0:
            return keys
        while True:
            keys.append(following)
            current, following = following, key_type()
            if libbcc.bpf_get_next_key(fd, ct.byref(current), ct.byref(following)) != 0:
                return keys

    def _empty(self, name: str, key_type) -> bool:
        key = key_type()
        return lib().bpf_get_first_key(self._tables[name].map_fd, ct.byref(key),
                                       ct.sizeof(key)) != 0

    def _hash_items(self, name: str, key_type, value_type, chunk: int = 65536):
        """(key, value) of every element of a hash map, read BPF_MAP_LOOKUP_BATCH at a time
        (one syscall per chunk instead of two per element)."""
        fd = self._tables[name].map_fd
        keys, values = (key_type * chunk)(), (value_type * chunk)()
        key_size, value_size = ct.sizeof(key_type), ct.sizeof(value_type)
        token, count = ct.c_uint32(0), ct.c_uint32(0)
        first = True
        while True:
            count.value = chunk
            failed = lib().bpf_lookup_batch(fd, None if first else ct.byref(token),
                                            ct.byref(token), ct.byref(keys), ct.byref(values),
                                            ct.byref(count)) != 0
            err = ct.get_errno()
            raw_keys, raw_values = bytes(keys), bytes(values)
            for i in range(count.value):
                yield (key_type.from_buffer_copy(raw_keys, i * key_size),
                       value_type.from_buffer_copy(raw_values, i * value_size))
            if failed:
                if err == errno.ENOENT:
                    return
                raise DataPlaneError(f"cannot read {name}: {os.strerror(err)}")
            first = False
