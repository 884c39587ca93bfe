"""Per-packet cost of fastban's XDP program, in the kernel, with BPF_PROG_TEST_RUN.

A DataPlane (capacity 1,048,576) is loaded and attached on a veth inside a throwaway namespace;
its bans_v4 / bans_v6 maps are filled to 0, 10, 1k, 100k and 1M bans each (batched bpf()
updates through the pinned maps: filling is not what this measures, scale.py does that). For
each level, one IPv4/IPv6 UDP frame from a source banned for good, one banned with an expiry
(as the guard bans: the program then reads the clock) and one not banned is run
`repeat` times (>= 1,000,000) by the kernel, which reports the average ns per run. Each figure is
the median of `trials` such runs. An empty XDP program (return XDP_PASS) measured the same way
gives the fixed cost of the test harness itself; "net" figures subtract it.

The 1M-to-10 ratio is measured side by side: a second DataPlane holding 10 bans per family is
run alternately with the main one, trial by trial, so noise from other work on the machine hits
both; the sequential ratio (10-ban level measured earlier) is kept too.

Caveat: BPF_PROG_TEST_RUN runs the same frame over and over, so the looked-up hash bucket stays
in cache; it shows the program's cost and that the lookup does not grow with the map. The
cold-cache behaviour with many distinct sources is in drop_rig.py.

    .venv/bin/python -m benchmarks.xdp_cost [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import time

from benchmarks import bpfsys
from benchmarks.common import (BENCH_PIN_ROOT, log, median, save_json, udp_frame,
                               v4_addresses, v6_addresses, SIP_OPTIONS)

LEVELS = (0, 10, 1_000, 100_000, 1_000_000)
CAPACITY = 1_048_576
PROBES = {
    4: {"banned": "198.18.0.1", "unbanned": "198.18.0.2", "banned_timed": "198.18.0.3",
        "dst": "198.19.0.1"},
    6: {"banned": "2001:db8:ffff::1", "unbanned": "2001:db8:ffff::2",
        "banned_timed": "2001:db8:ffff::3", "dst": "2001:db8:fffe::1"},
}
KINDS = ("banned", "banned_timed", "unbanned")     # permanent ban, ban with an expiry, none
XDP_VERDICT = {1: "drop", 2: "pass"}


def _empty_program():
    from bcc import BPF
    b = BPF(text="int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }")
    return b, b.load_func("xdp_pass", BPF.XDP)


# Pieces of the program measured alone, to say where its time goes.
PARTS_SOURCE = r"""
#include <linux/ip.h>
struct lpm4 { __u32 prefixlen; __u8 addr[4]; };
struct val { __u64 expires_ns; __u64 hits; };
BPF_PERCPU_ARRAY(cnt, __u64, 8);
BPF_ARRAY(cfg, __u32, 4);
BPF_F_TABLE("lpm_trie", struct lpm4, __u32, trie, 1024, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", __be32, struct val, big, 1048576, BPF_F_NO_PREALLOC);
int p_pass(struct xdp_md *ctx) { return XDP_PASS; }
int p_ktime(struct xdp_md *ctx) { return bpf_ktime_get_ns() == 1 ? XDP_DROP : XDP_PASS; }
int p_ktime_coarse(struct xdp_md *ctx) {
    return bpf_ktime_get_coarse_ns() == 1 ? XDP_DROP : XDP_PASS; }
int p_counter(struct xdp_md *ctx) {
    __u32 i = 0; __u64 *v = cnt.lookup(&i); if (v) *v += 1; return XDP_PASS; }
int p_config(struct xdp_md *ctx) {
    __u32 i = 0; __u32 *v = cfg.lookup(&i); return v && *v ? XDP_DROP : XDP_PASS; }
int p_lpm_empty(struct xdp_md *ctx) {
    struct lpm4 k = {.prefixlen = 32}; __builtin_memcpy(k.addr, "\x01\x02\x03\x04", 4);
    return trie.lookup(&k) ? XDP_DROP : XDP_PASS; }
int p_hash_hit(struct xdp_md *ctx) {
    __be32 k = 0x01020304; struct val *v = big.lookup(&k);
    return v ? XDP_DROP : XDP_PASS; }
int p_hash_hit_atomic(struct xdp_md *ctx) {
    __be32 k = 0x01020304; struct val *v = big.lookup(&k);
    if (v) { __sync_fetch_and_add(&v->hits, 1); return XDP_DROP; } return XDP_PASS; }
"""
PARTS = ("p_pass", "p_ktime", "p_ktime_coarse", "p_counter", "p_config", "p_lpm_empty", "p_hash_hit",
         "p_hash_hit_atomic")


def measure_parts(frame: bytes, repeat: int, trials: int) -> dict:
    """ns per run of each piece alone (the hash map holds 1M entries plus the key looked up)."""
    from bcc import BPF
    b = BPF(text=PARTS_SOURCE, cflags=["-w"])
    try:
        big_fd = b["big"].map_fd
        keys = b"".join(v4_addresses(1_000_000)) + (0x01020304).to_bytes(4, "little")
        bpfsys.fill_map(big_fd, keys, 4, bytes(16))
        parts = {}
        for name in PARTS:
            fn = b.load_func(name, BPF.XDP)
            parts[name[2:]] = _measure(fn.fd, frame, repeat, trials)[1]
        return parts
    finally:
        b.cleanup()


def _measure(fd: int, frame: bytes, repeat: int, trials: int) -> tuple[int, float, list]:
    runs, verdict = [], None
    for _ in range(trials):
        verdict, ns = bpfsys.prog_test_run(fd, frame, repeat)
        runs.append(ns)
    return verdict, median(runs), runs


def _side_by_side(fd: int, ref_fd: int, frame: bytes, repeat: int, trials: int):
    """Trials of two programs alternated, so machine noise hits both alike."""
    runs, ref_runs, verdicts = [], [], set()
    for _ in range(trials):
        verdict, ns = bpfsys.prog_test_run(fd, frame, repeat)
        _, ref_ns = bpfsys.prog_test_run(ref_fd, frame, repeat)
        verdicts.add(verdict)
        runs.append(ns)
        ref_runs.append(ref_ns)
    return verdicts, runs, ref_runs


def _prog_fd(dp) -> int:
    fd = getattr(dp, "xdp_prog_fd", None)
    fd = fd() if callable(fd) else fd
    return dp._xdp_fn.fd if fd is None else fd


def _ban_probes(dp) -> None:
    for fam in (4, 6):
        dp.ban(ipaddress.ip_address(PROBES[fam]["banned"]))
        dp.ban(ipaddress.ip_address(PROBES[fam]["banned_timed"]),
               time.monotonic_ns() + 3600 * 10**9)


def run(quick: bool = False, repeat: int = 1_000_000, trials: int = 5) -> dict:
    from fastban.lab import netns
    from fastban.dataplane import DataPlane, remove_pins

    if quick:
        trials = 3
    trials_side = max(trials, 7)
    frames = {(fam, kind): udp_frame(PROBES[fam][kind], PROBES[fam]["dst"], 5060, 5060,
                                     SIP_OPTIONS)
              for fam in (4, 6) for kind in KINDS}
    results = {"repeat": repeat, "trials": trials, "capacity": CAPACITY, "levels": [],
               "fill_rate_batched": {}}
    with netns.Lab() as lab:
        ns_a, ns_b = lab.namespace("xdp"), lab.namespace("peer")
        link = lab.link(ns_a, ns_b, "10.231.0.1/24", "10.231.0.2/24")
        with ns_a.entered():
            t0 = time.perf_counter()
            dp = DataPlane(link.a, capacity=CAPACITY, capture="none", pin_root=BENCH_PIN_ROOT)
            results["load_seconds"] = round(time.perf_counter() - t0, 2)
            # the reference: the same program with 10 bans, measured alternately with dp
            ref = DataPlane(link.a, capacity=CAPACITY, capture="none",
                            pin_root=f"{BENCH_PIN_ROOT}/ref")
            try:
                results["xdp_mode"] = dp.attach("native")
                empty_bpf, empty_fn = _empty_program()
                prog_fd, ref_fd = _prog_fd(dp), _prog_fd(ref)
                _ban_probes(dp)
                _ban_probes(ref)
                for address in v4_addresses(10) + v6_addresses(10):
                    ref.ban(ipaddress.ip_address(address))
                _measure(prog_fd, frames[(4, "banned")], repeat, trials)      # warm up
                maps = {4: bpfsys.obj_get(os.path.join(dp.pin_dir, "bans_v4")),
                        6: bpfsys.obj_get(os.path.join(dp.pin_dir, "bans_v6"))}
                value = bytes(16)
                filled = 0
                for level in LEVELS:
                    if level > filled:
                        add4 = b"".join(v4_addresses(level - filled, start=filled + 1))
                        add6 = b"".join(v6_addresses(level - filled, start=filled + 1))
                        t0 = time.perf_counter()
                        bpfsys.fill_map(maps[4], add4, 4, value)
                        bpfsys.fill_map(maps[6], add6, 16, value)
                        took = time.perf_counter() - t0
                        if level - filled >= 100_000:
                            results["fill_rate_batched"][level] = round(2 * (level - filled) / took)
                        filled = level
                    log(f"xdp_cost: {level} bans per family, measuring")
                    row = {"bans": level}
                    _, base, _ = _measure(empty_fn.fd, frames[(4, "unbanned")], repeat, trials)
                    row["empty_program_ns"] = base
                    for (fam, kind), frame in frames.items():
                        verdicts, runs, ref_runs = _side_by_side(prog_fd, ref_fd, frame, repeat,
                                                                 trials_side)
                        expected = "pass" if kind == "unbanned" else "drop"
                        got = {XDP_VERDICT.get(v, str(v)) for v in verdicts}
                        if got != {expected}:
                            raise RuntimeError(f"IPv{fam} {kind}: verdict {got}, expected "
                                               f"{expected}")
                        row[f"v{fam}_{kind}_ns"] = median(runs)
                        row[f"v{fam}_{kind}_runs"] = runs
                        row[f"v{fam}_{kind}_ref10_ns"] = median(ref_runs)
                        row[f"v{fam}_{kind}_ratio_to_ref10"] = round(
                            median([a / b for a, b in zip(runs, ref_runs)]), 3)
                    results["levels"].append(row)
                log("xdp_cost: pieces of the program alone")
                results["parts_ns"] = measure_parts(frames[(4, "unbanned")], repeat, trials)
                for fd in maps.values():
                    os.close(fd)
                empty_bpf.cleanup()
            finally:
                dp.detach()
                dp.close()
                remove_pins(dp.pin_dir)
                ref.close()
                remove_pins(ref.pin_dir)
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.dirname(ref.pin_dir))
    _summarise(results)
    return results


def _summarise(results: dict) -> None:
    levels = {row["bans"]: row for row in results["levels"]}
    ref, top = levels.get(10), levels.get(max(levels))
    summary = {}
    for key in [f"v{fam}_{kind}_ns" for fam in (4, 6) for kind in KINDS]:
        case = key[:-3]
        summary[case] = {
            "at_10": ref[key], "at_1M": top[key],
            # the ratio measured side by side: 1M-ban program and 10-ban program alternated
            "ratio_1M_to_10": top[f"{case}_ratio_to_ref10"],
            "ratio_1M_to_10_sequential": round(top[key] / ref[key], 3),
            "net_at_1M": top[key] - top["empty_program_ns"]}
    worst = max(v["at_1M"] for v in summary.values())
    worst_ratio = max(v["ratio_1M_to_10"] for v in summary.values())
    summary["worst_at_1M_ns"] = worst
    summary["worst_ratio"] = worst_ratio
    summary["target_met"] = worst <= 60 and worst_ratio <= 1.3
    results["summary"] = summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=1_000_000)
    args = parser.parse_args()
    results = run(quick=args.quick, repeat=args.repeat)
    save_json("xdp_cost", results)
    for row in results["levels"]:
        print(f"{row['bans']:>9} bans: empty {row['empty_program_ns']:.0f} ns | "
              + " | ".join(f"{k[:-3]} {row[k]:.0f}" for k in row
                           if k.endswith("_ns") and k[1] in "46" and "ref10" not in k))
    print("pieces alone (ns):", results["parts_ns"])
    print(json.dumps(results["summary"], indent=1))


if __name__ == "__main__":
    main()
