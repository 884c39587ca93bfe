"""The HEP listener (fastban.hep_input) and its checks (fastban.hep_feed) on loopback sockets:
UDP and TCP, the senders, the key, damaged packets, the framing of a TCP stream."""

import socket
import threading
import time

import pytest

from fastban.config import load_settings
from fastban.hep_feed import HepFeed
from fastban.hep_input import MAX_CONNECTIONS, HepInput, HepInputError

from traces import hep3, sip_response

PEER = "203.0.113.9"
SERVER = "192.0.2.10"
CHALLENGE = sip_response(401, call_id="c1", branch="z9hG4bK1", via_host=PEER, via_port=41000,
                         transport="TLS")
GOOD = hep3(CHALLENGE, SERVER, PEER, 5061, 41000, ip_proto=6)


def free_port(kind=socket.SOCK_DGRAM, host="127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Listener:
    def __init__(self, host="127.0.0.1", **settings):
        self.port = free_port(host=host)
        listen = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.settings = load_settings(overrides={"hep_listen": listen, **settings})
        self.host = host
        self.received, self.arrived = [], threading.Event()
        self.input = HepInput(self.settings, self.deliver)

    def deliver(self, batch):
        self.received += batch
        self.arrived.set()

    def wait_for(self, count, what=lambda: None, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.received) >= count and what() is not False:
                return True
            time.sleep(0.01)
        return False

    def udp(self, *datagrams):
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            for data in datagrams:
                s.sendto(data, (self.host, self.port))

    def tcp(self):
        return socket.create_connection((self.host, self.port), timeout=5)


@pytest.fixture
def listener():
    made = []

    def make(**kw):
        item = Listener(**kw)
        item.input.start()
        made.append(item)
        return item
    yield make
    for item in made:
        item.input.stop()


def test_a_udp_hep_packet_becomes_a_segment_of_the_detection_path(listener):
    hep = listener()
    hep.udp(GOOD)
    assert hep.wait_for(1)
    [(at, segment)] = hep.received
    assert abs(at - time.time()) < 5
    assert (str(segment.src), str(segment.dst), segment.sport, segment.dport) == \
        (SERVER, PEER, 5061, 41000)
    assert segment.protocol == "hep" and segment.payload == CHALLENGE
    assert hep.input.figures()["messages"] == 1


def test_ipv6_listen_and_addresses(listener):
    hep = listener(host="::1")
    hep.udp(hep3(CHALLENGE, "2001:db8::10", "2001:db8:bad::9", 5061, 41000))
    assert hep.wait_for(1)
    assert str(hep.received[0][1].dst) == "2001:db8:bad::9"


def test_tcp_stream_split_anywhere_and_several_per_read(listener):
    hep = listener()
    stream = GOOD * 3
    with hep.tcp() as connection:
        pieces = [stream[:1], stream[1:5], stream[5:7], stream[7:len(GOOD) + 3],
                  stream[len(GOOD) + 3:]]
        for piece in pieces:
            connection.sendall(piece)
            time.sleep(0.02)
        assert hep.wait_for(3)
    assert [segment.payload for _, segment in hep.received] == [CHALLENGE] * 3
    assert hep.input.figures()["rejected"] == 0


def test_a_stream_that_cannot_be_framed_is_refused_and_closed(listener):
    hep = listener()
    with hep.tcp() as connection:
        connection.sendall(GOOD + b"GET / HTTP/1.1\r\n\r\n")
        connection.settimeout(5)
        assert connection.recv(10) == b""            # closed by the listener
    assert hep.wait_for(1, lambda: hep.input.figures()["rejected_framing"] == 1)
    assert len(hep.received) == 1


def test_damaged_packets_are_refused_by_reason_and_nothing_stops(listener):
    hep = listener()
    lying = GOOD[:4] + (len(GOOD) + 50).to_bytes(2, "big") + GOOD[6:]
    hep.udp(b"not hep at all", GOOD[:20], lying, b"HEP3\x00\x02", GOOD)
    assert hep.wait_for(1, lambda: hep.input.figures()["rejected"] == 4)
    figures = hep.input.figures()
    assert figures["rejected_not_hep"] == 1 and figures["received"] == 5
    assert figures["rejected_truncated"] + figures["rejected_length"] == 3
    assert len(hep.received) == 1


def test_senders_not_allowed_are_refused_over_udp_and_tcp(listener):
    hep = listener(hep_senders="10.0.0.0/8")
    hep.udp(GOOD, GOOD)
    with hep.tcp() as connection:
        connection.settimeout(5)
        try:
            connection.sendall(GOOD)
            assert connection.recv(10) == b""
        except ConnectionResetError:
            pass
    assert hep.wait_for(0, lambda: hep.input.figures()["rejected_sender"] == 3)
    assert hep.received == []


def test_a_wrong_or_missing_key_is_refused(listener):
    hep = listener(hep_auth_key="right-key")
    hep.udp(hep3(CHALLENGE, SERVER, PEER, 5061, 41000, auth_key=b"wrong-key"), GOOD,
            hep3(CHALLENGE, SERVER, PEER, 5061, 41000, auth_key=b"right-key"))
    assert hep.wait_for(1, lambda: hep.input.figures()["rejected_auth_key"] == 2)
    assert len(hep.received) == 1


def test_connections_are_capped(listener):
    hep = listener()
    connections = [hep.tcp() for _ in range(MAX_CONNECTIONS)]
    try:
        assert hep.wait_for(0, lambda: hep.input.figures()["connections"] == MAX_CONNECTIONS)
        extra = hep.tcp()
        extra.settimeout(5)
        assert extra.recv(10) == b""
        extra.close()
        assert hep.wait_for(0, lambda: hep.input.figures()["rejected_connections"] == 1)
        connections[0].sendall(GOOD)
        assert hep.wait_for(1)
    finally:
        for connection in connections:
            connection.close()


def test_the_guard_failing_does_not_end_the_listener(listener, caplog):
    hep = listener()
    calls = []

    def failing(batch):
        calls.append(batch)
        if len(calls) == 1:
            raise RuntimeError("boom")
        hep.deliver(batch)
    hep.input.deliver = failing
    hep.udp(GOOD)
    time.sleep(0.3)
    hep.udp(GOOD)
    assert hep.wait_for(1)


def test_a_taken_address_is_one_clear_error():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        settings = load_settings(overrides={"hep_listen": f"127.0.0.1:{port}"})
        with pytest.raises(HepInputError, match=f"hep_listen 127.0.0.1:{port}: cannot listen"):
            HepInput(settings, lambda batch: None)


def test_the_feed_alone_checks_the_sender_first():
    feed = HepFeed(load_settings(overrides={"hep_senders": "127.0.0.1 ::1"}))
    assert feed.datagram(GOOD, "127.0.0.1") is not None
    assert feed.datagram(GOOD, "127.0.0.2") is None
    assert feed.datagram(GOOD, "::ffff:127.0.0.1") is not None      # a v4-mapped sender
    assert feed.datagram(GOOD, "fe80::1%eth0") is None
    assert feed.datagram(b"junk", "not an address") is None
    assert feed.figures()["rejected_sender"] == 3 and feed.figures()["messages"] == 2


def test_an_unspecified_address_is_nobody_to_ban():
    """FreeSWITCH's IPv6 HEP names :: for both ends (sofia-sip fills the chunks from the wrong
    field): refused, not a ban of ::."""
    feed = HepFeed(load_settings())
    assert feed.datagram(hep3(CHALLENGE, "::", "::", 5061, 41000), "127.0.0.1") is None
    assert feed.datagram(hep3(CHALLENGE, SERVER, "0.0.0.0", 5061, 41000), "127.0.0.1") is None
    assert feed.figures()["rejected_no_address"] == 2 and feed.figures()["messages"] == 0
