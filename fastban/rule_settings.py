"""The failure rules' settings and the names of their counters (fastban.rules)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from fastban.decisions import IPNetwork

STAT_KEYS = (
    "responses_seen",       # final and provisional responses given to observe()
    "requests_seen",        # requests given to observe()
    "requests_ignored",     # requests without credentials, or from an unchallenged address
    "credentials_waiting",  # requests with credentials kept until their answer
    "credentials_proven",   # ... whose nonce the server had issued to that address
    "provisional_ignored",  # 1xx responses
    "whitelisted_skipped",  # messages of whitelisted peers
    "challenges",           # 401/407 seen (retransmissions included)
    "stale_challenges",     # 401/407 with stale=true: an expired nonce (no failure)
    "retransmissions",      # final responses recognised as retransmissions
    "cleared",              # open challenges closed by a non-failure answer
    "logins",               # 2xx to proven credentials: the source is trusted
    "answers_before_request",  # logins whose 2xx was read before its request (live only)
    "failures",             # failures counted (all kinds)
    "failures_proven",
    "failures_403",
    "failures_repeated_challenge",
    "failures_unanswered_challenge",
    "failures_register_404",
    "failures_web_login",   # wrong passwords on fastban's web page
    "unproven_of_trusted",  # unproven failures of a trusted source (not counted)
    "bans",                 # ban decisions returned
    "sources_evicted",      # source histories dropped at the max_sources cap
    "challenges_evicted",   # Call-ID records dropped at the max_open_challenges cap
    "via_received_mismatch",  # top Via received= differs from the destination
)


@dataclass(frozen=True)
class RuleSettings:
    """Settings of the failure rules (defaults are MikoPBX's / fail2ban's)."""

    maxretry: int = 10
    findtime: float = 1800.0
    challenge_grace: float = 32.0
    trust_time: float = 3600.0
    count_register_404: bool = False
    whitelist: tuple[IPNetwork, ...] = ()
    ipv6_ban_prefix: int = 128
    max_sources: int = 100_000
    max_open_challenges: int = 200_000

    def __post_init__(self):
        nets = tuple(ipaddress.ip_network(n, strict=False) for n in self.whitelist)
        object.__setattr__(self, "whitelist", nets)
        if self.maxretry < 1:
            raise ValueError("maxretry must be >= 1")
        if self.findtime <= 0 or self.challenge_grace <= 0:
            raise ValueError("findtime and challenge_grace must be > 0")
        if self.trust_time < 0:
            raise ValueError("trust_time must be >= 0")
        if self.max_sources < 1 or self.max_open_challenges < 1:
            raise ValueError("caps must be >= 1")
        if not 1 <= self.ipv6_ban_prefix <= 128:
            raise ValueError("ipv6_ban_prefix must be in 1..128")

    @property
    def structure(self) -> tuple:
        """The settings the rules' state is keyed or sized by: changing one needs new rules."""
        return self.ipv6_ban_prefix, self.max_sources, self.max_open_challenges
