"""The rules' trust, mirrored into the kernel's trusted maps, where the admission under
sip_capacity (bpf/admission.h) lets trusted sources go first.

The guard hands over the trust the rules grant or lengthen (their trust reports), and the
whole trust at start and after a reload; every PRUNE_INTERVAL the maps lose the sources the
rules no longer trust (lapsed, or forgotten at max_sources) and get back any they miss. A
kernel entry ends when its trust does, on the monotonic clock, whether or not a guard runs.
The rules report a lengthened trust only once it grew by a tenth of trust_time, so a kernel
entry may end up to that much earlier than the rules' trust when its source stops logging in.
"""

from __future__ import annotations

import logging
from typing import Callable

from fastban.clock import expiry_to_monotonic_ns
from fastban.dataplane import BanTableFull

log = logging.getLogger("fastban")

PRUNE_INTERVAL = 60.0       # seconds between two comparisons of the maps with the rules


class KernelTrust:
    def __init__(self, dataplane, wall: Callable[[], float], monotonic_ns: Callable[[], int]):
        self.dataplane, self.wall, self.monotonic_ns = dataplane, wall, monotonic_ns
        self.refused = 0            # sources the full trusted maps had no room for
        self._synced_at = float("-inf")

    def add(self, trust) -> None:
        """Writes (network, until wall time) pairs into the maps."""
        now, mono = self.wall(), self.monotonic_ns()
        for network, until in trust:
            self._write(network, expiry_to_monotonic_ns(until, now, mono))

    def sync(self, trusted: dict, rewrite: bool = False) -> None:
        """Makes the maps hold the rules' trust, trusted ({network: until wall time}): others
        leave, missing ones are written; with rewrite (at start, after a reload) all are
        written with the rules' ends."""
        self._synced_at = self.wall()
        in_maps = self.dataplane.trusted_networks() or {}
        for network in in_maps.keys() - trusted.keys():
            self.dataplane.untrust(network)
        self.add((network, until) for network, until in trusted.items()
                 if rewrite or network not in in_maps)

    def sync_due(self, now: float) -> bool:
        return now - self._synced_at >= PRUNE_INTERVAL

    def _write(self, network, until_ns: int) -> None:
        try:
            self.dataplane.trust(network, until_ns)
        except BanTableFull as error:
            self.refused += 1
            if self.refused == 1:
                log.warning("%s: sources logging in from now on may not be admitted first "
                            "under sip_capacity", error)
