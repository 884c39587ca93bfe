"""Scapy builders of SIP traces for the rules and replay tests.

A ``Trace`` collects packets (time, addresses, ports, SIP bytes) and writes
them as pcap or pcapng, over Ethernet or a Linux cooked capture (SLL/SLL2),
UDP or TCP, IPv4 or IPv6.  Headers are built by scapy; for UDP the header of
a given (addresses, ports, length) is built once and reused (UDP checksum 0),
so day-long traces of hundreds of thousands of packets stay cheap to write.

Scenario helpers (``nat_phones``, ``wrong_password_phone``, ``guess_401``,
``guess_403``, ``extension_scan``) add the usual conversations.
"""

from __future__ import annotations

import ipaddress
import itertools
import struct

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether
from scapy.packet import Raw
from scapy.utils import PcapNgWriter, RawPcapWriter

SERVER = "192.0.2.10"
SERVER6 = "2001:db8::10"
T0 = 1_764_460_800.0  # 2025-11-30 00:00:00 UTC

LINKTYPES = {"ether": 1, "sll": 113, "sll2": 276}


def _host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr


def sip_response(status: int, *, call_id: str, branch: str, via_host: str, via_port: int = 5060,
                 cseq: int = 1, method: str = "REGISTER", received: str | None = None,
                 user: str = "100", server_host: str = SERVER, compact: bool = False,
                 transport: str = "UDP") -> bytes:
    reasons = {100: "Trying", 180: "Ringing", 200: "OK", 401: "Unauthorized", 403: "Forbidden",
               404: "Not Found", 407: "Proxy Authentication Required", 486: "Busy Here",
               487: "Request Terminated"}
    via = f"SIP/2.0/{transport} {_host(via_host)}:{via_port};branch={branch};rport={via_port}"
    if received:
        via += f";received={received}"
    h = {"via": "v", "from": "f", "to": "t", "call-id": "i", "content-length": "l"}
    name = (lambda n: h[n]) if compact else (lambda n: {"via": "Via", "from": "From", "to": "To",
                                                       "call-id": "Call-ID",
                                                       "content-length": "Content-Length"}[n])
    lines = [
        f"SIP/2.0 {status} {reasons.get(status, 'Whatever')}",
        f"{name('via')}: {via}",
        f"{name('from')}: <sip:{user}@{_host(server_host)}>;tag=from{abs(hash(call_id)) % 99999}",
        f"{name('to')}: <sip:{user}@{_host(server_host)}>"
        + (f";tag=to{cseq}" if status >= 200 else ""),
        f"{name('call-id')}: {call_id}",
        f"CSeq: {cseq} {method}",
        "Server: TestPBX",
    ]
    if status == 401:
        lines.append('WWW-Authenticate: Digest realm="asterisk",nonce="1234abcd",algorithm=MD5')
    if status == 407:
        lines.append('Proxy-Authenticate: Digest realm="asterisk",nonce="1234abcd",algorithm=MD5')
    lines.append(f"{name('content-length')}: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def sip_request(method: str, *, call_id: str, branch: str, via_host: str, via_port: int = 5060,
                cseq: int = 1, user: str = "100", server_host: str = SERVER,
                auth: bool = False, transport: str = "UDP") -> bytes:
    lines = [
        f"{method} sip:{user}@{_host(server_host)} SIP/2.0",
        f"Via: SIP/2.0/{transport} {_host(via_host)}:{via_port};branch={branch};rport",
        f"From: <sip:{user}@{_host(server_host)}>;tag=f1",
        f"To: <sip:{user}@{_host(server_host)}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        "Max-Forwards: 70",
        "User-Agent: friendly-scanner",
    ]
    if auth:
        lines.append(f'Authorization: Digest username="{user}",realm="asterisk",'
                     f'nonce="1234abcd",uri="sip:{_host(server_host)}",response="0123"')
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Trace:
    """Packets between the SIP server and its peers, written as a capture file."""

    def __init__(self, server: str = SERVER, port: int = 5060, transport: str = "udp",
                 both_directions: bool = False):
        self.server = server
        self.port = port
        self.transport = transport
        self.both_directions = both_directions
        self.packets = []  # (time, src, dst, sport, dport, payload)
        self._branches = itertools.count(1)

    def branch(self) -> str:
        return f"z9hG4bK{next(self._branches):08d}"

    # -- adding packets -------------------------------------------------------------

    def add(self, t, src, dst, sport, dport, payload: bytes):
        self.packets.append((t, src, dst, sport, dport, payload))

    def respond(self, t, peer, status, *, call_id, branch, peer_port=5060, method="REGISTER",
                cseq=1, **kw):
        """The server's response to a peer (what the live egress capture sees)."""
        payload = sip_response(status, call_id=call_id, branch=branch, via_host=peer,
                               via_port=peer_port, cseq=cseq, method=method,
                               server_host=self.server,
                               transport=self.transport.upper(), **kw)
        self.add(t, self.server, peer, self.port, peer_port, payload)

    def request(self, t, peer, method, *, call_id, branch, peer_port=5060, cseq=1, **kw):
        """A peer's request to the server (only written when both_directions is set)."""
        if not self.both_directions:
            return
        payload = sip_request(method, call_id=call_id, branch=branch, via_host=peer,
                              via_port=peer_port, cseq=cseq, server_host=self.server,
                              transport=self.transport.upper(), **kw)
        self.add(t, peer, self.server, peer_port, self.port, payload)

    def exchange(self, t, peer, method, status, *, call_id, cseq=1, branch=None, peer_port=5060,
                 auth=False, rtt=0.02, **kw):
        """A request and the server's answer; returns the branch used."""
        branch = branch or self.branch()
        self.request(t, peer, method, call_id=call_id, branch=branch, peer_port=peer_port,
                     cseq=cseq, auth=auth)
        self.respond(t + rtt, peer, status, call_id=call_id, branch=branch, peer_port=peer_port,
                     method=method, cseq=cseq, **kw)
        return branch

    # -- writing ---------------------------------------------------------------------

    def frames(self, link: str = "ether"):
        """(time, frame bytes) for every packet, time-ordered."""
        cache = {}
        seqs = {}
        for t, src, dst, sport, dport, payload in sorted(self.packets, key=lambda p: p[0]):
            v6 = ":" in src
            if self.transport == "tcp":
                flow = (src, dst, sport, dport)
                seq = seqs.get(flow, 1000)
                seqs[flow] = seq + len(payload)
                ip = (IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst))
                pkt = _link(link, v6) / ip / TCP(sport=sport, dport=dport, flags="PA",
                                                  seq=seq, ack=1) / Raw(payload)
                yield t, bytes(pkt)
                continue
            key = (src, dst, sport, dport, len(payload))
            header = cache.get(key)
            if header is None:
                ip = (IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst, id=1))
                pkt = _link(link, v6) / ip / UDP(sport=sport, dport=dport, chksum=0) / Raw(
                    b"\0" * len(payload))
                header = cache[key] = bytes(pkt)[:-len(payload)]
            yield t, header + payload

    def write(self, path, link: str = "ether", fmt: str = "pcap"):
        path = str(path)
        if fmt == "pcapng":
            cls = {"ether": Ether, "sll": CookedLinux, "sll2": CookedLinuxV2}[link]
            w = PcapNgWriter(path)
            for t, frame in self.frames(link):
                p = cls(frame)
                p.time = t
                w.write(p)
            w.close()
            return path
        w = RawPcapWriter(path, linktype=LINKTYPES[link])
        w.write_header(None)
        for t, frame in self.frames(link):
            sec = int(t)
            w.write_packet(frame, sec=sec, usec=int(round((t - sec) * 1e6)))
        w.close()
        return path


