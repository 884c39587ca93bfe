"""The SIP lab over TLS, and Kamailio mirroring its traffic as HEPv3 (siptrace).

No fastban here: with SipLab(tls=True, hep_to=...) an honest phone registers over TLS (sipp
over TCP to a socat relay in its namespace, the relay opening TLS to the server's 5061), a
guesser over TLS gets its 401s (or 403s) and the server counts them, and a collector in the
server's namespace receives, as HEPv3 over UDP (or TCP), every request the server received and
every reply it sent, over TLS, TCP and UDP alike, the stateless replies and the challenges
included. HEP is not decoded here: a packet starts with b"HEP3" and holds the SIP message's
bytes, which is all these tests look for.
"""

import glob
import time

import pytest

from fastban.lab.siplab import TLS_PORT, SipLab, SipLabError, TlsRelay
from conftest import IN_CI, require_tool

SLOW = 3.0
HEP_PORT = 9060              # any port will do: the server's namespace is the lab's own
AUTH_KEY = "lab-hep-key"


@pytest.fixture(scope="module")
def tools(kernel):
    for tool in ("kamailio", "sipp", "socat", "openssl"):
        require_tool(tool)
    if not glob.glob("/usr/lib/*/kamailio/modules/tls.so") + glob.glob(
            "/usr/lib/kamailio/modules/tls.so"):
        message = "Kamailio's TLS module is not installed (kamailio-tls-modules; make host)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def lab(tools):
    with SipLab(attackers=1, tls=True, hep_to=f"127.0.0.1:{HEP_PORT}", office_accounts=0,
                hep_auth_key=AUTH_KEY, hep_capture_id=4242) as lab:
        lab.collector = lab.start_hep_collector()
        yield lab


@pytest.fixture(scope="module")
def tcp_lab(tools):
    """403 for bad credentials, and HEP over TCP."""
    with SipLab(attackers=1, tls=True, hep_to=f"127.0.0.1:{HEP_PORT}", hep_transport="tcp",
                bad_auth_reply="403", office_accounts=0) as lab:
        lab.collector = lab.start_hep_collector()
        yield lab


def _call_ids(lab, address):
    return {r.call_id for r in lab.server_requests() if r.source == address}


def _mirrored(collector, call_id, needle, count):
    """The HEP packets holding `needle` and the Call-ID, once there are `count` (or after a
    few seconds: the collector reads them as they come)."""
    return collector.wait_for(needle, f"Call-ID: {call_id}".encode(), count=count, timeout=5)


# ------------------------------------------------------------------ without root


def test_the_config_has_tls_and_siptrace_only_when_asked():
    plain = SipLab().render_config()
    assert "listen=tls:" not in plain and "#!define TLS_OFF" in plain
    assert "#!define HEP_OFF" in plain
    cfg = SipLab(tls=True, hep_to="127.0.0.1:9999", hep_transport="tcp", hep_auth_key="k-1",
                 hep_capture_id=7).render_config()
    assert "@@" not in cfg
    for listen in (f"tls:192.0.2.10:{TLS_PORT}", f"tls:[2001:db8:2::10]:{TLS_PORT}",
                   "tcp:192.0.2.10:5060", "udp:[2001:db8:2::10]:5060"):
        assert f"listen={listen}" in cfg
    assert "#!define TLS_ON" in cfg and "#!define HEP_ON" in cfg
    for line in ('"duplicate_uri", "sip:127.0.0.1:9999;transport=tcp"', '"trace_mode", 1',
                 '"hep_version", 3', '"hep_capture_id", 7', '"auth_key", "k-1"',
                 '"trace_init_mode", 1'):
        assert f'modparam("siptrace", {line})' in cfg


def test_bad_tls_and_hep_options_are_refused():
    for options in ({"hep_to": "192.0.2.10:9060"}, {"hep_to": "127.0.0.1"},
                    {"hep_to": "127.0.0.1:0"}, {"hep_to": "127.0.0.1:9060", "hep_transport": "tls"},
                    {"hep_to": "127.0.0.1:9060", "hep_auth_key": 'x"y'}):
        with pytest.raises(SipLabError):
            SipLab(**options)
    with pytest.raises(SipLabError, match="tls=True"):        # before anything is started
        SipLab()._sipp(None, "phone_register.xml", "198.51.100.10", 4, "tls", [], 10)


# ------------------------------------------------------------------ a real server


def test_a_phone_registers_over_tls_and_both_ways_are_mirrored(lab):
    address = lab.phone_address
    before = _call_ids(lab, address)
    result = lab.register_phone(count=2, interval=0.05, transport="tls", response_timeout=SLOW)
    assert (result.successes, result.failures) == (2, 0)
    assert result.responses == {401: 2, 200: 2} and result.requests_sent == 4
    arrived = [m for m in lab.server_messages() if m.source == address]
    assert {m.proto for m in arrived} == {"tls"} and len(arrived) == 4
    assert lab.server_replies_to(address) == {401: 2, 200: 2}
    for call_id in _call_ids(lab, address) - before:
        registers = _mirrored(lab.collector, call_id, b"REGISTER sip:", 2)
        assert len(registers) == 2
        assert all(b"Via: SIP/2.0/TLS " in p for p in registers)
        assert len(_mirrored(lab.collector, call_id, b"SIP/2.0 401", 1)) == 1
        assert len(_mirrored(lab.collector, call_id, b"SIP/2.0 200 OK", 1)) == 1
    # Every packet is HEPv3 with the lab's auth key: found, not decoded.
    packets = lab.collector.packets()
    assert packets and all(p.startswith(b"HEP3") for p in packets)
    assert all(AUTH_KEY.encode() in p for p in packets)
    assert lab.collector.peers() == {("192.0.2.10", 5060)}   # Kamailio's UDP socket sends
    # The relay ended with the phone.
    assert not [c for c in lab._clients if isinstance(c, TlsRelay) and c.running()]


