"""The threshold ban decided in the kernel (bpf/armed.h), on the real kernel: an armed peer is
banned by the capture at its next failure answering a request with credentials; the failure
that armed it sent again, a challenge to a request without credentials, a lapsed arm, and a
capture with the feature off do not ban."""

from __future__ import annotations

import ipaddress
import socket
import time

import pytest

from fastban import headerscan
from fastban.dataplane import DataPlane
from fastban.lab import netns

IP = ipaddress.ip_address
SRV4, SRV6 = "10.219.0.1", "fd00:219::1"
PEERS4 = ["10.219.0.2", "10.219.0.3", "10.219.0.4", "10.219.0.5", "10.219.0.6", "10.219.0.7"]
PEER6 = "fd00:219::2"
BAN_NS = 600 * 10**9


@pytest.fixture(scope="module")
def rig(kernel):
    with netns.Lab() as lab:
        srv, cli = lab.namespace("srv"), lab.namespace("cli")
        link = lab.link(srv, cli, f"{SRV4}/24", f"{PEERS4[0]}/24", f"{SRV6}/64", f"{PEER6}/64")
        for address in PEERS4[1:]:
            cli.run(["ip", "addr", "add", f"{address}/24", "dev", link.b])
        with srv.entered():
            dp = DataPlane(link.a, capture="both")
        dp.srv, dp.cli = srv, cli
        try:
            with srv.entered():
                dp.attach()
            dp.set_challenge_grace(30)
            yield dp
        finally:
            with srv.entered():
                dp.detach()
            dp.close()


@pytest.fixture
def dp(rig):
    for ban in rig.bans(include_expired=True):
        rig.unban(ban.target)
    for peer in rig.armed_sources():
        rig.disarm(peer)
    rig.set_kernel_ban(True)
    rig.poll(10)
    return rig


def response(status: int, call_id: str, branch: str, nonce: str = "n2") -> bytes:
    reason = {401: "Unauthorized", 403: "Forbidden", 407: "Proxy Authentication Required",
              200: "OK"}[status]
    challenge = f'WWW-Authenticate: Digest realm="lab", nonce="{nonce}"\r\n' \
        if status == 401 else ""
    return (f"SIP/2.0 {status} {reason}\r\nVia: SIP/2.0/UDP 10.219.0.2:5062;branch={branch}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 2 REGISTER\r\n{challenge}"
            f"Content-Length: 0\r\n\r\n").encode()


def request(call_id: str, branch: str, credentials: bool) -> bytes:
    authorization = ('Authorization: Digest username="1001", realm="lab", nonce="n1", '
                     'uri="sip:lab", response="0123456789abcdef0123456789abcdef"\r\n'
                     if credentials else "")
    return (f"REGISTER sip:lab SIP/2.0\r\nVia: SIP/2.0/UDP 10.219.0.2:5062;branch={branch}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 2 REGISTER\r\n{authorization}"
            f"Content-Length: 0\r\n\r\n").encode()


