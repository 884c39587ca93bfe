"""`make bench`: runs every benchmark, prints one table, writes JSON, PNG plots and RESULTS.md.

Each part runs in its own process (python -m benchmarks.<part>) and writes
benchmarks/results/<part>.json; a part that fails is reported and the others still run. Then the
table (each figure against its target) is printed and written to benchmarks/RESULTS.md with the
machine it ran on; plots go to benchmarks/results/*.png (when matplotlib is installed).

    .venv/bin/python -m benchmarks.run                 # everything, ~10-15 minutes
    .venv/bin/python -m benchmarks.run --quick         # shorter runs, same table
    .venv/bin/python -m benchmarks.run --only xdp_cost,scale
    .venv/bin/python -m benchmarks.run --report        # table from the JSON already there

Needs root (BPF, namespaces), gcc, nft, ipset, iptables; uses only namespaces it creates.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from benchmarks.common import HERE, RESULTS, ROOT, log, machine, save_json, sweep_pins

PARTS = ("xdp_cost", "drop_rig", "time_to_ban", "kernel_ban", "parser", "controller_rate",
         "scale", "capture_cost", "fleet", "hep_rate", "limiter_cost", "overload")
TIMEOUTS = {"xdp_cost": 300, "drop_rig": 900, "time_to_ban": 600, "kernel_ban": 600,
            "parser": 600,
            "controller_rate": 600, "scale": 900, "capture_cost": 600, "fleet": 1500,
            "hep_rate": 600, "limiter_cost": 600, "overload": 600}


def run_part(part: str, quick: bool) -> dict:
    started = time.monotonic()
    if part == "parser":
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               str(HERE / "test_parser_bench.py"), str(HERE / "test_rules_bench.py"),
               str(HERE / "test_hep_bench.py"),
               "--benchmark-only", f"--benchmark-json={RESULTS / 'parser_raw.json'}"]
        if quick:
            cmd += ["--benchmark-max-time=0.2", "--benchmark-min-rounds=3"]
    else:
        cmd = [sys.executable, "-m", f"benchmarks.{part}"] + (["--quick"] if quick else [])
    log(f"run: {part}: {' '.join(cmd[2:])}")
    try:
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                                timeout=TIMEOUTS[part])
    except subprocess.TimeoutExpired:
        return {"part": part, "ok": False, "error": f"timed out after {TIMEOUTS[part]} s"}
    took = round(time.monotonic() - started, 1)
    (RESULTS / f"{part}.log").write_text(result.stdout + "\n--- stderr ---\n" + result.stderr)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        return {"part": part, "ok": False, "seconds": took, "error": " | ".join(tail)}
    if part == "parser":
        _parser_json()
    return {"part": part, "ok": True, "seconds": took}


def _parser_json() -> None:
    raw = json.loads((RESULTS / "parser_raw.json").read_text())
    rows = {}
    for bench in raw["benchmarks"]:
        info = bench.get("extra_info", {})
        rows[bench["name"]] = {"responses_per_s": info.get("responses_per_second"),
                               "ops_per_s": round(bench["stats"]["ops"]),
                               "median_s": bench["stats"]["median"], **info}
    save_json("parser", rows)


def _load(part: str):
    path = RESULTS / f"{part}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(value, unit="") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and value != int(value):
        text = f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"
    else:
        text = f"{int(value):,}"
    return f"{text}{unit}"


def _mark(met) -> str:
    return {True: "yes", False: "**no**", None: "-"}[met]


def table() -> list[tuple]:
    """(measure, figure, target, met) rows from the JSON results present."""
    rows = []
    for section in (_xdp_rows, _drop_rows, _ttb_rows, _kernel_ban_rows, _parser_rows,
                    _controller_rows, _hep_rows, _scale_rows, _capture_rows, _fleet_rows,
                    _limiter_rows, _overload_rows):
        try:
            section(rows)
        except (KeyError, TypeError, ValueError, IndexError) as error:
            rows.append((f"{section.__name__[1:-5]}: results unreadable", repr(error), "", None))
    return rows


def _xdp_rows(rows):
    x = _load("xdp_cost")
    if x:
        s = x["summary"]
        levels = {row["bans"]: row for row in x["levels"]}
        for case in [k for k in s if isinstance(s[k], dict)]:
            v = s[case]
            rows.append((f"XDP cost per packet, {case.replace('_', ' ')}, 1M bans "
                         f"(BPF_PROG_TEST_RUN, {x['repeat']:,} repeats)",
                         f"{v['at_1M']} ns ({v['ratio_1M_to_10']}x of 10 bans side by side; "
                         f"{v['net_at_1M']} ns net of an empty program)",
                         "<= 60 ns, <= 1.3x", v["at_1M"] <= 60 and v["ratio_1M_to_10"] <= 1.3))
        rows.append(("XDP cost, empty XDP program (harness floor)",
                     f"{levels[max(levels)]['empty_program_ns']} ns", "", None))
        parts = x.get("parts_ns", {})
        if parts:
            rows.append(("XDP pieces alone: bpf_ktime_get_ns / coarse / hash hit (1M) / "
                         "empty LPM / pass",
                         " / ".join(str(parts.get(k, "n/a")) for k in
                                    ("ktime", "ktime_coarse", "hash_hit", "lpm_empty", "pass"))
                         + " ns", "", None))


def _drop_rows(rows):
    d = _load("drop_rig")
    if d:
        drop = d["drop"]
        for name, row in drop.items():
            rows.append((f"Drop test (10k banned senders), {name}",
                         f"{_fmt(row['pps'])} pkt/s ({row['pps_vs_nft_netdev']}x nft-netdev); "
                         f"softirq {row['softirq_s_per_mpkt']} s/Mpkt "
                         f"({row['softirq_vs_nft_netdev']}x); sender share "
                         f"{row['sender_share']}",
                         ">= nft set and ipset" if name.startswith("xdp-native") else "",
                         (row["pps"] >= max(drop[n]["pps"] for n in
                                            ("nft-netdev", "nft-input", "ipset")))
                         if name.startswith("xdp-") else None))
        for size, rows_h in d["honest"].items():
            for name, row in rows_h.items():
                target, met = "", None
                if str(size) == "10000" and name.startswith("xdp-native"):
                    target = ">= 20x f2b, >= 0.9x none"
                    met = row["vs_f2b"] >= 20 and row["vs_no_filter"] >= 0.9
                rows.append((f"Honest traffic, {int(size):,} bans, {name}",
                             f"{_fmt(row['pps'])} pkt/s ({row['vs_no_filter']}x none, "
                             f"{row['vs_f2b']}x f2b)", target, met))


def _kernel_ban_rows(rows):
    t = _load("kernel_ban")
    if not t:
        return
    for mode, label in (("user", "decided in user space"), ("armed", "armed, in the kernel")):
        for key, r in sorted(t.get(mode, {}).items()):
            if not key.startswith("every_"):
                continue
            after = r["packets_after_threshold"]
            rows.append((f"Attacker packets after the threshold, {label}, "
                         f"{r['requests_per_s']:,} requests/s ({r['banned']}/{t['attackers']} "
                         f"banned; of {r.get('arms_read', 0)} armed entries read, "
                         f"{r['kernel_banned']} banned by the kernel)",
                         f"p50 {_fmt(after['p50'])}, p99 {_fmt(after['p99'])}, max "
                         f"{_fmt(after['max'])}", "<= 1", after["p99"] <= 1))
            first = r["first_dropped_probe_after_t_n_us"]
            rows.append((f"Time to ban, {label}, {r['requests_per_s']:,} requests/s "
                         f"(the threshold-crossing 401 sent -> first dropped probe, as in Time "
                         f"to ban; resolution {1e6 / r['requests_per_s']:.0f} us)",
                         f"p50 {_fmt(first['p50'])} us, p99 {_fmt(first['p99'])} us",
                         "p99 <= 100 us" if mode == "armed" else "",
                         first["p99"] <= 100 if mode == "armed" else None))
            if mode == "armed":
                own = r["armed_response_to_ban_us"]
                rows.append((f"... the kernel's part: that 401 at TC egress -> ban written, "
                             f"kernel clock, {r['requests_per_s']:,} requests/s",
                             f"p50 {_fmt(own['p50'])} us, p99 {_fmt(own['p99'])} us", "", None))
                armed = r["armed_request_to_ban_us"]
                rows.append((f"... from the credentialed request at TC ingress (adds this rig's "
                             f"Python responder reading it and answering), kernel clock, "
                             f"{armed['count']} bans",
                             f"p50 {_fmt(armed['p50'])} us, p99 {_fmt(armed['p99'])} us", "",
                             None))


def _ttb_rows(rows):
    t = _load("time_to_ban")
    if t:
        for sched in ("other", "fifo"):
            r = t.get(sched)
            if not r:
                continue
            lat, after = r["time_to_ban_us"], r["packets_after_threshold"]
            rows.append((f"Time to ban, guard {sched} scheduling ({r['banned']}/{t['attackers']}"
                         f" banned)", f"p50 {_fmt(lat['p50'])} us, p99 {_fmt(lat['p99'])} us",
                         "p99 <= 1 ms", lat["p99"] <= 1000))
            rows.append((f"Attacker packets after the threshold / after the map write "
                         f"({sched}; probe every {t['probe_interval_us']} us)",
                         f"p50 {_fmt(after['p50'])}, p99 {_fmt(after['p99'])} / p99 "
                         f"{_fmt(r['packets_after_decision']['p99'])}; <= 1 packet (p99) for "
                         f"attackers up to {_fmt(r.get('attacker_rate_with_at_most_1_packet_p99'))}"
                         f" requests/s", "<= 1", after["p99"] <= 1))
            st = r.get("stages_us", {})
            if st:
                rows.append((f"Time to ban stages p50 ({sched}): wire->Python, Python->map "
                             f"write, map write",
                             " / ".join(f"{_fmt(st[k]['p50'])} us" for k in
                                        ("wire_to_python_us", "python_to_map_write_us",
                                         "map_write_us") if k in st), "", None))


def _parser_rows(rows):
    p = _load("parser")
    if p:
        for name, row in p.items():
            if row.get("responses_per_s") and "parse" in name:
                target = ">= 1M/s" if "batch[cython]" in name else ""
                met = row["responses_per_s"] >= 1_000_000 if target else None
                rows.append((f"Parser {name}", f"{_fmt(row['responses_per_s'])} responses/s",
                             target, met))
        for name, row in p.items():
            if name.startswith("test_hep_") and row.get("messages_per_second"):
                target = ">= 500k/s" if name == "test_hep_decode_and_parse_batch[cython]" else ""
                met = row["messages_per_second"] >= 500_000 if target else None
                rows.append((f"HEP {name[len('test_hep_'):]}",
                             f"{_fmt(row['messages_per_second'])} messages/s", target, met))
        for name, row in p.items():
            if "parse" not in name and not name.startswith("test_hep_"):
                units = [k for k in row if k.endswith("_per_second")]
                figure = (" ".join(f"{_fmt(row[k])} {k.replace('_per_second', '')}/s"
                                   for k in units) or f"{_fmt(row['ops_per_s'])} ops/s")
                rows.append((f"Rules bench (by its owner) {name}", figure, "", None))


def _controller_rows(rows):
    c = _load("controller_rate")
    if c:
        steps = ", ".join(f"{_fmt(s['offered_per_s'])}: lost {s['lost_share']:.1%}"
                          for s in c["steps"])
        limit = ""
        if "sender_max_per_s" in c:
            limit = (f"; the sender's most: {_fmt(c['sender_max_per_s'])}/s, "
                     + ("it was the limit" if c["sender_limited_at_sustained"]
                        else "not the limit"))
        rows.append(("Controller: captured responses/s sustained with no loss",
                     f"{_fmt(c['sustained_per_s'])}/s (offered: {steps}{limit})", ">= 200k/s",
                     c["target_met"]))
        st = c.get("stages_alone", {})
        if st:
            rows.append((f"Controller stages alone, us/response (fastest of "
                         f"{st.get('rounds', 1)} rounds): decode (the pure decoder), parse, "
                         "rules, Guard.handle_packets",
                         f"{st.get('decode_capture_us')} / {st.get('parse_batch_us')} / "
                         f"{st.get('rules_us')} / {st.get('guard_handle_packets_us')}", "",
                         None))


def _hep_rows(rows):
    h = _load("hep_rate")
    if h:
        steps = ", ".join(f"{_fmt(s['offered_per_s'])}: lost {s['lost']}" for s in h["steps"])
        rows.append(("HEP input: messages/s the guard takes with no loss (UDP on loopback)",
                     f"{_fmt(h['sustained_per_s'])}/s (offered: {steps})"
                     f"{'; the sender was the limit' if h.get('sender_limited') else ''}", "",
                     None))
        st = h.get("stages_alone", {})
        if st:
            rows.append(("HEP stages alone, us/message: HepFeed.datagram, Guard.handle_hep; "
                         "the wire's Guard.handle_packets beside them",
                         f"{st.get('hep_feed_us')} / {st.get('guard_handle_hep_us')}; "
                         f"{st.get('wire_guard_handle_packets_us')}", "", None))


def _scale_rows(rows):
    s = _load("scale")
    if s:
        n = s["bans"]
        rows += [
            (f"Map memory, {n:,} IPv4 bans (capacity 1,048,576)",
             f"{s['map_memlock_bytes'] / 2**20:.1f} MiB ({s['map_bytes_per_ban']} B/ban + "
             f"{s['map_memlock_empty'] / 2**20:.1f} MiB empty)", "", None),
            (f"Controller memory growth, {n:,} bans",
             f"{s['controller_rss_growth_bytes'] / 2**20:.0f} MiB "
             f"({s['controller_bytes_per_ban']} B/ban)", "", None),
            ("Ban rate: DataPlane.ban / controller (rules path)",
             f"{_fmt(s['dataplane_ban_per_s'])}/s / {_fmt(s['controller_ban_per_s'])}/s", "",
             None),
            ("Unban rate: DataPlane.unban", f"{_fmt(s['dataplane_unban_per_s'])}/s", "", None),
            (f"Expiring {n:,} bans (Guard.tick until none left)",
             f"{s['expire_all_seconds']} s ({_fmt(s['expired_per_s'])}/s) in "
             f"{s.get('expire_ticks', 1)} ticks, longest {s.get('expire_longest_tick_seconds', '?')} s",
             "", None),
            (f"State with {n:,} bans: whole-state write / the guard's saves while making them "
             f"(every 10,000, journal) / its save after one more change",
             f"{s['state_save_seconds']} s, {s['state_file_bytes'] / 2**20:.0f} MiB / "
             f"{s.get('state_saves_during_fill_seconds', '-')} s in all / "
             f"{s.get('state_save_one_change_seconds', '-')} s", "", None),
            (f"Ban / unban by hand with {n:,} bans (one call each)",
             f"{s['guard_ban_by_hand_seconds_each'][0]} s / "
             f"{s['guard_unban_by_hand_seconds_each'][0]} s", "", None),
            (f"DataPlane.bans() listing {n:,}", f"{s['list_bans_seconds']} s", "", None),
            (f"fastban list --json through the control socket, {n:,} bans",
             f"{s.get('list_json_socket_seconds', '-')} s, {_fmt(s.get('list_json_rows'))} rows, "
             f"{(s.get('list_json_bytes') or 0) / 2**20:.0f} MiB, exit "
             f"{s.get('list_json_returncode', '-')}", "", None),
        ]


def _overload_rows(rows):
    o = _load("overload")
    if o:
        off, on = o["off"], o["on"]
        rows.append((f"Honest phone under flood: registrations that succeed during a spoofed "
                     f"REGISTER flood ({o['flood_sources']:,} sources, {_fmt(off['flood_rate'])}"
                     f" / {_fmt(on['flood_rate'])} requests/s) saturating Kamailio "
                     f"({o['server_children']} workers, {_fmt(off['server_answers_per_s'])} "
                     f"answers/s), admission off / on (sip_capacity {_fmt(on['sip_capacity'])})",
                     f"{off['successes']}/{off['registrations']} / "
                     f"{on['successes']}/{on['registrations']}; {_fmt(on['over_capacity_dropped'])}"
                     f" flood requests dropped over capacity", "100% on",
                     on["successes"] == on["registrations"]))


def _fleet_rows(rows):
    f = _load("fleet")
    if f:
        lat, app = f["latency"], f["apply"]
        rows.append((f"Fleet: propagation, ban decided on edge A to the map write on edge B "
                     f"(Redis on a Unix socket, {lat['bans']:,} bans, p50 / p99 / max)",
                     f"{lat['p50_ms']} / {lat['p99_ms']} / {lat['max_ms']} ms", "p99 ≤ 100 ms",
                     lat["p99_ms"] <= 100))
        rows.append((f"Fleet: an edge applying {app['bans']:,} bans from the stream as they are "
                     f"published (at {_fmt(app['publish_per_s'])}/s, publisher and Redis on the "
                     "same 2 vCPUs)", f"{_fmt(app['apply_per_s'])}/s", "", None))
        backlog = f.get("apply_backlog")
        if backlog:
            rows.append((f"Fleet: an edge applying a backlog of {backlog['bans']:,} bans from the "
                         "stream (read after they were all published)",
                         f"{_fmt(backlog['apply_per_s'])}/s", "≥ 50,000/s",
                         backlog["apply_per_s"] >= 50_000))
        cost = f.get("publish_cost")
        if cost:
            alone = cost["alone"]["sustained_per_s"]
            for mode, label in (("fleet", "in a fleet (bans shared, none made)"),
                                ("fleet_counting", "in a fleet with fleet_counting (every "
                                 "failure published)")):
                ran = cost[mode]
                overflow = (ran.get("fleet") or {}).get("publish_overflow", 0)
                rows.append((f"Fleet: the controller's sustained rate {label}, against "
                             f"{_fmt(alone)}/s alone in the same run",
                             f"{_fmt(ran['sustained_per_s'])}/s "
                             f"({ran['sustained_per_s'] / max(1, alone):.2f}x; "
                             f"{_fmt(overflow)} failures over the publish queue)", "", None))
        for c in f["catch_up"]:
            met = c["seconds"] < 30 if c["bans"] >= 1_000_000 else None
            rows.append((f"Fleet: a starting edge catching up on {c['bans']:,} active bans "
                         f"(Redis memory {c['redis_bytes_per_ban']} B/ban)",
                         f"{c['seconds']} s, {_fmt(c['held'])} held",
                         "< 30 s" if met is not None else "", met))


def _capture_rows(rows):
    c = _load("capture_cost")
    if c:
        k = c["kernel"]
        for case, row in k["cases"].items():
            before = (f"; before: {row['before_ns']} ns ({row['now_vs_before']}x)"
                      if "before_ns" in row else "")
            rows.append((f"TC capture per packet, {case} ({row['payload_bytes']} B of SIP; "
                         f"BPF_PROG_TEST_RUN, {k['repeat']:,} repeats)",
                         f"{row['now_ns']} ns{before}", "", None))
        o = c["office"]
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(o["copied_now_by_reason"].items()))
        rows.append((f"NAT office, {o['phones']} phones, {o['seconds']} s: SIP packets on the "
                     f"wire / copied to user space now / copied by the per-address filter of "
                     f"before",
                     f"{o['sip_packets_per_s']}/s / {o['copied_now_per_s']}/s ({reasons}) / "
                     f"{o['copied_before_per_s']}/s (it copied no request, and withheld answers "
                     f"the rules needed); failures live {o['failures_live']}, replay "
                     f"{o['failures_replay']}", "", None))


def _limiter_rows(rows):
    c = _load("limiter_cost")
    if c:
        top = c["levels"][-1]
        for case, v in c["summary"].items():
            rows.append((f"Cost of the limiter, {case.replace('_', ' ')}, "
                         f"{top['tracked_sources_in_table']:,} tracked sources "
                         f"(BPF_PROG_TEST_RUN, {c['repeat']:,} repeats)",
                         f"{v['ns']} ns ({v['extra_ns_over_off']:+} ns, {v['ratio_to_off']}x "
                         f"of the limiter off side by side)", "", None))
        rows.append(("Cost of the limiter: its table's kernel memory (preallocated LRU)",
                     f"{_fmt(c['table_memlock_bytes'])} B for {_fmt(c['table_max_entries'])} "
                     f"sources", "", None))


def render(rows: list[tuple]) -> str:
    lines = ["| measure | figure | target | met |", "|---|---|---|---|"]
    for measure, figure, target, met in rows:
        lines.append(f"| {measure} | {figure} | {target} | {_mark(met) if target else ''} |")
    return "\n".join(lines)


def plots() -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.ticker
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    x = _load("xdp_cost")
    if x:
        fig, ax = plt.subplots(figsize=(6, 4))
        bans = [max(r["bans"], 1) for r in x["levels"]]
        for case in [k[:-3] for k in x["levels"][0]
                     if k.endswith("_ns") and k[1] in "46" and "ref10" not in k]:
            ax.plot(bans, [r[f"{case}_ns"] for r in x["levels"]], marker="o", label=case)
        ax.plot(bans, [r["empty_program_ns"] for r in x["levels"]], "k--", label="empty prog")
        ax.axhline(60, color="red", lw=0.8, label="target 60 ns")
        ax.set_xscale("log")
        ax.set_xlabel("bans per family (0 plotted at 1)")
        ax.set_ylabel("ns per packet (BPF_PROG_TEST_RUN)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(RESULTS / "xdp_cost.png", dpi=110)
        made.append("xdp_cost.png")
    d = _load("drop_rig")
    if d:
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        names = list(d["drop"])
        axes[0].barh(names, [d["drop"][n]["pps"] / 1e3 for n in names])
        axes[0].set_xlabel("dropped kpkt/s (10k banned senders)")
        for ax, size in zip(axes[1:], d["honest"]):
            rows = d["honest"][size]
            names = list(rows)
            ax.barh(names, [rows[n]["pps"] / 1e3 for n in names])
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel(f"honest kpkt/s delivered, {int(size):,} bans")
        fig.tight_layout()
        fig.savefig(RESULTS / "drop_rig.png", dpi=110)
        made.append("drop_rig.png")
    t = _load("time_to_ban")
    if t:
        fig, ax = plt.subplots(figsize=(6, 4))
        for sched in ("other", "fifo"):
            r = t.get(sched)
            if not r:
                continue
            lat = sorted(p["first_dropped_ns"] / 1000 for p in r["per_attacker"] if p["banned"])
            ax.plot(lat, [(i + 1) / len(lat) for i in range(len(lat))], label=sched)
        ax.axvline(1000, color="red", lw=0.8, label="target p99 1 ms")
        ax.set_xscale("log")
        ax.set_xlabel("time to ban, us (N-th 403 sent -> first dropped probe)")
        ax.set_ylabel("share of bans")
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS / "time_to_ban.png", dpi=110)
        made.append("time_to_ban.png")
    c = _load("controller_rate")
    if c:
        fig, ax = plt.subplots(figsize=(6, 4))
        offered = [s["offered_per_s"] for s in c["steps"]]
        ax.plot(offered, [s["parsed_per_s_during_send"] for s in c["steps"]], marker="o",
                label="parsed/s while sending")
        ax.plot(offered, offered, "k:", label="offered")
        ax.set_xlabel("offered responses/s")
        ax.set_ylabel("responses/s")
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS / "controller_rate.png", dpi=110)
        made.append("controller_rate.png")
    return made


NOTES = """\
## Reading the figures

