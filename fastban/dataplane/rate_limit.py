"""The per-source rate limit of SIP requests in XDP (bpf/rate_limit.h): its config and the
sources it is limiting."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

from fastban.abi import ABI
from fastban.dataplane.maps import Maps

FbPeer = ABI.struct("fb_peer")
FbRateState = ABI.struct("fb_rate_state")
MAX_RATE = 1_000_000            # requests/s; the bucket's interval is 1 s / rate in whole ns


@dataclass
class LimitedSource:
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    limited: int                # its SIP requests dropped by the rate limit
    last_limited_ns: int        # monotonic ns of the last one


def _address(key) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.IPv6Address(bytes(key.addr))
    return address.ipv4_mapped or address


class RateLimits(Maps):
    """The rate limit's part of the KernelTables (whose config helpers it uses)."""

    def _check_open(self) -> None:       # KernelTables and the DataPlane override it
        pass

    def set_rate_limit(self, rate: int, burst: int = 0) -> None:
        """SIP requests/s allowed per source (0 = no limit), and how many a source may send at
        once (0 = 2 x rate)."""
        self._check_open()
        if not 0 <= rate <= MAX_RATE:
            raise ValueError(f"rate_limit must be 0..{MAX_RATE} requests/s, not {rate}")
        if burst < 0:
            raise ValueError(f"rate_limit_burst must be >= 0, not {burst}")
        self._set_config(ABI["FB_CFG_RATE_BURST"], min(burst or 2 * rate, 0xFFFFFFFF))
        self._set_config(ABI["FB_CFG_RATE_LIMIT"], rate)

    def rate_limit(self) -> tuple[int, int]:
        """(rate, burst) in force; rate 0 = no limit."""
        self._check_open()
        return self._get_config(ABI["FB_CFG_RATE_LIMIT"]), \
            self._get_config(ABI["FB_CFG_RATE_BURST"])

    def limited_sources(self, within_s: float | None = None) -> list[LimitedSource]:
        """The sources the rate limit dropped requests of (within the last within_s seconds,
        or ever while the table remembers them), most limited first."""
        self._check_open()
        since = 0 if within_s is None else time.monotonic_ns() - int(within_s * 1e9)
        found = [LimitedSource(_address(key), state.limited, state.last_limited_ns)
                 for key, state in self._hash_items("rate_limit", FbPeer, FbRateState)
                 if state.limited and state.last_limited_ns >= since]
        return sorted(found, key=lambda source: (-source.limited, str(source.address)))

    def tracked_sources(self) -> int:
        """How many sources the rate limit's table holds."""
        self._check_open()
        return sum(1 for _ in self._hash_items("rate_limit", FbPeer, FbRateState))

    def rate_table_entries(self) -> int:
        """How many sources the rate limit's table can hold (rate_limit_sources at start)."""
        return self._tables["rate_limit"].max_entries


