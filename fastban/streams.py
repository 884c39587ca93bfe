"""SIP messages out of TCP/UDP segments: datagrams, IP first fragments and TCP byte streams.

* UDP: a datagram is one message. Keep-alives (only CR, LF or NUL bytes) are skipped. A
  datagram that is cut (an IP first fragment, or a copy shorter than the datagram) is parsed
  as a cut-off message (``sip.parse(..., cut=True)``): its complete header lines are used, and
  one cut before its Call-ID or CSeq is counted ``truncated_unusable`` and never reaches the
  rules.
* TCP: each flow (addresses and ports) is a byte stream put back in sequence order;
  messages are split by their Content-Length, CRLF keep-alives between them are skipped.
  A segment may hold several messages or part of one. Retransmitted bytes are dropped. After a
  gap (bytes never seen: the live capture copies only the segments the rules may need, see
  bpf/tc_capture.c), the stream starts again at the next segment that begins with a start
  line; a segment whose copy is cut ends its message as a cut-off one.
* Bounded: at most ``max_flows`` flows (the least recently used is forgotten) and
  ``sip.MAX_SIZE`` bytes waiting per flow; a message that outgrows that is dropped as
  malformed.

Each message comes with ``first``: it began at the start of its segment, so the kernel's
capture program read its start line and headers (the capture reads only the first message
of a segment).
"""

from __future__ import annotations

import re
from collections import OrderedDict

from fastban import sip

STAT_KEYS = (
    "messages",             # SIP messages read
    "malformed",            # payloads that are not SIP (or TCP data that cannot be split)
    "keepalives",           # UDP keep-alives and CRLFs between TCP messages
    "fragments",            # IP first fragments read as cut-off messages
    "truncated",            # cut-off messages read (first fragments and cut copies)
    "truncated_unusable",   # ... cut before their Call-ID or CSeq: not given to the rules
    "tcp_resyncs",          # TCP gaps after which the stream started again
    "tcp_unaligned",        # TCP segments skipped because they began inside a message
    "tcp_retransmissions",  # TCP segments holding only bytes seen before
    "tcp_flows_evicted",    # flows forgotten at max_flows
)

_START_LINE = re.compile(rb"SIP/2\.0 [1-6]\d\d[ \r\n]|[A-Za-z0-9.!%*_+`'~-]+ [^ \r\n]+ SIP/2\.0\r?\n")
_SEQ_MOD = 1 << 32


class _Flow:
    __slots__ = ("next_seq", "buffer", "synced")

    def __init__(self, next_seq: int):
        self.next_seq = next_seq
        self.buffer = b""
        self.synced = False


def _usable(message) -> bool:
    return not message.truncated or (bool(message.call_id) and message.cseq >= 0)


class MessageReader:
    def __init__(self, max_flows: int = 65536):
        self.max_flows = max_flows
        self._flows: OrderedDict[tuple, _Flow] = OrderedDict()
        self.stats = dict.fromkeys(STAT_KEYS, 0)

    def read(self, segment) -> list[tuple[object, bool]]:
        """The messages of one segment (Segment or CapturedPacket), each with ``first``. A
        HEP segment (protocol "hep") holds one whole message, like a datagram."""
        if segment.protocol != "tcp":
            return self._datagram(segment)
        return self._tcp(segment)

    # -- UDP ---------------------------------------------------------------------------------

    def _datagram(self, segment) -> list:
        payload = segment.payload
        if not payload.strip(b"\r\n\0"):
            self.stats["keepalives"] += 1
            return []
        cut = segment.fragment or len(payload) < segment.payload_len
        message = sip.parse(payload, cut=cut) if cut else sip.parse(payload)
        return self._take(message, cut, segment.fragment)

    def _take(self, message, cut: bool, fragment: bool = False) -> list:
        stats = self.stats
        if message is None:
            stats["malformed"] += 1
            return []
        if fragment:
            stats["fragments"] += 1
        if message.truncated:
            stats["truncated"] += 1
            if not _usable(message):
                stats["truncated_unusable"] += 1
                return []
        stats["messages"] += 1
        return [(message, True)]

    # -- TCP ---------------------------------------------------------------------------------

    def _tcp(self, segment) -> list:
        key = (segment.src, segment.sport, segment.dst, segment.dport)
        flows, stats = self._flows, self.stats
        payload, seq, wire = segment.payload, segment.tcp_seq, segment.payload_len
        flow = flows.get(key)
        if flow is not None:
            flows.move_to_end(key)
            behind = (flow.next_seq - seq) % _SEQ_MOD
            if 0 < behind < _SEQ_MOD // 2:          # starts before what was already read
                if behind >= wire:
                    stats["tcp_retransmissions"] += 1
                    self._close_if_done(key, segment)
                    return []
                payload, seq, wire = payload[behind:], flow.next_seq, wire - behind
            elif seq != flow.next_seq:
                flow.buffer, flow.synced = b"", False
                stats["tcp_resyncs"] += 1
        else:
            if not payload:
                return []
            flow = flows[key] = _Flow(seq)
            if len(flows) > self.max_flows:
                flows.popitem(last=False)
                stats["tcp_flows_evicted"] += 1
        flow.next_seq = (seq + wire) % _SEQ_MOD
        fresh = not flow.buffer
        messages = []
        if payload:
            if not flow.synced:
                if _START_LINE.match(payload.lstrip(b"\r\n")) is None:
                    stats["tcp_unaligned"] += 1
                    self._close_if_done(key, segment)
                    return []
                flow.synced = True
            flow.buffer += payload
            messages = self._split(flow, fresh)
            if len(payload) < wire and flow.buffer:  # the copy stopped inside a message
                message = sip.parse(flow.buffer[:sip.MAX_SIZE], cut=True)
                messages += [(m, fresh and not messages) for m, _ in self._take(message, True)]
                flow.buffer, flow.synced = b"", False
        self._close_if_done(key, segment)
        return messages

    def _split(self, flow: _Flow, fresh: bool) -> list:
        messages = []
        while True:
            buffer = flow.buffer
            stripped = buffer.lstrip(b"\r\n")
            if len(stripped) != len(buffer):
                self.stats["keepalives"] += 1
                flow.buffer = buffer = stripped
                fresh = False                       # the kernel reads no start line there
            if not buffer:
                return messages
            crlf, lf = buffer.find(b"\r\n\r\n"), buffer.find(b"\n\n")
            ends = [i + n for i, n in ((crlf, 4), (lf, 2)) if i >= 0]
            if not ends:
                if len(buffer) > sip.MAX_SIZE:
                    self._drop(flow)
                return messages
            header_end = min(ends)
            message = sip.parse(buffer[:header_end])
            if message is None:
                self._drop(flow)
                return messages
            size = header_end + max(message.content_length, 0)
            if size > sip.MAX_SIZE:
                self._drop(flow)
                return messages
            if len(buffer) < size:
                return messages                     # the body is still coming
            flow.buffer = buffer[size:]
            self.stats["messages"] += 1
            messages.append((message, fresh and not messages))

    def _drop(self, flow: _Flow) -> None:
        self.stats["malformed"] += 1
        flow.buffer, flow.synced = b"", False

    def _close_if_done(self, key, segment) -> None:
        if segment.tcp_fin or segment.tcp_rst:
            self._flows.pop(key, None)

    @property
    def flows(self) -> int:
        return len(self._flows)
