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


def _target(text):
    return ipaddress.ip_network(text)


def test_journal_changes_replay_on_top_of_the_snapshot(tmp_path):
    path = str(tmp_path / "state.msgpack")
    saved = State()
    kept, lifted = record("203.0.113.1/32", 5000.0), record("203.0.113.2/32", 5000.0)
    for r in (kept, lifted):
        saved.bans[r.target] = r
        saved.ban_counts[r.target] = 1
    state.save(saved, path)
    new, v6 = record("198.51.100.7/32", 0.0, "banned by hand"), record("2001:db8::/64", 6000.0)
    state.append([state.ban_change(new, 1), state.unban_change(lifted.target)], path)
    state.append([state.ban_change(v6, 2)], path)
    assert sorted(os.listdir(tmp_path)) == ["state.msgpack", "state.msgpack.journal"]
    loaded, warning = state.load(path, now=2000.0)
    assert warning is None and loaded.journal_length == 3
    assert loaded.bans == {kept.target: kept, new.target: new, v6.target: v6}
    # escalation history: kept in ban order, the lifted ban's count stays
    assert loaded.ban_counts == {kept.target: 1, lifted.target: 1, new.target: 1, v6.target: 2}
    assert list(loaded.ban_counts)[-1] == v6.target
    assert oct(os.stat(path + ".journal").st_mode & 0o777) == "0o600"


def test_a_journal_is_replayed_without_a_snapshot_and_expired_bans_are_dropped(tmp_path):
    path = str(tmp_path / "state.msgpack")
    old = record("192.0.2.5/32", 1500.0)
    state.append([state.ban_change(old, 1), state.ban_change(record("192.0.2.6/32", 0.0), 1)],
                 path)
    loaded, warning = state.load(path, now=1600.0)
    assert warning is None and list(map(str, loaded.bans)) == ["192.0.2.6/32"]
    assert set(map(str, loaded.ban_counts)) == {"192.0.2.5/32", "192.0.2.6/32"}


def test_a_snapshot_empties_the_journal_and_replaying_twice_changes_nothing(tmp_path):
    path = str(tmp_path / "state.msgpack")
    r = record("203.0.113.9/32", 5000.0)
    changes = [state.ban_change(r, 1), state.unban_change(_target("203.0.113.10/32"))]
    state.append(changes, path)
    once, _ = state.load(path, now=2000.0)
    state.save(once, path)
    assert not os.path.exists(path + ".journal")
    # a crash between the snapshot's rename and the journal's removal: the journal is replayed
    # over a snapshot that already holds its changes
    state.append(changes, path)
    twice, warning = state.load(path, now=2000.0)
    assert warning is None and twice == once


def test_a_change_cut_short_by_a_crash_keeps_the_ones_before_it(tmp_path):
    path = str(tmp_path / "state.msgpack")
    first, second = record("203.0.113.1/32", 5000.0), record("203.0.113.2/32", 5000.0)
    state.append([state.ban_change(first, 1)], path)
    whole = os.path.getsize(path + ".journal")
    state.append([state.ban_change(second, 1)], path)
    with open(path + ".journal", "r+b") as journal:
        journal.truncate(os.path.getsize(path + ".journal") - 5)
    loaded, warning = state.load(path, now=2000.0)
    assert list(loaded.bans) == [first.target]
    assert "cut short" in warning and "1 changes before it are kept" in warning
    # the torn tail is cut off, so what is appended next is read back
    assert os.path.getsize(path + ".journal") == whole
    state.append([state.ban_change(second, 1)], path)
    loaded, warning = state.load(path, now=2000.0)
    assert warning is None and list(loaded.bans) == [first.target, second.target]


def test_an_unreadable_journal_is_set_aside_and_the_snapshot_kept(tmp_path):
    path = str(tmp_path / "state.msgpack")
    saved = State()
    r = record("203.0.113.1/32", 5000.0)
    saved.bans[r.target] = r
    state.save(saved, path)
    for garbage in (msgpack.packb(["ban", ["not bytes", 32, "x", 1, 1.0, 2.0], 1]),
                    msgpack.packb(["explode"]), msgpack.packb({"a": 1}), b"\xc1"):
        journal = tmp_path / "state.msgpack.journal"
        journal.write_bytes(msgpack.packb(["unban", r.target.network_address.packed, 32])
                            + garbage)
        loaded, warning = state.load(path, now=1234.0)
        assert "unreadable after 1 changes" in warning and "journal.corrupt-1234" in warning
        assert loaded.bans == {}                      # the change before the garbage applied
        aside = tmp_path / "state.msgpack.journal.corrupt-1234"
        assert aside.exists() and not journal.exists()
        aside.unlink()


def test_load_leaves_the_collector_as_it_found_it(tmp_path):
    import gc
    path = tmp_path / "state.msgpack"
    path.write_bytes(b"\xc1 not msgpack")
    assert gc.isenabled()
    state.load(str(path), now=1.0)
    assert gc.isenabled()
    gc.disable()
    try:
        state.load(str(tmp_path / "absent"), now=1.0)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_ban_keeps_its_origin_and_class_and_old_rows_read_as_the_rules_bans(tmp_path):
    path = str(tmp_path / "state.msgpack")
    hand = BanRecord(ipaddress.ip_network("192.0.2.7/32"), "banned by hand: <b>x</b>", 0,
                     1000.0, 0.0, "hand", "")
    web = BanRecord(ipaddress.ip_network("192.0.2.8/32"), "5 failures", 5, 1000.0, 0.0,
                    "web login", "proven")
    saved = State(bans={hand.target: hand, web.target: web})
    state.save(saved, path)
    loaded, _ = state.load(path, now=2000.0)
    assert loaded.bans == saved.bans
    assert loaded.bans[web.target].to_wire()["origin"] == "web login"
    old_row = [ipaddress.ip_address("192.0.2.9").packed, 32, "10 failures", 10, 1000.0, 0.0]
    old = BanRecord.from_row(old_row)
    assert (old.origin, old.failure_class) == ("sip", "")
    with open(path + state.JOURNAL_SUFFIX, "ab") as journal:    # a journal of an older version
        journal.write(msgpack.packb(["ban", old_row, 1], use_bin_type=True))
    again, _ = state.load(path, now=2000.0)
    assert again.bans[old.target].origin == "sip"
    many = [BanRecord.from_row(web.to_row()) for _ in range(3)]
    assert len({id(r.origin) for r in many}) == 1 and len({id(r.failure_class) for r in many}) == 1
