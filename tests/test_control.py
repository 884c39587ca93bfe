import os
import stat
import threading

import msgpack
import pytest

from fastban import control


def serve(tmp_path, handle):
    server = control.Server(str(tmp_path / "run" / "control.sock"), handle, threading.Lock())
    server.start()
    return server


def echo_or_fail(request):
    if request["op"] == "echo":
        return {"got": request["value"]}
    raise control.ControlError(f"unknown operation {request['op']!r}")


def test_requests_and_errors_round_trip_on_one_connection(tmp_path):
    server = serve(tmp_path, echo_or_fail)
    try:
        with control.Client(server.path) as client:
            assert client.call("echo", value=[1, "two", b"three"]) == {"got": [1, "two", b"three"]}
            with pytest.raises(control.ControlError, match="unknown operation 'nope'"):
                client.call("nope")
            assert client.call("echo", value=4) == {"got": 4}
    finally:
        server.stop()
    assert not os.path.exists(server.path)


def test_socket_is_root_only(tmp_path):
    server = serve(tmp_path, echo_or_fail)
    try:
        assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
    finally:
        server.stop()


def test_large_answer_arrives_whole(tmp_path):
    rows = [{"target": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32", "hits": i}
            for i in range(100_000)]
    server = serve(tmp_path, lambda request: rows)
    try:
        with control.Client(server.path) as client:
            assert client.call("list") == rows
    finally:
        server.stop()


def test_malformed_request_gets_an_error_not_a_crash(tmp_path):
    server = serve(tmp_path, echo_or_fail)
    try:
        client = control.Client(server.path)
        client.sock.sendall(msgpack.packb([1, 2, 3]))
        reply = control._read_message(client.sock, control._new_unpacker())
        assert reply == {"ok": False, "error": "a request is a map with an 'op'"}
        client.close()
        with control.Client(server.path) as again:
            assert again.call("echo", value=1) == {"got": 1}
    finally:
        server.stop()


def test_no_guard_running_is_a_clear_error(tmp_path):
    with pytest.raises(control.NotRunning, match="no guard is listening"):
        control.Client(str(tmp_path / "absent.sock"))


def test_a_second_server_on_a_live_socket_is_refused_a_stale_one_replaced(tmp_path):
    server = serve(tmp_path, echo_or_fail)
    try:
        with pytest.raises(control.ControlError, match="already listening"):
            control.Server(server.path, echo_or_fail, threading.Lock())
    finally:
        server.stop()
    stale = tmp_path / "run" / "control.sock"
    import socket
    left = socket.socket(socket.AF_UNIX)
    left.bind(str(stale))
    left.close()
    replacement = serve(tmp_path, echo_or_fail)
    try:
        with control.Client(replacement.path) as client:
            assert client.call("echo", value="x") == {"got": "x"}
    finally:
        replacement.stop()


def test_a_long_answer_comes_in_chunks_made_after_the_lock_is_released(tmp_path, monkeypatch):
    monkeypatch.setattr(control, "STREAM_CHUNK", 7)
    lock = threading.Lock()
    seen_locked = []

    def rows():
        for n in range(30):
            seen_locked.append(lock.locked())
            yield {"n": n}

    def handle(request):
        if request["op"] == "fail":
            def failing():
                yield {"n": 0}
                raise control.ControlError("the maps went away")
            return control.Stream(failing())
        return control.Stream(rows())

    server = control.Server(str(tmp_path / "run" / "control.sock"), handle, lock)
    server.start()
    try:
        with control.Client(server.path) as client:
            assert [row["n"] for row in client.stream("list")] == list(range(30))
            assert client.call("list") == [{"n": n} for n in range(30)]
            with pytest.raises(control.ControlError, match="the maps went away"):
                list(client.stream("fail"))
    finally:
        server.stop()
    assert seen_locked and not any(seen_locked)
