"""The controller: turns captured responses into bans in the kernel, and keeps them.

It owns the decisions (failure rules), the ban records (reason, failures, times), expiry,
repeat-offender escalation and persistence. The kernel side is a `fastban.dataplane.DataPlane`;
the guard never touches BPF itself. It does no waiting and starts no threads: `fastban.service`
feeds it captured responses and calls `tick` regularly.

Times the operator sees are wall-clock seconds; the kernel map gets the same expiry on the
monotonic clock, so a ban lapses on time even when no guard runs.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import Counter, deque
from typing import Callable

from fastban import state
from fastban.arming import Arming
from fastban.banlist import FOUND_IN_MAP, ban_rows, kernel_bans, rows_later
from fastban.clock import expiry_to_monotonic_ns, expiry_to_wall, iso
from fastban.dataplane import BanTableFull
from fastban.decisions import (ORIGIN_FLEET_COUNT, ORIGIN_HAND, ORIGIN_KERNEL_MAP, ORIGIN_SIP,
                               ORIGIN_WEB_LOGIN, describe_failures)
from fastban.detection import BanHistory, Detector, Verdict
from fastban.guard_stats import guard_stats
from fastban.handbans import GuardError, as_network, hand_ban, hand_reason
from fastban.histogram import Histogram
from fastban.kernel_trust import KernelTrust
from fastban.state import BanRecord

log = logging.getLogger("fastban")

# Saves after a change wait at least SAVE_INTERVAL, and at least SAVE_SHARE_DIVISOR times as
# long as the last save took, so that writing a large state never takes more than a tenth of
# the loop's time. A ban made in between is still in the pinned maps if the guard is killed.
SAVE_INTERVAL = 1.0
SAVE_SHARE_DIVISOR = 10
# A save appends the changes to the state's journal. The whole state is written again (and the
# journal emptied) once the journal holds more than JOURNAL_MIN changes and more than twice the
# most bans active since the last such write: replaying it on start then costs at most about
# twice reading that many bans, and a wave of expiries after a wave of bans is journaled rather
# than rewriting a large state in the middle of it.
JOURNAL_MIN = 1000
# Bans lifted per tick at most, so that a wave of expiries never stalls the capture; the
# kernel already ignores a lapsed ban, so lifting the rest a tick later changes no verdict.
EXPIRE_BATCH = 10_000
# A tick turns challenges unanswered this long before the last read of the capture's ring into
# failures: a packet is stamped before it is in the ring, and the kernel wakes its reader
# some time after.
EXPIRE_LAG = 1.0
# Captured responses lost (the guard fell behind, the capture's ring full) are logged at most this often.
LOSS_REPORT_INTERVAL = 10.0
# The page's chart: failures, bans and dropped packets sampled this often, for an hour.
SAMPLE_INTERVAL = 10.0
SAMPLES_KEPT = 360


class Guard:
    def __init__(self, settings, dataplane, *, wall: Callable[[], float] = time.time,
                 monotonic_ns: Callable[[], int] = time.monotonic_ns):
        self.dataplane = dataplane
        self.wall, self.monotonic_ns = wall, monotonic_ns
        self.counts = {"packets": 0, "bans_total": 0, "unbans_total": 0, "bans_refused": 0,
                       "challenges_marked": 0}
        self.copied_by_reason: Counter = Counter()   # why the kernel copied what it did
        self.bans_by_origin: Counter = Counter()
        self.ban_latency = Histogram()        # seconds from the response on the wire to the map
        self.samples: deque = deque(maxlen=SAMPLES_KEPT)   # (wall time, failures, bans, dropped)
        # Told of each ban and unban made here (not of those adopted): the fleet's publisher.
        self.on_change: Callable[[str, object], None] | None = None
        self._sampled_at = 0.0
        self.settings = settings
        self.state, warning = state.load(settings.state_file, now=wall())
        if warning:
            log.warning(warning)
        # The journal does not record evictions from the ban history: BanHistory caps it here.
        self.detector = Detector(settings, BanHistory(self.state.ban_counts))
        self.kernel_trust = KernelTrust(dataplane, wall, monotonic_ns)
        self._restore_trust()
        self._dirty, self._saved_at, self._save_gap = False, 0.0, SAVE_INTERVAL
        self._changes: list = []          # journal entries since the last save
        self._peak_bans = len(self.state.bans)   # most bans active since the whole state was written
        self._rewrite = bool(warning)     # a file was set aside or cut: write the whole state
        self._lost_seen, self._loss_checked_at = None, 0.0
        self.arming = Arming(dataplane, self.detector, self.banned)
        self._apply_settings()
        self._reconcile()

    # -- settings ---------------------------------------------------------------------------

    @property
    def rules(self):
        return self.detector.rules

    def reload(self, settings) -> None:
        """Takes new settings (SIGHUP). Failures counted so far are kept unless the IPv6 ban
        prefix or a cap changed."""
        self.settings = settings
        counted = self.rules.counted
        kept = self.detector.reconfigure(settings)
        self.rules.counted = counted            # new rules still count for the fleet
        if not kept:
            self._restore_trust()
        self._apply_settings()
        log.info("settings reloaded%s", "" if kept else " (failure counts restarted)")

    def _restore_trust(self) -> None:
        now = self.wall()
        for network, until in self.state.trusted.items():
            self.rules.restore_trust(network, until, now)
        self.kernel_trust.sync(self.rules.trusted(now), rewrite=True)

    def _save_trust(self) -> None:
        """Trust the rules granted or lengthened goes into the state (and the journal)."""
        reports = self.rules.trust_reports
        for network, until in reports:
            self.state.trusted[network] = until
            self._changes.append(state.trust_change(network, until))
        self.kernel_trust.add(reports)
        reports.clear()
        self._dirty = True

    def _apply_settings(self) -> None:
        s = self.settings
        wanted = set(s.whitelist)
        for network in set(self.dataplane.whitelisted()) - wanted:
            self.dataplane.unwhitelist(network)
        for network in wanted:
            self.dataplane.whitelist(network)
        self.dataplane.set_sip_ports(s.sip_ports)
        self.dataplane.set_scope(s.effective_ban_ports if s.ban_scope == "ports" else None)
        self.dataplane.set_challenge_grace(s.challenge_grace)
        self.dataplane.set_rate_limit(s.rate_limit, s.rate_limit_burst)
        self.dataplane.set_sip_capacity(s.sip_capacity)
        self.arming.configure(s)

    def _reconcile(self) -> None:
        """Makes the kernel map and the saved records agree after a restart or a crash."""
        now, mono = self.wall(), self.monotonic_ns()
        self.dataplane.purge_expired()
        for target in self.state.lifted:                 # unbanned while no guard ran
            if self.dataplane.unban(target):
                log.info("unban %s: lifted by hand while no guard ran", target)
        if self.state.lifted:
            self.state.lifted.clear()
            self._dirty = self._rewrite = True
        in_map = kernel_bans(self.dataplane)
        for record in self.state.bans.values():
            if record.target not in in_map:
                self._enforce(record, now, mono)
        for target, ban in in_map.items():
            if target in self.state.bans:
                continue
            expires_at = expiry_to_wall(ban.expires_ns, now, mono)
            self.state.bans[target] = BanRecord(target, FOUND_IN_MAP, 0, now, expires_at,
                                                ORIGIN_KERNEL_MAP)
            self._dirty = self._rewrite = True
        if self._dirty:
            self.save()

    # -- traffic ----------------------------------------------------------------------------

    def handle_packets(self, captured: list) -> list[BanRecord]:
        """Runs a batch of captured packets through the detection path, in the order the
        kernel saw them (the capture's one ring holds them in the order written, not always
        of their ktime: two CPUs race to it), and bans; returns new bans."""
        if not captured:
            return []
        self.counts["packets"] += len(captured)
        captured.sort(key=_ktime)
        # The kernel's clock to the wall clock, read once per batch.
        offset = self.wall() - self.monotonic_ns() / 1e9
        detector, new_bans, reasons = self.detector, [], self.copied_by_reason
        for packet in captured:
            reasons[packet.reason] += 1
            at = packet.ktime_ns / 1e9 + offset
            verdicts = detector.segment(at, packet)
            for verdict in verdicts:
                if (record := self.ban_decided(verdict)):
                    new_bans.append(record)
                    self.ban_latency.observe((self.monotonic_ns() - packet.ktime_ns) / 1e9)
            if self.arming.enabled:
                self.arming.observed(packet, at, offset, verdicts)
        if detector.unread_challenges:
            self._mark_unread_challenges(offset)
        if self.rules.trust_reports:
            self._save_trust()
        if self.rules.counted:
            self._share_failures()
        return new_bans

    def handle_hep(self, received: list) -> list[BanRecord]:
        """Runs HEP messages (fastban.hep_input: (arrival wall time, segment), in order)
        through the same detection path, and bans; returns new bans."""
        detector, new_bans = self.detector, []
        for now, segment in received:
            for verdict in detector.segment(now, segment):
                if (record := self.ban_decided(verdict)):
                    new_bans.append(record)
        if self.rules.trust_reports:
            self._save_trust()
        if self.rules.counted:
            self._share_failures()
        return new_bans

    def _share_failures(self) -> None:
        """The failures counted since the last call, to the fleet (fleet_counting)."""
        counted = self.rules.counted
        if self.on_change is not None:
            self.on_change("failures", list(counted))
        counted.clear()

    def fleet_counted(self, network, failures: list, edges: list) -> BanRecord | None:
        """The edges of the fleet together saw maxretry failures of ``network`` within findtime:
        ``failures`` as (time, kind), from ``edges``. Banned here (and so published) unless a
        ban covers it already."""
        if self.banned(network.network_address):
            return None
        now = self.wall()
        reason, _, proven = describe_failures(failures, now)
        failure_class = "proven" if proven == len(failures) else "unproven" if not proven \
            else "mixed"
        bantime = self.detector.banned_elsewhere(network, now)
        return self._ban(network, bantime, f"{reason} on edges {', '.join(edges)}",
                         len(failures), ORIGIN_FLEET_COUNT, failure_class)

    def _mark_unread_challenges(self, offset: float) -> None:
        """Challenges the kernel could not read (later messages of a TCP segment) are marked in
        its tables, so that the answers to them are copied."""
        for peer, call_id, at in self.detector.unread_challenges:
            self.dataplane.mark_challenge(peer, call_id, int((at - offset) * 1e9))
            self.counts["challenges_marked"] += 1
        self.detector.unread_challenges.clear()

    def tick(self, read_until: float | None = None) -> list[BanRecord]:
        """Unanswered challenges become failures, expired bans are lifted, state is saved.

        ``read_until``: the wall time before which every captured packet has been handled (when
        the last poll of the capture's ring began). Challenges are expired only up to then, so an
        answer still in the buffer, because the guard was held up between the poll and this
        tick, is read before its challenge is called unanswered."""
        now = self.wall()
        horizon = now if read_until is None else min(now, read_until)
        new_bans = [record for verdict in self.detector.expire(horizon - EXPIRE_LAG)
                    if (record := self.ban_decided(verdict))]
        if self.arming.enabled:
            self.arming.sweep(self.monotonic_ns())
        if self.rules.counted:
            self._share_failures()
        if len(self.state.trusted) > 2 * self.settings.max_sources:   # lapsed trust
            self.state.trusted = {network: until for network, until in self.state.trusted.items()
                                  if until > now}
        if self.kernel_trust.sync_due(now):
            self.kernel_trust.sync(self.rules.trusted(now))
        for record in self.state.bans.pop_expired(now, EXPIRE_BATCH):
            self.dataplane.unban(record.target)
            self.detector.ban_ended(record.target, now)
            self._changes.append(state.unban_change(record.target))
            self._dirty = True
            log.info("unban %s: ban of %s expired", record.target, _duration(record))
        if self._dirty and now - self._saved_at >= self._save_gap:
            self.save()
        if now - self._loss_checked_at >= LOSS_REPORT_INTERVAL:
            self._report_losses(now)
        if now - self._sampled_at >= SAMPLE_INTERVAL:
            self._sample(now)
        return new_bans

    def _sample(self, now: float) -> None:
        dropped = self.dataplane.counters().get("dropped", 0)
        self.samples.append((now, self.rules.stats["failures"], self.counts["bans_total"],
                             dropped))
        self._sampled_at = now

    def _report_losses(self, now: float) -> None:
        lost = self.dataplane.counters().get("capture_lost", 0)
        if self._lost_seen is not None and lost > self._lost_seen:
            log.warning("lost %d captured responses in the last %.0f s: the guard fell behind "
                        "and may count fewer failures than there were", lost - self._lost_seen,
                        now - self._loss_checked_at)
        self._lost_seen, self._loss_checked_at = lost, now

    # -- bans -------------------------------------------------------------------------------

    def ban_decided(self, verdict: Verdict, origin: str = ORIGIN_SIP) -> BanRecord | None:
        """Enforces a ban the detection path decided (its duration included)."""
        decision = verdict.decision
        record = self._ban(decision.network, verdict.bantime, decision.reason,
                           decision.failures, origin, decision.failure_class)
        if record is None:
            self.detector.lifted(decision.network)
        return record

    def ban(self, target, duration: float | None = None, reason: str | None = None) \
            -> BanRecord:
        """A ban by hand: duration in seconds, 0 = permanent, None = the configured bantime;
        the reason is the operator's label."""
        network, duration = hand_ban(self.settings, target, duration)
        record = self._ban(network, duration, hand_reason(reason), 0, ORIGIN_HAND, "")
        if record is None:
            raise GuardError(f"the kernel ban table is full; {network} is not banned")
        self.detector.ban_by_hand(network)
        self._changes[-1] = state.ban_change(record, self.detector.history.count(network))
        return record

    def web_login_failed(self, source) -> dict:
        """A wrong password on the web page from `source`: counted like a SIP failure, banned
        in the kernel at maxretry. Returns whether the source is banned now."""
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            raise GuardError(f"not an IP address: {source}") from None
        verdict = self.detector.web_login_failed(self.wall(), address)
        if verdict is not None:
            self.ban_decided(verdict, ORIGIN_WEB_LOGIN)
        if self.rules.counted:
            self._share_failures()
        return {"banned": self.banned(address), "failures": self.rules.failures_of(address)}

    def banned(self, address) -> bool:
        """Whether a ban in force covers this address (exact, its prefix, or a range)."""
        address = ipaddress.ip_address(address)
        bans, now = self.state.bans, self.wall()
        for prefixlen in range(address.max_prefixlen, -1, -1):
            record = bans.get(ipaddress.ip_network((address, prefixlen), strict=False))
            if record is not None and not record.expired(now):
                return True
        return False

    def _ban(self, target, duration: float, reason: str, failures: int, origin: str,
             failure_class: str) -> BanRecord | None:
        now = self.wall()
        record = BanRecord(target, reason, failures, now, 0.0 if duration == 0 else now + duration,
                           origin, failure_class)
        if not self._enforce(record, now, self.monotonic_ns()):
            return None
        self._keep(record)
        log.info("ban %s for %s: %s", target, _duration(record), reason)
        if self.on_change is not None:
            self.on_change("ban", record)
        return record

    def adopt(self, records: list) -> tuple[int, int]:
        """Bans made elsewhere (other edges of the fleet), kept as given: enforced with their
        own expiry unless a ban here lasts as long already, the new ones written to the kernel
        together. Returns how many were enforced, and how many the full table refused."""
        now, mono = self.wall(), self.monotonic_ns()
        kept, fresh = [], {}
        for record in records:
            held = self.state.bans.get(record.target)
            new = held is None
            if new:
                held = fresh.get(record.target)   # the same target twice in one batch
            if held is not None and (held.expires_at == 0 or
                                     0 != record.expires_at <= held.expires_at):
                continue
            if new:
                fresh[record.target] = record
            elif self._enforce(record, now, mono):
                kept.append(record)
        refused = self.dataplane.ban_new([
            (target, expiry_to_monotonic_ns(record.expires_at, now, mono))
            for target, record in fresh.items()])
        for target, _ in refused:
            del fresh[target]
        if refused:
            self.counts["bans_refused"] += len(refused)
            log.error("%d bans of the fleet refused: %s", len(refused), refused[0][1])
        kept += fresh.values()
        for record in kept:
            self._keep(record)
        return len(kept), len(refused)

    def _keep(self, record: BanRecord) -> None:
        """A ban written to the kernel: its record, expiry, journal entry and counts."""
        self.state.bans[record.target] = record
        self.arming.disarm(record.target)
        self._peak_bans = max(self._peak_bans, len(self.state.bans))
        self._changes.append(state.ban_change(record, self.detector.history.count(record.target)))
        self.counts["bans_total"] += 1
        self.bans_by_origin[record.origin] += 1
        self._dirty = True

    def _enforce(self, record: BanRecord, now: float, mono: int) -> bool:
        expires_ns = expiry_to_monotonic_ns(record.expires_at, now, mono)
        try:
            self.dataplane.ban(record.target, expires_ns)
        except BanTableFull as error:
            self.counts["bans_refused"] += 1
            log.error("%s", error)
            return False
        return True

    def unban(self, target, why: str = "by hand") -> bool:
        """Lifts a ban by hand (the fleet is told), or for ``why`` (an edge of the fleet
        lifted it: the fleet is not told again)."""
        network = as_network(target)
        known = self.state.bans.pop(network, None) is not None
        removed = self.dataplane.unban(network) or known
        if removed:
            self.detector.lifted(network)
            self.arming.disarm(network)
            self.counts["unbans_total"] += 1
            self._changes.append(state.unban_change(network))
            self._dirty = True
            log.info("unban %s: %s", network, why)
        if self.on_change is not None and why == "by hand":
            self.on_change("unban", network)
        return removed

    def unban_all(self) -> int:
        targets = set(kernel_bans(self.dataplane)) | set(self.state.bans)
        for target in targets:
            self.unban(target)
        return len(targets)

    def save(self) -> None:
        """Appends the changes since the last save to the journal, or writes the whole state
        when the journal has grown too long (see JOURNAL_MIN)."""
        started = time.monotonic()
        path, changes = self.settings.state_file, self._changes
        length = self.state.journal_length + len(changes)
        try:
            if self._rewrite or length > max(JOURNAL_MIN, 2 * self._peak_bans):
                state.save(self.state, path)
                self.state.journal_length, self._rewrite = 0, False
                self._peak_bans = len(self.state.bans)
            elif changes:
                state.append(changes, path)
                self.state.journal_length = length
        except OSError as error:
            # The bans stay enforced in the pinned maps; the changes wait for the next save.
            # A journal append may have been cut short: write the whole state next time.
            log.error("cannot save the state to %s: %s; will try again", path, error)
            self._rewrite = True
            self._saved_at = self.wall()
            return
        self._changes = []
        took = time.monotonic() - started
        self._save_gap = max(SAVE_INTERVAL, took * SAVE_SHARE_DIVISOR)
        self._dirty, self._saved_at = False, self.wall()

    # -- what the CLI shows -----------------------------------------------------------------

    def listing(self) -> list[dict]:
        return ban_rows(kernel_bans(self.dataplane), self.state.bans, self.wall(),
                        self.monotonic_ns())

    def listing_later(self, newest: int | None = None):
        """The rows of listing(), made when iterated (banlist.rows_later); only the records
        are copied now, under the caller's lock."""
        return rows_later(self.dataplane, self.state.bans.copy(), self.wall(),
                          self.monotonic_ns(), newest)

    def history(self) -> list:
        """The chart's samples: [wall time, failures, bans, dropped packets], totals so far."""
        return [list(sample) for sample in self.samples]

    def stats(self) -> dict:
        return guard_stats(self)


def _ktime(packet) -> int:
    return packet.ktime_ns


def _duration(record: BanRecord) -> str:
    if record.expires_at == 0:
        return "ever"
    return f"{record.expires_at - record.banned_at:.0f} s until {iso(record.expires_at)}"
