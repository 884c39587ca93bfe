"""fastban web's gates: the password hash, the sessions, where it may listen, TLS, /metrics, and
the `fastban web` / `fastban web-password` commands."""
import base64
import os
import re
import socket
import ssl
import stat
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import require_tool
from fastban import control
from fastban.config import ConfigError, settings_from_values
from fastban.decisions import ORIGINS
from fastban.histogram import Histogram
from fastban.web import passwords
from fastban.web.app import WebError, check_listen, is_loopback, tls_context
from fastban.web.guard_link import GuardUnavailable
from fastban.web.metrics import families, registry_for, render
from fastban.web.sessions import Sessions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def stored():
    return passwords.hash_password(PASSWORD)


# -- passwords ------------------------------------------------------------------------------

def test_the_right_password_verifies(stored):
    assert passwords.verify(PASSWORD, stored) is True


@pytest.mark.parametrize("attempt", ["wrong horse battery", PASSWORD.upper(),
                                     "Correct horse battery", PASSWORD + " ", ""])
def test_any_other_password_does_not_verify(stored, attempt):
    assert passwords.verify(attempt, stored) is False


def test_two_hashes_of_one_password_differ_by_their_salt(stored):
    again = passwords.hash_password(PASSWORD)
    assert again != stored
    assert again.split("$")[4] != stored.split("$")[4]
    assert passwords.verify(PASSWORD, again)


def test_the_stored_format_is_scrypt_n_r_p_salt_key(stored):
    kind, n, r, p, salt, key = stored.split("$")
    assert (kind, int(n), int(r), int(p)) == ("scrypt", passwords.SCRYPT_N, passwords.SCRYPT_R,
                                              passwords.SCRYPT_P)
    assert len(base64.b64decode(salt, validate=True)) == passwords.SALT_BYTES
    assert len(base64.b64decode(key, validate=True)) == passwords.KEY_BYTES
    assert passwords.parse(stored) == (passwords.SCRYPT_N, passwords.SCRYPT_R,
                                       passwords.SCRYPT_P, base64.b64decode(salt),
                                       base64.b64decode(key))


def _with_part(stored, index, value):
    parts = stored.split("$")
    parts[index] = value
    return "$".join(parts)


@pytest.mark.parametrize("mangle", [
    lambda s: "garbage",
    lambda s: "",
    lambda s: s + "$extra",
    lambda s: _with_part(s, 0, "bcrypt"),
    lambda s: _with_part(s, 1, "30000"),
    lambda s: _with_part(s, 1, "ten"),
    lambda s: _with_part(s, 4, "not base64!"),
    lambda s: _with_part(s, 5, s.split("$")[5][:20]),
], ids=["garbage", "empty", "seven parts", "wrong kind", "n not a power of two", "n not a number",
        "salt not base64", "truncated key"])
def test_parse_refuses_what_is_not_a_fastban_hash(stored, mangle):
    with pytest.raises(passwords.PasswordError, match=r"scrypt\$N\$r\$p\$salt\$key"):
        passwords.parse(mangle(stored))


def test_a_truncated_key_that_is_still_base64_is_refused(stored):
    key = base64.b64decode(stored.split("$")[5])
    short = _with_part(stored, 5, base64.b64encode(key[:-1]).decode())
    with pytest.raises(passwords.PasswordError):
        passwords.parse(short)


def test_a_too_short_password_is_refused_naming_its_length():
    with pytest.raises(passwords.PasswordError, match=r"got 3\b") as caught:
        passwords.hash_password("abc")
    assert str(passwords.MIN_LENGTH) in str(caught.value)


def test_a_password_of_the_minimum_length_is_accepted():
    stored = passwords.hash_password("x" * passwords.MIN_LENGTH)
    assert passwords.verify("x" * passwords.MIN_LENGTH, stored)


def test_write_hash_makes_a_file_of_mode_0600_and_read_hash_reads_it(tmp_path, stored):
    path = tmp_path / "etc" / "web-password"
    passwords.write_hash(str(path), stored)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert passwords.read_hash(str(path)) == stored
    assert os.listdir(path.parent) == ["web-password"]


def test_write_hash_replaces_a_looser_file_with_a_0600_one(tmp_path, stored):
    path = tmp_path / "web-password"
    path.write_text("old\n")
    path.chmod(0o644)
    passwords.write_hash(str(path), stored)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert passwords.read_hash(str(path)) == stored


