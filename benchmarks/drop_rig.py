"""End-to-end drop throughput and honest traffic on a veth pair, fastban against the usual tools.

Rig: namespace "snd" runs benchmarks/sender.c (AF_PACKET, prebuilt frames, sendmmsg, qdisc
bypassed) pinned to one CPU; namespace "rcv" holds the filter on its veth end. On veth the whole
receive path (and so the filter) runs in softirq on the sender's CPU, inside its send calls, so
the sender's rate is bounded by sender cost + receive cost: a cheaper filter sends more.

CPU accounting (kernel without IRQ_TIME_ACCOUNTING, so tick-sampled at HZ): softirq time of the
sender's CPU from /proc/stat is the receive path (driver, XDP or stack, filter); the sender's own
share is its rusage (utime+stime, which the kernel also charges with the softirq ticks taken in
its context) minus that softirq time.

Filters (each in the same run, same sender, same frames, same banned list):
  none          no filter: the stack takes the packets (UDP, no listener)
  xdp-native    fastban DataPlane, XDP in the veth driver
  xdp-generic   fastban DataPlane, generic (skb) XDP
  nft-netdev    nftables set, netdev ingress hook:  ip saddr @banned drop
  nft-input     nftables set, inet input hook:      ip saddr @banned drop
  ipset         iptables (INPUT) -m set --match-set banned src -j DROP
  xdp-native-cap131072  the same with map capacity 131,072 instead of the default 1,048,576
  xdp-empty-prog  an XDP program that passes everything (native): the cost of XDP on veth
  xdp-drop-all  an XDP program that drops everything (native): the best any XDP filter can do
  f2b-iptables  fail2ban's iptables-multiport action: chain f2b-asterisk, one REJECT rule per
                ban (as MikoPBX ships it); only in the honest-traffic test
The drop test sends only from banned sources (10,000 distinct); the honest test bans 10,000 /
100,000 addresses and sends from 1,024 addresses that are not banned, counting what is delivered
(Ip InDelivers in the receiver's namespace).

    .venv/bin/python -m benchmarks.drop_rig [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks import bpfsys
from benchmarks.common import (BENCH_PIN_ROOT, HERE, RESULTS, cpu_delta, cpu_times, log, median,
                               save_json, udp_frame, v4_addresses)

SND_IP, RCV_IP = "10.230.0.1", "10.230.0.2"
SENDER_CPU = 1
PAYLOAD = b"OPTIONS sip:100@10.230.0.2 SIP/2.0\r\nCall-ID: bench\r\nCSeq: 1 OPTIONS\r\n\r\n"
DEFAULT_CAPACITY = 1_048_576          # fastban's default map_capacity
SMALL_CAPACITY = 131_072              # sized to the bans at hand (room for 100k)
DROP_FILTERS = ("none", "xdp-native", "xdp-generic", f"xdp-native-cap{SMALL_CAPACITY}",
                "xdp-drop-all", "nft-netdev", "nft-input", "ipset")
HONEST_FILTERS = ("none", "f2b-iptables", "ipset", "nft-netdev", "nft-input", "xdp-native",
                  "xdp-generic", f"xdp-native-cap{SMALL_CAPACITY}", "xdp-empty-prog")


def build_sender() -> Path:
    source = HERE / "sender.c"
    binary = RESULTS / "bin" / "sender"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        binary.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


def write_frames(path: Path, sources: list, src_mac: bytes, dst_mac: bytes) -> None:
    with open(path, "wb") as f:
        for packed in sources:
            frame = udp_frame(ipaddress.IPv4Address(packed), RCV_IP, 5060, 5060, PAYLOAD,
                              src_mac=src_mac, dst_mac=dst_mac)
            f.write(struct.pack("<H", len(frame)) + frame)


def _mac(ns, iface) -> bytes:
    text = ns.run(["cat", f"/sys/class/net/{iface}/address"]).stdout.strip()
    return bytes.fromhex(text.replace(":", ""))


def _snmp(ns) -> dict:
    lines = ns.run(["cat", "/proc/net/snmp"]).stdout.splitlines()
    out = {}
    for head, values in zip(lines[0::2], lines[1::2]):
        proto = head.split(":")[0]
        for k, v in zip(head.split()[1:], values.split()[1:]):
            out[f"{proto}.{k}"] = int(v)
    return out


# ---- filters: setup(banned) / dropped() / teardown(), all inside the receiver namespace ----

class Filter:
    name = "none"

    def __init__(self, rig):
        self.rig, self.ns, self.iface = rig, rig.rcv, rig.link.b

    def setup(self, banned: list) -> None:
        pass

    def dropped(self) -> int:
        return 0

    def teardown(self) -> None:
        pass


class Nft(Filter):
    def __init__(self, rig, hook: str):
        super().__init__(rig)
        self.hook = hook
        self.name = f"nft-{hook}"
        self.family = "netdev" if hook == "netdev" else "inet"

    def setup(self, banned):
        if self.hook == "netdev":
            chain = (f'type filter hook ingress device "{self.iface}" priority -500; '
                     f"policy accept;")
        else:
            chain = "type filter hook input priority 0; policy accept;"
        elements = ",\n".join(str(ipaddress.IPv4Address(b)) for b in banned)
        text = (f"table {self.family} fbbench {{\n"
                f"  set banned {{ type ipv4_addr; size 1048576; elements = {{ {elements} }} }}\n"
                f"  chain c {{\n    {chain}\n    ip saddr @banned counter drop\n  }}\n}}\n")
        with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
            f.write(text)
            f.flush()
            self.ns.run(["nft", "-f", f.name], timeout=300)

    def dropped(self):
        data = json.loads(self.ns.run(["nft", "-j", "list", "chain", self.family, "fbbench",
                                       "c"]).stdout)
        for item in data["nftables"]:
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    return expr["counter"]["packets"]
        return 0

    def teardown(self):
        self.ns.run(["nft", "delete", "table", self.family, "fbbench"], check=False)


class Ipset(Filter):
    name = "ipset"

    def setup(self, banned):
        lines = ["create fbbench hash:ip family inet hashsize 65536 maxelem 1048576"]
        lines += [f"add fbbench {ipaddress.IPv4Address(b)}" for b in banned]
        self.ns.run(["ipset", "restore"], input="\n".join(lines) + "\n", timeout=300)
        self.ns.run(["iptables", "-w", "-I", "INPUT", "-m", "set", "--match-set", "fbbench",
                     "src", "-j", "DROP"])

    def dropped(self):
        out = self.ns.run(["iptables", "-w", "-L", "INPUT", "-v", "-x", "-n"]).stdout
        for line in out.splitlines():
            if "match-set fbbench" in line:
                return int(line.split()[0])
        return 0

    def teardown(self):
        self.ns.run(["iptables", "-w", "-F", "INPUT"], check=False)
        self.ns.run(["ipset", "destroy", "fbbench"], check=False)


class Fail2banIptables(Filter):
    """fail2ban action.d/iptables-multiport: actionstart + one actionban per banned address."""
    name = "f2b-iptables"

    def setup(self, banned):
        lines = ["*filter", ":f2b-asterisk - [0:0]",
                 "-A INPUT -p udp -m multiport --dports 5060 -j f2b-asterisk"]
        lines += [f"-A f2b-asterisk -s {ipaddress.IPv4Address(b)}/32 -j REJECT "
                  f"--reject-with icmp-port-unreachable" for b in banned]
        lines += ["-A f2b-asterisk -j RETURN", "COMMIT"]
        self.ns.run(["iptables-restore", "-w", "--noflush"], input="\n".join(lines) + "\n",
                    timeout=600)

    def teardown(self):
        self.ns.run(["iptables", "-w", "-F"], check=False)
        self.ns.run(["iptables", "-w", "-X"], check=False)


class Xdp(Filter):
    """fastban's DataPlane (one per capacity, loaded once per rig), attached in `mode`."""

    def __init__(self, rig, mode: str, capacity: int = DEFAULT_CAPACITY):
        super().__init__(rig)
        self.mode, self.capacity = mode, capacity
        self.name = f"xdp-{mode}" + ("" if capacity == DEFAULT_CAPACITY else f"-cap{capacity}")

    def setup(self, banned):
        self.dp, self.bans_fd = self.rig.dataplane(self.capacity)
        with self.ns.entered():
            got = self.dp.attach(self.mode)
        if got != self.mode:
            raise RuntimeError(f"asked for XDP {self.mode}, got {got}")
        self.keys = b"".join(banned)
        bpfsys.fill_map(self.bans_fd, self.keys, 4, bytes(16))
        self.base = self.dp.counters()["dropped"]

    def dropped(self):
        return self.dp.counters()["dropped"] - self.base

    def teardown(self):
        for off in (["xdp", "off"], ["xdpgeneric", "off"]):
            self.ns.run(["ip", "link", "set", "dev", self.iface, *off], check=False)
        bpfsys.empty_map(self.bans_fd, self.keys, 4)


