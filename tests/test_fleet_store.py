"""The fleet's keys and stream in a real redis-server (Debian's, on a private socket with a
password): what an edge writes, what another reads, and what a Redis ACL user per edge may do."""
import ipaddress
import time

import pytest

from conftest import require_tool
from fastban.fleet.messages import FleetBan, FleetFailure, FleetUnban, decode, parse_member
from fastban.fleet.store import FleetStore
from fastban.lab.redis_server import RedisServer

PREFIX = (24, 48)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_tool("redis-server")
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def store(server, request):
    client = server.client()
    fleet = request.node.name[:40].replace("[", "-").replace("]", "")
    yield FleetStore(client, fleet)
    for key in client.scan_iter(match=f"fastban:{fleet}:*"):
        client.delete(key)


def ban(target, expires_in=600.0, edge="edge-a", now=None):
    now = time.time() if now is None else now
    return FleetBan(ipaddress.ip_network(target), 0 if expires_in == 0 else now + expires_in,
                    "5 failures in 2 s: 5 proven (5×bad credentials 401)", 5, "proven", edge,
                    now)


def test_a_ban_is_a_key_that_expires_with_it_and_an_event(store):
    written = ban("203.0.113.7/32", expires_in=600)
    assert store.publish([written]) == []
    key = store.ban_key("203.0.113.7/32")
    assert abs(store.client.pexpiretime(key) - written.expires_at * 1000) <= 1
    [[(found_key, raw)]] = list(store.active())
    assert found_key == key.encode() and decode(raw, time.time(), PREFIX) == written
    after, [event] = store.follow("0-0", block_ms=100)
    assert decode(event, time.time(), PREFIX) == written and store.holds(after)
    assert store.stream_end() == after


def test_a_shorter_ban_does_not_shorten_a_longer_one_and_a_permanent_one_stays(store):
    store.publish([ban("203.0.113.8/32", expires_in=3600)])
    store.publish([ban("203.0.113.8/32", expires_in=60, edge="edge-b")])
    assert store.client.pexpiretime(store.ban_key("203.0.113.8/32")) > (time.time() + 3000) * 1000
    store.publish([ban("203.0.113.9/32", expires_in=0)])
    store.publish([ban("203.0.113.9/32", expires_in=7200)])
    assert store.client.pexpiretime(store.ban_key("203.0.113.9/32")) == -1
    _, events = store.follow("0-0", block_ms=100)
    assert len(events) == 2                         # the two that were written, no more


def test_an_unban_deletes_the_key_and_is_an_event(store):
    store.publish([ban("2001:db8:113::/64")])
    target = ipaddress.ip_network("2001:db8:113::/64")
    store.publish([FleetUnban(target, "edge-b", time.time())])
    assert list(store.active()) == []
    _, events = store.follow("0-0", block_ms=100)
    assert [type(decode(e, time.time(), PREFIX)).__name__ for e in events] == \
        ["FleetBan", "FleetUnban"]


def test_one_publish_keeps_the_order_of_bans_unbans_and_failures(store):
    now = time.time()
    first = ipaddress.ip_network("203.0.113.20/32")
    many = [ban(f"198.19.{i // 256}.{i % 256}/32", now=now) for i in range(1200)]  # 3 calls
    failures = [FleetFailure(ipaddress.ip_network("203.0.113.21/32"), now + i,
                             "bad credentials 401", "edge-a", 600.0, 3) for i in range(3)]
    reached = store.publish([ban(str(first), now=now), FleetUnban(first, "edge-a", now),
                             *many[:700], failures[0], failures[1], *many[700:],
                             FleetUnban(first, "edge-a", now + 1), failures[2],
                             ban(str(first), expires_in=60, now=now + 2)])
    assert [(source, len(members)) for source, members in reached] == \
        [(ipaddress.ip_network("203.0.113.21/32"), 3)]
    _, events = store.follow("0-0", block_ms=100, count=5000)
    read = [decode(e, time.time(), PREFIX) for e in events]
    assert [(type(c).__name__, str(c.target)) for c in read if c.target == first] == \
        [("FleetBan", str(first)), ("FleetUnban", str(first)), ("FleetUnban", str(first)),
         ("FleetBan", str(first))]
    assert [c.target for c in read if c.target != first] == [b.target for b in many]
    assert 55_000 < store.client.pttl(store.ban_key(first)) <= 62_000   # the last ban holds


def test_an_expired_ban_is_gone_by_itself(store):
    store.publish([ban("203.0.113.10/32", expires_in=0.3)])
    time.sleep(0.6)
    assert list(store.active()) == []


def test_a_thousand_bans_are_read_back_in_batches(store):
    now = time.time()
    store.publish([ban(f"198.18.{i // 256}.{i % 256}/32", now=now) for i in range(1000)])
    read = [raw for batch in store.active() for _, raw in batch]
    assert len({decode(raw, now, PREFIX).target for raw in read}) == 1000


def test_failures_of_several_edges_count_together_and_the_count_starts_again(store):
    source, now = ipaddress.ip_network("203.0.113.12/32"), time.time()

    def failure(edge, at, kind="bad credentials 401"):
        return FleetFailure(source, at, kind, edge, 600.0, 5)
    assert store.publish([failure("edge-a", now), failure("edge-a", now + 1),
                          failure("edge-b", now + 2), failure("edge-b", now + 3)]) == []
    [(reached, members)] = store.publish([failure("edge-c", now + 4, "403")])
    assert reached == source
    assert sorted(parse_member(m)[1:] for m in members) == \
        [("edge-a", "bad credentials 401")] * 2 + [("edge-b", "bad credentials 401")] * 2 + \
        [("edge-c", "403")]
    assert store.publish([failure("edge-c", now + 5)]) == []           # counted afresh
    # failures older than findtime no longer count
    assert store.publish([failure("edge-a", now + 700 + i) for i in range(4)]) == []
    assert 0 < store.client.pttl(f"{store.prefix}fail:{source}") <= 600_000


def test_a_member_that_is_not_a_failure_is_not_read_as_one():
    for raw in (b"", b"x y z", b"1.5 edge:a 1 kind", b"nan edge 1 kind", b"\xff\xfe 1 2 3",
                b"1.0 edge 1 " + b"k" * 41, b"1.0 edge 1 two\nlines"):
        assert parse_member(raw) is None
    assert parse_member(b"1800000000.5 edge-a 7 bad credentials 401") == \
        (1800000000.5, "edge-a", "bad credentials 401")


def test_an_acl_user_of_one_fleet_cannot_touch_another(tmp_path):
    import redis
    users = {"edge-a": ("edge-a-secret", "fastban:eu:*")}
    with RedisServer(tmp_path / "acl", users=users) as server:
        edge = redis.Redis.from_url(server.user_url("edge-a", "edge-a-secret"))
        store = FleetStore(edge, "eu")
        assert store.publish([ban("203.0.113.11/32")]) == []
        assert len([raw for batch in store.active() for _, raw in batch]) == 1
        assert store.follow("0-0", block_ms=100)[1] and store.stream_end() != "0-0"
        with pytest.raises(redis.exceptions.NoPermissionError):
            FleetStore(edge, "us").publish([ban("203.0.113.11/32")])
        for forbidden in (edge.flushall, lambda: edge.config_set("dir", "/tmp"),
                          lambda: edge.keys("*")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                forbidden()
        server.kill()
        server.start()                              # the user and the ban outlive a restart
        assert FleetStore(redis.Redis.from_url(server.user_url("edge-a", "edge-a-secret")),
                          "eu").stream_end() != "0-0"
