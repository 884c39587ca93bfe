"""The two clocks and how times are written.

Bans in the kernel expire on its monotonic clock (bpf_ktime_get_ns, Python's
time.monotonic_ns), in ns, 0 = permanent; what the operator sees is wall-clock seconds since
the epoch, 0 = permanent. Conversions are read against clocks given, so that callers can read
the two clocks once for many conversions (and tests can set them).
"""

from __future__ import annotations

from datetime import datetime, timezone


def expiry_to_monotonic_ns(expires_at: float, wall_now: float, mono_now_ns: int) -> int:
    """A wall-clock expiry as the kernel's monotonic ns; 0 (permanent) stays 0."""
    return 0 if expires_at == 0 else mono_now_ns + int((expires_at - wall_now) * 1e9)


def expiry_to_wall(expires_ns: int, wall_now: float, mono_now_ns: int) -> float:
    """The kernel's monotonic expiry as wall-clock seconds; 0 (permanent) stays 0."""
    return 0.0 if expires_ns == 0 else wall_now + (expires_ns - mono_now_ns) / 1e9


def iso(seconds: float, milliseconds: bool = False) -> str:
    """A wall-clock time as UTC ISO 8601: 2026-12-01T18:57:23Z (or ...23.020Z)."""
    stamp = datetime.fromtimestamp(seconds, timezone.utc)
    return stamp.isoformat(timespec="milliseconds" if milliseconds else "seconds").replace(
        "+00:00", "Z")
