"""The controller on a real data plane: bans reach the kernel maps, expire, escalate, persist."""
import ipaddress
import time

import pytest

from fastban import guard as guard_module
from fastban.config import load_settings
from fastban.banlist import FOUND_IN_MAP
from fastban.guard import Guard, GuardError
from traces import sip_response
from udp_rig import small_plane

ATTACKER = ipaddress.ip_address("10.240.0.66")
ATTACKER6 = ipaddress.ip_address("fd00:240::66")


@pytest.fixture(scope="module")
def dataplane(kernel):
    with small_plane("10.240.0", "/sys/fs/bpf/fastban-test") as plane:
        yield plane


@pytest.fixture
def settings_for(tmp_path, dataplane):
    for ban in dataplane.bans(include_expired=True):
        dataplane.unban(ban.target)

    def make(**overrides):
        return load_settings(None, {"state_file": str(tmp_path / "state.msgpack"),
                                    "control_socket": str(tmp_path / "control.sock"),
                                    "maxretry": 3, **overrides})
    return make


def captured(peer, payload, status, ktime_ns=None):
    """A response to peer as the capture copies it."""
    from fastban.dataplane import CapturedPacket
    return CapturedPacket(ipaddress.ip_address("10.240.0.1"), peer, 5060, 5060, "udp", status,
                          payload, time.monotonic_ns() if ktime_ns is None else ktime_ns,
                          payload_len=len(payload))


def forbidden(peer, n, call_id="guess"):
    return [captured(peer, sip_response(403, call_id=call_id, branch=f"z9hG4bK{i}",
                                        via_host=str(peer)), 403)
            for i in range(n)]


def test_failures_ban_into_the_kernel_map_with_reason_and_expiry(dataplane, settings_for):
    guard = Guard(settings_for(bantime=600), dataplane)
    assert guard.handle_packets(forbidden(ATTACKER, 2)) == []
    assert dataplane.bans() == []
    [record] = guard.handle_packets(forbidden(ATTACKER, 1, call_id="third"))
    assert record.target == ipaddress.ip_network("10.240.0.66/32")
    assert record.failures == 3 and "3 failures" in record.reason
    [ban] = dataplane.bans()
    assert ban.target == ATTACKER
    assert 599 < (ban.expires_ns - time.monotonic_ns()) / 1e9 <= 600
    [row] = guard.listing()
    assert row["target"] == "10.240.0.66/32" and row["failures"] == 3
    assert 599 < row["time_left"] <= 600 and row["packets_dropped"] == 0
    assert guard.stats()["bans_active"] == 1 and guard.stats()["responses_parsed"] == 3


def test_malformed_payloads_are_counted_and_skipped(dataplane, settings_for):
    guard = Guard(settings_for(), dataplane)
    junk = forbidden(ATTACKER, 1)[0]
    junk.payload = b"\x00\x01garbage"
    guard.handle_packets([junk] + forbidden(ATTACKER, 1))
    stats = guard.stats()
    assert stats["malformed_skipped"] == 1 and stats["responses_parsed"] == 1


def test_repeat_offenders_are_banned_longer_up_to_the_cap(dataplane, settings_for):
    guard = Guard(settings_for(bantime=100, bantime_increment=True, bantime_factor=4,
                               bantime_max=1000), dataplane)
    lengths = []
    for round_ in range(3):
        [record] = guard.handle_packets(forbidden(ATTACKER, 3, call_id=f"r{round_}"))
        lengths.append(round(record.expires_at - record.banned_at))
        assert guard.unban(record.target)
    assert lengths == [100, 400, 1000]


def test_ipv6_offender_banned_by_prefix_when_configured(dataplane, settings_for):
    guard = Guard(settings_for(ipv6_ban_prefix=64), dataplane)
    [record] = guard.handle_packets(forbidden(ATTACKER6, 3))
    assert record.target == ipaddress.ip_network("fd00:240::/64")
    assert [ban.target for ban in dataplane.bans()] == [ipaddress.ip_network("fd00:240::/64")]


