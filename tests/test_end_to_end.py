"""fastban run against a real SIP server (Kamailio with digest authentication) in a namespace lab.

The phone registers throughout; the password-guessing attacker is banned after maxretry failures
and none of its packets reach Kamailio afterwards (counted by Kamailio itself); the ban survives a
restart and a SIGKILL of the guard; unban lets the attacker through again; list and stats tell
the truth in text and JSON.
"""
import time

import pytest

from conftest import require_tool
from fastban.lab.siplab import SipLab

from labwait import row_for, running_guard, settle

MAXRETRY = 5


@pytest.fixture(scope="module")
def lab(kernel):
    require_tool("kamailio")
    require_tool("sipp")
    with SipLab(attackers=2) as lab:
        yield lab


@pytest.fixture(scope="module")
def guard(lab, tmp_path_factory):
    with running_guard(lab, tmp_path_factory.mktemp("guard"), maxretry=MAXRETRY,
                       bantime=600) as guard:
        yield guard


def test_guessing_attacker_is_banned_and_silenced_while_the_phone_registers(lab, guard):
    attacker = lab.attacker_address(0)
    phone = lab.start_phone(count=8, interval=0.5)
    attack = lab.start_attacker(guesses=40, rate=20).wait()
    registrations = phone.wait()
    reached = settle(lab, attacker)

    assert registrations.successes == 8 and registrations.failures == 0
    # REGISTER for a challenge, then one wrong guess per failure: maxretry + 1 requests, and
    # at most one more that was already on the wire when the ban landed.
    assert MAXRETRY + 1 <= reached <= MAXRETRY + 2
    assert attack.responses.get(200, 0) == 0
    assert attack.requests_sent == 41

    row = row_for(guard, attacker)
    assert row is not None, guard.log()
    # sipp answers each challenge with credentials: every wrong guess is a proven failure
    assert row["failures"] == MAXRETRY
    assert f"{MAXRETRY} proven ({MAXRETRY}×bad credentials 401)" in row["reason"]
    assert 500 < row["time_left"] <= 600
    assert row["packets_dropped"] == attack.requests_sent - reached

    stats = guard.json("stats")
    assert stats["bans_active"] == 1 and stats["bans_total"] == 1
    assert stats["packets_dropped"] == attack.requests_sent - reached
    assert stats["failures_counted"] == MAXRETRY
    assert stats["events_lost"] == 0 and stats["malformed_skipped"] == 0
    assert f"ban {attacker}/32" in guard.log()

    text = guard.cli("list").stdout
    assert attacker in text and "bad credentials 401" in text


def test_the_ban_holds_across_a_restart_and_a_sigkill(lab, guard):
    attacker = lab.attacker_address(0)
    before = row_for(guard, attacker)
    assert before is not None
    for how in ("TERM", "KILL"):
        guard.stop(how)
        assert lab.start_attacker(guesses=5, rate=20).wait().requests_sent == 6
        reached = settle(lab, attacker)
        guard.start()
        after = row_for(guard, attacker)
        assert after["reason"] == before["reason"] and after["failures"] == MAXRETRY
        assert after["packets_dropped"] >= before["packets_dropped"] + 6
        lab.start_attacker(guesses=3, rate=20).wait()
        assert settle(lab, attacker) == reached
        before = row_for(guard, attacker)


def test_list_and_ban_work_on_the_pinned_maps_with_no_guard_running(lab, guard):
    guard.stop()
    offline = guard.cli("ban", "203.0.113.99", "--time", "0")
    assert "permanently" in offline.stdout
    rows = {row["target"]: row for row in guard.json("list")["bans"]}
    assert rows["203.0.113.99/32"]["time_left"] is None
    assert guard.cli("unban", "203.0.113.99").returncode == 0
    missing = guard.cli("unban", "203.0.113.99", check=False)
    assert missing.returncode == 1 and "is not banned" in missing.stderr
    guard.start()


def test_unban_lets_the_attacker_through_again(lab, guard):
    attacker = lab.attacker_address(0)
    reached = settle(lab, attacker)
    assert "unbanned" in guard.cli("unban", attacker).stdout
    assert row_for(guard, attacker) is None
    lab.start_attacker(guesses=2, rate=20).wait()
    assert settle(lab, attacker) == reached + 3


def test_a_second_attacker_over_tcp_and_ipv6_is_banned_too(lab, guard):
    attacker6 = lab.attacker_address(1, family=6)
    attack = lab.start_attacker(guesses=30, rate=20, index=1, family=6, transport="tcp").wait()
    assert attack.responses.get(200, 0) == 0
    rows = {row["target"]: row for row in guard.json("list")["bans"]}
    assert rows[f"{attacker6}/128"]["failures"] == MAXRETRY
    assert settle(lab, attacker6) <= MAXRETRY + 2


def test_sighup_reloads_the_settings_and_refuses_a_bad_file(lab, guard):
    import signal
    attacker = lab.attacker_address(1)
    good = guard.config.read_text()
    guard.config.write_text(good.replace(f"maxretry = {MAXRETRY}", "maxretry = 3"))
    guard.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "settings reloaded" not in guard.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    lab.start_attacker(guesses=20, rate=20, index=1).wait()
    assert row_for(guard, attacker)["failures"] == 3
    assert settle(lab, attacker) <= 3 + 2

    guard.config.write_text(good.replace(f"maxretry = {MAXRETRY}", 'maxretry = "ten"'))
    guard.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload refused" not in guard.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert 'maxretry: must be a whole number' in guard.log()
    guard.config.write_text(good)
    assert guard.process.poll() is None and guard.json("stats")["bans_active"] >= 2