def test_read_hash_of_a_missing_file_says_to_run_web_password(tmp_path):
    path = tmp_path / "none"
    with pytest.raises(passwords.PasswordError, match="`fastban web-password`") as caught:
        passwords.read_hash(str(path))
    assert str(path) in str(caught.value)


def test_read_hash_refuses_a_file_that_is_not_a_hash(tmp_path):
    path = tmp_path / "web-password"
    path.write_text("hunter2\n")
    with pytest.raises(passwords.PasswordError):
        passwords.read_hash(str(path))


# -- sessions -------------------------------------------------------------------------------

def test_sessions_get_distinct_ids_and_csrf_tokens():
    sessions = Sessions()
    started = [sessions.start(0.0, "192.0.2.1") for _ in range(5)]
    ids, tokens = {s.id for s in started}, {s.csrf for s in started}
    assert len(ids) == 5 and len(tokens) == 5
    assert not ids & tokens
    assert len(sessions) == 5


def test_get_returns_the_session_and_refreshes_last_seen():
    sessions = Sessions(idle=100, lifetime=1000)
    session = sessions.start(10.0, "192.0.2.1")
    assert sessions.get(session.id, 60.0) is session
    assert session.seen == 60.0 and session.started == 10.0
    assert sessions.get(session.id, 150.0) is session


def test_get_of_an_unknown_or_non_string_id_is_none():
    sessions = Sessions()
    sessions.start(0.0, "192.0.2.1")
    assert sessions.get("no-such-id", 1.0) is None
    assert sessions.get(None, 1.0) is None
    assert sessions.get(12345, 1.0) is None


def test_an_idle_session_expires_after_idle():
    sessions = Sessions(idle=100, lifetime=1000)
    session = sessions.start(0.0, "192.0.2.1")
    assert sessions.get(session.id, 100.0) is session
    assert sessions.get(session.id, 200.5) is None
    assert sessions.get(session.id, 200.6) is None
    assert len(sessions) == 0


def test_an_active_session_still_ends_after_its_lifetime():
    sessions = Sessions(idle=100, lifetime=250)
    session = sessions.start(0.0, "192.0.2.1")
    for now in (90.0, 180.0, 250.0):
        assert sessions.get(session.id, now) is session
    assert sessions.get(session.id, 251.0) is None


def test_end_ends_a_session():
    sessions = Sessions()
    session, other = sessions.start(0.0, "192.0.2.1"), sessions.start(0.0, "192.0.2.2")
    sessions.end(session.id)
    assert sessions.get(session.id, 1.0) is None
    assert sessions.get(other.id, 1.0) is other
    sessions.end(session.id)
    sessions.end(None)


def test_the_cap_evicts_the_oldest_session():
    sessions = Sessions(cap=3)
    first, second, third = (sessions.start(float(t), "192.0.2.1") for t in range(3))
    fourth = sessions.start(3.0, "192.0.2.1")
    assert len(sessions) == 3
    assert sessions.get(first.id, 4.0) is None
    assert [sessions.get(s.id, 4.0) for s in (second, third, fourth)] == [second, third, fourth]


@pytest.mark.parametrize("token", [None, 12345, b"bytes", "", "wrong-token"])
def test_csrf_matches_refuses_anything_but_the_token(token):
    session = Sessions().start(0.0, "192.0.2.1")
    assert session.csrf_matches(token) is False


def test_csrf_matches_accepts_the_sessions_token():
    sessions = Sessions()
    session, other = sessions.start(0.0, "192.0.2.1"), sessions.start(0.0, "192.0.2.1")
    assert session.csrf_matches(session.csrf) is True
    assert session.csrf_matches(other.csrf) is False
    assert session.csrf_matches(session.csrf[:-1]) is False


# -- where it listens, TLS ------------------------------------------------------------------

@pytest.mark.parametrize("listen", ["127.0.0.1:8480", "[::1]:8480", "127.0.0.9:1"])
def test_loopback_addresses_are_loopback(listen):
    assert is_loopback(listen) is True


@pytest.mark.parametrize("listen", ["0.0.0.0:8480", "192.0.2.10:8480", "[::]:8480",
                                    "[2001:db8::1]:443"])
def test_other_addresses_are_not_loopback(listen):
    assert is_loopback(listen) is False


