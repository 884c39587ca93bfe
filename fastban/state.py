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
import os
import time
from dataclasses import dataclass, field

import msgpack

from fastban.ban_record import BanRecord, StateError, network_fields, network_from
from fastban.ban_store import BanStore, NetworkDict

FORMAT_VERSION = 1


@dataclass
class State:
    bans: BanStore = field(default_factory=BanStore)   # network -> BanRecord
    ban_counts: NetworkDict = field(default_factory=NetworkDict)   # network -> times banned
    trusted: dict = field(default_factory=dict)       # network -> trusted until (wall clock)
    # Unbanned while no guard ran: if the kernel map still holds one (the command could not
    # reach it), the next start lifts it there instead of adopting it.
    lifted: set = field(default_factory=set)
    journal_length: int = field(default=0, compare=False)   # changes in the journal file

    def __post_init__(self):
        if not isinstance(self.bans, BanStore):
            self.bans = BanStore(self.bans)
        if not isinstance(self.ban_counts, NetworkDict):
            self.ban_counts = NetworkDict(self.ban_counts)

    def to_wire(self) -> dict:
        now = time.time()
        return {
            "version": FORMAT_VERSION,
            "saved_at": now,
            "bans": list(self.bans.rows()),
            "ban_counts": [list(row) for row in self.ban_counts.rows()],
            "trusted": [[*network_fields(target), until]
                        for target, until in self.trusted.items() if until > now],
            "lifted": [list(network_fields(target)) for target in self.lifted],
        }

    @classmethod
    def from_wire(cls, data: dict, now: float) -> State:
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise StateError(f"not a fastban state file of version {FORMAT_VERSION}")
        state = cls()
        for row in data["bans"]:
            state.bans.add_row(row, now)
        for packed, prefixlen, count in data["ban_counts"]:
            state.ban_counts.add_row(packed, prefixlen, int(count))
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
