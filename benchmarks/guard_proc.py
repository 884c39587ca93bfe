"""The guard as time_to_ban.py runs it: fastban.service.Service on one interface, instrumented.

Runs the real service loop (DataPlane attached with TC capture, Guard, polling of the capture's ring) in
its own process, started in the server's namespace with nsenter (so /sys/fs/bpf stays the
host's). With --record, two hooks record kernel-monotonic timestamps for time_to_ban.py, and
cost one list append each and are kept to the end (the rate ladders do not ask for them: the
service itself keeps nothing per response):
  - every captured response: (destination, kernel ktime at the TC hook, time Python got it);
  - every ban written to the map: (target, time before the map write, time after).
Prints "ready" once attached; on SIGTERM stops, detaches and writes the records as JSON.

    python -m benchmarks.guard_proc IFACE WORKDIR [--maxretry N] [--xdp-mode native]
        [--fleet-redis URL [--fleet-counting]] [--hep-listen 127.0.0.1:9060] [--kernel-ban]
        [--record]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from benchmarks.common import ROOT  # noqa: F401  (puts the repository on sys.path)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("iface")
    parser.add_argument("workdir")
    parser.add_argument("--maxretry", type=int, default=5)
    parser.add_argument("--xdp-mode", default="native")
    parser.add_argument("--capacity", type=int, default=1_048_576)
    parser.add_argument("--fleet-redis", default="")
    parser.add_argument("--fleet-counting", action="store_true")
    parser.add_argument("--hep-listen", default="")
    parser.add_argument("--kernel-ban", action="store_true")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    from fastban.config import load_settings
    from fastban.service import Service

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = load_settings(None, {
        "maxretry": args.maxretry, "findtime": 3600, "bantime": 3600,
        "state_file": os.path.join(args.workdir, "state.msgpack"),
        "control_socket": os.path.join(args.workdir, "control.sock"),
        "map_capacity": args.capacity, "xdp_mode": args.xdp_mode,
        "fleet_redis": args.fleet_redis, "fleet_counting": args.fleet_counting,
        "fleet_name": "bench", "edge_name": "edge-rate", "hep_listen": args.hep_listen,
        "kernel_ban": args.kernel_ban,
    })
    service = Service(settings, args.iface, detach_on_exit=True)
    dp = service.dataplane
    captured, bans = [], []
    clock = time.monotonic_ns

    if args.record:
        # the address object, not its str(): formatting it per response would slow the guard
        dp.on_capture(lambda r: captured.append((r.dst, r.ktime_ns, clock())))
        real_ban = dp.ban

        def ban(target, expires_ns=0):
            before = clock()
            real_ban(target, expires_ns)
            bans.append((target, before, clock()))

        dp.ban = ban
    print("ready", service.mode, flush=True)
    try:
        service.run()
    finally:
        with open(os.path.join(args.workdir, "records.json"), "w") as f:
            json.dump({"captured": [(str(dst), *times) for dst, *times in captured],
                       "bans": [(str(target), *times) for target, *times in bans],
                       "stats": service.guard.stats()}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
