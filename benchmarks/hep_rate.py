"""HEP input throughput: HEP messages per second the guard takes without loss.

Rig: namespace "srv" runs the guard (benchmarks/guard_proc.py: fastban's Service with XDP and
the TC capture on a veth, and ``hep_listen`` 127.0.0.1:9060) pinned to CPU 0.
benchmarks/sender.c, pinned to CPU 1, sends prebuilt HEPv3 datagrams (127.0.0.1 to
127.0.0.1:9060, injected into the loopback device of that namespace), each carrying a
"SIP/2.0 403 Forbidden" of a TLS server to one of 13,108 addresses, 131,072 distinct Call-IDs.
The guard's maxretry is never reached, so every message goes the whole way through the
detection path. The rate steps up; at each step the guard's counters give the HEP packets it
read and the messages it took; what the socket's buffer dropped is the kernel's
Udp RcvbufErrors of the namespace (/proc/net/snmp). The sustained rate is the highest step
with nothing lost.

    .venv/bin/python -m benchmarks.hep_rate [--quick]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import log, save_json, start_guard, stop_process
from benchmarks.controller_rate import (FRAMES, GUARD_CPU, GUARD_MAXRETRY, MAXRETRY, POOL,
                                        SENDER_CPU, SRV_IP, PEER_IP, _sustained)
from benchmarks.drop_rig import build_sender
from benchmarks.time_to_ban import _ipv4_udp_header

HEP_PORT = 9060
LOOPBACK = ipaddress.IPv4Address("127.0.0.1").packed
RATES = (10_000, 20_000, 30_000, 40_000, 50_000, 70_000, 100_000, 150_000, 200_000)


def _hep_chunk(kind: int, data: bytes) -> bytes:
    return struct.pack("!HHH", 0, kind, 6 + len(data)) + data


def hep_packet(payload: bytes, dst: ipaddress.IPv4Address, n: int) -> bytes:
    """Kamailio siptrace's chunk order, for a reply of the server on 5061 over TLS."""
    body = b"".join((
        _hep_chunk(1, b"\x02"), _hep_chunk(2, b"\x16"),
        _hep_chunk(3, ipaddress.IPv4Address(SRV_IP).packed), _hep_chunk(4, dst.packed),
        _hep_chunk(7, struct.pack("!H", 5061)), _hep_chunk(8, struct.pack("!H", 40000 + n % 20000)),
        _hep_chunk(9, struct.pack("!I", 1_796_000_000 + n)), _hep_chunk(10, struct.pack("!I", n)),
        _hep_chunk(11, b"\x01"), _hep_chunk(12, struct.pack("!I", 2001)),
        _hep_chunk(15, payload)))
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body


def write_frames(path: Path) -> None:
    zero = b"\0" * 6
    with open(path, "wb") as f:
        for n in range(FRAMES):
            dst = POOL.network_address + 1 + n // MAXRETRY
            payload = hep_packet(_sip(n, dst), dst, n)
            header = _ipv4_udp_header(LOOPBACK, LOOPBACK, len(payload), zero, zero)
            header = header[:-6] + struct.pack("!H", HEP_PORT) + header[-4:]
            frame = header + payload
            f.write(struct.pack("<H", len(frame)) + frame)


def _sip(n: int, dst) -> bytes:
    return (f"SIP/2.0 403 Forbidden\r\n"
            f"Via: SIP/2.0/TLS {dst}:5061;branch=z9hG4bK-{n};rport=40000;received={dst}\r\n"
            f"From: <sip:100@{SRV_IP}>;tag=f{n}\r\nTo: <sip:100@{SRV_IP}>;tag=t{n}\r\n"
            f"Call-ID: hep-{n}\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n").encode()


