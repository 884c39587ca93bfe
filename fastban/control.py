"""The control protocol between the CLI and a running guard: msgpack over a root-only Unix socket.

Each side writes one msgpack map per message; msgpack is self-delimiting, so the stream needs no
other framing. A request is {"op": NAME, ...arguments}; the answer is {"ok": true, "result": ...}
or {"ok": false, "error": "one line for the user"}. A long answer (the list of a million bans)
comes as a stream: {"ok": true, "items": [...], "more": true} messages of at most STREAM_CHUNK
items, the last with "more": false. One connection may carry many requests.
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading
from typing import Callable

import msgpack

MAX_MESSAGE = 64 * 1024 * 1024
STREAM_CHUNK = 10_000


class ControlError(Exception):
    pass


class NotRunning(ControlError):
    pass


class Stream:
    """A handler's answer sent in chunks, produced after the handler's lock is released (so a
    long listing does not hold up the guard)."""

    def __init__(self, items):
        self.items = items


def _read_message(sock: socket.socket, unpacker: msgpack.Unpacker):
    while True:
        for message in unpacker:
            return message
        chunk = sock.recv(65536)
        if not chunk:
            return None
        unpacker.feed(chunk)


def _new_unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(raw=False, max_buffer_size=MAX_MESSAGE, strict_map_key=False)


class Client:
    def __init__(self, path: str, timeout: float = 10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as error:
            self.sock.close()
            raise NotRunning(f"no guard is listening on {path}") from error
        except PermissionError as error:
            self.sock.close()
            raise ControlError(f"{path}: permission denied (the control socket is root-only)") \
                from error
        self.unpacker = _new_unpacker()

    def call(self, op: str, **arguments):
        self.sock.sendall(msgpack.packb({"op": op, **arguments}, use_bin_type=True))
        reply = self._reply()
        if "items" in reply:
            return [*reply["items"], *self._rest(reply)]
        return reply.get("result")

    def stream(self, op: str, **arguments):
        """The items of a streamed answer, as they arrive."""
        self.sock.sendall(msgpack.packb({"op": op, **arguments}, use_bin_type=True))
        reply = self._reply()
        if "items" not in reply:
            yield from reply.get("result") or ()
            return
        yield from reply["items"]
        yield from self._rest(reply)

    def _rest(self, reply):
        while reply.get("more"):
            reply = self._reply()
            yield from reply["items"]

    def _reply(self) -> dict:
        reply = _read_message(self.sock, self.unpacker)
        if reply is None:
            raise ControlError("the guard closed the connection")
        if not isinstance(reply, dict) or not reply.get("ok"):
            raise ControlError(reply.get("error", "request failed") if isinstance(reply, dict)
                               else "a malformed answer")
        return reply

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


Handler = Callable[[dict], object]


class Server:
    """Serves requests on a Unix socket from a background thread.

    `handle(request)` returns the result or raises ControlError (or ValueError) whose text is
    sent back as the error; it is called with `lock` held, so handlers and the guard's main
    loop can share state safely.
    """

    def __init__(self, path: str, handle: Handler, lock: threading.Lock):
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, mode=0o700, exist_ok=True)
        if os.path.exists(path):
            _refuse_if_live(path)
            os.unlink(path)
        outer = self

        class _Connection(socketserver.BaseRequestHandler):
            def handle(self):
                unpacker = _new_unpacker()
                while True:
                    try:
                        request = _read_message(self.request, unpacker)
                    except (OSError, ValueError):
                        return
                    if request is None:
                        return
                    reply = outer._answer(request)
                    if isinstance(reply, Stream):
                        outer._send_stream(self.request, reply)
                    else:
                        self.request.sendall(msgpack.packb(reply, use_bin_type=True))

        old_umask = os.umask(0o177)
        try:
            self._server = socketserver.ThreadingUnixStreamServer(path, _Connection)
        finally:
            os.umask(old_umask)
        self._server.daemon_threads = True
        self._handle, self._lock = handle, lock
        self._thread = threading.Thread(target=self._server.serve_forever, name="control",
                                        daemon=True)

    def _answer(self, request) -> dict:
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return {"ok": False, "error": "a request is a map with an 'op'"}
        try:
            with self._lock:
                result = self._handle(request)
        except (ControlError, ValueError) as error:
            return {"ok": False, "error": str(error)}
        return result if isinstance(result, Stream) else {"ok": True, "result": result}

    @staticmethod
    def _send_stream(sock, stream: Stream) -> None:
        chunk = []
        try:
            for item in stream.items:
                chunk.append(item)
                if len(chunk) == STREAM_CHUNK:
                    sock.sendall(msgpack.packb({"ok": True, "items": chunk, "more": True},
                                               use_bin_type=True))
                    chunk = []
        except (ControlError, ValueError) as error:
            sock.sendall(msgpack.packb({"ok": False, "error": str(error)}, use_bin_type=True))
            return
        sock.sendall(msgpack.packb({"ok": True, "items": chunk, "more": False},
                                   use_bin_type=True))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _refuse_if_live(path: str) -> None:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return
    finally:
        probe.close()
    raise ControlError(f"another guard is already listening on {path}")