class EmptyXdp(Filter):
    """An XDP program that passes (or drops) everything, native mode: what XDP on a veth costs
    by itself (veth then takes its NAPI path and copies each skb into a page-pool page with
    XDP headroom, skb_pp_cow_data), whatever the program does: the floor for any XDP filter."""

    def __init__(self, rig, verdict: str):
        super().__init__(rig)
        self.verdict = verdict
        self.name = "xdp-empty-prog" if verdict == "PASS" else "xdp-drop-all"

    def setup(self, banned):
        from bcc import BPF
        with self.ns.entered():
            self.bpf = BPF(text="BPF_PERCPU_ARRAY(n, u64, 1);\n"
                                "int xdp_all(struct xdp_md *ctx) { int k = 0; u64 *v = "
                                "n.lookup(&k); if (v) *v += 1; return XDP_%s; }" % self.verdict)
            fn = self.bpf.load_func("xdp_all", BPF.XDP)
            BPF.attach_xdp(self.iface, fn, 1 << 2)        # XDP_FLAGS_DRV_MODE

    def dropped(self):
        return sum(self.bpf["n"][0]) if self.verdict == "DROP" else 0

    def teardown(self):
        self.ns.run(["ip", "link", "set", "dev", self.iface, "xdp", "off"], check=False)
        self.bpf.cleanup()


