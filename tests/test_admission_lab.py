"""Admission under overload through the path a user runs: `fastban run` with sip_capacity set in
front of the lab's Kamailio, a spoofed REGISTER flood (fastban.lab.flood: a new made-up source
address for every request) at twice the capacity. The phone, trusted since it logged in, keeps
registering, every time; a new phone (the phone's IPv6 address, never logged in) still gets
in, on what the flood leaves of the capacity and its retransmissions.
"""
import ipaddress
import json
import sys

import pytest

from conftest import require_tool, wait_for
from fastban.dataplane import DataPlane
from fastban.lab.siplab import SipLab
from labwait import running_guard

CAPACITY = 1000           # requests/s
FLOOD_RATE = 2 * CAPACITY
FLOOD_SECONDS = 8.0


@pytest.fixture(scope="module")
def lab(kernel):
    require_tool("kamailio")
    require_tool("sipp")
    with SipLab(attackers=1) as lab:
        lab.add_forger()
        yield lab


@pytest.fixture
def guard(lab, tmp_path):
    with running_guard(lab, tmp_path, sip_capacity=CAPACITY) as guard:
        yield guard


def kernel_view(lab):
    dataplane = DataPlane.open_pinned(lab.server_iface)
    try:
        return dataplane.trusted_networks(), dataplane.counters()
    finally:
        dataplane.close()


def test_a_trusted_phone_keeps_registering_and_a_new_one_gets_in_during_a_flood(lab, guard):
    assert lab.register_phone(count=1).successes == 1
    phone = ipaddress.ip_network(f"{lab.phone_address_of(4)}/32")
    wait_for(lambda: phone in kernel_view(lab)[0], what="the phone's trust in the kernel")
    before = kernel_view(lab)[1]

    flood = lab.add_forger().namespace.popen(
        [sys.executable, "-m", "fastban.lab.flood", "--destination", lab.server_address(4),
         "--rate", str(FLOOD_RATE), "--seconds", str(FLOOD_SECONDS)],
        stdout=-1, stderr=-1, text=True)
    try:
        trusted = lab.start_phone(count=6, interval=1.0, response_timeout=2.0)
        new = lab.start_phone(count=3, interval=1.0, family=6, response_timeout=6.0)
        trusted_result, new_result = trusted.wait(), new.wait()
    finally:
        out, err = flood.communicate(timeout=FLOOD_SECONDS + 30)
    sent = json.loads(out.strip().splitlines()[-1])["sent"]
    after = kernel_view(lab)[1]
    over_capacity = after["over_capacity"] - before["over_capacity"]

    assert sent > FLOOD_RATE * FLOOD_SECONDS / 2, err      # the flood ran at about its rate
    assert over_capacity > sent / 4                        # a good part of it was cut
    assert trusted_result.successes == 6 and trusted_result.failures == 0
    assert after["trusted_admitted"] - before["trusted_admitted"] >= 12
    assert new_result.successes >= 1
    stats = guard.json("stats")
    assert stats["sip_requests_over_capacity"] >= over_capacity
    assert stats["sip_requests_trusted_admitted"] >= 12
