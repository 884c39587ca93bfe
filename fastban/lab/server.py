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

Options (SipLab's, set by _configure_server): tls=True adds SIP over TLS on TLS_PORT (5061),
v4 and v6, with a self-signed certificate made with `openssl` in Kamailio's working directory;
hep_to="127.0.0.1:PORT" (or "[::1]:PORT") mirrors every SIP message Kamailio receives or sends
as HEPv3 to that collector (siptrace, trace_mode 1), over hep_transport "udp" or "tcp", with
hep_auth_key when given and hep_capture_id. The collector is in the server's namespace (the
guard runs there), so its address is a loopback one; see SipLab.start_hep_collector.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fastban.lab.clients import _child_setup, _signal_group
from fastban.lab.plan import (LAB_FILES, REALM, SERVER_V4, SERVER_V6, SIP_PORT, TLS_PORT,
                              SipLabError, _normal)

_REQ_LINE = re.compile(r"FBLAB REQ src=(\S+) sport=(\d+) proto=(\S+) method=(\S+) callid=(\S*)")
_REP_LINE = re.compile(r"FBLAB REP (\d{3}) dst=(\S+)(.*)")
_FIELD = re.compile(r"(\w+)=(\S*)")
_RCV_LINE = re.compile(r"FBLAB RCV src=(\S+) sport=(\d+) proto=(\d+) len=\d+ first=(\S*)")
_PROTOS = {"1": "udp", "2": "tcp", "3": "tls", "4": "sctp", "5": "ws", "6": "wss"}
_HEP_TO = re.compile(r"(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\]):(\d{1,5})")


@dataclass(frozen=True)
class ServerMessage:
    """One SIP message as Kamailio logged it on arrival, before any processing."""
    source: str          # normalised address (ipaddress)
    port: int
    proto: str           # "udp" / "tcp" / "tls"
    first: str           # the first word: the method of a request, "SIP/2.0" for a response

    @property
    def is_request(self) -> bool:
        return not self.first.startswith("SIP/")


