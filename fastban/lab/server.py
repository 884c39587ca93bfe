"""Kamailio, the lab's SIP server: its configuration (rendered from
fastban/lab/kamailio.cfg.tmpl), its start and stop, and what it received and answered, read
from its log. KamailioServer is that part of SipLab.

Counting at the server: Kamailio's script (fastban/lab/kamailio.cfg.tmpl) logs to stderr, which
goes to a log file (`lab.server_log`) opened for appending:
  FBLAB RCV src= sport= proto= first=   every SIP message the network delivered, logged in
                                        event_route[core:msg-received] before any module can
                                        absorb it (sl swallows the ACKs of its own replies)
  FBLAB REQ src= ... method= callid=    every request reaching request_route
  FBLAB REP <code> dst= dport= method= callid= [reason=]
                                        every reply the script sends; reason=bad-credentials
                                        when it refused credentials, challenge for a first
                                        challenge, unknown-user for a 404
`server_requests_from` counts RCV lines (requests only), `server_requests` lists REQ lines,
`server_replies_to` counts REP lines, `server_replies` lists them, `server_auth_failures_to`
counts the refused credentials; the log is read incrementally and the tallies outlive close().
Kamailio logs before it answers, so once a client has its answer the line is there.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fastban.lab.clients import _child_setup, _signal_group
from fastban.lab.plan import (LAB_FILES, REALM, SERVER_V4, SERVER_V6, SIP_PORT, SipLabError,
                              _normal)

_REQ_LINE = re.compile(r"FBLAB REQ src=(\S+) sport=(\d+) proto=(\S+) method=(\S+) callid=(\S*)")
_REP_LINE = re.compile(r"FBLAB REP (\d{3}) dst=(\S+)(.*)")
_FIELD = re.compile(r"(\w+)=(\S*)")
_RCV_LINE = re.compile(r"FBLAB RCV src=(\S+) sport=(\d+) proto=(\d+) len=\d+ first=(\S*)")
_PROTOS = {"1": "udp", "2": "tcp", "3": "tls", "4": "sctp", "5": "ws", "6": "wss"}


@dataclass(frozen=True)
class ServerMessage:
    """One SIP message as Kamailio logged it on arrival, before any processing."""
    source: str          # normalised address (ipaddress)
    port: int
    proto: str           # "udp" / "tcp"
    first: str           # the first word: the method of a request, "SIP/2.0" for a response

    @property
    def is_request(self) -> bool:
        return not self.first.startswith("SIP/")


@dataclass(frozen=True)
class ServerRequest:
    """One request as Kamailio logged it on arrival."""
    source: str          # normalised address (ipaddress)
    port: int
    proto: str           # "udp" / "tcp"
    method: str
    call_id: str


@dataclass(frozen=True)
class ServerReply:
    """One reply as Kamailio's script logged it before sending it."""
    code: int
    destination: str     # normalised address (ipaddress)
    port: int
    method: str          # of the request answered
    call_id: str
    reason: str          # "challenge" or "bad-credentials" for 401/407/403, else ""

    @property
    def is_auth_failure(self) -> bool:
        """A reply to credentials the server did not accept."""
        return self.reason == "bad-credentials"


