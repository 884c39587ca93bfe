"""One active ban as the operator sees it, and a network as the state file saves it."""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass

from fastban.decisions import ORIGIN_SIP


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
