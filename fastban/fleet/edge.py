"""This edge in its fleet: the guard's bans to fleet messages and back.

``FleetEdge`` is the sink of the fleet link: what the follower read is applied to the guard
(under the service's lock), the local whitelist first; and the guard's own bans and unbans
are offered to the publisher, with its counted failures when fleet_counting is on (trust stays
per edge: an unproven failure of a source trusted here is not counted, so not shared). Bans
from the fleet carry the origin ``fleet <edge>``; a ban of failures counted on several edges
together, ``fleet count``.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter

from fastban.ban_record import _interned
from fastban.decisions import ORIGIN_FLEET_COUNT
from fastban.fleet.messages import (EDGE_NAME, RESERVED_EDGE_NAMES, FleetBan, FleetFailure,
                                    FleetUnban, one_line, parse_member)
from fastban.state import BanRecord

log = logging.getLogger("fastban.fleet")

FLEET_ORIGIN = "fleet "
REFUSALS_LOGGED = 10          # whitelisted bans refused: lines logged, then only counted


def fleet_origin(edge: str) -> str:
    return _interned(FLEET_ORIGIN + edge)


def is_fleet_origin(origin: str) -> bool:
    """Whether a ban came from another edge (not one this edge made, "fleet count" included)."""
    return origin.startswith(FLEET_ORIGIN) and origin != ORIGIN_FLEET_COUNT


def edge_name(settings) -> str:
    """The edge's name: the setting, else the host's name (up to its first dot)."""
    name = settings.edge_name or socket.gethostname().split(".")[0]
    if not EDGE_NAME.fullmatch(name) or name in RESERVED_EDGE_NAMES:
        raise ValueError(f"edge_name: must be letters, digits, '.', '_' or '-' (up to 63, not "
                         f"'count'), got {name!r}; set edge_name")
    return name


class FleetEdge:
    def __init__(self, guard, lock, edge: str):
        self.guard, self.lock, self.edge = guard, lock, edge
        self.link = None
        self._refusals_logged = 0

    def connect(self, link) -> None:
        """Offers the guard's bans and unbans to ``link`` from now on, and its counted failures
        with fleet_counting."""
        self.link = link
        self.guard.on_change = self._changed
        if self.guard.settings.fleet_counting:
            self.guard.rules.counted = []

    def _changed(self, what: str, subject) -> None:
        if what == "ban":
            if not is_fleet_origin(subject.origin):
                self.link.offer(self.to_message(subject))
        elif what == "unban":
            self.link.offer(FleetUnban(subject, self.edge, self.guard.wall()))
        else:
            settings = self.guard.settings
            for at, source, kind in subject:
                self.link.offer(FleetFailure(source, at, kind, self.edge,
                                             float(settings.findtime), settings.maxretry))

    def to_message(self, record: BanRecord) -> FleetBan:
        return ban_message(record, self.edge)

    # -- the link's sink (called from its threads) ------------------------------------------

    def apply(self, changes: list) -> Counter:
        """Bans and unbans in order; the bans between two unbans are adopted together."""
        counts: Counter = Counter()
        with self.lock:
            whitelist = self.guard.settings.whitelist
            bans: list = []
            for change in changes:
                if isinstance(change, FleetUnban):
                    self._adopt(bans, counts)
                    lifted = self.guard.unban(change.target, f"by edge {change.edge}")
                    counts["unbans_applied" if lifted else "unbans_not_held"] += 1
                    continue
                covering = next((w for w in whitelist if change.target.version == w.version
                                 and change.target.subnet_of(w)), None) if whitelist else None
                if covering is not None:
                    counts["refused_whitelisted"] += 1
                    self._log_refusal(change, covering)
                    continue
                bans.append(BanRecord(change.target, change.reason, change.failures,
                                      change.banned_at, change.expires_at,
                                      fleet_origin(change.edge), _interned(change.failure_class)))
            self._adopt(bans, counts)
        return counts

    def _adopt(self, bans: list, counts: Counter) -> None:
        if bans:
            applied, refused = self.guard.adopt(bans)
            counts["applied"] += applied
            if refused:
                counts["refused_table_full"] += refused
            if len(bans) > applied + refused:
                counts["already_held"] += len(bans) - applied - refused
            bans.clear()

    def reconcile(self, active: set, unbans: list) -> int:
        """Lifts the fleet's bans held here that the fleet no longer has, and this edge's own
        bans that another edge lifted after they were made."""
        lifted_at = {}
        for unban in unbans:
            lifted_at[unban.target] = max(unban.at, lifted_at.get(unban.target, 0.0))
        with self.lock:
            gone = [(target, "no longer in the fleet")
                    for target, record in self.guard.state.bans.items()
                    if is_fleet_origin(record.origin) and target not in active]
            gone += [(target, "lifted by the fleet while this edge was away")
                     for target, record in self.guard.state.bans.items()
                     if not is_fleet_origin(record.origin) and target not in active and
                     lifted_at.get(target, 0.0) > record.banned_at]
            for target, why in gone:
                self.guard.unban(target, why)
        return len(gone)

    def count_reached(self, source, members: list) -> None:
        """The fleet saw maxretry failures of ``source`` within findtime, this edge's the last."""
        failures, edges = [], set()
        for member in members:
            parsed = parse_member(member)
            if parsed is not None:
                at, edge, kind = parsed
                failures.append((at, kind))
                edges.add(edge)
        with self.lock:
            whitelist = self.guard.settings.whitelist
            if not failures or any(source.version == w.version and source.subnet_of(w)
                                   for w in whitelist):
                return
            self.guard.fleet_counted(source, failures, sorted(edges))

    def own_bans(self) -> list[FleetBan]:
        with self.lock:
            now = self.guard.wall()
            return [self.to_message(record) for record in self.guard.state.bans.values()
                    if not is_fleet_origin(record.origin) and not record.expired(now)]

    def _log_refusal(self, ban: FleetBan, covering) -> None:
        self._refusals_logged += 1
        if self._refusals_logged <= REFUSALS_LOGGED:
            log.warning("fleet: refused the ban of %s from edge %s: whitelisted here (%s)%s",
                        ban.target, ban.edge, covering,
                        "; further refusals are only counted"
                        if self._refusals_logged == REFUSALS_LOGGED else "")


