"""The per-source rate limit of SIP requests in XDP (bpf/rate_limit.h), on the real kernel.

A server namespace guarded by a DataPlane and a client namespace with many addresses (10.213.x,
fd00:213::); each test sends from addresses of its own, so the buckets of one test never
carry into another.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time

import pytest

from fastban import cli
from fastban.dataplane import DataPlane
from fastban.lab import netns

IP = ipaddress.ip_address
SRV4, SRV6 = "10.213.0.1", "fd00:213::1"
CLI4 = [f"10.213.0.{n}" for n in range(2, 14)]
CLI6 = [f"fd00:213::{n}" for n in range(2, 6)]
SIP = 5060
REGISTER = b"REGISTER sip:example.test SIP/2.0\r\nContent-Length: 0\r\n\r\n"


def _mac(ns: netns.Namespace, iface: str) -> str:
    return ns.run(["cat", f"/sys/class/net/{iface}/address"]).stdout.strip()


class Rig:
    def __init__(self, lab: netns.Lab):
        self.srv, self.cli = lab.namespace("rlsrv"), lab.namespace("rlcli")
        link = lab.link(self.srv, self.cli, f"{SRV4}/24", f"{CLI4[0]}/24", f"{SRV6}/64",
                        f"{CLI6[0]}/64")
        self.srv_if, cli_if = link.a, link.b
        for address in CLI4[1:]:
            self.cli.run(["ip", "addr", "add", f"{address}/24", "dev", cli_if])
        for address in CLI6[1:]:
            self.cli.run(["ip", "addr", "add", f"{address}/64", "dev", cli_if, "nodad"])
        # Static neighbours: no ARP/ND in the counts.
        srv_mac, cli_mac = _mac(self.srv, self.srv_if), _mac(self.cli, cli_if)
        for address in CLI4 + CLI6:
            self.srv.run(["ip", "neigh", "replace", address, "lladdr", cli_mac, "dev",
                          self.srv_if, "nud", "permanent"])
        for address in (SRV4, SRV6):
            self.cli.run(["ip", "neigh", "replace", address, "lladdr", srv_mac, "dev", cli_if,
                          "nud", "permanent"])
        self.receivers: dict[int, socket.socket] = {}

    def receiver(self, family: int) -> socket.socket:
        if family not in self.receivers:
            with self.srv.entered():
                sock = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET,
                                     socket.SOCK_DGRAM)
            sock.bind((SRV6 if family == 6 else SRV4, SIP))
            sock.setblocking(False)
            self.receivers[family] = sock
        return self.receivers[family]

    def send(self, source: str, count: int, payload: bytes = REGISTER,
             interval: float = 0.0) -> int:
        """Sends count datagrams from source to the SIP port, interval seconds apart; returns
        how many the server received."""
        family = IP(source).version
        rx = self.receiver(family)
        _drain(rx)
        with self.cli.entered():
            tx = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET,
                               socket.SOCK_DGRAM)
        got = 0
        with tx:
            tx.bind((source, 0))
            started = time.monotonic()
            for _ in range(count):
                tx.sendto(payload, (SRV6 if family == 6 else SRV4, SIP))
                if interval:
                    time.sleep(interval)
                    got += _drain(rx)
            self.sending_took = time.monotonic() - started
        return got + _receive(rx, count - got)


def _drain(sock: socket.socket) -> int:
    got = 0
    while True:
        try:
            sock.recv(65535)
            got += 1
        except BlockingIOError:
            return got


def _receive(sock: socket.socket, expected: int, wait: float = 0.4) -> int:
    got = 0
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and got < expected:
        got += _drain(sock)
        time.sleep(0.01)
    return got


@pytest.fixture(scope="module")
def rig(kernel):
    with netns.Lab() as lab:
        rig = Rig(lab)
        with rig.srv.entered():
            rig.dp = DataPlane(rig.srv_if, capture="none")
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
    """The rig's DataPlane with no limit, whitelist or trust to start with."""
    dp = rig.dp
    dp.set_rate_limit(0)
    for network in dp.whitelisted():
        dp.unwhitelist(network)
    for network in dp.trusted_networks():
        dp.untrust(network)
    yield dp
    dp.set_rate_limit(0)


def _limited_of(dp, address: str) -> int:
    return sum(source.limited for source in dp.limited_sources() if source.address == IP(address))


def test_a_flood_gets_the_burst_through_and_is_counted(rig, dp):
    dp.set_rate_limit(2, burst=5)
    before = dp.kernel_counters()["rate_limited"]
    passed = rig.send(CLI4[1], 40)
    assert 5 <= passed <= 6           # the burst, and at most one more refilled meanwhile
    assert dp.kernel_counters()["rate_limited"] - before == 40 - passed
    assert _limited_of(dp, CLI4[1]) == 40 - passed


