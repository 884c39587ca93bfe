"""The operator's commands: run, list, ban, unban, stats.

`list`, `ban` and `unban` ask the running guard over its control socket; when none runs they
work on the interface's pinned kernel maps and the state file directly, so the list of blocked
addresses and the unblock action never depend on the service being up.

Exit codes: 0 done; 1 the request could not be carried out (not banned, table full, no guard
and no pinned maps); 2 bad usage or settings.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from fastban import control
from fastban.arguments import add_settings_arguments, config_path, settings_flags
from fastban.clock import iso
from fastban.config import load_settings
from fastban.dataplane import DEFAULT_PIN_ROOT, DataPlane
from fastban.offline import Offline

LIST_TIMEOUT = 300.0      # seconds a list may wait for the next chunk from the guard


class CommandError(Exception):
    """Ends the command with one line on stderr and exit code 1."""


def add_commands(subparsers) -> None:
    run = subparsers.add_parser("run", help="guard an interface: capture, detect, ban")
    add_settings_arguments(run)
    run.add_argument("--iface", help="the interface to guard")
    run.add_argument("--socket", dest="control_socket", help="control socket path")
    run.add_argument("--capture", dest="capture_direction",
                     choices=["egress", "ingress", "both"], help="where responses are read")
    run.add_argument("--xdp-mode", choices=["auto", "native", "generic"])
    run.add_argument("--ban-scope", choices=["all", "ports"])
    run.add_argument("--state-file")
    run.add_argument("--detach-on-exit", action="store_true",
                     help="remove the programs and lift the bans when stopping")
    run.set_defaults(handler=cmd_run)

    listing = subparsers.add_parser("list", help="blocked addresses and ranges")
    _common(listing)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=cmd_list)

    ban = subparsers.add_parser("ban", help="ban an address or network by hand")
    _common(ban)
    ban.add_argument("target", help="an address or CIDR network")
    ban.add_argument("--time", type=float, dest="duration",
                     help="seconds; 0 = permanent (default: bantime)")
    ban.add_argument("--reason", help="a label kept with the ban and shown in the list")
    ban.set_defaults(handler=cmd_ban)

    unban = subparsers.add_parser("unban", help="lift a ban (the unblock button)")
    _common(unban)
    target = unban.add_mutually_exclusive_group(required=True)
    target.add_argument("target", nargs="?", help="an address or CIDR network")
    target.add_argument("--all", action="store_true", help="lift every ban")
    unban.set_defaults(handler=cmd_unban)

    detach = subparsers.add_parser("detach", help="remove the programs and pinned maps from "
                                   "an interface (lifts every ban on it)")
    _common(detach)
    detach.set_defaults(handler=cmd_detach)

    stats = subparsers.add_parser("stats", help="packets, responses, failures, bans")
    _common(stats)
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.set_defaults(handler=cmd_stats)


def _common(parser) -> None:
    parser.add_argument("--config", help="TOML settings file")
    parser.add_argument("--iface", help="the guarded interface")
    parser.add_argument("--socket", dest="control_socket", help="control socket path")


def _settings(args, **overrides):
    """The settings the service reads: --config, else /etc/fastban/fastban.toml if it exists."""
    flags = {"control_socket": getattr(args, "control_socket", None), **overrides}
    return load_settings(config_path(args), flags)


# -- run ------------------------------------------------------------------------------------

def cmd_run(args) -> int:
    from fastban.service import Service

    overrides = settings_flags(args)
    for dest in ("capture_direction", "xdp_mode", "ban_scope", "state_file", "control_socket"):
        overrides[dest] = getattr(args, dest)
    path = config_path(args)
    settings = load_settings(path, overrides)
    iface = _iface(args, settings, must_be_pinned=False)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s fastban: %(message)s",
                        stream=sys.stdout)
    service = Service(settings, iface, config_path=path, overrides=overrides,
                      detach_on_exit=args.detach_on_exit)
    service.run()
    return 0


# -- list, ban, unban, stats: the running guard, else the pinned maps -------------------------

def _ask(settings, op: str, **arguments):
    """The running guard's answer, or None when no guard listens."""
    try:
        with control.Client(settings.control_socket) as client:
            return client.call(op, **arguments)
    except control.NotRunning:
        return None


def _iface(args, settings, must_be_pinned: bool = True) -> str:
    if args.iface:
        iface = args.iface
    elif settings.interfaces:
        iface = settings.interfaces[0]
    else:
        pinned = sorted(os.listdir(DEFAULT_PIN_ROOT)) if os.path.isdir(DEFAULT_PIN_ROOT) else []
        if len(pinned) != 1:
            raise CommandError("name the interface with --iface" +
                               (f" (guarded: {', '.join(pinned)})" if pinned else ""))
        iface = pinned[0]
    if must_be_pinned and not os.path.isdir(os.path.join(DEFAULT_PIN_ROOT, iface)):
        raise CommandError(f"no guard is running and none has left bans on {iface}")
    return iface


