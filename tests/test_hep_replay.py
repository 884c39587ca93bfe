"""HEP through the detection path: `fastban replay` of captures of a HEP feed (the same code
as the live HEP input from the packet on: fastban.hep_feed, fastban.detection)."""

import pytest

from fastban.cli import main
from fastban.config import load_settings
from fastban.replay import replay

from traces import T0, Trace, as_hep, guess_401, guess_403, nat_phones

ATTACKER = "203.0.113.9"
KEY = b"s3cret-hep-key"


def run(path, **overrides):
    return replay(path, load_settings(overrides=overrides))


def tls_trace(**kw) -> Trace:
    """What a TLS server handles (5061, both directions): HEP's view, never the wire's."""
    return Trace(port=5061, transport="tcp", both_directions=True, **kw)


@pytest.mark.parametrize("n", [3, 10])
def test_a_tls_guesser_seen_only_through_hep_is_banned_after_exactly_n(tmp_path, n):
    guesses = guess_401(tls_trace(), ATTACKER, 3 * n, interval=1.0)
    result = run(as_hep(guesses).write(tmp_path / "hep.pcap"), maxretry=n)
    first = result.bans[0]
    assert (first.address, first.failures, first.proven) == (ATTACKER, n, n)
    assert first.at == pytest.approx(T0 + n * 1.0 + 0.02 + 0.001)   # the n-th 401, via HEP
    assert result.summary()["hep_messages"] == 2 * (3 * n + 1)
    assert result.summary()["hep_rejected"] == 0 and result.sip_responses == 3 * n + 1


def test_hep_and_the_wire_decide_alike(tmp_path):
    """The same conversations as wire packets and as a HEP feed: the same bans."""
    trace = guess_403(Trace(both_directions=True), ATTACKER, 12)
    nat_phones(trace, "198.51.100.1", phones=20, duration=600)
    wire = run(trace.write(tmp_path / "wire.pcap"), maxretry=5)
    fed = run(as_hep(trace, ip_proto=17).write(tmp_path / "hep.pcap"), maxretry=5)
    assert [(b.address, b.failures, b.proven, b.reason) for b in wire.bans] == \
        [(b.address, b.failures, b.proven, b.reason) for b in fed.bans]
    assert len(fed.bans) == 1 and fed.rules["logins"] == wire.rules["logins"] > 0


def test_a_message_on_the_wire_and_in_hep_counts_once(tmp_path):
    """A plain UDP server that also sends HEP: every message arrives twice, 1 ms apart."""
    trace = guess_401(Trace(both_directions=True), ATTACKER, 12, interval=1.0)
    both = as_hep(trace, ip_proto=17, keep_wire=True).write(tmp_path / "both.pcap")
    result = run(both, maxretry=5)
    [ban] = result.bans[:1]
    assert ban.failures == 5 and ban.at == pytest.approx(T0 + 5.02)   # the wire's copy first
    assert result.duplicates > 0
    assert result.summary()["duplicates_skipped"] == result.duplicates
    wire_only = run(trace.write(tmp_path / "wire.pcap"), maxretry=5)
    assert [(b.address, b.failures, b.at) for b in wire_only.bans] == \
        [(b.address, b.failures, b.at) for b in result.bans]
    assert result.failures == wire_only.failures


def test_honest_phones_behind_nat_through_hep_are_never_banned(tmp_path):
    trace = nat_phones(Trace(port=5061, transport="tcp", both_directions=True), "198.51.100.1",
                       phones=30, duration=3600)
    result = run(as_hep(trace).write(tmp_path / "nat.pcap"), maxretry=3)
    assert result.bans == [] and result.failures == 0 and result.rules["logins"] > 0


def test_hep_from_a_sender_not_allowed_changes_nothing(tmp_path):
    guesses = guess_401(tls_trace(), ATTACKER, 20)
    path = as_hep(guesses, sender="198.51.100.77").write(tmp_path / "forged.pcap")
    result = run(path, maxretry=3)
    assert result.bans == [] and result.sip_responses == 0
    assert result.hep["rejected_sender"] == result.hep["rejected"] == 42
    allowed = run(path, maxretry=3, hep_senders="198.51.100.0/24")
    assert [b.address for b in allowed.bans] == [ATTACKER]


def test_the_auth_key_is_checked(tmp_path):
    guesses = guess_401(tls_trace(), ATTACKER, 20)
    right = as_hep(guesses, auth_key=KEY).write(tmp_path / "right.pcap")
    wrong = as_hep(guesses, auth_key=b"guessed").write(tmp_path / "wrong.pcap")
    none = as_hep(guesses).write(tmp_path / "none.pcap")
    key = KEY.decode()
    assert [b.address for b in run(right, maxretry=3, hep_auth_key=key).bans] == [ATTACKER]
    for path in (wrong, none):
        result = run(path, maxretry=3, hep_auth_key=key)
        assert result.bans == [] and result.hep["rejected_auth_key"] == 42


def test_hep_over_tcp_in_a_capture(tmp_path):
    guesses = guess_401(tls_trace(), ATTACKER, 9, interval=1.0)
    result = run(as_hep(guesses, transport="tcp").write(tmp_path / "hep-tcp.pcap"), maxretry=3)
    assert [(b.address, b.failures) for b in result.bans][:1] == [(ATTACKER, 3)]
    assert result.hep["messages"] == 20 and result.hep["rejected"] == 0


def test_the_server_side_is_told_by_its_ports_and_addresses(tmp_path):
    """A 401 HEP says came from a port that is not the server's is not the server's answer;
    with hep_server_addresses, neither is one from another address."""
    guesses = guess_401(Trace(port=5070, transport="tcp", both_directions=True), ATTACKER, 9)
    path = as_hep(guesses).write(tmp_path / "port.pcap")
    assert run(path, maxretry=3).bans == []
    assert [b.address for b in run(path, maxretry=3, hep_server_ports=[5070]).bans] == [ATTACKER]
    assert run(path, maxretry=3, hep_server_ports=[5070],
               hep_server_addresses="192.0.2.99").bans == []
    assert [b.address for b in run(path, maxretry=3, hep_server_ports=[5070],
                                   hep_server_addresses="192.0.2.0/24").bans] == [ATTACKER]


def test_the_cli_reports_hep(tmp_path, capsys):
    path = as_hep(guess_401(tls_trace(), ATTACKER, 9)).write(tmp_path / "hep.pcap")
    assert main(["replay", str(path), "--maxretry", "3"]) == 0
    out = capsys.readouterr().out
    assert f"ban {ATTACKER}" in out and "20 SIP messages from HEP" in out


def test_the_first_message_of_a_capture_counts_once_too(tmp_path):
    """The wire's copy comes before the first HEP packet of the recording: still one failure."""
    trace = Trace()
    trace.respond(T0, ATTACKER, 403, call_id="one", branch="z9hG4bKone")
    both = as_hep(trace, ip_proto=17, keep_wire=True).write(tmp_path / "first.pcap")
    result = run(both, maxretry=2)
    assert result.failures == 1 and result.bans == [] and result.duplicates == 1
