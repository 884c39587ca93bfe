"""The fleet: bans shared between edges through a real redis-server (Debian's, on a private
Unix socket, append-only file on).

One process, edges made of the product's own parts: each edge a DataPlane on a veth of its own
throwaway namespace, a Guard, and its fleet link (FleetEdge, FleetLink, FleetStore) with its
two threads, as `fastban run` wires them. Measures:
  - propagation latency: edge A bans by hand (Guard.ban, the same publish path as a ban of the
    rules), one every 5 ms, 1,000 times; each is timed from the call on A to the write of the
    ban into B's kernel map (time.perf_counter() in both: one process, one clock). p50, p99,
    max. CrowdSec's bouncers poll every 10 s.
  - apply rate: a remote edge (a process of its own) publishes 100,000 bans as fast as it
    can; B applies them from the stream, a batch of bans (what one read of the stream brought)
    per map write: the bans of the writes after B's first, per second from its first write to
    its last (bounded by the publisher's rate when that is slower).
  - catch-up: Redis holding 100,000 and then 1,000,000 active fleet bans (ban keys written
    straight into Redis), a fresh edge C starts: seconds until it has read and enforced all
    of them. And Redis's own memory per ban (INFO used_memory, per ban key).
  - the cost to the capture path: the controller's sustained rate (controller_rate's rig, a
    guard process of its own) alone, in the fleet, and in the fleet with fleet_counting
    (every failure published), side by side.

    .venv/bin/python -m benchmarks.fleet [--quick]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import controller_rate
from benchmarks.common import BENCH_PIN_ROOT, ROOT, log, percentile, save_json, v4_addresses

FLEET = "bench"
CAPACITY = 1 << 21
LATENCY_GAP = 0.005


class Edge:
    """A DataPlane, a Guard and a fleet link, as `fastban run` has them."""

    def __init__(self, name, lab, index, redis_server, workdir):
        from fastban.config import load_settings
        from fastban.dataplane import DataPlane
        from fastban.fleet.edge import FleetEdge
        from fastban.fleet.link import FleetLink
        from fastban.fleet.store import FleetStore
        from fastban.guard import Guard
        import redis

        ns, peer = lab.namespace(f"f{name[-1]}"), lab.namespace(f"p{name[-1]}")
        link = lab.link(ns, peer, f"10.234.{index}.1/24", f"10.234.{index}.2/24")
        with ns.entered():
            self.dataplane = DataPlane(link.a, capacity=CAPACITY, capture="none",
                                       pin_root=BENCH_PIN_ROOT)
            self.dataplane.attach("native")
        folder = Path(workdir) / name
        folder.mkdir()
        self.settings = load_settings(None, {
            "state_file": str(folder / "state.msgpack"),
            "control_socket": str(folder / "control.sock"), "map_capacity": CAPACITY,
            "bantime": 3600, "fleet_redis": redis_server.url, "fleet_name": FLEET,
            "edge_name": name})
        self.guard = Guard(self.settings, self.dataplane)
        self.lock = threading.Lock()
        self.edge = FleetEdge(self.guard, self.lock, name)
        client = redis.Redis(unix_socket_path=str(redis_server.socket),
                             password=redis_server.password)
        self.link = FleetLink(FleetStore(client, FLEET), name, self.edge, (24, 48),
                              errors=(redis.RedisError, OSError))
        self.edge.connect(self.link)
        self.written: dict = {}
        self.closed = False
        ban_new = self.dataplane.ban_new

        def timed_ban_new(bans):
            refused = ban_new(bans)
            written = time.perf_counter()
            self.written.update((target, written) for target, _ in bans)
            return refused
        self.dataplane.ban_new = timed_ban_new

    def start(self):
        self.link.start()
        wait(lambda: self.link.counts["catch_ups"] >= 1, 600, "the first catch-up")

    def close(self):
        if not self.closed:
            self.closed = True
            self.link.stop()
            self.dataplane.detach()


def wait(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.002)
    raise RuntimeError(f"{what} did not happen within {timeout} s")


def latency(a: Edge, b: Edge, count: int) -> dict:
    targets = [ipaddress.ip_network(ipaddress.IPv4Address(x))
               for x in v4_addresses(count, start=7_000_000)]
    sent = {}
    for target in targets:
        sent[target] = time.perf_counter()
        with a.lock:
            a.guard.ban(target, 3600)
        time.sleep(LATENCY_GAP)
    wait(lambda: all(t in b.written for t in targets), 60, "every ban at B")
    ms = [(b.written[t] - sent[t]) * 1000 for t in targets]
    return {"bans": count, "p50_ms": round(percentile(ms, 50), 2),
            "p99_ms": round(percentile(ms, 99), 2), "max_ms": round(max(ms), 2)}


PUBLISHER = """
import ipaddress, sys, time
import redis
from benchmarks.common import v4_addresses
from fastban.fleet.messages import FleetBan
from fastban.fleet.store import FleetStore
socket_path, password, fleet = sys.argv[1], sys.argv[2], sys.argv[3]
count, start = int(sys.argv[4]), int(sys.argv[5])
store = FleetStore(redis.Redis(unix_socket_path=socket_path, password=password), fleet)
now = time.time()
bans = [FleetBan(ipaddress.ip_network(ipaddress.IPv4Address(x)), now + 3600,
                 "10 failures in 60 s: 10 proven (10×bad credentials 401)", 10, "proven",
                 "edge-x", now) for x in v4_addresses(count, start=start)]