class KamailioServer:
    """The Kamailio part of SipLab: start and stop, and the counting (server_* methods).

    Uses the lab's users, qop, bad_auth_reply, unknown_user_reply, server_children (its
    settings), tmp (its directory) and server_namespace; _init_server() sets up its own state."""

    def _init_server(self) -> None:
        self.server_log: Path | None = None
        self._kamailio: subprocess.Popen | None = None
        self._kamailio_log = None
        self._log_offset = 0
        self._requests: list[ServerRequest] = []
        self._messages: list[ServerMessage] = []
        self._requests_by_source: dict[str, int] = {}
        self._replies_by_dest: dict[str, dict[int, int]] = {}
        self._replies: list[ServerReply] = []

    def render_config(self) -> str:
        template = (LAB_FILES / "kamailio.cfg.tmpl").read_text()
        listen = "\n".join(f"listen={proto}:{host}:{SIP_PORT}"
                           for host in (SERVER_V4, f"[{SERVER_V6}]")
                           for proto in ("udp", "tcp"))
        cases = "\n".join(f'\t\tcase "{user}":\n\t\t\t$var(pw) = "{password}";\n\t\t\tbreak;'
                          for user, password in self.users.items())
        values = {
            "LISTEN": listen,
            "PASSWORD_CASES": cases,
            "SECRET": secrets.token_hex(16),
            "REALM": REALM,
            "QOP_FLAG": "1" if self.qop else "0",
            "BAD_AUTH_REPLY": self.bad_auth_reply,
            "UNKNOWN_USER_REPLY": self.unknown_user_reply,
            "CHILDREN": str(self.server_children),
        }
        for key, value in values.items():
            template = template.replace(f"@@{key}@@", value)
        leftover = re.search(r"@@\w+@@", template)
        if leftover:
            raise SipLabError(f"kamailio template placeholder {leftover.group()} not filled")
        return template

    def _start_kamailio(self) -> None:
        assert self.tmp is not None
        kdir = self.tmp / "kamailio"
        (kdir / "run").mkdir(parents=True)
        cfg = kdir / "kamailio.cfg"
        cfg.write_text(self.render_config())
        self.server_log = kdir / "kamailio.log"
        self._kamailio_log = open(self.server_log, "ab")
        self._kamailio = self.server_namespace.popen(
            ["kamailio", "-f", str(cfg), "-DD", "-E", "-P", str(kdir / "kamailio.pid"),
             "-Y", str(kdir / "run"), "-w", str(kdir), "-m", "32", "-M", "4"],
            stdin=subprocess.DEVNULL, stdout=self._kamailio_log, stderr=self._kamailio_log,
            start_new_session=True, preexec_fn=_child_setup(os.getpid()))
        self._wait_listening(timeout=15)

    def _wait_listening(self, timeout: float) -> None:
        wanted = {("udp", SERVER_V4), ("udp", SERVER_V6), ("tcp", SERVER_V4), ("tcp", SERVER_V6)}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._kamailio.poll() is not None:
                raise SipLabError(f"kamailio exited with {self._kamailio.returncode}: "
                                  f"{self.server_log_text()[-1500:]}")
            out = self.server_namespace.run(["ss", "-Hlnut"], check=False).stdout
            found = set()
            for line in out.splitlines():
                parts = line.split()
                if len(parts) >= 5 and parts[4].endswith(f":{SIP_PORT}"):
                    host = parts[4].rsplit(":", 1)[0].strip("[]")
                    found.add((parts[0], host))
            if wanted <= found:
                return
            time.sleep(0.05)
        raise SipLabError(f"kamailio did not listen on port {SIP_PORT} within {timeout} s")

    def _stop_kamailio(self) -> None:
        proc, self._kamailio = self._kamailio, None
        if proc is not None and proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if proc is not None:
            # Kamailio's children share its process group; none may outlive the lab.
            _signal_group(proc, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(timeout=5)
        if self._kamailio_log is not None:
            self._kamailio_log.close()
            self._kamailio_log = None

    @property
    def kamailio_pid(self) -> int | None:
        return self._kamailio.pid if self._kamailio else None

    def server_running(self) -> bool:
        return self._kamailio is not None and self._kamailio.poll() is None

    # ----------------------------------------------------------------- counting at the server

    def server_log_text(self) -> str:
        """Kamailio's whole log so far (empty once the lab is closed)."""
        if self.server_log is None:
            return ""
        try:
            return self.server_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _scan_log(self) -> None:
        """Reads the log lines added since the last scan (whole lines only) into the tallies."""
        if self.server_log is None:
            return
        try:
            with open(self.server_log, "rb") as f:
                f.seek(self._log_offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1
        self._log_offset += end
        for line in chunk[:end].decode(errors="replace").splitlines():
            m = _RCV_LINE.search(line)
            if m:
                message = ServerMessage(_normal(m.group(1)), int(m.group(2)),
                                        _PROTOS.get(m.group(3), m.group(3)), m.group(4))
                self._messages.append(message)
                if message.is_request:
                    self._requests_by_source[message.source] = (
                        self._requests_by_source.get(message.source, 0) + 1)
                continue
            m = _REQ_LINE.search(line)
            if m:
                request = ServerRequest(_normal(m.group(1)), int(m.group(2)), m.group(3),
                                        m.group(4), m.group(5))
                self._requests.append(request)
                continue
            m = _REP_LINE.search(line)
            if m:
                code, destination = int(m.group(1)), _normal(m.group(2))
                replies = self._replies_by_dest.setdefault(destination, {})
                replies[code] = replies.get(code, 0) + 1
                fields = dict(_FIELD.findall(m.group(3)))
                self._replies.append(ServerReply(code, destination, int(fields.get("dport") or 0),
                                                 fields.get("method", ""),
                                                 fields.get("callid", ""),
                                                 fields.get("reason", "")))

    def server_messages(self) -> list[ServerMessage]:
        """Every SIP message Kamailio received from the network so far, in order."""
        self._scan_log()
        return list(self._messages)

    def server_requests(self) -> list[ServerRequest]:
        """Every request that reached Kamailio's request_route so far, in order, with its
        Call-ID. (ACKs of the server's own replies are absorbed before: they are counted by
        server_requests_from but not listed here.)"""
        self._scan_log()
        return list(self._requests)

    def server_requests_from(self, address: str, method: str | None = None) -> int:
        """How many SIP requests from `address` Kamailio received (optionally of one method):
        every one the network delivered, ACKs included."""
        self._scan_log()
        wanted = _normal(address)
        if method is None:
            return self._requests_by_source.get(wanted, 0)
        return sum(1 for m in self._messages
                   if m.source == wanted and m.is_request and m.first == method)

    def server_replies_to(self, address: str) -> dict[int, int]:
        """The replies Kamailio's script sent to `address` so far, by status code."""
        self._scan_log()
        return dict(self._replies_by_dest.get(_normal(address), {}))

    def server_replies(self) -> list[ServerReply]:
        """Every reply Kamailio's script sent so far, in order."""
        self._scan_log()
        return list(self._replies)

    def server_auth_failures_to(self, address: str) -> int:
        """How many times so far Kamailio refused the credentials of a request from `address`
        (401, 407 or 403 with reason=bad-credentials)."""
        self._scan_log()
        wanted = _normal(address)
        return sum(1 for r in self._replies if r.destination == wanted and r.is_auth_failure)
