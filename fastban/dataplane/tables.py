"""What the maps hold, as user space reads and writes it: bans, the whitelist, the port sets,
the config, the counters and the capture's tables of challenged peers and open Call-IDs.

Every layout and index comes from bpf/abi.h (fastban.abi).
"""

from __future__ import annotations

import ctypes as ct
import errno
import ipaddress
import os
import struct
import sys
import time
from dataclasses import dataclass
from typing import Iterable

from fastban import headerscan
from fastban.abi import ABI
from fastban.dataplane.armed import ArmedTables
from fastban.dataplane.errors import BanTableFull, DataPlaneError
from fastban.dataplane.maps import BPF_NOEXIST
from fastban.dataplane.rate_limit import RateLimits

FbBanValue = ABI.struct("fb_ban_value")
FbAddr6 = ABI.struct("fb_addr6")
FbLpm4 = ABI.struct("fb_lpm4")
FbLpm6 = ABI.struct("fb_lpm6")
FbPeer = ABI.struct("fb_peer")
FbPeerState = ABI.struct("fb_peer_state")
FbCallKey = ABI.struct("fb_call_key")

_BAN_VALUE = struct.Struct("=QQ")         # struct fb_ban_value: expires_ns, hits
UPDATE_BATCH = 10_000                      # elements per BPF_MAP_UPDATE_BATCH
assert _BAN_VALUE.size == ct.sizeof(FbBanValue)

# The LPM tries XDP skips while their flag is 0: user space keeps each flag set while its trie
# holds entries.
TRIE_FLAGS = {"ranges_v4": ABI["FB_CFG_RANGES_V4"], "ranges_v6": ABI["FB_CFG_RANGES_V6"],
              "whitelist_v4": ABI["FB_CFG_WHITELIST_V4"],
              "whitelist_v6": ABI["FB_CFG_WHITELIST_V6"]}
# Counters by name (FB_CNT_<NAME> in abi.h); "seen" is passed + dropped.
COUNTERS = {name: index for name, index in ABI.group("FB_CNT_").items()
            if name not in ("max", "seen")}


@dataclass
class Ban:
    target: ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network | ipaddress.IPv6Network
    expires_ns: int         # kernel monotonic ns, 0 = permanent
    hits: int               # packets this ban dropped

    def remaining_ns(self, now_ns: int | None = None) -> int | None:
        """Nanoseconds left (0 when lapsed), None for a permanent ban."""
        if self.expires_ns == 0:
            return None
        now = time.monotonic_ns() if now_ns is None else now_ns
        return max(0, self.expires_ns - now)