def _link(link, v6):
    proto = 0x86DD if v6 else 0x0800
    if link == "ether":
        return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=proto)
    if link == "sll":
        return CookedLinux(pkttype=4, lladdrtype=1, lladdrlen=6, src=b"\x02\0\0\0\0\x01",
                           proto=proto)
    if link == "sll2":
        return CookedLinuxV2(proto=proto, ifindex=2, lladdrtype=1, pkttype=4, lladdrlen=6,
                             src=b"\x02\0\0\0\0\x01")
    raise ValueError(link)


# -- scenarios --------------------------------------------------------------------------------

def nat_phones(trace: Trace, nat: str, *, phones=50, period=30.0, duration=86400.0, t0=T0):
    """Phones behind one NAT address: REGISTER -> 401 -> REGISTER(auth) -> 200, every period.
    Each phone keeps its Call-ID and increments its CSeq, like real phones."""
    for phone in range(phones):
        call_id = f"reg-{phone}@10.0.0.{phone + 2}"
        port = 5060 + phone + 1  # each phone its own NAT port
        cseq = 1
        t = t0 + phone * (period / phones)
        while t < t0 + duration:
            trace.exchange(t, nat, "REGISTER", 401, call_id=call_id, cseq=cseq, peer_port=port)
            trace.exchange(t + 0.05, nat, "REGISTER", 200, call_id=call_id, cseq=cseq + 1,
                           peer_port=port, auth=True)
            cseq += 2
            t += period
    return trace


def wrong_password_phone(trace: Trace, peer: str, *, registrations=12, period=60.0, t0=T0):
    """A phone with a wrong password: every registration attempt is challenged twice
    (fresh REGISTER -> 401, REGISTER with wrong credentials -> 401), then it waits."""
    for i in range(registrations):
        call_id = "badpw-phone@10.1.1.1"
        t = t0 + i * period
        trace.exchange(t, peer, "REGISTER", 401, call_id=call_id, cseq=2 * i + 1)
        trace.exchange(t + 0.05, peer, "REGISTER", 401, call_id=call_id, cseq=2 * i + 2,
                       auth=True)
    return trace


