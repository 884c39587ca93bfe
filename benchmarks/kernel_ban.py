"""The threshold ban in the kernel beside the one decided in user space, in one run.

Rig as benchmarks/time_to_ban.py: namespace "srv" runs the guard (benchmarks/guard_proc.py,
maxretry 5, pinned to CPU 0) and this process's SIP responder socket (10.233.0.1:5060); "att"
holds an AF_PACKET attacker that sends from any address of 100.64.0.0/10. The guard runs twice,
kernel_ban off ("user": the decision is made in user space) and on ("armed").

For each attacker address A: the responder challenges A (401 with a nonce); then maxretry times
A sends a REGISTER with credentials carrying that nonce and the responder, once it has read the
request, answers 401 (a proven failure each, new top Via branch each). In armed mode the guard
arms A after the (maxretry-1)-th, and the rig waits for the arm before the last request. t_N is
read just before the sendto() of the last 401; the attacker then sends probes every interval (100
us = 10,000 requests/s, 20 us = 50,000/s) and the responder counts those that arrive: "attacker
packets after the threshold" (probes that arrived after t_N).

"Time to ban", as benchmarks/time_to_ban.py measures it: from t_N to the send of the first
probe that is dropped (an upper bound; the probe interval is its resolution). For an armed source
the capture writes the ban in the TC run that sees the last 401 leave, before that sendto()
returns, so the first probe is dropped and the figure is the rig's own sendto() and loop.
Two kernel-clock figures are read from the armed entry: "armed_response_to_ban_us", the 401's
ktime at TC egress (the ban's expiry minus its duration) to the ban written (banned_ns, read
after the map update); and "armed_request_to_ban_us", from the credentialed request at TC
ingress (request_ns), which adds the server reading the request and answering it (here this
Python responder: recv + sendto).

    .venv/bin/python -m benchmarks.kernel_ban [--quick] [--attackers 300]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import tempfile
import time

from benchmarks.common import log, percentile, save_json, start_guard, stop_process
from benchmarks.time_to_ban import _ipv4_udp_header, _mac, probe_until_dropped

SRV_IP, ATT_IP = "10.233.0.1", "10.233.0.2"
POOL = ipaddress.IPv4Network("100.64.0.0/10")
MAXRETRY = 5
MODES = ("user", "armed")
INTERVALS_US = (100, 20)     # 10,000 and 50,000 requests/s
GUARD_CPU, RIG_CPU = 0, 1
WAIT_S = 0.5                 # for a request to reach the responder, or for an arm


def register(attacker: str, call_id: str, branch: str, cseq: int, nonce: str) -> bytes:
    return (f"REGISTER sip:{SRV_IP} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {attacker}:5060;branch={branch};rport\r\n"
            f"From: <sip:100@{SRV_IP}>;tag=a{cseq}\r\nTo: <sip:100@{SRV_IP}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
            f'Authorization: Digest username="100",realm="bench",nonce="{nonce}",'
            f'uri="sip:{SRV_IP}",response="0123456789abcdef0123456789abcdef"\r\n'
            f"Content-Length: 0\r\n\r\n").encode()


def unauthorized(attacker: str, call_id: str, branch: str, cseq: int, nonce: str) -> bytes:
    return (f"SIP/2.0 401 Unauthorized\r\n"
            f"Via: SIP/2.0/UDP {attacker}:5060;branch={branch};rport=5060;received={attacker}\r\n"
            f"From: <sip:100@{SRV_IP}>;tag=a{cseq}\r\nTo: <sip:100@{SRV_IP}>;tag=b{cseq}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
            f'WWW-Authenticate: Digest realm="bench", nonce="{nonce}", algorithm=MD5\r\n'
            f"Content-Length: 0\r\n\r\n").encode()


def run(quick: bool = False, attackers: int = 300) -> dict:
    from fastban.lab import netns

    if quick:
        attackers = 40
    results = {"attackers": attackers, "maxretry": MAXRETRY}
    with netns.Lab() as lab:
        srv, att = lab.namespace("srv"), lab.namespace("att")
        link = lab.link(srv, att, f"{SRV_IP}/24", f"{ATT_IP}/24")
        srv.run(["ip", "route", "add", str(POOL), "via", ATT_IP])
        for key in ("all", "default", link.a):
            srv.run(["sysctl", "-qw", f"net.ipv4.conf.{key}.rp_filter=0"])
        srv.run(["ping", "-c1", "-W1", ATT_IP])
        first = 1
        for mode in MODES:
            results[mode] = _pass(srv, att, link, mode, attackers, first)
            first += attackers * len(INTERVALS_US)
    return results


def _pass(srv, att, link, mode: str, attackers: int, first: int) -> dict:
    from fastban.dataplane import DataPlane

    results = {}
    srv_mac, att_mac = _mac(srv, link.a), _mac(att, link.b)
    flags = ["--kernel-ban"] if mode == "armed" else []
    with tempfile.TemporaryDirectory(prefix="fbkb-") as workdir:
        guard, line = start_guard(srv, ["taskset", "-c", str(GUARD_CPU)], link.a, workdir,
                                  "--maxretry", str(MAXRETRY), "--xdp-mode", "native",
                                  "--record", *flags)
        plane = DataPlane.open_pinned(link.a)
        try:
            results["xdp_mode"] = line.split()[1]
            with srv.entered():
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                sock.bind((SRV_IP, 5060))
            with att.entered():
                raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
                raw.bind((link.b, 0))
            affinity = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {RIG_CPU})
            try:
                for k, interval_us in enumerate(INTERVALS_US):
                    log(f"kernel_ban: {mode}, {attackers} attackers, probe every {interval_us} us")
                    start = first + k * attackers
                    per = [_one_attacker(i, sock, raw, att_mac, srv_mac, interval_us * 1000,
                                         plane, mode == "armed")
                           for i in range(start, start + attackers)]
                    results[f"every_{interval_us}_us"] = _analyse(per, interval_us)
            finally:
                os.sched_setaffinity(0, affinity)
                sock.close()
                raw.close()
        finally:
            plane.close()
            stop_process(guard)
        records_path = os.path.join(workdir, "records.json")
        if os.path.exists(records_path):
            stats = json.load(open(records_path)).get("stats", {})
            results["guard_stats"] = {key: stats.get(key) for key in (
                "bans_total", "kernel_bans", "kernel_bans_lifted", "failures_proven",
                "events_lost")}
    return results


def _raw_send(raw, header_for, message: bytes) -> None:
    raw.send(header_for(len(message)) + message)


def _receive(sock, marker: bytes) -> bool:
    """Reads the responder socket until a datagram holding marker arrives."""
    sock.settimeout(WAIT_S)
    try:
        while True:
            if marker in sock.recv(65535):
                return True
    except socket.timeout:
        return False
    finally:
        sock.setblocking(False)


def _one_attacker(i: int, sock, raw, att_mac, srv_mac, interval: int, plane, armed: bool):
    attacker = str(POOL.network_address + i)
    packed = ipaddress.IPv4Address(attacker).packed
    server = ipaddress.IPv4Address(SRV_IP).packed

    def header_for(length):
        return _ipv4_udp_header(packed, server, length, att_mac, srv_mac)

    call_id, nonce = f"kb-{i}", f"nonce{i:08x}"
    sock.sendto(unauthorized(attacker, call_id, "z9hG4bK-kb-0", 1, nonce), (attacker, 5060))
    t_n, missed = 0, 0
    for n in range(1, MAXRETRY + 1):
        branch = f"z9hG4bK-kb-{i}-{n}"
        if n == MAXRETRY and armed:
            deadline = time.monotonic() + WAIT_S
            while plane.arm_of(attacker) is None and time.monotonic() < deadline:
                time.sleep(0.0005)
        _raw_send(raw, header_for, register(attacker, call_id, branch, n + 1, nonce))
        missed += not _receive(sock, branch.encode())
        answer = unauthorized(attacker, call_id, branch, n + 1, nonce)
        if n == MAXRETRY:
            t_n = time.monotonic_ns()
        sock.sendto(answer, (attacker, 5060))
    # Reading the armed entry takes tens of us and the guard deletes it soon after the ban: it is
    # read before the probes for even attackers (the kernel-clock figures), and not at all for
    # odd ones (the probe figure, which that read would delay).
    read_arm = armed and i % 2 == 0
    arm = plane.arm_of(attacker) if read_arm else None
    probe = header_for(12)
    sent, received, last_rx = probe_until_dropped(raw, sock, probe, b"prb1", i, interval)
    banned = last_rx + 1 < len(sent)
    return {"attacker": attacker, "banned": banned, "requests_missed": missed,
            "after_threshold": len(received),
            "first_dropped_ns": sent[last_rx + 1] - t_n if banned and not read_arm else None,
            "arm_read": read_arm, "kernel_banned": bool(arm and arm.banned_ns),
            "request_to_ban_ns": arm.banned_ns - arm.request_ns if arm and arm.banned_ns
            else None,
            "response_to_ban_ns": arm.banned_ns - (arm.expires_ns - arm.ban_ns)
            if arm and arm.banned_ns else None}


def _analyse(per: list, interval_us: int) -> dict:
    after = [p["after_threshold"] for p in per]
    ttb = [p["first_dropped_ns"] / 1000 for p in per if p["first_dropped_ns"] is not None]
    armed = [p["request_to_ban_ns"] / 1000 for p in per if p["request_to_ban_ns"] is not None]
    capture = [p["response_to_ban_ns"] / 1000 for p in per
               if p["response_to_ban_ns"] is not None]
    return {
        "requests_per_s": round(1e6 / interval_us),
        "banned": sum(p["banned"] for p in per), "arms_read": sum(p["arm_read"] for p in per),
        "kernel_banned": sum(p["kernel_banned"] for p in per),
        "requests_missed": sum(p["requests_missed"] for p in per),
        "packets_after_threshold": {"p50": percentile(after, 50), "p99": percentile(after, 99),
                                    "max": max(after, default=None),
                                    "share_at_most_1": round(sum(a <= 1 for a in after) /
                                                             max(1, len(after)), 4)},
        "first_dropped_probe_after_t_n_us": {"p50": percentile(ttb, 50),
                                             "p99": percentile(ttb, 99), "count": len(ttb)},
        "armed_request_to_ban_us": {"p50": percentile(armed, 50), "p99": percentile(armed, 99),
                                    "max": max(armed, default=None), "count": len(armed)},
        "armed_response_to_ban_us": {"p50": percentile(capture, 50),
                                     "p99": percentile(capture, 99)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--attackers", type=int, default=300)
    args = parser.parse_args()
    results = run(quick=args.quick, attackers=args.attackers)
    save_json("kernel_ban", results)
    for mode in MODES:
        print(json.dumps({mode: results[mode]}))


if __name__ == "__main__":
    main()
