"""``fastban replay CAPTURE``: the parser and the failure rules over a pcap/pcapng file.

Uses the same settings as the live guard.  What it does, packet by packet:

* The file is read by scapy's raw readers (``RawPcapReader`` / ``RawPcapNgReader``,
  which also open gzip-compressed captures): pcap (µs or ns) and pcapng.
  Link, IP and transport headers are then decoded here with ``struct``: full
  scapy dissection costs ~230 µs a packet against ~2 µs, and a day of a
  busy PBX is millions of packets.  Understood: Ethernet (with 802.1Q/QinQ
  tags), Linux cooked captures SLL and SLL2, raw IP, BSD loopback; IPv4 and
  IPv6 (extension headers skipped); UDP and TCP.  IP fragments are skipped
  (counted).
* Only packets whose SOURCE port is one of ``sip_ports`` are taken: they are
  what the server sends, like the live guard's egress capture.  Requests in
  the other direction are ignored, so a capture of both directions is fine.
* TCP: each segment is parsed on its own, no stream reassembly: several
  messages in one segment are split by their Content-Length; a message split
  over segments is counted as malformed (servers normally write a response
  in one segment).
* The peer (the offender) is the packet's destination address.
* Time is the packet timestamps.  Unanswered challenges are expired exactly
  when their grace ends (``FailureRules.next_expiry``); at the end of the
  capture the still-open challenges are expired as if the capture had gone on
  for the grace period with no answer (``final_expire=False`` turns this off).
* A ban is simulated: responses to a banned source are skipped while the ban
  lasts (the live guard would have dropped its requests), with fail2ban-like
  escalation when ``bantime_increment`` is set.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from datetime import datetime, timezone

from fastban.config import Settings
from fastban.rules import BanDecision, FailureRules

try:  # the parser front (compiled extension or fallback) ...
    from fastban.sip import parse as sip_parse
except ImportError:  # ... until it lands, the pure-Python parser it wraps
    from fastban.sip_pure import parse as sip_parse

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = (12, 14, 101)
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

_VLAN = (0x8100, 0x88A8, 0x9100)
_V6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options
_MAXSNAP = 262144


class ReplayError(Exception):
    """The capture cannot be read (the message is one line for the user)."""


class Fragment(Exception):
    pass


def decode(linktype: int, frame: bytes):
    """(src ip bytes, dst ip bytes, proto, sport, dport, payload) or None.

    Raises ``Fragment`` for IP fragments."""
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None
        etype = (frame[12] << 8) | frame[13]
        off = 14
        while etype in _VLAN and len(frame) >= off + 4:
            etype = (frame[off + 2] << 8) | frame[off + 3]
            off += 4
    elif linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return None
        etype = (frame[14] << 8) | frame[15]
        off = 16
    elif linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            return None
        etype = (frame[0] << 8) | frame[1]
        off = 20
    elif linktype in LINKTYPE_RAW or linktype in (LINKTYPE_IPV4, LINKTYPE_IPV6):
        if not frame:
            return None
        etype = 0x0800 if frame[0] >> 4 == 4 else 0x86DD
        off = 0
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(frame) < 5:
            return None
        etype = 0x0800 if frame[4] >> 4 == 4 else 0x86DD
        off = 4
    else:
        return None

    if etype == 0x0800:
        if len(frame) < off + 20 or frame[off] >> 4 != 4:
            return None
        ihl = (frame[off] & 0x0F) * 4
        total = (frame[off + 2] << 8) | frame[off + 3]
        flags_frag = (frame[off + 6] << 8) | frame[off + 7]
        if flags_frag & 0x3FFF:  # MF set or offset != 0
            raise Fragment()
        proto = frame[off + 9]
        src = frame[off + 12:off + 16]
        dst = frame[off + 16:off + 20]
        end = off + total if total >= ihl else len(frame)
        off += ihl
    elif etype == 0x86DD:
        if len(frame) < off + 40 or frame[off] >> 4 != 6:
            return None
        plen = (frame[off + 4] << 8) | frame[off + 5]
        proto = frame[off + 6]
        src = frame[off + 8:off + 24]
        dst = frame[off + 24:off + 40]
        off += 40
        end = off + plen
        while proto in _V6_EXT or proto == 44 or proto == 51:
            if proto == 44:
                raise Fragment()
            if len(frame) < off + 2:
                return None
            hlen = (frame[off + 1] + 2) * 4 if proto == 51 else (frame[off + 1] + 1) * 8
            proto = frame[off]
            off += hlen
    else:
        return None

    if proto == 17:
        if len(frame) < off + 8:
            return None
        sport, dport, ulen = struct.unpack_from("!HHH", frame, off)
        if ulen >= 8:
            end = min(end, off + ulen)
        return src, dst, 17, sport, dport, frame[off + 8:end]
    if proto == 6:
        if len(frame) < off + 20:
            return None
        sport, dport = struct.unpack_from("!HH", frame, off)
        doff = (frame[off + 12] >> 4) * 4
        return src, dst, 6, sport, dport, frame[off + doff:end]
    return None


def tcp_messages(payload: bytes):
    """The SIP messages of one TCP segment (split by Content-Length); None for junk."""
    while payload:
        payload = payload.lstrip(b"\r\n")  # keep-alives between messages
        if not payload:
            return
        end = payload.find(b"\r\n\r\n")
        if end < 0:
            yield None  # cut: the rest is in the next segment
            return
        msg = sip_parse(payload)
        yield msg
        if msg is None:
            return
        payload = payload[end + 4 + max(msg.content_length, 0):]


@dataclass
class ReplayBan:
    address: str
    network: str
    at: float                 # capture time of the decision (Unix time)
    failures: int
    first_failure_at: float
    bantime: int
    reason: str

    @property
    def when(self) -> str:
        return iso(self.at)

    def as_dict(self) -> dict:
        return {
            "address": self.address, "network": self.network, "at": self.when,
            "timestamp": self.at, "failures": self.failures,
            "first_failure_at": iso(self.first_failure_at), "bantime": self.bantime,
            "reason": self.reason,
        }


@dataclass
class ReplayResult:
    capture: str
    packets: int = 0              # packets read from the file
    from_server: int = 0          # UDP/TCP packets with a SIP source port and a payload
    sip_responses: int = 0
    sip_requests: int = 0         # requests from a SIP source port (ignored)
    malformed: int = 0            # payload from a SIP port that is not a SIP message
    fragments: int = 0            # IP fragments skipped
    undecodable: int = 0          # not IP/UDP/TCP, or an unsupported link type
    skipped_banned: int = 0       # responses to a source while it was banned
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    bans: list = field(default_factory=list)
    rules: dict = field(default_factory=dict)
    linktypes: set = field(default_factory=set)

    @property
    def failures(self) -> int:
        return self.rules.get("failures", 0)

    def summary(self) -> dict:
        return {
            "capture": self.capture, "packets": self.packets,
            "from_server": self.from_server, "sip_responses": self.sip_responses,
            "sip_requests_ignored": self.sip_requests, "malformed_skipped": self.malformed,
            "fragments_skipped": self.fragments, "undecodable": self.undecodable,
            "skipped_while_banned": self.skipped_banned, "failures": self.failures,
            "bans": len(self.bans),
            "first_packet": iso(self.first_timestamp) if self.first_timestamp is not None else None,
            "last_packet": iso(self.last_timestamp) if self.last_timestamp is not None else None,
        }

    settings: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"bans": [b.as_dict() for b in self.bans], "summary": self.summary(),
                "rules": dict(self.rules), "settings": dict(self.settings)}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def open_capture(path):
    """A scapy raw reader for a pcap or pcapng file, or ReplayError."""
    from scapy.error import Scapy_Exception
    from scapy.utils import RawPcapReader

    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise ReplayError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ReplayError(f"{path}: is a directory") from None
    except OSError as e:
        raise ReplayError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        return RawPcapReader(str(path))
    except (Scapy_Exception, EOFError, OSError, ValueError, struct.error):
        raise ReplayError(f"{path}: not a pcap or pcapng capture file") from None


def _packets(reader):
    """(linktype, timestamp or None, frame) for every packet of the file."""
    from scapy.error import Scapy_Exception

    ng = hasattr(reader, "interfaces")
    if not ng:
        linktype = reader.linktype
        scale = 1e-9 if reader.nano else 1e-6
    while True:
        try:
            frame, meta = reader._read_packet(size=_MAXSNAP)
        except EOFError:
            return
        except (Scapy_Exception, struct.error, ValueError):
            return  # a damaged tail: stop there (packets so far are reported)
        if ng:
            ts = None if meta.tshigh is None else ((meta.tshigh << 32) | meta.tslow) / meta.tsresol
            yield meta.linktype, ts, frame
        else:
            yield linktype, meta.sec + meta.usec * scale, frame


def replay(path, settings: Settings | None = None, *, final_expire: bool = True,
           on_ban=None) -> ReplayResult:
    """Runs the parser and the rules over the capture at ``path``.

    ``on_ban(ReplayBan)`` is called for each ban as it is decided."""
    settings = settings or Settings()
    rules = FailureRules(settings.rule_settings())
    sip_ports = frozenset(settings.sip_ports)
    result = ReplayResult(capture=str(path), settings={
        "maxretry": settings.maxretry, "findtime": settings.findtime,
        "bantime": settings.bantime, "challenge_grace": settings.challenge_grace,
        "sip_ports": list(settings.sip_ports),
        "whitelist": [str(n) for n in settings.ignored_networks]})
    banned: dict = {}          # source key -> ban end time
    ban_counts: dict = {}      # source key -> bans so far (escalation)
    ip = ipaddress.ip_address

    def record(decision: BanDecision):
        key = rules.source_key(decision.address)
        previous = ban_counts.get(key, 0)
        ban_counts[key] = previous + 1
        bantime = settings.bantime_for(previous)
        banned[key] = decision.decided_at + bantime
        ban = ReplayBan(
            address=str(decision.address), network=str(decision.network),
            at=decision.decided_at, failures=decision.failures,
            first_failure_at=decision.first_failure_at, bantime=bantime,
            reason=decision.reason)
        result.bans.append(ban)
        if on_ban is not None:
            on_ban(ban)

    def expire_until(t):
        nxt = rules.next_expiry()
        while nxt is not None and nxt <= t:
            for d in rules.expire(nxt):
                record(d)
            nxt = rules.next_expiry()

    reader = open_capture(path)
    now = None
    try:
        for linktype, ts, frame in _packets(reader):
            result.packets += 1
            result.linktypes.add(linktype)
            if ts is None:
                ts = now if now is not None else 0.0
            if now is None or ts > now:
                now = ts
            if result.first_timestamp is None:
                result.first_timestamp = ts
            try:
                decoded = decode(linktype, frame)
            except Fragment:
                result.fragments += 1
                continue
            if decoded is None:
                result.undecodable += 1
                continue
            src, dst, proto, sport, dport, payload = decoded
            if sport not in sip_ports or not payload:
                continue
            if proto == 17 and payload in (b"\r\n\r\n", b"\r\n", b"\0" * len(payload)):
                continue  # keep-alives
            result.from_server += 1
            expire_until(now)
            peer = None
            for msg in (tcp_messages(payload) if proto == 6 else (sip_parse(payload),)):
                if msg is None:
                    result.malformed += 1
                    continue
                if not msg.is_response:
                    result.sip_requests += 1
                    continue
                result.sip_responses += 1
                if peer is None:
                    peer = ip(dst)
                if banned:
                    key = rules.source_key(peer)
                    until = banned.get(key)
                    if until is not None:
                        if now < until:
                            result.skipped_banned += 1
                            continue
                        del banned[key]
                decision = rules.observe(now, peer, msg)
                if decision is not None:
                    record(decision)
    finally:
        reader.close()
    if now is not None:
        result.last_timestamp = now
        expire_until(now + settings.challenge_grace if final_expire else now)
    result.rules = dict(rules.stats)
    return result


def format_text(result: ReplayResult, settings: Settings) -> str:
    lines = []
    for b in result.bans:
        lines.append(f"ban {b.network if b.network.split('/')[0] != b.address else b.address}"
                     f"  at {b.when}  after {b.failures} failures ({b.reason}); "
                     f"bantime {b.bantime} s")
    if not result.bans:
        lines.append("no address would be banned")
    s = result.summary()
    lines.append(
        f"summary: {s['packets']} packets read, {s['sip_responses']} SIP responses, "
        f"{s['malformed_skipped']} malformed skipped, {s['failures']} failures, "
        f"{s['bans']} ban{'s' if s['bans'] != 1 else ''}")
    details = []
    for key, label in (("fragments_skipped", "IP fragments skipped"),
                       ("undecodable", "packets not IP/UDP/TCP"),
                       ("skipped_while_banned", "responses to banned sources skipped"),
                       ("sip_requests_ignored", "SIP requests from a SIP port ignored")):
        if s[key]:
            details.append(f"{s[key]} {label}")
    r = result.rules
    for key, label in (("whitelisted_skipped", "responses to whitelisted addresses"),
                       ("retransmissions", "retransmissions not counted"),
                       ("via_received_mismatch", "Via received= mismatches"),
                       ("challenges_evicted", "challenges evicted at the cap"),
                       ("sources_evicted", "sources evicted at the cap")):
        if r.get(key):
            details.append(f"{r[key]} {label}")
    if details:
        lines.append("         " + ", ".join(details))
    lines.append(f"settings: maxretry {settings.maxretry}, findtime {settings.findtime} s, "
                 f"bantime {settings.bantime} s, sip ports "
                 f"{' '.join(map(str, settings.sip_ports))}")
    return "\n".join(lines)
