"""Settings: defaults, TOML loading, overrides and every setting's validation."""

import ipaddress
import os

import pytest

from fastban.config import DEFAULTS, KEYS, ConfigError, Settings, load_settings
from fastban.rules import RuleSettings

net = ipaddress.ip_network


def write(tmp_path, text):
    p = tmp_path / "fastban.toml"
    p.write_text(text)
    return p


def test_defaults():
    s = load_settings()
    assert s == DEFAULTS
    assert (s.maxretry, s.findtime, s.bantime) == (10, 1800, 43200)
    assert s.sip_ports == (5060,)
    assert s.capture_direction == "egress" and s.xdp_mode == "auto"
    assert s.ban_scope == "all" and s.effective_ban_ports == (5060,)
    assert s.ipv6_ban_prefix == 128 and s.challenge_grace == 32
    assert s.count_register_404 is False
    assert s.kernel_ban is False
    assert s.state_file == "/var/lib/fastban/state.msgpack"
    assert s.control_socket == "/run/fastban/control.sock"
    assert s.map_capacity == 1_048_576
    assert s.bantime_increment is False
    assert s.whitelist == ()


def test_toml_then_overrides(tmp_path):
    p = write(tmp_path, 'maxretry = 5\nfindtime = 600\nwhitelist = "93.188.40.10 10.0.0.0/8"\n'
                        'sip_ports = [5060, 5061]\n')
    s = load_settings(p, {"maxretry": 3, "bantime": None})
    assert s.maxretry == 3 and s.findtime == 600 and s.bantime == 43200
    assert s.whitelist == (net("93.188.40.10/32"), net("10.0.0.0/8"))
    assert s.sip_ports == (5060, 5061)


def test_rule_settings():
    s = load_settings(overrides={"maxretry": "4", "findtime": "60", "whitelist": "10.0.0.1 fd00::/8",
                                 "ipv6_ban_prefix": 64,
                                 "challenge_grace": 5, "count_register_404": "yes",
                                 "max_sources": 7, "max_open_challenges": 9,
                                 "trust_time": "600"})
    r = s.rule_settings()
    assert isinstance(r, RuleSettings)
    assert (r.maxretry, r.findtime, r.challenge_grace, r.trust_time) == (4, 60, 5, 600)
    assert r.whitelist == (net("10.0.0.1/32"), net("fd00::/8"))
    assert r.count_register_404 and r.ipv6_ban_prefix == 64
    assert (r.max_sources, r.max_open_challenges) == (7, 9)


def test_bantime_increment():
    s = load_settings(overrides={"bantime": 100, "bantime_increment": True,
                                 "bantime_factor": 3, "bantime_max": 1000})
    assert [s.bantime_for(n) for n in range(4)] == [100, 300, 900, 1000]
    assert DEFAULTS.bantime_for(5) == 43200  # increment off


def test_whitelist_list_form_and_dedup(tmp_path):
    p = write(tmp_path, 'whitelist = ["10.0.0.1", "10.0.0.1/32", "2001:db8::1"]\n')
    assert load_settings(p).whitelist == (net("10.0.0.1/32"), net("2001:db8::1/128"))


def test_ban_ports(tmp_path):
    s = load_settings(overrides={"ban_scope": "ports", "ban_ports": "5060 5080"})
    assert s.effective_ban_ports == (5060, 5080)


