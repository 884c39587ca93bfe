"""fastban: a brute-force guard for SIP servers, with bans enforced by XDP."""

__version__ = "0.1.0"
