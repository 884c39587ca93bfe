"""Failure rules: which SIP responses are failed logins, and when a source is banned.

Pure logic: time is passed in, nothing is read or written.  The rules see the
responses the *server* sends (status, Call-ID, top Via branch, ...) together
with the address the server sent them to.

Who is the offender
    The destination address of the response: the server chose it, so it is
    where the request really came from.  The top Via's ``received=`` is only
    a cross-check (``stats["via_received_mismatch"]``); the Via sent-by host
    is never trusted.

What is a failure
    * 403 Forbidden: a failure.
    * 401 / 407 (a challenge): every legitimate REGISTER and INVITE gets one,
      so a challenge alone is *not* a failure.  It becomes one when
        - the same Call-ID (for the same peer) is challenged or rejected again
          in a NEW transaction (a new top-Via branch: the credentials sent
          were wrong).  Attack tools reuse the Call-ID and even the CSeq, so
          the CSeq is not looked at; or
        - nothing else is answered on that Call-ID within ``challenge_grace``
          seconds (default 32 s, SIP's timer B): scanners that never answer
          the challenge.  ``expire(now)`` turns these into failures.
      A 401 then a 403 in the next transaction counts once (the 403); a 401
      then a 401 counts once (the repeated challenge).  Either way: one
      failure per wrong guess.
    * 404 to a REGISTER (user enumeration): a failure when
      ``count_register_404`` is set.
    * A retransmitted final response (same Call-ID, same branch, same status)
      is not counted again.
    * Any other final answer on that Call-ID (2xx, 3xx, other 4xx, 5xx, 6xx)
      clears the open challenge.  1xx provisionals are ignored.

When is a source banned
    ``maxretry`` failures within ``findtime`` seconds (sliding window) from
    one source.  With ``ipv6_ban_prefix`` < 128, IPv6 sources are counted and
    banned per prefix (e.g. the whole /64).  After a ban decision the
    source's failure history is reset and its still-open challenges are
    dropped (the controller bans it; its later responses are not seen).
    Whitelisted addresses/networks are never counted nor banned.

Bounded state (caps)
    * ``max_sources`` (default 100 000) sources with a failure history.  At
      the cap the source whose last failure is the oldest is evicted (its
      history is forgotten) and ``stats["sources_evicted"]`` is incremented.
    * ``max_open_challenges`` (default 200 000) Call-ID records (open
      challenges, plus recently closed 403/404 transactions kept for the
      grace period so that their retransmissions are not counted twice).
      At the cap the oldest record is evicted and
      ``stats["challenges_evicted"]`` is incremented; an evicted record that
      was an open challenge counts as an unanswered challenge (a failure for
      its peer) right away, so flooding the table cannot hide a scanner (a ban
      decided that way is returned by the next ``expire()``).
    * A source's history never holds more than ``maxretry`` failures (it is
      banned and reset at ``maxretry``); the ban-reset markers are bounded
      by ``max_sources`` too.
    Memory is therefore O(max_sources * maxretry + max_open_challenges).
"""

from __future__ import annotations

import functools
import ipaddress
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# failure kinds (used in the reason text)
KIND_403 = "403"
KIND_REPEATED_401 = "repeated 401"
KIND_REPEATED_407 = "repeated 407"
KIND_UNANSWERED_401 = "unanswered 401"
KIND_UNANSWERED_407 = "unanswered 407"
KIND_REGISTER_404 = "404 to REGISTER"

STAT_KEYS = (
    "responses_seen",       # final and provisional responses given to observe()
    "requests_ignored",     # requests given to observe() (ignored)
    "provisional_ignored",  # 1xx responses
    "whitelisted_skipped",  # responses to whitelisted peers
    "challenges",           # 401/407 seen (retransmissions included)
    "retransmissions",      # final responses recognised as retransmissions
    "cleared",              # open challenges closed by a non-failure answer
    "failures",             # failures counted (all kinds)
    "failures_403",
    "failures_repeated_challenge",
    "failures_unanswered_challenge",
    "failures_register_404",
    "bans",                 # ban decisions returned
    "sources_evicted",      # source histories dropped at the max_sources cap
    "challenges_evicted",   # Call-ID records dropped at the max_open_challenges cap
    "via_received_mismatch",  # top Via received= differs from the destination
)


