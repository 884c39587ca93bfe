"""The admission under the server's capacity (bpf/admission.h) on the real kernel: with
sip_capacity set, untrusted SIP requests beyond it are dropped in XDP and counted, trusted
ones all pass and go first, whitelisted ones are not counted against it.

The traffic runs between this module's own namespaces (10.215.x, fd00:215::).
"""

from __future__ import annotations

import ipaddress
import socket
import time

import pytest

from fastban.abi import ABI
from fastban.dataplane import DataPlane
from fastban.lab import netns

NET = ipaddress.ip_network
SRV4, SRV6 = "10.215.0.1", "fd00:215::1"
TRUSTED4, UNTRUSTED4, WHITELISTED4 = "10.215.0.2", "10.215.0.3", "10.215.0.4"
TRUSTED6 = "fd00:215::2"
CAPACITY = 200            # requests/s: a 200-datagram burst is far beyond what it leaves
BURST = 200
# The bucket's clock runs at most this far ahead (a trusted surge); waited out between tests.
DRAIN = ABI["FB_ADMISSION_DEBT_MS"] / 1000 + 0.2
REQUEST = b"REGISTER sip:srv SIP/2.0\r\nCall-ID: %d@admission\r\n\r\n"


class Rig:
    def __init__(self, lab: netns.Lab):
        self.srv = lab.namespace("srv")
        self.cli = lab.namespace("cli")
        link = lab.link(self.srv, self.cli, f"{SRV4}/24", f"{TRUSTED4}/24",
                        f"{SRV6}/64", f"{TRUSTED6}/64")
        self.srv_if, self.cli_if = link.a, link.b
        for address in (UNTRUSTED4, WHITELISTED4):
            self.cli.run(["ip", "addr", "add", f"{address}/24", "dev", self.cli_if])
        # Static neighbours: no burst waits on (or is cut by) address resolution.
        srv_mac, cli_mac = (ns.run(["cat", f"/sys/class/net/{iface}/address"]).stdout.strip()
                            for ns, iface in ((self.srv, self.srv_if), (self.cli, self.cli_if)))
        for ns, iface, mac, addresses in (
                (self.srv, self.srv_if, cli_mac, (TRUSTED4, UNTRUSTED4, WHITELISTED4, TRUSTED6)),
                (self.cli, self.cli_if, srv_mac, (SRV4, SRV6))):
            for address in addresses:
                ns.run(["ip", "neigh", "replace", address, "lladdr", mac, "dev", iface,
                        "nud", "permanent"])
        self.receivers: dict[int, socket.socket] = {}

    def receiver(self, family: int) -> socket.socket:
        if family not in self.receivers:
            with self.srv.entered():
                sock = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET,
                                     socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind((SRV6 if family == 6 else SRV4, 5060))
            sock.setblocking(False)
            self.receivers[family] = sock
        return self.receivers[family]

    def requests(self, source: str, count: int = BURST) -> int:
        """Sends count SIP requests from source to the server's port 5060 as fast as it can;
        returns how many the server received."""
        family = ipaddress.ip_address(source).version
        rx = self.receiver(family)
        _drain(rx)
        with self.cli.entered():
            tx = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET,
                               socket.SOCK_DGRAM)
        with tx:
            tx.bind((source, 0))
            for i in range(count):
                tx.sendto(REQUEST % i, (SRV6 if family == 6 else SRV4, 5060))
        return _receive(rx, count)


def _drain(sock: socket.socket) -> None:
    while True:
        try:
            sock.recv(65535)
        except BlockingIOError:
            return


def _receive(sock: socket.socket, expected: int, wait: float = 0.5) -> int:
    got, deadline = 0, time.monotonic() + wait
    while time.monotonic() < deadline and got < expected:
        try:
            sock.recv(65535)
            got += 1
        except BlockingIOError:
            time.sleep(0.01)
    return got


@pytest.fixture(scope="module")
def rig(kernel):
    with netns.Lab() as lab:
        rig = Rig(lab)
        with rig.srv.entered():
            rig.dp = DataPlane(rig.srv_if, capture="egress")
        try:
            with rig.srv.entered():
                rig.dp.attach()
            yield rig
        finally:
            with rig.srv.entered():
                rig.dp.detach()
            rig.dp.close()
            for sock in rig.receivers.values():
                sock.close()


@pytest.fixture
def dp(rig):
    """Capacity CAPACITY, the trust and whitelist empty, the bucket drained."""
    dp = rig.dp
    for network in dp.trusted_networks():
        dp.untrust(network)
    for network in dp.whitelisted():
        dp.unwhitelist(network)
    dp.set_sip_capacity(CAPACITY)
    time.sleep(DRAIN)
    yield dp
    dp.set_sip_capacity(0)


def _delta(dp, before) -> dict:
    after = dp.counters()
    return {name: after[name] - before[name] for name in before}


def _trust(dp, network: str) -> None:
    dp.trust(NET(network), time.monotonic_ns() + 60 * 10**9)


def test_untrusted_requests_beyond_the_capacity_are_dropped_and_counted(dp, rig):
    before = dp.counters()
    received = rig.requests(UNTRUSTED4)
    delta = _delta(dp, before)
    assert 0 < received < BURST
    assert delta["over_capacity"] == BURST - received
    assert delta["trusted_admitted"] == 0


def test_with_no_capacity_set_every_request_passes(dp, rig):
    dp.set_sip_capacity(0)
    before = dp.counters()
    assert rig.requests(UNTRUSTED4) == BURST
    assert _delta(dp, before)["over_capacity"] == 0


@pytest.mark.parametrize("source, network", [(TRUSTED4, f"{TRUSTED4}/32"),
                                             (TRUSTED6, "fd00:215::/64")])
def test_trusted_requests_all_pass_and_go_first(dp, rig, source, network):
    _trust(dp, network)
    before = dp.counters()
    assert rig.requests(source) == BURST
    delta = _delta(dp, before)
    assert delta["trusted_admitted"] == BURST and delta["over_capacity"] == 0
    # The trusted burst took the capacity of the next second: an untrusted one gets nothing.
    assert rig.requests(UNTRUSTED4) == 0
    assert _delta(dp, before)["over_capacity"] == BURST


def test_lapsed_trust_is_no_trust(dp, rig):
    dp.trust(NET(f"{TRUSTED4}/32"), time.monotonic_ns() - 1)
    before = dp.counters()
    received = rig.requests(TRUSTED4)
    assert 0 < received < BURST
    assert _delta(dp, before)["trusted_admitted"] == 0


def test_whitelisted_requests_pass_and_take_nothing_from_the_capacity(dp, rig):
    dp.whitelist(NET(f"{WHITELISTED4}/32"))
    before = dp.counters()
    assert rig.requests(WHITELISTED4) == BURST
    assert _delta(dp, before)["over_capacity"] == 0
    assert rig.requests(UNTRUSTED4) > 0      # the bucket is as full as before
