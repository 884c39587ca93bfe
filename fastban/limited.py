"""`fastban limited`: the sources the per-source rate limit is dropping SIP requests of.

It reads the rate limit's pinned kernel map (bpf/rate_limit.h), which holds the same whether
or not a guard is running.
"""

from __future__ import annotations

import json
import sys
import time

from fastban.admin import _common, _iface, _settings
from fastban.dataplane import DataPlane


def add_command(subparsers) -> None:
    limited = subparsers.add_parser("limited", help="sources over the per-source rate limit")
    _common(limited)
    limited.add_argument("--within", type=float, default=60.0, metavar="SECONDS",
                         help="sources limited in the last SECONDS (default 60)")
    limited.add_argument("--all", action="store_true",
                         help="every source limited since the table remembers it")
    limited.add_argument("--json", action="store_true", help="machine-readable output")
    limited.set_defaults(handler=cmd_limited)


def cmd_limited(args) -> int:
    settings = _settings(args)
    with DataPlane.open_pinned(_iface(args, settings)) as dataplane:
        rate, burst = dataplane.rate_limit()
        sources = dataplane.limited_sources(None if args.all else args.within)
    now = time.monotonic_ns()
    rows = [{"address": str(source.address), "requests_dropped": source.limited,
             "seconds_since_last": round((now - source.last_limited_ns) / 1e9, 3)}
            for source in sources]
    if args.json:
        print(json.dumps({"rate_limit": rate, "rate_limit_burst": burst, "sources": rows},
                         indent=2))
        return 0
    out = sys.stdout
    out.write(f"rate limit: {rate} requests/s per source, burst {burst}\n" if rate
              else "rate limit: off\n")
    if not rows:
        out.write("no source is being limited\n")
        return 0
    width = max(len("ADDRESS"), *(len(row["address"]) for row in rows))
    out.write(f"{'ADDRESS':<{width}}  {'DROPPED':>10}  LAST\n")
    for row in rows:
        out.write(f"{row['address']:<{width}}  {row['requests_dropped']:>10}  "
                  f"{row['seconds_since_last']:.1f}s ago\n")
    return 0
