"""The guard's saved state: active bans and each source's ban history, in one msgpack file.

Written atomically (a temporary file in the same folder, fsync, rename), so a crash leaves the
old file or the new one, never half of one. A file that cannot be read back is reported, moved
aside as `<name>.corrupt-<unix time>` and replaced by an empty state: the service starts anyway,
and the pinned kernel maps still hold the bans that were enforced.
"""

from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import dataclass, field

import msgpack

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

    def remaining(self, now: float) -> float | None:
        """Seconds left, or None for a permanent ban."""
        return None if self.expires_at == 0 else max(0.0, self.expires_at - now)

    def expired(self, now: float) -> bool:
        return self.expires_at != 0 and now >= self.expires_at

    def to_wire(self) -> dict:
        """The record for the control protocol and the CLI."""
        return {"target": str(self.target), "reason": self.reason, "failures": self.failures,
                "banned_at": self.banned_at, "expires_at": self.expires_at}

    def to_row(self) -> list:
        """The record in the state file: the network as packed address and prefix length,
        then the other fields in order."""
        return [self.target.network_address.packed, self.target.prefixlen, self.reason,
                self.failures, self.banned_at, self.expires_at]

    @classmethod
    def from_row(cls, row: list) -> BanRecord:
        packed, prefixlen, reason, failures, banned_at, expires_at = row
        if not isinstance(packed, bytes):
            raise StateError(f"a ban's address is {type(packed).__name__}, not bytes")
        return cls(ipaddress.ip_network((packed, int(prefixlen))), str(reason), int(failures),
                   float(banned_at), float(expires_at))


@dataclass
class State:
    bans: dict = field(default_factory=dict)          # network -> BanRecord
    ban_counts: dict = field(default_factory=dict)    # network -> times banned (escalation)

    def to_wire(self) -> dict:
        return {
            "version": FORMAT_VERSION,
            "saved_at": time.time(),
            "bans": [record.to_row() for record in self.bans.values()],
            "ban_counts": [[target.network_address.packed, target.prefixlen, count]
                           for target, count in self.ban_counts.items()],
        }

    @classmethod
    def from_wire(cls, data: dict, now: float) -> State:
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise StateError(f"not a fastban state file of version {FORMAT_VERSION}")
        state = cls()
        for row in data["bans"]:
            record = BanRecord.from_row(row)
            if not record.expired(now):
                state.bans[record.target] = record
        for packed, prefixlen, count in data["ban_counts"]:
            state.ban_counts[ipaddress.ip_network((packed, int(prefixlen)))] = int(count)
        return state


def save(state: State, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb") as out:
        out.write(msgpack.packb(state.to_wire(), use_bin_type=True))
        out.flush()
        os.fsync(out.fileno())
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def load(path: str, now: float | None = None) -> tuple[State, str | None]:
    """Returns the saved state (expired bans dropped) and a warning when the file was set aside."""
    now = time.time() if now is None else now
    try:
        with open(path, "rb") as source:
            raw = source.read()
    except FileNotFoundError:
        return State(), None
    try:
        return State.from_wire(msgpack.unpackb(raw, raw=False, strict_map_key=False), now), None
    except (ValueError, TypeError, KeyError, StateError, msgpack.UnpackException) as error:
        aside = f"{path}.corrupt-{int(now)}"
        os.replace(path, aside)
        return State(), f"state file {path} is unreadable ({error}); moved to {aside}"