def test_expired_bans_are_lifted_by_tick(dataplane, settings_for):
    guard = Guard(settings_for(), dataplane)
    guard.ban("10.240.0.77", duration=1)
    assert len(dataplane.bans()) == 1
    time.sleep(1.1)
    guard.tick()
    assert dataplane.bans(include_expired=True) == [] and guard.state.bans == {}


def test_a_lapsed_ban_is_forgotten_by_the_detection_too(dataplane, settings_for):
    clock = [time.time()]
    guard = Guard(settings_for(bantime=5), dataplane, wall=lambda: clock[0])
    [record] = guard.handle_packets(forbidden(ATTACKER, 3))
    assert guard.detector.banned_sources == 1
    clock[0] += 4
    guard.tick()
    assert guard.detector.banned_sources == 1 and guard.state.bans
    clock[0] += 2
    guard.tick()
    assert guard.detector.banned_sources == 0 and not guard.state.bans


def test_unanswered_challenges_ban_through_tick(dataplane, settings_for):
    clock = [1000.0]
    guard = Guard(settings_for(challenge_grace=5), dataplane, wall=lambda: clock[0])
    guard.handle_packets([
        captured(ATTACKER, sip_response(401, call_id=f"scan{i}", branch="z9hG4bKs",
                                        via_host=str(ATTACKER)), 401) for i in range(3)])
    assert guard.tick() == []
    clock[0] += 6
    [record] = guard.tick()
    assert "unanswered 401" in record.reason


def _login_with_a_late_tick(dataplane, settings, office, tell_the_poll_time: bool):
    """A 401, credentials, then a poll begins at 1002.0 and the 200 OK is captured at 1002.5;
    the guard is held up (a long batch, a busy CPU) and ticks at 1006.0, before it reads the
    answer still in the capture's ring. Returns the guard."""
    import dataclasses

    from fastban.dataplane import CapturedPacket
    from traces import sip_request
    clock, mono = [1000.0], [5_000_000_000]           # the kernel's clock 5 s = wall 1000
    guard = Guard(settings, dataplane, wall=lambda: clock[0], monotonic_ns=lambda: mono[0])

    def at(seconds, packet):
        return dataclasses.replace(packet, ktime_ns=int((seconds - 995.0) * 1e9))
    login = sip_request("REGISTER", call_id="late", branch="z9hG4bKb", via_host=str(office),
                        auth=True)
    guard.handle_packets([
        at(1000.0, captured(office, sip_response(401, call_id="late", branch="z9hG4bKa",
                                                 via_host=str(office)), 401)),
        at(1000.1, CapturedPacket(office, ipaddress.ip_address("10.240.0.1"), 5060, 5060, "udp",
                                  0, login, 0, kind="request", payload_len=len(login)))])
    answer = at(1002.5, captured(office, sip_response(200, call_id="late", branch="z9hG4bKb",
                                                      via_host=str(office)), 200))
    clock[0], mono[0] = 1006.0, 11_000_000_000
    assert guard.tick(1002.0 if tell_the_poll_time else None) == []
    guard.handle_packets([answer])
    return guard


def test_an_answer_still_in_the_ring_at_a_late_tick_is_still_a_login(dataplane, settings_for):
    """The service tells the tick when its last poll began: challenges are expired only up to
    then, so the answer is read first. A login, not an unanswered 401."""
    office = ipaddress.ip_address("10.240.0.51")
    guard = _login_with_a_late_tick(dataplane, settings_for(challenge_grace=4), office, True)
    stats = guard.stats()
    assert stats["logins"] == 1 and stats["failures_counted"] == 0
    assert stats["rule_counts"]["failures_unanswered_challenge"] == 0
    assert guard.rules.is_trusted(office, 1006.0)
    # By the wall clock alone, the same tick calls the challenge unanswered and the answer
    # comes too late to be a login: what the live guard did before, and the replay never does.
    guard = _login_with_a_late_tick(dataplane, settings_for(challenge_grace=4, maxretry=5),
                                    ipaddress.ip_address("10.240.0.52"), False)
    stats = guard.stats()
    assert stats["logins"] == 0 and stats["failures_counted"] == 1
    assert stats["rule_counts"]["failures_unanswered_challenge"] == 1


