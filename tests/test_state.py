import ipaddress
import os

import msgpack

from fastban import state
from fastban.state import BanRecord, State


def record(target, expires_at, reason="10 failures in 412 s"):
    return BanRecord(ipaddress.ip_network(target), reason, 10, 1000.0, expires_at)


def test_round_trip_keeps_active_bans_and_history(tmp_path):
    path = str(tmp_path / "state.msgpack")
    saved = State()
    for r in (record("203.0.113.9/32", 5000.0), record("2001:db8::/64", 0.0)):
        saved.bans[r.target] = r
    saved.ban_counts[ipaddress.ip_network("203.0.113.9/32")] = 3
    state.save(saved, path)
    loaded, warning = state.load(path, now=2000.0)
    assert warning is None
    assert loaded.bans == saved.bans
    assert loaded.ban_counts == {ipaddress.ip_network("203.0.113.9/32"): 3}
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_expired_bans_are_dropped_on_load_permanent_ones_kept(tmp_path):
    path = str(tmp_path / "state.msgpack")
    saved = State()
    for r in (record("198.51.100.1/32", 1500.0), record("198.51.100.2/32", 0.0)):
        saved.bans[r.target] = r
    state.save(saved, path)
    loaded, _ = state.load(path, now=1600.0)
    assert list(map(str, loaded.bans)) == ["198.51.100.2/32"]


def test_missing_file_is_an_empty_state(tmp_path):
    loaded, warning = state.load(str(tmp_path / "absent"), now=0)
    assert loaded.bans == {} and warning is None


def test_corrupt_file_is_reported_and_set_aside(tmp_path):
    path = tmp_path / "state.msgpack"
    for garbage in (b"\xc1\xc1 not msgpack", msgpack.packb({"version": 99}),
                    msgpack.packb({"version": 1, "bans": [{"target": "not-an-ip"}],
                                   "ban_counts": []}),
                    msgpack.packb({"version": 1, "bans": [], "ban_counts": [[b"\x01\x02", 32, 1]]})):
        path.write_bytes(garbage)
        loaded, warning = state.load(str(path), now=1234.0)
        assert loaded.bans == {}
        assert "unreadable" in warning and "corrupt-1234" in warning, garbage
        aside = tmp_path / "state.msgpack.corrupt-1234"
        assert aside.read_bytes() == garbage
        assert not path.exists()
        aside.unlink()


def test_save_is_atomic_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "sub" / "state.msgpack")
    state.save(State(), path)
    state.save(State(), path)
    assert os.listdir(tmp_path / "sub") == ["state.msgpack"]


def test_remaining_time():
    assert record("192.0.2.1/32", 1100.0).remaining(1000.0) == 100.0
    assert record("192.0.2.1/32", 0.0).remaining(1000.0) is None
    assert record("192.0.2.1/32", 900.0).remaining(1000.0) == 0.0
