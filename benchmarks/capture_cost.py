"""What the capture costs: ns per packet in the kernel, and what a busy NAT office copies.

1. Kernel cost, before and after. The TC capture of today (bpf/tc_capture.c, loaded by a
   DataPlane) and the one before it read Call-IDs (benchmarks/baseline/tc_capture_per_address.c:
   one count of challenges outstanding per address) run the same frames with
   BPF_PROG_TEST_RUN, trial by trial alternated; the kernel reports the average ns of one run.
   The frames are the server's: a 200 OK to an address never challenged (most traffic), a 401,
   a 403, a 200 to a challenged address on its open Call-ID and on another Call-ID, and, for
   today's program, requests from a challenged address with and without credentials. No reader
   drains today's ring buffer, so once it is full a copy fails after the record is assembled
   in its scratch map; the baseline's perf copy fails at once with no reader. A program run over the same frame again and again keeps
   the state the first run left: the old program's "answer" becomes "not challenged" after one
   run, so only stable cases are compared.
2. A busy NAT office. The lab's office (fastban.lab.siplab: 50 sipp phones behind one
   nftables NAT address, each its own port, REGISTER with digest auth, OPTIONS keep-alives,
   calls with a 407), with `fastban run` guarding the server: SIP messages per second on the
   wire (counted by the kernel), copied per second and why (kernel counters and the copies'
   reasons), and what the per-address filter of before would have copied of the same traffic
   (the recording replayed through a Python model of it).

    .venv/bin/python -m benchmarks.capture_cost [--quick]
"""

from __future__ import annotations

import argparse
import ctypes as ct
import ipaddress
import time

from benchmarks import bpfsys
from benchmarks.common import BENCH_PIN_ROOT, HERE, log, median, save_json, udp_frame

SERVER, PHONE, OFFICE = "192.0.2.10", "198.51.100.7", "198.51.100.20"


def _sip(status: int, call_id: str, extra: str = "") -> bytes:
    """A Kamailio-like response (Via, From, To, Call-ID, CSeq, Server, Content-Length)."""
    reasons = {200: "OK", 401: "Unauthorized", 403: "Forbidden"}
    return (f"SIP/2.0 {status} {reasons[status]}\r\n"
            f"Via: SIP/2.0/UDP 192.168.50.2:40001;rport=40001;received={OFFICE};"
            f"branch=z9hG4bK-524287-1---8d2fc8cb5e4d1a71\r\n"
            f"From: <sip:3001@fastban.lab>;tag=8a1b2c3d\r\n"
            f"To: <sip:3001@fastban.lab>;tag=f8d3a0e1b9c2d4e5f6a7b8c9d0e1f2a3\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 2 REGISTER\r\n{extra}"
            f"Server: fastban-lab\r\nContent-Length: 0\r\n\r\n").encode()


def _request(call_id: str, credentials: bool) -> bytes:
    auth = ('Authorization: Digest username="3001", realm="fastban.lab", '
            'nonce="Z2VuZXJhdGVkLW5vbmNlLWZvci10aGUtYmVuY2g=", uri="sip:fastban.lab", '
            'response="6f1b5ae6d9ab0e6b3ad1a5a9f3c1d2e4", algorithm=MD5, '
            'cnonce="0a4f113b", qop=auth, nc=00000001\r\n' if credentials else "")
    return (f"REGISTER sip:fastban.lab SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.168.50.2:40001;branch=z9hG4bK-524287-1---77aa;rport\r\n"
            f"Max-Forwards: 70\r\nContact: <sip:3001@192.168.50.2:40001;rinstance=1f2e3d>\r\n"
            f"To: <sip:3001@fastban.lab>\r\nFrom: <sip:3001@fastban.lab>;tag=8a1b2c3d\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 3 REGISTER\r\nExpires: 60\r\n"
            f"Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO\r\n"
            f"User-Agent: Bench Phone 1.0\r\n{auth}Content-Length: 0\r\n\r\n").encode()