@dataclass(frozen=True)
class RuleSettings:
    """Settings of the failure rules (defaults are MikoPBX's / fail2ban's)."""

    maxretry: int = 10
    findtime: float = 1800.0
    bantime: float = 43200.0  # carried into BanDecision; applied by the controller
    challenge_grace: float = 32.0
    count_register_404: bool = False
    whitelist: tuple[IPNetwork, ...] = ()
    ipv6_ban_prefix: int = 128
    max_sources: int = 100_000
    max_open_challenges: int = 200_000

    def __post_init__(self):
        nets = tuple(ipaddress.ip_network(n, strict=False) for n in self.whitelist)
        object.__setattr__(self, "whitelist", nets)
        if self.maxretry < 1:
            raise ValueError("maxretry must be >= 1")
        if self.findtime <= 0 or self.challenge_grace <= 0:
            raise ValueError("findtime and challenge_grace must be > 0")
        if self.max_sources < 1 or self.max_open_challenges < 1:
            raise ValueError("caps must be >= 1")
        if not 1 <= self.ipv6_ban_prefix <= 128:
            raise ValueError("ipv6_ban_prefix must be in 1..128")


@dataclass(frozen=True)
class BanDecision:
    """'Ban this source': what the controller needs to act."""

    address: IPAddress          # the peer whose response completed the count
    network: IPNetwork          # what to ban: /32, /128, or the IPv6 prefix
    failures: int
    first_failure_at: float
    decided_at: float
    bantime: float
    reason: str                 # e.g. "10 failures in 412 s: 7×403, 3×repeated 401"
    kinds: dict = field(default_factory=dict, compare=False)


class _Call:
    """One (peer, Call-ID): the last final response's transaction."""

    __slots__ = ("peer", "source", "branch", "status", "at", "open", "seq")

    def __init__(self, peer, source, branch, status, at, open_, seq):
        self.peer = peer
        self.source = source        # the peer's source_key()
        self.branch = branch
        self.status = status
        self.at = at
        self.open = open_
        self.seq = seq


def _reason(failures: list[tuple[float, str]], now: float) -> tuple[str, dict]:
    kinds = Counter(kind for _, kind in failures)
    first = min(t for t, _ in failures)
    parts = ", ".join(f"{n}×{kind}" for kind, n in kinds.most_common())
    return f"{len(failures)} failures in {now - first:.0f} s: {parts}", dict(kinds)


V6_KEY = 1 << 128


@functools.lru_cache(maxsize=65536)
def _received_address(received: bytes) -> IPAddress | None:
    """The address in a Via received= parameter (cached: sources repeat), or None."""
    try:
        return ipaddress.ip_address(received.decode("ascii", "replace").strip("[]"))
    except ValueError:
        return None


