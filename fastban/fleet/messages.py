"""What the edges of a fleet tell each other through Redis: bans and unbans, as msgpack.

Pure: encoding, and the checks of what comes back. Whatever is read from Redis is hostile
until checked: any other edge, or anyone holding the fleet's Redis credentials, can write it.
A message is refused (FleetMessageError, whose ``why`` is the counter it is counted under) when
it does not parse, is oversized, names an unknown operation, carries a text that is not one
printable line, an expiry in the past or too far ahead, or a range broader than
``fleet_min_prefix``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

import msgpack

VERSION = 1
MAX_MESSAGE = 1024                       # bytes of one encoded message
MAX_REASON = 300                         # characters of a reason
MAX_FAILURES = 1_000_000
MAX_FLEET_BAN = 366 * 86400              # seconds ahead an expiry may be (0 = permanent)
EDGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
RESERVED_EDGE_NAMES = frozenset({"count"})   # "fleet count" is the origin of a fleet-wide count
FAILURE_CLASSES = ("", "proven", "unproven", "mixed")
OP_BAN, OP_UNBAN = "ban", "unban"

# The counters a refusal is counted under (fastban stats: fleet refused_*)
WHY = ("unreadable", "oversized", "malformed", "expired", "too_far_ahead", "too_broad")


class FleetMessageError(ValueError):
    def __init__(self, why: str, detail: str):
        super().__init__(f"{why}: {detail}")
        self.why = why


@dataclass(frozen=True, slots=True)
class FleetBan:
    """A ban one edge made, for the others to enforce with the same expiry."""
    target: ipaddress.IPv4Network | ipaddress.IPv6Network
    expires_at: float            # wall clock; 0 = permanent
    reason: str
    failures: int
    failure_class: str
    edge: str                    # the edge that decided it
    banned_at: float


@dataclass(frozen=True, slots=True)
class FleetUnban:
    target: ipaddress.IPv4Network | ipaddress.IPv6Network
    edge: str
    at: float


@dataclass(frozen=True, slots=True)
class FleetFailure:
    """A failure this edge counted (fleet_counting), for the fleet's count of its source."""
    source: ipaddress.IPv4Network | ipaddress.IPv6Network
    at: float
    kind: str
    edge: str
    findtime: float
    maxretry: int


def failure_member(failure: FleetFailure, sequence: int) -> str:
    """The failure as a member of its source's sorted set (unique per edge and sequence)."""
    return f"{failure.at:.6f} {failure.edge} {sequence} {failure.kind}"


def parse_member(raw) -> tuple[float, str, str] | None:
    """(time, edge, kind) of a member another edge wrote, or None when it is not one."""
    try:
        at, edge, _, kind = raw.decode().split(" ", 3)
        at = float(at)
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    if not EDGE_NAME.fullmatch(edge) or not kind.isprintable() or len(kind) > 40 or \
            not 0 <= at < 1e11:
        return None
    return at, edge, kind


def encode_ban(ban: FleetBan) -> bytes:
    return msgpack.packb({"v": VERSION, "op": OP_BAN, "target": str(ban.target),
                          "expires_at": ban.expires_at, "reason": ban.reason,
                          "failures": ban.failures, "class": ban.failure_class,
                          "edge": ban.edge, "at": ban.banned_at})


def encode_unban(unban: FleetUnban) -> bytes:
    return msgpack.packb({"v": VERSION, "op": OP_UNBAN, "target": str(unban.target),
                          "edge": unban.edge, "at": unban.at})


def one_line(text: str, limit: int) -> str:
    """A text on one line of at most ``limit`` characters (what a reason may be)."""
    return " ".join(text.split())[:limit]


def decode(raw, now: float, min_prefix: tuple[int, int], stored_as: bytes | None = None) \
        -> FleetBan | FleetUnban:
    """A message read from Redis, checked; ``min_prefix`` is (IPv4, IPv6) fleet_min_prefix;
    ``stored_as``, for a ban key's value, the target its key names."""
    if not isinstance(raw, (bytes, bytearray)):
        raise FleetMessageError("unreadable", f"a {type(raw).__name__}, not bytes")
    if len(raw) > MAX_MESSAGE:
        raise FleetMessageError("oversized", f"{len(raw)} bytes (at most {MAX_MESSAGE})")
    try:
        fields = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError) as error:
        raise FleetMessageError("unreadable", f"not msgpack ({error.__class__.__name__})") \
            from None
    if not isinstance(fields, dict) or fields.get("v") != VERSION:
        raise FleetMessageError("malformed", "not a fleet message of version 1")
    op, text = fields.get("op"), fields.get("target")
    target = _target(text, min_prefix)
    if stored_as is not None and (op != OP_BAN or text.encode() != stored_as):
        raise FleetMessageError("malformed", f"the key of {stored_as[:64]!r} holds another "
                                "target or an unban")
    edge = fields.get("edge")
    if not isinstance(edge, str) or not EDGE_NAME.fullmatch(edge) or \
            edge in RESERVED_EDGE_NAMES:
        raise FleetMessageError("malformed", f"edge {edge!r} is not an edge name")
    at = _time(fields.get("at"), "at")
    if op == OP_UNBAN:
        return FleetUnban(target, edge, at)
    if op != OP_BAN:
        raise FleetMessageError("malformed", f"unknown operation {op!r}")
    expires_at = _time(fields.get("expires_at"), "expires_at")
    if expires_at != 0 and expires_at <= now:
        raise FleetMessageError("expired", f"expired at {expires_at:.0f}")
    if expires_at - now > MAX_FLEET_BAN:
        raise FleetMessageError("too_far_ahead", f"expires {expires_at - now:.0f} s ahead "
                                f"(at most {MAX_FLEET_BAN})")
    reason, failures = fields.get("reason"), fields.get("failures")
    if not isinstance(reason, str) or len(reason) > MAX_REASON or one_line(reason, MAX_REASON) \
            != reason or not reason.isprintable():
        raise FleetMessageError("malformed", "the reason is not one printable line of at most "
                                f"{MAX_REASON} characters")
    if isinstance(failures, bool) or not isinstance(failures, int) or \
            not 0 <= failures <= MAX_FAILURES:
        raise FleetMessageError("malformed", f"failures {failures!r}")
    failure_class = fields.get("class")
    if failure_class not in FAILURE_CLASSES:
        raise FleetMessageError("malformed", f"failure class {failure_class!r}")
    return FleetBan(target, expires_at, reason, failures, failure_class, edge, at)


def _target(text, min_prefix: tuple[int, int]):
    if not isinstance(text, str) or len(text) > 64:
        raise FleetMessageError("malformed", "no target")
    try:
        network = _ipv4_network(text) or ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise FleetMessageError("malformed", f"target {text[:64]!r} is not a network") from None
    broadest = min_prefix[0] if network.version == 4 else min_prefix[1]
    if network.prefixlen < broadest:
        raise FleetMessageError("too_broad", f"{network} is broader than /{broadest}")
    return network


def _ipv4_network(text: str):
    """An IPv4 network written as address/prefix, parsed the quick way (a third of
    ipaddress.ip_network's time); None when the text is something else."""
    address, slash, prefix = text.partition("/")
    if not slash or not prefix.isdigit() or not prefix.isascii() or len(prefix) > 2:
        return None
    try:
        packed = socket.inet_pton(socket.AF_INET, address)
    except OSError:
        return None
    return ipaddress.IPv4Network((int.from_bytes(packed, "big"), int(prefix)))


def _time(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or \
            not 0 <= value < 1e11:
        raise FleetMessageError("malformed", f"{name} {value!r} is not a time")
    return float(value)
