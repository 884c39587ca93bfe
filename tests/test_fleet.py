"""A fleet of three edges sharing bans through a real redis-server (Debian's, on a private
socket with a password): three labs, each a Kamailio with its own `fastban run` in front, and
in each the same attacker address (203.0.113.10): the attacker moves from edge to edge.

* A ban made on edge A by a real attack drops the attacker's packets at B and C (counted in
  their kernels); an unban on B lifts it on A and C.
* A whitelisted address on C is never enforced there, even when A bans it.
* Forged messages written into Redis are refused and counted, and ban nothing.
* With redis-server killed each edge bans alone; when it is back the edges converge, and an
  edge restarted while bans were made and lifted elsewhere catches up.
* `fastban ban` and `unban` on an edge whose guard is stopped reach the others at once.
* 2 + 2 + 2 wrong passwords over the three edges ban nowhere, and everywhere with
  fleet_counting.
"""
import time

import msgpack
import pytest

from conftest import kernel_holds, require_tool, wait_for
from fastban.lab.guard_process import GuardProcess
from fastban.lab.redis_server import RedisServer
from fastban.lab.siplab import SipLab

MAXRETRY = 5
EDGES = ("edge-a", "edge-b", "edge-c")
FLEET = "lab"


@pytest.fixture(scope="module")
def labs(kernel):
    for tool in ("kamailio", "sipp", "redis-server"):
        require_tool(tool)
    opened = []
    try:
        for _ in EDGES:
            lab = SipLab(attackers=2)
            opened.append(lab)
            lab.start()
        yield dict(zip(EDGES, opened))
    finally:
        for lab in opened:
            lab.close()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """Each edge logs in as a Redis ACL user of its own, limited to the fleet's keys (the
    README's recipe)."""
    users = {name: (f"{name}-secret", f"fastban:{FLEET}:*") for name in EDGES}
    with RedisServer(tmp_path_factory.mktemp("redis"), users=users) as server:
        yield server


@pytest.fixture(scope="module")
def edges(labs, redis_server, tmp_path_factory):
    guards = {}
    try:
        for name, lab in labs.items():
            extra = {"whitelist": lab.attacker_address(1)} if name == "edge-c" else {}
            guard = GuardProcess(lab.server_namespace, lab.server_iface,
                                 tmp_path_factory.mktemp(name), maxretry=MAXRETRY,
                                 bantime=600, fleet_name=FLEET, edge_name=name,
                                 fleet_redis=redis_server.user_url(name, f"{name}-secret"),
                                 **extra)
            guard.start()
            guards[name] = guard
        for guard in guards.values():
            wait_for(lambda g=guard: g.json("stats")["fleet"]["connected"], what="connected")
        yield guards
    finally:
        for guard in guards.values():
            guard.detach()


def bans(guard) -> dict:
    return {row["target"]: row for row in guard.json("list")["bans"]}


def fleet_stats(guard) -> dict:
    return guard.json("stats")["fleet"]


def test_a_ban_on_one_edge_drops_the_attacker_at_the_others_and_an_unban_lifts_it(labs, edges):
    attacker = labs["edge-a"].attacker_address(0)
    target = f"{attacker}/32"
    labs["edge-a"].start_attacker(index=0, guesses=20, rate=20).wait()
    banned_at_a = bans(edges["edge-a"])[target]
    assert banned_at_a["origin"] == "sip" and banned_at_a["failures"] == MAXRETRY
    for name in ("edge-b", "edge-c"):
        row = wait_for(lambda n=name: bans(edges[n]).get(target), what=f"the ban at {name}")
        assert row["origin"] == "fleet edge-a" and row["failure_class"] == "proven"
        assert row["reason"] == banned_at_a["reason"] and row["failures"] == MAXRETRY
        assert abs(row["expires_at"] - banned_at_a["expires_at"]) < 0.01   # the same expiry
        # the attacker moves on to this edge: dropped in its kernel, Kamailio sees nothing
        result = labs[name].start_attacker(index=0, guesses=5, rate=20).wait()
        assert result.requests_sent > 0
        assert labs[name].server_requests_from(attacker) == 0
        assert bans(edges[name])[target]["packets_dropped"] >= result.requests_sent
        assert kernel_holds(labs[name], attacker)
    stats = fleet_stats(edges["edge-b"])
    assert stats["applied"] >= 1 and stats["lag_last_ms"] is not None
    assert fleet_stats(edges["edge-a"])["published"] >= 1

    edges["edge-b"].cli("unban", attacker)
    for name in ("edge-a", "edge-c"):
        wait_for(lambda n=name: target not in bans(edges[n]), what=f"the unban at {name}")
        assert not kernel_holds(labs[name], attacker)
    assert "unban 203.0.113.10/32: by edge edge-b" in edges["edge-a"].log()


