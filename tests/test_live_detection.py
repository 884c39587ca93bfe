"""Detection through the path a user runs: the real kernel capture in front of the lab's real
Kamailio, `fastban run` deciding, and `fastban replay` of a recording of the same traffic
deciding the same.

* An office of 50 phones behind one NAT address (REGISTER with digest auth, OPTIONS
  keep-alives, INVITE -> 407 -> INVITE with credentials -> 486/200 -> BYE, at random) for
  three minutes: no failure, no ban. The same over TCP and IPv6, 20 phones for a minute.
* A forger elsewhere sends 10,000 requests with the office's address, then 10,000 more with
  made-up credentials: the office, trusted since its phones logged in, is not banned. A
  password guesser on an office machine is then banned after maxretry proven failures.
* A scanner that never answers its challenges is banned; so is svcrack, which reuses its
  Call-ID and CSeq with a new branch for every guess.
* 40 phones of one shared account (their 200 OKs leave in IP fragments) for two minutes, over
  IPv4 and over IPv6: no failure, no ban.

Each test runs its own guard on fresh state and records the server's interface for as long
as it runs; the live guard's counts and bans are then compared with the replay's.
"""
import json
import subprocess
import sys
import time

import pytest

from conftest import require_tool
from fastban.lab.siplab import SipLab
from labwait import running_guard

MAXRETRY = 5
GRACE = 4.0           # challenge_grace: short, so unanswered challenges count soon
SLOW = 5.0            # a phone waits this long for an answer on a busy machine


@pytest.fixture(scope="module")
def lab(kernel):
    for tool in ("kamailio", "sipp", "nft", "tcpdump", "svcrack"):
        require_tool(tool)
    with SipLab(attackers=2) as lab:
        lab.add_office()
        lab.add_forger()
        yield lab


@pytest.fixture
def guard(lab, tmp_path):
    workdir = tmp_path / "guard"
    workdir.mkdir()
    with running_guard(lab, workdir, maxretry=MAXRETRY, findtime=600, bantime=600,
                       challenge_grace=GRACE) as guard:
        yield guard


def settle(guard):
    """Lets the last challenges expire in the live guard (grace, then a tick)."""
    time.sleep(GRACE + 2.5)
    return guard.json("stats")


