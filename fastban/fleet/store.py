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

# Bans (KEYS[2..], ARGV[2i-2] the message and ARGV[2i-1] its end of key KEYS[i]), each written
# and added to the stream KEYS[1] unless a ban of the same target lasts longer already (or is
# permanent). One call for many bans: a call per ban cost Redis more than the bans themselves.
_PUBLISH_BANS = """
local written = 0
for i = 2, #KEYS do
  local message, ends = ARGV[2 * i - 2], tonumber(ARGV[2 * i - 1])
  local left = redis.call('PEXPIRETIME', KEYS[i])
  if left ~= -1 and not (left >= 0 and ends ~= 0 and ends <= left) then
    if ends == 0 then redis.call('SET', KEYS[i], message)
    else redis.call('SET', KEYS[i], message, 'PXAT', ends) end
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', message)
    written = written + 1
  end
end
return written
"""
BANS_PER_CALL = 500

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
        # The stream read as Redis answers it, without redis-py's dict per entry (a third of
        # the follower's time at 50,000 bans/s): a client of its own on the same pool.
        self._stream = client.__class__(connection_pool=client.connection_pool)
        for command in ("XREAD", "XRANGE"):
            self._stream.set_response_callback(command, _as_sent)
        self._publish_bans = client.register_script(_PUBLISH_BANS)
        self._count_failure = client.register_script(_COUNT_FAILURE)

    def ban_key(self, target) -> str:
        return f"{self.prefix}ban:{target}"

    def publish(self, changes: list) -> list:
        """Bans, unbans and failures in one round trip, in order. Returns, for each failure that
        brought its source to maxretry on the fleet, (source, the failures' members)."""
        pipe = self.client.pipeline(transaction=False)
        asked = []                  # (the change, or None for an answer to skip)
        bans: list = []
        for change in changes:
            if isinstance(change, FleetBan):
                bans.append(change)
                if len(bans) == BANS_PER_CALL:
                    self._ask_bans(pipe, bans, asked)
                continue
            if bans:
                self._ask_bans(pipe, bans, asked)
            if isinstance(change, FleetUnban):
                pipe.delete(self.ban_key(change.target))
                pipe.xadd(self.events, {"m": encode_unban(change)}, maxlen=STREAM_LENGTH,
                          approximate=True)
                asked += [None, None]
            else:
                self._count_failure(keys=[f"{self.prefix}fail:{change.source}"],
                                    args=[change.at, failure_member(change, next(_sequence)),
                                          change.findtime, change.maxretry], client=pipe)
                asked.append(change)
        if bans:
            self._ask_bans(pipe, bans, asked)
        return [(change.source, answer) for change, answer in zip(asked, pipe.execute())
                if isinstance(change, FleetFailure) and isinstance(answer, list)]

    def _ask_bans(self, pipe, bans: list, asked: list) -> None:
        """One call of _PUBLISH_BANS for ``bans`` (emptied) on ``pipe``."""
        keys, args = [self.events], [STREAM_LENGTH]
        for ban in bans:
            keys.append(self.ban_key(ban.target))
            args += [encode_ban(ban), 0 if ban.expires_at == 0 else int(ban.expires_at * 1000)]
        self._publish_bans(keys=keys, args=args, client=pipe)
        bans.clear()
        asked.append(None)

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
            entries = self._stream.xrange(self.events, min=start, max=end, count=count)
            if not entries:
                return
            yield [_message(fields) for _, fields in entries]
            if len(entries) < count:
                return
            start = "(" + entries[-1][0].decode()

    def follow(self, after: str, block_ms: int, count: int = 10_000) -> tuple[str, list]:
        """The events after ``after`` (waiting up to block_ms for one): (last id, raw
        messages)."""
        answer = self._stream.xread({self.events: after}, count=count, block=block_ms)
        if not answer:
            return after, []
        entries = next(iter(answer.values())) if isinstance(answer, dict) else answer[0][1]
        return entries[-1][0].decode(), [_message(fields) for _, fields in entries]


_sequence = itertools.count()


def _as_sent(response, **options):
    return response


def _message(fields):
    """The value of field ``m`` of a stream entry's [field, value, ...] (None without one:
    anyone may add an entry; the decoder refuses it)."""
    if isinstance(fields, dict):
        return fields.get(b"m")
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == b"m":
            return fields[i + 1]
    return None
