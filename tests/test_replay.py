"""`fastban replay` over scapy-built traces: the rules end to end, through the CLI too."""

import gzip
import ipaddress
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from fastban.cli import main
from fastban.config import load_settings
from fastban.packets import decode
from fastban.replay import replay

from traces import (
    SERVER, SERVER6, T0, Trace, extension_scan, guess_401, guess_403, nat_phones,
    random_addresses, retransmitted_401, wrong_password_phone)

ATTACKER = "203.0.113.9"
ATTACKER6 = "2001:db8:bad::9"
DATA = os.path.join(os.path.dirname(__file__), "data")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(path, **overrides):
    return replay(path, load_settings(overrides=overrides))


def cli(capsys, *argv):
    code = main(["replay", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


# -- legitimate traffic -------------------------------------------------------------------

def test_nat_50_phones_24h_never_banned(tmp_path, capsys):
    """50 phones behind one address re-registering every 30 s for 24 h (server's side only)."""
    path = nat_phones(Trace(), "198.51.100.1").write(tmp_path / "nat.pcap")
    code, out, err = cli(capsys, path, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["bans"] == []
    assert doc["summary"]["sip_responses"] == 50 * 2880 * 2
    assert doc["summary"]["failures"] == 0
    assert doc["rules"]["challenges"] == 50 * 2880 and doc["rules"]["cleared"] == 50 * 2880


def test_both_directions_requests_ignored(tmp_path):
    trace = nat_phones(Trace(both_directions=True), "198.51.100.1", duration=3600)
    result = run(trace.write(tmp_path / "both.pcap"))
    assert result.packets == 2 * result.sip_responses
    assert result.sip_responses == 50 * 120 * 2 and result.bans == [] and result.failures == 0


# -- attacks ------------------------------------------------------------------------------

def test_wrong_password_phone_banned(tmp_path):
    result = run(wrong_password_phone(Trace(), ATTACKER).write(tmp_path / "badpw.pcap"))
    [ban] = result.bans
    assert ban.address == ATTACKER and ban.failures == 10


@pytest.mark.parametrize("n", [3, 10])
def test_guessing_with_fresh_401_banned_after_exactly_n(tmp_path, n):
    trace = guess_401(Trace(), ATTACKER, 3 * n, interval=1.0)  # same Call-ID, same CSeq
    result = run(trace.write(tmp_path / "g401.pcap"), maxretry=n)
    first = result.bans[0]
    assert first.address == ATTACKER and first.failures == n
    assert first.at == pytest.approx(T0 + n * 1.0 + 0.02)  # the n-th wrong guess's 401
    assert result.skipped_banned == 3 * n - n  # what came after would have been dropped
    # n-1 guesses: not banned (without treating the last open challenge as unanswered)
    short = guess_401(Trace(), ATTACKER, n - 1).write(tmp_path / "short.pcap")
    assert replay(short, load_settings(overrides={"maxretry": n}), final_expire=False).bans == []


def test_guessing_with_403_banned_after_exactly_n(tmp_path):
    trace = guess_403(Trace(), ATTACKER, 25, interval=1.0)
    result = run(trace.write(tmp_path / "g403.pcap"))
    [ban] = result.bans
    assert ban.failures == 10 and "10×403" in ban.reason
    assert ban.at == pytest.approx(T0 + 9 * 1.0 + 0.05 + 0.02)
    short = run(guess_403(Trace(), ATTACKER, 9).write(tmp_path / "short.pcap"))
    assert short.bans == [] and short.failures == 9


def test_extension_scan_unanswered_banned_via_grace(tmp_path):
    trace = extension_scan(Trace(), ATTACKER, 30, interval=0.05)
    result = run(trace.write(tmp_path / "scan.pcap"))
    [ban] = result.bans
    assert ban.failures == 10
    assert "unanswered 401" in ban.reason and "unanswered 407" in ban.reason
    # decided when the 10th challenge's grace ran out
    assert ban.at == pytest.approx(T0 + 9 * 0.05 + 0.02 + 32)


def test_scan_with_later_traffic_expires_during_the_capture(tmp_path):
    trace = extension_scan(Trace(), ATTACKER, 12)
    nat_phones(trace, "198.51.100.1", phones=2, duration=120)  # keeps the capture going
    result = replay(trace.write(tmp_path / "scan2.pcap"), load_settings(), final_expire=False)
    [ban] = result.bans
    assert ban.address == ATTACKER and ban.at < result.last_timestamp


def test_retransmitted_401_counts_once(tmp_path):
    trace = retransmitted_401(Trace(), ATTACKER, copies=5)
    result = run(trace.write(tmp_path / "retx.pcap"), maxretry=1)
    assert result.bans == [] and result.failures == 0
    assert result.rules["retransmissions"] == 4


# -- formats ------------------------------------------------------------------------------

@pytest.mark.parametrize("link", ["ether", "sll", "sll2"])
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
@pytest.mark.parametrize("server,transport", [(SERVER, "udp"), (SERVER6, "udp"),
                                              (SERVER, "tcp"), (SERVER6, "tcp")])
def test_links_formats_ip_versions_transports(tmp_path, link, fmt, server, transport):
    peer = ATTACKER6 if ":" in server else ATTACKER
    trace = guess_401(Trace(server=server, transport=transport), peer, 12)
    result = run(trace.write(tmp_path / f"t.{fmt}", link=link, fmt=fmt))
    assert result.sip_responses == 13 and result.malformed == 0 and result.undecodable == 0
    [ban] = result.bans
    assert ban.address == peer and ban.failures == 10


def test_compact_headers(tmp_path):
    trace = Trace()
    trace.exchange(T0, ATTACKER, "REGISTER", 401, call_id="cmp", compact=True)
    for i in range(1, 11):
        trace.exchange(T0 + i, ATTACKER, "REGISTER", 401, call_id="cmp", auth=True, compact=True)
    assert b"\r\ni: cmp\r\n" in trace.packets[0][5]
    [ban] = run(trace.write(tmp_path / "compact.pcap")).bans
    assert ban.failures == 10


def test_gzipped_capture(tmp_path):
    raw = guess_401(Trace(), ATTACKER, 10).write(tmp_path / "g.pcap")
    with open(raw, "rb") as f, gzip.open(tmp_path / "g.pcap.gz", "wb") as g:
        g.write(f.read())
    assert len(run(tmp_path / "g.pcap.gz").bans) == 1


def test_other_sip_port_and_port_filter(tmp_path):
    trace = guess_401(Trace(server=SERVER, port=5080), ATTACKER, 12)
    path = trace.write(tmp_path / "p.pcap")
    assert run(path).sip_responses == 0  # 5080 is not a SIP port by default
    assert len(run(path, sip_ports="5060 5080").bans) == 1


def test_decoder_agrees_with_scapy(tmp_path):
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether

    classes = {"ether": (1, Ether), "sll": (113, CookedLinux), "sll2": (276, CookedLinuxV2)}
    for link, (lt, cls) in classes.items():
        for server, transport in [(SERVER, "udp"), (SERVER6, "tcp")]:
            trace = guess_401(Trace(server=server, transport=transport), ATTACKER6
                              if ":" in server else ATTACKER, 2)
            for _, frame in trace.frames(link):
                segment = decode(lt, frame)
                pkt = cls(frame)
                ip = pkt[IPv6] if IPv6 in pkt else pkt[IP]
                l4 = pkt[TCP] if TCP in pkt else pkt[UDP]
                assert segment.src == ipaddress.ip_address(ip.src)
                assert segment.dst == ipaddress.ip_address(ip.dst)
                assert (segment.sport, segment.dport) == (l4.sport, l4.dport)
                assert segment.payload == bytes(l4.payload)
                assert segment.payload_len == len(bytes(l4.payload))
                assert segment.protocol == ("tcp" if TCP in pkt else "udp")
                if TCP in pkt:
                    assert segment.tcp_seq == l4.seq


def test_stored_sample_capture(capsys):
    """tests/data/guess401.pcap: 12 wrong guesses from 203.0.113.9 (made by traces.guess_401)."""
    code, out, _ = cli(capsys, os.path.join(DATA, "guess401.pcap"))
    assert code == 0
    assert out.startswith("ban 203.0.113.9  at 2025-11-30T00:00:02.020Z  after 10 failures "
                          "(10 failures in 2 s: 10 unproven (10×repeated 401)); "
                          "bantime 43200 s\n")
    assert ("summary: 13 packets read, 13 SIP responses, 0 requests, 0 malformed skipped, "
            "10 failures (0 proven), 0 logins, 1 ban") in out


# -- whitelist, caps ----------------------------------------------------------------------

@pytest.mark.parametrize("whitelist,peer", [
    ("203.0.113.9", ATTACKER), ("10.9.9.9 203.0.113.0/24", ATTACKER),
    ("2001:db8:bad::9", ATTACKER6), ("2001:db8::/32", ATTACKER6),
])
def test_whitelist_never_banned(tmp_path, capsys, whitelist, peer):
    server = SERVER6 if ":" in peer else SERVER
    trace = guess_403(Trace(server=server), peer, 30)
    extension_scan(trace, peer, 30)
    code, out, _ = cli(capsys, trace.write(tmp_path / "wl.pcap"), "--whitelist", whitelist,
                       "--json")
    doc = json.loads(out)
    assert code == 0 and doc["bans"] == [] and doc["summary"]["failures"] == 0
    assert doc["rules"]["whitelisted_skipped"] == 2 * 30 + 30


def test_a_whitelisted_subnet_covers_its_addresses(tmp_path):
    path = guess_403(Trace(), ATTACKER, 30).write(tmp_path / "nb.pcap")
    assert run(path, whitelist="203.0.113.0/24").bans == []
    assert [str(b.network) for b in run(path, whitelist="203.0.114.0/24").bans] == [
        f"{ATTACKER}/32"]


def test_caps_hold_under_flood(tmp_path):
    """Random Call-IDs from random sources: the tables stay at their caps, nothing is banned."""
    trace = Trace()
    for i, peer in enumerate(random_addresses(3000)):
        trace.respond(T0 + i * 0.001, peer, 401, call_id=f"flood-{i}", branch=f"z9hG4bK{i}")
    cfg = tmp_path / "caps.toml"
    cfg.write_text("max_open_challenges = 500\nmax_sources = 200\n")
    result = replay(trace.write(tmp_path / "flood.pcap"), load_settings(cfg))
    assert result.rules["challenges_evicted"] == 2500
    assert result.rules["sources_evicted"] > 0
    assert result.bans == []


# -- the command --------------------------------------------------------------------------

def test_cli_text_and_flags(tmp_path, capsys):
    path = guess_403(Trace(), ATTACKER, 6).write(tmp_path / "g.pcap")
    code, out, _ = cli(capsys, path, "--maxretry", "5", "--bantime", "600")
    assert code == 0
    assert out.startswith("ban 203.0.113.9  at 2025-11-30T00:00:00.870Z  after 5 failures")  # 4 × 0.2 + 0.07 s
    assert "bantime 600 s" in out
    code, out, _ = cli(capsys, path)
    assert "no address would be banned" in out


def test_cli_config_file(tmp_path, capsys):
    path = guess_403(Trace(), ATTACKER, 6).write(tmp_path / "g.pcap")
    cfg = tmp_path / "f.toml"
    cfg.write_text("maxretry = 3\n")
    code, out, _ = cli(capsys, path, "--config", cfg, "--json")
    [ban] = json.loads(out)["bans"]
    assert ban["failures"] == 3 and ban["address"] == ATTACKER
    code, out, _ = cli(capsys, path, "--config", cfg, "--maxretry", "6", "--json")
    assert json.loads(out)["bans"][0]["failures"] == 6  # flags win


@pytest.mark.parametrize("content", [b"", b"hello, this is not a capture\n", b"\xd4\xc3\xb2\xa1\x02"])
def test_unreadable_capture_one_line_exit_2(tmp_path, capsys, content):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(content)
    code, out, err = cli(capsys, bad)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "not a pcap or pcapng capture file" in err
    assert "Traceback" not in err


def test_missing_file_and_bad_flag(tmp_path, capsys):
    code, _, err = cli(capsys, tmp_path / "nope.pcap")
    assert code == 2 and err.strip().endswith("nope.pcap: no such file")
    path = guess_403(Trace(), ATTACKER, 1).write(tmp_path / "g.pcap")
    code, _, err = cli(capsys, path, "--maxretry", "ten")
    assert code == 2 and err == 'fastban replay: maxretry: must be a whole number ≥ 1, got "ten"\n'


def test_truncated_capture_reports_what_was_read(tmp_path, capsys):
    path = guess_401(Trace(), ATTACKER, 12).write(tmp_path / "g.pcap")
    data = open(path, "rb").read()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 100])
    code, out, _ = cli(capsys, cut)
    assert code == 0 and "ban 203.0.113.9" in out


def test_python_m_fastban_subprocess(tmp_path):
    path = guess_401(Trace(), ATTACKER, 12).write(tmp_path / "g.pcap")
    env = dict(os.environ, PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, "-m", "fastban", "replay", str(path), "--json"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [b["address"] for b in doc["bans"]] == [ATTACKER]
    bad = tmp_path / "bad.pcap"
    bad.write_text("junk")
    done = subprocess.run([sys.executable, "-m", "fastban", "replay", str(bad)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_tcp_segment_with_several_messages(tmp_path):
    from traces import sip_response
    trace = Trace(transport="tcp")
    for i in range(5):  # each segment: a 401 then a 403 of the next transaction
        both = b"".join(sip_response(s, call_id=f"tcp{i}", branch=f"z9hG4bK{i}{s}",
                                     via_host=ATTACKER, transport="TCP") for s in (401, 403))
        trace.add(T0 + i, SERVER, ATTACKER, 5060, 40000, both)
    trace.add(T0 + 9, SERVER, ATTACKER, 5060, 40000, b"SIP/2.0 200 OK\r\nCall-ID: cut")  # cut
    result = run(trace.write(tmp_path / "tcp.pcap"), maxretry=5)
    assert result.sip_responses == 10 and result.malformed == 0    # the last one never ends
    [ban] = result.bans
    assert ban.failures == 5 and "5×403" in ban.reason


# -- IP fragments -----------------------------------------------------------------------------

def _fragmented_office(rnd, noise: bool):
    """Frames of phones sharing one account behind one address (each challenge answered by a
    200 OK too big for one packet, sent as IP fragments) and a guesser; with noise, later
    fragments come duplicated, overlapping, shuffled, and with junk datagrams that never
    complete. Without noise only the first fragments are there."""
    from scapy.layers.inet import IP, UDP, fragment
    from scapy.layers.l2 import Ether
    from traces import sip_response
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    contacts = "".join(f"Contact: <sip:3000@192.168.50.2:{40000 + i}>;expires=60\r\n"
                       for i in range(40))
    frames, later_count, t = [], 0, T0
    for cycle in range(6):
        for phone in range(8):
            call_id = f"shared-{phone}"
            port = 40000 + phone
            challenge = sip_response(401, call_id=call_id, branch=f"z9hG4bK{cycle}a{phone}",
                                     via_host="198.51.100.20", via_port=port, cseq=2 * cycle)
            ok = sip_response(200, call_id=call_id, branch=f"z9hG4bK{cycle}b{phone}",
                              via_host="198.51.100.20", via_port=port, cseq=2 * cycle + 1)
            ok = ok.replace(b"Server:", contacts.encode() + b"Server:")
            ip = IP(src=SERVER, dst="198.51.100.20", id=rnd.randrange(65536))
            frames.append((t, bytes(eth / ip / UDP(sport=5060, dport=port) / challenge)))
            pieces = [bytes(eth / p) for p in fragment(ip / UDP(sport=5060, dport=port) / ok,
                                                       fragsize=rnd.choice((600, 1000, 1400)))]
            later = pieces[1:]
            if noise:
                later += [rnd.choice(later) for _ in range(rnd.randrange(3))]   # duplicates
                rnd.shuffle(later)
                junk = IP(src=SERVER, dst="198.51.100.20", id=rnd.randrange(65536),
                          flags="MF", frag=rnd.randrange(1, 400)) / rnd.randbytes(64)
                later.append(bytes(eth / junk))                 # a datagram never completed
                overlap = IP(src=SERVER, dst="198.51.100.20", id=ip.id, frag=1) / \
                    (b"SIP/2.0 401 Unauthorized\r\nCall-ID: x\r\n\r\n")
                later.append(bytes(eth / overlap))              # overlaps the first one
                later_count += len(later)
                frames += [(t + 0.02 + k * 0.0001, f) for k, f in enumerate([pieces[0], *later])]
            else:
                frames.append((t + 0.02, pieces[0]))
            t += 0.5
    guesses = guess_401(Trace(), ATTACKER, 12, t0=t)
    frames += list(guesses.frames())
    return frames, later_count


def _write_frames(path, frames):
    from scapy.utils import RawPcapWriter
    writer = RawPcapWriter(str(path), linktype=1)
    writer.write_header(None)
    for t, frame in sorted(frames, key=lambda f: f[0]):
        writer.write_packet(frame, sec=int(t), usec=int(round((t - int(t)) * 1e6)))
    writer.close()
    return path


@hsettings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_fragment_floods_and_overlaps_change_no_decision(tmp_path_factory, seed):
    """Replay reads first fragments as the live capture copies them, and nothing else of a
    fragmented datagram: later, duplicated, overlapping and never-completed fragments change
    no decision and keep no state."""
    import random
    folder = tmp_path_factory.mktemp("fragments")
    clean_frames, _ = _fragmented_office(random.Random(seed), noise=False)
    noisy_frames, later = _fragmented_office(random.Random(seed), noise=True)
    clean = run(_write_frames(folder / "clean.pcap", clean_frames), maxretry=3)
    noisy = run(_write_frames(folder / "noisy.pcap", noisy_frames), maxretry=3)
    assert [(b.address, b.failures, b.reason) for b in noisy.bans] == \
        [(b.address, b.failures, b.reason) for b in clean.bans] == \
        [(ATTACKER, 3, "3 failures in 0 s: 3 unproven (3×repeated 401)")]
    assert noisy.rules == clean.rules and noisy.rules["cleared"] == 48
    assert noisy.later_fragments == later and clean.later_fragments == 0
    assert noisy.reader["fragments"] == clean.reader["fragments"] == 48
    assert noisy.reader["truncated_unusable"] == 0