def test_bans_survive_a_restart_and_a_lost_state_file(dataplane, settings_for, tmp_path):
    settings = settings_for()
    guard = Guard(settings, dataplane)
    guard.handle_packets(forbidden(ATTACKER, 3))
    guard.ban("10.250.0.0/16", duration=0, reason="hand")
    guard.save()
    again = Guard(settings, dataplane)
    assert {str(t): r.reason for t, r in again.state.bans.items()} == {
        "10.240.0.66/32": guard.state.bans[ipaddress.ip_network("10.240.0.66/32")].reason,
        "10.250.0.0/16": "banned by hand: hand"}
    for saved in tmp_path.glob("state.msgpack*"):   # as if killed before anything was written
        saved.unlink()
    third = Guard(settings, dataplane)
    assert {str(t): r.reason for t, r in third.state.bans.items()} == {
        "10.240.0.66/32": FOUND_IN_MAP, "10.250.0.0/16": FOUND_IN_MAP}
    assert third.state.bans[ipaddress.ip_network("10.250.0.0/16")].expires_at == 0


def test_saved_ban_missing_from_the_map_is_enforced_again(dataplane, settings_for):
    settings = settings_for()
    guard = Guard(settings, dataplane)
    guard.ban("10.240.0.88", duration=300)
    guard.save()
    dataplane.unban(ipaddress.ip_address("10.240.0.88"))   # e.g. the maps were detached
    Guard(settings, dataplane)
    assert [str(b.target) for b in dataplane.bans()] == ["10.240.0.88"]


def test_corrupt_state_file_is_set_aside_and_the_guard_starts(dataplane, settings_for, tmp_path):
    (tmp_path / "state.msgpack").write_bytes(b"\xc1 definitely not msgpack")
    guard = Guard(settings_for(), dataplane)
    assert guard.state.bans == {}
    assert any(p.name.startswith("state.msgpack.corrupt-") for p in tmp_path.iterdir())


def test_whitelist_reaches_the_kernel_allowlist_and_refuses_hand_bans(dataplane, settings_for):
    guard = Guard(settings_for(whitelist="10.240.0.0/28 fd00:240::66"), dataplane)
    assert set(map(str, dataplane.whitelisted())) == {"10.240.0.0/28", "fd00:240::66/128"}
    with pytest.raises(GuardError, match="whitelisted"):
        guard.ban("10.240.0.5")
    assert guard.handle_packets(forbidden(ipaddress.ip_address("10.240.0.5"), 5)) == []
    guard.reload(settings_for())
    assert dataplane.whitelisted() == []


def test_unban_all_and_bad_targets(dataplane, settings_for):
    guard = Guard(settings_for(), dataplane)
    guard.ban("10.240.0.90")
    guard.ban("fd00:240::90", duration=0)
    assert guard.unban_all() == 2 and dataplane.bans() == []
    assert guard.unban("10.240.0.90") is False
    with pytest.raises(GuardError, match="not an IP address"):
        guard.ban("example.com")
    with pytest.raises(GuardError, match="0 \\(permanent\\)"):
        guard.ban("10.240.0.91", duration=-5)


def test_expiry_is_spread_over_ticks_in_batches(dataplane, settings_for, monkeypatch):
    from fastban import guard as guard_module
    monkeypatch.setattr(guard_module, "EXPIRE_BATCH", 3)
    clock = [100.0]
    guard = Guard(settings_for(), dataplane, wall=lambda: clock[0])
    for i in range(7):
        guard.ban(f"10.240.1.{i}", duration=5)
    clock[0] += 6
    remaining = []
    for _ in range(3):
        guard.tick()
        remaining.append(len(guard.state.bans))
    assert remaining == [4, 1, 0] and dataplane.bans(include_expired=True) == []