def test_an_address_whitelisted_on_an_edge_is_never_enforced_there(labs, edges):
    address = labs["edge-c"].attacker_address(1)
    target = f"{address}/32"
    edges["edge-a"].cli("ban", address, "--reason", "whitelisted at C")
    wait_for(lambda: target in bans(edges["edge-b"]), what="the ban at B")
    wait_for(lambda: fleet_stats(edges["edge-c"]).get("refused_whitelisted", 0) >= 1,
             what="C's refusal")
    assert target not in bans(edges["edge-c"]) and not kernel_holds(labs["edge-c"], address)
    assert f"refused the ban of {target} from edge edge-a: whitelisted here" in \
        edges["edge-c"].log()
    edges["edge-a"].cli("unban", address)
    wait_for(lambda: target not in bans(edges["edge-b"]), what="the unban at B")


def test_forged_messages_in_redis_are_refused_and_counted(labs, edges, redis_server):
    client = redis_server.client()
    before = {name: fleet_stats(guard) for name, guard in edges.items()}
    now = time.time()

    def forged(**fields):
        values = {"v": 1, "op": "ban", "target": "203.0.113.99/32", "expires_at": now + 600,
                  "reason": "forged", "failures": 1, "class": "proven", "edge": "mallory",
                  "at": now, **fields}
        return msgpack.packb(values)
    stream = f"fastban:{FLEET}:events"
    for message in (forged(target="0.0.0.0/0"), b"\xc1\xc1 garbage", forged(expires_at=86400),
                    forged(reason="two\nlines"), b"x" * 5000):
        client.xadd(stream, {"m": message})
    client.xadd(stream, {"other": b"field"})

    def counted(name):
        stats = fleet_stats(edges[name])
        return all(stats.get(f"refused_{why}", 0) - before[name].get(f"refused_{why}", 0) >= n
                   for why, n in (("too_broad", 1), ("unreadable", 2), ("expired", 1),
                                  ("malformed", 1), ("oversized", 1)))
    for name in EDGES:
        wait_for(lambda n=name: counted(n), what=f"{name}'s refusals")
        assert not [t for t in bans(edges[name]) if t.startswith(("0.0.0.0", "203.0.113.99"))]
        assert edges[name].process.poll() is None
    assert "fleet: refused a message: too_broad: 0.0.0.0/0 is broader than /24" in \
        edges["edge-a"].log()


