"""Recordings: tcpdump on a lab interface for the duration of a block (SipLab.record; Recorder
is that part of SipLab), and reading the pcap files back (count_fragments,
packets_containing). A recording can also be read by `fastban replay`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastban.lab import netns
from fastban.lab.clients import _Background
from fastban.lab.plan import SipLabError, _normal


@dataclass
class Recording:
    """A pcap file SipLab.record() wrote; the counts are tcpdump's, known once it stopped."""
    path: Path
    iface: str
    packets_captured: int | None = None   # written to the file
    packets_dropped: int | None = None    # lost by the kernel (tcpdump's buffer was full)


# tcpdump's kernel buffer: its 2 MiB default lost packets of a 3,000 requests/s forged flood.
CAPTURE_BUFFER_KIB = 32768
_CAPTURE_STATS = re.compile(r"(\d+) packets? captured,? (\d+) packets? received by filter,? "
                            r"(\d+) packets? dropped by kernel")


def _wait_for_output(process: _Background, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in process.output():
            return
        if not process.running():
            raise SipLabError(f"{process.program} exited with {process.proc.returncode}: "
                              f"{process.output()[-1500:]}")
        time.sleep(0.05)
    process.stop_process()
    raise SipLabError(f"{process.program} did not say {text!r} within {timeout} s")


def _capture_stats(process: _Background) -> tuple[int, int, int] | None:
    """tcpdump's last report: (captured, received by the filter, dropped by the kernel)."""
    found = _CAPTURE_STATS.findall(" ".join(process.output().split()))
    return tuple(int(n) for n in found[-1]) if found else None


def _stop_capture(process: _Background, recording: Recording, timeout: float = 10) -> None:
    """Stops tcpdump once it has written what the kernel gave it: SIGUSR1 makes it report its
    counts, and it is caught up when every packet the filter took is captured or dropped. On
    loopback (where the outgoing copies are counted but not captured) that never holds, and the
    wait ends at `timeout`."""
    deadline = time.monotonic() + timeout
    reports = 0
    while process.running() and time.monotonic() < deadline:
        os.kill(process.proc.pid, signal.SIGUSR1)     # ip netns exec became tcpdump
        reports += 1
        while process.running() and time.monotonic() < deadline:
            if len(_CAPTURE_STATS.findall(" ".join(process.output().split()))) >= reports:
                break
            time.sleep(0.02)
        stats = _capture_stats(process)
        if stats is not None and stats[0] + stats[2] >= stats[1]:
            break
        time.sleep(0.05)
    if process.running():
        os.kill(process.proc.pid, signal.SIGINT)
        try:
            process.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    process.stop_process()
    summary = re.search(r"(\d+) packets? captured\s+(\d+) packets? received by filter\s+"
                        r"(\d+) packets? dropped by kernel\s*$", process.output())
    stats = (tuple(int(n) for n in summary.groups()) if summary else _capture_stats(process))
    if stats is not None:
        recording.packets_captured, recording.packets_dropped = stats[0], stats[2]


@dataclass
class FragmentCount:
    """The IP fragments in a capture (IPv4 with more-fragments or an offset, IPv6 with a
    Fragment header)."""
    fragments: int = 0                        # fragment packets
    datagrams: int = 0                        # distinct datagrams they are parts of
    by_source: dict[str, int] = field(default_factory=dict)    # fragment packets per source


def packets_containing(path: str | Path, text: str | bytes) -> int:
    """How many packets of the pcap file `path` contain `text` anywhere in their bytes (e.g. a
    Call-ID: a SIP message is sent in clear)."""
    from scapy.utils import RawPcapReader

    needle = text.encode() if isinstance(text, str) else text
    with RawPcapReader(str(path)) as packets:
        return sum(1 for data, _ in packets if needle in data)


def count_fragments(path: str | Path, source: str | None = None) -> FragmentCount:
    """Counts the IP fragments in the pcap file `path` (only those from `source`, if given)."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
    from scapy.utils import PcapReader

    wanted = None if source is None else _normal(source)
    count = FragmentCount()
    datagrams = set()
    with PcapReader(str(path)) as packets:
        for packet in packets:
            if IP in packet:
                ip = packet[IP]
                if not (ip.flags.MF or ip.frag):
                    continue
                key = (ip.src, ip.dst, ip.id, 4)
                src = ip.src
            elif IPv6ExtHdrFragment in packet:
                src = packet[IPv6].src
                key = (src, packet[IPv6].dst, packet[IPv6ExtHdrFragment].id, 6)
            else:
                continue
            src = _normal(src)
            if wanted is not None and src != wanted:
                continue
            count.fragments += 1
            count.by_source[src] = count.by_source.get(src, 0) + 1
            datagrams.add(key)
    count.datagrams = len(datagrams)
    return count


class Recorder:
    """The recording part of SipLab. Uses the lab's server_namespace and server_iface, its
    working directories (_workdir) and its list of clients, which the lab's close stops."""

    @contextlib.contextmanager
    def record(self, path: str | Path, iface: str | None = None,
               namespace: netns.Namespace | None = None):
        """Records the server's traffic to the pcap file `path` for the duration of the block:
        tcpdump in the server namespace on `iface` (default server_iface), both directions,
        whole packets. Yields a Recording; at exit tcpdump is stopped once it has written every
        packet the kernel gave it, and the Recording tells how many it wrote and how many the
        kernel dropped. The file can be read by `fastban replay`. `namespace` (with `iface`)
        records elsewhere in the lab instead (Office.record: what the office phones receive)."""
        if shutil.which("tcpdump") is None:
            raise SipLabError("tcpdump is not installed (run: make host)")
        if namespace is not None and iface is None:
            raise SipLabError("recording in another namespace needs its iface")
        namespace = namespace or self.server_namespace
        iface = iface or self.server_iface
        path = Path(path).resolve()
        capture = _Background(namespace, self._workdir("tcpdump"),
                              ["tcpdump", "-i", iface, "-s", "0", "-U", "--immediate-mode",
                               "-B", str(CAPTURE_BUFFER_KIB), "-n", "-Z", "root", "-w",
                               str(path)],
                              bound=24 * 3600, output="tcpdump.err")
        self._clients.append(capture)
        recording = Recording(path, iface)
        try:
            _wait_for_output(capture, "listening on", timeout=15)
            yield recording
        finally:
            _stop_capture(capture, recording)