def test_a_full_table_refuses_and_counts(dataplane, settings_for):
    guard = Guard(settings_for(), dataplane)
    for i in range(64):
        guard.ban(f"10.241.0.{i}")
    with pytest.raises(GuardError, match="full"):
        guard.ban("10.241.1.1")
    assert guard.counts["bans_refused"] == 1
    guard.unban_all()


def test_expiry_lifts_bans_of_both_families_in_order_and_skips_rebans(dataplane, settings_for):
    clock = [5000.0]
    guard = Guard(settings_for(), dataplane, wall=lambda: clock[0])
    guard.ban("10.240.0.31", duration=10)
    guard.ban("fd00:240::31", duration=10)
    guard.ban("10.240.0.32", duration=20)
    guard.ban("10.240.0.31", duration=100)          # banned again, longer: must stay
    clock[0] += 15
    guard.tick()
    assert sorted(map(str, guard.state.bans)) == ["10.240.0.31/32", "10.240.0.32/32"]
    clock[0] += 10
    guard.tick()
    assert list(map(str, guard.state.bans)) == ["10.240.0.31/32"]
    guard.unban_all()


def test_ban_history_is_capped_forgetting_the_least_recently_banned(dataplane, settings_for,
                                                                      monkeypatch):
    from fastban import detection
    monkeypatch.setattr(detection, "BAN_HISTORY_CAP", 2)
    guard = Guard(settings_for(), dataplane)
    for last in (1, 2, 1, 3):
        guard.ban(f"10.240.2.{last}")
    assert {str(t): n for t, n in guard.state.ban_counts.items()} == {
        "10.240.2.1/32": 2, "10.240.2.3/32": 1}
    guard.unban_all()


def test_saves_append_to_the_journal_until_it_outgrows_the_bans(dataplane, settings_for,
                                                                 tmp_path, monkeypatch):
    """The whole state is written again once the journal holds more than JOURNAL_MIN changes
    and more than twice the most bans active since the last such write."""
    monkeypatch.setattr(guard_module, "JOURNAL_MIN", 4)
    settings = settings_for()
    snapshot, journal = tmp_path / "state.msgpack", tmp_path / "state.msgpack.journal"
    guard = Guard(settings, dataplane)
    guard.ban("10.250.1.1", duration=300)
    guard.ban("10.250.1.2", duration=300)
    guard.save()
    assert journal.exists() and not snapshot.exists() and guard.state.journal_length == 2
    restarted = Guard(settings, dataplane)                  # replays the journal
    assert restarted.state.bans == guard.state.bans and restarted.state.journal_length == 2
    guard.unban("10.250.1.1")
    guard.ban("10.250.1.3", duration=0)
    guard.ban("10.250.1.4", duration=300)                   # 3 bans at most so far
    guard.unban("10.250.1.2")
    guard.save()                      # 6 changes: not more than max(JOURNAL_MIN, 2 x 3)
    assert not snapshot.exists() and guard.state.journal_length == 6
    guard.ban("10.250.1.5", duration=300)
    guard.save()                      # 7 changes: the whole state is written instead
    assert snapshot.exists() and not journal.exists() and guard.state.journal_length == 0
    again = Guard(settings, dataplane)
    assert sorted(map(str, again.state.bans)) == ["10.250.1.3/32", "10.250.1.4/32",
                                                  "10.250.1.5/32"]
    assert again.state.bans == guard.state.bans and again.state.ban_counts == \
        guard.state.ban_counts


class _CountersOnly:
    """A data plane with no kernel behind it: no bans, counters set by the test."""

    def __init__(self):
        self.lost = 0

    def counters(self):
        return {"capture_lost": self.lost}

    def whitelisted(self):
        return []

    def bans(self, include_expired=False):
        return []

    def __getattr__(self, name):          # allow, set_sip_ports, purge_expired, ...: no-ops
        return lambda *args, **kwargs: None


