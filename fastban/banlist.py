"""The list of blocked addresses: the bans in the kernel maps, each joined with its record
(reason, origin, failures). Shared by the running guard and the commands run while none runs.
"""

from __future__ import annotations

import ipaddress

from fastban.clock import expiry_to_wall
from fastban.decisions import ORIGIN_KERNEL_MAP

FOUND_IN_MAP = "found in the kernel map"


def kernel_bans(dataplane) -> dict:
    """The bans in the kernel maps by network (an exact address as its /32 or /128)."""
    return {ipaddress.ip_network(ban.target): ban for ban in dataplane.bans()}


def ban_rows(bans: dict, records: dict, now: float, mono_now: int) -> list[dict]:
    """One row per ban in the kernel map, joined with its record: the list of blocked addresses."""
    return list(iter_ban_rows(bans, records, now, mono_now))


def iter_ban_rows(bans: dict, records: dict, now: float, mono_now: int, order=None):
    """The rows of the bans in the kernel maps, by address (or in the order given)."""
    if order is None:
        order = sorted(bans, key=lambda network: (network.version, network))
    for target in order:
        ban, record = bans.get(target), records.get(target)
        if ban is None:
            continue
        expires_at = expiry_to_wall(ban.expires_ns, now, mono_now)
        yield {
            "target": str(target),
            "reason": record.reason if record else FOUND_IN_MAP,
            "origin": record.origin if record else ORIGIN_KERNEL_MAP,
            "failure_class": record.failure_class if record else "",
            "failures": record.failures if record else 0,
            "banned_at": record.banned_at if record else None,
            "expires_at": expires_at,
            "time_left": None if expires_at == 0 else max(0.0, round(expires_at - now, 3)),
            "packets_dropped": ban.hits,
        }


def rows_later(dataplane, records: dict, now: float, mono_now: int, newest: int | None = None):
    """The rows of iter_ban_rows, the kernel maps read when iterated (while the guard goes on).
    With `newest`, only the rows of that many most recent bans, newest first, each read from
    the map by itself (the page's list, which must not read a million entries a second)."""
    if newest is None:
        yield from iter_ban_rows(kernel_bans(dataplane), records, now, mono_now)
        return
    recent = records.newest(newest)
    bans = {record.target: ban for record in recent
            if (ban := dataplane.ban_of(record.target)) is not None}
    yield from iter_ban_rows(bans, records, now, mono_now, order=[r.target for r in recent])