def guess_401(trace: Trace, peer: str, guesses: int, *, t0=T0, interval=0.2,
              call_id="guess401", same_cseq=True, user="100"):
    """Password guessing: one Call-ID, a new branch per guess (same CSeq), each wrong guess
    answered by a fresh 401."""
    trace.exchange(t0, peer, "REGISTER", 401, call_id=call_id, cseq=1, user=user)
    for i in range(1, guesses + 1):
        trace.exchange(t0 + i * interval, peer, "REGISTER", 401, call_id=call_id,
                       cseq=1 if same_cseq else i + 1, auth=True, user=user)
    return trace


def guess_403(trace: Trace, peer: str, guesses: int, *, t0=T0, interval=0.2, call_id="guess403"):
    """Password guessing where each wrong guess is answered 403 (after a 401)."""
    for i in range(guesses):
        t = t0 + i * interval
        trace.exchange(t, peer, "REGISTER", 401, call_id=call_id, cseq=1)
        trace.exchange(t + 0.05, peer, "REGISTER", 403, call_id=call_id, cseq=1, auth=True)
    return trace


def extension_scan(trace: Trace, peer: str, extensions: int, *, t0=T0, interval=0.05):
    """An extension scan by REGISTER, INVITE and OPTIONS; the challenges are never answered."""
    methods = ("REGISTER", "INVITE", "OPTIONS")
    for i in range(extensions):
        method = methods[i % 3]
        status = 407 if method == "INVITE" else 401
        trace.exchange(t0 + i * interval, peer, method, status, call_id=f"scan-{i}-{peer}",
                       cseq=1, user=str(100 + i))
    return trace


def retransmitted_401(trace: Trace, peer: str, *, copies=5, t0=T0, call_id="retx"):
    """One transaction whose 401 is sent several times (the request was retransmitted),
    then answered correctly."""
    branch = trace.branch()
    for k in range(copies):
        trace.exchange(t0 + 0.5 * k, peer, "REGISTER", 401, call_id=call_id, branch=branch)
    trace.exchange(t0 + 3, peer, "REGISTER", 200, call_id=call_id, cseq=2, auth=True)
    return trace


def random_addresses(n, seed=7, v6=False):
    import random
    rnd = random.Random(seed)
    if v6:
        return [str(ipaddress.IPv6Address((0x20010db8 << 96) | rnd.getrandbits(96)))
                for _ in range(n)]
    return [str(ipaddress.IPv4Address((203 << 24) | rnd.getrandbits(24))) for _ in range(n)]


# -- HEPv3 ------------------------------------------------------------------------------------

HEP_COLLECTOR = ("127.0.0.1", 9060)


def hep_chunk(kind: int, data: bytes, vendor: int = 0) -> bytes:
    return struct.pack("!HHH", vendor, kind, 6 + len(data)) + data


def hep3(payload: bytes, src: str, dst: str, sport: int, dport: int, *, t: float = T0,
         ip_proto: int = 17, capture_id: int = 2001, auth_key: bytes | None = None) -> bytes:
    """A HEPv3 packet as Kamailio's siptrace builds one (siptrace_hep.c: family, protocol,
    addresses, ports, time, protocol type SIP, capture id, key, payload)."""
    v6 = ":" in src
    family = struct.pack("!B", 10 if v6 else 2)
    pack = ipaddress.ip_address
    chunks = [hep_chunk(1, family), hep_chunk(2, struct.pack("!B", ip_proto)),
              hep_chunk(5 if v6 else 3, pack(src).packed), hep_chunk(6 if v6 else 4, pack(dst).packed),
              hep_chunk(7, struct.pack("!H", sport)), hep_chunk(8, struct.pack("!H", dport)),
              hep_chunk(9, struct.pack("!I", int(t))),
              hep_chunk(10, struct.pack("!I", int(round((t - int(t)) * 1e6)) % 1_000_000)),
              hep_chunk(11, b"\x01"), hep_chunk(12, struct.pack("!I", capture_id))]
    if auth_key is not None:
        chunks.append(hep_chunk(14, auth_key))
    chunks.append(hep_chunk(15, payload))
    body = b"".join(chunks)
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body


def as_hep(trace: Trace, *, sender: str = HEP_COLLECTOR[0], collector=HEP_COLLECTOR,
           delay: float = 0.001, ip_proto: int = 6, auth_key: bytes | None = None,
           keep_wire: bool = False, transport: str = "udp") -> Trace:
    """The trace as the server's HEP feed: each message a HEP datagram from ``sender`` to
    the collector, ``delay`` after it crossed the wire (the wire packets too, with
    ``keep_wire``; then both are UDP). ip_proto 6: what siptrace says for TCP and TLS.
    ``transport`` "tcp": HEP over one TCP connection."""
    feed = Trace(server=trace.server, port=trace.port, transport=transport)
    if keep_wire:
        feed.packets = list(trace.packets)
    for t, src, dst, sport, dport, payload in trace.packets:
        feed.add(t + delay, sender, collector[0], 40000, collector[1],
                 hep3(payload, src, dst, sport, dport, t=t, ip_proto=ip_proto, auth_key=auth_key))
    return feed
