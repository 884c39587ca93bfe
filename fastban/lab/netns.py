"""Throwaway network labs: namespaces joined by veth pairs, made with iproute2 and removed on exit.

Used by the tests, the demo and the benchmarks. Names carry the creating process id, so labs of
different processes never collide and a lab left behind by a killed process can be swept away.

    with Lab() as lab:
        server, client = lab.namespace("srv"), lab.namespace("cli")
        link = lab.link(server, client, "10.200.0.1/24", "10.200.0.2/24",
                        "fd00:200::1/64", "fd00:200::2/64")
        client.run(["ping", "-c1", "10.200.0.1"])
        with server.entered():           # this thread now sees the server's interfaces
            ...

Processes that must keep seeing the host's /sys/fs/bpf (fastban itself) are started with
`namespace.nsenter(...)`, which changes only the network namespace; `ip netns exec` would also
remount /sys and hide the pinned maps.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import re
import subprocess
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
NAME_PREFIX = "fb"
_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


class LabError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def unique_name(role: str) -> str:
    """An interface or namespace name, at most 15 characters, unique per process and call."""
    name = f"{NAME_PREFIX}{os.getpid() % 100000}{role[:3]}{next(_counter)}"
    if len(name) > 15:
        raise LabError(f"name {name!r} is longer than an interface name may be")
    return name


def sweep_stale() -> list[str]:
    """Deletes namespaces left by lab processes that no longer run; returns their names."""
    removed = []
    listing = _ip("netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.strip() else ""
        match = re.fullmatch(rf"{NAME_PREFIX}(\d+)[a-z]+\d+", name)
        if match and not _pid_alive(int(match.group(1))):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


def _pid_alive(pid_suffix: int) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) % 100000 == pid_suffix:
            return True
    return False


@dataclass
class Namespace:
    name: str

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def run(self, args: list[str], check: bool = True, timeout: float = 30,
            **kwargs) -> subprocess.CompletedProcess:
        """Runs a program inside the namespace (ip netns exec) and waits for it."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        result = subprocess.run(["ip", "netns", "exec", self.name, *args], timeout=timeout,
                                **kwargs)
        if check and result.returncode != 0:
            raise LabError(f"in {self.name}: {' '.join(args)}: exit {result.returncode}: "
                           f"{(result.stderr or '').strip()}")
        return result

    def popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        """Starts a program inside the namespace (ip netns exec) in the background."""
        return subprocess.Popen(["ip", "netns", "exec", self.name, *args], **kwargs)

    def nsenter(self, args: list[str]) -> list[str]:
        """The command line that runs args in this network namespace, keeping mounts."""
        return ["nsenter", f"--net={self.path}", *args]

    @contextlib.contextmanager
    def entered(self):
        """Moves the calling thread into the namespace for the duration of the block."""
        with open("/proc/thread-self/ns/net") as home, open(self.path) as target:
            _setns(target.fileno())
            try:
                yield self
            finally:
                _setns(home.fileno())


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise LabError(f"setns: {os.strerror(err)}")


@dataclass
class Link:
    """A veth pair: `a` lives in namespace_a, `b` in namespace_b (None = this host)."""
    a: str
    b: str
    namespace_a: Namespace | None
    namespace_b: Namespace | None
    addresses_a: tuple[str, ...]
    addresses_b: tuple[str, ...]

    def ip_a(self, family: int = 4) -> str:
        return _address_of(self.addresses_a, family)


def _address_of(addresses: tuple[str, ...], family: int) -> str:
    for cidr in addresses:
        if (":" in cidr) == (family == 6):
            return cidr.split("/")[0]
    raise LabError(f"no IPv{family} address on this side of the link")


class Lab:
    """Namespaces and veth pairs that are all removed when the lab closes, even on failure."""

    def __init__(self):
        self.namespaces: list[Namespace] = []
        self.host_links: list[str] = []

    def __enter__(self) -> Lab:
        sweep_stale()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def namespace(self, role: str) -> Namespace:
        ns = Namespace(unique_name(role))
        _ip("netns", "add", ns.name)
        self.namespaces.append(ns)
        ns.run(["ip", "link", "set", "lo", "up"])
        ns.run(["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"], check=False)
        ns.run(["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"], check=False)
        return ns

    def link(self, ns_a: Namespace | None, ns_b: Namespace | None,
             *addresses: str, addresses_b: tuple[str, ...] | None = None) -> Link:
        """Joins two namespaces with a veth pair and brings both ends up.

        Addresses alternate a, b, a, b... unless addresses_b is given, in which case all of
        `addresses` go to side a.
        """
        if addresses_b is None:
            side_a, side_b = tuple(addresses[0::2]), tuple(addresses[1::2])
        else:
            side_a, side_b = tuple(addresses), tuple(addresses_b)
        a, b = unique_name("va"), unique_name("vb")
        _ip("link", "add", a, "type", "veth", "peer", "name", b)
        for name, ns in ((a, ns_a), (b, ns_b)):
            if ns is None:
                self.host_links.append(name)
            else:
                _ip("link", "set", name, "netns", ns.name)
        for name, ns, cidrs in ((a, ns_a, side_a), (b, ns_b, side_b)):
            run = ns.run if ns else _host_run
            for cidr in cidrs:
                extra = ["nodad"] if ":" in cidr else []
                run(["ip", "addr", "add", cidr, "dev", name, *extra])
            run(["ip", "link", "set", name, "up"])
        return Link(a, b, ns_a, ns_b, side_a, side_b)

    def close(self) -> None:
        for name in self.host_links:
            _ip("link", "del", name, check=False)
        for ns in self.namespaces:
            _ip("netns", "del", ns.name, check=False)
        self.host_links.clear()
        self.namespaces.clear()


def _host_run(args: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise LabError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result
