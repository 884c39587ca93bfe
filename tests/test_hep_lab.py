"""fastban run guarding a TLS server through HEP: a real Kamailio with tls.so serves SIP over
TLS (5061) and TCP, and its siptrace module sends every message, decrypted, as HEPv3 to the
guard's hep_listen on loopback. The bans are enforced by XDP on the server's interface.

- a password guesser over TLS is banned after maxretry; its next TLS connections are dropped
  in XDP (counted), while an honest phone over TLS registers throughout and is never banned;
- a guesser over TCP (which the wire capture reads too) is banned after exactly maxretry:
  each message counted once;
- forged HEP (a sender not allowed, a wrong key, garbage) changes nothing and is counted;
- `fastban replay` of a recording of the HEP feed decides what the live guard decided;
- HEP over TCP (siptrace's transport=tcp) works the same.
"""

import sys
import time

import pytest

from conftest import require_tool
from fastban.config import load_settings
from fastban.lab.guard_process import GuardProcess
from fastban.lab.siplab import PHONE_V4, SipLab
from fastban.replay import replay

from labwait import row_for, running_guard, settle, wait_for_ban
from traces import hep3, sip_response

MAXRETRY = 5
HEP_PORT = 9060
KEY = "lab-hep-key"
# Kamailio sends UDP HEP from its first SIP socket (the server's address), TCP HEP from loopback.
SENDERS = ["127.0.0.1", "192.0.2.10"]


def tools():
    for tool in ("kamailio", "sipp", "socat", "openssl"):
        require_tool(tool)


@pytest.fixture(scope="module")
def lab(kernel):
    tools()
    with SipLab(attackers=4, tls=True, hep_to=f"127.0.0.1:{HEP_PORT}", hep_auth_key=KEY) as lab:
        yield lab


def guard_settings(workdir, **extra):
    return dict(maxretry=MAXRETRY, bantime=600, hep_listen=f"127.0.0.1:{HEP_PORT}",
                hep_auth_key=KEY, hep_senders=SENDERS, **extra)


