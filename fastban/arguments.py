"""The command-line flags the commands share, and where their settings come from."""

from __future__ import annotations

import argparse
import os

from fastban.config import DEFAULT_CONFIG_PATH, load_settings

SETTINGS_FLAGS = (
    # (flag, setting, help)
    ("--maxretry", "maxretry", "failures that ban (default 10)"),
    ("--findtime", "findtime", "... within this many seconds (default 1800)"),
    ("--bantime", "bantime", "ban for this many seconds (default 43200)"),
    ("--whitelist", "whitelist", "space-separated IPs and subnets never banned"),
    ("--sip-ports", "sip_ports", "SIP ports, space or comma separated (default 5060)"),
    ("--challenge-grace", "challenge_grace",
     "seconds an unanswered 401/407 waits before it is a failure (default 32)"),
    ("--ipv6-ban-prefix", "ipv6_ban_prefix", "count and ban IPv6 per prefix (default 128)"),
)


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """--config and the rule flags; values are checked by fastban.config (named errors)."""
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    for flag, dest, text in SETTINGS_FLAGS:
        parser.add_argument(flag, dest=dest, metavar="VALUE", help=text)
    parser.add_argument("--count-register-404", dest="count_register_404",
                        action="store_const", const=True,
                        help="count 404 answers to REGISTER (user enumeration) as failures")


def config_path(args) -> str | None:
    """--config, else the service's file /etc/fastban/fastban.toml when it exists."""
    if args.config:
        return args.config
    return DEFAULT_CONFIG_PATH if os.path.exists(DEFAULT_CONFIG_PATH) else None


def settings_flags(args) -> dict:
    """The settings given as flags (None for those not given)."""
    overrides = {dest: getattr(args, dest, None) for _, dest, _ in SETTINGS_FLAGS}
    overrides["count_register_404"] = getattr(args, "count_register_404", None)
    return overrides


def settings_from_args(args, **overrides):
    """The settings a command runs with: the file, then its flags."""
    return load_settings(config_path(args), {**settings_flags(args), **overrides})
