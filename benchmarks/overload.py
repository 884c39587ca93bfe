"""Honest phone under flood: an honest phone's registrations during a spoofed REGISTER flood
that saturates the lab's Kamailio (4 worker processes), with admission control off and on, side
by side in one run.

Rig: the SIP lab (fastban/lab/siplab.py) with `fastban run` guarding the server. The forger
runs benchmarks/sender.c with the frames of fastban/lab/flood.py: REGISTERs from 65,534 made-up
addresses, one after the other, at `rate` a second for `seconds`. Each round starts a fresh
guard; the phone registers once (a login: the guard trusts it and writes the trust into the
kernel), then registers once a second while the flood runs (REGISTER -> 401 -> REGISTER with
credentials -> 200, each request retransmitted after 0.5 and 1.5 s, 2 s for an answer).

Round "off" (sip_capacity 0) measures the server at saturation: its answers/s during the flood
(the 401s the capture copied, over the flood's seconds). Round "on" sets sip_capacity to
CAPACITY_SHARE of that, as the README tells an operator to, and runs the same flood.

    .venv/bin/python -m benchmarks.overload [--quick] [--rate 60000]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import log, save_json
from benchmarks.drop_rig import build_sender

CAPACITY_SHARE = 0.5        # sip_capacity = this share of the answers/s measured at saturation
SERVER_CHILDREN = 4


def _iface_and_mac(namespace) -> tuple[str, bytes]:
    links = json.loads(namespace.run(["ip", "-json", "link", "show"]).stdout)
    [link] = [entry for entry in links if entry["ifname"] != "lo"]
    return link["ifname"], bytes.fromhex(link["address"].replace(":", ""))


def write_flood_frames(path: Path, lab, src_mac: bytes) -> int:
    from fastban.lab.flood import packets
    dst_mac = bytes.fromhex(lab.router_mac().replace(":", ""))
    count = 0
    with open(path, "wb") as out:
        for packet in packets(lab.server_address(4)):
            frame = dst_mac + src_mac + b"\x08\x00" + packet
            out.write(len(frame).to_bytes(2, "little") + frame)
            count += 1
    return count


def _counters(lab) -> dict:
    from fastban.dataplane import DataPlane
    dataplane = DataPlane.open_pinned(lab.server_iface)
    try:
        return dataplane.counters()
    finally:
        dataplane.close()


def _trusted(lab) -> set:
    from fastban.dataplane import DataPlane
    dataplane = DataPlane.open_pinned(lab.server_iface)
    try:
        return set(dataplane.trusted_networks())
    finally:
        dataplane.close()


def run_round(lab, sender: Path, frames: Path, iface: str, capacity: int, rate: int,
              seconds: float, registrations: int) -> dict:
    from fastban.lab.guard_process import GuardProcess
    workdir = Path(tempfile.mkdtemp(prefix="fastban-overload-"))
    guard = GuardProcess(lab.server_namespace, lab.server_iface, workdir, sip_capacity=capacity)
    guard.start()
    try:
        first = lab.register_phone(count=1, response_timeout=2.0)
        phone = ipaddress.ip_network(f"{lab.phone_address_of(4)}/32")
        deadline = time.monotonic() + 10
        while phone not in _trusted(lab) and time.monotonic() < deadline:
            time.sleep(0.1)
        trusted = phone in _trusted(lab)
        before = _counters(lab)
        flood = lab.add_forger().namespace.popen(
            [str(sender), iface, str(frames), str(int(rate * seconds)), str(seconds), "32",
             str(rate)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)                     # the server is saturated before the phone starts
        result = lab.register_phone(count=registrations, interval=1.0, response_timeout=2.0)
        out, err = flood.communicate(timeout=seconds + 60)
        after = _counters(lab)
    finally:
        guard.detach()
    if flood.returncode != 0:
        raise RuntimeError(f"sender failed: {err.strip()}")
    sent = json.loads(out.strip().splitlines()[-1])
    delta = {name: after[name] - before[name] for name in after}
    return {
        "sip_capacity": capacity,
        "phone_trusted_before_flood": trusted and first.successes == 1,
        "registrations": registrations,
        "successes": result.successes,
        "failures": result.failures,
        "success_share": round(result.successes / registrations, 3),
        "flood_sent": sent["sent"],
        "flood_seconds": sent["seconds"],
        "flood_rate": round(sent["sent"] / sent["seconds"]),
        "server_answers_per_s": round(delta["captured"] / sent["seconds"]),
        "over_capacity_dropped": delta["over_capacity"],
        "trusted_admitted": delta["trusted_admitted"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=int, default=60000, help="flood requests/s")
    args = parser.parse_args()
    from fastban.lab.siplab import SipLab
    seconds = 14.0 if args.quick else 30.0
    registrations = int(seconds) - 4
    sender = build_sender()
    with SipLab(attackers=1, server_children=SERVER_CHILDREN) as lab:
        iface, mac = _iface_and_mac(lab.add_forger().namespace)
        frames = Path(tempfile.mkdtemp(prefix="fastban-flood-")) / "flood.frames"
        sources = write_flood_frames(frames, lab, mac)
        log(f"overload: flood of {sources:,} sources at {args.rate:,}/s for {seconds:g} s")
        off = run_round(lab, sender, frames, iface, 0, args.rate, seconds, registrations)
        log(f"overload: off: {off}")
        capacity = max(100, int(off["server_answers_per_s"] * CAPACITY_SHARE))
        on = run_round(lab, sender, frames, iface, capacity, args.rate, seconds, registrations)
        log(f"overload: on: {on}")
    save_json("overload", {"flood_sources": sources, "rate": args.rate, "seconds": seconds,
                           "server_children": SERVER_CHILDREN,
                           "capacity_share": CAPACITY_SHARE, "off": off, "on": on})


if __name__ == "__main__":
    main()
