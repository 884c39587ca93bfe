"""The threshold ban in the kernel, user space's half: which sources are armed, and what
becomes of the bans the capture makes (bpf/armed.h does the kernel's half).

A source is armed when a proven failure read from a UDP response leaves it one short of
``maxretry`` (IPv4, or IPv6 with ``ipv6_ban_prefix`` 128: the capture writes exact bans). Its
arm carries the ban duration the rules would give it (bantime, escalated over its earlier
bans), the hash of that failure's status and top Via branch (its retransmission must not ban,
fastban.headerscan.failure_hash) and a deadline: the
time its oldest counted failure leaves ``findtime``, after which one more failure no longer
bans. It is disarmed when a ban of it is written (its history starts again) and when it is
unbanned or forgotten. Trust does not disarm: it drops only unproven failures, and only proven
ones arm. Whitelisted sources are never counted, so never armed.

A ban the capture made is settled when its message is read: the rules, counting that failure,
decide the ban themselves (the guard writes its record, which sets the expiry again) or they
do not (the failure was not proven, e.g. a challenge with stale=true): then the kernel's ban
is lifted, unless a ban the guard holds covers the source, and the source disarmed. So is one
whose copy was lost (the capture's ring full): ``sweep()`` on each tick finds it by its banned_ns.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections import OrderedDict
from typing import Callable

from fastban import headerscan
from fastban.abi import ABI
from fastban.decisions import PROVEN_KINDS

FAILURE_STATUSES = (401, 403, 407)
# A ban the capture made whose copy was not read this long after (lost from a full ring)
# is lifted by sweep(): the rules never counted that failure.
UNSETTLED_AFTER_NS = 2 * 10**9
SWEPT_PER_CALL = 1000


class Arming:
    def __init__(self, dataplane, detector, banned: Callable[[object], bool]):
        self.dataplane, self.detector, self.banned = dataplane, detector, banned
        self.enabled = False
        self._rules = None
        self._armed: OrderedDict = OrderedDict()   # address -> deadline (wall), oldest arm first
        self._swept_to = 0                          # where the next sweep() starts in _armed
        self.counts = {"armed": 0, "disarmed": 0, "kernel_bans_confirmed": 0,
                       "kernel_bans_lifted": 0}

    def configure(self, settings) -> None:
        rules = self.detector.rules
        if rules is not self._rules or not settings.kernel_ban:
            self.disarm_all()                      # new rules count from zero
        self._rules = rules
        if settings.kernel_ban != self.enabled:
            if settings.kernel_ban:                 # arms pinned by an earlier guard: its counts
                for peer in self.dataplane.armed_sources():     # are gone
                    self.dataplane.disarm(peer)
            self.dataplane.set_kernel_ban(settings.kernel_ban)
        self.enabled = settings.kernel_ban

    def observed(self, packet, at: float, offset: float, verdicts: list) -> None:
        """After the detection path read a captured packet (at: its wall time; offset: wall
        minus kernel clock, in seconds) and decided verdicts from it."""
        if packet.kind != "response" or packet.status not in FAILURE_STATUSES or \
                packet.protocol != "udp" or packet.fragment:
            return
        peer = packet.dst
        if packet.kernel_ban:
            self._settle(peer, verdicts)
            return
        rules = self.detector.rules
        maxretry = rules.settings.maxretry
        if maxretry < 2 or (peer.version == 6 and rules.settings.ipv6_ban_prefix < 128):
            return
        history = rules.history(rules.source_key(peer))
        if len(history) == maxretry - 1 and history[-1][0] == at and \
                history[-1][1] in PROVEN_KINDS:
            self._arm(peer, at, history[0][0] + rules.settings.findtime, offset,
                      packet.payload)
        elif peer in self._armed and len(history) < maxretry - 1:
            self.disarm(peer)

    def _arm(self, peer, now: float, deadline: float, offset: float, payload: bytes) -> None:
        detector = self.detector
        bantime = detector.settings.bantime_for(detector.history.count(ipaddress.ip_network(peer)))
        failure = headerscan.failure_hash(payload)
        if failure is None:
            return                                  # the capture could not read its Call-ID
        self.dataplane.arm(peer, max(0, int((deadline - offset) * 1e9)), int(bantime * 1e9),
                           failure)
        armed = self._armed
        armed.pop(peer, None)
        armed[peer] = deadline
        self.counts["armed"] += 1
        while armed and (len(armed) > ABI["FB_ARMED_ENTRIES"] or
                         next(iter(armed.values())) <= now):
            self.disarm(next(iter(armed)))         # lapsed (the kernel ignores it already)

    def _settle(self, peer, verdicts: list) -> None:
        if any(peer in verdict.decision.network for verdict in verdicts):
            self.counts["kernel_bans_confirmed"] += 1
            return                                  # the guard's record follows
        self.counts["kernel_bans_lifted"] += 1
        if not self.banned(peer):
            self.dataplane.unban(peer)
        self.disarm(peer)

    def sweep(self, now_ns: int) -> None:
        """Lifts kernel bans whose copy never reached the rules. Looks at SWEPT_PER_CALL arms
        per call, going on where the last call stopped, so every arm is looked at in turn."""
        armed = self._armed
        if self._swept_to >= len(armed):
            self._swept_to = 0
        batch = list(itertools.islice(armed, self._swept_to, self._swept_to + SWEPT_PER_CALL))
        self._swept_to += len(batch)
        for peer in batch:
            arm = self.dataplane.arm_of(peer)
            if arm is not None and arm.banned_ns and now_ns - arm.banned_ns > UNSETTLED_AFTER_NS:
                self._settle(peer, [])

    def disarm(self, target) -> None:
        """A ban of target was written, or it was unbanned: its failures start again."""
        if isinstance(target, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            if target.prefixlen != target.max_prefixlen:
                for peer in [p for p in self._armed if p in target]:
                    self.disarm(peer)
                return
            target = target.network_address
        if self._armed.pop(target, None) is not None:
            self.dataplane.disarm(target)
            self.counts["disarmed"] += 1

    def disarm_all(self) -> None:
        for peer in list(self._armed):
            self.disarm(peer)

    @property
    def armed(self) -> int:
        return len(self._armed)

