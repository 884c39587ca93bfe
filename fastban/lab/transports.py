"""SIP over TLS and HEP in the lab (Transports is that part of SipLab): the TCP->TLS relay that
gives sipp (built here without TLS) a TLS leg, bare TCP and TLS connection attempts from an
attacker, and a HEP collector in the server's namespace.

The relay (TlsRelay): socat in the client's namespace, listening on the client's own address
at a port of the lab's choosing and opening, for each TCP connection sipp makes to it, one TLS
connection to the server's TLS_PORT (no certificate check: the lab's is self-signed). sipp runs
over TCP (-t t1 / tn) to the relay; the server sees the TLS connection from the client's
address and a port of socat's, and answers over it, so its answers come back to sipp through
the relay. The relay starts before sipp, stops when sipp ends or is stopped (and with the
lab), and cannot outlive its bound: it runs under `timeout`.

The collector (HepCollector): a socket the lab opens in the server's namespace on hep_to
(UDP datagrams, or a TCP listener whose stream is cut at each HEPv3 header's length), kept
here as the bytes received; nothing is decoded beyond that length.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import threading
import time
from pathlib import Path

from fastban.lab import netns
from fastban.lab.clients import _Background
from fastban.lab.plan import SIP_PORT, TLS_PORT, SipLabError, _uri_host

RELAY_PORTS = (15000, 29999)       # the relays' listening ports, below the ephemeral range


class TlsRelay(_Background):
    """socat in a client namespace: TCP on (local, port) -> TLS to (server, TLS_PORT)."""

    def __init__(self, ns: netns.Namespace, workdir: Path, local: str, port: int,
                 server: str, bound: float):
        self.local, self.port, self.server = local, port, server
        v6 = ":" in local
        listen = (f"TCP{'6' if v6 else '4'}-LISTEN:{port},bind={_uri_host(local)},reuseaddr,"
                  f"fork,backlog=64")
        connect = (f"OPENSSL:{_uri_host(server)}:{TLS_PORT},verify=0,"
                   f"pf={'ip6' if v6 else 'ip4'},bind={_uri_host(local)}")
        super().__init__(ns, workdir, ["timeout", "-s", "TERM", "-k", "2", f"{bound:.0f}",
                                       "socat", "-d", "-d", listen, connect],
                         bound, output="relay.out")
        self.program = "socat"

    def wait_listening(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "listening on" in self.output():
                return
            if not self.running():
                raise SipLabError(f"the TLS relay (socat) exited with {self.proc.returncode}: "
                                  f"{self.output()[-1500:]}")
            time.sleep(0.02)
        self.stop_process()
        raise SipLabError(f"the TLS relay (socat) did not listen within {timeout} s")

    def connections(self) -> int:
        """How many TCP connections it accepted (and relayed) so far."""
        return self.output().count("accepting connection from")


class HepCollector:
    """A HEP collector socket in the server's namespace; packets() is what it received."""

    def __init__(self, ns: netns.Namespace, transport: str, address: str, port: int):
        if transport not in ("udp", "tcp"):
            raise SipLabError("a collector's transport is 'udp' or 'tcp'")
        self.transport, self.address, self.port = transport, address, port
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        with ns.entered():                     # a socket stays in the namespace it was made in
            self._sock = socket.socket(family, kind)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if transport == "udp":
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self._sock.bind((address, port))
            if transport == "tcp":
                self._sock.listen(16)
        except OSError:
            self._sock.close()
            raise
        self._lock = threading.Lock()
        self._packets: list[bytes] = []
        self._peers: set[tuple] = set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hep-collector", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._sock, selectors.EVENT_READ, None)
        streams: dict[socket.socket, bytearray] = {}
        try:
            while not self._stopping.is_set():
                for key, _ in selector.select(timeout=0.1):
                    sock = key.fileobj
                    if self.transport == "udp":
                        data, peer = sock.recvfrom(65535)
                        self._add([data], peer)
                    elif sock is self._sock:
                        conn, peer = sock.accept()
                        conn.setblocking(False)
                        streams[conn] = bytearray()
                        selector.register(conn, selectors.EVENT_READ, peer)
                    else:
                        try:
                            data = sock.recv(65536)
                        except OSError:
                            data = b""
                        buffer = streams[sock]
                        buffer += data
                        self._add(_frames(buffer, final=not data), key.data)
                        if not data:
                            selector.unregister(sock)
                            sock.close()
                            del streams[sock]
        finally:
            for conn in streams:
                conn.close()
            selector.close()

    def _add(self, packets: list[bytes], peer) -> None:
        with self._lock:
            self._packets.extend(packets)
            self._peers.add(peer)

    def packets(self) -> list[bytes]:
        """Every HEP packet received so far (for TCP: the stream cut at each HEP3 length; bytes
        that do not start a HEP3 header are kept as one packet, so they show)."""
        with self._lock:
            return list(self._packets)

    def peers(self) -> set[tuple]:
        """The (address, port, ...) the packets came from (Kamailio's sockets)."""
        with self._lock:
            return set(self._peers)

    def containing(self, *needles: bytes) -> list[bytes]:
        """The packets holding every one of `needles`."""
        return [p for p in self.packets() if all(n in p for n in needles)]

    def wait_for(self, *needles: bytes, count: int = 1, timeout: float = 5.0) -> list[bytes]:
        """The packets holding every one of `needles` once there are `count` of them; what
        there is after `timeout` seconds otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.containing(*needles)
            if len(found) >= count or time.monotonic() >= deadline:
                return found
            time.sleep(0.05)

    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> list[bytes]:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._sock.close()
        return self.packets()

    def __enter__(self) -> HepCollector:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _frames(buffer: bytearray, final: bool) -> list[bytes]:
    """Cuts the whole HEP3 packets off the front of a TCP stream's buffer."""
    out = []
    while len(buffer) >= 6:
        length = int.from_bytes(buffer[4:6], "big")
        if buffer[:4] != b"HEP3" or length < 6:
            out.append(bytes(buffer))          # not HEP3: kept whole, for the test to see
            buffer.clear()
            break
        if len(buffer) < length:
            break
        out.append(bytes(buffer[:length]))
        del buffer[:length]
    if final and buffer:
        out.append(bytes(buffer))
        buffer.clear()
    return out