@pytest.mark.parametrize("transport,family", [("tls", 4), ("tls", 6), ("tcp", 4), ("udp", 6)])
def test_a_guesser_gets_its_401s_and_every_one_is_mirrored(lab, transport, family):
    address = lab.attacker_address(0, family)
    before = _call_ids(lab, address)
    failures = lab.server_auth_failures_to(address)
    result = lab.start_attacker(guesses=10, rate=200, transport=transport, family=family,
                                response_timeout=SLOW).wait()
    assert result.responses.get(200, 0) == 0 and result.timeouts == 0
    assert result.responses[401] >= 11
    sent = result.requests_sent           # 11, unless a slow answer made sipp retransmit (UDP)
    assert sent == 11 or (transport == "udp" and sent > 11)
    assert lab.server_auth_failures_to(address) - failures >= 10
    (call_id,) = _call_ids(lab, address) - before
    arrived = [r for r in lab.server_requests() if r.call_id == call_id]
    assert {r.proto for r in arrived} == {transport} and len(arrived) == sent
    answered = [r for r in lab.server_replies() if r.call_id == call_id]
    assert {r.code for r in answered} == {401} and len(answered) == sent
    assert len(_mirrored(lab.collector, call_id, b"REGISTER sip:", sent)) == sent
    assert len(_mirrored(lab.collector, call_id, b"SIP/2.0 401", sent)) == sent


def test_an_invite_guesser_over_tls_its_407s_and_acks_are_mirrored(lab):
    address = lab.attacker_address(0)
    before = _call_ids(lab, address)
    result = lab.start_attacker(guesses=3, rate=200, transport="tls", method="INVITE",
                                response_timeout=SLOW).wait()
    assert result.by_method == {"INVITE": 4, "ACK": 4} and result.responses[407] == 4
    (call_id,) = _call_ids(lab, address) - before
    assert len(_mirrored(lab.collector, call_id, b"INVITE sip:", 4)) == 4
    assert len(_mirrored(lab.collector, call_id, b"SIP/2.0 407", 4)) == 4
    # ACKs sl absorbs before the script are mirrored too, each once.
    assert len(_mirrored(lab.collector, call_id, b"ACK sip:", 4)) == 4
    time.sleep(0.2)
    assert len(lab.collector.containing(b"ACK sip:", call_id.encode())) == 4


def test_a_bare_tls_connection_gets_through_unless_dropped(lab):
    assert lab.tls_connect(0, timeout=2)
    assert lab.tls_connect(0, timeout=2, family=6)
    assert lab.tcp_connect(0, timeout=2)
    address = lab.attacker_address(0)
    lab.drop_at_router(address)
    try:
        started = time.monotonic()
        assert not lab.tls_connect(0, timeout=1)
        assert time.monotonic() - started < 3
    finally:
        lab.undrop_at_router(address)
    assert lab.tls_connect(0, timeout=2)


def test_over_a_tcp_collector_in_403_mode(tcp_lab):
    lab = tcp_lab
    phone = lab.register_phone(count=1, interval=0.05, transport="tls", response_timeout=SLOW)
    assert (phone.successes, phone.failures) == (1, 0)
    address = lab.attacker_address(0)
    before = _call_ids(lab, address)
    result = lab.start_attacker(guesses=5, rate=200, transport="tls",
                                response_timeout=SLOW).wait()
    assert result.responses == {401: 1, 403: 5, 200: 0} and result.requests_sent == 6
    assert lab.server_auth_failures_to(address) == 5
    assert lab.server_replies_to(address) == {401: 1, 403: 5}
    (call_id,) = _call_ids(lab, address) - before
    assert len(_mirrored(lab.collector, call_id, b"REGISTER sip:", 6)) == 6
    assert len(_mirrored(lab.collector, call_id, b"SIP/2.0 401", 1)) == 1
    assert len(_mirrored(lab.collector, call_id, b"SIP/2.0 403", 5)) == 5
    address6 = lab.attacker_address(0, 6)
    before6 = _call_ids(lab, address6)
    tcp = lab.start_attacker(guesses=2, rate=200, transport="tcp", family=6,
                             response_timeout=SLOW).wait()
    assert tcp.responses[403] == 2
    (tcp_call_id,) = _call_ids(lab, address6) - before6
    assert len(_mirrored(lab.collector, tcp_call_id, b"REGISTER sip:", 3)) == 3
    assert len(_mirrored(lab.collector, tcp_call_id, b"SIP/2.0 403", 2)) == 2
    packets = lab.collector.packets()
    assert packets and all(p.startswith(b"HEP3") for p in packets)
    assert {peer[0] for peer in lab.collector.peers()} == {"127.0.0.1"}   # a TCP connection