@pytest.fixture(scope="module")
def guard(lab, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("hepguard")
    with running_guard(lab, workdir, **guard_settings(workdir)) as guard:
        yield guard


def test_a_tls_guesser_is_banned_and_dropped_while_a_tls_phone_registers(lab, guard):
    attacker = lab.attacker_address(0)
    assert lab.tls_connect(0, timeout=3)                 # before: the attacker gets through
    phone = lab.start_phone(count=8, interval=0.5, transport="tls")
    attack = lab.start_attacker(guesses=30, rate=20, transport="tls", index=0).wait()
    registrations = phone.wait()
    reached = settle(lab, attacker)

    assert registrations.successes == 8 and registrations.failures == 0
    assert attack.responses.get(200, 0) == 0
    row = wait_for_ban(guard, attacker)
    assert row is not None, guard.log()[-3000:]
    assert row["failures"] == MAXRETRY
    assert f"{MAXRETRY} proven ({MAXRETRY}×bad credentials 401)" in row["reason"]
    # a REGISTER for the challenge, one per wrong guess, and what was in flight at the ban
    assert MAXRETRY + 1 <= reached <= MAXRETRY + 3
    assert row["packets_dropped"] > 0
    assert row_for(guard, PHONE_V4) is None

    dropped = guard.json("stats")["packets_dropped"]
    assert not lab.tls_connect(0, timeout=2)             # its next connection: dropped in XDP
    assert not lab.tls_connect(0, timeout=2)
    after = guard.json("stats")
    assert after["packets_dropped"] > dropped
    assert row_for(guard, attacker)["packets_dropped"] > row["packets_dropped"]
    assert after["hep"]["messages"] > 0 and after["hep"]["rejected"] == 0
    assert after["bans_active"] == 1
    assert lab.register_phone(count=2, interval=0.3, transport="tls").successes == 2


def test_a_tcp_guesser_seen_on_the_wire_and_in_hep_counts_each_guess_once(lab, guard):
    attacker = lab.attacker_address(1)
    before = guard.json("stats")
    lab.start_attacker(guesses=30, rate=10, transport="tcp", index=1).wait()
    reached = settle(lab, attacker)
    row = wait_for_ban(guard, attacker)
    assert row is not None, guard.log()[-3000:]
    assert row["failures"] == MAXRETRY
    # counted twice, it would have been banned after 3 guesses: 4 requests at the server
    assert MAXRETRY + 1 <= reached <= MAXRETRY + 3
    after = guard.json("stats")
    assert after["duplicates_skipped"] - before["duplicates_skipped"] >= 2 * MAXRETRY
    assert after["packets_captured"] > before["packets_captured"]       # the wire saw it too


def _send_from_server_namespace(lab, packets, source="127.0.0.1", tcp=False):
    """Sends HEP packets to the guard from inside the server's namespace, bound to source."""
    script = (
        "import socket, sys\n"
        "packets = [bytes.fromhex(line) for line in sys.stdin.read().split()]\n"
        f"kind = socket.SOCK_STREAM if {tcp} else socket.SOCK_DGRAM\n"
        "s = socket.socket(socket.AF_INET, kind)\n"
        f"s.bind(({source!r}, 0))\n"
        f"address = ('127.0.0.1', {HEP_PORT})\n"
        "if kind == socket.SOCK_STREAM:\n"
        "    s.settimeout(3); s.connect(address)\n"
        "    try:\n"
        "        s.sendall(b''.join(packets)); s.recv(1)\n"
        "    except OSError:\n"
        "        pass\n"
        "else:\n"
        "    for p in packets: s.sendto(p, address)\n")
    lab.server_namespace.run([sys.executable, "-c", script],
                             input="\n".join(p.hex() for p in packets), timeout=20)


def forged_failures(victim, count, key):
    """What a forger would have the guard believe: the server answered victim 403, again and
    again (each its own transaction)."""
    return [hep3(sip_response(403, call_id=f"forged-{i}", branch=f"z9hG4bKforged{i}",
                              via_host=victim, via_port=5060, transport="TLS"),
                 "192.0.2.10", victim, 5061, 5060, t=time.time(), ip_proto=6,
                 auth_key=key and key.encode())
            for i in range(count)]


def test_forged_hep_changes_nothing_and_is_counted(lab, guard):
    victim = lab.attacker_address(2)
    before = guard.json("stats")["hep"]
    _send_from_server_namespace(lab, forged_failures(victim, 20, "a-guessed-key"))
    _send_from_server_namespace(lab, forged_failures(victim, 20, None))
    _send_from_server_namespace(lab, forged_failures(victim, 20, KEY), source="127.0.0.5")
    _send_from_server_namespace(lab, forged_failures(victim, 5, KEY), source="127.0.0.5",
                                tcp=True)
    _send_from_server_namespace(lab, [b"HEP3\x00\x08xx", b"\x00" * 300,
                                      forged_failures(victim, 1, KEY)[0][:40]])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        hep = guard.json("stats")["hep"]
        if hep["rejected"] - before["rejected"] >= 64:
            break
        time.sleep(0.1)
    delta = {key: hep[key] - before[key] for key in hep if key.startswith("rejected")}
    assert delta["rejected_auth_key"] == 40
    assert delta["rejected_sender"] == 21          # 20 datagrams and one TCP connection
    assert delta["rejected_truncated"] + delta["rejected_not_hep"] + \
        delta["rejected_length"] == 3
    assert delta["rejected"] == 64
    assert row_for(guard, victim) is None
    assert guard.json("stats")["hep_rejected"] == hep["rejected"]
    assert lab.tls_connect(2, timeout=3)             # the victim is not dropped


def test_replay_of_the_recorded_hep_feed_decides_what_the_live_guard_decided(lab, guard,
                                                                             tmp_path):
    attacker = lab.attacker_address(3)
    path = tmp_path / "hep-feed.pcap"
    with lab.record(path, iface="lo"):
        lab.start_phone(count=3, interval=0.3, transport="tls").wait()
        lab.start_attacker(guesses=12, rate=10, transport="tls", index=3).wait()
        settle(lab, attacker)
        row = wait_for_ban(guard, attacker)
    assert row is not None and row["failures"] == MAXRETRY
    settings = load_settings(overrides=guard_settings(tmp_path))
    result = replay(path, settings)
    [ban] = [b for b in result.bans if b.address == attacker]
    assert (ban.failures, ban.proven) == (row["failures"], MAXRETRY)
    assert ban.reason in row["reason"]
    assert result.summary()["hep_messages"] > 0 and result.summary()["hep_rejected"] == 0
    assert [b.address for b in result.bans] == [attacker]


def test_hep_over_tcp_from_kamailio(kernel, tmp_path):
    tools()
    with SipLab(attackers=1, tls=True, hep_to=f"127.0.0.1:{HEP_PORT}", hep_transport="tcp",
                bad_auth_reply="403") as lab:
        guard = GuardProcess(lab.server_namespace, lab.server_iface, tmp_path,
                             maxretry=3, bantime=600, hep_listen=f"127.0.0.1:{HEP_PORT}",
                             hep_senders=["127.0.0.1"])
        guard.start()
        try:
            lab.start_attacker(guesses=20, rate=10, transport="tls").wait()
            row = wait_for_ban(guard, lab.attacker_address(0))
            assert row is not None, guard.log()[-3000:]
            assert row["failures"] == 3 and "403" in row["reason"]
            hep = guard.json("stats")["hep"]
            assert hep["connections"] == 1 and hep["rejected"] == 0 and hep["messages"] > 0
        finally:
            guard.detach()
