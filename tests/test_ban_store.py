"""The compact store of active bans (fastban.ban_store): a mapping of networks to BanRecords."""

import ipaddress
import shutil
import sys
from pathlib import Path

import msgpack
import pytest

from fastban import state
from fastban.ban_record import StateError, network_from
from fastban.ban_store import BanStore, NetworkDict, fields_key, key_network, network_key
from fastban.state import BanRecord

NOW = 1_764_000_000.123456789


def record(target: str, reason="5 failures in 12 s", banned_at=NOW, expires_at=NOW + 3600,
           failures=5, origin="sip", failure_class="proven") -> BanRecord:
    return BanRecord(ipaddress.ip_network(target), reason, failures, banned_at, expires_at,
                     origin, failure_class)


def store_of(*records) -> BanStore:
    store = BanStore()
    for one in records:
        store[one.target] = one
    return store


def test_networks_of_both_families_keep_their_own_keys():
    targets = ["0.0.0.0/0", "0.0.0.0/32", "::/0", "::/128", "10.1.2.3/32", "10.1.2.0/24",
               "::ffff:10.1.2.3/128", "2001:db8::/64",
               "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
               "255.255.255.255/32"]
    networks = [ipaddress.ip_network(t) for t in targets]
    assert len({network_key(n) for n in networks}) == len(networks)
    for network in networks:
        back = key_network(network_key(network))
        assert back == network and type(back) is type(network)


def test_records_come_back_as_they_were_stored():
    kept = [record("192.0.2.7/32", failures=7, origin="fleet edge-2", failure_class="mixed"),
            record("2001:db8::/64", "by hand", 1.5, 0.0, 0, "hand", ""),
            record("198.51.100.0/24", "a reason \u00e9\u4e2d", NOW + 0.1, NOW + 0.3)]
    store = store_of(*kept)
    assert len(store) == 3
    assert store == {one.target: one for one in kept}
    for one in kept:
        assert store[one.target] == one and store.get(one.target) == one
        assert one.target in store
    assert list(store) == [one.target for one in kept]
    assert list(store.values()) == kept
    assert dict(store.items()) == {one.target: one for one in kept}
    assert store.get(ipaddress.ip_network("192.0.2.8/32")) is None
    assert ipaddress.ip_address("192.0.2.7") not in store      # an address is not a network
    with pytest.raises(KeyError):
        store[ipaddress.ip_network("192.0.2.8/32")]


def test_a_ban_stored_again_replaces_the_old_and_delete_forgets_it():
    store = store_of(record("192.0.2.7/32", "first"))
    store[ipaddress.ip_network("192.0.2.7/32")] = record("192.0.2.7/32", "second", failures=9)
    assert len(store) == 1 and store[ipaddress.ip_network("192.0.2.7/32")].reason == "second"
    assert store.pop(ipaddress.ip_network("192.0.2.7/32")).failures == 9
    assert len(store) == 0 and store.pop(ipaddress.ip_network("192.0.2.7/32"), None) is None
    with pytest.raises(KeyError):
        del store[ipaddress.ip_network("192.0.2.7/32")]


def test_reasons_no_ban_uses_are_forgotten():
    store = BanStore()
    for n in range(1000):
        one = record(f"10.0.{n // 256}.{n % 256}/32", f"{n} failures in 60 s")
        store[one.target] = one
    assert store.distinct_strings() == 1000 + 2          # the reasons, "sip" and "proven"
    for n in range(1000):
        del store[ipaddress.ip_network(f"10.0.{n // 256}.{n % 256}/32")]
    assert store.distinct_strings() == 0
    store[ipaddress.ip_network("10.9.9.9/32")] = record("10.9.9.9/32", "again")
    assert store[ipaddress.ip_network("10.9.9.9/32")] == record("10.9.9.9/32", "again")
    assert store.distinct_strings() == 3


def test_a_copy_reads_the_bans_as_they_were():
    store = store_of(record("192.0.2.1/32", "old reason"), record("192.0.2.2/32", "kept"))
    copied = store.copy()
    del store[ipaddress.ip_network("192.0.2.1/32")]
    store[ipaddress.ip_network("192.0.2.3/32")] = record("192.0.2.3/32", "new reason")
    assert copied == {r.target: r for r in (record("192.0.2.1/32", "old reason"),
                                            record("192.0.2.2/32", "kept"))}
    assert ipaddress.ip_network("192.0.2.3/32") not in copied