WWW = 'WWW-Authenticate: Digest realm="fastban.lab", nonce="abc123", qop="auth"\r\n'
RESPONSES = {   # case: (destination, payload)
    "200 to a healthy address": (PHONE, _sip(200, "options-1@phone")),
    "401": (OFFICE, _sip(401, "reg-1@office", WWW)),
    "403": (PHONE, _sip(403, "guess@phone")),
    "200 on the open Call-ID of a challenged address": (OFFICE, _sip(200, "reg-1@office")),
    "200 on another Call-ID of a challenged address": (OFFICE, _sip(200, "options-9@office")),
}
REQUESTS = {
    "request with credentials from a challenged address": _request("reg-1@office", True),
    "request without credentials from a challenged address": _request("opt-2@office", False),
}
STABLE_IN_BOTH = ("200 to a healthy address", "401", "403")


def _old_program():
    """The per-address capture of before, with its own unpinned maps."""
    from bcc import BPF
    bpf = BPF(src_file=str(HERE / "baseline" / "tc_capture_per_address.c").encode(),
              cflags=["-w"])
    bpf[b"sip_ports"][ct.c_ushort(5060)] = ct.c_ubyte(1)
    return bpf, bpf.load_func(b"tc_capture_egress", BPF.SCHED_CLS)


def _challenge_old(bpf, address: str) -> None:
    """Marks address with a challenge outstanding, as a 401 to it would."""
    table = bpf[b"challenges"]
    key = table.Key()
    key.addr[:] = ipaddress.IPv6Address(f"::ffff:{address}").packed
    value = table.Leaf()
    value.outstanding, value.last_ns = 1, time.monotonic_ns()
    table[key] = value


def kernel_cost(repeat: int, trials: int) -> dict:
    from fastban.lab import netns
    from fastban.dataplane import DataPlane

    frames = {case: udp_frame(SERVER, dst, 5060, 40001, payload)
              for case, (dst, payload) in RESPONSES.items()}
    requests = {case: udp_frame(OFFICE, SERVER, 40001, 5060, payload)
                for case, payload in REQUESTS.items()}
    result = {"repeat": repeat, "trials": trials, "cases": {}}
    with netns.Lab() as lab:
        ns = lab.namespace("cap")
        link = lab.link(ns, lab.namespace("peer"), "10.232.0.1/24", "10.232.0.2/24")
        with ns.entered():
            dp = DataPlane(link.a, capture="egress", pin_root=f"{BENCH_PIN_ROOT}/capture")
        old_bpf, old_fn = _old_program()
        try:
            egress, ingress = dp._tc_fns["egress"].fd, dp._tc_fns["ingress"].fd

            def challenge():        # again before each trial: the window is challenge_grace
                dp.mark_challenge(OFFICE, b"reg-1@office", time.monotonic_ns())
                _challenge_old(old_bpf, OFFICE)

            for case, frame in frames.items():
                new_runs, old_runs = [], []
                for _ in range(trials):
                    challenge()
                    new_runs.append(bpfsys.prog_test_run(egress, frame, repeat)[1])
                    if case in STABLE_IN_BOTH:
                        old_runs.append(bpfsys.prog_test_run(old_fn.fd, frame, repeat)[1])
                row = {"now_ns": median(new_runs), "payload_bytes": len(RESPONSES[case][1])}
                if old_runs:
                    row["before_ns"] = median(old_runs)
                    row["now_vs_before"] = round(row["now_ns"] / row["before_ns"], 2)
                result["cases"][case] = row
                log(f"capture cost {case}: {row}")
            for case, frame in requests.items():
                runs = []
                for _ in range(trials):
                    challenge()
                    runs.append(bpfsys.prog_test_run(ingress, frame, repeat)[1])
                result["cases"][case] = {"now_ns": median(runs),
                                         "payload_bytes": len(REQUESTS[case])}
                log(f"capture cost {case}: {result['cases'][case]}")
            result["counters"] = {k: v for k, v in dp.counters().items() if "capture" in k}
        finally:
            old_bpf.cleanup()
            with ns.entered():
                dp.detach()
            dp.close()
    return result


