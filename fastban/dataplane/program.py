"""Compiling, loading and attaching the BPF programs, and their pins in bpffs.

The programs (bpf/xdp_drop.c and bpf/tc_capture.c, with the headers they include) are compiled
by BCC as one source text, so that they share their maps and cost one compile. Their maps are
pinned under {pin_root}/{iface}/ so bans outlive the process; the TC programs are pinned too,
and attached with `tc ... object-pinned`.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import os
import re
import subprocess
import tempfile
from pathlib import Path

from fastban.abi import ABI, AbiError, bpf_dir, verify_compiled, verify_pinned
from fastban.dataplane.errors import DataPlaneError
from fastban.dataplane.maps import Map, import_bcc, lib

DEFAULT_PIN_ROOT = "/sys/fs/bpf/fastban"
TC_PREF = 5060          # tc filter priority used for the capture programs
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
PROGRAMS = ("xdp_drop.c", "tc_capture.c")
# Pinned maps whose contents the guard sets up again at start: a pin left by a version with
# another layout is replaced (BCC would reuse it as it is, and hide the new layout).
REBUILT_MAPS = ("counters", "config", "challenged", "open_calls", "trusted_v4", "trusted_v6",
                "rate_limit", "admission", "armed")
# Pins of earlier versions that no program uses any more.
RETIRED_PINS = ("challenges", "allow_v4", "allow_v6")
_INCLUDE = re.compile(r'^#include "([\w.]+)"$', re.M)


def program_source(directory: Path | None = None) -> str:
    """The programs as one BCC source text, their local headers pasted where they are
    included (BCC rewrites map calls in the text it is given)."""
    directory = directory or bpf_dir()

    def paste(name: str) -> str:
        path = directory / name
        if not path.exists():
            raise DataPlaneError(f"the BPF source {path} is missing")
        return _INCLUDE.sub(lambda m: paste(m.group(1)), path.read_text())
    return "\n".join(paste(name) for name in PROGRAMS)


def check_privileges() -> None:
    if not has_bpf_capability():
        raise DataPlaneError("fastban needs root (or CAP_BPF and CAP_NET_ADMIN) to load "
                             "BPF programs: run it with sudo")


def has_bpf_capability() -> bool:
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


def check_headers() -> None:
    release = os.uname().release
    if not os.path.exists(f"/lib/modules/{release}/build") and \
            not os.path.exists("/sys/kernel/kheaders.tar.xz"):
        raise DataPlaneError(f"no kernel headers for {release} at "
                             f"/lib/modules/{release}/build: run `make host`")


# ---- compiling and loading ----

def compile_programs(pin_dir: str, capacity: int, rate_entries: int | None = None):
    """A bcc.BPF of both programs whose maps are pinned in pin_dir, checked against abi.h."""
    bcc = import_bcc()
    rate_entries = rate_entries or ABI["FB_RATE_ENTRIES_DEFAULT"]
    cflags = [f'-DFB_PIN_DIR="{pin_dir}"', f"-DFB_CAPACITY={int(capacity)}",
              f"-DFB_RATE_ENTRIES={int(rate_entries)}", "-w"]
    bpf = _bcc_call(lambda: bcc.BPF(text=program_source().encode(), cflags=cflags),
                    lambda failure, log: f"cannot compile the BPF programs ({failure}): {log}")
    try:
        verify_compiled(ABI, bpf)
    except AbiError as error:
        bpf.cleanup()
        raise DataPlaneError(str(error)) from None
    return bpf


def load(bpf, name: str, prog_type):
    return _bcc_call(lambda: bpf.load_func(name.encode(), prog_type),
                     lambda failure, log: f"the kernel verifier rejected {name}: "
                                          f"{log or failure}")


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


# ---- attaching ----

def attach_xdp(iface: str, fn, mode: str) -> str:
    """Attaches XDP: native driver, generic skb, or auto = native else generic; returns the
    mode used."""
    if mode not in ("auto", "native", "generic"):
        raise DataPlaneError(f"XDP mode must be auto, native or generic, not {mode!r}")
    bcc = import_bcc()
    errors = []
    for attempt in {"auto": ("native", "generic"), "native": ("native",),
                    "generic": ("generic",)}[mode]:
        flags = XDP_FLAGS_DRV_MODE if attempt == "native" else XDP_FLAGS_SKB_MODE
        with _captured_stderr() as err:
            try:
                bcc.BPF.attach_xdp(iface.encode(), fn, flags)
            except Exception as e:
                failure = e
            else:
                failure = None
        if failure is None:
            return attempt
        errors.append(f"{attempt}: {_tail(err['text'], 2) or failure}")
    raise DataPlaneError(f"cannot attach XDP to {iface}: {'; '.join(errors)}")


def attach_tc(iface: str, pin_dir: str, hook: str, fn) -> None:
    pin = os.path.join(pin_dir, f"prog_tc_{hook}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pin)
    if lib().bpf_obj_pin(fn.fd, pin.encode()) != 0:
        raise DataPlaneError(f"cannot pin the capture program at {pin}: "
                             f"{os.strerror(ct.get_errno())}")
    _tc(["qdisc", "add", "dev", iface, "clsact"], ok_if=("File exists", "Exclusivity flag on"))
    _tc(["filter", "replace", "dev", iface, hook, "pref", str(TC_PREF), "handle", "1", "bpf",
         "direct-action", "object-pinned", pin])


def detach(iface: str, pin_dir: str) -> None:
    """Removes the XDP and TC programs from the interface and the pins."""
    for off in (["xdp", "off"], ["xdpgeneric", "off"]):
        subprocess.run(["ip", "link", "set", "dev", iface, *off], capture_output=True)
    for hook in ("egress", "ingress"):
        _tc(["filter", "del", "dev", iface, hook, "pref", str(TC_PREF)], check=False)
    remove_pins(pin_dir)


def _tc(args: list[str], ok_if: tuple[str, ...] = (), check: bool = True) -> None:
    try:
        result = subprocess.run(["tc", *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise DataPlaneError("the `tc` program (iproute2) is missing: run `make host`") \
            from None
    if result.returncode != 0 and check and not any(s in result.stderr for s in ok_if):
        raise DataPlaneError(f"tc {' '.join(args)}: {result.stderr.strip()}")


# ---- pins ----

def _bpffs_mounts() -> list[str]:
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "bpf":
                mounts.append(fields[1])
    return mounts


def prepare_pin_dir(pin_root: str, iface: str, sizes: dict | None = None) \
        -> tuple[str, list[str]]:
    """Makes {pin_root}/{iface} on bpffs (mounting /sys/fs/bpf if needed); returns it and the
    pins it replaced (see REBUILT_MAPS, RETIRED_PINS; a rebuilt map whose entries sizes names
    is replaced when it holds another number)."""
    root = os.path.abspath(pin_root)
    if not any(root == m or root.startswith(m.rstrip("/") + "/") for m in _bpffs_mounts()):
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
    pin_dir = os.path.join(pin_root, iface)
    try:
        os.makedirs(pin_dir, exist_ok=True)
    except OSError as e:
        raise DataPlaneError(f"cannot create {pin_dir}: {e.strerror}") from None
    return pin_dir, _replace_stale_pins(pin_dir, sizes or {})


def _replace_stale_pins(pin_dir: str, sizes: dict) -> list[str]:
    removed = []
    for name in (*REBUILT_MAPS, *RETIRED_PINS):
        path = os.path.join(pin_dir, name)
        if not os.path.exists(path):
            continue
        if name in REBUILT_MAPS:
            pinned = open_pin(path, name)
            if pinned is None:
                continue
            stale = verify_pinned(ABI, name, pinned.key_size, pinned.value_size,
                                  pinned.max_entries)
            if name in sizes and pinned.max_entries != sizes[name]:
                stale = f"{pinned.max_entries} entries, not {sizes[name]}"
            pinned.close()
            if stale is None:
                continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        removed.append(name)
    return removed


def open_pin(path: str, name: str) -> Map | None:
    fd = lib().bpf_obj_get(path.encode())
    return None if fd < 0 else Map(name, fd, owned=True)


def open_pinned_maps(pin_dir: str, iface: str) -> dict[str, Map]:
    """The maps pinned in pin_dir, checked against abi.h, without compiling anything."""
    tables = {}
    try:
        for name in ABI.pinned:
            path = os.path.join(pin_dir, name)
            if not os.path.exists(path):
                raise DataPlaneError(f"no fastban maps pinned for {iface} in {pin_dir} "
                                     f"(missing {name}): is fastban attached there?")
            table = open_pin(path, name)
            if table is None:
                raise DataPlaneError(f"cannot open {path}: {os.strerror(ct.get_errno())}")
            tables[name] = table
            stale = verify_pinned(ABI, name, table.key_size, table.value_size,
                                  table.max_entries)
            if stale:
                raise DataPlaneError(f"{path} was pinned by another version of fastban "
                                     f"({stale}): start the guard, or `fastban detach`")
    except BaseException:
        for table in tables.values():
            table.close()
        raise
    return tables


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