def test_newest_is_by_ban_time_newest_first():
    store = store_of(record("192.0.2.1/32", banned_at=NOW + 5),
                     record("192.0.2.2/32", banned_at=NOW),
                     record("192.0.2.3/32", banned_at=NOW + 9),
                     record("::1/128", banned_at=NOW + 7))
    assert [str(r.target) for r in store.newest(3)] == ["192.0.2.3/32", "::1/128", "192.0.2.1/32"]
    assert len(store.newest(10)) == 4


def test_pop_expired_takes_the_lapsed_bans_earliest_second_first():
    store = store_of(record("192.0.2.1/32", expires_at=NOW + 30.5),
                     record("192.0.2.2/32", expires_at=NOW + 10.2),
                     record("192.0.2.3/32", expires_at=NOW + 10.9),
                     record("192.0.2.4/32", expires_at=0.0),             # permanent
                     record("2001:db8::/48", expires_at=NOW + 20))
    assert store.pop_expired(NOW + 10, 100) == []
    lifted = store.pop_expired(NOW + 10.5, 100)          # one of two in the same second
    assert [str(r.target) for r in lifted] == ["192.0.2.2/32"]
    assert ipaddress.ip_network("192.0.2.2/32") not in store
    assert [str(r.target) for r in store.pop_expired(NOW + 31, 2)] == ["192.0.2.3/32",
                                                                        "2001:db8::/48"]
    assert [r.expires_at for r in store.pop_expired(NOW + 31, 2)] == [NOW + 30.5]
    assert store.pop_expired(NOW + 10 ** 6, 100) == []
    assert list(store) == [ipaddress.ip_network("192.0.2.4/32")]


def test_pop_expired_follows_bans_made_again_and_lifted():
    store = store_of(record("192.0.2.1/32", expires_at=NOW + 10), record("192.0.2.2/32",
                                                                         expires_at=NOW + 10))
    store[ipaddress.ip_network("192.0.2.1/32")] = record("192.0.2.1/32", expires_at=NOW + 100)
    del store[ipaddress.ip_network("192.0.2.2/32")]
    store[ipaddress.ip_network("192.0.2.3/32")] = record("192.0.2.3/32", expires_at=NOW + 10)
    store[ipaddress.ip_network("192.0.2.3/32")] = record("192.0.2.3/32", expires_at=NOW + 10.5)
    assert [(str(r.target), r.expires_at) for r in store.pop_expired(NOW + 11, 100)] == [
        ("192.0.2.3/32", NOW + 10.5)]
    assert store.pop_expired(NOW + 99, 100) == []
    assert [str(r.target) for r in store.pop_expired(NOW + 100, 100)] == ["192.0.2.1/32"]
    assert len(store) == 0


def _deep_size(obj, seen) -> int:
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        size += sum(_deep_size(v, seen) for v in obj)
    elif hasattr(obj, "__dict__"):
        size += _deep_size(vars(obj), seen)
    return size


def test_a_ban_takes_less_than_300_bytes():
    count, store = 50_000, BanStore()
    for n in range(count):
        target = ipaddress.ip_network(ipaddress.IPv4Address(0x0A000000 + n))
        # a reason made per ban, as the rules make them
        store[target] = BanRecord(target, f"{10 + n % 7} failures in 60 s", 10, NOW + n,
                                  NOW + n + 3600, "sip", "proven")
    per_ban = _deep_size(store, set()) / count
    assert per_ban < 300, per_ban


def test_network_dict_keeps_networks_in_the_order_added():
    counts = NetworkDict()
    for target, count in [("192.0.2.1/32", 1), ("2001:db8::/64", 2), ("192.0.2.0/24", 3)]:
        counts[ipaddress.ip_network(target)] = count
    first = ipaddress.ip_network("192.0.2.1/32")
    counts[first] = counts.pop(first) + 1
    assert [str(n) for n in counts] == ["2001:db8::/64", "192.0.2.0/24", "192.0.2.1/32"]
    assert counts == {ipaddress.ip_network("2001:db8::/64"): 2,
                      ipaddress.ip_network("192.0.2.0/24"): 3, first: 2}
    assert counts.get(ipaddress.ip_network("192.0.2.9/32"), 0) == 0
    assert list(counts.rows())[0] == (ipaddress.ip_network("2001:db8::/64").network_address.packed,
                                      64, 2)
    del counts[next(iter(counts))]
    assert len(counts) == 2 and ipaddress.ip_network("2001:db8::/64") not in counts