- **XDP cost** is the kernel's own average over >= 1M runs of one frame (BPF_PROG_TEST_RUN),
  median of 7 trials; the empty-program row is the harness floor included in every figure. The
  1M-to-10 ratio is side by side: a second DataPlane with 10 bans runs alternately with the
  1M-ban one. "timed" = a ban with an expiry (every ban the guard makes), for which the
  program reads the (coarse) clock; the other banned rows are permanent bans. One frame
  repeated keeps its hash bucket in cache: this shows the lookup does not grow with the map, not
  the cold-cache cost (the drop rig shows that). The "pieces alone" row is where the time goes:
  bpf_ktime_get_ns() is about a third of the program on this VM; the coarse clock costs a
  third of that.
- **Drop rig** runs on a veth pair, where every packet is already an skb when XDP sees it: veth
  then takes its NAPI path and copies each skb into a page with XDP headroom
  (skb_pp_cow_data), so XDP on veth pays costs a real NIC driver does not have (there XDP runs
  on the DMA buffer before any skb exists). The "xdp-empty-prog" row (an XDP program that
  passes everything) is that veth tax alone. The whole receive path runs in softirq on the
  sender's CPU inside its send calls, so a cheaper filter lets the same sender send more.
  CPU: softirq seconds of the sender's CPU from /proc/stat (tick-sampled: this kernel has no
  IRQ_TIME_ACCOUNTING); sender share = (sender's rusage - that softirq) / sender's rusage.
- **Capacity**: a BPF hash map has roundup_pow_of_two(capacity) buckets whatever it holds; the
  default 1,048,576 is a 16 MiB bucket array of 4 KiB vmalloc pages, so with many distinct
  sources each lookup misses the TLB (costly under nested paging in a VM). The
  "xdp-native-cap131072" rows show the same program with a map sized to the bans at hand.
- **Time to ban** is an upper bound with the probe interval as resolution; the stages come from
  timestamps inside the guard process (TC hook ktime, ring read, map write). Almost all of
  it is user space: waking the guard, then parser + rules + ban record, then the map write
  (one create-only update syscall for a new ban). As a normal process on a CPU shared with other work, the
  wake-up can wait for the running task's slice (HZ=250: 4 ms ticks), which is the p99 tail;
  under SCHED_FIFO that tail goes. Packets after the threshold scale with the attacker's rate:
  the probe stream is 10,000 requests/s; the row gives the rate up to which at most one gets
  through.
- **Controller** loss is the capture's ring buffer overflowing (capture_lost): one 16 MiB ring
  for all CPUs. Each response costs the single Python thread its share of a ring drain (the
  compiled reader decodes each record into a CapturedPacket), then the detection path
  (fastban.detection: message split, parser, rules; every response of the rig is a new Call-ID,
  as in a guessing attack): the "stages alone" row adds up to the ceiling. The guard's maxretry
  is never reached, so no response is skipped as a banned source's would be. The sender's CPU
  also runs the TC program and the ring copy: it tops out near 100-120k responses/s, so the
  higher steps offer what it can. "Sustained" is the highest step with no loss at it and at
  every step below it.
- **Capture** costs are each program's own work on one frame run again and again (no reader
  drains the ring, so once it is full a copy fails after the record is assembled; the baseline's
  perf copy fails at once with no reader). The office
  row counts what crossed the server's interface (a recording), what the kernel copied, and
  what the per-address filter of before copies of that recording (a Python model of it).