def per_address_copies(path, sip_ports=(5060,)) -> int:
    """What the capture of before copied of a recording: every 401/403/407, and a final answer
    to an address while its count of challenges outstanding (401/407 sent, minus final
    answers copied, for 64 s) was above zero; requests never."""
    from fastban import packets
    from fastban.replay import _packets, open_capture

    stale, outstanding, copies = 64.0, {}, 0
    reader = open_capture(path)
    try:
        for linktype, ts, frame in _packets(reader):
            try:
                segment = packets.decode(linktype, frame)
            except packets.LaterFragment:
                continue
            payload = segment.payload if segment else b""
            if segment is None or segment.sport not in sip_ports or \
                    not payload.startswith(b"SIP/2.0 ") or not payload[8:11].isdigit():
                continue
            status, peer = int(payload[8:11]), segment.dst
            count, last = outstanding.get(peer, (0, 0.0))
            if status in (401, 407):
                copies += 1
                outstanding[peer] = (1 if ts - last > stale else count + 1, ts)
            elif status >= 200:
                if status == 403:
                    copies += 1
                if count > 0 and ts - last <= stale:
                    copies += status != 403
                    if count > 1:
                        outstanding[peer] = (count - 1, last)
                    else:
                        del outstanding[peer]
                else:
                    outstanding.pop(peer, None)
    finally:
        reader.close()
    return copies


def office_copies(seconds: float, phones: int = 50) -> dict:
    """A busy office through the real capture, and the capture of before on its recording."""
    import tempfile
    from pathlib import Path

    from fastban.lab.guard_process import GuardProcess
    from fastban.replay import replay
    from fastban.config import load_settings
    from fastban.lab.siplab import SipLab

    with SipLab(attackers=1) as lab, tempfile.TemporaryDirectory(prefix="fbcap-") as workdir:
        office = lab.add_office()
        guard = GuardProcess(lab.server_namespace, lab.server_iface, Path(workdir))
        guard.start()
        try:
            recording_path = Path(workdir) / "office.pcap"
            with lab.record(recording_path):
                before = guard.json("stats")
                started = time.monotonic()
                result = office.run_phones(count=phones, duration=seconds, register_interval=20,
                                           options_interval=5, call_interval=40, call_hold=2.0,
                                           response_timeout=5.0)
                elapsed = time.monotonic() - started
                time.sleep(1.0)
                after = guard.json("stats")
        finally:
            guard.detach()
        replayed = replay(recording_path, load_settings(guard.config))
        old = per_address_copies(recording_path)
    delta = {k: after[k] - before[k] for k in ("sip_packets_examined", "packets_captured",
                                                "requests_captured", "failures_counted")}
    reasons = {k: after["captured_by_reason"].get(k, 0) - before["captured_by_reason"].get(k, 0)
               for k in after["captured_by_reason"]}
    out = {
        "phones": phones, "seconds": round(elapsed, 1),
        "sip_packets_on_the_wire": replayed.segments,
        "sip_packets_per_s": round(replayed.segments / elapsed, 1),
        "examined_by_the_kernel": delta["sip_packets_examined"],
        "copied_now": delta["packets_captured"],
        "copied_now_per_s": round(delta["packets_captured"] / elapsed, 1),
        "copied_now_by_reason": reasons,
        "copied_before": old,
        "copied_before_per_s": round(old / elapsed, 1),
        "failures_live": delta["failures_counted"], "failures_replay": replayed.failures,
        "registrations": result.registrations_ok, "options": result.by_kind["OPTIONS"].sent,
        "calls": result.calls_made,
    }
    log(f"office copies: {out}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeat, trials = (200_000, 3) if args.quick else (1_000_000, 7)
    results = {"kernel": kernel_cost(repeat, trials),
               "office": office_copies(30 if args.quick else 120)}
    save_json("capture_cost", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
