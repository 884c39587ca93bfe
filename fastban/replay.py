"""``fastban replay CAPTURE``: the detection path over a pcap/pcapng recording.

Uses the same settings and the same code as the live guard from the segment on
(fastban.detection): what it would have banned, on your own traffic. Packet by packet:

* The file is read by scapy's raw readers (``RawPcapReader`` / ``RawPcapNgReader``, which also
  open gzip-compressed captures): pcap (µs or ns) and pcapng. The frames are walked by
  fastban.packets, which reads what the kernel's capture program reads: Ethernet (802.1Q/QinQ),
  Linux cooked SLL/SLL2, raw IP, BSD loopback; IPv4, IPv6 and its extension headers; UDP, TCP.
* The segments to or from a SIP port go to the detection path: UDP datagrams, IP first
  fragments (read as cut-off messages, as live; later fragments are skipped and counted), TCP
  streams put back in order and split into messages. The server's responses and the requests
  with credentials (a recording of both directions) are read; a recording of the server's
  responses alone gives what the guard gave before credentials were read: no proven failure,
  no trusted source.
* Time is the packet timestamps. Unanswered challenges are expired exactly when their grace
  ends; at the end of the capture the still-open challenges are expired as if the capture had
  gone on for the grace period with no answer (``final_expire=False`` turns this off).
* A ban is simulated: messages of a banned source are skipped while the ban lasts (the live
  guard would have dropped its requests), with escalation when ``bantime_increment`` is set.

* HEPv3 packets (UDP or TCP, to the port of ``hep_listen``, else 9060) are taken as the live
  HEP input takes them (fastban.hep_feed: the same senders, key and decoder) and go to the
  same detection path; a capture of a Homer feed is a dry run of the guard on a TLS server.
  A message both the wire and HEP carry counts once, as live. TCP
  streams of HEP are read in capture order.

The live capture copies only what the rules can use (see fastban.rules, "What the kernel must
show"); the rest of a recording is read here and changes no decision.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from fastban import packets
from fastban.clock import iso
from fastban.config import Settings, parse_listen
from fastban.detection import Detector, Verdict
from fastban.hep_feed import HEP_MAGIC, HepFeed

_MAXSNAP = 262144
DEFAULT_HEP_PORT = 9060


class ReplayError(Exception):
    """The capture cannot be read (the message is one line for the user)."""


@dataclass
class ReplayBan:
    address: str
    network: str
    at: float                 # capture time of the decision (Unix time)
    failures: int
    proven: int
    failure_class: str        # proven, unproven or mixed
    first_failure_at: float
    bantime: int
    reason: str

    @property
    def when(self) -> str:
        return iso(self.at, milliseconds=True)

    def as_dict(self) -> dict:
        return {
            "address": self.address, "network": self.network, "at": self.when,
            "timestamp": self.at, "failures": self.failures, "proven": self.proven,
            "failure_class": self.failure_class,
            "first_failure_at": iso(self.first_failure_at, milliseconds=True), "bantime": self.bantime,
            "reason": self.reason,
        }


@dataclass
class ReplayResult:
    capture: str
    packets: int = 0              # packets read from the file
    segments: int = 0             # TCP/UDP segments with a payload to or from a SIP port
    sip_responses: int = 0
    sip_requests: int = 0
    later_fragments: int = 0      # IP fragments past the first (no header in them)
    undecodable: int = 0          # not IP/UDP/TCP, or an unsupported link type
    skipped_banned: int = 0       # messages of a source while it was banned
    hep: dict = field(default_factory=dict)      # fastban.hep_feed figures, when HEP was read
    duplicates: int = 0           # messages both the wire and HEP carried, counted once
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    bans: list = field(default_factory=list)
    rules: dict = field(default_factory=dict)
    reader: dict = field(default_factory=dict)   # fastban.streams statistics
    linktypes: set = field(default_factory=set)
    settings: dict = field(default_factory=dict)

    @property
    def failures(self) -> int:
        return self.rules.get("failures", 0)

    @property
    def malformed(self) -> int:
        return self.reader.get("malformed", 0)

    def summary(self) -> dict:
        return {
            "capture": self.capture, "packets": self.packets, "segments": self.segments,
            "sip_responses": self.sip_responses, "sip_requests": self.sip_requests,
            "malformed_skipped": self.malformed,
            "first_fragments": self.reader.get("fragments", 0),
            "later_fragments_skipped": self.later_fragments,
            "truncated": self.reader.get("truncated", 0),
            "truncated_unusable": self.reader.get("truncated_unusable", 0),
            "undecodable": self.undecodable,
            "skipped_while_banned": self.skipped_banned, "failures": self.failures,
            "hep_packets": self.hep.get("received", 0),
            "hep_messages": self.hep.get("messages", 0),
            "hep_rejected": self.hep.get("rejected", 0),
            "duplicates_skipped": self.duplicates,
            "failures_proven": self.rules.get("failures_proven", 0),
            "logins": self.rules.get("logins", 0),
            "bans": len(self.bans),
            "first_packet": None if self.first_timestamp is None else
            iso(self.first_timestamp, milliseconds=True),
            "last_packet": None if self.last_timestamp is None else
            iso(self.last_timestamp, milliseconds=True),
        }

    def as_dict(self) -> dict:
        return {"bans": [b.as_dict() for b in self.bans], "summary": self.summary(),
                "rules": dict(self.rules), "settings": dict(self.settings)}


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
    """Runs the detection path over the capture at ``path``.

    ``on_ban(ReplayBan)`` is called for each ban as it is decided."""
    settings = settings or Settings()
    # Every message is remembered from the start, so that a wire message whose HEP copy comes
    # after the first HEP packet counts once, as live.
    detector = Detector(settings, track_copies=True)
    sip_ports = frozenset(settings.sip_ports)
    result = ReplayResult(capture=str(path), settings={
        "maxretry": settings.maxretry, "findtime": settings.findtime,
        "bantime": settings.bantime, "challenge_grace": settings.challenge_grace,
        "trust_time": settings.trust_time, "sip_ports": list(settings.sip_ports),
        "whitelist": [str(n) for n in settings.whitelist]})

    def record(verdicts: list[Verdict]) -> None:
        for verdict in verdicts:
            d = verdict.decision
            ban = ReplayBan(
                address=str(d.address), network=str(d.network), at=d.decided_at,
                failures=d.failures, proven=d.proven, failure_class=d.failure_class,
                first_failure_at=d.first_failure_at, bantime=verdict.bantime, reason=d.reason)
            result.bans.append(ban)
            if on_ban is not None:
                on_ban(ban)

    hep_port = parse_listen(settings.hep_listen)[1] if settings.hep_listen else DEFAULT_HEP_PORT
    feed, hep_streams = HepFeed(settings), {}

    def hep(segment) -> list:
        """The segments of the HEP packets a captured segment carries."""
        detector.deduplicate()
        if segment.protocol == "udp":
            found = feed.datagram(segment.payload, str(segment.src))
            return [] if found is None else [found]
        flow = (segment.src, segment.sport, segment.dst, segment.dport)
        if flow not in hep_streams:
            if not feed.allowed(str(segment.src)):
                feed.refuse("sender")
                hep_streams[flow] = None
                return []
            hep_streams[flow] = bytearray()
        buffer = hep_streams[flow]
        if buffer is None:
            return []
        buffer += segment.payload
        found, framed = feed.stream(buffer)
        if not framed:
            hep_streams[flow] = None
        return found

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
                segment = packets.decode(linktype, frame)
            except packets.LaterFragment:
                result.later_fragments += 1
                continue
            if segment is None:
                result.undecodable += 1
                continue
            if segment.dport == hep_port and segment.payload and (
                    segment.payload[:4] == HEP_MAGIC or segment.protocol == "tcp" and
                    (segment.src, segment.sport, segment.dst, segment.dport) in hep_streams):
                for message in hep(segment):
                    record(detector.segment(now, message))
                continue
            if not segment.payload or (segment.sport not in sip_ports and
                                       segment.dport not in sip_ports):
                continue
            result.segments += 1
            record(detector.segment(now, segment))
    finally:
        reader.close()
    if now is not None:
        result.last_timestamp = now
        record(detector._expire_until(now + settings.challenge_grace if final_expire else now))
    result.rules = dict(detector.rules.stats)
    result.reader = dict(detector.reader.stats)
    result.sip_responses = detector.stats["responses"]
    result.sip_requests = detector.stats["requests"]
    result.skipped_banned = detector.stats["skipped_while_banned"]
    result.duplicates = detector.stats["duplicates"]
    if feed.stats["received"]:
        result.hep = feed.figures()
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
        f"{s['sip_requests']} requests, {s['malformed_skipped']} malformed skipped, "
        f"{s['failures']} failures ({s['failures_proven']} proven), {s['logins']} logins, "
        f"{s['bans']} ban{'s' if s['bans'] != 1 else ''}")
    details = []
    for key, label in (("first_fragments", "IP first fragments read"),
                       ("later_fragments_skipped", "later IP fragments skipped"),
                       ("truncated", "cut-off messages read"),
                       ("truncated_unusable", "cut-off messages without Call-ID or CSeq"),
                       ("undecodable", "packets not IP/UDP/TCP"),
                       ("skipped_while_banned", "messages of banned sources skipped"),
                       ("hep_messages", "SIP messages from HEP"),
                       ("hep_rejected", "HEP packets refused"),
                       ("duplicates_skipped", "messages both on the wire and in HEP, "
                                              "counted once")):
        if s[key]:
            details.append(f"{s[key]} {label}")
    r = result.rules
    for key, label in (("whitelisted_skipped", "messages of whitelisted addresses"),
                       ("unproven_of_trusted", "unproven failures of trusted sources"),
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
