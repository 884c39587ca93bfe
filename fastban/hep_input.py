"""The HEP listener of `fastban run`: HEPv3 over UDP and TCP on ``hep_listen``.

One thread waits on the UDP socket, the TCP listening socket and the TCP connections
(selectors), takes every datagram waiting (up to BATCH) and every complete packet of the
connections, checks and decodes them (fastban.hep_feed) and hands the segments, each with
the wall time of its arrival, to ``deliver`` at once: the guard runs them through the same
detection path as the packets of the wire (fastban.detection).

Bounded: at most MAX_CONNECTIONS TCP connections (a further one is closed and counted
``connections``), a connection from a sender not in ``hep_senders`` is closed at once
(``sender``), and a connection's buffer never holds more than one HEP packet's worth
(65,535 bytes) besides what it has just read.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from typing import Callable

from fastban.config import parse_listen
from fastban.hep_feed import HepFeed

log = logging.getLogger("fastban")

BATCH = 1024                 # datagrams read before the batch is handed over
RECEIVE_BUFFER = 8 << 20     # the UDP socket's buffer (bytes): bursts wait there, not lost
MAX_CONNECTIONS = 64
WAIT_SECONDS = 0.2           # how often the thread looks whether it should stop
READ_SIZE = 65536


class HepInputError(Exception):
    """The listener cannot start (one line for the user)."""


class HepInput:
    def __init__(self, settings, deliver: Callable[[list], None]):
        self.feed = HepFeed(settings)
        self.deliver = deliver
        self.listen = settings.hep_listen
        host, port = parse_listen(settings.hep_listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.udp = socket.socket(family, socket.SOCK_DGRAM)
        self.tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            _grow_buffer(self.udp)
            self.udp.bind((host, port))
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.tcp.bind((host, port))
            self.tcp.listen(16)
        except OSError as error:
            self.udp.close()
            self.tcp.close()
            raise HepInputError(f"hep_listen {settings.hep_listen}: cannot listen "
                                f"({error.strerror or error})") from None
        self.udp.setblocking(False)
        self.tcp.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.udp, selectors.EVENT_READ, "udp")
        self.selector.register(self.tcp, selectors.EVENT_READ, "accept")
        self.connections: dict[socket.socket, bytearray] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fastban-hep", daemon=True)

    @property
    def address(self) -> tuple:
        return self.udp.getsockname()[:2]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for sock in (*self.connections, self.udp, self.tcp):
            sock.close()
        self.selector.close()

    def reconfigure(self, settings) -> None:
        """New senders and key apply at once; a new address when fastban run restarts."""
        self.feed.reconfigure(settings)
        if settings.hep_listen != self.listen:
            log.warning("hep_listen changed: it applies when fastban run restarts")

    def figures(self) -> dict:
        return {"listen": self.listen, "connections": len(self.connections),
                **self.feed.figures()}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                events = self.selector.select(WAIT_SECONDS)
            except OSError:
                break
            segments: list = []
            for key, _ in events:
                if key.data == "udp":
                    self._datagrams(segments)
                elif key.data == "accept":
                    self._accept()
                else:
                    self._read(key.fileobj, segments)
            if segments:
                now = time.time()
                try:
                    self.deliver([(now, segment) for segment in segments])
                except Exception:          # the guard's trouble must not end the listener
                    log.exception("the guard failed on %d HEP messages", len(segments))

    def _datagrams(self, segments: list) -> None:
        feed, udp = self.feed, self.udp
        for _ in range(BATCH):
            try:
                data, sender = udp.recvfrom(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            segment = feed.datagram(data, sender[0])
            if segment is not None:
                segments.append(segment)

    def _accept(self) -> None:
        try:
            connection, peer = self.tcp.accept()
        except OSError:
            return
        if not self.feed.allowed(peer[0]):
            self.feed.refuse("sender")
            connection.close()
            return
        if len(self.connections) >= MAX_CONNECTIONS:
            self.feed.refuse("connections")
            connection.close()
            return
        connection.setblocking(False)
        self.connections[connection] = bytearray()
        self.selector.register(connection, selectors.EVENT_READ, "tcp")

    def _read(self, connection: socket.socket, segments: list) -> None:
        buffer = self.connections[connection]
        try:
            data = connection.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(connection)
            return
        buffer += data
        found, framed = self.feed.stream(buffer)
        segments += found
        if not framed:
            self._close(connection)

    def _close(self, connection: socket.socket) -> None:
        self.selector.unregister(connection)
        del self.connections[connection]
        connection.close()


def _grow_buffer(sock: socket.socket) -> None:
    """As root SO_RCVBUFFORCE passes net.core.rmem_max; else the most the kernel allows."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except (OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
