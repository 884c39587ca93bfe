"""The ``fastban`` command: argparse with one subparser per command.

Commands are registered by *command providers*: a function
``add_commands(subparsers)`` that adds subparsers and sets ``handler=`` on each
(``handler(args) -> int``), paired with a ``dispatch(args) -> int`` that runs
the handler and turns the provider's user errors into one line on stderr.
``replay`` is provided here; run, list, ban, unban and stats by
``fastban.admin`` (when present).  Another provider is added to ``PROVIDERS``.

Exit codes: 0 done, 1 the request could not be carried out, 2 bad usage,
bad settings or an unreadable capture.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from fastban import __version__
from fastban.config import DEFAULT_CONFIG_PATH, ConfigError, load_settings

# -- settings flags shared by commands ----------------------------------------------------

SETTINGS_FLAGS = (
    # (flag, setting, help)
    ("--maxretry", "maxretry", "failures that ban (default 10)"),
    ("--findtime", "findtime", "... within this many seconds (default 1800)"),
    ("--bantime", "bantime", "ban for this many seconds (default 43200)"),
    ("--whitelist", "whitelist", "space-separated IPs and subnets never banned"),
    ("--never-block", "never_block", "space-separated networks never banned"),
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


def settings_from_args(args):
    overrides = {dest: getattr(args, dest, None) for _, dest, _ in SETTINGS_FLAGS}
    overrides["count_register_404"] = getattr(args, "count_register_404", None)
    return load_settings(config_path(args), overrides)


# -- replay -------------------------------------------------------------------------------

def add_replay_command(subparsers) -> None:
    p = subparsers.add_parser(
        "replay", help="run the parser and the rules over a pcap/pcapng capture",
        description="Which addresses the guard would ban, reading the server's SIP responses "
                    "(packets whose source port is a SIP port) from a capture file.")
    p.add_argument("capture", metavar="CAPTURE", help="pcap or pcapng file (may be gzipped)")
    add_settings_arguments(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-final-expire", dest="final_expire", action="store_false",
                   help="at the end, do not treat still-open challenges as unanswered")
    p.set_defaults(handler=cmd_replay)


def cmd_replay(args) -> int:
    from fastban.replay import format_text, replay

    settings = settings_from_args(args)
    result = replay(args.capture, settings, final_expire=args.final_expire)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(format_text(result, settings))
    return 0


def dispatch(args) -> int:
    from fastban.replay import ReplayError

    try:
        return args.handler(args) or 0
    except (ConfigError, ReplayError) as error:
        print(f"fastban {args.command}: {error}", file=sys.stderr)
        return 2


def _admin_provider():
    try:
        from fastban import admin
    except ImportError:
        return None
    return admin.add_commands, admin.dispatch


PROVIDERS = [
    lambda: (add_replay_command, dispatch),
    _admin_provider,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastban", description="Brute-force guard for SIP servers (bans enforced by XDP).")
    parser.add_argument("--version", action="version", version=f"fastban {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for provider in PROVIDERS:
        entry = provider()
        if entry is None:
            continue
        add_commands, run = entry
        before = set(subparsers.choices)
        add_commands(subparsers)
        for name in set(subparsers.choices) - before:
            subparsers.choices[name].set_defaults(_dispatch=run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args._dispatch(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