@dataclass(frozen=True)
class ServerRequest:
    """One request as Kamailio logged it on arrival."""
    source: str          # normalised address (ipaddress)
    port: int
    proto: str           # "udp" / "tcp" / "tls"
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
    settings), tmp (its directory) and server_namespace; _configure_server() takes the TLS and
    HEP options, _init_server() sets up its own state."""

    def _configure_server(self, tls: bool = False, hep_to: str | None = None,
                          hep_transport: str = "udp", hep_auth_key: str | None = None,
                          hep_capture_id: int = 2001) -> None:
        match = _HEP_TO.fullmatch(hep_to) if hep_to is not None else None
        if hep_to is not None and not (match and 1 <= int(match.group(2)) <= 65535):
            raise SipLabError("hep_to must be a loopback address and port: '127.0.0.1:9060' "
                              "or '[::1]:9060' (the collector is in the server's namespace)")
        if hep_transport not in ("udp", "tcp"):
            raise SipLabError("hep_transport must be 'udp' or 'tcp'")
        if hep_auth_key is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", hep_auth_key):
            raise SipLabError("hep_auth_key: 1 to 64 letters, digits, '.', '_', '-'")
        if not 0 <= hep_capture_id <= 0xFFFFFFFF:
            raise SipLabError("hep_capture_id must fit in 32 bits")
        self.tls = bool(tls)
        self.hep_to = hep_to
        self.hep_transport = hep_transport
        self.hep_auth_key = hep_auth_key
        self.hep_capture_id = hep_capture_id

    @property
    def hep_address(self) -> tuple[str, int] | None:
        """The collector's (address, port) from hep_to, the address without brackets."""
        if self.hep_to is None:
            return None
        host, port = self.hep_to.rsplit(":", 1)
        return host.strip("[]"), int(port)

    def server_ports(self) -> dict[str, int]:
        """The server's SIP ports by transport: udp, tcp, and tls when the lab has it."""
        ports = {"udp": SIP_PORT, "tcp": SIP_PORT}
        if self.tls:
            ports["tls"] = TLS_PORT
        return ports

    def _kamailio_dir(self) -> Path:
        return (self.tmp / "kamailio") if self.tmp is not None else Path("kamailio")

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
        listen = "\n".join(f"listen={proto}:{host}:{port}"
                           for host in (SERVER_V4, f"[{SERVER_V6}]")
                           for proto, port in self.server_ports().items())
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
            "TLS": "ON" if self.tls else "OFF",
            "TLS_CONFIG": str(self._kamailio_dir() / "tls.cfg"),
            "HEP": "ON" if self.hep_to else "OFF",
            "HEP_URI": (f"sip:{self.hep_to}"
                        + (";transport=tcp" if self.hep_transport == "tcp" else "")
                        if self.hep_to else ""),
            "HEP_CAPTURE_ID": str(self.hep_capture_id),
            "HEP_AUTH_KEY": (f'modparam("siptrace", "auth_key", "{self.hep_auth_key}")'
                             if self.hep_auth_key else ""),
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
        if self.tls:
            self._make_certificate(kdir)
        cfg.write_text(self.render_config())
        self.server_log = kdir / "kamailio.log"
        self._kamailio_log = open(self.server_log, "ab")
        self._kamailio = self.server_namespace.popen(
            ["kamailio", "-f", str(cfg), "-DD", "-E", "-P", str(kdir / "kamailio.pid"),
             "-Y", str(kdir / "run"), "-w", str(kdir), "-m", "64" if self.tls else "32",
             "-M", "8" if self.tls else "4"],
            stdin=subprocess.DEVNULL, stdout=self._kamailio_log, stderr=self._kamailio_log,
            start_new_session=True, preexec_fn=_child_setup(os.getpid()))
        self._wait_listening(timeout=15)

    def _wait_listening(self, timeout: float) -> None:
        # ss names the socket's protocol: a TLS port is a TCP one.
        wanted = {("tcp" if proto == "tls" else proto, host, port)
                  for proto, port in self.server_ports().items()
                  for host in (SERVER_V4, SERVER_V6)}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._kamailio.poll() is not None:
                raise SipLabError(f"kamailio exited with {self._kamailio.returncode}: "
                                  f"{self.server_log_text()[-1500:]}")
            out = self.server_namespace.run(["ss", "-Hlnut"], check=False).stdout
            found = set()
            for line in out.splitlines():
                parts = line.split()
                if len(parts) >= 5 and parts[4].rsplit(":", 1)[-1].isdigit():
                    host, port = parts[4].rsplit(":", 1)
                    found.add((parts[0], host.strip("[]"), int(port)))
            if wanted <= found:
                return
            time.sleep(0.05)
        raise SipLabError(f"kamailio did not listen on {sorted(wanted - found)} within "
                          f"{timeout} s")

    def _make_certificate(self, kdir: Path) -> None:
        """A self-signed certificate for the server's addresses and tls.cfg naming it."""
        if shutil.which("openssl") is None:
            raise SipLabError("openssl is not installed (run: make host)")
        key, cert = kdir / "tls-key.pem", kdir / "tls-cert.pem"
        result = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", f"/CN={REALM}",
             "-addext", f"subjectAltName=DNS:{REALM},IP:{SERVER_V4},IP:{SERVER_V6}",
             "-keyout", str(key), "-out", str(cert)],
            capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise SipLabError(f"openssl could not make the lab's certificate: "
                              f"{result.stderr.strip()[-500:]}")
        (kdir / "tls.cfg").write_text(
            "# fastban lab: Kamailio's TLS settings (rendered by fastban/lab/server.py)\n"
            "[server:default]\n"
            "method = TLSv1.2+\n"
            "verify_certificate = no\n"
            "require_certificate = no\n"
            f"private_key = {key}\n"
            f"certificate = {cert}\n"
            "\n"
            "[client:default]\n"
            "method = TLSv1.2+\n"
            "verify_certificate = no\n"
            "require_certificate = no\n")

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