def _offline(args, settings, must_be_pinned: bool = True) -> Offline:
    try:
        iface = _iface(args, settings, must_be_pinned)
    except CommandError:
        if must_be_pinned:
            raise
        iface = None
    return Offline(settings, iface, DEFAULT_PIN_ROOT)


def _warn(offline: Offline) -> None:
    for warning in offline.warnings:
        print(f"fastban: {warning}", file=sys.stderr)


def cmd_list(args) -> int:
    settings = _settings(args)
    try:
        # The guard reads every ban in the kernel before the first row: seconds at 1M bans.
        with control.Client(settings.control_socket, timeout=LIST_TIMEOUT) as client:
            rows = client.stream("list")
            print_bans(rows, args.json)
        return 0
    except control.NotRunning:
        pass
    offline = _offline(args, settings)
    rows = offline.listing()
    _warn(offline)
    print_bans(iter(rows), args.json)
    return 0


def print_bans(rows, as_json: bool) -> None:
    """Writes the rows as they come (a million bans are never one message nor one string)."""
    out = sys.stdout
    if as_json:
        out.write('{"bans": [')
        for n, row in enumerate(rows):
            out.write(("\n  " if n == 0 else ",\n  ") + json.dumps(row))
        out.write("\n]}\n")
        return
    now, widths, any_row = time.time(), None, False
    for chunk in _chunks(rows, 10_000):
        table = [_cells(row, now) for row in chunk]
        if widths is None:              # from the first chunk: the columns stay put
            widths = [max(len(line[i]) for line in [HEADINGS, *table])
                      for i in range(len(HEADINGS) - 1)]
            out.write(_line(HEADINGS, widths) + "\n")
        for line in table:
            out.write(_line(line, widths) + "\n")
        any_row = True
    if not any_row:
        out.write("no addresses are blocked\n")


def _chunks(rows, size: int):
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def cmd_ban(args) -> int:
    settings = _settings(args)
    record = _ask(settings, "ban", target=args.target, duration=args.duration,
                  reason=args.reason)
    if record is None:
        offline = _offline(args, settings)
        record = offline.ban(args.target, args.duration, args.reason)
        _warn(offline)
    until = "permanently" if record["expires_at"] == 0 else f"until {iso(record['expires_at'])}"
    print(f"banned {record['target']} {until}")
    return 0


def cmd_unban(args) -> int:
    settings = _settings(args)
    op, arguments = ("unban_all", {}) if args.all else ("unban", {"target": args.target})
    answer = _ask(settings, op, **arguments)
    only_saved = False
    if answer is None:
        from fastban.handbans import as_network
        offline = _offline(args, settings, must_be_pinned=False)
        targets = None if args.all else [as_network(args.target)]
        removed, reached_maps = offline.unban(targets)
        only_saved = not reached_maps
        if not reached_maps or not removed:
            _warn(offline)
    else:
        removed = answer["removed"]
    where = " (from the saved state only: the kernel maps were not found)" if only_saved else ""
    if args.all:
        print(f"unbanned {removed} address{'es' if removed != 1 else ''}{where}")
        return 0
    if not removed:
        raise CommandError(f"{args.target} is not banned")
    print(f"unbanned {args.target}{where}")
    return 0


def cmd_detach(args) -> int:
    settings = _settings(args)
    if _ask(settings, "stats") is not None:
        raise CommandError("a guard is running on this socket: stop it with "
                           "--detach-on-exit, or stop it first")
    iface = _iface(args, settings)
    DataPlane.open_pinned(iface).detach()
    print(f"detached from {iface}; its bans are lifted")
    return 0


def cmd_stats(args) -> int:
    settings = _settings(args)
    figures = _ask(settings, "stats")
    if figures is None:
        raise CommandError(f"no guard is listening on {settings.control_socket}")
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        width = max(map(len, figures))
        for key, value in figures.items():
            if key == "ban_latency":
                value = _latency(value)
            elif isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in sorted(value.items())) or "-"
            print(f"{key.replace('_', ' '):<{width}}  {value}")
    return 0


# -- output ---------------------------------------------------------------------------------

HEADINGS = ("ADDRESS", "BANNED AT", "TIME LEFT", "DROPPED", "FAILURES", "ORIGIN", "REASON")


def _cells(row: dict, now: float) -> tuple:
    return (row["target"], iso(row["banned_at"]) if row["banned_at"] else "-",
            "permanent" if row["time_left"] is None else _span(row["time_left"]),
            str(row["packets_dropped"]), str(row["failures"]), row.get("origin", "-"),
            row["reason"])


def _line(cells, widths) -> str:
    return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths)) + "  " + cells[-1]


def _latency(histogram: dict) -> str:
    """'N bans from the wire, mean X ms' of the guard's ban latency histogram."""
    count = histogram.get("count", 0)
    if not count:
        return "no ban from the wire yet"
    return f"{count} bans from the wire, mean {histogram['sum'] / count * 1000:.2f} ms to the map"


def _span(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
