"""The guard's saved state: active bans, each source's ban history and the sources trusted
after a login, in one msgpack file, plus a journal of the changes made since it was written.

The snapshot is written atomically (a temporary file in the same folder, fsync, rename), so a
crash leaves the old file or the new one, never half of one; writing it empties the journal.
Between snapshots, changes are appended to `<name>.journal` (fsync'd), so a save costs what
changed, not the whole state. Replaying a change twice gives the same state, so a crash between
the snapshot's rename and the journal's removal loses nothing.

A snapshot that cannot be read back is reported, moved aside as `<name>.corrupt-<unix time>` and
replaced by an empty state: the service starts anyway, and the pinned kernel maps still hold the
bans that were enforced. A journal whose last change was cut short by a crash keeps the changes
before it; a journal that cannot be read is moved aside the same way. `load(..., repair=False)`
(the commands run while no guard does) changes no file: it reports what it could not read.
"""

from __future__ import annotations

import gc
import ipaddress
import os
import sys
import time
from dataclasses import dataclass, field

import msgpack

from fastban.decisions import ORIGIN_SIP

FORMAT_VERSION = 1


class StateError(Exception):
    pass


@dataclass(slots=True)
class BanRecord:
    """One active ban as the operator sees it; times are wall-clock seconds, 0 = permanent."""
    target: ipaddress.IPv4Network | ipaddress.IPv6Network
    reason: str
    failures: int
    banned_at: float
    expires_at: float
    origin: str = ORIGIN_SIP        # decisions.ORIGINS
    failure_class: str = ""         # "proven", "unproven" or "mixed"; "" for a hand ban

    def remaining(self, now: float) -> float | None:
        """Seconds left, or None for a permanent ban."""
        return None if self.expires_at == 0 else max(0.0, self.expires_at - now)

    def expired(self, now: float) -> bool:
        return self.expires_at != 0 and now >= self.expires_at

    def to_wire(self) -> dict:
        """The record for the control protocol and the CLI."""
        return {"target": str(self.target), "reason": self.reason, "failures": self.failures,
                "banned_at": self.banned_at, "expires_at": self.expires_at,
                "origin": self.origin, "failure_class": self.failure_class}

    def to_row(self) -> list:
        """The record in the state file: the network as packed address and prefix length,
        then the other fields in order."""
        return [*network_fields(self.target), self.reason, self.failures, self.banned_at,
                self.expires_at, self.origin, self.failure_class]

    @classmethod
    def from_row(cls, row: list) -> BanRecord:
        """A saved row; one of six fields (saved before bans had an origin) is a ban of the
        rules."""
        packed, prefixlen, reason, failures, banned_at, expires_at, *rest = row
        origin, failure_class = rest if rest else (ORIGIN_SIP, "")
        return cls(network_from(packed, prefixlen), str(reason), int(failures),
                   float(banned_at), float(expires_at), _interned(origin),
                   _interned(failure_class))


_NETWORK_TYPES = {4: ipaddress.IPv4Network, 16: ipaddress.IPv6Network}


def _interned(value) -> str:
    """One string object per origin and class however many bans are loaded."""
    return sys.intern(str(value))


def network_fields(target) -> tuple[bytes, int]:
    """A network as it is saved: (packed address, prefix length)."""
    return target.network_address.packed, target.prefixlen


def network_from(packed, prefixlen) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The network saved as network_fields() gave it."""
    kind = _NETWORK_TYPES.get(len(packed)) if isinstance(packed, bytes) else None
    if kind is None:
        raise StateError(f"a saved address is {packed!r}, not 4 or 16 bytes")
    return kind((packed, int(prefixlen)))


@dataclass
class State:
    bans: dict = field(default_factory=dict)          # network -> BanRecord
    ban_counts: dict = field(default_factory=dict)    # network -> times banned (escalation)
    trusted: dict = field(default_factory=dict)       # network -> trusted until (wall clock)
    # Unbanned while no guard ran: if the kernel map still holds one (the command could not
    # reach it), the next start lifts it there instead of adopting it.
    lifted: set = field(default_factory=set)
    journal_length: int = field(default=0, compare=False)   # changes in the journal file

    def to_wire(self) -> dict:
        now = time.time()
        return {
            "version": FORMAT_VERSION,
            "saved_at": now,
            "bans": [record.to_row() for record in self.bans.values()],
            "ban_counts": [[*network_fields(target), count]
                           for target, count in self.ban_counts.items()],
            "trusted": [[*network_fields(target), until]
                        for target, until in self.trusted.items() if until > now],
            "lifted": [list(network_fields(target)) for target in self.lifted],
        }

    @classmethod
    def from_wire(cls, data: dict, now: float) -> State:
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise StateError(f"not a fastban state file of version {FORMAT_VERSION}")
        state = cls()
        networks = {}                 # (packed, prefixlen) -> the network, made once for both
        for row in data["bans"]:
            record = BanRecord.from_row(row)
            networks[row[0], row[1]] = record.target
            if not record.expired(now):
                state.bans[record.target] = record
        for packed, prefixlen, count in data["ban_counts"]:
            network = networks.get((packed, prefixlen))
            if network is None:
                network = network_from(packed, prefixlen)
            state.ban_counts[network] = int(count)
        for packed, prefixlen, until in data.get("trusted", ()):
            if float(until) > now:
                state.trusted[network_from(packed, prefixlen)] = float(until)
        for packed, prefixlen in data.get("lifted", ()):
            state.lifted.add(network_from(packed, prefixlen))
        return state


def save(state: State, path: str) -> None:
    """Writes the whole state as the snapshot and empties the journal."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb") as out:
        out.write(msgpack.packb(state.to_wire(), use_bin_type=True))
        out.flush()
        os.fsync(out.fileno())
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    try:
        os.unlink(path + JOURNAL_SUFFIX)
    except FileNotFoundError:
        pass


