"""The lab's plan: its addresses and ports, its accounts, and SipLabError.

The addresses are documentation and private ones, used only inside the lab's own namespaces,
so nothing is sent outside the lab and labs running at once do not meet. How they connect is
drawn in fastban/lab/siplab.py.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

LAB_FILES = Path(__file__).parent     # the sipp scenarios, the Kamailio template, forge.py
SIP_PORT = 5060
TLS_PORT = 5061                  # SIP over TLS, with the lab option tls=True
BRIDGE_MAC = "02:fb:00:00:00:01"   # locally administered; each lab has its own namespace

SERVER_V4, SERVER_V6 = "192.0.2.10", "2001:db8:2::10"
ROUTER_SERVER_V4, ROUTER_SERVER_V6 = "192.0.2.1", "2001:db8:2::1"
PHONE_V4, PHONE_V6 = "198.51.100.10", "2001:db8:100::10"
ROUTER_PHONE_V4, ROUTER_PHONE_V6 = "198.51.100.1", "2001:db8:100::1"
ROUTER_ATTACKER_V4, ROUTER_ATTACKER_V6 = "203.0.113.1", "2001:db8:113::1"
MAX_ATTACKERS = 200
MAX_OFFICES = 10
FORGER_V4, FORGER_V6 = "203.0.113.250", "2001:db8:113::fa"

DEFAULT_USERS = {"1001": "phone-1001-secret", "1002": "phone-1002-secret"}
PHONE_USER = "1001"
REALM = "fastban.lab"
OFFICE_ACCOUNT_BASE = 3000       # the office accounts are 3000, 3001, ... (office_accounts of them)
# The office phones' ports, and the ports their gateway maps them to; the forger's default
# source ports lie below, so no answer to a forged request can match a phone's NAT mapping.
OFFICE_PORTS = (32768, 60999)
FORGED_PORTS = (1024, 32767)


class SipLabError(RuntimeError):
    pass


def attacker_addresses(index: int) -> tuple[str, str]:
    """The IPv4 and IPv6 address of attacker `index` (0-based)."""
    if not 0 <= index < MAX_ATTACKERS:
        raise SipLabError(f"attacker index {index} outside 0..{MAX_ATTACKERS - 1}")
    return f"203.0.113.{10 + index}", f"2001:db8:113::{10 + index:x}"


def office_public_addresses(index: int) -> tuple[str, str]:
    """The IPv4 and IPv6 address office `index` (0-based) is seen from, on the phone's subnets."""
    _check_office_index(index)
    return f"198.51.100.{20 + index}", f"2001:db8:100::{20 + index}"


def office_private_addresses(index: int) -> tuple[str, str]:
    """The IPv4 and IPv6 address of the phones of office `index`, behind its NAT."""
    _check_office_index(index)
    return f"192.168.{50 + index}.2", f"fd00:{50 + index}::2"


def _office_gateway_private_addresses(index: int) -> tuple[str, str]:
    return f"192.168.{50 + index}.1", f"fd00:{50 + index}::1"


def _check_office_index(index: int) -> None:
    if not 0 <= index < MAX_OFFICES:
        raise SipLabError(f"office index {index} outside 0..{MAX_OFFICES - 1}")


def _family_index(family: int) -> int:
    if family not in (4, 6):
        raise SipLabError("family must be 4 or 6")
    return 0 if family == 4 else 1


def _uri_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _normal(address: str) -> str:
    return str(ipaddress.ip_address(address.strip("[]")))