def test_without_redis_each_edge_bans_alone_and_the_fleet_converges_when_it_is_back(
        labs, edges, redis_server):
    attacker = labs["edge-b"].attacker_address(0)
    target = f"{attacker}/32"
    redis_server.kill()
    for name in EDGES:
        wait_for(lambda n=name: not fleet_stats(edges[n])["connected"], what=f"{name} lost")
    labs["edge-b"].start_attacker(index=0, guesses=20, rate=20).wait()
    assert bans(edges["edge-b"])[target]["origin"] == "sip"          # banned alone, at once
    time.sleep(1.0)
    assert target not in bans(edges["edge-a"]) and target not in bans(edges["edge-c"])

    redis_server.start()                            # B's ban reaches the others
    for name in ("edge-a", "edge-c"):
        row = wait_for(lambda n=name: bans(edges[n]).get(target), timeout=30,
                       what=f"B's ban at {name}")
        assert row["origin"] == "fleet edge-b"

    # C stops; meanwhile bans are made and lifted elsewhere; C starts again and catches up
    edges["edge-a"].cli("ban", "198.18.0.8", "--reason", "lifted while C is down")
    wait_for(lambda: "198.18.0.8/32" in bans(edges["edge-c"]), what="A's ban at C")
    edges["edge-c"].stop()
    edges["edge-a"].cli("unban", "198.18.0.8")
    edges["edge-a"].cli("ban", "198.18.0.7", "--reason", "made while C is down")
    edges["edge-a"].cli("unban", attacker)
    wait_for(lambda: target not in bans(edges["edge-b"]), what="the unban at B")
    edges["edge-c"].start()
    wait_for(lambda: "198.18.0.7/32" in bans(edges["edge-c"]), timeout=30, what="C's catch-up")
    held = bans(edges["edge-c"])
    assert "198.18.0.8/32" not in held and target not in held
    assert not kernel_holds(labs["edge-c"], "198.18.0.8")
    for name in ("edge-a", "edge-b"):
        log = edges[name].log()
        assert log.count("fleet: lost the connection to Redis") == 1
        assert log.count("fleet: connection to Redis is back") == 1
        assert fleet_stats(edges[name])["connected"]


def test_ban_and_unban_on_a_stopped_edge_reach_the_fleet_and_stay_lifted(labs, edges):
    """No guard runs on C: its commands write its pinned maps and state, and tell the fleet."""
    edges["edge-c"].stop()
    try:
        edges["edge-c"].cli("ban", "198.18.0.21", "--reason", "by hand while C is stopped")
        for name in ("edge-a", "edge-b"):
            row = wait_for(lambda n=name: bans(edges[n]).get("198.18.0.21/32"),
                           what=f"C's offline ban at {name}")
            assert row["origin"] == "fleet edge-c" and "while C is stopped" in row["reason"]
        edges["edge-c"].cli("unban", "198.18.0.21")
        for name in ("edge-a", "edge-b"):
            wait_for(lambda n=name: "198.18.0.21/32" not in bans(edges[n]),
                     what=f"C's offline unban at {name}")
            assert not kernel_holds(labs[name], "198.18.0.21")
    finally:
        edges["edge-c"].start()
    wait_for(lambda: fleet_stats(edges["edge-c"]).get("catch_ups", 0) >= 1, what="C's catch-up")
    assert "198.18.0.21/32" not in bans(edges["edge-c"])        # not back from the fleet
    assert not kernel_holds(labs["edge-c"], "198.18.0.21")


def test_failures_spread_over_the_edges_ban_everywhere_with_fleet_counting(labs, edges):
    """2 + 2 + 2 wrong passwords over three edges with maxretry 5: no ban while each edge
    counts alone; with fleet_counting, a ban everywhere."""
    attacker = labs["edge-a"].attacker_address(0)
    target = f"{attacker}/32"
    for name in EDGES:
        labs[name].start_attacker(index=0, guesses=2, rate=20).wait()
    time.sleep(1.0)
    assert all(target not in bans(edges[name]) for name in EDGES)

    for guard in edges.values():                    # the fleet settings apply at a restart
        guard.stop()
        guard.config.write_text(guard.config.read_text() + "fleet_counting = true\n")
        guard.start()
    for name in EDGES:
        wait_for(lambda n=name: fleet_stats(edges[n])["connected"], what=f"{name} connected")
    for name in EDGES:
        labs[name].start_attacker(index=0, guesses=2, rate=20).wait()
    row = wait_for(lambda: bans(edges["edge-c"]).get(target), what="the ban at C")
    assert row["origin"] == "fleet count" and row["failure_class"] == "proven"
    assert row["failures"] == MAXRETRY and "on edges edge-a, edge-b, edge-c" in row["reason"]
    for name in ("edge-a", "edge-b"):
        held = wait_for(lambda n=name: bans(edges[n]).get(target), what=f"the ban at {name}")
        assert held["origin"] == "fleet edge-c" and kernel_holds(labs[name], attacker)
    assert fleet_stats(edges["edge-c"])["fleet_count_reached"] == 1
