"""The rules' trust mirrored into the kernel's trusted maps by the guard (fastban.kernel_trust),
and sip_capacity written into the kernel's config, on a real data plane."""
import ipaddress
import time

import pytest

from fastban import kernel_trust
from fastban.abi import ABI
from fastban.config import load_settings
from fastban.guard import Guard
from traces import sip_request, sip_response
from udp_rig import small_plane

NET = ipaddress.ip_network
SERVER = ipaddress.ip_address("10.216.0.1")
PHONE = ipaddress.ip_address("10.216.0.50")
STRAY = NET("10.216.0.99/32")


@pytest.fixture(scope="module")
def dataplane(kernel):
    with small_plane("10.216.0", "/sys/fs/bpf/fastban-test-trust") as plane:
        yield plane


@pytest.fixture
def settings_for(tmp_path, dataplane):
    for network in dataplane.trusted_networks():
        dataplane.untrust(network)

    def make(**overrides):
        return load_settings(None, {"state_file": str(tmp_path / "state.msgpack"),
                                    "control_socket": str(tmp_path / "control.sock"),
                                    **overrides})
    return make


def login(guard, phone, call_id="reg"):
    """A 401, the REGISTER with credentials answering it and the 200: a login of phone."""
    from fastban.dataplane import CapturedPacket
    now = time.monotonic_ns()
    challenge = sip_response(401, call_id=call_id, branch="z9hG4bKa", via_host=str(phone))
    request = sip_request("REGISTER", call_id=call_id, branch="z9hG4bKb", via_host=str(phone),
                          auth=True)
    answer = sip_response(200, call_id=call_id, branch="z9hG4bKb", via_host=str(phone))
    guard.handle_packets([
        CapturedPacket(SERVER, phone, 5060, 5060, "udp", 401, challenge, now,
                       payload_len=len(challenge)),
        CapturedPacket(phone, SERVER, 5060, 5060, "udp", 0, request, now + 1000,
                       kind="request", payload_len=len(request)),
        CapturedPacket(SERVER, phone, 5060, 5060, "udp", 200, answer, now + 2000,
                       payload_len=len(answer))])
    return now


def test_a_login_trusts_its_source_in_the_kernel_until_its_trust_ends(dataplane, settings_for):
    guard = Guard(settings_for(trust_time=600), dataplane)
    assert dataplane.trusted_networks() == {}
    at = login(guard, PHONE)
    assert guard.stats()["logins"] == 1
    [(network, until_ns)] = dataplane.trusted_networks().items()
    assert network == NET(f"{PHONE}/32")
    assert abs(until_ns - (at + 600 * 10**9)) < 10**9


def test_sip_capacity_is_written_into_the_kernel_config(dataplane, settings_for):
    index = ABI["FB_CFG_SIP_CAPACITY"]
    guard = Guard(settings_for(sip_capacity=2500), dataplane)
    assert dataplane.config_values()[index] == 2500
    guard.reload(settings_for())
    assert dataplane.config_values()[index] == 0


def test_a_restart_writes_the_saved_trust_back_and_drops_the_rest(dataplane, settings_for):
    settings = settings_for(trust_time=600)
    guard = Guard(settings, dataplane)
    login(guard, PHONE)
    guard.save()
    for network in dataplane.trusted_networks():      # as after the pins were replaced
        dataplane.untrust(network)
    dataplane.trust(STRAY, time.monotonic_ns() + 600 * 10**9)
    Guard(settings, dataplane)
    assert set(dataplane.trusted_networks()) == {NET(f"{PHONE}/32")}


def test_lapsed_and_unknown_trust_leaves_the_kernel_at_the_next_sync(dataplane, settings_for):
    clock = [time.time()]
    guard = Guard(settings_for(trust_time=100), dataplane, wall=lambda: clock[0])
    login(guard, PHONE)
    dataplane.trust(STRAY, time.monotonic_ns() + 600 * 10**9)
    clock[0] += kernel_trust.PRUNE_INTERVAL / 2
    guard.tick()
    assert set(dataplane.trusted_networks()) == {STRAY, NET(f"{PHONE}/32")}   # not due yet
    clock[0] += kernel_trust.PRUNE_INTERVAL / 2 + 1
    guard.tick()
    assert set(dataplane.trusted_networks()) == {NET(f"{PHONE}/32")}
    clock[0] += 100
    guard.tick()
    assert dataplane.trusted_networks() == {}
