"""An edge's link to its fleet: two threads beside the guard, so that the capture and ban path
never waits on Redis.

* The publisher takes this edge's bans, unbans and (fleet_counting) counted failures from a
  bounded queue (``offer`` never blocks; an overflow is counted, and when a ban or unban
  overflowed the edge's own active bans are all published again once it can) and writes them
  to Redis. A failure that brings its source to maxretry on the fleet is handed to the sink.
* The follower reads every ban still active when it connects, lifts the fleet bans it holds
  that Redis no longer has (unbans it missed), then follows the stream of events. Back after
  a gap, it reads on from where it was when the stream still holds that event (the gap's bans
  and unbans, in order), else it reads the active bans again. The publisher, back, publishes
  the edge's own active bans again (idempotent: a ban lasting as long is kept), so that a
  Redis that lost its data has them again.

Both hand what they read to a sink (the service), which applies it to the guard under its
lock. When Redis is gone the edge guards alone: one line is logged when the connection is lost
and one when it is back; both threads retry with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque

from fastban.fleet.messages import (OP_UNBAN, FleetBan, FleetFailure, FleetMessageError,
                                    FleetUnban, decode)

log = logging.getLogger("fastban.fleet")

QUEUE_LIMIT = 100_000         # bans and unbans waiting to be published
PUBLISH_BATCH = 2_000
FOLLOW_BLOCK_MS = 1_000
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 10.0


class FleetLink:
    def __init__(self, store, edge: str, sink, min_prefix: tuple[int, int], *,
                 errors: tuple = (OSError,), clock=time.time):
        """``store``: a FleetStore; ``sink``: apply(list) -> Counter, reconcile(active targets,
        unbans) -> int, own_bans() -> list[FleetBan], count_reached(source, members);
        ``errors``: what a lost connection raises."""
        self.store, self.edge, self.sink = store, edge, sink
        self.min_prefix, self.errors, self.clock = min_prefix, errors, clock
        self.counts: Counter = Counter()
        self.lag = {"last_ms": None, "max_ms": None}
        self._queue: deque = deque()
        self._wake = threading.Condition()
        self._republish = False
        self._stop = threading.Event()
        self._state = threading.Lock()
        self._connected: bool | None = None
        self._lost_at = 0.0
        self._threads = [threading.Thread(target=self._publisher, name="fleet-publish",
                                          daemon=True),
                         threading.Thread(target=self._follower, name="fleet-follow",
                                          daemon=True)]

    # -- the guard's side ------------------------------------------------------------------

    def offer(self, change) -> None:
        """A ban, unban or counted failure of this edge, to publish; never blocks."""
        with self._wake:
            if len(self._queue) >= QUEUE_LIMIT:
                self.counts["publish_overflow"] += 1
                if not isinstance(change, FleetFailure):
                    self._queue.clear()             # all own bans go again, once possible
                    self._republish = True
            else:
                self._queue.append(change)
            self._wake.notify()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def stats(self) -> dict:
        with self._wake:
            depth = len(self._queue)
        return {"connected": bool(self._connected), "edge": self.edge, "queue": depth,
                **dict(sorted(self.counts.items())), **{f"lag_{k}": v for k, v in
                                                        self.lag.items()}}

    # -- the threads -----------------------------------------------------------------------

    def _publisher(self) -> None:
        backoff = BACKOFF_FIRST
        batch: list = []
        while not self._stop.is_set():
            with self._wake:
                while not self._queue and not self._republish and not batch \
                        and not self._stop.is_set():
                    self._wake.wait(1.0)
                republish, self._republish = self._republish, False
                while self._queue and len(batch) < PUBLISH_BATCH:
                    batch.append(self._queue.popleft())
            try:
                if republish:
                    batch = self.sink.own_bans() + batch
                if batch:
                    reached = self.store.publish(batch)
                    self.counts["published"] += len(batch)
                    batch = []
                    for source, failures in reached:
                        self.counts["fleet_count_reached"] += 1
                        self.sink.count_reached(source, failures)
                self._connection(True)
                backoff = BACKOFF_FIRST
            except self.errors as error:
                batch = [change for change in batch     # own bans come again with the rest
                         if not (republish and isinstance(change, FleetBan))]
                with self._wake:
                    self._republish = self._republish or republish
                self._connection(False, error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _follower(self) -> None:
        backoff, after, caught_up = BACKOFF_FIRST, None, False
        while not self._stop.is_set():
            try:
                if not caught_up:
                    if after is not None and self.store.holds(after):
                        self.counts["resumed"] += 1     # the gap's events follow, in order
                    else:
                        after = self._catch_up()
                    caught_up = True
                    self._connection(True)
                after, raws = self.store.follow(after, FOLLOW_BLOCK_MS)
                self._connection(True)
                backoff = BACKOFF_FIRST
                if raws:
                    self._apply(raws, from_stream=True)
            except self.errors as error:
                caught_up = False
                self._connection(False, error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _catch_up(self) -> str:
        """Every active fleet ban; then the fleet bans held here that Redis no longer has are
        lifted, and so are this edge's own bans that another edge lifted since (the stream's
        unbans). Then the edge's own active bans are published again (Redis may have lost
        them, or never had those made while it was away). Returns where the stream ended
        before the bans were read."""
        started = time.monotonic()
        end = self.store.stream_end()
        active: set = set()
        for batch in self.store.active():
            active.update(self._apply([raw for _, raw in batch], from_stream=False,
                                      keys=[key for key, _ in batch]))
        lifted = self.sink.reconcile(active, self._unbans(end))
        self.counts["catch_ups"] += 1
        log.info("fleet: %d active bans read in %.1f s, %d lifted that the fleet no longer has",
                 len(active), time.monotonic() - started, lifted)
        with self._wake:
            self._republish = True
            self._wake.notify()
        return end

    def _unbans(self, end: str) -> list:
        """The unbans of other edges in the stream, up to ``end``."""
        now, unbans = self.clock(), []
        for raws in self.store.history(end):
            for raw in raws:
                if not isinstance(raw, bytes) or OP_UNBAN.encode() not in raw:
                    continue                # not an unban: not worth decoding here
                try:
                    change = decode(raw, now, self.min_prefix)
                except FleetMessageError:
                    continue                # counted when it was read from the stream
                if isinstance(change, FleetUnban) and change.edge != self.edge:
                    unbans.append(change)
        return unbans

    def _apply(self, raws: list, *, from_stream: bool, keys=None) -> set:
        """Checks and applies messages; returns the targets of the valid ban keys (``keys``:
        the keys they were read from)."""
        now, changes, targets = self.clock(), [], set()
        skip = len(self.store.ban_key("").encode())
        newest = oldest = None
        for i, raw in enumerate(raws):
            try:
                change = decode(raw, now, self.min_prefix,
                                None if keys is None else keys[i][skip:])
            except FleetMessageError as error:
                self.counts[f"refused_{error.why}"] += 1
                if self.counts[f"refused_{error.why}"] <= 10:       # a flood logs 10 lines
                    log.warning("fleet: refused a message: %s", error)
                continue
            if keys is not None:
                targets.add(change.target)
            if change.edge == self.edge and from_stream:
                continue                            # our own, already enforced
            changes.append(change)
            if isinstance(change, FleetBan):
                newest = change
                oldest = change.banned_at if oldest is None else min(oldest, change.banned_at)
        self.counts["received"] += len(raws)
        if changes:
            self.counts.update(self.sink.apply(changes))
        if from_stream and newest is not None:
            self._lag((now - newest.banned_at) * 1000, (now - oldest) * 1000)
        return targets

    def _lag(self, last_ms: float, worst_ms: float) -> None:
        """From the ban on its edge to its read here: of the newest ban read, and the most."""
        self.lag["last_ms"] = round(max(0.0, last_ms), 1)
        worst = round(max(0.0, worst_ms), 1)
        self.lag["max_ms"] = worst if self.lag["max_ms"] is None else max(self.lag["max_ms"],
                                                                          worst)

    def _connection(self, up: bool, error=None) -> None:
        with self._state:
            if up == self._connected:
                return
            was, self._connected = self._connected, up
        if up:
            if was is False:
                log.warning("fleet: connection to Redis is back after %.0f s",
                            time.monotonic() - self._lost_at)
            else:
                log.info("fleet: connected to Redis as edge %s", self.edge)
        else:
            self._lost_at = time.monotonic()
            self.counts["connection_losses"] += 1
            log.warning("fleet: lost the connection to Redis (%s); guarding alone until it "
                        "is back", error)