class Transports:
    """The TLS and HEP part of SipLab. Uses the lab's tls, hep_to, hep_transport,
    server_namespace, server_address, attacker namespaces, _workdir, _run_counter and
    _clients."""

    def _start_tls_relay(self, ns: netns.Namespace, local: str, family: int,
                         bound: float) -> TlsRelay:
        """A relay from (local, a fresh port) to the server's TLS port, listening."""
        low, high = RELAY_PORTS
        port = low + self._run_counter % (high - low + 1)
        relay = TlsRelay(ns, self._workdir("tls-relay"), local, port,
                         self.server_address(family), bound)
        self._clients.append(relay)
        relay.wait_listening()
        return relay

    def tls_connect(self, index: int = 0, timeout: float = 2.0, family: int = 4,
                    port: int = TLS_PORT) -> bool:
        """Whether attacker `index` gets a TLS connection to the server's `port` (TCP
        handshake and TLS handshake, no certificate check) within `timeout` seconds."""
        if not self.tls and port == TLS_PORT:
            raise SipLabError("the lab's server has no TLS (tls=True)")
        return self._connect_from(index, family, port, timeout, tls=True)

    def tcp_connect(self, index: int = 0, timeout: float = 2.0, family: int = 4,
                    port: int = SIP_PORT) -> bool:
        """Whether attacker `index` gets a TCP connection to the server's `port` within
        `timeout` seconds."""
        return self._connect_from(index, family, port, timeout, tls=False)

    def _connect_from(self, index: int, family: int, port: int, timeout: float,
                      tls: bool) -> bool:
        local = self.attacker_address(index, family)
        server = self.server_address(family)
        deadline = time.monotonic() + timeout
        with self._attackers[index].entered():
            sock = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET,
                                 socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.bind((local, 0))
            sock.connect((server, port))
            if not tls:
                return True
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            with context.wrap_socket(sock) as wrapped:
                return wrapped.version() is not None
        except (OSError, ssl.SSLError):
            return False
        finally:
            sock.close()

    def start_hep_collector(self, transport: str | None = None) -> HepCollector:
        """A HEP collector listening on the lab's hep_to in the server's namespace, over the
        lab's hep_transport unless `transport` says otherwise; stopped with the lab, or by
        stop() (it is a context manager too). Start it before the traffic it should see: over
        TCP, Kamailio connects on the first message it mirrors."""
        if self.hep_address is None:
            raise SipLabError("the lab has no HEP collector address (hep_to)")
        address, port = self.hep_address
        collector = HepCollector(self.server_namespace, transport or self.hep_transport,
                                 address, port)
        self._clients.append(collector)
        return collector
