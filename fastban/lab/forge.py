"""Forged SIP requests over UDP: another host's source address, random source ports.

Run by fastban.lab.attackers' Forger inside the lab's forger namespace:

    python -m fastban.lab.forge --source 198.51.100.20 --destination 192.0.2.10 --count 1000 \
        --rate 1000 --methods REGISTER,INVITE,OPTIONS [--credentials] --call-id-prefix forged-x

Each request is a whole SIP request of its own: its own Call-ID (the prefix, a serial number and
a random part), branch, From tag and source port (uniform in --ports, default 1024-32767). With
--credentials it carries made-up digest credentials (Authorization, or Proxy-Authorization for
INVITE) with a random nonce and response. The packets are built with scapy (IPv4 or IPv6, UDP
with its checksum) and sent through a raw IP socket (IPPROTO_RAW: the header is ours, the
kernel routes and resolves the next hop). At most `rate` a second, paced against the clock.

Prints one JSON line: {"sent": N, "by_method": {...}}.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import socket
import sys
import time

MAX_COUNT = 1_000_000


def forged_request(method: str, source: str, source_port: int, server: str, server_port: int,
                   user: str, realm: str, call_id: str, credentials: bool) -> bytes:
    """One SIP request as a client at source:source_port would send it to server."""
    host = f"[{server}]" if ":" in server else server
    if server_port != 5060:
        host = f"{host}:{server_port}"
    here = f"[{source}]" if ":" in source else source
    uri = f"sip:{host}" if method in ("REGISTER", "OPTIONS") else f"sip:{user}@{host}"
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {here}:{source_port};branch=z9hG4bK{secrets.token_hex(8)};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{host}>;tag={secrets.token_hex(4)}",
        f"To: <sip:{user}@{host}>",
        f"Call-ID: {call_id}",
        f"CSeq: {random.randint(1, 9999)} {method}",
        f"Contact: <sip:{user}@{here}:{source_port}>",
    ]
    if credentials:
        header = "Proxy-Authorization" if method == "INVITE" else "Authorization"
        lines.append(f'{header}: Digest username="{user}", realm="{realm}", '
                     f'nonce="{secrets.token_hex(16)}", uri="{uri}", '
                     f'response="{secrets.token_hex(16)}", algorithm=MD5')
    if method == "REGISTER":
        lines.append("Expires: 3600")
    lines += ["User-Agent: fastban-lab-forger", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def build_packet(source: str, destination: str, source_port: int, destination_port: int,
                 payload: bytes) -> bytes:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.packet import Raw

    network = IPv6(src=source, dst=destination) if ":" in source else IP(src=source,
                                                                           dst=destination)
    return bytes(network / UDP(sport=source_port, dport=destination_port) / Raw(payload))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastban.lab.forge",
                                     description="forged SIP requests over UDP (lab use only)")
    parser.add_argument("--source", required=True, help="the forged source address")
    parser.add_argument("--destination", required=True, help="the SIP server")
    parser.add_argument("--port", type=int, default=5060, help="the server's port")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=1000.0, help="packets a second at most")
    parser.add_argument("--methods", default="REGISTER,INVITE,OPTIONS")
    parser.add_argument("--credentials", action="store_true")
    parser.add_argument("--user", default="3000")
    parser.add_argument("--realm", default="fastban.lab")
    parser.add_argument("--ports", default="1024-32767", help="source ports, low-high")
    parser.add_argument("--call-id-prefix", default="forged")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop after this long even if not all are sent")
    args = parser.parse_args(argv)

    if not 1 <= args.count <= MAX_COUNT:
        parser.error(f"--count must be 1..{MAX_COUNT}")
    if args.rate <= 0:
        parser.error("--rate must be positive")
    low, high = (int(p) for p in args.ports.split("-"))
    if not 1 <= low <= high <= 65535:
        parser.error("--ports must be low-high within 1-65535")
    methods = [m.strip().upper() for m in args.methods.split(",") if m.strip()]
    family = socket.AF_INET6 if ":" in args.source else socket.AF_INET
    if (":" in args.destination) != (family == socket.AF_INET6):
        parser.error("--source and --destination must be of one address family")
    max_seconds = args.max_seconds or args.count / args.rate * 2 + 10

    sender = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
    target = (args.destination, 0) if family == socket.AF_INET else (args.destination, 0, 0, 0)
    host = f"[{args.source}]" if ":" in args.source else args.source
    by_method = {m: 0 for m in methods}
    sent = 0
    started = time.monotonic()
    try:
        for serial in range(args.count):
            due = started + serial / args.rate
            now = time.monotonic()
            if now - started > max_seconds:
                break
            if due > now:
                time.sleep(due - now)
            method = random.choice(methods)
            call_id = f"{args.call_id_prefix}-{serial}-{secrets.token_hex(4)}@{host}"
            source_port = random.randint(low, high)
            payload = forged_request(method, args.source, source_port, args.destination,
                                     args.port, args.user, args.realm, call_id,
                                     args.credentials)
            sender.sendto(build_packet(args.source, args.destination, source_port, args.port,
                                       payload), target)
            sent += 1
            by_method[method] += 1
    finally:
        sender.close()
        print(json.dumps({"sent": sent, "by_method": by_method}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