def test_a_source_over_its_rate_gets_the_rate_through(rig, dp):
    rate, burst = 10, 3
    dp.set_rate_limit(rate, burst)
    passed = rig.send(CLI4[2], 50, interval=0.02)        # about 50/s, five times the rate
    elapsed = rig.sending_took
    # the last interval's sleep comes after the last datagram: up to one refill less
    assert burst + rate * elapsed - 2 <= passed <= burst + rate * elapsed + 1
    assert _limited_of(dp, CLI4[2]) == 50 - passed


def test_a_source_under_its_rate_is_never_limited(rig, dp):
    dp.set_rate_limit(10, burst=1)                       # one request every 100 ms
    assert rig.send(CLI4[3], 8, interval=0.15) == 8
    assert _limited_of(dp, CLI4[3]) == 0


def test_the_default_burst_is_twice_the_rate(rig, dp):
    dp.set_rate_limit(4)
    assert dp.rate_limit() == (4, 8)
    assert rig.send(CLI4[4], 30) in (8, 9)


def test_whitelisted_and_trusted_sources_are_never_limited(rig, dp):
    dp.set_rate_limit(1, burst=1)
    dp.whitelist(ipaddress.ip_network("10.213.0.5/32"))
    dp.trust(IP(CLI4[5]), time.monotonic_ns() + 60 * 10**9)
    dp.trust(IP(CLI6[1]), time.monotonic_ns() + 60 * 10**9)
    before = dp.kernel_counters()["rate_limited"]
    assert rig.send("10.213.0.5", 30) == 30
    assert rig.send(CLI4[5], 30) == 30
    assert rig.send(CLI6[1], 30) == 30
    assert dp.kernel_counters()["rate_limited"] == before
    # lapsed trust is no exemption
    dp.trust(IP(CLI4[6]), time.monotonic_ns() - 1)
    assert rig.send(CLI4[6], 30) == 1


def test_ipv6_sources_are_limited_each_on_its_own(rig, dp):
    dp.set_rate_limit(1, burst=2)
    assert rig.send(CLI6[2], 20) == 2
    assert rig.send(CLI6[3], 20) == 2
    assert _limited_of(dp, CLI6[2]) == _limited_of(dp, CLI6[3]) == 18


def test_keep_alives_and_other_ports_are_not_limited(rig, dp):
    dp.set_rate_limit(1, burst=1)
    before = dp.kernel_counters()["rate_limited"]
    assert rig.send(CLI4[7], 30, payload=b"\r\n\r\n") == 30
    assert dp.kernel_counters()["rate_limited"] == before
    assert rig.send(CLI4[7], 5) == 1                     # the same source's requests are


def test_new_tcp_connections_are_limited(rig, dp):
    dp.set_rate_limit(1, burst=3)
    with rig.srv.entered():
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    clients = []
    try:
        listener.bind((SRV4, SIP))
        listener.listen(64)
        listener.settimeout(0.3)
        with rig.cli.entered():
            for _ in range(10):
                client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                clients.append(client)
                client.bind((CLI4[8], 0))
                client.setblocking(False)
                client.connect_ex((SRV4, SIP))
        accepted = 0
        with pytest.raises(TimeoutError):
            for _ in range(10):          # bounded: stops at the first 0.3 s without one
                listener.accept()[0].close()
                accepted += 1
        assert accepted == 3
        assert _limited_of(dp, CLI4[8]) == 7
    finally:
        for client in clients:
            client.close()
        listener.close()


def test_no_limit_by_default(rig, dp):
    assert dp.rate_limit() == (0, 0)
    assert rig.send(CLI4[9], 40) == 40
    assert _limited_of(dp, CLI4[9]) == 0



def test_fastban_limited_reads_the_pinned_table_with_no_guard(rig, dp, capsys, tmp_path):
    dp.set_rate_limit(3, burst=4)
    assert rig.send(CLI4[10], 25) == 4
    config = tmp_path / "fastban.toml"
    config.write_text(f'control_socket = "{tmp_path}/none.sock"\n')
    assert cli.main(["limited", "--iface", rig.srv_if, "--config", str(config), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["rate_limit"], shown["rate_limit_burst"]) == (3, 4)
    rows = {row["address"]: row for row in shown["sources"]}
    assert rows[CLI4[10]]["requests_dropped"] == 21
    assert 0 <= rows[CLI4[10]]["seconds_since_last"] < 5
    assert cli.main(["limited", "--iface", rig.srv_if, "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert "rate limit: 3 requests/s per source, burst 4" in text
    assert any(line.split()[:2] == [CLI4[10], "21"] for line in text.splitlines())