def test_lost_captures_are_logged_at_most_every_interval(tmp_path, caplog):
    clock = [1000.0]
    plane = _CountersOnly()
    plane.lost = 7                          # lost before this guard started: not reported
    settings = load_settings(None, {"state_file": str(tmp_path / "state.msgpack"),
                                    "control_socket": str(tmp_path / "control.sock")})
    guard = Guard(settings, plane, wall=lambda: clock[0])
    caplog.set_level("WARNING", logger="fastban")
    guard.tick()
    plane.lost = 57
    clock[0] += 1
    guard.tick()                            # within the interval: nothing yet
    assert not caplog.records
    clock[0] += guard_module.LOSS_REPORT_INTERVAL
    guard.tick()
    assert [r.getMessage() for r in caplog.records] == [
        "lost 50 captured responses in the last 11 s: the guard fell behind and may count "
        "fewer failures than there were"]
    clock[0] += guard_module.LOSS_REPORT_INTERVAL
    guard.tick()                            # no new loss: no new line
    assert len(caplog.records) == 1


def test_a_failed_save_is_logged_and_the_changes_kept_for_the_next(tmp_path, caplog):
    folder = tmp_path / "state"
    settings = load_settings(None, {"state_file": str(folder / "state.msgpack"),
                                    "control_socket": str(tmp_path / "control.sock")})
    guard = Guard(settings, _CountersOnly())
    folder.write_text("a file where the state folder should be")
    guard.ban("192.0.2.7", duration=0)
    caplog.set_level("ERROR", logger="fastban")
    guard.save()                                          # no exception escapes
    assert "cannot save the state to" in caplog.text and "will try again" in caplog.text
    folder.unlink()
    guard.save()
    again = Guard(settings, _CountersOnly())
    assert list(map(str, again.state.bans)) == ["192.0.2.7/32"]


def test_an_unreadable_state_path_stops_the_start_with_one_line(tmp_path):
    from fastban.state import StateError
    (tmp_path / "state").write_text("a file where the state folder should be")
    settings = load_settings(None, {"state_file": str(tmp_path / "state" / "state.msgpack"),
                                    "control_socket": str(tmp_path / "control.sock")})
    with pytest.raises(StateError, match="cannot read the state file .*: Not a directory"):
        Guard(settings, _CountersOnly())


def test_a_reload_that_changes_only_times_keeps_the_failure_counts(dataplane, settings_for):
    guard = Guard(settings_for(maxretry=3, findtime=600, bantime=600), dataplane)
    guard.handle_packets(forbidden(ATTACKER, 2))
    assert guard.rules.failures_of(ATTACKER) == 2
    guard.reload(settings_for(maxretry=3, findtime=1200, bantime=60, bantime_increment=True))
    assert guard.rules.failures_of(ATTACKER) == 2
    [record] = guard.handle_packets(forbidden(ATTACKER, 1, call_id="third"))
    assert round(record.expires_at - record.banned_at) == 60
    guard.reload(settings_for(maxretry=3, ipv6_ban_prefix=64))       # the keys change
    assert guard.rules.failures_of(ATTACKER) == 0
    guard.unban_all()


def test_trust_is_saved_and_restored_across_a_restart(dataplane, settings_for):
    """A phone logged in; after a restart its address is still trusted, so forged failures
    still count nothing."""
    from traces import sip_request
    settings = settings_for(maxretry=2)
    guard = Guard(settings, dataplane)
    office = ipaddress.ip_address("10.240.0.50")
    challenge = sip_response(401, call_id="reg", branch="z9hG4bKa", via_host=str(office))
    login = sip_request("REGISTER", call_id="reg", branch="z9hG4bKb", via_host=str(office),
                        auth=True)
    from fastban.dataplane import CapturedPacket
    first = captured(office, challenge, 401)                 # in this order on the wire
    request = CapturedPacket(office, ipaddress.ip_address("10.240.0.1"), 5060, 5060, "udp", 0,
                             login, time.monotonic_ns(), kind="request", payload_len=len(login))
    answer = captured(office, sip_response(200, call_id="reg", branch="z9hG4bKb",
                                           via_host=str(office)), 200)
    guard.handle_packets([answer, request, first])           # the CPUs' rings interleave
    assert guard.rules.is_trusted(office, time.time()) and guard.stats()["logins"] == 1
    guard.save()
    again = Guard(settings, dataplane)
    assert again.rules.is_trusted(office, time.time())
    assert again.handle_packets(forbidden(office, 5)) == []
    assert again.stats()["unproven_of_trusted"] == 5


