"""Settings of fastban: one object for the live guard and for ``fastban replay``.

Loaded from a TOML file (flat keys, see ``DEFAULTS`` below) and then from
overrides (command-line flags win).  Pure: the only I/O is reading the file
given.  A bad value raises ``ConfigError`` whose message names the setting::

    maxretry: must be a whole number ≥ 1, got "ten"

Unknown keys are errors too.  Example file::

    maxretry = 10            # failures ...
    findtime = 1800          # ... within this many seconds ...
    bantime = 43200          # ... ban for this many seconds
    whitelist = "93.188.40.10 10.0.0.0/8 2001:db8::/32"   # or a list
    sip_ports = [5060, 5080]  # plain SIP only: TLS (5061) cannot be read on the wire
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
import urllib.parse
from dataclasses import dataclass, fields, replace
from typing import Any

from fastban.rules import RuleSettings

DEFAULT_CONFIG_PATH = "/etc/fastban/fastban.toml"

CAPTURE_DIRECTIONS = ("egress", "ingress", "both")
XDP_MODES = ("auto", "native", "generic")
BAN_SCOPES = ("all", "ports")


class ConfigError(ValueError):
    """A setting has a bad value (the message names the setting)."""


@dataclass(frozen=True)
class Settings:
    # MikoPBX's anti brute force page
    maxretry: int = 10
    findtime: int = 1800
    bantime: int = 43200
    whitelist: tuple = ()          # ip_network objects: never counted, never banned
    # fail2ban's bantime.increment: bantime * factor ** (previous bans), capped
    bantime_increment: bool = False
    bantime_factor: float = 2.0
    bantime_max: int = 604800
    # what is watched and how
    sip_ports: tuple = (5060,)
    capture_direction: str = "egress"
    interfaces: tuple = ()         # names; empty: chosen by `fastban run`
    xdp_mode: str = "auto"
    ban_scope: str = "all"         # "all" traffic of a banned source, or only "ports"
    ban_ports: tuple = ()          # for ban_scope "ports"; empty = sip_ports
    ipv6_ban_prefix: int = 128
    # failure rules
    challenge_grace: float = 32.0
    trust_time: float = 3600.0     # a login makes its source trusted this long
    count_register_404: bool = False
    max_sources: int = 100_000
    max_open_challenges: int = 200_000
    # overload: SIP requests/s the server answers; above it trusted sources go first. 0 = off
    sip_capacity: int = 0
    # the capture bans a source armed one proven failure short of maxretry itself
    # (fastban.arming, bpf/armed.h): no attacker request passes after the threshold
    kernel_ban: bool = False
    # files and kernel maps
    state_file: str = "/var/lib/fastban/state.msgpack"
    control_socket: str = "/run/fastban/control.sock"
    map_capacity: int = 1_048_576
    # the per-source rate limit of SIP requests in XDP (bpf/rate_limit.h)
    rate_limit: int = 0            # requests/s per source; 0 = no limit
    rate_limit_burst: int = 0      # requests a source may send at once; 0 = 2 x rate_limit
    rate_limit_sources: int = 65_536   # sources its kernel table tracks (LRU, preallocated)
    # the operator's page and /metrics (fastban web)
    web_listen: str = "127.0.0.1:8480"
    web_tls_cert: str = ""         # both set: the page is served over HTTPS
    web_tls_key: str = ""
    web_password_file: str = "/etc/fastban/web-password"
    web_server_names: tuple = ()   # host names the page is reached by, besides its address
    metrics_listen: str = ""       # empty: /metrics on the web listener
    metrics_auth: bool = False     # /metrics behind the page's password (HTTP basic auth)
    # a fleet of edges sharing bans through Redis (fastban.fleet); empty: this edge alone
    fleet_redis: str = ""          # redis://, rediss:// or unix:// URL, with user and password
    fleet_name: str = "default"    # several fleets may share one Redis
    edge_name: str = ""            # empty: the host's name
    fleet_counting: bool = False   # failures seen by all the edges count toward maxretry
    fleet_min_prefix: tuple = (24, 48)   # the broadest fleet ban: IPv4, IPv6 prefix lengths
    # HEPv3 from the SIP server itself (fastban.hep_input): TLS, TCP and WebSocket servers
    hep_listen: str = ""           # UDP and TCP, e.g. "127.0.0.1:9060"; empty: no HEP input
    hep_auth_key: str = ""         # when set, HEP chunk 0x0e must carry it
    hep_senders: tuple = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    hep_server_ports: tuple = ()   # the server's ports in HEP; empty: sip_ports and 5061
    hep_server_addresses: tuple = ()   # the server's addresses in HEP; empty: any

    @property
    def effective_hep_server_ports(self) -> tuple:
        return self.hep_server_ports or tuple(dict.fromkeys((*self.sip_ports, 5061)))

    @property
    def effective_ban_ports(self) -> tuple:
        return self.ban_ports or self.sip_ports

    def rule_settings(self) -> RuleSettings:
        return RuleSettings(
            maxretry=self.maxretry,
            findtime=float(self.findtime),
            challenge_grace=float(self.challenge_grace),
            trust_time=float(self.trust_time),
            count_register_404=self.count_register_404,
            whitelist=self.whitelist,
            ipv6_ban_prefix=self.ipv6_ban_prefix,
            max_sources=self.max_sources,
            max_open_challenges=self.max_open_challenges,
        )

    def bantime_for(self, previous_bans: int) -> int:
        """Ban duration for a source banned ``previous_bans`` times before."""
        if not self.bantime_increment or previous_bans <= 0:
            return self.bantime
        t = self.bantime * self.bantime_factor ** min(previous_bans, 64)
        return int(min(t, max(self.bantime_max, self.bantime)))


DEFAULTS = Settings()
KEYS = tuple(f.name for f in fields(Settings))


# -- validators: (name, raw) -> value, or raise ConfigError -------------------

def _got(raw: Any) -> str:
    if isinstance(raw, str):
        return json.dumps(raw, ensure_ascii=False)
    return repr(raw)


def _fail(name, what, raw):
    raise ConfigError(f"{name}: must be {what}, got {_got(raw)}")


def _int(minimum, maximum=None):
    what = f"a whole number ≥ {minimum}" + (f" and ≤ {maximum}" if maximum is not None else "")

    def check(name, raw):
        value = raw
        if isinstance(raw, str) and re.fullmatch(r"\s*[+-]?\d+\s*", raw):
            value = int(raw)
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(name, what, raw)
        if value < minimum or (maximum is not None and value > maximum):
            _fail(name, what, raw)
        return value
    return check


def _number(minimum, *, exclusive=False):
    what = f"a number {'>' if exclusive else '≥'} {minimum:g}"

    def check(name, raw):
        value = raw
        if isinstance(raw, str):
            try:
                value = float(raw)
            except ValueError:
                _fail(name, what, raw)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            _fail(name, what, raw)
        if value < minimum or (exclusive and value == minimum) or value == float("inf"):
            _fail(name, what, raw)
        return float(value)
    return check


def _bool(name, raw):
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(raw, str) and raw.strip().lower() in ("false", "no", "off", "0"):
        return False
    _fail(name, "true or false", raw)


def _choice(options):
    def check(name, raw):
        if isinstance(raw, str) and raw.strip().lower() in options:
            return raw.strip().lower()
        _fail(name, "one of " + ", ".join(f'"{o}"' for o in options), raw)
    return check


def _items(name, raw, what):
    """A space/comma separated string or a list -> list of items."""
    if isinstance(raw, str):
        return [i for i in re.split(r"[\s,]+", raw) if i]
    if isinstance(raw, (list, tuple)):
        return list(raw)
    _fail(name, what, raw)


def _networks(name, raw):
    what = "IP addresses or subnets separated by spaces (or a list)"
    nets = []
    for item in _items(name, raw, what):
        if not isinstance(item, str):
            _fail(name, what, raw)
        try:
            nets.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {_got(item)} is not an IP address or subnet") from None
    return tuple(dict.fromkeys(nets))


def _ports(allow_empty):
    def check(name, raw):
        what = "a list of port numbers 1-65535" + ("" if allow_empty else " (at least one)")
        items = [raw] if isinstance(raw, int) and not isinstance(raw, bool) else _items(name, raw, what)
        ports = []
        for item in items:
            if isinstance(item, str) and item.strip().isdigit():
                item = int(item)
            if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= 65535:
                _fail(name, what, raw)
            ports.append(item)
        if not ports and not allow_empty:
            _fail(name, what, raw)
        return tuple(dict.fromkeys(ports))
    return check


def _names(name, raw):
    what = "a list of interface names"
    items = _items(name, raw, what)
    for item in items:
        if not isinstance(item, str) or not re.fullmatch(r"[^\s/]{1,15}", item):
            _fail(name, what, raw)
    return tuple(items)


def _host_names(name, raw):
    what = "host names separated by spaces (or a list)"
    names = _items(name, raw, what)
    for item in names:
        if not isinstance(item, str) or not re.fullmatch(
                r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+", item):
            _fail(name, what, raw)
    return tuple(item.lower().rstrip(".") for item in names)


def _path(name, raw):
    if not isinstance(raw, str) or not raw.strip() or "\0" in raw:
        _fail(name, "a file path", raw)
    return raw


def _optional_path(name, raw):
    if raw == "":
        return raw
    return _path(name, raw)


def parse_listen(text: str) -> tuple[str, int]:
    """"127.0.0.1:8480" or "[::1]:8480" -> (address, port); ValueError otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(text)
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return str(ipaddress.ip_address(host)), int(port)


