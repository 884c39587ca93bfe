"""`list`, `ban` and `unban` while no guard runs: the pinned maps and the saved state directly.

They change only what they are asked to. The kernel's whitelist, SIP ports, scope and config
are the running settings of the guard that left the maps; nothing here writes them. `list`
writes nothing at all. `ban` adds one ban to the maps and to the state's journal. `unban`
removes the ban from the maps and from the saved state (through the journal), so that the next
start does not impose it again; when the maps cannot be found (no guard has left any here, or
they are in another mount namespace) it still removes it from the saved state. In a fleet
(fleet_redis), `ban` and `unban` are published to the other edges at once.
"""

from __future__ import annotations

import time

from fastban import state
from fastban.clock import expiry_to_monotonic_ns
from fastban.dataplane import DataPlane, DataPlaneError
from fastban.decisions import ORIGIN_HAND
from fastban.fleet.edge import tell_fleet
from fastban.banlist import ban_rows, kernel_bans
from fastban.handbans import hand_ban, hand_reason
from fastban.state import BanRecord


class Offline:
    def __init__(self, settings, iface: str | None, pin_root: str):
        self.settings = settings
        self.iface = iface
        self.pin_root = pin_root
        self.warnings: list[str] = []

    def _saved(self) -> state.State:
        saved, warning = state.load(self.settings.state_file, repair=False)
        if warning:
            self.warnings.append(warning)
        return saved

    def _maps(self) -> DataPlane:
        if self.iface is None:
            raise DataPlaneError("name the interface with --iface")
        return DataPlane.open_pinned(self.iface, pin_root=self.pin_root)

    def listing(self) -> list[dict]:
        dataplane = self._maps()
        try:
            return ban_rows(kernel_bans(dataplane), self._saved().bans, time.time(),
                            time.monotonic_ns())
        finally:
            dataplane.close()

    def ban(self, target, duration: float | None, reason: str | None = None) -> dict:
        network, duration = hand_ban(self.settings, target, duration)
        now = time.time()
        record = BanRecord(network, hand_reason(reason), 0, now,
                           0.0 if duration == 0 else now + duration, ORIGIN_HAND)
        dataplane = self._maps()
        try:
            dataplane.ban(network, expiry_to_monotonic_ns(record.expires_at, now,
                                                          time.monotonic_ns()))
        finally:
            dataplane.close()
        times = self._saved().ban_counts.get(network, 0) + 1
        state.append([state.ban_change(record, times)], self.settings.state_file)
        self._tell_fleet(bans=[record])
        return record.to_wire()

    def _tell_fleet(self, **changes) -> None:
        warning = tell_fleet(self.settings, **changes)
        if warning:
            self.warnings.append(warning)

    def unban(self, targets) -> tuple[int, bool]:
        """Lifts the bans of targets (networks) or, with targets None, every ban; returns how
        many were lifted and whether the kernel maps could be reached."""
        try:
            dataplane = self._maps()
        except DataPlaneError as error:
            dataplane = None
            self.warnings.append(str(error))
        saved = self._saved()
        try:
            in_kernel = set(kernel_bans(dataplane)) if dataplane is not None else set()
            if targets is None:
                targets = in_kernel | set(saved.bans)
            lifted, changes, lifted_targets = 0, [], []
            for network in targets:
                if dataplane is not None:
                    removed = dataplane.unban(network)
                    if network in saved.bans:
                        changes.append(state.unban_change(network))
                        removed = True
                else:                      # the next start lifts it from the maps, if there
                    changes.append(state.lift_change(network))
                    removed = True
                lifted += removed
                if removed:
                    lifted_targets.append(network)
            if changes:
                state.append(changes, self.settings.state_file)
        finally:
            if dataplane is not None:
                dataplane.close()
        self._tell_fleet(unbans=lifted_targets)
        return lifted, dataplane is not None