def make_filter(rig, name: str) -> Filter:
    if name == "none":
        return Filter(rig)
    if name == "xdp-empty-prog":
        return EmptyXdp(rig, "PASS")
    if name == "xdp-drop-all":
        return EmptyXdp(rig, "DROP")
    if name.startswith("xdp-"):
        mode, _, capacity = name[4:].partition("-cap")
        return Xdp(rig, mode, int(capacity) if capacity else DEFAULT_CAPACITY)
    if name.startswith("nft-"):
        return Nft(rig, name[4:])
    return {"ipset": Ipset, "f2b-iptables": Fail2banIptables}[name](rig)


# ---- the rig ----

class Rig:
    def __init__(self, lab):
        self.lab = lab
        self.snd, self.rcv = lab.namespace("snd"), lab.namespace("rcv")
        self.link = lab.link(self.snd, self.rcv, f"{SND_IP}/24", f"{RCV_IP}/24")
        for key in ("all", "default", self.link.b):
            self.rcv.run(["sysctl", "-qw", f"net.ipv4.conf.{key}.rp_filter=0"])
        self.rcv.run(["ip", "route", "add", "default", "via", SND_IP])
        self.src_mac, self.dst_mac = _mac(self.snd, self.link.a), _mac(self.rcv, self.link.b)
        self.sender = build_sender()
        self.tmp = tempfile.TemporaryDirectory(prefix="fbbench-")
        self.dataplanes = {}

    def dataplane(self, capacity: int):
        """(DataPlane, fd of its bans_v4 map) with this capacity, loaded on first use."""
        if capacity not in self.dataplanes:
            from fastban.dataplane import DataPlane
            with self.rcv.entered():
                dp = DataPlane(self.link.b, capacity=capacity, capture="none",
                               pin_root=f"{BENCH_PIN_ROOT}/cap{capacity}")
            fd = bpfsys.obj_get(os.path.join(dp.pin_dir, "bans_v4"))
            self.dataplanes[capacity] = (dp, fd)
        return self.dataplanes[capacity]

    def frames(self, name: str, sources: list) -> Path:
        path = Path(self.tmp.name) / f"{name}.frames"
        if not path.exists():
            write_frames(path, sources, self.src_mac, self.dst_mac)
        return path

    def send(self, frames: Path, seconds: float, max_packets: int = 100_000_000) -> dict:
        """Runs the sender pinned to SENDER_CPU; returns its figures and the CPU accounting."""
        before, snmp0 = cpu_times(), _snmp(self.rcv)
        proc = self.snd.popen(["taskset", "-c", str(SENDER_CPU), str(self.sender),
                               self.link.a, str(frames), str(max_packets), str(seconds), "32"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        after, snmp1 = cpu_times(), _snmp(self.rcv)
        if proc.returncode != 0:
            raise RuntimeError(f"sender failed: {err.strip()}")
        figures = json.loads(out)
        cpu = f"cpu{SENDER_CPU}"
        d_cpu = cpu_delta(before, after, cpu)
        d_all = cpu_delta(before, after)
        figures["softirq_s"] = d_cpu["softirq"]
        figures["softirq_all_cpus_s"] = d_all["softirq"]
        figures["sender_s"] = figures["utime"] + figures["stime"]     # includes the softirq
        figures["idle_s"] = d_cpu["idle"]
        figures["delivered"] = snmp1["Ip.InDelivers"] - snmp0["Ip.InDelivers"]
        return figures

    def close(self):
        for dp, fd in self.dataplanes.values():
            os.close(fd)
            with contextlib.suppress(Exception):
                with self.rcv.entered():
                    dp.detach()
            dp.close()
        self.tmp.cleanup()


def _one(rig, name: str, banned: list, frames: Path, seconds: float) -> dict:
    filt = make_filter(rig, name)
    t0 = time.perf_counter()
    filt.setup(banned)
    setup_s = time.perf_counter() - t0
    try:
        figures = rig.send(frames, seconds)
        figures["filter_dropped"] = filt.dropped()
    finally:
        filt.teardown()
    figures["setup_s"] = round(setup_s, 2)
    return figures


def run(quick: bool = False, seconds: float = 2.5, rounds: int = 3) -> dict:
    from fastban.lab import netns

    if quick:
        seconds, rounds = 1.5, 1
    results = {"seconds_per_run": seconds, "rounds": rounds, "sender_cpu": SENDER_CPU,
               "drop": {}, "honest": {}}
    banned_all = v4_addresses(100_000)
    banned10k = banned_all[:10_000]
    honest = [ipaddress.IPv4Address(int(ipaddress.IPv4Address("198.18.1.0")) + i).packed
              for i in range(1024)]
    with netns.Lab() as lab:
        rig = Rig(lab)
        try:
            attack = rig.frames("attack", banned10k)
            good = rig.frames("honest", honest)
            rig.send(good, 0.5)                          # warm up ARP, routes, caches
            runs = {name: [] for name in DROP_FILTERS}
            for r in range(rounds):
                for name in DROP_FILTERS:
                    log(f"drop_rig: drop test, {name}, round {r + 1}/{rounds}")
                    runs[name].append(_one(rig, name, banned10k, attack, seconds))
            results["drop"] = {name: _combine(rs, "filter_dropped" if name != "none"
                                              else "delivered") for name, rs in runs.items()}
            for size, banned in ((10_000, banned10k), (100_000, banned_all)):
                runs = {name: [] for name in HONEST_FILTERS}
                for r in range(rounds):
                    for name in HONEST_FILTERS:
                        log(f"drop_rig: honest traffic, {size} bans, {name}, round {r + 1}")
                        runs[name].append(_one(rig, name, banned, good, seconds))
                results["honest"][size] = {name: _combine(rs, "delivered")
                                           for name, rs in runs.items()}
        finally:
            rig.close()
    _summarise(results)
    return results


def _combine(runs: list, counted: str) -> dict:
    """Median over rounds of the per-run rates."""
    def rate(r):
        return r[counted] / r["seconds"]
    out = {
        "pps": round(median([rate(r) for r in runs])),
        "sent_pps": round(median([r["sent"] / r["seconds"] for r in runs])),
        "counted_share": round(median([r[counted] / max(1, r["sent"]) for r in runs]), 4),
        "softirq_s_per_mpkt": round(median([r["softirq_s"] / r["sent"] * 1e6 for r in runs]), 4),
        "sender_s_per_mpkt": round(median([max(0.0, r["sender_s"] - r["softirq_s"]) / r["sent"]
                                           * 1e6 for r in runs]), 4),
        "cpu_s_per_mpkt": round(median([r["sender_s"] / r["sent"] * 1e6 for r in runs]), 4),
        "setup_s": median([r["setup_s"] for r in runs]),
        "runs": runs,
    }
    busy = out["cpu_s_per_mpkt"]
    out["sender_share"] = round(out["sender_s_per_mpkt"] / busy, 3) if busy else None
    return out


def _summarise(results: dict) -> None:
    drop = results["drop"]
    ref = drop["nft-netdev"]
    for name, row in drop.items():
        row["pps_vs_nft_netdev"] = round(row["pps"] / ref["pps"], 3) if ref["pps"] else None
        row["softirq_vs_nft_netdev"] = (round(row["softirq_s_per_mpkt"] /
                                              ref["softirq_s_per_mpkt"], 3)
                                        if ref["softirq_s_per_mpkt"] else None)
    for size, rows in results["honest"].items():
        none, f2b = rows["none"]["pps"], rows["f2b-iptables"]["pps"]
        for name, row in rows.items():
            row["vs_no_filter"] = round(row["pps"] / none, 3) if none else None
            row["vs_f2b"] = round(row["pps"] / f2b, 1) if f2b else None
    best_other = max(drop[n]["pps"] for n in ("nft-netdev", "nft-input", "ipset"))
    h10 = results["honest"].get(10_000, {})
    results["summary"] = {
        "xdp_native_drop_pps": drop["xdp-native"]["pps"],
        "best_other_drop_pps": best_other,
        "drop_target_met": drop["xdp-native"]["pps"] >= best_other,
        "honest_10k_vs_f2b": h10.get("xdp-native", {}).get("vs_f2b"),
        "honest_10k_vs_no_filter": h10.get("xdp-native", {}).get("vs_no_filter"),
    }
    s = results["summary"]
    s["honest_target_met"] = bool(s["honest_10k_vs_f2b"] and s["honest_10k_vs_f2b"] >= 20
                                  and s["honest_10k_vs_no_filter"] >= 0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=2.5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = run(quick=args.quick, seconds=args.seconds, rounds=args.rounds)
    save_json("drop_rig", results)
    print(f"{'drop test':14} {'pps':>10} {'vs nft':>7} {'softirq s/Mpkt':>15} "
          f"{'sender s/Mpkt':>14} {'counted':>8}")
    for name, row in results["drop"].items():
        print(f"{name:14} {row['pps']:>10} {row['pps_vs_nft_netdev']:>7} "
              f"{row['softirq_s_per_mpkt']:>15} {row['sender_s_per_mpkt']:>14} "
              f"{row['counted_share']:>8}")
    for size, rows in results["honest"].items():
        print(f"honest, {size} bans")
        for name, row in rows.items():
            print(f"  {name:14} {row['pps']:>10} pps  x{row['vs_no_filter']} of none, "
                  f"x{row['vs_f2b']} of f2b")
    print(json.dumps(results["summary"]))


if __name__ == "__main__":
    main()
