"""What a hand ban may be, checked before anything reaches the kernel (pure)."""
import ipaddress

import pytest

from fastban.config import settings_from_values
from fastban.handbans import GuardError, MAX_HAND_BAN, hand_ban, hand_reason

SETTINGS = settings_from_values({"bantime": 600, "whitelist": "198.51.100.0/24"})


def test_a_target_and_its_length():
    assert hand_ban(SETTINGS, "203.0.113.9", None) == (ipaddress.ip_network("203.0.113.9/32"), 600)
    assert hand_ban(SETTINGS, "2001:db8::/64", 0) == (ipaddress.ip_network("2001:db8::/64"), 0)
    assert hand_ban(SETTINGS, "203.0.113.0/24", MAX_HAND_BAN)[1] == MAX_HAND_BAN


@pytest.mark.parametrize("target,duration,message", [
    ("banana", None, "not an IP address or network: banana"),
    ("198.51.100.7", None, "198.51.100.7/32 is whitelisted (198.51.100.0/24)"),
    ("203.0.113.9", -1, "ban time must be 0 (permanent) or up to"),
    ("203.0.113.9", float("nan"), "ban time must be 0 (permanent) or up to"),
    ("203.0.113.9", MAX_HAND_BAN + 1, "ban time must be 0 (permanent) or up to"),
    ("203.0.113.9", "600", "ban time must be 0 (permanent) or up to"),
])
def test_what_is_refused(target, duration, message):
    with pytest.raises(GuardError) as error:
        hand_ban(SETTINGS, target, duration)
    assert str(error.value).startswith(message)


def test_the_label_of_a_hand_ban():
    assert hand_reason(None) == hand_reason("  ") == "banned by hand"
    assert hand_reason("scanner\n from\tAS64500") == "banned by hand: scanner from AS64500"
    assert hand_reason("x" * 200) == "banned by hand: " + "x" * 200
    with pytest.raises(GuardError, match="at most 200 characters, got 201"):
        hand_reason("x" * 201)