def ban_message(record: BanRecord, edge: str) -> FleetBan:
    return FleetBan(record.target, record.expires_at, one_line(record.reason, 300),
                    record.failures, record.failure_class, edge, record.banned_at)


def _client(settings):
    import redis
    return redis.Redis.from_url(settings.fleet_redis, socket_timeout=5, socket_connect_timeout=3,
                                health_check_interval=30)


def tell_fleet(settings, bans=(), unbans=()) -> str | None:
    """Publishes hand bans (BanRecord) and unbans (networks) made while no guard runs, so that
    they reach the other edges now (and an unbanned target does not come back from the fleet
    when the guard starts). Returns a warning when the fleet could not be told."""
    if not settings.fleet_redis or not (bans or unbans):
        return None
    import redis

    from fastban.fleet.store import FleetStore

    edge, now = edge_name(settings), time.time()
    changes = [ban_message(record, edge) for record in bans] + \
        [FleetUnban(target, edge, now) for target in unbans]
    try:
        FleetStore(_client(settings), settings.fleet_name).publish(changes)
    except (redis.RedisError, OSError) as error:
        if unbans:
            return (f"the fleet was not told ({error}): the other edges keep the ban, and the "
                    "guard takes it back from the fleet when it starts; unban again when Redis "
                    "is back")
        return (f"the fleet was not told ({error}): the guard publishes the ban when it "
                "starts")
    return None


def start_fleet(settings, guard, lock):
    """The fleet link of this guard, started (None when fleet_redis is not set)."""
    if not settings.fleet_redis:
        return None
    import redis

    from fastban.fleet.link import FleetLink
    from fastban.fleet.store import FleetStore

    edge = FleetEdge(guard, lock, edge_name(settings))
    link = FleetLink(FleetStore(_client(settings), settings.fleet_name), edge.edge, edge,
                     settings.fleet_min_prefix, errors=(redis.RedisError, OSError))
    edge.connect(link)
    link.start()
    log.info("fleet %s as edge %s", settings.fleet_name, edge.edge)
    return link
