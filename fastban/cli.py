"""The ``fastban`` command: one subcommand per job, each ending in one line on a user error.

``replay`` is here; run, list, ban, unban, detach and stats are in fastban.admin; limited in
fastban.limited; web and web-password in fastban.web.commands.

Exit codes: 0 done, 1 the request could not be carried out, 2 bad usage, bad settings or an
unreadable capture.
"""

from __future__ import annotations

import argparse
import json
import sys

from fastban import __version__

# Python modules fastban needs beside the standard library, and where each comes from.
DEPENDENCIES = {"msgpack": "make setup (pip: msgpack)", "scapy": "make setup (pip: scapy)",
                "aiohttp": "make setup (pip: aiohttp)", "tomlkit": "make setup (pip: tomlkit)",
                "prometheus_client": "make setup (pip: prometheus_client)",
                "bcc": "make host (Debian: python3-bpfcc; not the PyPI package 'bcc')"}


def add_replay_command(subparsers) -> None:
    from fastban.arguments import add_settings_arguments

    p = subparsers.add_parser(
        "replay", help="run the detection path over a pcap/pcapng capture",
        description="Which addresses the guard would ban, reading the SIP traffic of a "
                    "capture file as the live guard reads it.")
    p.add_argument("capture", metavar="CAPTURE", help="pcap or pcapng file (may be gzipped)")
    add_settings_arguments(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-final-expire", dest="final_expire", action="store_false",
                   help="at the end, do not treat still-open challenges as unanswered")
    p.set_defaults(handler=cmd_replay, prefix="fastban replay")


def cmd_replay(args) -> int:
    from fastban.arguments import settings_from_args
    from fastban.replay import format_text, replay

    settings = settings_from_args(args)
    result = replay(args.capture, settings, final_expire=args.final_expire)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(format_text(result, settings))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from fastban import admin, limited
    from fastban.web import commands as web_commands

    parser = argparse.ArgumentParser(
        prog="fastban", description="Brute-force guard for SIP servers (bans enforced by XDP).")
    parser.add_argument("--version", action="version", version=f"fastban {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_replay_command(subparsers)
    admin.add_commands(subparsers)
    limited.add_command(subparsers)
    web_commands.add_commands(subparsers)
    return parser


def _user_errors() -> tuple[tuple, tuple]:
    """(errors that end with exit code 2, those that end with 1)."""
    from fastban import control, state
    from fastban.abi import AbiError
    from fastban.admin import CommandError
    from fastban.config import ConfigError
    from fastban.dataplane import DataPlaneError
    from fastban.guard import GuardError
    from fastban.hep_input import HepInputError
    from fastban.replay import ReplayError
    return ((ConfigError, ReplayError),
            (CommandError, GuardError, control.ControlError, state.StateError, DataPlaneError,
             AbiError, HepInputError))


def _missing_module(prefix: str, error: ModuleNotFoundError) -> int:
    where = DEPENDENCIES.get((error.name or "").split(".")[0], "make setup")
    print(f"{prefix}: the Python module {error.name!r} is missing: {where}", file=sys.stderr)
    return 1


def main(argv=None) -> int:
    try:
        parser = build_parser()
        bad_input, refused = _user_errors()
    except ModuleNotFoundError as error:
        return _missing_module("fastban", error)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    prefix = getattr(args, "prefix", "fastban")
    try:
        return args.handler(args) or 0
    except bad_input as error:
        print(f"{prefix}: {error}", file=sys.stderr)
        return 2
    except refused as error:
        print(f"{prefix}: {error}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as error:
        return _missing_module(prefix, error)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