class FailureRules:
    """Counts failed logins per source and decides bans.

    ``observe(now, peer, message)`` for every SIP response the server sends
    (``peer`` = its destination address), ``expire(now)`` periodically (and
    at the end of a capture).  Both return ban decisions.
    """

    def __init__(self, settings: RuleSettings | None = None):
        self.settings = settings or RuleSettings()
        s = self.settings
        self._maxretry = s.maxretry
        self._findtime = s.findtime
        self._grace = s.challenge_grace
        self._count_404 = s.count_register_404
        # whitelisted networks as (network int, netmask int), per family
        self._wl4 = tuple((int(n.network_address), int(n.netmask))
                          for n in s.whitelist if n.version == 4)
        self._wl6 = tuple((int(n.network_address), int(n.netmask))
                          for n in s.whitelist if n.version == 6)
        self._v6prefix = s.ipv6_ban_prefix
        # (peer key, call_id) -> _Call, oldest first (ordered by .at)
        self._calls: OrderedDict[tuple, _Call] = OrderedDict()
        # source key -> list of (time, kind), least recently failed first
        self._sources: OrderedDict[object, list] = OrderedDict()
        # source key -> record sequence number at its last ban / forget():
        # Call-ID records of that source numbered up to it are stale
        self._reset_at: OrderedDict[object, int] = OrderedDict()
        self._seq = 0
        self._open = 0       # open challenges among _calls
        self._pending = []   # ban decisions caused by evictions, returned by expire()
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)

    # -- helpers -----------------------------------------------------------

    def is_whitelisted(self, peer: IPAddress) -> bool:
        value = int(peer)
        for network, mask in (self._wl4 if peer.version == 4 else self._wl6):
            if value & mask == network:
                return True
        return False

    def source_key(self, peer: IPAddress) -> int:
        """The unit counted and banned (the address, or its IPv6 prefix) as an int key.

        Ints hash far faster than ipaddress objects; IPv6 keys carry the V6_KEY bit so that
        an IPv4 and an IPv6 address never share a key."""
        return self._key(int(peer), peer.version)

    def _key(self, value: int, version: int) -> int:
        if version == 4:
            return value
        if self._v6prefix < 128:
            shift = 128 - self._v6prefix
            value = value >> shift << shift
        return value | V6_KEY

    def _network(self, key: int) -> IPNetwork:
        if key & V6_KEY:
            return ipaddress.IPv6Network((key ^ V6_KEY, self._v6prefix))
        return ipaddress.IPv4Network((key, 32))

    def _stale(self, call: _Call) -> bool:
        """True when the record predates a ban/forget of its source."""
        reset = self._reset_at.get(call.source)
        return reset is not None and call.seq <= reset

    def _new_call(self, peer, source, branch, status, now, open_) -> _Call:
        self._seq += 1
        return _Call(peer, source, branch, status, now, open_, self._seq)

    def _mark_reset(self, key) -> None:
        reset = self._reset_at
        reset[key] = self._seq
        reset.move_to_end(key)
        if len(reset) > self.settings.max_sources:
            reset.popitem(last=False)

    def _store_call(self, key, call: _Call) -> None:
        calls = self._calls
        previous = calls.get(key)
        if previous is not None and previous.open:
            self._open -= 1
        if call.open:
            self._open += 1
        calls[key] = call
        calls.move_to_end(key)
        if len(calls) > self.settings.max_open_challenges:
            _, old = calls.popitem(last=False)
            self.stats["challenges_evicted"] += 1
            if old.open:
                self._open -= 1
                if not self._stale(old):
                    kind = KIND_UNANSWERED_407 if old.status == 407 else KIND_UNANSWERED_401
                    decision = self._fail(call.at, old.peer, old.source, kind,
                                          "failures_unanswered_challenge")
                    if decision is not None:
                        self._pending.append(decision)

    def _drop_call(self, key) -> _Call | None:
        call = self._calls.pop(key, None)
        if call is not None and call.open:
            self._open -= 1
        return call

    def _fail(self, now: float, peer, key: int, kind: str, stat: str) -> BanDecision | None:
        stats = self.stats
        stats["failures"] += 1
        stats[stat] += 1
        sources = self._sources
        history = sources.get(key)
        if history is None:
            history = sources[key] = []
            if len(sources) > self.settings.max_sources:
                sources.popitem(last=False)
                self.stats["sources_evicted"] += 1
        else:
            sources.move_to_end(key)
        history.append((now, kind))
        horizon = now - self._findtime
        if history[0][0] < horizon:
            history[:] = [f for f in history if f[0] >= horizon]
        if len(history) < self._maxretry:
            return None
        # ban: reset the history; drop the source's open challenges lazily
        del sources[key]
        self._mark_reset(key)
        self.stats["bans"] += 1
        reason, kinds = _reason(history, now)
        return BanDecision(
            address=peer,
            network=self._network(key),
            failures=len(history),
            first_failure_at=min(t for t, _ in history),
            decided_at=now,
            bantime=self.settings.bantime,
            reason=reason,
            kinds=kinds,
        )

    # -- API -----------------------------------------------------------------

    def observe(self, now: float, peer: IPAddress, message) -> BanDecision | None:
        """One SIP message the server sent to ``peer`` at time ``now``."""
        stats = self.stats
        if not message.is_response:
            stats["requests_ignored"] += 1
            return None
        stats["responses_seen"] += 1
        status = message.status
        if status < 200:
            stats["provisional_ignored"] += 1
            return None
        if (self._wl4 or self._wl6) and self.is_whitelisted(peer):
            stats["whitelisted_skipped"] += 1
            return None
        received = message.via_received
        if received and _received_address(received) != peer:
            stats["via_received_mismatch"] += 1

        value, version = int(peer), peer.version
        source = value if version == 4 else self._key(value, version)
        key = (value if version == 4 else value | V6_KEY, message.call_id)
        branch = message.via_branch
        calls = self._calls
        call = calls.get(key)
        if call is not None and call.branch == branch and call.status == status:
            stats["retransmissions"] += 1
            return None
        if call is not None and call.open and self._stale(call):
            call = None  # challenge from before the source was banned / forgotten
        was_open = call is not None and call.open

        if status == 401 or status == 407:
            stats["challenges"] += 1
            self._store_call(key, self._new_call(peer, source, branch, status, now, True))
            if not was_open:
                return None
            kind = KIND_REPEATED_407 if status == 407 else KIND_REPEATED_401
            decision = self._fail(now, peer, source, kind, "failures_repeated_challenge")
            if decision is not None:
                self._drop_call(key)
            return decision

        if status == 403:
            self._store_call(key, self._new_call(peer, source, branch, status, now, False))
            return self._fail(now, peer, source, KIND_403, "failures_403")

        if status == 404 and self._count_404 and message.cseq_method == b"REGISTER":
            self._store_call(key, self._new_call(peer, source, branch, status, now, False))
            return self._fail(now, peer, source, KIND_REGISTER_404, "failures_register_404")

        # any other final answer closes the Call-ID
        if self._drop_call(key) is not None and was_open:
            stats["cleared"] += 1
        return None

    def expire(self, now: float) -> list[BanDecision]:
        """Unanswered challenges older than the grace become failures;
        closed records older than the grace are dropped."""
        decisions, self._pending = self._pending, []
        calls = self._calls
        limit = now - self._grace
        while calls:
            key, call = next(iter(calls.items()))
            if call.at > limit:
                break
            self._drop_call(key)
            if call.open and not self._stale(call):
                kind = KIND_UNANSWERED_407 if call.status == 407 else KIND_UNANSWERED_401
                decision = self._fail(min(now, call.at + self._grace), call.peer, call.source,
                                      kind, "failures_unanswered_challenge")
                if decision is not None:
                    decisions.append(decision)
        return decisions

    def next_expiry(self) -> float | None:
        """When the oldest Call-ID record passes the grace (call expire() then)."""
        if self._pending:
            return float("-inf")  # decisions are waiting: call expire() now
        for call in self._calls.values():
            return call.at + self._grace
        return None

    def forget(self, address) -> None:
        """Drop the failure history of an address (or its prefix), e.g. on unban."""
        address = ipaddress.ip_address(address)
        key = self.source_key(address)
        self._sources.pop(key, None)
        self._mark_reset(key)

    def failures_of(self, address) -> int:
        """Failures currently counted against an address (or its prefix)."""
        return len(self._sources.get(self.source_key(ipaddress.ip_address(address)), ()))

    @property
    def open_challenges(self) -> int:
        return self._open

    @property
    def tracked_calls(self) -> int:
        return len(self._calls)

    @property
    def tracked_sources(self) -> int:
        return len(self._sources)


def whitelist_networks(items: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse addresses/CIDRs ('10.0.0.1', '10.0.0.0/8', '2001:db8::/32')."""
    return tuple(ipaddress.ip_network(i, strict=False) for i in items)