def test_check_listen_accepts_loopback_without_tls_or_password():
    check_listen(settings_from_values({}), None)
    check_listen(settings_from_values({"web_listen": "[::1]:8480",
                                       "metrics_listen": "127.0.0.1:9480"}), None)


TLS = {"web_tls_cert": "/etc/fastban/cert.pem", "web_tls_key": "/etc/fastban/key.pem"}


@pytest.mark.parametrize("name", ["web_listen", "metrics_listen"])
@pytest.mark.parametrize("tls, with_password", [(False, False), (True, False), (False, True)],
                         ids=["nothing", "tls only", "password only"])
def test_check_listen_refuses_off_loopback_without_tls_and_password(stored, name, tls,
                                                                     with_password):
    settings = settings_from_values({name: "0.0.0.0:8480", **(TLS if tls else {})})
    with pytest.raises(WebError, match=rf"^{name} 0\.0\.0\.0:8480 is not a loopback address"):
        check_listen(settings, stored if with_password else None)


@pytest.mark.parametrize("name", ["web_listen", "metrics_listen"])
def test_check_listen_accepts_off_loopback_with_tls_and_password(stored, name):
    check_listen(settings_from_values({name: "192.0.2.10:8480", **TLS}), stored)


def test_no_tls_context_without_a_certificate():
    assert tls_context(settings_from_values({})) is None


def test_tls_context_names_web_tls_cert_when_the_files_do_not_load(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("this is not PEM\n")
    key.write_text("nor is this\n")
    settings = settings_from_values({"web_tls_cert": str(cert), "web_tls_key": str(key)})
    with pytest.raises(WebError, match="^web_tls_cert") as caught:
        tls_context(settings)
    assert str(cert) in str(caught.value)


def test_tls_context_names_web_tls_cert_when_the_files_are_missing(tmp_path):
    settings = settings_from_values({"web_tls_cert": str(tmp_path / "c"),
                                     "web_tls_key": str(tmp_path / "k")})
    with pytest.raises(WebError, match="^web_tls_cert"):
        tls_context(settings)


@pytest.fixture
def certificate(tmp_path):
    require_tool("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_tls_context_loads_a_real_certificate(certificate):
    cert, key = certificate
    context = tls_context(settings_from_values({"web_tls_cert": str(cert),
                                                "web_tls_key": str(key)}))
    assert isinstance(context, ssl.SSLContext)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_tls_context_refuses_a_key_that_is_not_the_certificates(certificate, tmp_path):
    cert, _ = certificate
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=other", "-keyout", str(other / "key.pem"), "-out",
                    str(other / "cert.pem")], check=True, capture_output=True, timeout=60)
    with pytest.raises(WebError, match="^web_tls_cert"):
        tls_context(settings_from_values({"web_tls_cert": str(cert),
                                          "web_tls_key": str(other / "key.pem")}))


# -- config ---------------------------------------------------------------------------------

@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:99999", "127.0.0.1:0", "127.0.0.1",
                                    "localhost:8480", ":8480"])
def test_a_bad_web_listen_is_refused_naming_it(listen):
    with pytest.raises(ConfigError, match="^web_listen: "):
        settings_from_values({"web_listen": listen})


def test_an_empty_web_listen_is_refused_but_an_empty_metrics_listen_is_not():
    with pytest.raises(ConfigError, match="^web_listen: "):
        settings_from_values({"web_listen": ""})
    assert settings_from_values({"metrics_listen": ""}).metrics_listen == ""


def test_a_bad_metrics_listen_is_refused_naming_it():
    with pytest.raises(ConfigError, match="^metrics_listen: "):
        settings_from_values({"metrics_listen": "nonsense"})


def test_an_ipv6_web_listen_in_brackets_is_accepted():
    assert settings_from_values({"web_listen": "[::1]:8480"}).web_listen == "[::1]:8480"


@pytest.mark.parametrize("values", [{"web_tls_cert": "/etc/fastban/cert.pem"},
                                    {"web_tls_key": "/etc/fastban/key.pem"}])
def test_a_tls_certificate_without_its_key_is_refused(values):
    with pytest.raises(ConfigError, match="^web_tls_cert: set both web_tls_cert and web_tls_key"):
        settings_from_values(values)


# -- /metrics -------------------------------------------------------------------------------

def _latency():
    histogram = Histogram()
    for seconds in (0.00008, 0.0003, 0.001, 0.0012, 0.04, 3.5):
        histogram.observe(seconds)
    return histogram