def _listen(allow_empty):
    what = 'an IP address and port, e.g. "127.0.0.1:8480" or "[::1]:8480"'

    def check(name, raw):
        if allow_empty and raw == "":
            return raw
        try:
            parse_listen(raw)
        except (ValueError, AttributeError):
            _fail(name, what, raw)
        return raw.strip()
    return check


def _redis_url(name, raw):
    what = 'a redis://, rediss:// or unix:// URL (e.g. "redis://edge-a:secret@10.0.0.5:6379/0")'
    if raw == "":
        return raw
    if not isinstance(raw, str) or any(c.isspace() for c in raw):
        _fail(name, what, raw)
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("redis", "rediss", "unix") or \
            (parts.scheme == "unix" and not parts.path) or \
            (parts.scheme != "unix" and not parts.hostname):
        raise ConfigError(f"{name}: must be {what}")
    try:
        parts.port
    except ValueError:
        raise ConfigError(f"{name}: must be {what}") from None
    return raw


def _label(name, raw):
    if not isinstance(raw, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", raw):
        _fail(name, "letters, digits, '.', '_' or '-' (up to 63, the first a letter or digit)",
              raw)
    return raw


def _optional_label(name, raw):
    return raw if raw == "" else _label(name, raw)


def _prefixes(name, raw):
    what = "the IPv4 and the IPv6 prefix length, e.g. [24, 48]"
    items = _items(name, raw, what) if not isinstance(raw, int) else [raw]
    if len(items) != 2:
        _fail(name, what, raw)
    values = []
    for item, top in zip(items, (32, 128)):
        if isinstance(item, str) and item.strip().lstrip("/").isdigit():
            item = int(item.strip().lstrip("/"))
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= top:
            _fail(name, what, raw)
        values.append(item)
    return tuple(values)


def _secret(name, raw):
    if not isinstance(raw, str) or len(raw.encode()) > 1024 or "\0" in raw:
        _fail(name, "text of at most 1024 bytes", "(hidden)" if isinstance(raw, str) else raw)
    return raw


VALIDATORS = {
    "maxretry": _int(1),
    "findtime": _int(1),
    "bantime": _int(1),
    "whitelist": _networks,
    "bantime_increment": _bool,
    "bantime_factor": _number(1),
    "bantime_max": _int(1),
    "sip_ports": _ports(allow_empty=False),
    "capture_direction": _choice(CAPTURE_DIRECTIONS),
    "interfaces": _names,
    "xdp_mode": _choice(XDP_MODES),
    "ban_scope": _choice(BAN_SCOPES),
    "ban_ports": _ports(allow_empty=True),
    "ipv6_ban_prefix": _int(1, 128),
    "challenge_grace": _number(0, exclusive=True),
    "trust_time": _number(0),
    "count_register_404": _bool,
    "max_sources": _int(1),
    "max_open_challenges": _int(1),
    "sip_capacity": _int(0, 0xFFFFFFFF),
    "kernel_ban": _bool,
    "state_file": _path,
    "control_socket": _path,
    "map_capacity": _int(1, 1 << 28),
    "rate_limit_sources": _int(1, 1 << 24),
    "rate_limit": _int(0, 1_000_000),
    "rate_limit_burst": _int(0, 1 << 31),
    "web_listen": _listen(allow_empty=False),
    "web_tls_cert": _optional_path,
    "web_tls_key": _optional_path,
    "web_password_file": _path,
    "web_server_names": _host_names,
    "metrics_listen": _listen(allow_empty=True),
    "metrics_auth": _bool,
    "fleet_redis": _redis_url,
    "fleet_name": _label,
    "edge_name": _optional_label,
    "fleet_counting": _bool,
    "fleet_min_prefix": _prefixes,
    "hep_listen": _listen(allow_empty=True),
    "hep_auth_key": _secret,
    "hep_senders": _networks,
    "hep_server_ports": _ports(allow_empty=True),
    "hep_server_addresses": _networks,
}
assert set(VALIDATORS) == set(KEYS)

# Settings of earlier versions, and what to write instead.
RETIRED = {
    "never_block": "list these networks in whitelist (as MikoPBX adds its firewall's "
                   "\"never block\" subnets to the whitelist)",
}


def validate(values: dict) -> dict:
    """Check a dict of raw settings; returns the checked values."""
    out = {}
    for name, raw in values.items():
        check = VALIDATORS.get(name)
        if name in RETIRED:
            raise ConfigError(f"{name}: no longer a setting: {RETIRED[name]}")
        if check is None:
            raise ConfigError(f"{name}: unknown setting (known: {', '.join(KEYS)})")
        out[name] = check(name, raw)
    return out


def read_toml(path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path}: is a directory") from None
    except PermissionError:
        raise ConfigError(f"config file {path}: permission denied") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: not valid TOML ({e})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not valid TOML (not UTF-8)") from None


def load_settings(path=None, overrides: dict | None = None) -> Settings:
    """Defaults, then the TOML file at ``path`` (if any), then ``overrides``
    (keys of None value are ignored, so unset command-line flags can be passed)."""
    values = {}
    if path is not None:
        values.update(read_toml(path))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return settings_from_values(values)


def settings_from_values(values: dict) -> Settings:
    """Defaults, then the raw settings ``values``, validated and checked together."""
    settings = replace(DEFAULTS, **validate(values))
    if settings.bantime_increment and settings.bantime_max < settings.bantime:
        raise ConfigError(
            f"bantime_max: must be ≥ bantime ({settings.bantime}), got {settings.bantime_max}")
    if bool(settings.web_tls_cert) != bool(settings.web_tls_key):
        raise ConfigError("web_tls_cert: set both web_tls_cert and web_tls_key, or neither")
    return settings
