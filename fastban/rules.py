"""Failure rules: which SIP exchanges are failed logins, and when a source is banned.

Pure logic: time is passed in, nothing is read or written. The rules see the SIP messages of
the server's side of the wire: its responses (with the address it sent them to) and the
requests that carry credentials (with the address they came from). That address is the
*peer*.

Who is the offender
    The peer: a response goes where the server chose to send it, a request's source is where
    the server will answer. The top Via's ``received=`` is only a cross-check
    (``stats["via_received_mismatch"]``); the Via sent-by host is never trusted.

What is a failure
    * 401 / 407 (a challenge): every honest REGISTER and INVITE gets one, so a challenge alone
      is not a failure. The nonce it carries is remembered as issued to the peer.
    * 403 Forbidden, and 404 to a REGISTER when ``count_register_404`` is set.
    A failure is one of two classes:

    **Proven**: a 401/407/403 that answers a request whose credentials carry a nonce the
    server issued to that same address (matched by Call-ID and top-Via branch). Only a host
    that receives the server's answers at the address can hold such a nonce, so a forged UDP
    source cannot produce one. Proven failures count for every address.
    Kinds: ``bad credentials 401`` / ``407`` / ``403``.

    **Unproven**: anything a forger could make the server say to someone else's address:
        - a challenge repeated on the same Call-ID in a NEW transaction (a new top-Via branch)
          while one is open, to a request without such credentials (``repeated 401/407``;
          attack tools reuse the Call-ID and even the CSeq, so the CSeq is not looked at);
        - a challenge nothing else answers on its Call-ID within ``challenge_grace`` seconds
          (``unanswered 401/407``: scanners that never answer; ``expire(now)``);
        - a 403 to a request without such credentials (``403``), a 404 to REGISTER.
    Unproven failures count only for sources that are not trusted.

    A wrong password on fastban's own web page (``web_login_failed``) is a proven failure too
    (``wrong web page password``): it came over a TCP connection.

    A challenge marked ``stale=true`` rejected an expired nonce, not a password: no failure.
    A retransmitted response (same Call-ID, branch and status as the last one) is not counted
    again. Any other final answer closes the Call-ID's open challenge; 1xx are ignored.

Trust
    A source is trusted for ``trust_time`` seconds after a 2xx answered a request whose
    credentials carried a nonce issued to its address: it has logged in. Forged packets can
    neither make an address trusted (they cannot hold its nonces) nor take its trust away
    (nothing but time ends it). An office behind one NAT address is trusted as soon as one
    phone logs in; a phone of it guessing a password is still banned after ``maxretry``
    proven failures. On becoming trusted, a source's unproven failures are dropped.

What the kernel must show (fastban/headerscan.py, bpf/tc_capture.c)
    The rules read a final answer other than 401/403/407/404 only on a Call-ID with a
    challenge open or a request with credentials waiting; and a request with credentials only
    from an address challenged within ``challenge_grace``. Those are exactly what the capture
    copies (it copies more, which the rules ignore), so the live guard and a replay of every
    packet decide the same.

When is a source banned
    ``maxretry`` counted failures within ``findtime`` seconds (sliding window) from one
    source. With ``ipv6_ban_prefix`` < 128, IPv6 sources are counted, trusted and banned per
    prefix (e.g. the whole /64). After a ban decision the source's history is reset and its
    still-open challenges are dropped. Whitelisted addresses/networks are never counted.

Bounded state (caps)
    * ``max_sources`` sources with a failure history (at the cap the one whose last failure
      is the oldest is forgotten, ``stats["sources_evicted"]``); as many trusted sources, and
      as many challenged addresses remembered for the request window.
    * ``max_open_challenges`` Call-ID records (open challenges, and closed 403/404
      transactions kept for the grace so that their retransmissions count once); at the cap
      the oldest is dropped (``stats["challenges_evicted"]``) and an open challenge among them
      counts as unanswered right away, so a flood of Call-IDs cannot hide a scanner. As many
      waiting requests, and as many remembered nonces (each for ``NONCE_MEMORY`` seconds).
    * A source's history never holds more than ``maxretry`` failures.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict

try:
    import cython
except ImportError:  # a pure-Python install
    from fastban import _cython_shim as cython

from fastban.decisions import (
    KIND_403, KIND_BAD_401, KIND_BAD_403, KIND_BAD_407, KIND_REGISTER_404, KIND_REPEATED_401,
    KIND_REPEATED_407, KIND_UNANSWERED_401, KIND_UNANSWERED_407, KIND_WEB_LOGIN, PROVEN_KINDS,
    BanDecision,
    IPAddress, IPNetwork, describe_failures)
from fastban.rule_settings import STAT_KEYS, RuleSettings

# A nonce counts as issued to an address this long after the server sent it (longer than the
# nonce lifetimes of Kamailio, Asterisk and FreeSWITCH).
NONCE_MEMORY = 3600.0
TRUST_REPORT_SHARE = 0.1
# The live capture reads the CPUs' rings one after another: an answer may be read before the
# request it answers. A 2xx that closed a challenge with no request waiting is kept this long
# (seconds) for its request.
REORDER_WINDOW = 1.0

@cython.no_gc       # it refers to addresses, ints and bytes only: it can be in no cycle
@cython.cclass
class _Call:
    """One (peer, Call-ID): the last final response's transaction."""

    peer = cython.declare(object, visibility="readonly")
    source = cython.declare(object, visibility="readonly")
    branch = cython.declare(object, visibility="readonly")
    status = cython.declare(cython.int, visibility="readonly")
    at = cython.declare(cython.double, visibility="readonly")
    open = cython.declare(cython.bint, visibility="readonly")
    seq = cython.declare(cython.longlong, visibility="readonly")

    def __init__(self, peer, source, branch, status: cython.int, at: cython.double,
                 open_: cython.bint, seq: cython.longlong):
        self.peer = peer
        self.source = source        # the peer's source_key()
        self.branch = branch
        self.status = status
        self.at = at
        self.open = open_
        self.seq = seq


