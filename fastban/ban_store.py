"""The active bans, held compactly: a million of them in about 150 bytes each.

A ban is a dict entry from an int (the network: address and prefix length) to a 28-byte row
(banned_at and expires_at as doubles, exactly as given; the failures; the reason, and the
origin and failure class, as indexes into tables of the distinct strings). `BanStore` is a mapping of
networks to `BanRecord`s: the records are made when read, and a record read and changed is not
changed in the store (store it again).

The store also knows when its bans lapse: `pop_expired` takes out the bans whose end has
passed, earliest second first. Each ban with an end is filed under its whole second, and the
seconds are kept in a heap.
"""

from __future__ import annotations

import heapq
import ipaddress
import struct
from collections.abc import MutableMapping

from fastban.ban_record import BanRecord, StateError
from fastban.decisions import ORIGIN_SIP

# banned_at, expires_at, failures, reason, origin, class: 28 bytes, so that the bytes object
# fits in 64 (the allocator's next size is 80)
_ROW = struct.Struct("<ddIIHH")
_EXPIRES = struct.Struct("<8xd")
_BANNED = struct.Struct("<d")
_MAX_FAILURES = 0xFFFF_FFFF
_V6 = 1 << 136                       # above every IPv4 and IPv6 key: marks an IPv6 network


def network_key(network) -> int:
    """The int that stands for a network in the store."""
    key = int(network.network_address) << 8 | network.prefixlen
    return key | _V6 if network.version == 6 else key


def key_network(key: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if key & _V6:
        return ipaddress.IPv6Network(((key ^ _V6) >> 8, key & 0xFF))
    return ipaddress.IPv4Network((key >> 8, key & 0xFF))


def fields_key(packed, prefixlen) -> int:
    """The key of a network saved as (packed address, prefix length), checked as
    ban_record.network_from checks it."""
    if not isinstance(packed, bytes) or len(packed) not in (4, 16):
        raise StateError(f"a saved address is {packed!r}, not 4 or 16 bytes")
    bits, prefixlen = len(packed) * 8, int(prefixlen)
    if not 0 <= prefixlen <= bits:
        raise ValueError(f"{prefixlen!r} is not a valid prefix length")
    address = int.from_bytes(packed, "big")
    if address & ((1 << (bits - prefixlen)) - 1):
        raise ValueError(f"{packed!r}/{prefixlen} has host bits set")
    key = address << 8 | prefixlen
    return key | _V6 if bits == 128 else key


def key_fields(key: int) -> tuple[bytes, int]:
    """The network of a key as the state file saves it: (packed address, prefix length)."""
    if key & _V6:
        return ((key ^ _V6) >> 8).to_bytes(16, "big"), key & 0xFF
    return (key >> 8).to_bytes(4, "big"), key & 0xFF


class NetworkDict(MutableMapping):
    """A dict of networks to values that holds each network as an int (network_key), in the
    order the networks were added."""

    def __init__(self, items=None):
        self._values: dict = {}
        if items:
            self.update(items)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self):
        for key in self._values:
            yield key_network(key)

    def __contains__(self, network) -> bool:
        return _key_of(network) in self._values

    def __getitem__(self, network):
        return self._values[_key_of(network)]

    def get(self, network, default=None):
        return self._values.get(_key_of(network), default)

    def __setitem__(self, network, value) -> None:
        self._values[network_key(network)] = value

    def add_row(self, packed, prefixlen, value) -> None:
        """A row as rows() gives it."""
        self._values[fields_key(packed, prefixlen)] = value

    def __delitem__(self, network) -> None:
        del self._values[_key_of(network)]

    def pop(self, network, *default):
        return self._values.pop(_key_of(network), *default)

    def items(self):
        for key, value in self._values.items():
            yield key_network(key), value

    def rows(self):
        """(packed address, prefix length, value) of each, in order: the state file's rows."""
        for key, value in self._values.items():
            yield (*key_fields(key), value)


class _Strings:
    """Distinct strings by index, each counted while rows use it, forgotten when none does."""

    def __init__(self):
        self.values: list = []
        self.index: dict = {}
        self.uses: list = []
        self.free: list = []

    def take(self, value: str) -> int:
        at = self.index.get(value)
        if at is None:
            if self.free:
                at = self.free.pop()
                self.values[at], self.uses[at] = value, 0
            else:
                at = len(self.values)
                self.values.append(value)
                self.uses.append(0)
            self.index[value] = at
        self.uses[at] += 1
        return at

    def drop(self, at: int) -> None:
        self.uses[at] -= 1
        if not self.uses[at]:
            del self.index[self.values[at]]
            self.values[at] = None
            self.free.append(at)

    def copy(self) -> _Strings:
        copied = _Strings()
        copied.values, copied.index = list(self.values), dict(self.index)
        copied.uses, copied.free = list(self.uses), list(self.free)
        return copied