# In the journal file a change is ["ban", BanRecord row, times banned],
# ["unban", packed address, prefixlen], ["lift", packed address, prefixlen] (an unban made
# while no guard ran) or ["trust", packed address, prefixlen, until]; in memory, until written,
# the tuples below.
JOURNAL_SUFFIX = ".journal"


def ban_change(record: BanRecord, times_banned: int) -> tuple:
    return ("ban", record, times_banned)


def unban_change(target) -> tuple:
    return ("unban", target)


def lift_change(target) -> tuple:
    return ("lift", target)


def trust_change(target, until: float) -> tuple:
    return ("trust", target, until)


def _journal_entry(change: tuple) -> list:
    if change[0] == "ban":
        return ["ban", change[1].to_row(), change[2]]
    if change[0] == "trust":
        return ["trust", *network_fields(change[1]), change[2]]
    return [change[0], *network_fields(change[1])]


def append(changes: list, path: str) -> None:
    """Appends changes (ban_change, unban_change) to the journal of the state file at `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd = os.open(path + JOURNAL_SUFFIX, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    pack = msgpack.Packer(use_bin_type=True).pack
    with open(fd, "ab") as out:
        out.write(b"".join(pack(_journal_entry(change)) for change in changes))
        out.flush()
        os.fsync(out.fileno())


def _apply(state: State, change, now: float) -> None:
    if not isinstance(change, list) or not change:
        raise StateError("a journal entry is not a change")
    if change[0] == "ban" and len(change) == 3:
        record = BanRecord.from_row(change[1])
        state.ban_counts.pop(record.target, None)          # most recently banned last
        state.ban_counts[record.target] = int(change[2])
        state.lifted.discard(record.target)
        if record.expired(now):
            state.bans.pop(record.target, None)
        else:
            state.bans[record.target] = record
    elif change[0] in ("unban", "lift") and len(change) == 3:
        target = network_from(change[1], change[2])
        state.bans.pop(target, None)
        if change[0] == "lift":
            state.lifted.add(target)
    elif change[0] == "trust" and len(change) == 4:
        target, until = network_from(change[1], change[2]), float(change[3])
        if until > now:
            state.trusted[target] = until
        else:
            state.trusted.pop(target, None)
    else:
        raise StateError(f"unknown journal change {change[0]!r}")


def _replay(state: State, path: str, now: float, repair: bool) -> tuple[int, str | None]:
    """Applies the journal to `state`; returns the changes applied and a warning, if any."""
    journal = path + JOURNAL_SUFFIX
    raw = _read(journal)
    if raw is None:
        return 0, None
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(raw) or 1)
    unpacker.feed(raw)
    applied = whole = 0             # whole: where the last complete change ends
    try:
        for change in unpacker:
            _apply(state, change, now)
            applied, whole = applied + 1, unpacker.tell()
    except (ValueError, TypeError, KeyError, StateError, msgpack.UnpackException) as error:
        if not repair:
            return applied, (f"state journal {journal} is unreadable after {applied} changes "
                             f"({error})")
        aside = f"{journal}.corrupt-{int(now)}"
        os.replace(journal, aside)
        return applied, (f"state journal {journal} is unreadable after {applied} changes "
                         f"({error}); moved to {aside}")
    if whole < len(raw):
        if not repair:
            return applied, (f"state journal {journal}: the last change was cut short; the "
                             f"{applied} changes before it are read")
        os.truncate(journal, whole)                 # so that new changes follow a whole one
        return applied, (f"state journal {journal}: the last change was cut short (a crash while "
                         f"writing it); the {applied} changes before it are kept")
    return applied, None


def load(path: str, now: float | None = None, repair: bool = True) -> tuple[State, str | None]:
    """Returns the saved state with its journal applied (expired bans dropped; journal_length
    set) and a warning when something was set aside or cut short. With repair=False nothing
    is moved or cut: the warning says what could not be read."""
    now = time.time() if now is None else now
    collecting = gc.isenabled()
    gc.disable()              # millions of new objects, none in a cycle: a pass would only slow
    try:
        loaded, warning = _load_snapshot(path, now, repair)
        loaded.journal_length, journal_warning = _replay(loaded, path, now, repair)
    finally:
        if collecting:
            gc.enable()
    return loaded, "; ".join(filter(None, (warning, journal_warning))) or None


def _read(path: str) -> bytes | None:
    """The file's bytes, None when it does not exist; StateError when it cannot be read."""
    try:
        with open(path, "rb") as source:
            return source.read()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise StateError(f"cannot read the state file {path}: {error.strerror}") from None


def _load_snapshot(path: str, now: float, repair: bool) -> tuple[State, str | None]:
    raw = _read(path)
    if raw is None:
        return State(), None
    try:
        return State.from_wire(msgpack.unpackb(raw, raw=False, strict_map_key=False), now), None
    except (ValueError, TypeError, KeyError, StateError, msgpack.UnpackException) as error:
        if not repair:
            return State(), f"state file {path} is unreadable ({error})"
        aside = f"{path}.corrupt-{int(now)}"
        os.replace(path, aside)
        return State(), f"state file {path} is unreadable ({error}); moved to {aside}"
