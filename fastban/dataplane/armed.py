"""The "armed" table (bpf/armed.h): sources one proven failure short of maxretry, which the
capture bans itself at their next failure. fastban.arming decides what it holds."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from fastban.abi import ABI
from fastban.dataplane.errors import DataPlaneError
from fastban.dataplane.maps import Maps

FbPeer = ABI.struct("fb_peer")
FbArmed = ABI.struct("fb_armed")


@dataclass
class Arm:
    deadline_ns: int        # kernel monotonic ns the arm lapses
    ban_ns: int             # duration of the ban the capture writes, 0 = permanent
    failure_hash: int       # fastban.headerscan.failure_hash of the failure that armed it
    request_hash: int       # Call-ID hash of the last request with credentials, 0 = none
    request_ns: int
    banned_ns: int          # when the capture banned the source, 0 = not yet
    expires_ns: int         # the expiry it wrote


def _peer_key(address) -> FbPeer:
    address = ipaddress.ip_address(address)
    key = FbPeer()
    key.addr[:] = (b"\0" * 10 + b"\xff\xff" + address.packed if address.version == 4
                   else address.packed)
    return key


class ArmedTables(Maps):
    def set_kernel_ban(self, enabled: bool) -> None:
        """Whether the capture looks up armed sources (and bans them)."""
        self._check_open()
        self._set_config(ABI["FB_CFG_ARMED"], 1 if enabled else 0)

    def arm(self, peer, deadline_ns: int, ban_ns: int, failure_hash: int) -> None:
        self._check_open()
        value = FbArmed(deadline_ns=deadline_ns, ban_ns=ban_ns, failure_hash=failure_hash)
        err = self._update("armed", _peer_key(peer), value)
        if err:
            raise DataPlaneError(f"cannot arm {peer}: {os.strerror(err)}")

    def disarm(self, peer) -> bool:
        self._check_open()
        return self._delete("armed", _peer_key(peer))

    def arm_of(self, peer) -> Arm | None:
        self._check_open()
        value = FbArmed()
        if not self._lookup("armed", _peer_key(peer), value):
            return None
        return Arm(value.deadline_ns, value.ban_ns, value.failure_hash, value.request_hash,
                   value.request_ns, value.banned_ns, value.expires_ns)

    def armed_sources(self) -> list:
        """The armed peers' addresses."""
        self._check_open()
        found = []
        for key in self._keys("armed", FbPeer):
            address = ipaddress.IPv6Address(bytes(key.addr))
            found.append(address.ipv4_mapped or address)
        return found
