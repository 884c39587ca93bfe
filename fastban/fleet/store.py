"""The fleet's bans as Redis holds them (one fleet per name; several may share a Redis).

    fastban:<fleet>:ban:<target>     the active ban, an encoded FleetBan; its key expires
                                     (PXAT) when the ban does, a permanent ban has no TTL
    fastban:<fleet>:events           a stream of every ban and unban, for the edges to follow
    fastban:<fleet>:fail:<source>    (fleet counting) a sorted set of the failures seen by
                                     all the edges within findtime, scored by time

Redis holds the truth: an edge that starts or comes back reads every ban key (what is active
now) after noting where the stream ends, then follows the stream from there, so nothing
between the two is missed. An expired ban is gone from Redis by itself.
"""

from __future__ import annotations

import itertools

from fastban.fleet.messages import (FleetBan, FleetFailure, FleetUnban, encode_ban, encode_unban,
                                    failure_member)

STREAM_LENGTH = 200_000       # events kept (about); an edge away longer reads the ban keys
SCAN_BATCH = 5_000

# A ban is written unless a ban of the same target lasts longer already (or is permanent).
_PUBLISH_BAN = """
local left = redis.call('PEXPIRETIME', KEYS[1])
local ends = tonumber(ARGV[2])
if left == -1 then return 0 end
if left >= 0 and ends ~= 0 and ends <= left then return 0 end
if ends == 0 then redis.call('SET', KEYS[1], ARGV[1])
else redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ends) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'm', ARGV[1])
return 1
"""

# One failure seen by an edge: how many the fleet saw from the source within findtime; at
# maxretry, the failures themselves, and the count starts again (one edge bans, once).
_COUNT_FAILURE = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1] - ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.floor(ARGV[3] * 1000))
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[4]) then
  local failures = redis.call('ZRANGE', KEYS[1], 0, 999)
  redis.call('DEL', KEYS[1])
  return failures
end
return n
"""


class FleetStore:
    """The Redis keys of one fleet, through a redis-py client (thread-safe: its pool)."""

    def __init__(self, client, fleet: str):
        self.client = client
        self.prefix = f"fastban:{fleet}:"
        self.events = self.prefix + "events"
        self._publish_ban = client.register_script(_PUBLISH_BAN)
        self._count_failure = client.register_script(_COUNT_FAILURE)

    def ban_key(self, target) -> str:
        return f"{self.prefix}ban:{target}"

    def publish(self, changes: list) -> list:
        """Bans, unbans and failures in one round trip. Returns, for each failure that brought
        its source to maxretry on the fleet, (source, the failures' members)."""
        pipe = self.client.pipeline(transaction=False)
        for change in changes:
            if isinstance(change, FleetBan):
                until = 0 if change.expires_at == 0 else int(change.expires_at * 1000)
                self._publish_ban(keys=[self.ban_key(change.target), self.events],
                                  args=[encode_ban(change), until, STREAM_LENGTH], client=pipe)
            elif isinstance(change, FleetUnban):
                pipe.delete(self.ban_key(change.target))
                pipe.xadd(self.events, {"m": encode_unban(change)}, maxlen=STREAM_LENGTH,
                          approximate=True)
            else:
                self._count_failure(keys=[f"{self.prefix}fail:{change.source}"],
                                    args=[change.at, failure_member(change, next(_sequence)),
                                          change.findtime, change.maxretry], client=pipe)
        return [(change.source, answer)
                for change, answer in zip(changes, _answers(pipe.execute(), changes))
                if isinstance(change, FleetFailure) and isinstance(answer, list)]

    def stream_end(self) -> str:
        """The id of the newest event ("0-0" when there is none)."""
        newest = self.client.xrevrange(self.events, count=1)
        return newest[0][0].decode() if newest else "0-0"

    def holds(self, event_id: str) -> bool:
        """Whether the stream still holds this event (it may have been trimmed, or Redis
        emptied)."""
        return bool(self.client.xrange(self.events, min=event_id, max=event_id, count=1))

    def active(self):
        """(key, raw message) of every ban key, in batches: the fleet's active bans."""
        pattern = self.prefix + "ban:*"
        cursor = 0
        while True:
            cursor, keys = self.client.scan(cursor, match=pattern, count=SCAN_BATCH)
            if keys:
                yield list(zip(keys, self.client.mget(keys)))
            if cursor == 0:
                return

    def history(self, end: str, count: int = 10_000):
        """The raw messages of the stream from its start up to ``end``, in batches."""
        start = "-"
        while end != "0-0":
            entries = self.client.xrange(self.events, min=start, max=end, count=count)
            if not entries:
                return
            yield [fields.get(b"m") for _, fields in entries]
            if len(entries) < count:
                return
            start = "(" + entries[-1][0].decode()

    def follow(self, after: str, block_ms: int, count: int = 10_000) -> tuple[str, list]:
        """The events after ``after`` (waiting up to block_ms for one): (last id, raw
        messages)."""
        answer = self.client.xread({self.events: after}, count=count, block=block_ms)
        if not answer:
            return after, []
        entries = answer[0][1]
        return entries[-1][0].decode(), [fields.get(b"m") for _, fields in entries]


_sequence = itertools.count()


def _answers(results: list, changes: list):
    """The pipeline's answers, one per change (an unban is two commands)."""
    results = iter(results)
    for change in changes:
        if isinstance(change, FleetUnban):
            next(results)
        yield next(results)