SAVED_BEFORE = Path(__file__).parent / "data" / "state-v1-before-ban-store.msgpack"


def test_a_state_file_written_before_the_store_loads_and_saves_the_same_rows(tmp_path):
    """tests/data/state-v1-before-ban-store.msgpack (and its journal) was written by
    fastban.state as it was when bans were a dict of BanRecords."""
    path = tmp_path / "state.msgpack"
    shutil.copy(SAVED_BEFORE, path)
    shutil.copy(f"{SAVED_BEFORE}.journal", f"{path}.journal")
    loaded, warning = state.load(str(path), now=1_764_001_000.0)
    assert warning is None and loaded.journal_length == 3
    N = ipaddress.ip_network
    assert loaded.bans == {
        N("192.0.2.7/32"): BanRecord(N("192.0.2.7/32"), "5 failures in 12 s (401 x5)", 5,
                                     1764000000.25, 4102444800.5, "sip", "proven"),
        N("2001:db8:1::/64"): BanRecord(N("2001:db8:1::/64"), "by hand: scanner", 0,
                                        1764000100.0, 0.0, "hand", ""),
        N("192.0.2.8/32"): BanRecord(N("192.0.2.8/32"), "7 failures in 3 s (407 x7)", 7,
                                     1764000300.5, 4102444802.0, "web login", "proven")}
    assert loaded.ban_counts == {N("192.0.2.7/32"): 3, N("203.0.113.1/32"): 1,
                                 N("2001:db8:1::/64"): 2, N("192.0.2.8/32"): 1}
    assert loaded.trusted == {N("192.0.2.200/32"): 4102444800.0, N("10.0.0.1/32"): 4102444803.0}
    assert loaded.lifted == {N("192.0.2.99/32")}
    before = msgpack.unpackb(SAVED_BEFORE.read_bytes(), raw=False)
    state.save(loaded, str(path))
    after = msgpack.unpackb(path.read_bytes(), raw=False)
    assert after["version"] == before["version"] == state.FORMAT_VERSION
    assert after["bans"][:2] == before["bans"][:2]     # the third was lifted, the fourth lapsed
    assert after["bans"][2] == [N("192.0.2.8/32").network_address.packed, 32,
                                "7 failures in 3 s (407 x7)", 7, 1764000300.5, 4102444802.0,
                                "web login", "proven"]
    assert after["ban_counts"] == before["ban_counts"] + [[after["bans"][2][0], 32, 1]]
    assert state.load(str(path), now=1_764_001_000.0)[0] == loaded


@pytest.mark.parametrize("packed, prefixlen", [
    (b"\xc0\x00\x02\x07", 32), (b"\xc0\x00\x02\x00", 24), (b"\x00" * 4, 0),
    (bytes(range(16)), 128), (b"\x20\x01\x0d\xb8" + b"\x00" * 12, 32)])
def test_a_saved_network_has_the_key_of_the_network_it_saves(packed, prefixlen):
    assert fields_key(packed, prefixlen) == network_key(network_from(packed, prefixlen))


@pytest.mark.parametrize("packed, prefixlen, error", [
    (b"\xc0\x00\x02\x07", 24, ValueError), (b"\xc0\x00\x02\x00", 33, ValueError),
    (b"\xc0\x00\x02\x00", -1, ValueError), (b"\x01\x02", 32, StateError),
    ("192.0.2.7", 32, StateError), (bytes(16), 129, ValueError)])
def test_a_saved_network_is_refused_as_network_from_refuses_it(packed, prefixlen, error):
    with pytest.raises(error):
        network_from(packed, prefixlen)
    with pytest.raises(error):
        fields_key(packed, prefixlen)


def test_rows_read_back_are_the_rows_written():
    rows = [record("192.0.2.7/32").to_row(), record("2001:db8::/64", "x", 1.0, 0.0, 0, "hand",
                                                    "").to_row(),
            record("198.51.100.0/24", expires_at=NOW - 1).to_row()]
    store = BanStore()
    for row in rows:
        store.add_row(row, NOW)
    assert list(store.rows()) == rows[:2]                 # the third has expired
    old_style = BanStore()
    old_style.add_row(rows[0][:6], NOW)                  # saved before bans had an origin
    assert list(old_style.values()) == [record("192.0.2.7/32", origin="sip", failure_class="")]
