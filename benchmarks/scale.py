"""Scale: 1M active bans in the controller and the kernel maps.

One process, one DataPlane (capacity 1,048,576, on a veth in a throwaway namespace) and one Guard
with a fake wall clock (so expiry can be triggered without waiting). Measures:
  - DataPlane.ban / DataPlane.unban rates, one address per call (100k fresh addresses);
  - the controller's ban rate while filling to 1M active IPv4 bans (Guard.ban_decided, the path
    the failure rules take: the ban store, its expiry, map write);
  - memory with 1M bans: the controller process's RSS growth, and the kernel's own figure for
    the bans_v4 map (fdinfo memlock, which on 6.x is the map's actual memory use);
  - the state file: time and size of writing the whole state with 1M bans, and of a save after
    one change (appended to the journal);
  - DataPlane.bans() (what `fastban list` and the start-up reconciliation read) with 1M bans;
  - `fastban list --json` through the control socket with 1M bans: the real command against
    the guard's control server (streamed in chunks), its time and output;
  - Guard.ban / Guard.unban by hand (`fastban ban/unban`) with 1M bans present: time per call;
  - expiring 1M bans: the clock jumps past their end, Guard.tick() is called until none is
    left (the guard may lift them in slices per tick): total time, ticks, the longest tick.

    .venv/bin/python -m benchmarks.scale [--quick]
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import os
import tempfile
import time

from benchmarks import bpfsys
from benchmarks.common import BENCH_PIN_ROOT, log, map_memlock, rss_bytes, save_json, v4_addresses
from fastban import state

CAPACITY = 1_048_576
SAVE_EVERY = 10_000        # bans between two saves while the guard fills up


class FakeClock:
    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def run(quick: bool = False, total: int = 1_000_000) -> dict:
    from fastban.lab import netns
    from fastban.config import load_settings
    from fastban.dataplane import DataPlane, remove_pins
    from fastban.guard import Guard
    from fastban.detection import Verdict
    from fastban.decisions import BanDecision

    if quick:
        total = 100_000
    direct = 100_000 if not quick else 20_000
    results = {"bans": total}
    addresses = [ipaddress.IPv4Address(b) for b in v4_addresses(total + direct)]
    fill, fresh = addresses[:total], addresses[total:]
    with netns.Lab() as lab, tempfile.TemporaryDirectory(prefix="fbscale-") as workdir:
        ns, peer = lab.namespace("scl"), lab.namespace("peer")
        link = lab.link(ns, peer, "10.233.0.1/24", "10.233.0.2/24")
        with ns.entered():
            dp = DataPlane(link.a, capacity=CAPACITY, capture="none", pin_root=BENCH_PIN_ROOT)
            try:
                dp.attach("native")
                map_fd = bpfsys.obj_get(os.path.join(dp.pin_dir, "bans_v4"))
                results["map_memlock_empty"] = map_memlock(map_fd)

                log(f"scale: DataPlane.ban x {direct}")
                t0 = time.perf_counter()
                for address in fresh:
                    dp.ban(address, 0)
                took = time.perf_counter() - t0
                results["dataplane_ban_per_s"] = round(direct / took)
                results["map_memlock_per_ban"] = round(
                    (map_memlock(map_fd) - results["map_memlock_empty"]) / direct, 1)
                t0 = time.perf_counter()
                for address in fresh:
                    dp.unban(address)
                results["dataplane_unban_per_s"] = round(direct / (time.perf_counter() - t0))

                settings = load_settings(None, {
                    "state_file": os.path.join(workdir, "state.msgpack"),
                    "control_socket": os.path.join(workdir, "control.sock"),
                    "map_capacity": CAPACITY, "bantime": 3600})
                clock = FakeClock()
                gc.collect()
                rss0 = rss_bytes()
                guard = Guard(settings, dp, wall=clock)
                log(f"scale: Guard.ban_decided x {total}")
                now = clock()
                took = saving = 0.0
                for first in range(0, total, SAVE_EVERY):
                    t0 = time.perf_counter()
                    for address in fill[first:first + SAVE_EVERY]:
                        decision = BanDecision(address, ipaddress.ip_network(address), 10, 10,
                                               now - 60, now, "10 failures in 60 s")
                        guard.ban_decided(Verdict(decision, 3600, 0))
                    t1 = time.perf_counter()
                    guard.save()          # as the service's ticks do while bans pour in
                    took, saving = took + t1 - t0, saving + time.perf_counter() - t1
                results["controller_ban_per_s"] = round(total / took)
                results["guard_fill_seconds"] = round(took, 1)
                results["state_saves_during_fill_seconds"] = round(saving, 2)
                gc.collect()
                results["controller_rss_growth_bytes"] = rss_bytes() - rss0
                results["controller_bytes_per_ban"] = round(
                    results["controller_rss_growth_bytes"] / total)
                results["controller_rss_bytes"] = rss_bytes()
                results["map_memlock_bytes"] = map_memlock(map_fd)
                results["map_bytes_per_ban"] = round(
                    (results["map_memlock_bytes"] - results["map_memlock_empty"]) / total, 1)

                log("scale: state save: the whole state, then one change")
                t0 = time.perf_counter()
                state.save(guard.state, settings.state_file)
                results["state_save_seconds"] = round(time.perf_counter() - t0, 2)
                results["state_file_bytes"] = os.path.getsize(settings.state_file)
                guard.ban(fresh[-1], 3600)
                t0 = time.perf_counter()
                guard.save()                  # one change: appended to the journal
                results["state_save_one_change_seconds"] = round(time.perf_counter() - t0, 4)

                log("scale: DataPlane.bans()")
                t0 = time.perf_counter()
                listed = len(dp.bans())
                results["list_bans_seconds"] = round(time.perf_counter() - t0, 2)
                results["listed"] = listed

                log("scale: fastban list --json through the control socket")
                results.update(_list_through_the_socket(guard, workdir))

                log("scale: Guard.ban and Guard.unban by hand, once each")
                times = []
                for address in fresh[:1]:
                    t0 = time.perf_counter()
                    guard.ban(address, 3600)
                    times.append(time.perf_counter() - t0)
                results["guard_ban_by_hand_seconds_each"] = [round(t, 4) for t in times]
                times = []
                for address in fill[:1]:
                    t0 = time.perf_counter()
                    guard.unban(address)
                    times.append(time.perf_counter() - t0)
                results["guard_unban_by_hand_seconds_each"] = [round(t, 4) for t in times]

                left = len(guard.state.bans)
                log(f"scale: expiring {left} bans (ticks until none is left)")
                clock.offset = 3601
                ticks, longest = 0, 0.0
                t0 = time.perf_counter()
                while guard.state.bans and ticks < 10_000:
                    t1 = time.perf_counter()
                    guard.tick()
                    longest = max(longest, time.perf_counter() - t1)
                    ticks += 1
                results["expire_all_seconds"] = round(time.perf_counter() - t0, 2)
                results["expired_per_s"] = round(left / results["expire_all_seconds"])
                results["expire_ticks"] = ticks
                results["expire_longest_tick_seconds"] = round(longest, 3)
                results["left_in_map"] = len(dp.bans(include_expired=True))
                results["left_in_controller"] = len(guard.state.bans)
                os.close(map_fd)
            finally:
                dp.detach()
                dp.close()
                remove_pins(dp.pin_dir)
    return results


def _list_through_the_socket(guard, workdir: str) -> dict:
    """The real `fastban list --json` against a control server that answers as the service
    does (fastban.service: the rows streamed, made outside the lock)."""
    import subprocess
    import sys
    import threading

    from benchmarks.common import ROOT
    from fastban import control

    path = os.path.join(workdir, "list.sock")
    server = control.Server(path, lambda request: control.Stream(guard.listing_later()),
                            threading.Lock())
    server.start()
    try:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "fastban", "list", "--json", "--socket",
                               path, "--iface", "unused"], capture_output=True, timeout=900,
                              cwd=ROOT)
        took = time.perf_counter() - t0
    finally:
        server.stop()
    rows = len(json.loads(done.stdout)["bans"]) if done.returncode == 0 else None
    return {"list_json_socket_seconds": round(took, 1), "list_json_rows": rows,
            "list_json_bytes": len(done.stdout), "list_json_returncode": done.returncode,
            "list_json_stderr": done.stderr.decode(errors="replace")[-300:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results = run(quick=args.quick)
    save_json("scale", results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
