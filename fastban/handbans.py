"""What an operator may ask of the guard by hand: a target, a hand ban's length and label.

Pure: shared by the running guard (fastban.guard) and the commands run while none runs
(fastban.offline). A refusal is a GuardError whose text is for the user.
"""

from __future__ import annotations

import ipaddress

MAX_HAND_BAN = 100 * 365 * 86400        # seconds; longer is a permanent ban (0)


class GuardError(ValueError):
    """A request the guard refuses (bad address, whitelisted target); the text is for the user."""


def as_network(text_or_object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text_or_object, strict=False)
    except ValueError:
        raise GuardError(f"not an IP address or network: {text_or_object}") from None


def hand_ban(settings, target, duration: float | None) -> tuple:
    """(network, seconds) of a ban asked for by hand, or GuardError: not an address, a
    whitelisted one, a negative time. None = the configured bantime, 0 = permanent."""
    network = as_network(target)
    for whitelisted in settings.whitelist:
        if network.version == whitelisted.version and network.subnet_of(whitelisted):
            raise GuardError(f"{network} is whitelisted ({whitelisted}); remove it from the "
                             "whitelist first")
    duration = settings.bantime if duration is None else duration
    if not isinstance(duration, (int, float)) or not 0 <= duration <= MAX_HAND_BAN:
        raise GuardError(f"ban time must be 0 (permanent) or up to {MAX_HAND_BAN} seconds, "
                         f"got {duration}")
    return network, duration


HAND_REASON = "banned by hand"
MAX_REASON = 200


def hand_reason(label: str | None) -> str:
    """The reason of a hand ban: the operator's label on one line, or HAND_REASON."""
    if label is None or not str(label).strip():
        return HAND_REASON
    text = " ".join(str(label).split())
    if len(text) > MAX_REASON:
        raise GuardError(f"a reason is at most {MAX_REASON} characters, got {len(text)}")
    return f"{HAND_REASON}: {text}"