def _socket(namespace, address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if IP(address).version == 6 else socket.AF_INET
    with namespace.entered():
        sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    return sock


def send(dp, peer: str, message: bytes) -> None:
    """A request from peer to the server's 5060, or a response from 5060 to the peer."""
    server = SRV6 if IP(peer).version == 6 else SRV4
    if message.startswith(b"SIP/2.0"):
        with _socket(dp.srv, server, 5060) as sock:
            sock.sendto(message, (peer, 5062))
    else:
        with _socket(dp.cli, peer, 5062) as sock:
            sock.sendto(message, (server, 5060))
    time.sleep(0.02)


def captured(dp, count: int, timeout: float = 3.0) -> list:
    items = []
    dp.on_capture(items.append)
    deadline = time.monotonic() + timeout
    while len(items) < count and time.monotonic() < deadline:
        dp.poll(50)
    dp.poll(50)
    return items


def arm(dp, peer: str, failure: bytes, deadline_s: float = 60.0) -> None:
    """Challenges the peer (so that the capture reads its requests) and arms it with failure
    as the failure that armed it."""
    send(dp, peer, response(401, "challenge-" + peer, "z9hG4bKc"))
    dp.arm(peer, time.monotonic_ns() + int(deadline_s * 1e9), BAN_NS,
           headerscan.failure_hash(failure))


@pytest.mark.parametrize("peer", [PEERS4[0], PEER6])
def test_an_armed_source_is_banned_by_the_capture_at_its_next_failure(dp, peer):
    before = dp.kernel_counters()["kernel_bans"]
    arming = response(401, "call-a", "z9hG4bKa1")
    arm(dp, peer, arming)
    send(dp, peer, request("call-a", "z9hG4bKa2", credentials=True))
    start = time.monotonic_ns()
    send(dp, peer, response(401, "call-a", "z9hG4bKa2"))
    ban = dp.ban_of(IP(peer))
    assert ban is not None, "no ban in the map: the capture did not ban the armed source"
    assert dp.kernel_counters()["kernel_bans"] == before + 1
    assert start < ban.expires_ns - BAN_NS < time.monotonic_ns()
    state = dp.arm_of(peer)
    assert state.expires_ns == ban.expires_ns
    assert 0 <= state.banned_ns - (ban.expires_ns - BAN_NS) < 10**9   # written after the 401's TC
    assert 0 < state.banned_ns - state.request_ns < 10**9
    flagged = [p for p in captured(dp, 3) if p.kernel_ban]
    assert [(p.status, p.dst) for p in flagged] == [(401, IP(peer))]


def test_a_403_to_credentials_bans_and_the_failure_that_armed_it_sent_again_does_not(dp):
    peer = PEERS4[1]
    arming = response(403, "call-b", "z9hG4bKb1")
    arm(dp, peer, arming)
    send(dp, peer, request("call-b", "z9hG4bKb1", credentials=True))    # the request sent again
    send(dp, peer, arming)                                              # ... and its answer
    assert dp.ban_of(IP(peer)) is None
    assert dp.arm_of(peer).request_hash == headerscan.call_hash(b"call-b")
    send(dp, peer, response(403, "call-b", "z9hG4bKb2"))               # a new failure
    assert dp.ban_of(IP(peer)) is not None
    assert dp.arm_of(peer).failure_hash == headerscan.failure_hash(
        response(403, "call-b", "z9hG4bKb2")) != headerscan.failure_hash(arming)


def test_a_stateless_servers_answer_again_with_a_new_nonce_is_the_same_failure(dp):
    peer = PEERS4[1]
    arm(dp, peer, response(401, "call-e", "z9hG4bKe1", nonce="first"))
    send(dp, peer, request("call-e", "z9hG4bKe1", credentials=True))
    send(dp, peer, response(401, "call-e", "z9hG4bKe1", nonce="second"))
    assert dp.ban_of(IP(peer)) is None
    send(dp, peer, response(401, "call-e", "z9hG4bKe2", nonce="second"))
    assert dp.ban_of(IP(peer)) is not None


def test_a_challenge_to_a_request_without_credentials_does_not_ban(dp):
    peer = PEERS4[2]
    arm(dp, peer, response(401, "call-c", "z9hG4bKc1"))
    # a plain REGISTER on a new Call-ID, and one on the Call-ID of earlier credentials
    send(dp, peer, request("call-new", "z9hG4bKc2", credentials=False))
    send(dp, peer, response(401, "call-new", "z9hG4bKc2"))
    send(dp, peer, request("call-c", "z9hG4bKc3", credentials=True))
    send(dp, peer, request("call-c", "z9hG4bKc4", credentials=False))
    send(dp, peer, response(401, "call-c", "z9hG4bKc4"))
    assert dp.ban_of(IP(peer)) is None
    # credentials answered by a 200 are taken: a later challenge on the Call-ID does not ban
    send(dp, peer, request("call-c", "z9hG4bKc5", credentials=True))
    send(dp, peer, response(200, "call-c", "z9hG4bKc5"))
    assert dp.arm_of(peer).request_hash == 0
    send(dp, peer, response(401, "call-c", "z9hG4bKc6"))
    assert dp.ban_of(IP(peer)) is None and dp.arm_of(peer).banned_ns == 0


def test_a_lapsed_arm_an_unarmed_peer_and_the_feature_off_do_not_ban(dp):
    lapsed, unarmed, off = PEERS4[3], PEERS4[4], PEERS4[5]
    arm(dp, lapsed, response(401, "call-d", "z9hG4bKd1"), deadline_s=0.05)
    time.sleep(0.1)
    send(dp, unarmed, response(401, "challenge", "z9hG4bKd0"))
    arm(dp, off, response(401, "call-d", "z9hG4bKd1"))
    for peer in (lapsed, unarmed):
        send(dp, peer, request("call-d", "z9hG4bKd2", credentials=True))
        send(dp, peer, response(401, "call-d", "z9hG4bKd2"))
    dp.set_kernel_ban(False)
    send(dp, off, request("call-d", "z9hG4bKd2", credentials=True))
    send(dp, off, response(401, "call-d", "z9hG4bKd2"))
    assert [dp.ban_of(IP(p)) for p in (lapsed, unarmed, off)] == [None, None, None]
    assert dp.arm_of(off).request_hash == 0          # off: the capture did not look


# ---- the guard: arming, and the record of the ban the capture made ----

@pytest.fixture
def guard_for(dp, tmp_path):
    from fastban.config import load_settings
    from fastban.guard import Guard

    def make(**overrides):
        settings = load_settings(None, {"state_file": str(tmp_path / "state.msgpack"),
                                        "control_socket": str(tmp_path / "control.sock"),
                                        "maxretry": 3, "challenge_grace": 30,
                                        "kernel_ban": True, **overrides})
        return Guard(settings, dp)
    yield make
    dp.set_kernel_ban(False)


def guess(dp, guard, peer: str, branch: str, stale: bool = False, read: bool = True) -> list:
    """A REGISTER with credentials (the nonce the server issued) and its 401, as a guesser and
    a server send them; the guard reads what the capture copied unless read is False."""
    from traces import sip_request, sip_response
    send(dp, peer, sip_request("REGISTER", call_id="guesser", branch=branch, via_host=peer,
                               auth=True))
    answer = sip_response(401, call_id="guesser", branch=branch, via_host=peer)
    if stale:
        answer = answer.replace(b"algorithm=MD5", b"stale=true,algorithm=MD5")
    send(dp, peer, answer)
    if not read:
        return []
    packets = captured(dp, 2)
    guard.handle_packets(packets)
    return packets


def challenge(dp, guard, peer: str) -> None:
    from traces import sip_request, sip_response
    send(dp, peer, sip_request("REGISTER", call_id="guesser", branch="z9hG4bK0", via_host=peer))
    send(dp, peer, sip_response(401, call_id="guesser", branch="z9hG4bK0", via_host=peer))
    guard.handle_packets(captured(dp, 1))


def test_the_guard_arms_the_capture_bans_and_the_guard_records_the_ban(dp, guard_for):
    guard, peer = guard_for(bantime=900), PEERS4[0]
    challenge(dp, guard, peer)
    guess(dp, guard, peer, "z9hG4bK1")
    assert dp.arm_of(peer) is None                         # two short: not armed
    guess(dp, guard, peer, "z9hG4bK2")
    arm = dp.arm_of(peer)
    assert arm is not None and arm.ban_ns == 900 * 10**9 and arm.banned_ns == 0
    assert 0 < arm.deadline_ns - time.monotonic_ns() <= 1800 * 10**9      # findtime
    kernel_bans = dp.kernel_counters()["kernel_bans"]
    guess(dp, guard, peer, "z9hG4bK3", read=False)
    ban = dp.ban_of(IP(peer))
    assert ban is not None and guard.state.bans == {}       # the kernel banned, alone
    assert dp.kernel_counters()["kernel_bans"] == kernel_bans + 1
    packets = captured(dp, 2)
    assert [p.kernel_ban for p in packets] == [False, True]
    [record] = guard.handle_packets(packets)
    assert str(record.target) == f"{peer}/32"
    assert "3 proven (3×bad credentials 401)" in record.reason
    assert dp.arm_of(peer) is None and guard.arming.counts["kernel_bans_confirmed"] == 1
    now = time.monotonic_ns()
    assert abs(dp.ban_of(IP(peer)).expires_ns - (now + 900 * 10**9)) < 5 * 10**9


def test_a_kernel_ban_the_rules_do_not_confirm_is_lifted(dp, guard_for):
    guard, peer = guard_for(), PEERS4[1]
    challenge(dp, guard, peer)
    guess(dp, guard, peer, "z9hG4bK1")
    guess(dp, guard, peer, "z9hG4bK2")
    assert dp.arm_of(peer) is not None
    # an expired nonce, not a password: the capture bans, the rules count no failure
    guess(dp, guard, peer, "z9hG4bK3", stale=True, read=False)
    assert dp.ban_of(IP(peer)) is not None
    assert guard.handle_packets(captured(dp, 2)) == []
    assert dp.ban_of(IP(peer)) is None and dp.arm_of(peer) is None
    assert guard.arming.counts["kernel_bans_lifted"] == 1
    assert guard.rules.failures_of(peer) == 2


def test_a_kernel_ban_whose_copy_was_lost_is_lifted_on_a_later_tick(dp, guard_for):
    from fastban import arming
    guard, peer = guard_for(), PEERS4[4]
    challenge(dp, guard, peer)
    guess(dp, guard, peer, "z9hG4bK1")
    guess(dp, guard, peer, "z9hG4bK2")
    guess(dp, guard, peer, "z9hG4bK3", read=False)
    assert len(captured(dp, 2)) == 2                      # read, never given to the guard
    guard.tick()
    assert dp.ban_of(IP(peer)) is not None                # not yet: the copy may be on its way
    time.sleep(arming.UNSETTLED_AFTER_NS / 1e9 + 0.2)
    guard.tick()
    assert dp.ban_of(IP(peer)) is None and dp.arm_of(peer) is None
    assert guard.arming.counts["kernel_bans_lifted"] == 1 and guard.state.bans == {}


def test_every_arm_is_swept_in_turn_not_only_the_oldest(dp, guard_for, monkeypatch):
    from fastban import arming
    monkeypatch.setattr(arming, "SWEPT_PER_CALL", 1)
    guard, older, lost = guard_for(), PEERS4[5], PEERS4[4]
    for peer in (older, lost):                            # older is armed first
        challenge(dp, guard, peer)
        guess(dp, guard, peer, "z9hG4bK1")
        guess(dp, guard, peer, "z9hG4bK2")
    guess(dp, guard, lost, "z9hG4bK3", read=False)
    assert len(captured(dp, 2)) == 2                      # read, never given to the guard
    time.sleep(arming.UNSETTLED_AFTER_NS / 1e9 + 0.2)
    guard.tick()                                          # looks at older
    guard.tick()                                          # then at lost
    assert dp.ban_of(IP(lost)) is None and dp.arm_of(lost) is None
    assert dp.arm_of(older) is not None and guard.arming.counts["kernel_bans_lifted"] == 1


def test_unban_and_whitelist_leave_nothing_armed(dp, guard_for):
    peer, listed = PEERS4[2], PEERS4[3]
    dp.arm(peer, time.monotonic_ns() + 10**12, BAN_NS, 1)      # left by an earlier guard
    dp.set_kernel_ban(False)
    guard = guard_for(whitelist=[f"{listed}/32"])
    assert dp.armed_sources() == []
    for source in (peer, listed):
        challenge(dp, guard, source)
        guess(dp, guard, source, "z9hG4bK1")
        guess(dp, guard, source, "z9hG4bK2")
    assert dp.arm_of(peer) is not None and dp.arm_of(listed) is None
    guard.ban(peer)
    assert dp.arm_of(peer) is None                         # banned: its history starts again
    guard.unban(peer)
    assert dp.armed_sources() == []
