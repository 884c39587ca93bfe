"""The kernel side of fastban: XDP drop of banned sources and TC capture of SIP messages.

This package is the one part of fastban that talks to the kernel (through BCC):

- ``program``: compiling bpf/xdp_drop.c and bpf/tc_capture.c as one BCC program, attaching
  them, and their pins under {pin_root}/{iface}/ (bans outlive the process);
- ``maps`` and ``tables``: the maps, raw and typed (bans, whitelist, ports, config, counters,
  the capture's tables);
- ``capture`` and ``ring``: the capture's ring buffer, read in place, and the decoding of
  each captured packet;
- the layouts and constants of all of it come from bpf/abi.h (fastban.abi).

    dp = DataPlane("eth0")            # in the interface's network namespace
    dp.attach()                       # -> "native" or "generic"
    dp.ban(ipaddress.ip_address("203.0.113.9"), expires_ns=time.monotonic_ns() + 600 * 10**9)
    dp.on_capture(print)              # CapturedPacket
    while True:
        dp.poll(100)

The programs stay attached and the bans stay pinned when the process exits; a new DataPlane on
the same interface reuses the pinned maps; DataPlane.open_pinned opens them without compiling.
detach() removes the programs and the pins.

Memory. The exact-ban maps are hash maps with BPF_F_NO_PREALLOC and the range and whitelist
maps are LPM tries, so the elements are allocated as bans arrive, never up front. What is
reserved up front is only each hash map's bucket array: 16 bytes x capacity rounded up to a
power of two (16 MiB for each of the two exact maps at the default 1,048,576). Per ban,
measured on kernel 6.18 x86_64 with 100,000 bans per map (the map's own accounting, "memlock"
in /proc/<pid>/fdinfo/<map fd>; the allocator rounds up to its 96/64-byte size classes): exact
IPv4 80 B, exact IPv6 88 B, IPv4 range 44 B, IPv6 range 56 B; an LPM trie also adds
intermediate nodes, so /proc/meminfo's Slab grew by ~150-200 B per range ban. The capture's
tables of challenged peers and open Call-IDs are LRU hash maps, preallocated: 6 MiB and 12 MiB.
"""

from __future__ import annotations

import ctypes as ct
import os
import socket
from typing import Callable

from fastban import headerscan
from fastban.abi import ABI
from fastban.dataplane import program
from fastban.dataplane.capture import (CAPTURE_META, Capture, CapturedPacket, FbCaptureMeta,
                                       decode_capture, idle)
from fastban.dataplane.errors import BanTableFull, DataPlaneError
from fastban.dataplane.maps import Map, import_bcc, lib
from fastban.dataplane.program import DEFAULT_PIN_ROOT, remove_pins
from fastban.dataplane.tables import (Ban, FbAddr6, FbBanValue, FbCallKey, FbLpm4, FbLpm6,
                                      FbPeer, FbPeerState, KernelTables)

__all__ = ["Ban", "BanTableFull", "CAPTURE_META", "CapturedPacket", "DataPlane",
           "DataPlaneError", "DEFAULT_CAPACITY", "DEFAULT_PIN_ROOT", "FbAddr6", "FbBanValue",
           "FbCallKey", "FbCaptureMeta", "FbLpm4", "FbLpm6", "FbPeer", "FbPeerState",
           "FbScanTable", "MEMORY_PER_BAN", "decode_capture", "remove_pins"]

# Kernel memory per ban in bytes (map accounting), kernel 6.18 x86_64, 100k bans: see above.
MEMORY_PER_BAN = {"exact_v4": 80, "exact_v6": 88, "range_v4": 44, "range_v6": 56}
DEFAULT_CAPACITY = ABI["FB_CAPACITY_DEFAULT"]
FbScanTable = ABI.struct("fb_scan_table")
# What each TC hook reads, by the capture setting: where the SIP server's responses pass,
# and the requests on the other side.
_RESPONSES, _REQUESTS = ABI["FB_ROLE_RESPONSES"], ABI["FB_ROLE_REQUESTS"]
HOOK_ROLES = {
    "egress": {"egress": _RESPONSES, "ingress": _REQUESTS},
    "ingress": {"egress": _REQUESTS, "ingress": _RESPONSES},
    "both": {"egress": _RESPONSES | _REQUESTS, "ingress": _RESPONSES | _REQUESTS},
}
_ROLE_CONFIG = {"egress": ABI["FB_CFG_ROLES_EGRESS"], "ingress": ABI["FB_CFG_ROLES_INGRESS"]}


