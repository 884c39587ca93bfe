"""The admission under the server's capacity (bpf/admission.h) on the real kernel: with
sip_capacity set, untrusted SIP requests beyond it are dropped in XDP and counted, trusted
ones all pass and go first, whitelisted ones are not counted against it.

The traffic runs between this module's own namespaces (10.215.x, fd00:215::).
"""

from __future__ import annotations

import ipaddress
import time

import pytest

from fastban.abi import ABI
from fastban.lab import netns
from udp_rig import UdpRig, guarded

NET = ipaddress.ip_network
SRV4, SRV6 = "10.215.0.1", "fd00:215::1"
TRUSTED4, UNTRUSTED4, WHITELISTED4 = "10.215.0.2", "10.215.0.3", "10.215.0.4"
TRUSTED6 = "fd00:215::2"
CAPACITY = 200            # requests/s: a 200-datagram burst is far beyond what it leaves
BURST = 200
# The bucket's clock runs at most this far ahead (a trusted surge); waited out between tests.
DRAIN = ABI["FB_ADMISSION_DEBT_MS"] / 1000 + 0.2
REQUEST = b"REGISTER sip:srv SIP/2.0\r\nCall-ID: %d@admission\r\n\r\n"


@pytest.fixture(scope="module")
def rig(kernel):
    with netns.Lab() as lab:
        clients4 = [TRUSTED4, UNTRUSTED4, WHITELISTED4]
        udp = UdpRig(lab, SRV4, SRV6, clients4, [TRUSTED6], port=5060, payload=REQUEST)
        with guarded(udp, "egress") as rig:
            yield rig


@pytest.fixture
def dp(rig):
    """Capacity CAPACITY, the trust and whitelist empty, the bucket drained."""
    dp = rig.dp
    for network in dp.trusted_networks():
        dp.untrust(network)
    for network in dp.whitelisted():
        dp.unwhitelist(network)
    dp.set_sip_capacity(CAPACITY)
    time.sleep(DRAIN)
    yield dp
    dp.set_sip_capacity(0)


def _delta(dp, before) -> dict:
    after = dp.counters()
    return {name: after[name] - before[name] for name in before}


def _trust(dp, network: str) -> None:
    dp.trust(NET(network), time.monotonic_ns() + 60 * 10**9)


def test_untrusted_requests_beyond_the_capacity_are_dropped_and_counted(dp, rig):
    before = dp.counters()
    received = rig.send(UNTRUSTED4, BURST)
    delta = _delta(dp, before)
    assert 0 < received < BURST
    assert delta["over_capacity"] == BURST - received
    assert delta["trusted_admitted"] == 0


def test_with_no_capacity_set_every_request_passes(dp, rig):
    dp.set_sip_capacity(0)
    before = dp.counters()
    assert rig.send(UNTRUSTED4, BURST) == BURST
    assert _delta(dp, before)["over_capacity"] == 0


@pytest.mark.parametrize("source, network", [(TRUSTED4, f"{TRUSTED4}/32"),
                                             (TRUSTED6, "fd00:215::/64")])
def test_trusted_requests_all_pass_and_go_first(dp, rig, source, network):
    _trust(dp, network)
    before = dp.counters()
    assert rig.send(source, BURST) == BURST
    delta = _delta(dp, before)
    assert delta["trusted_admitted"] == BURST and delta["over_capacity"] == 0
    # The trusted burst took the capacity of the next second: an untrusted one gets nothing.
    assert rig.send(UNTRUSTED4, BURST) == 0
    assert _delta(dp, before)["over_capacity"] == BURST


def test_lapsed_trust_is_no_trust(dp, rig):
    dp.trust(NET(f"{TRUSTED4}/32"), time.monotonic_ns() - 1)
    before = dp.counters()
    received = rig.send(TRUSTED4, BURST)
    assert 0 < received < BURST
    assert _delta(dp, before)["trusted_admitted"] == 0


def test_whitelisted_requests_pass_and_take_nothing_from_the_capacity(dp, rig):
    dp.whitelist(NET(f"{WHITELISTED4}/32"))
    before = dp.counters()
    assert rig.send(WHITELISTED4, BURST) == BURST
    assert _delta(dp, before)["over_capacity"] == 0
    assert rig.send(UNTRUSTED4, BURST) > 0      # the bucket is as full as before
