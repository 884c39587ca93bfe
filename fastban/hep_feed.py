"""HEP packets to the segments of the detection path: who may send, the key, the framing.

Pure logic, used by the live listener (fastban.hep_input) and by `fastban replay` alike, so
that both take and refuse the same packets:

* the sender (the UDP datagram's source, the TCP connection's peer) must be in
  ``hep_senders``, else the packet is refused as ``sender``;
* the packet is decoded by fastban.hep (HEPv3; the key of ``hep_auth_key`` checked there);
  a refused one is counted by its reason (fastban.hep.REJECT_REASONS);
* a packet that names an unspecified address (0.0.0.0 or ::) as its source or destination
  is refused as ``no_address`` (FreeSWITCH's sofia-sip fills its IPv6 chunks from the wrong
  field, so every one of its IPv6 packets names ``::``: nobody to ban);
* a decoded SIP message becomes a segment like the ones the wire gives (addresses, ports,
  payload), with protocol ``"hep"``: one whole message, whatever the transport was
  (UDP, TCP, TLS, WebSocket);
* over TCP, HEP packets follow each other in the byte stream, each framed by its own
  length; a stream that does not begin with a HEP packet where one should begin cannot be
  framed again and is refused (``framing``), the connection closed.

Nothing is trusted from a packet but what the key and the sender vouch for: the sender is
the SIP server, the only party that knows who it answered.
"""

from __future__ import annotations

import ipaddress

from fastban import hep
from fastban.packets import Segment, address

HEP_MAGIC = b"HEP3"
HEADER_SIZE = 6
# Reasons of refusal besides the decoder's.
REFUSALS = ("sender", "framing", "connections", *hep.REJECT_REASONS)
# Senders whose verdict is remembered (one HEP sender is the rule, a handful the most).
SENDER_CACHE = 1024


class HepFeed:
    def __init__(self, settings):
        self.stats = {"received": 0, "messages": 0, "rejected": 0}
        self.rejected = dict.fromkeys(REFUSALS, 0)
        self.reconfigure(settings)

    def reconfigure(self, settings) -> None:
        self.senders = settings.hep_senders
        self.auth_key = settings.hep_auth_key.encode() or None
        self._allowed: dict[str, bool] = {}

    def allowed(self, sender: str) -> bool:
        """Whether ``sender`` (an address as text) may send HEP."""
        verdict = self._allowed.get(sender)
        if verdict is None:
            try:
                ip = ipaddress.ip_address(sender.partition("%")[0])
            except ValueError:
                verdict = False
            else:
                if ip.version == 6 and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                verdict = any(ip in network for network in self.senders)
            if len(self._allowed) >= SENDER_CACHE:
                self._allowed.clear()
            self._allowed[sender] = verdict
        return verdict

    def refuse(self, reason: str, count: int = 1) -> None:
        self.rejected[reason] += count
        self.stats["rejected"] += count
        self.stats["received"] += count

    def datagram(self, data, sender: str) -> Segment | None:
        """One HEP packet (a UDP datagram) from ``sender``: its segment, or None (refused)."""
        if not self.allowed(sender):
            self.refuse("sender")
            return None
        return self._decode(data)

    def _decode(self, data) -> Segment | None:
        try:
            message = hep.decode(data, self.auth_key)
        except hep.HepError as error:
            self.refuse(error.reason)
            return None
        if not any(message.src) or not any(message.dst):
            self.refuse("no_address")
            return None
        self.stats["received"] += 1
        self.stats["messages"] += 1
        payload = message.payload
        return Segment(address(message.src), address(message.dst), message.sport,
                       message.dport, "hep", payload, len(payload))

    def stream(self, buffer: bytearray) -> tuple[list[Segment], bool]:
        """The HEP packets complete at the front of a TCP connection's ``buffer`` (taken out
        of it): their segments, and False when the stream cannot be framed (refused)."""
        segments, start, size = [], 0, len(buffer)
        framed = True
        while size - start >= HEADER_SIZE:
            if buffer[start:start + 4] != HEP_MAGIC:
                framed = False
                break
            length = buffer[start + 4] << 8 | buffer[start + 5]
            if length < HEADER_SIZE:
                framed = False
                break
            if size - start < length:
                break
            segment = self._decode(bytes(buffer[start:start + length]))
            if segment is not None:
                segments.append(segment)
            start += length
        del buffer[:start]
        if not framed:
            self.refuse("framing")
            buffer.clear()
        return segments, framed

    def figures(self) -> dict:
        """What `fastban stats` shows under ``hep``."""
        return {**self.stats, **{f"rejected_{reason}": count
                                 for reason, count in self.rejected.items()}}