- **Scale**: the controller figures are for the Guard as committed when the run was made (see
  the date above); ban/unban by hand and expiry slices are the Guard's choices.
- **Honest phone under flood** (benchmarks/overload.py): one lab, two rounds of the same flood
  (benchmarks/sender.c in the forger, REGISTERs from 65,534 made-up addresses). Round off
  measures Kamailio's answers/s at saturation (the 401s the capture copied); round on sets
  sip_capacity to half of it. The phone logs in before each flood, so it is trusted; it then
  registers once a second during the flood, 2 s for each answer.
"""


def write_results_md(rows, runs, info) -> None:
    m = info
    text = [
        "# fastban benchmark results",
        "",
        f"Latest `make bench` ({'quick' if runs.get('quick') else 'full'} run): {m['date']} on "
        f"{m['host']}: {m['cpus']} vCPU {m['cpu']}, {m['memory_mib']:,} MiB, kernel "
        f"{m['kernel']}, Python {m['python']}. The machine was shared with other work while it "
        f"ran: absolute figures are noisy; each comparison ran side by side in one run.",
        "",
        "How each figure is made: see the docstring at the top of each script in benchmarks/; "
        "raw figures in benchmarks/results/*.json (not committed).",
        "",
        render(rows),
        "",
        NOTES,
        "Parts: " + ", ".join(f"{r['part']} {'ok' if r['ok'] else 'FAILED: ' + r['error']}"
                              f" ({r.get('seconds', '?')} s"
                              + (f", {r['finished']}" if r.get("finished") else "")
                              + (", quick" if r.get("quick") else "") + ")"
                              for r in runs.get("parts", [])),
        "",
    ]
    (HERE / "RESULTS.md").write_text("\n".join(text))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--only", help=f"comma-separated parts of {','.join(PARTS)}")
    parser.add_argument("--report", action="store_true",
                        help="no runs: table, plots and RESULTS.md from the JSON there")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs = {"quick": args.quick, "parts": []}
    if not args.report:
        sweep_pins()
        parts = args.only.split(",") if args.only else PARTS
        for part in parts:
            if part not in PARTS:
                print(f"unknown part {part!r}; parts: {', '.join(PARTS)}", file=sys.stderr)
                return 2
        previous = {r["part"]: r for r in (_load("runs") or {}).get("parts", [])}
        for part in parts:
            result = run_part(part, args.quick)
            result["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            result["quick"] = args.quick
            previous[part] = result
            sweep_pins()
        runs["parts"] = [previous[p] for p in PARTS if p in previous]
        save_json("runs", runs)
    else:
        runs = _load("runs") or runs
    info = machine()
    rows = table()
    save_json("summary", {"machine": info, "runs": runs, "table": rows})
    print(render(rows))
    made = plots()
    if made:
        print("plots:", ", ".join(str(RESULTS / p) for p in made))
    write_results_md(rows, runs, info)
    failed = [r for r in runs["parts"] if not r["ok"]]
    for r in failed:
        print(f"FAILED {r['part']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