def test_a_challenge_the_kernel_could_not_read_is_marked_in_its_tables(dataplane,
                                                                       settings_for):
    """The capture reads the first message of a TCP segment; a 401 behind a 200 in the same
    segment is read by user space, which marks it in the kernel's tables so that the answer
    to it is copied."""
    from fastban import headerscan
    from fastban.dataplane import CapturedPacket
    guard = Guard(settings_for(), dataplane)
    peer = ipaddress.ip_address("10.240.0.90")
    both = (sip_response(200, call_id="options-1", branch="z9hG4bKo", via_host=str(peer),
                         transport="TCP") +
            sip_response(401, call_id="register-7", branch="z9hG4bKr", via_host=str(peer),
                         transport="TCP"))
    ktime = time.monotonic_ns()
    guard.handle_packets([CapturedPacket(ipaddress.ip_address("10.240.0.1"), peer, 5060, 41000,
                                         "tcp", 200, both, ktime, payload_len=len(both),
                                         tcp_seq=1, reason="tcp segment")])
    assert guard.counts["challenges_marked"] == 1
    marked = dataplane.open_calls()[peer, headerscan.call_hash(b"register-7")]
    assert abs(marked - ktime) < 5_000_000
    assert dataplane.challenged_peers()[peer][0] == marked


def test_wrong_web_passwords_ban_in_the_kernel_with_their_origin(dataplane, settings_for):
    guard = Guard(settings_for(maxretry=3), dataplane)
    assert guard.web_login_failed(str(ATTACKER)) == {"banned": False, "failures": 1}
    guard.handle_packets(forbidden(ATTACKER, 1))                   # a SIP failure counts too
    assert guard.web_login_failed(str(ATTACKER)) == {"banned": True, "failures": 0}
    [ban] = dataplane.bans()
    assert ban.target == ATTACKER
    [row] = guard.listing()
    assert row["origin"] == "web login" and row["failure_class"] == "mixed"
    assert "2 proven (2×wrong web page password), 1 unproven (1×403)" in row["reason"]
    stats = guard.stats()
    assert stats["bans_by_origin"] == {"web login": 1} and stats["failures_web_login"] == 2
    with pytest.raises(GuardError, match="not an IP address"):
        guard.web_login_failed("<script>")


def test_banned_covers_exact_prefix_and_range_bans(dataplane, settings_for):
    guard = Guard(settings_for(), dataplane)
    guard.ban("10.240.9.0/24")
    guard.ban(str(ATTACKER))
    assert guard.banned("10.240.9.200") and guard.banned(str(ATTACKER))
    assert not guard.banned("10.240.8.1") and not guard.banned(str(ATTACKER6))
    guard.unban("10.240.9.0/24")
    assert not guard.banned("10.240.9.200")


def test_hand_bans_carry_the_operators_label_on_one_line(dataplane, settings_for):
    guard = Guard(settings_for(), dataplane)
    record = guard.ban("10.240.0.70", reason="  scanner\nfrom  <b>x</b> ")
    assert record.reason == "banned by hand: scanner from <b>x</b>"
    assert (record.origin, record.failure_class) == ("hand", "")
    assert guard.ban("10.240.0.71").reason == "banned by hand"
    with pytest.raises(GuardError, match="at most 200 characters"):
        guard.ban("10.240.0.72", reason="x" * 201)


def test_the_newest_bans_are_listed_first_each_read_from_the_map(dataplane, settings_for,
                                                                   monkeypatch):
    clock = iter(range(1_000_000, 2_000_000, 10))
    guard = Guard(settings_for(), dataplane, wall=lambda: float(next(clock)))
    for n in range(1, 6):
        guard.ban(f"10.240.1.{n}")
    dataplane.unban("10.240.1.4")                     # gone from the map behind the guard
    newest = list(guard.listing_later(newest=3))
    assert [row["target"] for row in newest] == ["10.240.1.5/32", "10.240.1.3/32"]
    assert len(list(guard.listing_later())) == 4


