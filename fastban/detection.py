"""The one detection path: from captured or recorded segments to ban verdicts.

The live guard (fastban.guard, segments the kernel copied) and `fastban replay` (segments of a
recording) run this same code from the segment on: messages out of UDP datagrams, IP first
fragments and TCP streams (fastban.streams), the parser, the failure rules (fastban.rules),
the time of each message (the packet's own), and the ban's duration with repeat-offender
escalation (settings.bantime_for over the ban history). Pure logic: nothing is read or
written but the objects passed in.

    detector = Detector(settings)
    for time, segment in segments:           # in capture order
        for verdict in detector.segment(time, segment):
            ...                              # verdict.decision, verdict.bantime
    detector.expire(later)                   # unanswered challenges

While a source is banned its messages are skipped: the kernel drops its requests, so the
server answers none (a recording made without fastban still holds them).

HEP segments (protocol "hep", fastban.hep_feed: the server's own copy of each message, TLS
and WebSocket ones included) take the same path. Their server side is told by
``hep_server_ports`` (and ``hep_server_addresses`` when set) instead of ``sip_ports``. With
HEP on (``hep_listen``, or ``deduplicate()``), a message both the wire and HEP carry counts once
(fastban.duplicates).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastban.decisions import BanDecision
from fastban.duplicates import Duplicates
from fastban.rules import FailureRules
from fastban.streams import MessageReader

# Sources whose ban count (for escalation) is remembered; past it the least recently banned
# is forgotten and would start again at the base bantime.
BAN_HISTORY_CAP = 1_000_000


def _within(address, networks) -> bool:
    return any(address in network for network in networks)


@dataclass(frozen=True)
class Verdict:
    decision: BanDecision
    bantime: float           # seconds, from the settings and the source's earlier bans
    previous_bans: int


class BanHistory:
    """How many times each network was banned, most recently banned last, capped."""

    def __init__(self, counts: dict | None = None, cap: int | None = None):
        self.counts = {} if counts is None else counts
        self.cap = BAN_HISTORY_CAP if cap is None else cap
        while len(self.counts) > self.cap:
            del self.counts[next(iter(self.counts))]

    def record(self, network) -> int:
        """Counts a ban of network; returns how many came before it."""
        counts = self.counts
        previous = counts.pop(network, 0)
        counts[network] = previous + 1
        if len(counts) > self.cap:
            del counts[next(iter(counts))]
        return previous

    def count(self, network) -> int:
        return self.counts.get(network, 0)


class Detector:
    def __init__(self, settings, history: BanHistory | None = None, *,
                 track_copies: bool = False):
        """``track_copies``: remember every message from the start, so that copies are
        recognised from the moment deduplicate() is called (replay: at the first HEP packet)."""
        self.settings = settings
        self.rules = FailureRules(settings.rule_settings())
        self.reader = MessageReader()
        self.history = history or BanHistory()
        self._ports(settings)
        self.skip_copies = bool(settings.hep_listen)
        self.duplicates = Duplicates() if self.skip_copies or track_copies else None
        self._banned: dict[int, float] = {}       # source key -> banned until
        # Challenges in messages the kernel did not read (a later message of a TCP segment):
        # (peer, Call-ID, time), for the guard to mark in the kernel.
        self.unread_challenges: list = []
        self.stats = {"responses": 0, "requests": 0, "skipped_while_banned": 0,
                      "wrong_direction": 0, "duplicates": 0, "hep_messages": 0}

    def _ports(self, settings) -> None:
        self._sip_ports = frozenset(settings.sip_ports)
        self._hep_ports = frozenset(settings.effective_hep_server_ports)
        self._hep_addresses = settings.hep_server_addresses

    def deduplicate(self) -> None:
        """From now on a message seen twice (wire and HEP) counts once."""
        self.skip_copies = True
        if self.duplicates is None:
            self.duplicates = Duplicates()

    def reconfigure(self, settings) -> bool:
        """New settings (SIGHUP); returns False when the rules had to start again (their
        structure changed: ipv6_ban_prefix or a cap), True when the counts were kept."""
        self.settings = settings
        self._ports(settings)
        try:
            self.rules.reconfigure(settings.rule_settings())
        except ValueError:
            self.rules = FailureRules(settings.rule_settings())
            return False
        return True

    def segment(self, now: float, segment) -> list[Verdict]:
        """One TCP/UDP segment at time ``now`` (seconds, the packet's time)."""
        verdicts = self._expire_until(now)
        hep = segment.protocol == "hep"
        ports = self._hep_ports if hep else self._sip_ports
        stats, duplicates = self.stats, self.duplicates
        for message, first in self.reader.read(segment):
            if message.is_response:
                server, port, peer = segment.src, segment.sport, segment.dst
            else:
                server, port, peer = segment.dst, segment.dport, segment.src
            if port not in ports or (hep and self._hep_addresses and (
                    not _within(server, self._hep_addresses) or
                    _within(peer, self._hep_addresses))):
                stats["wrong_direction"] += 1
                continue
            stats["responses" if message.is_response else "requests"] += 1
            if hep:
                stats["hep_messages"] += 1
            if duplicates is not None and duplicates.seen(now, peer, message) and \
                    self.skip_copies:
                stats["duplicates"] += 1
                continue
            if self._banned and self._skip_banned(peer, now):
                continue
            if not first and message.is_response and message.status in (401, 407):
                self.unread_challenges.append((peer, message.call_id, now))
            decision = self.rules.observe(now, peer, message)
            if decision is not None:
                verdicts.append(self._verdict(decision))
        return verdicts

    def expire(self, now: float) -> list[Verdict]:
        """Challenges left unanswered until ``now`` become failures."""
        return [self._verdict(d) for d in self.rules.expire(now)]

    def _expire_until(self, now: float) -> list[Verdict]:
        """Expiries due by now, each at its own time (so a replay is exact)."""
        verdicts = []
        due = self.rules.next_expiry()
        while due is not None and due <= now:
            verdicts += self.expire(now if due == float("-inf") else due)
            due = self.rules.next_expiry()
        return verdicts

    def _skip_banned(self, peer, now: float) -> bool:
        key = self.rules.source_key(peer)
        until = self._banned.get(key)
        if until is None:
            return False
        if now < until:
            self.stats["skipped_while_banned"] += 1
            return True
        del self._banned[key]
        return False

    def _verdict(self, decision: BanDecision) -> Verdict:
        previous = self.history.record(decision.network)
        bantime = self.settings.bantime_for(previous)
        key = self.rules.source_key(decision.address)
        self._banned[key] = decision.decided_at + bantime
        return Verdict(decision, bantime, previous)

    def web_login_failed(self, now: float, peer) -> Verdict | None:
        """A wrong password on the web page, counted like a SIP failure."""
        decision = self.rules.web_login_failed(now, peer)
        return None if decision is None else self._verdict(decision)

    def lifted(self, network) -> None:
        """A ban ended early (unban, or refused by a full table): count the source afresh."""
        self.rules.forget(network.network_address)
        self._banned.pop(self.rules.source_key(network.network_address), None)

    @property
    def banned_sources(self) -> int:
        """Sources whose messages are skipped while their ban runs."""
        return len(self._banned)

    def ban_ended(self, network, now: float) -> None:
        """A ban ran its time: its source is no longer skipped nor remembered."""
        key = self.rules.source_key(network.network_address)
        if self._banned.get(key, now) <= now:
            self._banned.pop(key, None)

    def banned_elsewhere(self, network, decided_at: float) -> int:
        """A ban the fleet's edges decided together: counted in the history (its bantime
        escalates like ours), the source's failures here start afresh; returns the bantime."""
        previous = self.history.record(network)
        bantime = self.settings.bantime_for(previous)
        self.rules.forget(network.network_address)
        self._banned[self.rules.source_key(network.network_address)] = decided_at + bantime
        return bantime

    def ban_by_hand(self, network) -> int:
        """Counts a hand ban in the history; returns the bans before it."""
        return self.history.record(network)