class BanStore(MutableMapping):
    def __init__(self, records=None):
        self._rows: dict = {}            # network_key -> _ROW
        self._reasons, self._labels = _Strings(), _Strings()    # labels: origins and classes
        self._seconds: list = []         # heap of the whole seconds that have bans ending in them
        self._ending: dict = {}          # second -> the key, or keys, of the bans ending then
                                         # (some stale: lifted, or banned again since)
        if records:
            self.update(records)

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self):
        for key in self._rows:
            yield key_network(key)

    def __contains__(self, network) -> bool:
        return _key_of(network) in self._rows

    def __getitem__(self, network) -> BanRecord:
        row = self._rows.get(_key_of(network))
        if row is None:
            raise KeyError(network)
        return self._record(network, row)

    def get(self, network, default=None):
        row = self._rows.get(_key_of(network))
        return default if row is None else self._record(network, row)

    def __setitem__(self, network, record: BanRecord) -> None:
        self._put(network_key(network), record.reason, record.failures, record.banned_at,
                  record.expires_at, record.origin, record.failure_class)

    def add_row(self, row: list, now: float) -> None:
        """A row of the state file (BanRecord.to_row, or one of six fields from before bans
        had an origin), unless it has expired by `now`."""
        packed, prefixlen, reason, failures, banned_at, expires_at, *rest = row
        origin, failure_class = rest if rest else (ORIGIN_SIP, "")
        key, expires_at = fields_key(packed, prefixlen), float(expires_at)
        if expires_at == 0 or now < expires_at:
            self._put(key, str(reason), int(failures), float(banned_at), expires_at,
                      str(origin), str(failure_class))

    def _put(self, key: int, reason: str, failures: int, banned_at: float, expires_at: float,
             origin: str, failure_class: str) -> None:
        labels = self._labels
        row = _ROW.pack(banned_at, expires_at, min(failures, _MAX_FAILURES),
                        self._reasons.take(reason), labels.take(origin),
                        labels.take(failure_class))
        old = self._rows.get(key)
        self._rows[key] = row
        if old is not None:
            self._release(old)
        if expires_at:
            second = int(expires_at)
            keys = self._ending.get(second)
            if keys is None:
                self._ending[second] = key       # a list only for a second with several
                heapq.heappush(self._seconds, second)
            elif type(keys) is list:
                keys.append(key)
            else:
                self._ending[second] = [keys, key]

    def __delitem__(self, network) -> None:
        self._release(self._rows.pop(_key_of(network)))

    def values(self):
        for key, row in self._rows.items():
            yield self._record(key_network(key), row)

    def items(self):
        for key, row in self._rows.items():
            network = key_network(key)
            yield network, self._record(network, row)

    def copy(self) -> BanStore:
        """The bans as they are now (without their schedule), for reading while this one changes."""
        copied = BanStore()
        copied._rows = dict(self._rows)
        copied._reasons, copied._labels = self._reasons.copy(), self._labels.copy()
        return copied

    def distinct_strings(self) -> int:
        """How many distinct reasons, origins and classes the bans use."""
        return len(self._reasons.index) + len(self._labels.index)

    def rows(self):
        """The bans as the state file saves them (BanRecord.to_row)."""
        reasons, labels = self._reasons.values, self._labels.values
        for key, row in self._rows.items():
            banned_at, expires_at, failures, reason, origin, failure_class = _ROW.unpack(row)
            yield [*key_fields(key), reasons[reason], failures, banned_at, expires_at,
                   labels[origin], labels[failure_class]]

    def newest(self, count: int) -> list[BanRecord]:
        """The `count` most recently made bans, newest first."""
        recent = heapq.nlargest(count, self._rows.items(), key=_banned_at)
        return [self._record(key_network(key), row) for key, row in recent]

    def pop_expired(self, now: float, limit: int) -> list[BanRecord]:
        """Takes out at most `limit` bans whose end is `now` or before, earliest second first."""
        lifted, seconds, rows = [], self._seconds, self._rows
        while seconds and seconds[0] <= now and len(lifted) < limit:
            second = seconds[0]
            keys, later = self._ending[second], []
            if type(keys) is not list:
                keys = self._ending[second] = [keys]
            while keys and len(lifted) < limit:
                key = keys.pop()
                row = rows.get(key)
                if row is None:
                    continue                      # lifted by hand
                expires_at = _EXPIRES.unpack_from(row)[0]
                if not expires_at or int(expires_at) != second:
                    continue                      # banned again, with another end
                if expires_at > now:
                    later.append(key)
                    continue
                del rows[key]
                lifted.append(self._record(key_network(key), row))
                self._release(row)
            keys += later
            if keys:
                break                             # the limit, or bans later in this second
            heapq.heappop(seconds)
            del self._ending[second]
        return lifted

    def _record(self, network, row: bytes) -> BanRecord:
        banned_at, expires_at, failures, reason, origin, failure_class = _ROW.unpack(row)
        labels = self._labels.values
        return BanRecord(network, self._reasons.values[reason], failures, banned_at, expires_at,
                         labels[origin], labels[failure_class])

    def _release(self, row: bytes) -> None:
        _, _, _, reason, origin, failure_class = _ROW.unpack(row)
        self._reasons.drop(reason)
        self._labels.drop(origin)
        self._labels.drop(failure_class)


def _key_of(network) -> int | None:
    try:
        return network_key(network)
    except AttributeError:
        return None                               # not a network: in no store


def _banned_at(item) -> float:
    return _BANNED.unpack_from(item[1])[0]
