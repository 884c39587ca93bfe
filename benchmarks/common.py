"""Shared pieces of the benchmarks: frames, address sets, CPU accounting, results files."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import platform
import select
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
BENCH_PIN_ROOT = "/sys/fs/bpf/fastban-bench"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ---- frames ----

def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(src, dst, sport=5060, dport=5060, payload=b"", src_mac=b"\x02\0\0\0\0\x01",
              dst_mac=b"\x02\0\0\0\0\x02") -> bytes:
    """An Ethernet + IPv4/IPv6 + UDP frame (checksums filled in)."""
    src, dst = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    udp_len = 8 + len(payload)
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 17, udp_len)
    else:
        pseudo = src.packed + dst.packed + struct.pack("!I3xB", udp_len, 17)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    check = _csum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", check) + udp[8:]
    if src.version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0,
                         src.packed, dst.packed)
        ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
        ethertype = 0x0800
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, udp_len, 17, 64, src.packed, dst.packed)
        ethertype = 0x86DD
    return dst_mac + src_mac + struct.pack("!H", ethertype) + ip + udp


SIP_OPTIONS = (b"OPTIONS sip:100@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1\r\n"
               b"Max-Forwards: 70\r\nCall-ID: bench\r\nCSeq: 1 OPTIONS\r\n"
               b"Content-Length: 0\r\n\r\n")


# ---- address sets: distinct, spread over the address space, never the probes ----

def v4_addresses(count: int, start: int = 1) -> list:
    """`count` distinct IPv4 unicast addresses (as 4 packed bytes), scattered like real
    attackers; never 0/8, 10/8, 127/8, 224/3 (martians the stack would drop on its own) nor
    198.18/15 (benchmark probes and honest senders)."""
    out, i = [], start
    while len(out) < count:
        value = (i * 2654435761) & 0xFFFFFFFF
        i += 1
        first = value >> 24
        if first in (0, 10, 127) or first >= 224 or (value >> 17) == (0xC612 >> 1):
            continue
        out.append(value.to_bytes(4, "big"))
    return out


def v6_addresses(count: int, start: int = 1) -> list:
    base = int(ipaddress.IPv6Address("2001:db8::"))
    return [(base + ((i * 0x9E3779B97F4A7C15) & ((1 << 64) - 1))).to_bytes(16, "big")
            for i in range(start, start + count)]


# ---- CPU accounting ----

def cpu_times() -> dict:
    """Per-CPU and total jiffies from /proc/stat: {cpu: {user, system, softirq, ...}}."""
    fields = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    result = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            parts = line.split()
            result[parts[0]] = dict(zip(fields, map(int, parts[1:9])))
    return result


def cpu_delta(before: dict, after: dict, cpu: str = "cpu") -> dict:
    """Seconds spent per category between two cpu_times() snapshots."""
    hz = os.sysconf("SC_CLK_TCK")
    return {k: (after[cpu][k] - before[cpu][k]) / hz for k in before[cpu]}


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def map_memlock(fd: int) -> int:
    """The kernel's memory figure for a BPF map (fdinfo memlock: actual use on 6.x)."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("memlock:"):
                return int(line.split()[1])
    return 0


# ---- statistics and output ----

def percentile(values, p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    return {"host": socket.gethostname(), "kernel": platform.release(), "cpu": cpu,
            "cpus": os.cpu_count(), "memory_mib": mem, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def save_json(name: str, data) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def sweep_pins() -> None:
    """Removes pinned maps left under BENCH_PIN_ROOT by benchmark processes that are gone."""
    import re
    root = Path(BENCH_PIN_ROOT)
    if not root.is_dir():
        return
    alive = {int(p) % 100000 for p in os.listdir("/proc") if p.isdigit()}
    for directory in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        if not directory.is_dir():
            continue
        match = re.fullmatch(r"fb(\d+)[a-z]+\d+", directory.name)
        if match and int(match.group(1)) not in alive:
            for entry in directory.iterdir():
                with contextlib.suppress(OSError):
                    entry.unlink()
        with contextlib.suppress(OSError):
            directory.rmdir()                 # only when empty


def start_guard(namespace, prefix: list, iface: str, workdir: str, *args: str,
                timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """Starts benchmarks/guard_proc.py in the namespace (prefix: e.g. taskset or chrt) and
    waits for its "ready" line; returns the process and that line."""
    guard = subprocess.Popen(
        namespace.nsenter([*prefix, sys.executable, "-m", "benchmarks.guard_proc", iface,
                           workdir, *args]),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([guard.stdout], [], [], timeout)
    line = guard.stdout.readline() if ready else ""
    if not line.startswith("ready"):
        guard.kill()
        raise RuntimeError(f"the guard did not start: {line} {guard.stderr.read()}")
    return guard, line


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within timeout."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