STATS = {
    "packets_seen": 91234, "packets_passed": 90000, "packets_dropped": 1200,
    "sip_packets_examined": 8800, "packets_captured": 640,
    "captured_by_reason": {"status": 600, "request": 40}, "requests_captured": 40,
    "captured_unsure": 3, "events_lost": 2, "sip_messages": 650, "responses_parsed": 610,
    "requests_parsed": 38, "malformed_skipped": 4, "fragments": 1, "truncated": 2,
    "truncated_unusable": 1, "challenges_seen": 300, "failures_counted": 57,
    "failures_proven": 21, "unproven_of_trusted": 5, "logins": 17, "trusted_sources": 6,
    "challenges_open": 9, "bans_active": 4, "bans_total": 8, "bans_refused": 1,
    "unbans_total": 3, "bans_by_origin": {"sip": 5, "web login": 1, "hand": 2},
    "failures_web_login": 7, "whitelisted": 34, "ban_latency": _latency().to_wire(),
    "parser": "cython", "rate_limited": 450,
}


def _scrape(fetch):
    text = render(registry_for(fetch)).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def _samples(family):
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for sample in family.samples}


@pytest.fixture(scope="module")
def scraped():
    return _scrape(lambda: STATS)


def test_fastban_up_is_1_when_the_guard_answers(scraped):
    assert _samples(scraped["fastban_up"]) == {("fastban_up", ()): 1.0}


def test_every_counter_sample_ends_in_total(scraped):
    counters = [family for family in scraped.values() if family.type == "counter"]
    assert len(counters) > 10
    for family in counters:
        for sample in family.samples:
            assert sample.name.endswith("_total"), sample.name


def test_the_plain_counters_carry_their_stats(scraped):
    expected = {"fastban_packets_seen": 91234, "fastban_packets_dropped": 1200,
                "fastban_packets_whitelisted": 34, "fastban_events_lost": 2,
                "fastban_logins": 17, "fastban_web_login_failures": 7, "fastban_unbans": 3,
                "fastban_bans_refused": 1, "fastban_malformed_skipped": 4,
                "fastban_requests_rate_limited": 450}
    for name, value in expected.items():
        assert _samples(scraped[name]) == {(f"{name}_total", ()): value}


def test_failures_are_split_into_proven_and_unproven(scraped):
    assert _samples(scraped["fastban_failures"]) == {
        ("fastban_failures_total", (("class", "proven"),)): 21,
        ("fastban_failures_total", (("class", "unproven"),)): 57 - 21,
    }


def test_bans_have_one_sample_per_origin(scraped):
    samples = _samples(scraped["fastban_bans"])
    assert samples == {("fastban_bans_total", (("origin", origin),)):
                       STATS["bans_by_origin"].get(origin, 0) for origin in ORIGINS}


@pytest.mark.parametrize("name, key", [("fastban_bans_active", "bans_active"),
                                       ("fastban_challenges_open", "challenges_open"),
                                       ("fastban_trusted_addresses", "trusted_sources")])
def test_the_gauges_carry_their_values(scraped, name, key):
    assert scraped[name].type == "gauge"
    assert _samples(scraped[name]) == {(name, ()): STATS[key]}


def test_ban_latency_is_a_histogram_with_the_guards_cumulative_buckets(scraped):
    family = scraped["fastban_ban_latency_seconds"]
    assert family.type == "histogram"
    buckets = [(sample.labels["le"], sample.value) for sample in family.samples
               if sample.name == "fastban_ban_latency_seconds_bucket"]
    wire = STATS["ban_latency"]
    assert [(float(le), n) for le, n in buckets] == [
        (float("inf") if bound is None else bound, n) for bound, n in wire["buckets"]]
    assert buckets[-1][0] == "+Inf"
    assert [n for _, n in buckets] == [1, 1, 2, 3, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 6]
    samples = _samples(family)
    assert samples[("fastban_ban_latency_seconds_count", ())] == 6
    assert samples[("fastban_ban_latency_seconds_sum", ())] == pytest.approx(
        0.00008 + 0.0003 + 0.001 + 0.0012 + 0.04 + 3.5)


def test_every_metric_is_named_fastban_something_and_has_help(scraped):
    assert len(scraped) >= 21
    for name, family in scraped.items():
        assert re.fullmatch(r"fastban_[a-z_]+", name), name
        assert family.documentation.strip(), name
        for sample in family.samples:
            assert re.fullmatch(r"fastban_[a-z_]+", sample.name), sample.name