def _to_target(target):
    """ipaddress object (or string) -> (family, exact address or None, network)."""
    if isinstance(target, str):
        target = ipaddress.ip_network(target, strict=False) if "/" in target \
            else ipaddress.ip_address(target)
    if isinstance(target, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return target.version, target, ipaddress.ip_network(target)
    if isinstance(target, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        if target.prefixlen == target.max_prefixlen:
            return target.version, target.network_address, target
        return target.version, None, target
    raise TypeError(f"expected an ipaddress address or network, got {target!r}")


def _lpm_key(network):
    """The LPM trie key (struct fb_lpm4 or fb_lpm6) of a network."""
    key = (FbLpm4 if network.version == 4 else FbLpm6)(network.prefixlen)
    key.addr[:] = network.network_address.packed
    return key


def _peer_address(addr) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.IPv6Address(bytes(addr))
    return address.ipv4_mapped or address


def _peer_bytes(address) -> bytes:
    address = ipaddress.ip_address(address)
    if address.version == 4:
        return b"\0" * 10 + b"\xff\xff" + address.packed
    return address.packed


class KernelTables(RateLimits, ArmedTables):
    """The typed operations on the maps; `_check_open()` is the owner's."""

    def _check_open(self) -> None:       # the DataPlane overrides it
        pass

    # ---- config ----

    def _set_config(self, index: int, value: int) -> None:
        err = self._update("config", ct.c_uint32(index), ct.c_uint32(value))
        if err:
            raise DataPlaneError(f"cannot write the config map: {os.strerror(err)}")

    def _get_config(self, index: int) -> int:
        value = ct.c_uint32()
        return value.value if self._lookup("config", ct.c_uint32(index), value) else 0

    def config_values(self) -> list[int]:
        """The config map as the programs read it (FB_CFG_* indexes)."""
        self._check_open()
        return [self._get_config(index) for index in range(ABI["FB_CFG_MAX"])]

    def set_count_register_404(self, enabled: bool) -> None:
        """Whether 404 responses are copied too (they count as failures for scanners)."""
        self._check_open()
        self._set_config(ABI["FB_CFG_COUNT_404"], 1 if enabled else 0)

    def set_challenge_grace(self, seconds: float) -> None:
        """How long after a 401/407 the capture treats the peer as challenged and its Call-ID
        as open (the rules' challenge_grace)."""
        self._check_open()
        self._set_config(ABI["FB_CFG_GRACE_MS"], max(1, min(int(seconds * 1000), 0xFFFFFFFF)))

    def set_sip_capacity(self, requests_per_second: int) -> None:
        """The SIP requests/s the server answers; above it, trusted sources are admitted first
        and untrusted ones share what is left (bpf/admission.h). 0 = no admission control."""
        self._check_open()
        if not 0 <= int(requests_per_second) <= 0xFFFFFFFF:
            raise ValueError(f"sip_capacity out of range: {requests_per_second}")
        self._set_config(ABI["FB_CFG_SIP_CAPACITY"], int(requests_per_second))

    # ---- bans ----

    @staticmethod
    def _ban_slot(target):
        """(map name, key) for a ban target."""
        family, address, network = _to_target(target)
        if address is not None:
            if family == 4:
                return "bans_v4", ct.c_uint32(int.from_bytes(address.packed, sys.byteorder))
            key = FbAddr6()
            key.addr[:] = address.packed
            return "bans_v6", key
        return f"ranges_v{family}", _lpm_key(network)

    def ban(self, target, expires_ns: int = 0) -> None:
        """Bans an address (exact) or a network (range; a /32 or /128 is exact) until
        expires_ns (kernel monotonic ns, fastban.clock), 0 = permanently. Banning again
        changes the expiry and keeps the hit count. Raises BanTableFull when the map is full
        (after dropping lapsed bans from it)."""
        self._check_open()
        if expires_ns < 0:
            raise ValueError("expires_ns must be >= 0")
        name, key = self._ban_slot(target)
        value = FbBanValue(expires_ns, 0)
        err = self._update(name, key, value, BPF_NOEXIST)     # a new ban: one syscall
        if err in (errno.E2BIG, errno.ENOSPC, errno.ENOMEM) and self._purge(name):
            err = self._update(name, key, value, BPF_NOEXIST)
        if err == errno.EEXIST:                                # banned again: keep its hits
            self._lookup(name, key, value)
            value.expires_ns = expires_ns
            err = self._update(name, key, value)
        if err in (errno.E2BIG, errno.ENOSPC):
            capacity = self._tables[name].max_entries
            raise BanTableFull(f"cannot ban {target}: the {name} table is full ({capacity} "
                               f"entries); unban something or raise the capacity "
                               f"(a new capacity needs detach first)")
        if err:
            raise DataPlaneError(f"cannot ban {target}: {os.strerror(err)}")
        if name in TRIE_FLAGS:
            self._set_config(TRIE_FLAGS[name], 1)

    def ban_new(self, bans: list) -> list:
        """Bans many targets that are not banned yet, (target, expires_ns) each: the exact
        ones BPF_MAP_UPDATE_BATCH at a time, one syscall per map instead of one per ban (a
        target banned already would have its hit count reset), the ranges one by one.
        Returns (target, BanTableFull) for each that the full table refused."""
        self._check_open()
        exact: dict = {"bans_v4": [], "bans_v6": []}
        refused = []
        for target, expires_ns in bans:
            if expires_ns < 0:
                raise ValueError("expires_ns must be >= 0")
            family, address, _ = _to_target(target)
            if address is None:
                refused += self._ban_each([(target, expires_ns)])
            else:
                exact[f"bans_v{family}"].append((target, address.packed, expires_ns))
        for name, items in exact.items():
            for first in range(0, len(items), UPDATE_BATCH):
                chunk = items[first:first + UPDATE_BATCH]
                written, err = self._update_batch(
                    name, b"".join(packed for _, packed, _ in chunk),
                    b"".join(_BAN_VALUE.pack(expires_ns, 0) for _, _, expires_ns in chunk),
                    len(chunk))
                if err:        # the table full, or another error: the rest one by one
                    refused += self._ban_each([(target, expires_ns) for target, _, expires_ns
                                               in chunk[written:]])
        return refused

    def _ban_each(self, bans: list) -> list:
        refused = []
        for target, expires_ns in bans:
            try:
                self.ban(target, expires_ns)
            except BanTableFull as error:
                refused.append((target, error))
        return refused

    def unban(self, target) -> bool:
        """Removes a ban; False when there was none for exactly this target."""
        self._check_open()
        name, key = self._ban_slot(target)
        removed = self._delete(name, key)
        if removed and name in TRIE_FLAGS:
            self._sync_trie_flags()
        return removed

    def ban_of(self, target) -> Ban | None:
        """The kernel's entry for exactly this target, lapsed or not; None when there is none."""
        self._check_open()
        name, key = self._ban_slot(target)
        value = FbBanValue()
        if not self._lookup(name, key, value):
            return None
        return Ban(ipaddress.ip_network(target, strict=False), value.expires_ns, value.hits)

    def _sync_trie_flags(self) -> None:
        """Tells XDP which LPM tries hold entries, so it skips the empty ones."""
        for name, index in TRIE_FLAGS.items():
            empty = self._empty(name, FbLpm4 if name.endswith("v4") else FbLpm6)
            self._set_config(index, 0 if empty else 1)

    def _ban_entries(self):
        for name, key_type in (("bans_v4", ct.c_uint32), ("bans_v6", FbAddr6)):
            for key, value in self._hash_items(name, key_type, FbBanValue):
                if name == "bans_v4":
                    target = ipaddress.IPv4Address(key.value.to_bytes(4, sys.byteorder))
                else:
                    target = ipaddress.IPv6Address(bytes(key.addr))
                yield name, key, Ban(target, value.expires_ns, value.hits)
        for name, key_type in (("ranges_v4", FbLpm4), ("ranges_v6", FbLpm6)):
            network = ipaddress.IPv4Network if name == "ranges_v4" else ipaddress.IPv6Network
            for key in self._keys(name, key_type):
                value = FbBanValue()
                if self._lookup(name, key, value):
                    target = network((bytes(key.addr), key.prefixlen))
                    yield name, key, Ban(target, value.expires_ns, value.hits)

    def bans(self, include_expired: bool = False) -> list[Ban]:
        """Every ban in the kernel (lapsed ones only with include_expired)."""
        self._check_open()
        now = time.monotonic_ns()
        return [ban for _, _, ban in self._ban_entries()
                if include_expired or ban.expires_ns == 0 or ban.expires_ns > now]

    def _purge(self, only: str | None = None) -> int:
        now = time.monotonic_ns()
        removed = 0
        for name, key, ban in list(self._ban_entries()):
            if (only is None or name == only) and 0 < ban.expires_ns <= now:
                removed += self._delete(name, key)
        return removed

    def purge_expired(self) -> int:
        """Deletes lapsed bans from the maps (the kernel already ignores them); returns how
        many."""
        self._check_open()
        removed = self._purge()
        self._sync_trie_flags()
        return removed

    # ---- the whitelist ----

    @staticmethod
    def _whitelist_slot(network):
        family, _, net = _to_target(network)
        return f"whitelist_v{family}", _lpm_key(net)

    def whitelist(self, network) -> None:
        """Whitelists an address or network: never dropped, even when banned."""
        self._check_open()
        name, key = self._whitelist_slot(network)
        err = self._update(name, key, ct.c_uint32(1))
        if err in (errno.E2BIG, errno.ENOSPC):
            raise BanTableFull(f"cannot whitelist {network}: the {name} table is full")
        if err:
            raise DataPlaneError(f"cannot whitelist {network}: {os.strerror(err)}")
        self._set_config(TRIE_FLAGS[name], 1)

    def unwhitelist(self, network) -> bool:
        self._check_open()
        name, key = self._whitelist_slot(network)
        removed = self._delete(name, key)
        if removed:
            self._sync_trie_flags()
        return removed

    def whitelisted(self) -> list:
        self._check_open()
        networks = []
        for key in self._keys("whitelist_v4", FbLpm4):
            networks.append(ipaddress.IPv4Network((bytes(key.addr), key.prefixlen)))
        for key in self._keys("whitelist_v6", FbLpm6):
            networks.append(ipaddress.IPv6Network((bytes(key.addr), key.prefixlen)))
        return networks

    # ---- trusted sources (the rules' trust, for the rate limit and the admission) ----

    @staticmethod
    def _trusted_slot(network):
        family, _, net = _to_target(network)
        return f"trusted_v{family}", _lpm_key(net)

    def trust(self, network, until_ns: int) -> None:
        """Marks an address or network trusted until the monotonic ns until_ns."""
        self._check_open()
        name, key = self._trusted_slot(network)
        err = self._update(name, key, ct.c_uint64(int(until_ns)))
        if err in (errno.E2BIG, errno.ENOSPC):
            raise BanTableFull(f"cannot trust {network}: the {name} table is full")
        if err:
            raise DataPlaneError(f"cannot trust {network}: {os.strerror(err)}")

    def untrust(self, network) -> bool:
        self._check_open()
        name, key = self._trusted_slot(network)
        return self._delete(name, key)

    def trusted_networks(self) -> dict:
        """{network: until monotonic ns} of the trusted maps."""
        self._check_open()
        found = {}
        for name, key_type, network_type in (("trusted_v4", FbLpm4, ipaddress.IPv4Network),
                                             ("trusted_v6", FbLpm6, ipaddress.IPv6Network)):
            for key in self._keys(name, key_type):
                until = ct.c_uint64()
                if self._lookup(name, key, until):
                    found[network_type((bytes(key.addr), key.prefixlen))] = until.value
        return found

    # ---- scope and SIP ports ----

    def _replace_ports(self, name: str, ports: Iterable[int]) -> None:
        wanted = {int(p) for p in ports}
        for port in wanted:
            if not 0 < port < 65536:
                raise ValueError(f"not a port number: {port}")
        if len(wanted) > self._tables[name].max_entries:
            raise DataPlaneError(f"too many ports ({len(wanted)}); at most "
                                 f"{self._tables[name].max_entries}")
        present = {k.value for k in self._keys(name, ct.c_uint16)}
        for port in wanted - present:
            err = self._update(name, ct.c_uint16(port), ct.c_uint8(1))
            if err:
                raise DataPlaneError(f"cannot add port {port}: {os.strerror(err)}")
        for port in present - wanted:
            self._delete(name, ct.c_uint16(port))

    def set_scope(self, ports: Iterable[int] | None) -> None:
        """None: a banned source loses all its traffic (default). Ports: only its TCP/UDP
        traffic to these destination ports is dropped."""
        self._check_open()
        if ports is None:
            self._set_config(ABI["FB_CFG_SCOPE_PORTS"], 0)
            self._replace_ports("scope_ports", ())
            return
        ports = list(ports)
        if not ports:
            raise ValueError("an empty port scope would drop nothing; use None for all traffic")
        self._replace_ports("scope_ports", ports)
        self._set_config(ABI["FB_CFG_SCOPE_PORTS"], 1)

    def scope(self) -> list[int] | None:
        """The port scope in force (None = all traffic)."""
        self._check_open()
        if not self._get_config(ABI["FB_CFG_SCOPE_PORTS"]):
            return None
        return sorted(k.value for k in self._keys("scope_ports", ct.c_uint16))

    def set_sip_ports(self, ports) -> None:
        """The ports of the SIP server: where its responses come from, its requests go to."""
        self._check_open()
        ports = list(ports)
        if not ports:
            raise ValueError("at least one SIP port is needed")
        self._replace_ports("sip_ports", ports)

    def sip_ports(self) -> list[int]:
        self._check_open()
        return sorted(k.value for k in self._keys("sip_ports", ct.c_uint16))

    # ---- counters ----

    def kernel_counters(self) -> dict:
        """The programs' counters summed over CPUs, since the pinned maps were created (see
        FB_CNT_* in bpf/abi.h); seen = passed + dropped."""
        from bcc.utils import get_possible_cpus
        ncpus = len(get_possible_cpus())
        result = {}
        for name, index in COUNTERS.items():
            values = (ct.c_uint64 * ncpus)()
            self._lookup("counters", ct.c_uint32(index), values)
            result[name] = int(sum(values))
        result["seen"] = result["passed"] + result["dropped"]
        return result

    # ---- the capture's tables ----

    def challenged_peers(self) -> dict:
        """{peer address: (last challenge ns, last unreadable Call-ID ns)}, 0 = never."""
        self._check_open()
        result = {}
        for key in self._keys("challenged", FbPeer):
            value = FbPeerState()
            if self._lookup("challenged", key, value):
                result[_peer_address(key.addr)] = (value.challenged_ns, value.any_call_ns)
        return result

    def open_calls(self) -> dict:
        """{(peer address, Call-ID hash): ns of the last mark}."""
        self._check_open()
        result = {}
        for key in self._keys("open_calls", FbCallKey):
            value = ct.c_uint64()
            if self._lookup("open_calls", key, value):
                result[_peer_address(key.addr), key.call_hash] = value.value
        return result

    def mark_challenge(self, peer, call_id: bytes | None, ktime_ns: int) -> None:
        """Marks peer challenged and its Call-ID open, as the capture does on a 401/407; for
        challenges user space found where the kernel could not read (a later message of a
        TCP segment). call_id None marks every Call-ID of the peer open."""
        self._check_open()
        key = FbPeer()
        key.addr[:] = _peer_bytes(peer)
        state = FbPeerState()
        self._lookup("challenged", key, state)
        state.challenged_ns = max(state.challenged_ns, ktime_ns)
        if call_id is None:
            state.any_call_ns = max(state.any_call_ns, ktime_ns)
        else:
            call = FbCallKey(call_hash=headerscan.call_hash(call_id))
            call.addr[:] = key.addr
            self._update("open_calls", call, ct.c_uint64(ktime_ns))
        self._update("challenged", key, state)