class DataPlane(KernelTables):
    """The XDP drop program, the TC capture programs and their pinned maps on one interface.

    Create, attach and detach in the network namespace of the interface (the thread's network
    namespace is what counts). Map operations (ban, counters, ...) work from anywhere.
    """

    def __init__(self, iface: str, *, capacity: int = DEFAULT_CAPACITY, sip_ports=(5060,),
                 capture: str = "egress", count_register_404: bool = False,
                 challenge_grace: float = 32.0, pin_root: str = DEFAULT_PIN_ROOT,
                 rate_entries: int | None = None):
        if capture not in ("egress", "ingress", "both", "none"):
            raise DataPlaneError(f"capture must be egress, ingress, both or none, not {capture!r}")
        if capacity < 1:
            raise DataPlaneError(f"capacity must be at least 1, not {capacity}")
        if rate_entries is not None and rate_entries < 1:
            raise DataPlaneError(f"rate_entries must be at least 1, not {rate_entries}")
        program.check_privileges()
        try:
            ifindex = socket.if_nametoindex(iface)
        except OSError:
            raise DataPlaneError(f"no network interface named {iface!r} "
                                 f"(see `ip link`)") from None
        program.check_headers()
        bcc = import_bcc()
        rate_entries = rate_entries or ABI["FB_RATE_ENTRIES_DEFAULT"]
        pin_dir, self.replaced_pins = program.prepare_pin_dir(pin_root, iface,
                                                              {"rate_limit": rate_entries})
        bpf = program.compile_programs(pin_dir, capacity, rate_entries)
        tables = {name: Map(name, bpf[spec.name.encode()].map_fd)
                  for name, spec in ABI.maps.items()}
        self._start(iface, pin_dir, tables, bpf, ifindex)
        self._xdp_fn = program.load(bpf, "xdp_fastban", bcc.BPF.XDP)
        if capture != "none":
            self._write_scan_table()
            for hook in ("egress", "ingress"):
                self._tc_fns[hook] = program.load(bpf, f"tc_capture_{hook}",
                                                  bcc.BPF.SCHED_CLS)
            self._capture = Capture(bpf, lambda: self.kernel_counters()["capture_failed"])
        self.capture = capture
        self.set_sip_ports(sip_ports)
        self.set_count_register_404(count_register_404)
        self.set_challenge_grace(challenge_grace)
        for hook, roles in HOOK_ROLES.get(capture, {}).items():
            self._set_config(_ROLE_CONFIG[hook], roles)
        self._sync_trie_flags()

    def _start(self, iface: str, pin_dir: str, tables: dict, bpf, ifindex) -> None:
        """What a DataPlane holds, compiled or opened from the pins."""
        KernelTables.__init__(self, tables)
        self.iface, self.ifindex, self.pin_dir, self.bpf = iface, ifindex, pin_dir, bpf
        # Maps reused from the pins keep the capacity they were created with.
        self.capacity = tables["bans_v4"].max_entries
        self.capture = "none"
        self._tc_fns: dict = {}
        self._xdp_fn = None
        self._capture: Capture | None = None
        self._closed = False
        self.mode: str | None = None

    @classmethod
    def open_pinned(cls, iface: str, *, pin_root: str = DEFAULT_PIN_ROOT) -> DataPlane:
        """Opens the maps pinned for iface without compiling anything (for listing bans,
        banning, counters when no controller runs), and writes nothing. attach() and capture
        are not available; detach() works (in the interface's network namespace)."""
        if not program.has_bpf_capability():
            raise DataPlaneError("fastban needs root (or CAP_BPF) to open its pinned maps: "
                                 "run it with sudo")
        pin_dir = f"{pin_root}/{iface}"
        self = cls.__new__(cls)
        self.replaced_pins = []
        self._start(iface, pin_dir, program.open_pinned_maps(pin_dir, iface), None, None)
        return self

    def _write_scan_table(self) -> None:
        """The header scan's automaton (fastban/headerscan.py), before any packet is seen."""
        table = FbScanTable()
        table.step[:] = headerscan.STEPS
        table.call_id_byte[:] = headerscan.CALL_ID_BYTES
        fd = self.bpf[b"scan_table"].map_fd
        if lib().bpf_update_elem(fd, ct.byref(ct.c_uint32(0)), ct.byref(table), 0) < 0:
            raise DataPlaneError("cannot write the capture's scan table: "
                                 f"{os.strerror(ct.get_errno())}")

    # ---- attaching ----

    def attach(self, mode: str = "auto") -> str:
        """Attaches XDP (native driver, generic skb, or auto = native else generic) and the
        TC capture; returns the XDP mode used. Replaces fastban programs already attached."""
        self._check_open()
        if self.bpf is None:
            raise DataPlaneError("this DataPlane was opened from the pins; make a DataPlane "
                                 f"({self.iface!r}) to attach programs")
        self.mode = program.attach_xdp(self.iface, self._xdp_fn, mode)
        for hook, fn in self._tc_fns.items():
            program.attach_tc(self.iface, self.pin_dir, hook, fn)
        return self.mode

    def detach(self) -> None:
        """Removes the XDP and TC programs from the interface and the pinned maps."""
        program.detach(self.iface, self.pin_dir)
        self.mode = None

    def close(self) -> None:
        """Releases this process's handles; the programs stay attached and the bans stay."""
        if self._closed:
            return
        self._closed = True
        self.close_maps()
        if self._capture is not None:
            self._capture.close()
        if self.bpf is not None:
            try:
                self.bpf.cleanup()
            except Exception:            # BCC raises bare Exception; nothing is left to do
                pass

    @property
    def xdp_prog_fd(self) -> int | None:
        """The loaded XDP program's fd (for BPF_PROG_TEST_RUN in the benchmarks)."""
        return self._xdp_fn.fd if self._xdp_fn is not None else None

    @property
    def capture_pages(self) -> int:
        return self._capture.pages if self._capture else 0

    def __enter__(self) -> DataPlane:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise DataPlaneError("this DataPlane is closed")

    # ---- counters and capture ----

    def counters(self) -> dict:
        """The programs' counters summed over CPUs since the pinned maps were created (see
        FB_CNT_* in bpf/abi.h; seen = passed + dropped), and capture_lost: the copies the
        capture's ring could not take (capture_failed) when this DataPlane reads the capture,
        else 0."""
        self._check_open()
        result = self.kernel_counters()
        result["capture_lost"] = result["capture_failed"] if self._capture else 0
        return result

    def on_capture(self, callback: Callable[[CapturedPacket], None]) -> None:
        """Registers a callback for captured packets; poll() delivers them."""
        if self._capture is None:
            raise DataPlaneError("this DataPlane was made with capture='none'")
        self._capture.on_capture(callback)

    def on_capture_batch(self, callback: Callable[[list[CapturedPacket]], None]) -> None:
        """Registers a callback for each poll's captured packets as one list, in the order
        the kernel copied them."""
        if self._capture is None:
            raise DataPlaneError("this DataPlane was made with capture='none'")
        self._capture.on_batch(callback)

    def poll(self, timeout_ms: int = 100) -> None:
        """Waits up to timeout_ms for captured packets and hands them to the callbacks."""
        self._check_open()
        if self._capture is None:
            idle(timeout_ms)
            return
        self._capture.poll(timeout_ms)
