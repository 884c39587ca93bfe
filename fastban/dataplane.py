"""The kernel side of fastban: XDP drop of banned sources and TC capture of SIP responses.

This is the one module that talks to the kernel (through BCC). It compiles bpf/fastban.h,
bpf/xdp_drop.c and bpf/tc_capture.c as one BCC program, pins the maps under
{pin_root}/{iface}/ so bans outlive the process, and attaches:

- XDP on the interface's ingress: drops frames whose source is banned (exact address or range,
  IPv4 or IPv6, 802.1Q/QinQ parsed), unless the source is allowlisted; a ban lapses at its
  expiry (kernel monotonic ns) by itself; per-CPU counters and a per-ban hit count;
- TC (clsact) egress and ingress: copies the SIP messages the failure rules need (401/403/407,
  404 optionally, final answers on Call-IDs with a challenge open, requests with credentials
  from challenged peers; see bpf/tc_capture.c) with their bytes, through a perf buffer.

    dp = DataPlane("eth0")            # in the interface's network namespace
    dp.attach()                       # -> "native" or "generic"
    dp.ban(ipaddress.ip_address("203.0.113.9"), expires_ns=wall_to_monotonic(time.time() + 600))
    dp.on_capture(print)              # CapturedPacket
    while True:
        dp.poll(100)

The programs stay attached and the bans stay pinned when the process exits; a new DataPlane on
the same interface reuses the pinned maps. detach() removes the programs and the pins.

Memory. The exact-ban maps are hash maps with BPF_F_NO_PREALLOC and the range and allow maps
are LPM tries, so the elements are allocated as bans arrive, never up front. What is reserved
up front is only each hash map's bucket array: 16 bytes x capacity rounded up to a power of two
(16 MiB for each of the two exact maps at the default 1,048,576). Per ban, measured on kernel
6.18 x86_64 with 100,000 bans per map (the map's own accounting, "memlock" in
/proc/<pid>/fdinfo/<map fd>; the allocator rounds up to its 96/64-byte size classes):
exact IPv4 80 B, exact IPv6 88 B, IPv4 range 44 B, IPv6 range 56 B; an LPM trie also adds
intermediate nodes, so /proc/meminfo's Slab grew by ~150-200 B per range ban. See
MEMORY_PER_BAN. The capture's tables of challenged peers and open Call-IDs are LRU hash maps,
preallocated: 6 MiB and 12 MiB (memlock in fdinfo).
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno
import ipaddress
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from fastban import headerscan

# Kernel memory per ban in bytes (map accounting), kernel 6.18 x86_64, 100k bans: see above.
MEMORY_PER_BAN = {"exact_v4": 80, "exact_v6": 88, "range_v4": 44, "range_v6": 56}
# Reserved up front per exact-ban map: the hash bucket array, 16 B per slot.
HASH_BUCKET_BYTES = 16

DEFAULT_CAPACITY = 1_048_576
BPF_NOEXIST = 1         # bpf_update_elem flag: create only
DEFAULT_PIN_ROOT = "/sys/fs/bpf/fastban"
TC_PREF = 5060          # tc filter priority used for the capture programs
CAPTURE_PAGES = 1024    # perf buffer pages per CPU (4 MiB): absorbs bursts while the guard is busy

XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2

# Counter indexes and config indexes: mirror bpf/fastban.h.
FB_CNT_PASSED, FB_CNT_DROPPED, FB_CNT_ALLOWLISTED = 1, 2, 3   # 0 is unused: seen = passed + dropped
FB_CNT_CAP_EXAMINED, FB_CNT_CAPTURED, FB_CNT_CAP_FAILED = 4, 5, 6
FB_CNT_CAP_SCANNED, FB_CNT_CAP_REQUESTS, FB_CNT_CAP_UNSURE = 7, 8, 9
FB_CNT_MAX = 12
FB_CFG_SCOPE_PORTS, FB_CFG_COUNT_404, FB_CFG_RANGES_V4, FB_CFG_RANGES_V6 = 0, 1, 2, 3
FB_CFG_ALLOW_V4, FB_CFG_ALLOW_V6 = 4, 5
FB_CFG_GRACE_MS, FB_CFG_ROLES_EGRESS, FB_CFG_ROLES_INGRESS = 6, 7, 8
FB_CFG_MAX = 12
FB_ROLE_RESPONSES, FB_ROLE_REQUESTS = 1, 2
# What each TC hook reads, by the capture setting: where the SIP server's responses pass,
# and the requests on the other side.
HOOK_ROLES = {
    "egress": {"egress": FB_ROLE_RESPONSES, "ingress": FB_ROLE_REQUESTS},
    "ingress": {"egress": FB_ROLE_REQUESTS, "ingress": FB_ROLE_RESPONSES},
    "both": {"egress": FB_ROLE_RESPONSES | FB_ROLE_REQUESTS,
             "ingress": FB_ROLE_RESPONSES | FB_ROLE_REQUESTS},
}
FB_KIND_RESPONSE, FB_KIND_REQUEST, FB_KIND_CONTINUATION = 1, 2, 3
FB_META_FRAGMENT, FB_META_TCP_FIN, FB_META_TCP_RST = 1, 2, 4
FB_WHY = {1: "failure", 2: "open call", 3: "unsure", 4: "credentials", 5: "tcp segment"}
FB_SCAN_MAX, FB_SCAN_STATES = 2048, 128
# The LPM tries XDP skips while their flag is 0: user space keeps each flag set while its trie
# holds entries.
TRIE_FLAGS = {"ranges_v4": FB_CFG_RANGES_V4, "ranges_v6": FB_CFG_RANGES_V6,
              "allow_v4": FB_CFG_ALLOW_V4, "allow_v6": FB_CFG_ALLOW_V6}
FB_DIR_EGRESS, FB_DIR_INGRESS = 0, 1
FB_CAPTURE_MAX = 8192

COUNTER_NAMES = {
    "passed": FB_CNT_PASSED,
    "dropped": FB_CNT_DROPPED,
    "allowlisted": FB_CNT_ALLOWLISTED,
    "capture_examined": FB_CNT_CAP_EXAMINED,
    "captured": FB_CNT_CAPTURED,
    "capture_failed": FB_CNT_CAP_FAILED,
    "capture_scanned": FB_CNT_CAP_SCANNED,
    "capture_requests": FB_CNT_CAP_REQUESTS,
    "capture_unsure": FB_CNT_CAP_UNSURE,
}

PINNED_MAPS = ("counters", "config", "bans_v4", "bans_v6", "ranges_v4", "ranges_v6",
               "allow_v4", "allow_v6", "scope_ports", "sip_ports", "challenged", "open_calls")
# Pinned maps whose contents the guard sets up again at start: a pin left by another version
# of fastban with another layout is replaced (BCC would reuse it as it is). (key size, value
# size, entries), as bpf/fastban.h and bpf/tc_capture.c declare them.
FB_PEER_ENTRIES, FB_CALL_ENTRIES = 65536, 131072
REBUILT_MAPS = {"counters": (4, 8, FB_CNT_MAX), "config": (4, 4, FB_CFG_MAX),
                "challenged": (16, 16, FB_PEER_ENTRIES), "open_calls": (24, 8, FB_CALL_ENTRIES)}
# Pins of earlier versions that no program uses any more.
RETIRED_PINS = ("challenges",)


# ---- structs shared with the kernel: mirror bpf/fastban.h, same names ----

class FbBanValue(ct.Structure):            # struct fb_ban_value
    _fields_ = [("expires_ns", ct.c_uint64), ("hits", ct.c_uint64)]


class FbAddr6(ct.Structure):               # struct fb_addr6
    _fields_ = [("addr", ct.c_uint8 * 16)]


class FbLpm4(ct.Structure):                # struct fb_lpm4
    _fields_ = [("prefixlen", ct.c_uint32), ("addr", ct.c_uint8 * 4)]


class FbLpm6(ct.Structure):                # struct fb_lpm6
    _fields_ = [("prefixlen", ct.c_uint32), ("addr", ct.c_uint8 * 16)]


class FbPeer(ct.Structure):                # struct fb_peer
    _fields_ = [("addr", ct.c_uint8 * 16)]


class FbPeerState(ct.Structure):           # struct fb_peer_state
    _fields_ = [("challenged_ns", ct.c_uint64), ("any_call_ns", ct.c_uint64)]


class FbCallKey(ct.Structure):             # struct fb_call_key
    _fields_ = [("addr", ct.c_uint8 * 16), ("call_hash", ct.c_uint64)]


class FbScanTable(ct.Structure):           # struct fb_scan_table
    _fields_ = [("step", ct.c_uint16 * (FB_SCAN_STATES * 256)),
                ("call_id_byte", ct.c_uint8 * 256)]


class FbCaptureMeta(ct.Structure):         # struct fb_capture_meta
    _fields_ = [
        ("ktime_ns", ct.c_uint64),
        ("saddr", ct.c_uint8 * 16),
        ("daddr", ct.c_uint8 * 16),
        ("sport", ct.c_uint16),
        ("dport", ct.c_uint16),
        ("status", ct.c_uint16),
        ("payload_off", ct.c_uint16),
        ("payload_len", ct.c_uint32),
        ("cap_len", ct.c_uint32),
        ("tcp_seq", ct.c_uint32),
        ("family", ct.c_uint8),
        ("protocol", ct.c_uint8),
        ("direction", ct.c_uint8),
        ("kind", ct.c_uint8),
        ("flags", ct.c_uint8),
        ("reason", ct.c_uint8),
        ("pad", ct.c_uint16),
    ]


# ---- public types ----

class DataPlaneError(Exception):
    """A problem the user can act on; str() is one line that says what to do."""


class BanTableFull(DataPlaneError):
    """A ban map is at capacity; existing bans are never evicted to make room."""


@dataclass
class Ban:
    target: ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network | ipaddress.IPv6Network
    expires_ns: int         # kernel monotonic ns, 0 = permanent
    hits: int               # packets this ban dropped

    def remaining_ns(self, now_ns: int | None = None) -> int | None:
        """Nanoseconds left (0 when lapsed), None for a permanent ban."""
        if self.expires_ns == 0:
            return None
        now = time.monotonic_ns() if now_ns is None else now_ns
        return max(0, self.expires_ns - now)


@dataclass(slots=True)
class CapturedPacket:
    """One packet the capture copied: a SIP message (or a TCP segment) and where it went."""
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    sport: int
    dport: int
    protocol: str           # "udp" | "tcp"
    status: int             # SIP status of a response, else 0
    payload: bytes          # the TCP/UDP payload as copied (it may stop short of payload_len)
    ktime_ns: int           # kernel monotonic ns when the kernel saw it
    direction: str = "egress"
    packet: bytes = b""     # the whole captured frame (up to 8192 bytes), Ethernet header first
    kind: str = "response"  # "response" | "request" | "continuation" (a TCP segment)
    payload_len: int = 0    # payload bytes on the wire (of the whole datagram for a fragment)
    tcp_seq: int = 0
    fragment: bool = False  # an IP first fragment: the rest of the datagram is not here
    tcp_fin: bool = False
    tcp_rst: bool = False
    reason: str = ""        # why the kernel copied it (FB_WHY)


def monotonic_to_wall(ns: int) -> float:
    """Kernel monotonic ns (as in Ban.expires_ns) -> wall-clock seconds since the epoch."""
    return time.time() - (time.monotonic_ns() - ns) / 1e9


def wall_to_monotonic(seconds: float) -> int:
    """Wall-clock seconds since the epoch -> kernel monotonic ns (for ban(expires_ns=...))."""
    return time.monotonic_ns() + int((seconds - time.time()) * 1e9)


# ---- helpers ----

def _bpf_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "bpf", here / "bpf"):
        if (candidate / "fastban.h").exists():
            return candidate
    raise DataPlaneError(f"the BPF sources (bpf/fastban.h) are missing next to {here}")


def program_source() -> str:
    """fastban.h, xdp_drop.c and tc_capture.c as one BCC source text (the header inlined once)."""
    bpf = _bpf_dir()
    header = (bpf / "fastban.h").read_text()
    parts = []
    for i, name in enumerate(("xdp_drop.c", "tc_capture.c")):
        text = (bpf / name).read_text()
        parts.append(text.replace('#include "fastban.h"', header if i == 0 else "", 1))
    return "\n".join(parts)


def _has_bpf_capability() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                caps = int(line.split()[1], 16)
                return bool(caps & (1 << 39)) or bool(caps & (1 << 21))   # CAP_BPF, SYS_ADMIN
    except OSError:
        pass
    return False


def _bpffs_mounts() -> list[str]:
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "bpf":
                mounts.append(fields[1])
    return mounts


def _ensure_bpffs(pin_root: str) -> None:
    root = os.path.abspath(pin_root)
    if any(root == m or root.startswith(m.rstrip("/") + "/") for m in _bpffs_mounts()):
        return
    mountpoint = "/sys/fs/bpf"
    if not root.startswith(mountpoint + "/"):
        raise DataPlaneError(f"{pin_root} is not on a bpf filesystem; mount one there "
                             f"(mount -t bpf bpf <dir>) or use a pin root under /sys/fs/bpf")
    result = subprocess.run(["mount", "-t", "bpf", "bpf", mountpoint], capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise DataPlaneError(f"cannot mount bpffs at {mountpoint} "
                             f"({result.stderr.strip() or 'mount failed'}); "
                             f"bans cannot be pinned: run `make host` as root")


@contextlib.contextmanager
def _captured_stderr():
    """Collects what C code (clang, libbpf, the verifier log) writes to fd 2 in the block."""
    log = tempfile.TemporaryFile()
    saved = os.dup(2)
    holder = {"text": ""}
    try:
        os.dup2(log.fileno(), 2)
        yield holder
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        log.seek(0)
        holder["text"] = log.read().decode(errors="replace")
        log.close()


def _bcc_call(call, describe):
    """Runs a BCC call that reports trouble on fd 2 (clang, the verifier's log) and raises a
    bare Exception; a failure becomes a DataPlaneError of describe(failure, log tail)."""
    with _captured_stderr() as err:
        try:
            return call()
        except Exception as e:      # BCC raises bare Exception
            failure = e
    raise DataPlaneError(describe(failure, _tail(err["text"]))) from None


def _tail(text: str, lines: int = 6) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def _addr_bytes(address) -> bytes:
    return address.packed


def _to_target(target):
    """ipaddress object (or string) -> (family, exact address or None, network)."""
    if isinstance(target, str):
        target = ipaddress.ip_network(target, strict=False) if "/" in target \
            else ipaddress.ip_address(target)
    if isinstance(target, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return target.version, target, ipaddress.ip_network(target)
    if isinstance(target, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        if target.prefixlen == target.max_prefixlen:
            return target.version, target.network_address, target
        return target.version, None, target
    raise TypeError(f"expected an ipaddress address or network, got {target!r}")


def _lpm_key(network):
    """The LPM trie key (struct fb_lpm4 or fb_lpm6) of a network."""
    key = (FbLpm4 if network.version == 4 else FbLpm6)(network.prefixlen)
    key.addr[:] = network.network_address.packed
    return key


def _lib():
    from bcc.libbcc import lib
    return lib


class _Map:
    """A BPF map by file descriptor: from the compiled program or opened from its pin."""

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


class DataPlane:
    """The XDP drop program, the TC capture program and their pinned maps on one interface.

    Create, attach and detach in the network namespace of the interface (the thread's network
    namespace is what counts). Map operations (ban, counters, ...) work from anywhere.
    """

    def __init__(self, iface: str, *, capacity: int = DEFAULT_CAPACITY, sip_ports=(5060,),
                 capture: str = "egress", count_register_404: bool = False,
                 challenge_grace: float = 32.0, pin_root: str = DEFAULT_PIN_ROOT):
        if capture not in ("egress", "ingress", "both", "none"):
            raise DataPlaneError(f"capture must be egress, ingress, both or none, not {capture!r}")
        if capacity < 1:
            raise DataPlaneError(f"capacity must be at least 1, not {capacity}")
        if not _has_bpf_capability():
            raise DataPlaneError("fastban needs root (or CAP_BPF and CAP_NET_ADMIN) to load "
                                 "BPF programs: run it with sudo")
        try:
            self.ifindex = socket.if_nametoindex(iface)
        except OSError:
            raise DataPlaneError(f"no network interface named {iface!r} "
                                 f"(see `ip link`)") from None
        release = os.uname().release
        if not os.path.exists(f"/lib/modules/{release}/build") and \
                not os.path.exists("/sys/kernel/kheaders.tar.xz"):
            raise DataPlaneError(f"no kernel headers for {release} at "
                                 f"/lib/modules/{release}/build: run `make host`")
        try:
            import bcc
        except ImportError:
            raise DataPlaneError("BCC is not importable: install Debian's python3-bpfcc "
                                 "(run `make host`), not the PyPI package 'bcc'") from None
        self._bcc = bcc
        self.bpf = None
        self._tables = {}
        self.iface = iface
        self.capture = capture
        self.capacity = capacity
        self.pin_dir = os.path.join(pin_root, iface)
        _ensure_bpffs(pin_root)
        try:
            os.makedirs(self.pin_dir, exist_ok=True)
        except OSError as e:
            raise DataPlaneError(f"cannot create {self.pin_dir}: {e.strerror}") from None
        self.replaced_pins = _replace_stale_pins(self.pin_dir)

        cflags = [f'-DFB_PIN_DIR="{self.pin_dir}"', f"-DFB_CAPACITY={int(capacity)}", "-w"]
        self.bpf = _bcc_call(lambda: bcc.BPF(text=program_source().encode(), cflags=cflags),
                             lambda failure, log: "cannot compile the BPF programs "
                                                  f"({failure}): {log}")
        self._xdp_fn = self._load("xdp_fastban", bcc.BPF.XDP)
        self._tc_fns = {}
        if capture != "none":
            self._write_scan_table()
            for hook in ("egress", "ingress"):
                self._tc_fns[hook] = self._load(f"tc_capture_{hook}", bcc.BPF.SCHED_CLS)

        self._tables = {name: _Map(name, self.bpf[name.encode()].map_fd)
                        for name in PINNED_MAPS}
        # Maps reused from the pins keep the capacity they were created with.
        self.capacity = self._tables["bans_v4"].max_entries or capacity
        self._callbacks: list[Callable[[CapturedPacket], None]] = []
        self._callback_error: BaseException | None = None
        self._lost = 0
        self._delivered = 0
        self._closed = False
        self.mode: str | None = None
        self.capture_pages = CAPTURE_PAGES if self._tc_fns else 0
        if self._tc_fns:
            self.bpf[b"captures"].open_perf_buffer(self._on_event, page_cnt=CAPTURE_PAGES,
                                                  lost_cb=self._on_lost)
        self.set_sip_ports(sip_ports)
        self._set_config(FB_CFG_COUNT_404, 1 if count_register_404 else 0)
        self.set_challenge_grace(challenge_grace)
        for hook, roles in HOOK_ROLES.get(capture, {}).items():
            self._set_config(FB_CFG_ROLES_EGRESS if hook == "egress" else FB_CFG_ROLES_INGRESS,
                             roles)
        self._sync_trie_flags()

    def _write_scan_table(self) -> None:
        """The header scan's automaton (fastban/headerscan.py), before any packet is seen."""
        table = FbScanTable()
        table.step[:] = headerscan.STEPS
        table.call_id_byte[:] = headerscan.CALL_ID_BYTES
        fd = self.bpf[b"scan_table"].map_fd
        if _lib().bpf_update_elem(fd, ct.byref(ct.c_uint32(0)), ct.byref(table), 0) < 0:
            raise DataPlaneError("cannot write the capture's scan table: "
                                 f"{os.strerror(ct.get_errno())}")

    # ---- loading and attaching ----

    def _load(self, name: str, prog_type):
        return _bcc_call(lambda: self.bpf.load_func(name.encode(), prog_type),
                         lambda failure, log: f"the kernel verifier rejected {name}: "
                                              f"{log or failure}")

    def attach(self, mode: str = "auto") -> str:
        """Attaches XDP (native driver, generic skb, or auto = native else generic) and the
        TC capture; returns the XDP mode used. Replaces fastban programs already attached."""
        if mode not in ("auto", "native", "generic"):
            raise DataPlaneError(f"XDP mode must be auto, native or generic, not {mode!r}")
        self._check_open()
        if self.bpf is None:
            raise DataPlaneError("this DataPlane was opened from the pins; make a DataPlane "
                                 f"({self.iface!r}) to attach programs")
        tries = {"auto": ("native", "generic"), "native": ("native",),
                 "generic": ("generic",)}[mode]
        errors = []
        for attempt in tries:
            flags = XDP_FLAGS_DRV_MODE if attempt == "native" else XDP_FLAGS_SKB_MODE
            with _captured_stderr() as err:
                try:
                    self._bcc.BPF.attach_xdp(self.iface.encode(), self._xdp_fn, flags)
                except Exception as e:
                    failure = e
                else:
                    failure = None
            if failure is None:
                self.mode = attempt
                break
            errors.append(f"{attempt}: {_tail(err['text'], 2) or failure}")
        else:
            raise DataPlaneError(f"cannot attach XDP to {self.iface}: {'; '.join(errors)}")
        for direction, fn in self._tc_fns.items():
            self._attach_tc(direction, fn)
        return self.mode

    def _attach_tc(self, direction: str, fn) -> None:
        pin = os.path.join(self.pin_dir, f"prog_tc_{direction}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pin)
        if _lib().bpf_obj_pin(fn.fd, pin.encode()) != 0:
            raise DataPlaneError(f"cannot pin the capture program at {pin}: "
                                 f"{os.strerror(ct.get_errno())}")
        self._tc(["qdisc", "add", "dev", self.iface, "clsact"], ok_if=("File exists", "Exclusivity flag on"))
        self._tc(["filter", "replace", "dev", self.iface, direction, "pref", str(TC_PREF),
                  "handle", "1", "bpf", "direct-action", "object-pinned", pin])

    def _tc(self, args: list[str], ok_if: tuple[str, ...] = (), check: bool = True) -> None:
        try:
            result = subprocess.run(["tc", *args], capture_output=True, text=True)
        except FileNotFoundError:
            raise DataPlaneError("the `tc` program (iproute2) is missing: run `make host`") \
                from None
        if result.returncode != 0 and check and not any(s in result.stderr for s in ok_if):
            raise DataPlaneError(f"tc {' '.join(args)}: {result.stderr.strip()}")

    def detach(self) -> None:
        """Removes the XDP and TC programs from the interface and the pinned maps."""
        for off in (["xdp", "off"], ["xdpgeneric", "off"]):
            subprocess.run(["ip", "link", "set", "dev", self.iface, *off],
                           capture_output=True)
        for direction in ("egress", "ingress"):
            self._tc(["filter", "del", "dev", self.iface, direction, "pref", str(TC_PREF)],
                     check=False)
        remove_pins(self.pin_dir)
        self.mode = None

    def close(self) -> None:
        """Releases this process's handles; the programs stay attached and the bans stay."""
        if self._closed:
            return
        self._closed = True
        for table in self._tables.values():
            table.close()
        if self.bpf is not None:
            with contextlib.suppress(Exception):
                self.bpf.cleanup()

    @classmethod
    def open_pinned(cls, iface: str, *, pin_root: str = DEFAULT_PIN_ROOT) -> DataPlane:
        """Opens the maps pinned for iface without compiling anything (for listing bans,
        banning, counters when no controller runs). attach() and capture are not available;
        detach() works (in the interface's network namespace)."""
        if not _has_bpf_capability():
            raise DataPlaneError("fastban needs root (or CAP_BPF) to open its pinned maps: "
                                 "run it with sudo")
        pin_dir = os.path.join(pin_root, iface)
        tables = {}
        try:
            lib = _lib()
            for name in PINNED_MAPS:
                path = os.path.join(pin_dir, name)
                if not os.path.exists(path):
                    raise DataPlaneError(f"no fastban maps pinned for {iface} in {pin_dir} "
                                         f"(missing {name}): is fastban attached there?")
                fd = lib.bpf_obj_get(path.encode())
                if fd < 0:
                    raise DataPlaneError(f"cannot open {path}: {os.strerror(ct.get_errno())}")
                tables[name] = _Map(name, fd, owned=True)
        except BaseException:
            for table in tables.values():
                table.close()
            raise
        self = cls.__new__(cls)
        self.iface = iface
        self.ifindex = None
        self.capture = "none"
        self.pin_dir = pin_dir
        self.bpf = None
        self._tables = tables
        self.capacity = tables["bans_v4"].max_entries
        self._tc_fns = {}
        self._xdp_fn = None
        self._callbacks = []
        self._callback_error = None
        self._lost = 0
        self._delivered = 0
        self._closed = False
        self.mode = None
        return self

    @property
    def xdp_prog_fd(self) -> int | None:
        """The loaded XDP program's fd (for BPF_PROG_TEST_RUN in the benchmarks)."""
        return self._xdp_fn.fd if self._xdp_fn is not None else None

    def __enter__(self) -> DataPlane:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise DataPlaneError("this DataPlane is closed")

    # ---- raw map access with errno ----

    def _update(self, name: str, key, value, flags: int = 0) -> int:
        table = self._tables[name]
        if _lib().bpf_update_elem(table.map_fd, ct.byref(key), ct.byref(value), flags) < 0:
            return ct.get_errno()
        return 0

    def _lookup(self, name: str, key, value) -> bool:
        table = self._tables[name]
        return _lib().bpf_lookup_elem(table.map_fd, ct.byref(key), ct.byref(value)) == 0

    def _delete(self, name: str, key) -> bool:
        table = self._tables[name]
        return _lib().bpf_delete_elem(table.map_fd, ct.byref(key)) == 0

    def _keys(self, name: str, key_type) -> list:
        """All keys of a map (works for hash maps and LPM tries)."""
        table = self._tables[name]
        lib = _lib()
        keys = []
        current = key_type()
        following = key_type()
        if lib.bpf_get_first_key(table.map_fd, ct.byref(following), ct.sizeof(key_type)) != 0:
            return keys
        while True:
            keys.append(following)
            current = following
            following = key_type()
            if lib.bpf_get_next_key(table.map_fd, ct.byref(current), ct.byref(following)) != 0:
                return keys

    def _set_config(self, index: int, value: int) -> None:
        err = self._update("config", ct.c_uint32(index), ct.c_uint32(value))
        if err:
            raise DataPlaneError(f"cannot write the config map: {os.strerror(err)}")

    def _get_config(self, index: int) -> int:
        value = ct.c_uint32()
        return value.value if self._lookup("config", ct.c_uint32(index), value) else 0

    def config_values(self) -> list[int]:
        """The config map as the programs read it (FB_CFG_* indexes)."""
        self._check_open()
        return [self._get_config(index) for index in range(FB_CFG_MAX)]

    # ---- bans ----

    @staticmethod
    def _ban_slot(target):
        """(map name, key) for a ban target."""
        family, address, network = _to_target(target)
        if address is not None:
            if family == 4:
                return "bans_v4", ct.c_uint32(int.from_bytes(address.packed, sys.byteorder))
            key = FbAddr6()
            key.addr[:] = address.packed
            return "bans_v6", key
        return f"ranges_v{family}", _lpm_key(network)

    def ban(self, target, expires_ns: int = 0) -> None:
        """Bans an address (exact) or a network (range; a /32 or /128 is exact) until
        expires_ns (kernel monotonic ns, see wall_to_monotonic), 0 = permanently. Banning
        again changes the expiry and keeps the hit count. Raises BanTableFull when the map is
        full (after dropping lapsed bans from it)."""
        self._check_open()
        if expires_ns < 0:
            raise ValueError("expires_ns must be >= 0")
        name, key = self._ban_slot(target)
        value = FbBanValue(expires_ns, 0)
        err = self._update(name, key, value, BPF_NOEXIST)     # a new ban: one syscall
        if err in (errno.E2BIG, errno.ENOSPC, errno.ENOMEM) and self._purge(name):
            err = self._update(name, key, value, BPF_NOEXIST)
        if err == errno.EEXIST:                                # banned again: keep its hits
            self._lookup(name, key, value)
            value.expires_ns = expires_ns
            err = self._update(name, key, value)
        if err in (errno.E2BIG, errno.ENOSPC):
            capacity = self._tables[name].max_entries
            raise BanTableFull(f"cannot ban {target}: the {name} table is full ({capacity} "
                               f"entries); unban something or raise the capacity "
                               f"(a new capacity needs detach first)")
        if err:
            raise DataPlaneError(f"cannot ban {target}: {os.strerror(err)}")
        if name in TRIE_FLAGS:
            self._set_config(TRIE_FLAGS[name], 1)

    def unban(self, target) -> bool:
        """Removes a ban; False when there was none for exactly this target."""
        self._check_open()
        name, key = self._ban_slot(target)
        removed = self._delete(name, key)
        if removed and name in TRIE_FLAGS:
            self._sync_trie_flags()
        return removed

    def _sync_trie_flags(self) -> None:
        """Tells XDP which LPM tries hold entries, so it skips the empty ones."""
        lib = _lib()
        for name, index in TRIE_FLAGS.items():
            key = (FbLpm4 if name.endswith("v4") else FbLpm6)()
            empty = lib.bpf_get_first_key(self._tables[name].map_fd, ct.byref(key),
                                          ct.sizeof(key)) != 0
            self._set_config(index, 0 if empty else 1)

    def _ban_entries(self):
        for name, key_type in (("bans_v4", ct.c_uint32), ("bans_v6", FbAddr6)):
            for key, value in self._hash_items(name, key_type, FbBanValue):
                if name == "bans_v4":
                    target = ipaddress.IPv4Address(key.value.to_bytes(4, sys.byteorder))
                else:
                    target = ipaddress.IPv6Address(bytes(key.addr))
                yield name, key, Ban(target, value.expires_ns, value.hits)
        for name, key_type in (("ranges_v4", FbLpm4), ("ranges_v6", FbLpm6)):
            network = ipaddress.IPv4Network if name == "ranges_v4" else ipaddress.IPv6Network
            for key in self._keys(name, key_type):
                value = FbBanValue()
                if self._lookup(name, key, value):
                    target = network((bytes(key.addr), key.prefixlen))
                    yield name, key, Ban(target, value.expires_ns, value.hits)

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
            failed = _lib().bpf_lookup_batch(fd, None if first else ct.byref(token),
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

    def bans(self, include_expired: bool = False) -> list[Ban]:
        """Every ban in the kernel (lapsed ones only with include_expired)."""
        self._check_open()
        now = time.monotonic_ns()
        return [ban for _, _, ban in self._ban_entries()
                if include_expired or ban.expires_ns == 0 or ban.expires_ns > now]

    def _purge(self, only: str | None = None) -> int:
        now = time.monotonic_ns()
        removed = 0
        for name, key, ban in list(self._ban_entries()):
            if (only is None or name == only) and 0 < ban.expires_ns <= now:
                removed += self._delete(name, key)
        return removed

    def purge_expired(self) -> int:
        """Deletes lapsed bans from the maps (the kernel already ignores them); returns how
        many."""
        self._check_open()
        removed = self._purge()
        self._sync_trie_flags()
        return removed

    # ---- allowlist ----

    @staticmethod
    def _allow_slot(network):
        family, _, net = _to_target(network)
        return f"allow_v{family}", _lpm_key(net)

    def allow(self, network) -> None:
        """Allowlists an address or network: never dropped, even when banned."""
        self._check_open()
        name, key = self._allow_slot(network)
        err = self._update(name, key, ct.c_uint32(1))
        if err in (errno.E2BIG, errno.ENOSPC):
            raise BanTableFull(f"cannot allow {network}: the {name} table is full")
        if err:
            raise DataPlaneError(f"cannot allow {network}: {os.strerror(err)}")
        self._set_config(TRIE_FLAGS[name], 1)

    def disallow(self, network) -> bool:
        self._check_open()
        name, key = self._allow_slot(network)
        removed = self._delete(name, key)
        if removed:
            self._sync_trie_flags()
        return removed

    def allowed(self) -> list:
        self._check_open()
        networks = []
        for key in self._keys("allow_v4", FbLpm4):
            networks.append(ipaddress.IPv4Network((bytes(key.addr), key.prefixlen)))
        for key in self._keys("allow_v6", FbLpm6):
            networks.append(ipaddress.IPv6Network((bytes(key.addr), key.prefixlen)))
        return networks

    # ---- scope and SIP ports ----

    def _replace_ports(self, name: str, ports: Iterable[int]) -> None:
        wanted = {int(p) for p in ports}
        for port in wanted:
            if not 0 < port < 65536:
                raise ValueError(f"not a port number: {port}")
        if len(wanted) > self._tables[name].max_entries:
            raise DataPlaneError(f"too many ports ({len(wanted)}); at most "
                                 f"{self._tables[name].max_entries}")
        present = {k.value for k in self._keys(name, ct.c_uint16)}
        for port in wanted - present:
            err = self._update(name, ct.c_uint16(port), ct.c_uint8(1))
            if err:
                raise DataPlaneError(f"cannot add port {port}: {os.strerror(err)}")
        for port in present - wanted:
            self._delete(name, ct.c_uint16(port))

    def set_scope(self, ports: Iterable[int] | None) -> None:
        """None: a banned source loses all its traffic (default). Ports: only its TCP/UDP
        traffic to these destination ports is dropped."""
        self._check_open()
        if ports is None:
            self._set_config(FB_CFG_SCOPE_PORTS, 0)
            self._replace_ports("scope_ports", ())
            return
        ports = list(ports)
        if not ports:
            raise ValueError("an empty port scope would drop nothing; use None for all traffic")
        self._replace_ports("scope_ports", ports)
        self._set_config(FB_CFG_SCOPE_PORTS, 1)

    def scope(self) -> list[int] | None:
        """The port scope in force (None = all traffic)."""
        self._check_open()
        if not self._get_config(FB_CFG_SCOPE_PORTS):
            return None
        return sorted(k.value for k in self._keys("scope_ports", ct.c_uint16))

    def set_sip_ports(self, ports) -> None:
        """The source ports whose responses the capture looks at."""
        self._check_open()
        ports = list(ports)
        if not ports:
            raise ValueError("at least one SIP port is needed")
        self._replace_ports("sip_ports", ports)

    def set_count_register_404(self, enabled: bool) -> None:
        """Whether 404 responses are forwarded too (they count as failures for scanners)."""
        self._check_open()
        self._set_config(FB_CFG_COUNT_404, 1 if enabled else 0)

    def sip_ports(self) -> list[int]:
        self._check_open()
        return sorted(k.value for k in self._keys("sip_ports", ct.c_uint16))

    # ---- counters ----

    def counters(self) -> dict:
        """Counters summed over CPUs, since the pinned maps were created:
        seen, passed, dropped, allowlisted (XDP; seen = passed + dropped);
        capture_examined (SIP status lines seen by TC), captured (forwarded to user space),
        capture_failed (the perf buffer was full or had no reader: the kernel's count, at
        once); capture_lost: responses lost as reported to this process by the perf buffer
        (BCC's lost callback; the kernel reports a loss with the next record on that CPU)."""
        self._check_open()
        from bcc.utils import get_possible_cpus
        ncpus = len(get_possible_cpus())
        result = {}
        for name, index in COUNTER_NAMES.items():
            values = (ct.c_uint64 * ncpus)()
            self._lookup("counters", ct.c_uint32(index), values)
            result[name] = int(sum(values))
        result["seen"] = result["passed"] + result["dropped"]
        result["capture_lost"] = self._lost
        return result

    def set_challenge_grace(self, seconds: float) -> None:
        """How long after a 401/407 the capture treats the peer as challenged and its Call-ID
        as open (the rules' challenge_grace)."""
        self._check_open()
        self._set_config(FB_CFG_GRACE_MS, max(1, min(int(seconds * 1000), 0xFFFFFFFF)))

    def challenged_peers(self) -> dict:
        """{peer address: (last challenge ns, last unreadable Call-ID ns)}, 0 = never."""
        self._check_open()
        result = {}
        for key in self._keys("challenged", FbPeer):
            value = FbPeerState()
            if self._lookup("challenged", key, value):
                result[_peer_address(key.addr)] = (value.challenged_ns, value.any_call_ns)
        return result

    def open_calls(self) -> dict:
        """{(peer address, Call-ID hash): ns of the last mark}."""
        self._check_open()
        result = {}
        for key in self._keys("open_calls", FbCallKey):
            value = ct.c_uint64()
            if self._lookup("open_calls", key, value):
                result[_peer_address(key.addr), key.call_hash] = value.value
        return result

    def mark_challenge(self, peer, call_id: bytes | None, ktime_ns: int) -> None:
        """Marks peer challenged and its Call-ID open, as the capture does on a 401/407; for
        challenges user space found where the kernel could not read (a later message of a
        TCP segment). call_id None marks every Call-ID of the peer open."""
        self._check_open()
        key = FbPeer()
        key.addr[:] = _peer_bytes(peer)
        state = FbPeerState()
        self._lookup("challenged", key, state)
        state.challenged_ns = max(state.challenged_ns, ktime_ns)
        if call_id is None:
            state.any_call_ns = max(state.any_call_ns, ktime_ns)
        else:
            call = FbCallKey(call_hash=headerscan.call_hash(call_id))
            call.addr[:] = key.addr
            self._update("open_calls", call, ct.c_uint64(ktime_ns))
        self._update("challenged", key, state)

    # ---- capture ----

    def on_capture(self, callback: Callable[[CapturedPacket], None]) -> None:
        """Registers a callback for captured packets; poll() delivers them."""
        if not self._tc_fns:
            raise DataPlaneError("this DataPlane was made with capture='none'")
        self._callbacks.append(callback)

    def poll(self, timeout_ms: int = 100) -> None:
        """Waits up to timeout_ms for captured packets and hands them to the callbacks.

        Once a CPU's ring has woken the poll, every ring is read: the kernel wakes a reader
        some time after it wrote (irq_work), so a request copied on one CPU can be in its ring
        but not yet signalled when the answer copied after it on another CPU wakes the poll.
        Read together, the two can be put back in order (CapturedPacket.ktime_ns)."""
        self._check_open()
        if not self._tc_fns:
            time.sleep(timeout_ms / 1000)
            return
        delivered = self._delivered
        self.bpf.perf_buffer_poll(timeout_ms)
        if self._delivered != delivered:
            self.bpf.perf_buffer_consume()
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            raise error

    def _on_lost(self, lost: int) -> None:
        self._lost += lost

    def _on_event(self, cpu, data, size) -> None:
        self._delivered += 1
        try:
            response = decode_capture(ct.string_at(data, size))
            if response is not None:
                for callback in self._callbacks:
                    callback(response)
        except BaseException as e:          # a callback failing must not vanish in ctypes
            if self._callback_error is None:
                self._callback_error = e


# struct fb_capture_meta, little-endian as the kernel writes it on x86-64 and arm64.
CAPTURE_META = struct.Struct("<Q16s16sHHHHIIIBBBBBBH4x")   # padded to 8 like the C struct
_PROTOCOLS = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp"}
_KINDS = {FB_KIND_RESPONSE: "response", FB_KIND_REQUEST: "request",
          FB_KIND_CONTINUATION: "continuation"}


def decode_capture(raw: bytes) -> CapturedPacket | None:
    """One perf record (struct fb_capture_meta + packet bytes) -> CapturedPacket."""
    if len(raw) < CAPTURE_META.size:
        return None
    (ktime_ns, saddr, daddr, sport, dport, status, payload_off, payload_len, cap_len, tcp_seq,
     family, protocol, direction, kind, flags, reason, _) = CAPTURE_META.unpack_from(raw)
    packet = raw[CAPTURE_META.size:CAPTURE_META.size + cap_len]
    if family == 4:
        src, dst = _address(_V4_ADDRESSES, saddr[:4]), _address(_V4_ADDRESSES, daddr[:4])
    else:
        src, dst = _address(_V6_ADDRESSES, saddr), _address(_V6_ADDRESSES, daddr)
    payload = packet[payload_off:payload_off + payload_len]
    return CapturedPacket(
        src, dst, sport, dport, _PROTOCOLS.get(protocol, "udp"), status, payload, ktime_ns,
        "ingress" if direction == FB_DIR_INGRESS else "egress", packet,
        _KINDS.get(kind, "response"), payload_len, tcp_seq, bool(flags & FB_META_FRAGMENT),
        bool(flags & FB_META_TCP_FIN), bool(flags & FB_META_TCP_RST), FB_WHY.get(reason, ""))


def _peer_address(addr) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.IPv6Address(bytes(addr))
    return address.ipv4_mapped or address


def _peer_bytes(address) -> bytes:
    address = ipaddress.ip_address(address)
    if address.version == 4:
        return b"\0" * 10 + b"\xff\xff" + address.packed
    return address.packed


# The same few addresses (the server's, each attacker's) recur in every capture; building an
# ipaddress object costs more than the rest of the decoding, so recent ones are reused.
ADDRESS_CACHE_SIZE = 65536
_V4_ADDRESSES: dict[bytes, ipaddress.IPv4Address] = {}
_V6_ADDRESSES: dict[bytes, ipaddress.IPv6Address] = {}


def _address(cache: dict, packed: bytes):
    address = cache.get(packed)
    if address is None:
        if len(cache) >= ADDRESS_CACHE_SIZE:
            cache.clear()
        address = cache[packed] = ipaddress.ip_address(packed)
    return address


def _replace_stale_pins(pin_dir: str) -> list[str]:
    """Removes the pins of REBUILT_MAPS whose layout is not this version's, and RETIRED_PINS;
    returns their names."""
    removed = []
    lib = _lib()
    for name in (*REBUILT_MAPS, *RETIRED_PINS):
        path = os.path.join(pin_dir, name)
        if not os.path.exists(path):
            continue
        if name in REBUILT_MAPS:
            fd = lib.bpf_obj_get(path.encode())
            if fd < 0:
                continue
            pinned = _Map(name, fd, owned=True)
            fields = pinned.key_size, pinned.value_size, pinned.max_entries
            pinned.close()
            if fields == REBUILT_MAPS[name]:
                continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        removed.append(name)
    return removed


def remove_pins(pin_dir: str) -> None:
    """Deletes the pinned maps and programs of one interface, and the directory."""
    path = Path(pin_dir)
    if not path.is_dir():
        return
    for entry in path.iterdir():
        with contextlib.suppress(OSError):
            entry.unlink()
    with contextlib.suppress(OSError):
        path.rmdir()