started = time.perf_counter()
for first in range(0, count, 2000):
    store.publish(bans[first:first + 2000])
print(count / (time.perf_counter() - started))
"""


def apply_rate(b: Edge, redis_server, count: int, start: int, backlog: bool) -> dict:
    """Another edge (a process of its own, as it would be another machine) publishes. Live, B
    follows as it publishes (the publisher and Redis on this VM's two cores with B); with a
    backlog, B is held busy (its lock taken, as the capture takes it) until every ban is in
    the stream, then reads them all."""
    targets = [ipaddress.ip_network(ipaddress.IPv4Address(x))
               for x in v4_addresses(count, start=start)]
    if backlog:
        b.lock.acquire()
    try:
        done = subprocess.run([sys.executable, "-c", PUBLISHER, str(redis_server.socket),
                               redis_server.password, FLEET, str(count), str(start)], cwd=ROOT,
                              capture_output=True, text=True, timeout=600, check=True)
    finally:
        if backlog:
            b.lock.release()
    # the newest first: checking all of them every 2 ms would take B's GIL from its follower
    wait(lambda: targets[-1] in b.written and all(t in b.written for t in targets), 300,
         "every ban at B")
    times = [b.written[t] for t in targets]
    first, last = min(times), max(times)
    after_first = sum(1 for t in times if t > first)    # the bans of the writes after the first
    took = last - first
    return {"bans": count, "backlog": backlog, "publish_per_s": round(float(done.stdout)),
            "apply_per_s": round(after_first / took), "apply_seconds": round(took, 2),
            "map_writes": len(set(times))}


def catch_up(lab, redis_server, workdir, count: int, index: int) -> dict:
    from fastban.fleet.messages import FleetBan, encode_ban
    client = redis_server.client()
    for key in client.scan_iter(match=f"fastban:{FLEET}:*", count=10_000):
        client.unlink(key)
    memory_before = client.info("memory")["used_memory"]
    now = time.time()
    expires_ms = int((now + 3600) * 1000)
    addresses = v4_addresses(count, start=20_000_000)
    for first in range(0, count, 10_000):
        pipe = client.pipeline(transaction=False)
        for packed in addresses[first:first + 10_000]:
            target = ipaddress.ip_network(ipaddress.IPv4Address(packed))
            pipe.set(f"fastban:{FLEET}:ban:{target}", encode_ban(FleetBan(
                target, now + 3600, "10 failures in 60 s: 10 proven (10×bad credentials 401)",
                10, "proven", "edge-x", now)), pxat=expires_ms)
        pipe.execute()
    memory = client.info("memory")["used_memory"] - memory_before
    edge = Edge(f"edge-c{index}", lab, 10 + index, redis_server, workdir)
    try:
        started = time.perf_counter()
        edge.start()
        took = time.perf_counter() - started
        held = len(edge.guard.state.bans)
    finally:
        edge.close()
    return {"bans": count, "seconds": round(took, 2), "held": held,
            "redis_bytes_per_ban": round(memory / count)}


def run(quick: bool = False) -> dict:
    from fastban.lab import netns
    from fastban.lab.redis_server import RedisServer

    sizes = {"latency": 200 if quick else 1000, "apply": 20_000 if quick else 100_000,
             "catch_up": (20_000, 100_000) if quick else (100_000, 1_000_000)}
    results = {}
    with netns.Lab() as lab, tempfile.TemporaryDirectory(prefix="fbfleet-") as workdir, \
            RedisServer(Path(workdir) / "redis") as redis_server:
        from fastban.service import tune_gc
        a = Edge("edge-a", lab, 1, redis_server, workdir)
        b = Edge("edge-b", lab, 2, redis_server, workdir)
        tune_gc()                       # the collector's settings of `fastban run`
        try:
            a.start()
            b.start()
            log(f"fleet: propagation latency, {sizes['latency']} bans")
            results["latency"] = latency(a, b, sizes["latency"])
            a.close()                   # another machine: it must not share B's CPU and GIL
            log(f"fleet: apply rate, {sizes['apply']} bans, live and from a backlog")
            results["apply"] = apply_rate(b, redis_server, sizes["apply"], 9_000_000, False)
            results["apply_backlog"] = apply_rate(b, redis_server, sizes["apply"], 12_000_000,
                                                  True)
        finally:
            a.close()
            b.close()
        results["catch_up"] = []
        for index, count in enumerate(sizes["catch_up"]):
            log(f"fleet: catch-up of {count} active bans")
            results["catch_up"].append(catch_up(lab, redis_server, workdir, count, index))
        redis_server.client().flushall()
        log("fleet: the controller's sustained rate alone and in a fleet, side by side")
        results["publish_cost"] = controller_rate.fleet_cost(redis_server.url, quick)
    results["quick"] = quick
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (BPF, namespaces)")
    results = run(args.quick)
    save_json("fleet", results)
    log(f"fleet: {results}")


if __name__ == "__main__":
    main()