def test_a_guard_in_a_fleet_exposes_the_fleet_links_figures():
    fleet = {"connected": True, "edge": "edge-a", "queue": 3, "published": 120, "received": 900,
             "applied": 850, "already_held": 20, "unbans_applied": 12, "publish_overflow": 0,
             "connection_losses": 1, "catch_ups": 2, "refused_whitelisted": 4,
             "refused_too_broad": 1, "refused_unreadable": 2, "lag_last_ms": 1.5,
             "lag_max_ms": 250.0}
    scraped = {family.name: family for family in families({**STATS, "fleet": fleet})}
    assert _samples(scraped["fastban_fleet_connected"]) == {("fastban_fleet_connected", ()): 1}
    assert _samples(scraped["fastban_fleet_applied"]) == {("fastban_fleet_applied_total", ()): 850}
    assert _samples(scraped["fastban_fleet_publish_queue"]) == \
        {("fastban_fleet_publish_queue", ()): 3}
    refused = _samples(scraped["fastban_fleet_refused"])
    assert refused[("fastban_fleet_refused_total", (("reason", "whitelisted"),))] == 4
    assert refused[("fastban_fleet_refused_total", (("reason", "too_broad"),))] == 1
    assert refused[("fastban_fleet_refused_total", (("reason", "expired"),))] == 0
    assert _samples(scraped["fastban_fleet_lag_max_seconds"]) == \
        {("fastban_fleet_lag_max_seconds", ()): 0.25}
    assert not any(name.startswith("fastban_fleet") for name in
                   {family.name for family in families(STATS)})      # alone: no fleet figures
    down = {family.name: family for family in families({**STATS, "fleet": {
        "connected": False, "lag_last_ms": None, "lag_max_ms": None}})}
    assert _samples(down["fastban_fleet_connected"]) == {("fastban_fleet_connected", ()): 0}
    assert _samples(down["fastban_fleet_lag_seconds"]) == {("fastban_fleet_lag_seconds", ()): 0}


def test_a_guard_with_hep_input_exposes_its_figures():
    hep = {"listen": "127.0.0.1:9060", "connections": 2, "received": 1000, "messages": 990,
           "rejected": 10, "rejected_sender": 6, "rejected_auth_key": 3,
           "rejected_truncated": 1, "rejected_oversize": 0}
    scraped = {family.name: family for family in families({**STATS, "hep": hep,
                                                           "duplicates_skipped": 400})}
    assert _samples(scraped["fastban_hep_messages"]) == {("fastban_hep_messages_total", ()): 990}
    assert _samples(scraped["fastban_hep_received"]) == {("fastban_hep_received_total", ()): 1000}
    rejected = _samples(scraped["fastban_hep_rejected"])
    assert rejected[("fastban_hep_rejected_total", (("reason", "sender"),))] == 6
    assert rejected[("fastban_hep_rejected_total", (("reason", "auth_key"),))] == 3
    assert rejected[("fastban_hep_rejected_total", (("reason", "oversize"),))] == 0
    assert sum(rejected.values()) == hep["rejected"]
    assert scraped["fastban_hep_connections"].type == "gauge"
    assert _samples(scraped["fastban_duplicates_skipped"]) == \
        {("fastban_duplicates_skipped_total", ()): 400}
    assert not any(name.startswith("fastban_hep") for name in
                   {family.name for family in families(STATS)})


def test_families_without_a_ban_latency_still_yields_an_empty_histogram():
    stats = {k: v for k, v in STATS.items() if k != "ban_latency"}
    latency = [f for f in families(stats) if f.name == "fastban_ban_latency_seconds"]
    assert len(latency) == 1
    assert {s.name: s.value for s in latency[0].samples} == {
        "fastban_ban_latency_seconds_bucket": 0, "fastban_ban_latency_seconds_count": 0,
        "fastban_ban_latency_seconds_sum": 0.0}


@pytest.mark.parametrize("error", [GuardUnavailable("no guard"), control.ControlError("refused")])
def test_without_the_guard_only_fastban_up_0_is_exposed(error):
    def fetch():
        raise error
    scraped = _scrape(fetch)
    assert list(scraped) == ["fastban_up"]
    assert _samples(scraped["fastban_up"]) == {("fastban_up", ()): 0.0}


