"""What the failure rules hand to the guard: the kinds of failure and a ban decision.

Pure data. The kinds are the words of a ban's reason ("5 failures in 2 s: 5 proven (5×bad
credentials 401)"), in the journal, the ban list and the state file; which messages make each
kind is fastban/rules.py's business.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# failure kinds (used in the reason text)
KIND_BAD_401 = "bad credentials 401"
KIND_BAD_407 = "bad credentials 407"
KIND_BAD_403 = "bad credentials 403"
KIND_403 = "403"
KIND_REPEATED_401 = "repeated 401"
KIND_REPEATED_407 = "repeated 407"
KIND_UNANSWERED_401 = "unanswered 401"
KIND_UNANSWERED_407 = "unanswered 407"
KIND_REGISTER_404 = "404 to REGISTER"
# A wrong password on fastban's own web page: it arrives over a TCP connection, so its source
# cannot be forged.
KIND_WEB_LOGIN = "wrong web page password"
PROVEN_KINDS = frozenset({KIND_BAD_401, KIND_BAD_407, KIND_BAD_403, KIND_WEB_LOGIN})

# Where a ban came from (shown in `fastban list` and on the page)
ORIGIN_SIP = "sip"                  # failed SIP logins read off the wire
ORIGIN_WEB_LOGIN = "web login"      # wrong passwords on the web page
ORIGIN_HAND = "hand"                # `fastban ban` or the page's form
ORIGIN_KERNEL_MAP = "kernel map"    # found in the pinned map with no record of it
ORIGIN_FLEET_COUNT = "fleet count"  # failures seen by several edges of the fleet, together
ORIGINS = (ORIGIN_SIP, ORIGIN_WEB_LOGIN, ORIGIN_HAND, ORIGIN_KERNEL_MAP, ORIGIN_FLEET_COUNT)
# A ban from another edge of the fleet has the origin "fleet <edge>" (fastban.fleet.edge).


@dataclass(frozen=True)
class BanDecision:
    """'Ban this source': what the controller needs to act."""

    address: IPAddress          # the peer whose message completed the count
    network: IPNetwork          # what to ban: /32, /128, or the IPv6 prefix
    failures: int
    proven: int                 # of them proven (the rest unproven)
    first_failure_at: float
    decided_at: float
    reason: str                 # e.g. "5 failures in 2 s: 5 proven (5×bad credentials 401)"
    kinds: dict = field(default_factory=dict, compare=False)

    @property
    def failure_class(self) -> str:
        """'proven', 'unproven' or 'mixed'."""
        if self.proven == self.failures:
            return "proven"
        return "unproven" if self.proven == 0 else "mixed"


def describe_failures(failures: list[tuple[float, str]], now: float) -> tuple[str, dict, int]:
    """The reason text of a ban on these (time, kind) failures, the count per kind, and how
    many of them are proven."""
    kinds = Counter(kind for _, kind in failures)
    first = min(t for t, _ in failures)
    parts = []
    for label, proven in (("proven", True), ("unproven", False)):
        these = [(kind, n) for kind, n in kinds.most_common() if (kind in PROVEN_KINDS) == proven]
        if these:
            total = sum(n for _, n in these)
            parts.append(f"{total} {label} (" + ", ".join(f"{n}×{kind}" for kind, n in these)
                         + ")")
    proven_count = sum(n for kind, n in kinds.items() if kind in PROVEN_KINDS)
    return (f"{len(failures)} failures in {now - first:.0f} s: " + ", ".join(parts),
            dict(kinds), proven_count)