def test_a_ban_from_the_wire_records_its_time_to_the_map(dataplane, settings_for):
    guard = Guard(settings_for(), dataplane)
    wire = time.monotonic_ns()
    guard.handle_packets(forbidden(ATTACKER, 3))
    took = (time.monotonic_ns() - wire) / 1e9
    latency = guard.stats()["ban_latency"]
    assert latency["count"] == 1 and 0 < latency["sum"] <= took
    guard.ban("10.240.0.90")                          # a hand ban is not from the wire
    assert guard.stats()["ban_latency"]["count"] == 1


def test_the_chart_samples_failures_bans_and_drops_every_interval(dataplane, settings_for):
    now = [1000.0]
    guard = Guard(settings_for(), dataplane, wall=lambda: now[0])
    guard.tick()
    guard.handle_packets(forbidden(ATTACKER, 3))
    guard.tick()                                       # within the interval: no new sample
    now[0] += guard_module.SAMPLE_INTERVAL
    guard.tick()
    assert [sample[:3] for sample in guard.history()] == [[1000.0, 0, 0], [1010.0, 3, 1]]
    assert all(sample[3] >= 0 for sample in guard.history())


@pytest.mark.parametrize("duration", [-1, float("nan"), float("inf"), 1e300, "600"])
def test_a_hand_ban_of_no_sensible_length_is_refused(dataplane, settings_for, duration):
    guard = Guard(settings_for(), dataplane)
    with pytest.raises(GuardError, match="ban time must be 0 .permanent. or up to"):
        guard.ban("10.240.0.80", duration)
    assert dataplane.bans() == []


def test_bans_of_other_edges_are_adopted_together_and_a_longer_one_here_is_kept(
        dataplane, settings_for):
    from fastban.state import BanRecord
    guard = Guard(settings_for(bantime=600), dataplane)
    now = time.time()

    def remote(target, expires_in, edge="fleet edge-b"):
        return BanRecord(ipaddress.ip_network(target), "5×bad credentials 401", 5, now,
                         0.0 if expires_in == 0 else now + expires_in, edge, "proven")
    guard.ban("10.240.0.70", 3600)                              # longer, here already
    guard.ban("10.240.0.71", 60)                                # shorter, here already
    adopted, refused = guard.adopt([remote("10.240.0.70/32", 600), remote("10.240.0.71/32", 600),
                           remote("10.240.0.72/32", 600), remote("10.240.0.72/32", 0),
                           remote("10.240.0.72/32", 300), remote("10.240.1.0/24", 600),
                           remote("fd00:240::7/128", 600)])
    assert (adopted, refused) == (4, 0)   # .71 made longer, .72 (for good), the /24, the IPv6
    bans = {str(row["target"]): row for row in guard.listing()}
    assert bans["10.240.0.70/32"]["origin"] == "hand" and \
        3590 < bans["10.240.0.70/32"]["time_left"] <= 3600
    assert bans["10.240.0.71/32"]["origin"] == "fleet edge-b" and \
        590 < bans["10.240.0.71/32"]["time_left"] <= 600
    assert bans["10.240.0.72/32"]["time_left"] is None
    assert bans["10.240.1.0/24"]["origin"] == bans["fd00:240::7/128"]["origin"] == "fleet edge-b"
    assert guard.stats()["bans_by_origin"] == {"hand": 2, "fleet edge-b": 4}
    # the map is full at 64: what does not fit is refused, counted, and not recorded
    adopted, refused = guard.adopt([remote(f"10.241.0.{i}/32", 600) for i in range(100)])
    assert adopted == 64 - 3 and guard.stats()["bans_refused"] == refused == 100 - adopted
    assert len(guard.state.bans) == len(dataplane.bans()) == 64 + 2    # + a range and IPv6