# -- the commands ---------------------------------------------------------------------------

def fastban(*args, stdin=None):
    result = subprocess.run([sys.executable, "-m", "fastban", *args], input=stdin,
                            capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture
def config(tmp_path):
    password_file = tmp_path / "etc" / "web-password"
    path = tmp_path / "fastban.toml"
    path.write_text(f'web_password_file = "{password_file}"\n'
                    f'control_socket = "{tmp_path / "control.sock"}"\n')
    return path, password_file


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_web_password_from_stdin_writes_a_hash_that_verifies(config):
    path, password_file = config
    result = fastban("web-password", "--stdin", "--config", str(path), stdin=PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    assert str(password_file) in result.stdout
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    stored = password_file.read_text().strip()
    assert passwords.verify(PASSWORD, stored)
    assert not passwords.verify(PASSWORD + "\n", stored)


def test_web_password_refuses_a_short_password_and_writes_nothing(config):
    path, password_file = config
    result = fastban("web-password", "--stdin", "--config", str(path), stdin="abc\n")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("fastban: ") and "got 3" in lines[0]
    assert "nothing changed" in lines[0]
    assert not password_file.parent.exists() or not os.listdir(password_file.parent)


def test_web_without_a_password_file_says_to_run_web_password(config):
    path, password_file = config
    result = fastban("web", "--config", str(path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(password_file) in lines[0] and "`fastban web-password`" in lines[0]


def test_web_refuses_to_listen_off_loopback_without_tls(config, stored):
    path, password_file = config
    passwords.write_hash(str(password_file), stored)
    port = _free_port()
    result = fastban("web", "--config", str(path), "--listen", f"0.0.0.0:{port}")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"fastban: web_listen 0.0.0.0:{port} is not a loopback address")


def test_web_with_a_bad_listen_exits_2_naming_web_listen(config):
    path, _ = config
    result = fastban("web", "--config", str(path), "--listen", "nonsense")
    assert result.returncode == 2
    assert result.stderr.strip().startswith('fastban: web_listen: must be an IP address and port')
    assert '"nonsense"' in result.stderr


def test_with_metrics_listen_metrics_are_served_there_only(tmp_path, stored):
    """/metrics moves to metrics_listen: the page's listener no longer answers it (so a page
    served off loopback never shows the counters without a password)."""
    import asyncio
    import urllib.error
    import urllib.request

    from fastban.web.app import serve

    password_file = tmp_path / "web-password"
    passwords.write_hash(str(password_file), stored)
    page_port, metrics_port = _free_port(), _free_port()
    settings = settings_from_values({
        "web_listen": f"127.0.0.1:{page_port}", "metrics_listen": f"127.0.0.1:{metrics_port}",
        "web_password_file": str(password_file),
        "control_socket": str(tmp_path / "no-guard.sock")})

    def status(port, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, ""

    async def scenario():
        stop = asyncio.Event()
        server = asyncio.create_task(serve(settings, stop))
        loop = asyncio.get_running_loop()
        for _ in range(100):
            await asyncio.sleep(0.05)
            try:
                answers = [await loop.run_in_executor(None, status, port, path)
                           for port, path in ((page_port, "/metrics"), (metrics_port, "/metrics"),
                                              (page_port, "/login"), (metrics_port, "/login"))]
                break
            except OSError:
                continue
        stop.set()
        await server
        return answers

    page_metrics, metrics, page_login, metrics_login = asyncio.run(scenario())
    assert page_metrics[0] == 404 and metrics_login[0] == 404
    assert metrics[0] == 200 and "fastban_up 0.0" in metrics[1]      # no guard on that socket
    assert page_login[0] == 200


def test_the_host_headers_a_listener_answers():
    from fastban.web.app import host_headers

    assert host_headers("127.0.0.1:8480") == {"127.0.0.1:8480", "localhost:8480"}
    assert host_headers("[::1]:8480") == {"[::1]:8480", "localhost:8480"}
    assert host_headers("192.0.2.10:443", ("pbx.example.com",), tls=True) == {
        "192.0.2.10:443", "pbx.example.com:443", "192.0.2.10", "pbx.example.com"}
    assert "192.0.2.10" not in host_headers("192.0.2.10:443")     # plain HTTP's port is 80
    assert settings_from_values({"web_server_names": "PBX.example.com."}).web_server_names == \
        ("pbx.example.com",)