@pytest.mark.parametrize("key,value,message", [
    ("maxretry", "ten", 'maxretry: must be a whole number ≥ 1, got "ten"'),
    ("maxretry", 0, "maxretry: must be a whole number ≥ 1, got 0"),
    ("maxretry", 2.5, "maxretry: must be a whole number ≥ 1, got 2.5"),
    ("maxretry", True, "maxretry: must be a whole number ≥ 1, got True"),
    ("findtime", -1, "findtime: must be a whole number ≥ 1"),
    ("bantime", "forever", 'bantime: must be a whole number ≥ 1, got "forever"'),
    ("whitelist", "10.0.0.1 banana", 'whitelist: "banana" is not an IP address or subnet'),
    ("whitelist", "10.0.0.0/33", 'whitelist: "10.0.0.0/33" is not an IP address or subnet'),
    ("whitelist", 5, "whitelist: must be IP addresses or subnets"),
    ("whitelist", ["300.1.1.1"], 'whitelist: "300.1.1.1" is not an IP address or subnet'),
    ("never_block", ["10.0.0.0/8"], "never_block: no longer a setting: list these networks in "
                                    "whitelist"),
    ("sip_ports", [], "sip_ports: must be a list of port numbers 1-65535 (at least one)"),
    ("sip_ports", [0], "sip_ports: must be a list of port numbers"),
    ("sip_ports", "5060 70000", "sip_ports: must be a list of port numbers"),
    ("ban_ports", ["x"], "ban_ports: must be a list of port numbers"),
    ("capture_direction", "sideways", 'capture_direction: must be one of "egress", "ingress", "both"'),
    ("xdp_mode", "offload", 'xdp_mode: must be one of "auto", "native", "generic"'),
    ("ban_scope", "some", 'ban_scope: must be one of "all", "ports"'),
    ("bantime_increment", "maybe", 'bantime_increment: must be true or false, got "maybe"'),
    ("bantime_factor", 0.5, "bantime_factor: must be a number ≥ 1, got 0.5"),
    ("bantime_factor", "x", 'bantime_factor: must be a number ≥ 1, got "x"'),
    ("bantime_max", 0, "bantime_max: must be a whole number ≥ 1"),
    ("ipv6_ban_prefix", 129, "ipv6_ban_prefix: must be a whole number ≥ 1 and ≤ 128, got 129"),
    ("ipv6_ban_prefix", 0, "ipv6_ban_prefix: must be a whole number ≥ 1 and ≤ 128"),
    ("challenge_grace", 0, "challenge_grace: must be a number > 0, got 0"),
    ("challenge_grace", "nan", "challenge_grace: must be a number > 0"),
    ("trust_time", -1, "trust_time: must be a number ≥ 0, got -1"),
    ("sip_capacity", -5, "sip_capacity: must be a whole number ≥ 0 and ≤ 4294967295, got -5"),
    ("sip_capacity", "lots", 'sip_capacity: must be a whole number ≥ 0'),
    ("count_register_404", 2, "count_register_404: must be true or false, got 2"),
    ("max_sources", 0, "max_sources: must be a whole number ≥ 1"),
    ("max_open_challenges", "lots", "max_open_challenges: must be a whole number ≥ 1"),
    ("kernel_ban", 3, "kernel_ban: must be true or false, got 3"),
    ("state_file", "", 'state_file: must be a file path, got ""'),
    ("control_socket", 3, "control_socket: must be a file path, got 3"),
    ("map_capacity", 0, "map_capacity: must be a whole number ≥ 1"),
    ("rate_limit", -1, "rate_limit: must be a whole number ≥ 0 and ≤ 1000000, got -1"),
    ("rate_limit", 2_000_000, "rate_limit: must be a whole number ≥ 0 and ≤ 1000000"),
    ("rate_limit_burst", "many", 'rate_limit_burst: must be a whole number ≥ 0'),
    ("rate_limit_sources", 0, 'rate_limit_sources: must be a whole number ≥ 1'),
    ("interfaces", ["eth 0"], "interfaces: must be a list of interface names"),
    ("web_listen", "localhost:8480", "web_listen: must be an IP address and port"),
    ("web_listen", "127.0.0.1:0", "web_listen: must be an IP address and port"),
    ("web_tls_cert", "/etc/cert.pem", "web_tls_cert: set both web_tls_cert and web_tls_key"),
    ("web_tls_key", 5, "web_tls_key: must be a file path, got 5"),
    ("web_password_file", "", 'web_password_file: must be a file path, got ""'),
    ("metrics_listen", "[::1]", "metrics_listen: must be an IP address and port"),
    ("metrics_auth", "sometimes", 'metrics_auth: must be true or false, got "sometimes"'),
    ("web_server_names", "pbx.example.com bad_name", "web_server_names: must be host names"),
    ("fleet_redis", "http://10.0.0.5:6379", "fleet_redis: must be a redis://, rediss:// or "
                                            "unix:// URL"),
    ("fleet_redis", "redis://", "fleet_redis: must be a redis://"),
    ("fleet_redis", "redis://h:99999", "fleet_redis: must be a redis://"),
    ("fleet_redis", "unix://", "fleet_redis: must be a redis://"),
    ("fleet_name", "a b", 'fleet_name: must be letters, digits'),
    ("fleet_name", "", 'fleet_name: must be letters, digits'),
    ("edge_name", "edge:a", 'edge_name: must be letters, digits'),
    ("fleet_counting", "often", 'fleet_counting: must be true or false, got "often"'),
    ("fleet_min_prefix", [24], "fleet_min_prefix: must be the IPv4 and the IPv6 prefix length"),
    ("fleet_min_prefix", [33, 48], "fleet_min_prefix: must be the IPv4 and the IPv6 prefix"),
    ("fleet_min_prefix", [24, True], "fleet_min_prefix: must be the IPv4 and the IPv6 prefix"),
    ("hep_listen", "9060", 'hep_listen: must be an IP address and port'),
    ("hep_listen", "localhost:9060", 'hep_listen: must be an IP address and port'),
    ("hep_auth_key", 42, "hep_auth_key: must be text of at most 1024 bytes, got 42"),
    ("hep_auth_key", "k" * 1025, 'hep_auth_key: must be text of at most 1024 bytes, got "(hidden)"'),
    ("hep_senders", "127.0.0.1 somewhere", 'hep_senders: "somewhere" is not an IP address'),
    ("hep_server_ports", [5061, 70000], "hep_server_ports: must be a list of port numbers"),
    ("hep_server_addresses", "192.0.2.300", 'hep_server_addresses: "192.0.2.300" is not an IP'),
    ("colour", "blue", "colour: unknown setting"),
])
def test_every_setting_is_validated(key, value, message):
    with pytest.raises(ConfigError) as e:
        load_settings(overrides={key: value})
    assert str(e.value).startswith(message)


