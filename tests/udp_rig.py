"""A server namespace guarded by a DataPlane and a client namespace with many addresses, for the
data plane's kernel tests: datagrams sent from any client address, counted as the server's
socket receives them.

    rig = UdpRig(lab, SRV4, SRV6, CLI4, CLI6, port=5060, payload=REGISTER)
    with guarded(rig, capture="none"):
        rig.send(CLI4[1], 40)          # how many of 40 datagrams the server received

Neighbours are static on both sides, so no ARP or ND traffic is dropped by a ban, waited on by
a burst or seen in the counters.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from contextlib import contextmanager

from fastban.dataplane import DataPlane
from fastban.lab import netns


def _mac(ns: netns.Namespace, iface: str) -> str:
    return ns.run(["cat", f"/sys/class/net/{iface}/address"]).stdout.strip()


def drain(sock: socket.socket) -> int:
    """Reads what is waiting on a non-blocking socket; returns how many datagrams."""
    got = 0
    while True:
        try:
            sock.recv(65535)
            got += 1
        except BlockingIOError:
            return got


def receive(sock: socket.socket, expected: int, wait: float = 0.4) -> int:
    """Datagrams received until expected arrived or wait seconds passed."""
    got, deadline = 0, time.monotonic() + wait
    while time.monotonic() < deadline and got < expected:
        got += drain(sock)
        if got < expected:
            time.sleep(0.01)
    return got


class UdpRig:
    def __init__(self, lab: netns.Lab, server4: str, server6: str, clients4: list,
                 clients6: list, *, port: int = 7000, payload: bytes = b"probe %d"):
        """The link carries server4/24, server6/64 and the first client address of each
        family; the other client addresses are added to the client's side. ``port`` and
        ``payload`` are send()'s defaults."""
        self.srv, self.cli = lab.namespace("srv"), lab.namespace("cli")
        self.servers = {4: server4, 6: server6}
        self.link = lab.link(self.srv, self.cli, f"{server4}/24", f"{clients4[0]}/24",
                             f"{server6}/64", f"{clients6[0]}/64")
        self.srv_if, self.cli_if = self.link.a, self.link.b
        for address in clients4[1:]:
            self.cli.run(["ip", "addr", "add", f"{address}/24", "dev", self.cli_if])
        for address in clients6[1:]:
            self.cli.run(["ip", "addr", "add", f"{address}/64", "dev", self.cli_if, "nodad"])
        self.srv_mac, self.cli_mac = _mac(self.srv, self.srv_if), _mac(self.cli, self.cli_if)
        for ns, iface, mac, addresses in (
                (self.srv, self.srv_if, self.cli_mac, [*clients4, *clients6]),
                (self.cli, self.cli_if, self.srv_mac, [server4, server6])):
            for address in addresses:
                ns.run(["ip", "neigh", "replace", address, "lladdr", mac, "dev", iface,
                        "nud", "permanent"])
        self.port, self.payload = port, payload
        self.receivers: dict[tuple[int, int], socket.socket] = {}
        self.dp: DataPlane | None = None
        self.sending_took = 0.0

    def receiver(self, family: int, port: int | None = None) -> socket.socket:
        """The server's socket on port (send()'s default port if None)."""
        port = self.port if port is None else port
        if (family, port) not in self.receivers:
            with self.srv.entered():
                sock = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET,
                                     socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind((self.servers[family], port))
            sock.setblocking(False)
            self.receivers[(family, port)] = sock
        return self.receivers[(family, port)]

    def send(self, source: str, count: int = 5, *, port: int | None = None,
             payload: bytes | None = None, interval: float = 0.0) -> int:
        """Sends count datagrams from source (a client address) to the server, interval
        seconds apart (as fast as it can with 0); returns how many the server received. A
        payload holding %d gets each datagram's number."""
        family = ipaddress.ip_address(source).version
        port = self.port if port is None else port
        payload = self.payload if payload is None else payload
        rx = self.receiver(family, port)
        drain(rx)
        with self.cli.entered():
            tx = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET,
                               socket.SOCK_DGRAM)
        got, numbered = 0, b"%d" in payload
        with tx:
            tx.bind((source, 0))
            started = time.monotonic()
            for i in range(count):
                tx.sendto(payload % i if numbered else payload, (self.servers[family], port))
                if interval:
                    time.sleep(interval)
                    got += drain(rx)
            self.sending_took = time.monotonic() - started
        return got + receive(rx, count - got)

    def close(self) -> None:
        for sock in self.receivers.values():
            sock.close()
        self.receivers.clear()


@contextmanager
def guarded(rig: UdpRig, capture: str):
    """The rig's server with a DataPlane attached (rig.dp, rig.mode: the XDP mode), detached
    and closed, with the rig's sockets, at the end."""
    with rig.srv.entered():
        rig.dp = DataPlane(rig.srv_if, capture=capture)
    try:
        with rig.srv.entered():
            rig.mode = rig.dp.attach()
        yield rig
    finally:
        with rig.srv.entered():
            rig.dp.detach()
        rig.dp.close()
        rig.close()


@contextmanager
def small_plane(subnet: str, pin_root: str):
    """A DataPlane of 64 bans, generic XDP, on the server's side of a link between two fresh
    namespaces (the server .1, the client .2 of the /24 subnet, e.g. "10.240.0"), pinned under
    its own pin_root, which is removed at the end."""
    with netns.Lab() as lab:
        server = lab.namespace("srv")
        link = lab.link(server, lab.namespace("cli"), f"{subnet}.1/24", f"{subnet}.2/24")
        with server.entered():
            plane = DataPlane(link.a, capacity=64, pin_root=pin_root)
            plane.attach("generic")
        try:
            yield plane
        finally:
            with server.entered():
                plane.detach()
            os.rmdir(pin_root)
