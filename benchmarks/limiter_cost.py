"""Per-packet cost of the per-source rate limit in XDP (bpf/rate_limit.h), BPF_PROG_TEST_RUN.

A DataPlane (capture none) is loaded on a veth inside a throwaway namespace, and an unbanned
SIP request (an OPTIONS datagram to port 5060, IPv4 and IPv6) is run `repeat` times by the
kernel in three settings, alternated trial by trial so that machine noise hits all alike:

- off: rate_limit 0 (the default): the program's path for an unbanned packet as before;
- admitted: a limit the probe never reaches (1,000,000/s, burst 2^31): the bucket's lookup and
  atomic update, and the trust lookup before it;
- limited: rate 1/s, burst 1: the probe is over its rate and dropped;
- trusted: rate 1/s, from a trusted source (dp.trust): what the limiter costs before its
  bucket (the classification of the request, the clock, the trust lookup), so admitted -
  trusted is the bucket's own cost.

That is done with the rate limit's table empty and then holding 1,000,000 tracked sources
(written with batched bpf() updates through the pin). Each figure is the median of `trials`.
As in xdp_cost.py, the same frame is run over and over, so its bucket stays in cache; the
pieces measured alone there (the clock, a hash hit, an empty LPM trie) are measured here too.

    .venv/bin/python -m benchmarks.limiter_cost [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import time

from benchmarks import bpfsys
from benchmarks.common import (BENCH_PIN_ROOT, log, map_memlock, median, save_json,
                               udp_frame, v4_addresses, SIP_OPTIONS)
from benchmarks.xdp_cost import measure_parts

TRACKED = 1_000_000
TABLE_ENTRIES = 1 << 20        # rate_limit_sources for the run: room for TRACKED and the probes
PROBES = {4: ("198.18.0.2", "198.19.0.1"), 6: ("2001:db8:ffff::2", "2001:db8:fffe::1")}
TRUSTED = {4: "198.18.0.3", 6: "2001:db8:ffff::3"}
SETTINGS = {"off": (0, 0), "admitted": (1_000_000, 1 << 31), "limited": (1, 1),
            "trusted": (1, 1)}
EXPECTED = {"off": 2, "admitted": 2, "limited": 1, "trusted": 2}    # XDP_PASS, XDP_DROP
MEASURED = ("admitted", "limited", "trusted")
STATE_SIZE = 24                                             # struct fb_rate_state


def _mapped(packed_v4: bytes) -> bytes:
    return b"\0" * 10 + b"\xff\xff" + packed_v4


def _measure_level(dp, prog_fd: int, frames: dict, repeat: int, trials: int) -> dict:
    runs = {(fam, case): [] for fam in PROBES for case in SETTINGS}
    for _ in range(trials):
        for (fam, case), found in runs.items():
            dp.set_rate_limit(*SETTINGS[case])
            frame = frames[(fam, "trusted" if case == "trusted" else "probe")]
            verdict, ns = bpfsys.prog_test_run(prog_fd, frame, repeat)
            if verdict != EXPECTED[case]:
                raise RuntimeError(f"IPv{fam} {case}: verdict {verdict}, expected "
                                   f"{EXPECTED[case]}")
            found.append(ns)
    row = {}
    for (fam, case), found in runs.items():
        row[f"v{fam}_{case}_ns"] = median(found)
        row[f"v{fam}_{case}_runs"] = found
    for fam in PROBES:
        off = runs[(fam, "off")]
        for case in MEASURED:
            row[f"v{fam}_{case}_ratio_to_off"] = round(
                median([a / b for a, b in zip(runs[(fam, case)], off)]), 3)
            row[f"v{fam}_{case}_extra_ns"] = round(row[f"v{fam}_{case}_ns"]
                                                   - row[f"v{fam}_off_ns"], 1)
    return row


def run(quick: bool = False, repeat: int = 1_000_000, trials: int = 7) -> dict:
    from fastban.dataplane import DataPlane, remove_pins
    from fastban.lab import netns

    if quick:
        trials, repeat = 3, min(repeat, 300_000)
    frames = {}
    for fam, (src, dst) in PROBES.items():
        frames[(fam, "probe")] = udp_frame(src, dst, 5060, 5060, SIP_OPTIONS)
        frames[(fam, "trusted")] = udp_frame(TRUSTED[fam], dst, 5060, 5060, SIP_OPTIONS)
    results = {"repeat": repeat, "trials": trials, "levels": []}
    with netns.Lab() as lab:
        ns_a, ns_b = lab.namespace("lim"), lab.namespace("limpeer")
        link = lab.link(ns_a, ns_b, "10.232.0.1/24", "10.232.0.2/24")
        with ns_a.entered():
            dp = DataPlane(link.a, capture="none", pin_root=BENCH_PIN_ROOT,
                           rate_entries=TABLE_ENTRIES)
        try:
            with ns_a.entered():
                results["xdp_mode"] = dp.attach("native")
            prog_fd = dp.xdp_prog_fd
            for address in TRUSTED.values():
                dp.trust(ipaddress.ip_address(address), time.monotonic_ns() + 3600 * 10**9)
            table = bpfsys.obj_get(os.path.join(dp.pin_dir, "rate_limit"))
            try:
                for level in (0, TRACKED):
                    if level:
                        log(f"limiter_cost: filling {level:,} tracked sources")
                        keys = b"".join(_mapped(a) for a in v4_addresses(level, start=1000))
                        bpfsys.fill_map(table, keys, 16, bytes(STATE_SIZE))
                    log(f"limiter_cost: {level:,} tracked sources, measuring")
                    row = {"tracked_sources_filled": level}
                    row.update(_measure_level(dp, prog_fd, frames, repeat, trials))
                    row["tracked_sources_in_table"] = dp.tracked_sources()
                    results["levels"].append(row)
                log("limiter_cost: pieces alone (benchmarks/xdp_cost.py)")
                results["parts_ns"] = measure_parts(frames[(4, "probe")], repeat, trials)
                results["table_memlock_bytes"] = map_memlock(table)
                results["table_max_entries"] = dp._tables["rate_limit"].max_entries
            finally:
                os.close(table)
        finally:
            with ns_a.entered():
                dp.detach()
            dp.close()
            remove_pins(dp.pin_dir)
            with contextlib.suppress(OSError):
                os.rmdir(BENCH_PIN_ROOT)
    top = results["levels"][-1]
    results["summary"] = {
        f"v{fam}_{case}": {"ns": top[f"v{fam}_{case}_ns"],
                           "extra_ns_over_off": top[f"v{fam}_{case}_extra_ns"],
                           "ratio_to_off": top[f"v{fam}_{case}_ratio_to_off"]}
        for fam in PROBES for case in MEASURED}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=1_000_000)
    args = parser.parse_args()
    results = run(quick=args.quick, repeat=args.repeat)
    save_json("limiter_cost", results)
    for row in results["levels"]:
        print(f"{row['tracked_sources_filled']:>9} tracked: " + " | ".join(
            f"{k[:-3]} {row[k]:.0f}" for k in row if k.endswith("_ns") and "extra" not in k))
    print("pieces alone (ns):", results["parts_ns"])
    print(f"table: {results['table_max_entries']:,} entries, "
          f"{results['table_memlock_bytes']:,} bytes memlock")
    print(json.dumps(results["summary"], indent=1))


if __name__ == "__main__":
    main()