def replay(guard, recording):
    done = subprocess.run([sys.executable, "-m", "fastban", "replay", str(recording.path),
                           "--config", str(guard.config), "--json"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def bans_of(rows):
    return sorted((row["target"], row["failures"], row["reason"].split(": ", 1)[1])
                  for row in rows)


def assert_agree(live: dict, live_bans: list, replayed: dict):
    """The live guard and the replay of its traffic decided the same."""
    summary, rules = replayed["summary"], replayed["rules"]
    capture = {key: live[key] for key in ("events_lost", "packets_captured", "captured_unsure",
                                          "captured_by_reason", "fragments", "truncated",
                                          "requests_parsed", "responses_parsed")}
    differ = {key: (value, rules.get(key)) for key, value in live["rule_counts"].items()
              if value != rules.get(key)}            # (live, replayed)
    assert (live["failures_counted"], live["failures_proven"], live["logins"],
            live["unproven_of_trusted"]) == \
        (summary["failures"], summary["failures_proven"], summary["logins"],
         rules["unproven_of_trusted"]), (capture, differ)
    assert live["challenges_seen"] == rules["challenges"]
    assert bans_of(live_bans) == sorted(
        (ban["network"], ban["failures"], ban["reason"].split(": ", 1)[1])
        for ban in replayed["bans"])


def test_an_office_of_50_phones_behind_one_address_is_never_banned(lab, guard, tmp_path):
    office = lab.office(0)
    with lab.record(tmp_path / "office.pcap") as recording:
        result = office.run_phones(count=50, duration=180, register_interval=20,
                                   options_interval=5, call_interval=40, call_hold=2.0,
                                   response_timeout=SLOW)
    assert result.phones_registered == 50 and result.failures == 0
    assert result.auth_rejections == 0 and result.calls_answered and result.calls_busy
    assert result.by_kind["OPTIONS"].answered > 1000
    live = settle(guard)
    assert live["failures_counted"] == 0 and live["bans_active"] == 0
    assert live["logins"] >= result.registrations_ok
    assert live["trusted_sources"] == 1 and live["events_lost"] == 0
    replayed = replay(guard, recording)
    assert replayed["bans"] == [] and replayed["summary"]["failures"] == 0
    assert_agree(live, guard.json("list")["bans"], replayed)
    # The kernel copied the challenges, their answers and the requests with credentials,
    # not the keep-alives: far fewer messages than the office exchanged.
    assert live["packets_captured"] < replayed["summary"]["segments"] / 2


def test_an_office_over_tcp_and_ipv6_is_never_banned_and_replay_agrees(lab, guard, tmp_path):
    """Over TCP the detection path puts streams back together (a segment may hold several
    messages or part of one); live and replay still decide the same."""
    office = lab.office(0)
    with lab.record(tmp_path / "office-tcp.pcap") as recording:
        result = office.run_phones(count=20, duration=60, family=6, transport="tcp",
                                   register_interval=10, options_interval=3, call_interval=20,
                                   call_hold=1.0, response_timeout=SLOW)
    assert result.phones_registered == 20 and result.failures == 0
    live = settle(guard)
    assert live["failures_counted"] == 0 and live["bans_active"] == 0 and live["logins"] > 20
    replayed = replay(guard, recording)
    assert replayed["bans"] == []
    assert_agree(live, guard.json("list")["bans"], replayed)


def test_forged_failures_cannot_ban_the_office_but_its_own_guesser_is_banned(lab, guard,
                                                                             tmp_path):
    office, forger = lab.office(0), lab.add_forger()
    public = office.public_address(4)
    with lab.record(tmp_path / "forged.pcap") as recording:
        phones = office.start_phones(count=10, duration=60, register_interval=10,
                                     options_interval=5, call_interval=30, call_hold=1.0,
                                     response_timeout=SLOW)
        deadline = time.monotonic() + 30
        while guard.json("stats")["logins"] == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        plain = forger.send(10_000, source=public, rate=1500)
        made_up = forger.send(10_000, source=public, credentials=True, rate=1500)
        assert plain.sent == made_up.sent == 10_000
        time.sleep(GRACE + 2.5)                       # the forged challenges went unanswered
        assert guard.json("list")["bans"] == []
        forged = guard.json("stats")
        assert forged["unproven_of_trusted"] >= 10_000 and forged["failures_counted"] == 0
        guesser = office.start_guesser(guesses=20, rate=10).wait()
        honest = phones.wait()
    assert honest.auth_rejections == 0
    live = settle(guard)
    [row] = guard.json("list")["bans"]
    assert row["target"] == f"{public}/32" and row["failures"] == MAXRETRY
    assert f"{MAXRETRY} proven ({MAXRETRY}×bad credentials 401)" in row["reason"]
    assert guesser.responses.get(401, 0) <= MAXRETRY + 2       # the ban stopped it
    assert_agree(live, guard.json("list")["bans"], replay(guard, recording))


def test_scanners_that_never_answer_and_svcrack_are_banned(lab, guard, tmp_path):
    scanner, cracker = lab.attacker_address(0), lab.attacker_address(1)
    with lab.record(tmp_path / "scan.pcap") as recording:
        lab.start_scanner(index=0, extensions="1000-1030", response_timeout=SLOW).wait()
        lab.start_svcrack(index=1, guesses=20).wait()
    live = settle(guard)
    rows = {row["target"]: row for row in guard.json("list")["bans"]}
    assert f"{MAXRETRY} unproven ({MAXRETRY}×unanswered 401)" in \
        rows[f"{scanner}/32"]["reason"]
    assert f"{MAXRETRY} proven ({MAXRETRY}×bad credentials 401)" in \
        rows[f"{cracker}/32"]["reason"]
    assert_agree(live, list(rows.values()), replay(guard, recording))


@pytest.mark.parametrize("family", [4, 6])
def test_a_shared_account_whose_200_ok_is_fragmented_is_never_banned(lab, guard, tmp_path,
                                                                      family):
    from fastban.lab.siplab import count_fragments
    office = lab.office(0)
    with lab.record(tmp_path / "shared.pcap") as recording:
        result = office.run_phones(count=40, duration=120, family=family, shared_account=True,
                                   register_interval=5, options_interval=5, call_interval=None,
                                   response_timeout=SLOW)
    assert result.phones_registered == 40 and result.failures == 0
    assert count_fragments(recording.path).datagrams > 100
    live = settle(guard)
    assert live["failures_counted"] == 0 and live["bans_active"] == 0
    assert live["fragments"] > 0 and live["truncated_unusable"] == 0
    replayed = replay(guard, recording)
    assert replayed["bans"] == [] and replayed["summary"]["first_fragments"] > 0
    assert_agree(live, guard.json("list")["bans"], replayed)
