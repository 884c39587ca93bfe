"""`fastban web` (the page and /metrics) and `fastban web-password` (set its password)."""

from __future__ import annotations

import asyncio
import getpass
import logging
import signal
import sys

from fastban.arguments import config_path
from fastban.config import load_settings


def add_commands(subparsers) -> None:
    web = subparsers.add_parser("web", help="serve the operator's page and /metrics")
    _common(web)
    web.add_argument("--listen", dest="web_listen", help="address:port (default "
                     "127.0.0.1:8480); off loopback only with TLS and a password")
    web.add_argument("--metrics-listen", dest="metrics_listen",
                     help="serve /metrics on its own address:port")
    web.add_argument("--tls-cert", dest="web_tls_cert", help="PEM certificate: serve HTTPS")
    web.add_argument("--tls-key", dest="web_tls_key", help="its PEM private key")
    web.set_defaults(handler=cmd_web)

    password = subparsers.add_parser("web-password", help="set the web page's password "
                                      "(stored as a scrypt hash)")
    _common(password)
    password.add_argument("--stdin", action="store_true",
                          help="read the password from the first line of standard input")
    password.set_defaults(handler=cmd_web_password)


def _common(parser) -> None:
    parser.add_argument("--config", help="TOML settings file (the guard's)")
    parser.add_argument("--socket", dest="control_socket", help="the guard's control socket")


def _settings(args):
    flags = {name: getattr(args, name, None)
             for name in ("control_socket", "web_listen", "metrics_listen", "web_tls_cert",
                          "web_tls_key")}
    return load_settings(config_path(args), flags)


def cmd_web(args) -> int:
    from fastban.admin import CommandError
    from fastban.web.app import WebError, serve
    from fastban.web.passwords import PasswordError

    settings = _settings(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s fastban web: %(message)s",
                        stream=sys.stdout)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(settings, stop)

    try:
        asyncio.run(main())
    except (WebError, PasswordError) as error:
        raise CommandError(str(error)) from None
    return 0


def cmd_web_password(args) -> int:
    from fastban.admin import CommandError
    from fastban.web.passwords import PasswordError, hash_password, write_hash

    settings = _settings(args)
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("new web page password: ")
        if getpass.getpass("again: ") != password:
            raise CommandError("the two passwords differ; nothing changed")
    try:
        stored = hash_password(password)
        write_hash(settings.web_password_file, stored)
    except PasswordError as error:
        raise CommandError(f"{error}; nothing changed") from None
    except OSError as error:
        raise CommandError(f"cannot write {settings.web_password_file}: {error.strerror}") \
            from None
    print(f"web password set in {settings.web_password_file}; `fastban web` uses it from its "
          "next start")
    return 0
