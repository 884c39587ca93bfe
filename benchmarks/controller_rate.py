"""Controller throughput: captured responses per second the guard sustains before events are lost.

Rig: namespace "srv" runs the guard (benchmarks/guard_proc.py: fastban's Service, XDP + TC
capture on egress) pinned to CPU 0. benchmarks/sender.c, pinned to CPU 1, sends prebuilt
"SIP/2.0 403 Forbidden" responses out of the server's veth through the qdisc, so the TC egress
program sees them as the server's own answers: 131,072 distinct Call-IDs to 13,108 destinations,
10 each, over and over. The guard's maxretry is higher than any destination ever reaches, so no
destination is banned and every response goes the whole way through the detection path (the
messages of a banned source would be skipped). The rate steps up; at each step, for `seconds`,
the guard's own counters (over its control socket) give responses captured by the kernel, read
by the guard and lost by the capture's ring buffer (capture_lost). The sustained rate is the highest step
with no loss.

    .venv/bin/python -m benchmarks.controller_rate [--quick]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import struct
import tempfile
import time
from pathlib import Path

from benchmarks.common import log, save_json, start_guard, stop_process
from benchmarks.drop_rig import build_sender
from benchmarks.time_to_ban import _ipv4_udp_header, _mac

SRV_IP, PEER_IP = "10.234.0.1", "10.234.0.2"
POOL = ipaddress.IPv4Network("100.64.0.0/10")
FRAMES = 131_072
MAXRETRY = 10                 # 403s per destination in the frames
GUARD_MAXRETRY = 1_000_000    # never reached: no ban, no message skipped
RATES = (2_000, 5_000, 10_000, 20_000, 30_000, 50_000, 70_000, 100_000, 150_000, 200_000,
         250_000, 300_000)
GUARD_CPU, SENDER_CPU = 0, 1


def write_frames(path: Path, src_mac: bytes, dst_mac: bytes) -> None:
    with open(path, "wb") as f:
        for n in range(FRAMES):
            dst = POOL.network_address + 1 + n // MAXRETRY
            payload = (f"SIP/2.0 403 Forbidden\r\n"
                       f"Via: SIP/2.0/UDP {dst}:5060;branch=z9hG4bK-{n};received={dst}\r\n"
                       f"From: <sip:100@{SRV_IP}>;tag=f{n}\r\nTo: <sip:100@{SRV_IP}>;tag=t{n}\r\n"
                       f"Call-ID: rate-{n}\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
                       ).encode()
            frame = _ipv4_udp_header(ipaddress.IPv4Address(SRV_IP).packed, dst.packed,
                                     len(payload), src_mac, dst_mac) + payload
            f.write(struct.pack("<H", len(frame)) + frame)


class _NullDataPlane:
    """Just enough of DataPlane for a Guard with no kernel: bans go to a dict."""

    def __init__(self):
        self.banned = {}

    def whitelisted(self):
        return []

    def whitelist(self, network):
        pass

    def unwhitelist(self, network):
        return True

    def set_sip_ports(self, ports):
        pass

    def set_scope(self, ports):
        pass

    def set_challenge_grace(self, seconds):
        pass

    def set_rate_limit(self, rate, burst):
        pass

    def set_sip_capacity(self, requests_per_second):
        pass

    def trust(self, network, until_ns):
        pass

    def untrust(self, network):
        return True

    def trusted_networks(self):
        return {}

    def mark_challenge(self, peer, call_id, ktime_ns):
        pass

    def purge_expired(self):
        return 0

    def bans(self, include_expired=False):
        return []

    def ban(self, target, expires_ns=0):
        self.banned[target] = expires_ns

    def ban_new(self, bans):
        self.banned.update(bans)
        return []

    def unban(self, target):
        return self.banned.pop(target, None) is not None

    def counters(self):
        return {}


def stage_costs(count: int = 50_000, rounds: int = 5) -> dict:
    """Microseconds per response of each user-space stage, run alone in this process on the
    same 403s the rig sends: perf record -> CapturedPacket (dataplane.decode_capture, the pure
    decoder), the parser (batches of 64), the failure rules, and Guard.handle_packets as a whole
    (the detection path: messages, parser, rules, with a map-less data plane). With the rig's
    maxretry nothing is banned, as in the rig. Each stage runs `rounds` times (fresh rules and
    guard each time, so no response is taken for a retransmission); the figure is the fastest
    round, and `<stage>_rounds` has them all (this VM's timings vary up to 2x run to run)."""
    import ctypes
    from fastban import sip
    from fastban.config import load_settings
    from fastban.dataplane import FbCaptureMeta, decode_capture
    from fastban.guard import Guard
    from fastban.rules import FailureRules

    def per_response(run) -> float:
        t0 = time.perf_counter()
        run()
        return (time.perf_counter() - t0) / len(raw) * 1e6

    with tempfile.TemporaryDirectory(prefix="fbstage-") as workdir:
        path = Path(workdir) / "f"
        write_frames(path, b"\2" * 6, b"\4" * 6)
        raw, data = [], path.read_bytes()
        offset = 0
        while offset < len(data) and len(raw) < count:
            (length,) = struct.unpack_from("<H", data, offset)
            frame = data[offset + 2:offset + 2 + length]
            offset += 2 + length
            meta = FbCaptureMeta(ktime_ns=1, sport=5060, dport=5060, status=403,
                                 payload_off=42, payload_len=len(frame) - 42,
                                 cap_len=len(frame), family=4, protocol=17, kind=1, reason=1)
            ctypes.memmove(meta.saddr, frame[26:30], 4)
            ctypes.memmove(meta.daddr, frame[30:34], 4)
            raw.append(bytes(meta) + frame)
        captured = [decode_capture(r) for r in raw]
        payloads = [c.payload for c in captured]
        messages = []
        for i in range(0, len(payloads), 64):
            messages += sip.parse_batch(payloads[i:i + 64])
        settings = load_settings(None, {"maxretry": GUARD_MAXRETRY,      # as the rig's guard
                                        "state_file": os.path.join(workdir, "s.msgpack"),
                                        "control_socket": os.path.join(workdir, "c.sock")})
        now = time.time()

        def decode():
            [decode_capture(r) for r in raw]

        def parse():
            for i in range(0, len(payloads), 64):
                sip.parse_batch(payloads[i:i + 64])

        def rules():
            fresh = FailureRules(settings.rule_settings())
            for c, m in zip(captured, messages):
                fresh.observe(now, c.dst, m)

        def guard():
            fresh = Guard(settings, _NullDataPlane())
            for i in range(0, len(captured), 64):
                fresh.handle_packets(captured[i:i + 64])

        stages = {"decode_capture_us": decode, "parse_batch_us": parse, "rules_us": rules,
                  "guard_handle_packets_us": guard}
        timings, errors = {name: [] for name in stages}, {}
        for _ in range(rounds):                # the stages alternate, round after round
            for name, run in stages.items():
                try:
                    timings[name].append(round(per_response(run), 2))
                except Exception as error:     # the Guard's interface moved on
                    errors[f"{name[:-3]}_error"] = repr(error)
        out = {"responses": len(raw), "rounds": rounds, **errors}
        for name, values in timings.items():
            out[name] = min(values, default=None)
            out[f"{name[:-3]}_rounds"] = values
    out["parser"] = sip.IMPLEMENTATION
    return out


def _stats(client) -> dict:
    return client.call("stats")


def _steps(srv, link, frames: Path, workdir: str, rates, seconds: float, *guard_args) -> dict:
    """The rate ladder against one guard started with guard_args: its steps, its final stats."""
    from fastban import control

    sender = build_sender()
    guard, _ = start_guard(srv, ["taskset", "-c", str(GUARD_CPU)], link.a, workdir,
                           "--maxretry", str(GUARD_MAXRETRY), *guard_args)
    steps = []
    try:
        client = control.Client(os.path.join(workdir, "control.sock"))
        for rate in rates:
            log(f"controller_rate: {rate} responses/s for {seconds} s {' '.join(guard_args)}")
            before = _stats(client)
            t0 = time.monotonic()
            out = srv.run(["taskset", "-c", str(SENDER_CPU), str(sender), link.a,
                           str(frames), str(int(rate * seconds)), str(seconds + 5), "32",
                           str(rate), "1"], timeout=seconds + 60).stdout
            sent = json.loads(out)
            during = _stats(client)
            # let the guard drain what it has queued, up to 5 s
            deadline, after = time.monotonic() + 5, during
            while time.monotonic() < deadline:
                time.sleep(0.25)
                latest = _stats(client)
                if latest["sip_messages"] == after["sip_messages"]:
                    break
                after = latest
            step = {
                "offered_per_s": round(sent["sent"] / sent["seconds"]),
                "sent": sent["sent"],
                "captured": after["packets_captured"] - before["packets_captured"],
                "parsed": after["sip_messages"] - before["sip_messages"],
                "parsed_during_send": during["sip_messages"] - before["sip_messages"],
                "lost": after["events_lost"] - before["events_lost"],
                "send_seconds": sent["seconds"],
                "drain_seconds": round(time.monotonic() - t0 - sent["seconds"], 2),
            }
            step["parsed_per_s_during_send"] = round(step["parsed_during_send"] /
                                                     sent["seconds"])
            step["asked_per_s"] = rate
            # the sender could not send at the rate asked: the rig, not the guard, set the pace
            step["sender_limited"] = step["offered_per_s"] < 0.97 * rate
            step["lossless"] = step["lost"] == 0 and step["parsed"] >= step["sent"]
            step["lost_share"] = round(step["lost"] / max(1, step["sent"]), 4)
            steps.append(step)
            if step["lost"] > 0.05 * step["sent"]:
                break
        final = _stats(client)
        client.close()
    finally:
        stop_process(guard)
    sustained = _sustained(steps)
    return {"steps": steps, "final_stats": final, "sustained_per_s": sustained,
            "sender_limited_at_sustained": any(s["sender_limited"] and s["lossless"] and
                                               s["offered_per_s"] == sustained for s in steps),
            "sender_max_per_s": max((s["offered_per_s"] for s in steps), default=0)}


def _sustained(steps: list) -> int:
    """The highest step below which no step lost anything (a later lossless step at a higher
    rate does not cancel an earlier loss)."""
    sustained = 0
    for step in steps:
        if not step["lossless"]:
            break
        sustained = max(sustained, step["offered_per_s"])
    return sustained


def _rig(lab, workdir: str):
    srv, peer = lab.namespace("srv"), lab.namespace("peer")
    link = lab.link(srv, peer, f"{SRV_IP}/24", f"{PEER_IP}/24")
    frames = Path(workdir) / "responses.frames"
    write_frames(frames, _mac(srv, link.a), _mac(peer, link.b))
    return srv, link, frames


def run(quick: bool = False, seconds: float = 3.0) -> dict:
    from fastban.lab import netns

    rates = RATES
    if quick:
        seconds, rates = 2.0, (5_000, 10_000, 25_000, 200_000)
    with netns.Lab() as lab, tempfile.TemporaryDirectory(prefix="fbrate-") as workdir:
        srv, link, frames = _rig(lab, workdir)
        results = {"seconds_per_step": seconds,
                   **_steps(srv, link, frames, workdir, rates, seconds)}
    log("controller_rate: stage costs alone")
    results["stages_alone"] = stage_costs()
    results["target_met"] = results["sustained_per_s"] >= 200_000
    return results


def fleet_cost(redis_url: str, quick: bool = False, seconds: float = 3.0) -> dict:
    """The sustained rate side by side: no fleet; in a fleet (the link's two threads running,
    nothing to publish as no destination is banned); in a fleet with fleet_counting, every
    failure published to Redis by the publisher thread."""
    rates = (5_000, 10_000, 25_000, 50_000, 100_000) if quick else RATES
    modes = {"alone": (), "fleet": ("--fleet-redis", redis_url),
             "fleet_counting": ("--fleet-redis", redis_url, "--fleet-counting")}
    from fastban.lab import netns
    results = {"seconds_per_step": seconds}
    with netns.Lab() as lab, tempfile.TemporaryDirectory(prefix="fbrate-") as workdir:
        srv, link, frames = _rig(lab, workdir)
        for mode, args in modes.items():
            ran = _steps(srv, link, frames, workdir, rates, seconds, *args)
            results[mode] = {"sustained_per_s": ran["sustained_per_s"], "steps": ran["steps"],
                             "fleet": ran["final_stats"].get("fleet")}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results = run(quick=args.quick)
    save_json("controller_rate", results)
    for step in results["steps"]:
        print(step)
    print("user-space stages alone (us per response):", results["stages_alone"])
    print("sustained without loss:", results["sustained_per_s"], "responses/s")


if __name__ == "__main__":
    main()