V6_KEY = 1 << 128


_IPV4 = ipaddress.IPv4Address


@cython.cfunc
@cython.inline
def _peer_key(peer):
    """An address as the int key of the tables (IPv6 ones carry the V6_KEY bit)."""
    if type(peer) is _IPV4:
        return peer._ip         # what int(peer) returns, without the method call
    return int(peer) if peer.version == 4 else int(peer) | V6_KEY


@functools.lru_cache(maxsize=65536)
def _received_key(received: bytes):
    """The address in a Via received= parameter as a peer key (cached: sources repeat), or
    None when it is no address."""
    try:
        address = ipaddress.ip_address(received.decode("ascii", "replace").strip("[]"))
    except ValueError:
        return None
    return int(address) if address.version == 4 else int(address) | V6_KEY


@cython.cfunc
def _bounded_set(table: OrderedDict, key, value, cap: cython.Py_ssize_t) -> cython.void:
    """table[key] = value as the newest entry, dropping the oldest past cap."""
    table[key] = value
    table.move_to_end(key)
    if len(table) > cap:
        table.popitem(last=False)


@cython.cclass
class FailureRules:
    """Counts failed logins per source and decides bans.

    ``observe(now, peer, message)`` for every SIP message of the server's side (``peer`` = the
    destination of a response, the source of a request), ``expire(now)`` periodically (and at
    the end of a capture). Both return ban decisions.
    """

    settings = cython.declare(object, visibility="public")
    stats = cython.declare(dict, visibility="public")
    trust_reports = cython.declare(list, visibility="public")
    counted = cython.declare(object, visibility="public")
    _calls = cython.declare(object, visibility="readonly")
    _waiting = cython.declare(object, visibility="readonly")
    _answered = cython.declare(object, visibility="readonly")
    _challenged = cython.declare(object, visibility="readonly")
    _nonces = cython.declare(object, visibility="readonly")
    _trusted = cython.declare(object, visibility="readonly")
    _sources = cython.declare(object, visibility="readonly")
    _reset_at = cython.declare(object, visibility="readonly")
    _reported = cython.declare(dict)
    _pending = cython.declare(list)
    _seq = cython.declare(cython.longlong)
    _open = cython.declare(cython.Py_ssize_t)
    _maxretry = cython.declare(cython.Py_ssize_t)
    _max_sources = cython.declare(cython.Py_ssize_t)
    _max_calls = cython.declare(cython.Py_ssize_t)
    _v6prefix = cython.declare(cython.int)
    _findtime = cython.declare(cython.double)
    _grace = cython.declare(cython.double)
    _count_404 = cython.declare(cython.bint)
    _wl4 = cython.declare(tuple)
    _wl6 = cython.declare(tuple)

    def __init__(self, settings: RuleSettings | None = None):
        self._calls: OrderedDict[tuple, _Call] = OrderedDict()    # (peer key, Call-ID), oldest first
        self._waiting: OrderedDict[tuple, tuple] = OrderedDict()  # (peer key, Call-ID, branch) -> (at, proven)
        self._answered: OrderedDict[tuple, float] = OrderedDict()  # same key -> 2xx read first
        self._challenged: OrderedDict[int, float] = OrderedDict() # peer key -> last 401/407
        self._nonces: OrderedDict[tuple, float] = OrderedDict()   # (peer key, nonce) -> issued at
        self._trusted: OrderedDict[int, float] = OrderedDict()    # source key -> trusted until
        # New or lengthened trust, for the controller to save: (network, until); a source's
        # trust is reported again only when it grew by TRUST_REPORT_SHARE of trust_time.
        self.trust_reports: list = []
        self._reported: dict[int, float] = {}
        self._sources: OrderedDict[int, list] = OrderedDict()     # source key -> [(time, kind)]
        # source key -> record sequence number at its last ban / forget(): Call-ID records of
        # that source numbered up to it are stale
        self._reset_at: OrderedDict[int, int] = OrderedDict()
        self._seq = 0
        self._open = 0       # open challenges among _calls
        self._pending = []   # ban decisions caused by evictions, returned by expire()
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        # Each failure counted, (time, network, kind), for the fleet to count too; None: off.
        self.counted: list | None = None
        self.reconfigure(settings or RuleSettings())

    def reconfigure(self, settings: RuleSettings) -> None:
        """Takes new settings, keeping the counts (the structure settings must not change)."""
        if getattr(self, "settings", None) is not None and \
                settings.structure != self.settings.structure:
            raise ValueError("ipv6_ban_prefix and the caps need new rules")
        self.settings = s = settings
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
        self._max_sources = s.max_sources
        self._max_calls = s.max_open_challenges

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
        return self._source_of(_peer_key(peer))

    def _key(self, value: int, version: int) -> int:
        if version == 4:
            return value
        if self._v6prefix < 128:
            shift = 128 - self._v6prefix
            value = value >> shift << shift
        return value | V6_KEY

    @cython.cfunc
    @cython.inline
    def _source_of(self, peer_key):
        """The source key of a peer key."""
        if self._v6prefix == 128 or peer_key < V6_KEY:
            return peer_key
        return self._key(peer_key ^ V6_KEY, 6)

    def _network(self, key: int) -> IPNetwork:
        if key & V6_KEY:
            return ipaddress.IPv6Network((key ^ V6_KEY, self._v6prefix))
        return ipaddress.IPv4Network((key, 32))

    @cython.cfunc
    def _stale(self, call: _Call) -> cython.bint:
        """True when the record predates a ban/forget of its source."""
        reset = self._reset_at.get(call.source)
        return reset is not None and call.seq <= reset

    @cython.cfunc
    def _new_call(self, peer, source, branch, status: cython.int, now: cython.double,
                  open_: cython.bint) -> _Call:
        self._seq += 1
        return _Call(peer, source, branch, status, now, open_, self._seq)

    def _mark_reset(self, key) -> None:
        _bounded_set(self._reset_at, key, self._seq, self._max_sources)

    @cython.cfunc
    def _store_call(self, key, call: _Call) -> cython.void:
        calls = self._calls
        previous = calls.get(key)
        if previous is not None and previous.open:
            self._open -= 1
        if call.open:
            self._open += 1
        calls[key] = call
        calls.move_to_end(key)
        if len(calls) > self._max_calls:
            old: _Call
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

    @cython.cfunc
    def _drop_call(self, key) -> cython.void:
        call: _Call | None = self._calls.pop(key, None)
        if call is not None and call.open:
            self._open -= 1

    def trusted_until(self, source: int, now: float) -> float | None:
        """Until when a source key is trusted, or None."""
        until = self._trusted.get(source)
        return until if until is not None and until > now else None

    @cython.cfunc
    @cython.inline
    def _is_trusted(self, source, now: cython.double) -> cython.bint:
        until = self._trusted.get(source)
        return until is not None and until > now

    @cython.cfunc
    def _trust(self, source, now: cython.double) -> cython.void:
        self.stats["logins"] += 1
        trust_time = self.settings.trust_time
        if trust_time <= 0:
            return
        until = now + trust_time
        _bounded_set(self._trusted, source, until, self._max_sources)
        reported = self._reported
        if until - reported.get(source, 0.0) > trust_time * TRUST_REPORT_SHARE:
            reported[source] = until
            self.trust_reports.append((self._network(source), until))
            if len(reported) > 2 * self.settings.max_sources:      # some left at the cap
                self._reported = {k: v for k, v in reported.items() if k in self._trusted}
        history = self._sources.get(source)
        if history:
            history[:] = [f for f in history if f[1] in PROVEN_KINDS]
            if not history:
                del self._sources[source]

    @cython.cfunc
    def _fail(self, now: cython.double, peer, key, kind: str, stat: str):
        stats = self.stats
        proven: cython.bint = kind in PROVEN_KINDS
        if not proven and self._is_trusted(key, now):
            stats["unproven_of_trusted"] += 1
            return None
        stats["failures"] += 1
        stats[stat] += 1
        sources = self._sources
        history = sources.get(key)
        if history is None:
            history = sources[key] = []
            if len(sources) > self._max_sources:
                sources.popitem(last=False)
                stats["sources_evicted"] += 1
        else:
            sources.move_to_end(key)
        history.append((now, kind))
        if self.counted is not None:
            self.counted.append((now, self._network(key), kind))
        horizon = now - self._findtime
        if history[0][0] < horizon:
            history[:] = [f for f in history if f[0] >= horizon]
        if len(history) < self._maxretry:
            return None
        # ban: reset the history; drop the source's open challenges lazily
        del sources[key]
        self._mark_reset(key)
        stats["bans"] += 1
        reason, kinds, proven_count = describe_failures(history, now)
        return BanDecision(
            address=peer,
            network=self._network(key),
            failures=len(history),
            proven=proven_count,
            first_failure_at=min(t for t, _ in history),
            decided_at=now,
            reason=reason,
            kinds=kinds,
        )

    # -- API -----------------------------------------------------------------

    @cython.locals(now=cython.double, status=cython.int, challenge=cython.bint,
                   was_open=cython.bint, proven=cython.bint, call=_Call)
    def observe(self, now, peer, message) -> BanDecision | None:
        """One SIP message of the server's side at time ``now``; ``peer`` is the destination
        of a response, the source of a request."""
        if not message.is_response:
            return self._request(now, peer, message)
        stats = self.stats
        stats["responses_seen"] += 1
        status = message.status
        if status < 200:
            stats["provisional_ignored"] += 1
            return None
        if (self._wl4 or self._wl6) and self.is_whitelisted(peer):
            stats["whitelisted_skipped"] += 1
            return None
        peer_key = _peer_key(peer)
        received = message.via_received
        if received and _received_key(received) != peer_key:
            stats["via_received_mismatch"] += 1
        source = self._source_of(peer_key)
        call_id, branch = message.call_id, message.via_branch
        key = (peer_key, call_id)
        challenge = status == 401 or status == 407
        if challenge:
            stats["challenges"] += 1
            _bounded_set(self._challenged, peer_key, now, self._max_sources)
        calls = self._calls
        call = calls.get(key)
        if challenge:
            # a stateless server answers a request sent again with a new nonce: issued all the same
            for nonce in message.challenge_nonces:
                _bounded_set(self._nonces, (peer_key, nonce), now,
                             self._max_calls)
        if call is not None and call.branch == branch and call.status == status:
            stats["retransmissions"] += 1
            return None
        if call is not None and call.open and self._stale(call):
            call = None  # challenge from before the source was banned / forgotten
        was_open = call is not None and call.open
        waiting = self._waiting.pop((peer_key, call_id, branch), None) if self._waiting else None
        proven = waiting is not None and waiting[1] and now - waiting[0] <= self._grace

        if challenge:
            self._store_call(key, self._new_call(peer, source, branch, status, now, True))
            if message.stale:               # an expired nonce: no password was checked
                stats["stale_challenges"] += 1
                return None
            if proven:
                kind, stat = (KIND_BAD_407 if status == 407 else KIND_BAD_401), "failures_proven"
            elif was_open:
                kind = KIND_REPEATED_407 if status == 407 else KIND_REPEATED_401
                stat = "failures_repeated_challenge"
            else:
                return None
            decision = self._fail(now, peer, source, kind, stat)
            if decision is not None:
                self._drop_call(key)
            return decision

        if status == 403:
            self._store_call(key, self._new_call(peer, source, branch, status, now, False))
            if proven:
                return self._fail(now, peer, source, KIND_BAD_403, "failures_proven")
            return self._fail(now, peer, source, KIND_403, "failures_403")

        if status == 404 and self._count_404 and message.cseq_method == b"REGISTER":
            self._store_call(key, self._new_call(peer, source, branch, status, now, False))
            return self._fail(now, peer, source, KIND_REGISTER_404, "failures_register_404")

        # any other final answer: a login when it accepts proven credentials, and it closes
        # the Call-ID's open challenge (closed 403/404 records stay for their retransmissions)
        if proven and 200 <= status < 300:
            self._trust(source, now)
        elif was_open and waiting is None and 200 <= status < 300:
            _bounded_set(self._answered, (peer_key, call_id, branch), now,
                         self._max_calls)
        if was_open:
            self._drop_call(key)
            stats["cleared"] += 1
        return None

    @cython.cfunc
    def _request(self, now: cython.double, peer, message):
        stats = self.stats
        stats["requests_seen"] += 1
        nonces = message.credential_nonces
        if not nonces:
            stats["requests_ignored"] += 1
            return None
        peer_key = _peer_key(peer)
        challenged_at = self._challenged.get(peer_key)
        if challenged_at is None or now - challenged_at > self._grace:
            stats["requests_ignored"] += 1       # the capture does not copy these
            return None
        if (self._wl4 or self._wl6) and self.is_whitelisted(peer):
            stats["whitelisted_skipped"] += 1
            return None
        issued = self._nonces
        proven = False
        for nonce in nonces:
            at = issued.get((peer_key, nonce))
            if at is not None and now - at <= NONCE_MEMORY:
                proven = True
                break
        stats["credentials_waiting"] += 1
        if proven:
            stats["credentials_proven"] += 1
        key = (peer_key, message.call_id, message.via_branch)
        answered = self._answered.pop(key, None) if self._answered else None
        if answered is not None and proven and abs(now - answered) <= REORDER_WINDOW:
            stats["answers_before_request"] += 1
            self._trust(self._source_of(peer_key), now)
            return None
        _bounded_set(self._waiting, key, (now, proven), self._max_calls)
        return None

    def expire(self, now: float) -> list[BanDecision]:
        """Unanswered challenges older than the grace become failures; closed records,
        waiting requests and remembered nonces past their time are dropped."""
        decisions, self._pending = self._pending, []
        calls = self._calls
        limit = now - self._grace
        while calls:
            call: _Call
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
        for table, horizon in ((self._waiting, limit), (self._challenged, limit),
                               (self._answered, now - REORDER_WINDOW),
                               (self._nonces, now - NONCE_MEMORY)):
            while table:
                key, value = next(iter(table.items()))
                if (value[0] if isinstance(value, tuple) else value) > horizon:
                    break
                del table[key]
        trusted = self._trusted
        while trusted:
            key, until = next(iter(trusted.items()))
            if until > now:
                break
            del trusted[key]
            self._reported.pop(key, None)
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

    def web_login_failed(self, now: float, peer: IPAddress) -> BanDecision | None:
        """A wrong password on fastban's web page from ``peer``: a proven failure, counted
        with the SIP ones toward maxretry."""
        if self.is_whitelisted(peer):
            self.stats["whitelisted_skipped"] += 1
            return None
        self.stats["failures_web_login"] += 1
        return self._fail(now, peer, self.source_key(peer), KIND_WEB_LOGIN, "failures_proven")

    def history(self, key: int) -> tuple:
        """The failures counted against a source key: ((time, kind), ...), oldest first."""
        return tuple(self._sources.get(key, ()))

    def failures_of(self, address) -> int:
        """Failures currently counted against an address (or its prefix)."""
        return len(self._sources.get(self.source_key(ipaddress.ip_address(address)), ()))

    def is_trusted(self, address, now: float) -> bool:
        return self.trusted_until(self.source_key(ipaddress.ip_address(address)), now) is not None

    def trusted(self, now: float) -> dict[IPNetwork, float]:
        """The trusted sources as networks, with the time their trust ends."""
        return {self._network(key): until for key, until in self._trusted.items()
                if until > now}

    def restore_trust(self, network: IPNetwork, until: float, now: float) -> None:
        """Trust saved before a restart (the guard's state file)."""
        if until > now:
            key = self._key(int(network.network_address), network.version)
            if until > self._trusted.get(key, 0.0):
                _bounded_set(self._trusted, key, until, self._max_sources)
                self._reported[key] = until

    @property
    def open_challenges(self) -> int:
        return self._open

    @property
    def tracked_calls(self) -> int:
        return len(self._calls)

    @property
    def tracked_sources(self) -> int:
        return len(self._sources)

    @property
    def trusted_sources(self) -> int:
        return len(self._trusted)


IMPLEMENTATION = "cython" if cython.compiled else "python"
if not cython.compiled:
    from fastban._cython_shim import compiled_twin
    _twin = compiled_twin("fastban._rules")     # this source, compiled by setup.py
    if _twin is not None:
        FailureRules, IMPLEMENTATION = _twin.FailureRules, _twin.IMPLEMENTATION