def test_fleet_settings():
    assert DEFAULTS.fleet_redis == "" and DEFAULTS.fleet_min_prefix == (24, 48)
    s = load_settings(overrides={"fleet_redis": "rediss://edge-a:s3cret@redis.example:6380/2",
                                 "fleet_name": "pbx-eu", "edge_name": "edge-a",
                                 "fleet_min_prefix": "/16 /32"})
    assert (s.fleet_name, s.edge_name, s.fleet_min_prefix) == ("pbx-eu", "edge-a", (16, 32))
    for url in ("unix:///run/redis/redis.sock?db=1", "redis://[::1]:6379"):
        assert load_settings(overrides={"fleet_redis": url}).fleet_redis == url


def test_hep_settings():
    assert DEFAULTS.hep_listen == "" and [str(n) for n in DEFAULTS.hep_senders] == \
        ["127.0.0.0/8", "::1/128"]
    assert DEFAULTS.effective_hep_server_ports == (5060, 5061)
    s = load_settings(overrides={"hep_listen": "[::1]:9060", "hep_auth_key": "k3y",
                                 "hep_senders": "10.0.0.5", "sip_ports": [5080],
                                 "hep_server_addresses": "192.0.2.10 2001:db8::10"})
    assert (s.hep_listen, s.hep_auth_key, s.effective_hep_server_ports) == \
        ("[::1]:9060", "k3y", (5080, 5061))
    assert [str(n) for n in s.hep_server_addresses] == ["192.0.2.10/32", "2001:db8::10/128"]
    assert load_settings(overrides={"hep_server_ports": "5061 443"}).effective_hep_server_ports \
        == (5061, 443)


def test_the_rate_limit_is_off_unless_set():
    assert (DEFAULTS.rate_limit, DEFAULTS.rate_limit_burst) == (0, 0)
    s = load_settings(overrides={"rate_limit": 50, "rate_limit_burst": "300"})
    assert (s.rate_limit, s.rate_limit_burst) == (50, 300)


def test_every_key_has_a_validation_case():
    marks = test_every_setting_is_validated.pytestmark[0].args[1]
    assert {m[0] for m in marks} >= set(KEYS)


def test_valid_edge_values():
    s = load_settings(overrides={"ipv6_ban_prefix": 1, "sip_ports": 65535, "maxretry": "1",
                                 "capture_direction": "BOTH", "interfaces": "eth0 ens3",
                                 "bantime_factor": "1.5", "challenge_grace": 0.5})
    assert s.ipv6_ban_prefix == 1 and s.sip_ports == (65535,) and s.maxretry == 1
    assert s.capture_direction == "both" and s.interfaces == ("eth0", "ens3")
    assert s.bantime_factor == 1.5 and s.challenge_grace == 0.5


def test_bantime_max_below_bantime_with_increment():
    with pytest.raises(ConfigError, match="bantime_max: must be ≥ bantime"):
        load_settings(overrides={"bantime_increment": True, "bantime": 100, "bantime_max": 50})


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "maxretry = = 3\n"))
    with pytest.raises(ConfigError, match='maxretry: must be a whole number ≥ 1, got "ten"'):
        load_settings(write(tmp_path, 'maxretry = "ten"\n'))
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(write(tmp_path, "[section]\nx = 1\n"))


def test_settings_is_frozen():
    with pytest.raises(Exception):
        Settings().maxretry = 3


def test_the_shipped_example_file_loads_and_matches_the_defaults():
    example = os.path.join(os.path.dirname(__file__), "..", "fastban", "data", "fastban.toml")
    assert load_settings(example) == DEFAULTS