def stage_costs(count: int = 50_000) -> dict:
    """µs per message of the HEP path's stages alone, no kernel: checking and decoding
    (HepFeed.datagram), then Guard.handle_hep (the detection path and the rules), with
    hep_listen set (duplicates checked), beside the wire path's Guard.handle_packets of
    benchmarks.controller_rate, in the same run."""
    from benchmarks.controller_rate import _NullDataPlane, stage_costs as wire_costs
    from fastban import sip
    from fastban.config import load_settings
    from fastban.guard import Guard
    from fastban.hep_feed import HepFeed

    with tempfile.TemporaryDirectory(prefix="fbhepcost-") as workdir:
        settings = load_settings(overrides={
            "maxretry": GUARD_MAXRETRY, "hep_listen": f"127.0.0.1:{HEP_PORT}",
            "state_file": os.path.join(workdir, "state.msgpack")})
        datagrams = [hep_packet(_sip(n, POOL.network_address + 1 + n // MAXRETRY),
                                POOL.network_address + 1 + n // MAXRETRY, n)
                     for n in range(count)]
        feed, guard = HepFeed(settings), Guard(settings, _NullDataPlane())
        t0 = time.perf_counter()
        segments = [feed.datagram(datagram, "127.0.0.1") for datagram in datagrams]
        t1 = time.perf_counter()
        now = time.time()
        for start in range(0, count, 1024):
            guard.handle_hep([(now, segment) for segment in segments[start:start + 1024]])
        t2 = time.perf_counter()
    wire = wire_costs(count, rounds=1)          # one round, as the HEP figures here
    return {"messages": count, "hep_feed_us": round((t1 - t0) / count * 1e6, 2),
            "guard_handle_hep_us": round((t2 - t1) / count * 1e6, 2),
            "wire_guard_handle_packets_us": wire["guard_handle_packets_us"],
            "wire_decode_capture_us": wire["decode_capture_us"], "parser": sip.IMPLEMENTATION}


def _receive_errors(srv) -> int:
    lines = [line.split() for line in srv.run(["cat", "/proc/net/snmp"]).stdout.splitlines()
             if line.startswith("Udp:")]
    names, values = lines[0], lines[1]
    return int(values[names.index("RcvbufErrors")])


def run(quick: bool = False, seconds: float = 3.0) -> dict:
    from fastban import control
    from fastban.lab import netns

    rates = (20_000, 50_000, 100_000, 200_000) if quick else RATES
    if quick:
        seconds = 2.0
    sender = build_sender()
    steps = []
    with netns.Lab() as lab, tempfile.TemporaryDirectory(prefix="fbhep-") as workdir:
        srv, peer = lab.namespace("srv"), lab.namespace("peer")
        link = lab.link(srv, peer, f"{SRV_IP}/24", f"{PEER_IP}/24")
        srv.run(["ip", "link", "set", "lo", "up"])
        # Frames injected into lo have no route from the output path: without route_localnet
        # and accept_local (this namespace's own settings) the input route drops 127.0.0.1
        # as a martian.
        for conf in ("all", "lo"):
            for name in ("route_localnet", "accept_local"):
                srv.run(["sysctl", "-q", "-w", f"net.ipv4.conf.{conf}.{name}=1"])
        frames = Path(workdir) / "hep.frames"
        write_frames(frames)
        guard, _ = start_guard(srv, ["taskset", "-c", str(GUARD_CPU)], link.a, workdir,
                               "--maxretry", str(GUARD_MAXRETRY),
                               "--hep-listen", f"127.0.0.1:{HEP_PORT}")
        try:
            client = control.Client(os.path.join(workdir, "control.sock"))
            for rate in rates:
                log(f"hep_rate: {rate} HEP messages/s for {seconds} s")
                before, errors = client.call("stats"), _receive_errors(srv)
                out = srv.run(["taskset", "-c", str(SENDER_CPU), str(sender), "lo", str(frames),
                               str(int(rate * seconds)), str(seconds + 5), "32", str(rate)],
                              timeout=seconds + 60).stdout
                sent = json.loads(out)
                during = client.call("stats")
                deadline, after = time.monotonic() + 5, during
                while time.monotonic() < deadline:
                    time.sleep(0.25)
                    latest = client.call("stats")
                    if latest["hep"]["received"] == after["hep"]["received"]:
                        break
                    after = latest
                step = {
                    "offered_per_s": round(sent["sent"] / sent["seconds"]),
                    "sent": sent["sent"],
                    "received": after["hep"]["received"] - before["hep"]["received"],
                    "messages": after["hep"]["messages"] - before["hep"]["messages"],
                    "read_during_send": during["hep"]["received"] - before["hep"]["received"],
                    "parsed": after["responses_parsed"] - before["responses_parsed"],
                    "socket_drops": _receive_errors(srv) - errors,
                    "send_seconds": sent["seconds"],
                }
                step["lost"] = step["sent"] - step["messages"]
                step["lossless"] = step["lost"] == 0 and step["socket_drops"] == 0
                steps.append(step)
                if step["lost"] > 0.05 * step["sent"]:
                    break
            final = client.call("stats")
            client.close()
        finally:
            stop_process(guard)
    log("hep_rate: stage costs alone")
    return {"seconds_per_step": seconds, "steps": steps, "sustained_per_s": _sustained(steps),
            "final_hep": final.get("hep"), "parser": final.get("parser"),
            "sender_limited": bool(steps) and steps[-1]["lossless"] and
            steps[-1]["offered_per_s"] < 0.95 * rates[-1],
            "stages_alone": stage_costs(20_000 if quick else 50_000)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results = run(quick=args.quick)
    save_json("hep_rate", results)
    for step in results["steps"]:
        print(step)
    print("stages alone (us per message):", results["stages_alone"])
    print("sustained without loss:", results["sustained_per_s"], "HEP messages/s",
          "(the sender was the limit)" if results["sender_limited"] else "", file=sys.stdout)


if __name__ == "__main__":
    main()
