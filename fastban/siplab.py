"""A SIP lab: a real SIP server (Kamailio) doing digest authentication, a phone and attackers.

Used by the end-to-end test, the demo and the benchmarks. Needs root, iproute2, kamailio and
sipp (Debian: kamailio, sip-tester). Nothing is sent to any address outside the lab.

Topology (every box is a network namespace; the lines are veth pairs)::

      phone 198.51.100.10          attacker i 203.0.113.(10+i)
      2001:db8:100::10             2001:db8:113::(10+i, in hex)
            |                             |
            +--------- br0 ---------------+     "net": a router; the clients' veths are
                        |                       ports of bridge br0 (198.51.100.1,
                     router                     203.0.113.1, 2001:db8:100::1,
                        |                       2001:db8:113::1); forwarding on
                        | 192.0.2.1  2001:db8:2::1
                        |
                        | lab.server_iface: 192.0.2.10  2001:db8:2::10
                     server                     Kamailio, UDP and TCP 5060, v4 and v6

The server has ONE interface (`server_iface`) and every client reaches it through the router,
so the guard attaches XDP and TC to that one interface and sees every client's own source
address (routed, not NATed).

    with SipLab(attackers=2) as lab:
        ok = lab.register_phone(count=3, interval=0.2)        # RegisterResult
        attack = lab.start_attacker(guesses=20, rate=50)       # AttackerHandle
        result = attack.wait()                                 # AttackResult
        lab.server_requests_from(lab.attacker_address(0))      # == result.requests_sent

Counting at the server: Kamailio's script (fastban/lab/kamailio.cfg.tmpl) logs to stderr, which
goes to a log file (`lab.server_log`) opened for appending:
  FBLAB RCV src= sport= proto= first=   every SIP message the network delivered, logged in
                                        event_route[core:msg-received] before any module can
                                        absorb it (sl swallows the ACKs of its own replies)
  FBLAB REQ src= ... method= callid=    every request reaching request_route
  FBLAB REP <code> dst=                 every reply the script sends
`server_requests_from` counts RCV lines (requests only), `server_requests` lists REQ lines,
`server_replies_to` counts REP lines; the log is read incrementally and the tallies outlive
close(). Kamailio logs before it answers, so once a client has its answer the line is there.

Counting at the clients: sipp's -trace_counts file (per scenario message: sent, received,
timeouts) and -trace_stat file (successful and failed calls).
"""

from __future__ import annotations

import csv
import ctypes
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastban import netns

LAB_FILES = Path(__file__).parent / "lab"
SIP_PORT = 5060
BRIDGE_MAC = "02:fb:00:00:00:01"   # locally administered; each lab has its own namespace

SERVER_V4, SERVER_V6 = "192.0.2.10", "2001:db8:2::10"
ROUTER_SERVER_V4, ROUTER_SERVER_V6 = "192.0.2.1", "2001:db8:2::1"
PHONE_V4, PHONE_V6 = "198.51.100.10", "2001:db8:100::10"
ROUTER_PHONE_V4, ROUTER_PHONE_V6 = "198.51.100.1", "2001:db8:100::1"
ROUTER_ATTACKER_V4, ROUTER_ATTACKER_V6 = "203.0.113.1", "2001:db8:113::1"
MAX_ATTACKERS = 200

DEFAULT_USERS = {"1001": "phone-1001-secret", "1002": "phone-1002-secret"}
PHONE_USER = "1001"
REALM = "fastban.lab"

_REQ_LINE = re.compile(r"FBLAB REQ src=(\S+) sport=(\d+) proto=(\S+) method=(\S+) callid=(\S*)")
_REP_LINE = re.compile(r"FBLAB REP (\d{3}) dst=(\S+)")
_RCV_LINE = re.compile(r"FBLAB RCV src=(\S+) sport=(\d+) proto=(\d+) len=\d+ first=(\S*)")
_PROTOS = {"1": "udp", "2": "tcp", "3": "tls", "4": "sctp", "5": "ws", "6": "wss"}


class SipLabError(RuntimeError):
    pass


def attacker_addresses(index: int) -> tuple[str, str]:
    """The IPv4 and IPv6 address of attacker `index` (0-based)."""
    if not 0 <= index < MAX_ATTACKERS:
        raise SipLabError(f"attacker index {index} outside 0..{MAX_ATTACKERS - 1}")
    return f"203.0.113.{10 + index}", f"2001:db8:113::{10 + index:x}"


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


@dataclass
class MessageCount:
    """One row of sipp's -trace_counts file: a message of the scenario and what happened."""
    index: int
    kind: str            # "send", "recv", "pause", "nop" ...
    name: str            # "REGISTER", "401", ...
    messages: int        # sent (send) or received (recv)
    retrans: int
    timeouts: int
    unexpected: int


@dataclass
class ClientRun:
    """What a sipp run did, read from its trace files."""
    returncode: int
    successful_calls: int
    failed_calls: int
    counts: list[MessageCount] = field(default_factory=list)
    stdout_tail: str = ""

    @property
    def requests_sent(self) -> int:
        """Requests put on the wire, retransmissions included."""
        return sum(c.messages + c.retrans for c in self.counts if c.kind == "send")

    def requests_by_method(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.counts:
            if c.kind == "send":
                out[c.name] = out.get(c.name, 0) + c.messages + c.retrans
        return out

    def responses(self) -> dict[int, int]:
        """Expected responses received, by status code."""
        out: dict[int, int] = {}
        for c in self.counts:
            if c.kind == "recv" and c.name.isdigit():
                out[int(c.name)] = out.get(int(c.name), 0) + c.messages
        return out

    @property
    def timeouts(self) -> int:
        return sum(c.timeouts for c in self.counts)

    @property
    def unexpected(self) -> int:
        return sum(c.unexpected for c in self.counts)


@dataclass
class RegisterResult:
    """A phone's registrations: each success is REGISTER, 401, REGISTER with auth, 200."""
    successes: int
    failures: int
    requests_sent: int
    responses: dict[int, int]
    run: ClientRun


@dataclass
class AttackResult:
    """An attacker's run: it sent requests_sent requests, all with one Call-ID."""
    requests_sent: int            # every request, ACKs included (INVITE attacker)
    responses: dict[int, int]     # 401 / 407 / 403 / 200 / 486 received
    timeouts: int                 # requests left without an answer
    run: ClientRun

    @property
    def by_method(self) -> dict[str, int]:
        """Requests sent by method, e.g. {"INVITE": 11, "ACK": 11}."""
        return self.run.requests_by_method()


class _SippProcess:
    """A running sipp in a client namespace, its files in its own directory."""

    def __init__(self, ns: netns.Namespace, workdir: Path, args: list[str], bound: float):
        self.workdir = workdir
        self.bound = bound
        self.started = time.monotonic()
        self._stdout = open(workdir / "sipp.out", "wb")
        self.proc = ns.popen(["sipp", *args], cwd=workdir, stdin=subprocess.DEVNULL,
                             stdout=self._stdout, stderr=subprocess.STDOUT,
                             start_new_session=True, preexec_fn=_child_setup(os.getpid()))
        self.result_run: ClientRun | None = None

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_run(self, timeout: float | None = None) -> ClientRun:
        if self.result_run is not None:
            return self.result_run
        if timeout is None:
            timeout = max(0.0, self.started + self.bound - time.monotonic()) + 5
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise SipLabError(f"sipp did not finish within {timeout:.0f} s; stopped it "
                              f"(output in {self.workdir})")
        return self._collect()

    def stop(self) -> ClientRun:
        """Stops sipp (SIGTERM to its own process group, then SIGKILL) and reads its files."""
        if self.proc.poll() is None:
            _signal_group(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc, signal.SIGKILL)
                self.proc.wait(timeout=5)
        return self._collect()

    def _collect(self) -> ClientRun:
        if self.result_run is None:
            self._stdout.close()
            self.result_run = _read_sipp_files(self.workdir, self.proc.returncode)
        return self.result_run


_PR_SET_PDEATHSIG = 1


def _child_setup(parent: int):
    """Runs in the child between fork and exec: it gets SIGTERM when the thread that started
    it ends, so a lab whose Python process is killed leaves no server or client behind.
    (So a lab must be closed, or at least kept, by the thread that started it.)"""
    def setup() -> None:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)
    return setup


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)      # the group sipp/kamailio leads (start_new_session)
    except ProcessLookupError:
        pass


def _read_sipp_files(workdir: Path, returncode: int) -> ClientRun:
    counts: list[MessageCount] = []
    for path in sorted(workdir.glob("*_counts.csv")):
        counts = _parse_counts(path)
    successful = failed = 0
    stat = workdir / "stat.csv"
    if stat.exists():
        rows = list(csv.reader(stat.open(), delimiter=";"))
        if len(rows) >= 2:
            header, last = rows[0], rows[-1]
            values = dict(zip(header, last))
            successful = int(values.get("SuccessfulCall(C)", 0) or 0)
            failed = int(values.get("FailedCall(C)", 0) or 0)
    out = workdir / "sipp.out"
    tail = out.read_text(errors="replace")[-2000:] if out.exists() else ""
    return ClientRun(returncode, successful, failed, counts, tail)


def _parse_counts(path: Path) -> list[MessageCount]:
    """sipp's -trace_counts CSV: the last line holds the totals of each scenario message."""
    rows = [r for r in csv.reader(path.open(), delimiter=";") if r]
    if len(rows) < 2:
        return []
    header, last = rows[0], rows[-1]
    counts = []
    # Columns: CurrentTime;ElapsedTime;<i>_<NAME>_<Kind>;<i>_<NAME>_Retrans;... per message.
    for col, value in zip(header, last):
        m = re.fullmatch(r"(\d+)_(.+)_(\w+)", col)
        if not m:
            continue
        index, name, what = int(m.group(1)), m.group(2), m.group(3)
        entry = next((c for c in counts if c.index == index), None)
        if entry is None:
            entry = MessageCount(index, "", name, 0, 0, 0, 0)
            counts.append(entry)
        number = int(value or 0)
        if what in ("Sent", "Recv"):
            entry.kind = "send" if what == "Sent" else "recv"
            entry.messages = number
        elif what == "Retrans":
            entry.retrans = number
        elif what == "Timeout":
            entry.timeouts = number
        elif what == "Unexp":
            entry.unexpected = number
        elif entry.kind == "":
            entry.kind = what.lower()
    return counts


class PhoneHandle:
    """A phone registering in the background; wait() gives its RegisterResult."""

    def __init__(self, sipp: _SippProcess):
        self._sipp = sipp

    def running(self) -> bool:
        return self._sipp.running()

    def wait(self, timeout: float | None = None) -> RegisterResult:
        return _register_result(self._sipp.wait_run(timeout))

    def stop(self) -> RegisterResult:
        return _register_result(self._sipp.stop())


def _register_result(run: ClientRun) -> RegisterResult:
    return RegisterResult(run.successful_calls, run.failed_calls, run.requests_sent,
                          run.responses(), run)


class AttackerHandle:
    """An attacker guessing in the background; wait() or stop() gives its AttackResult."""

    def __init__(self, sipp: _SippProcess, address: str, transport: str):
        self._sipp = sipp
        self.address = address
        self.transport = transport

    def running(self) -> bool:
        return self._sipp.running()

    def wait(self, timeout: float | None = None) -> AttackResult:
        return _attack_result(self._sipp.wait_run(timeout))

    def stop(self) -> AttackResult:
        return _attack_result(self._sipp.stop())


def _attack_result(run: ClientRun) -> AttackResult:
    return AttackResult(run.requests_sent, run.responses(), run.timeouts, run)


def _uri_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


class SipLab:
    """The namespaces, Kamailio and the clients; all stopped and removed on close.

    bad_auth_reply: "401" (default; a wrong password gets a fresh challenge) or "403".
    users: user -> password known to the server (default DEFAULT_USERS; the phone is "1001").
    """

    def __init__(self, attackers: int = 1, bad_auth_reply: str = "401",
                 users: dict[str, str] | None = None, qop: bool = True,
                 server_children: int = 2):
        if bad_auth_reply not in ("401", "403"):
            raise SipLabError("bad_auth_reply must be '401' or '403'")
        self.bad_auth_reply = bad_auth_reply
        self.users = dict(users or DEFAULT_USERS)
        if PHONE_USER not in self.users:
            raise SipLabError(f"users must contain the phone's user {PHONE_USER!r}")
        for user, password in self.users.items():
            if not re.fullmatch(r"[A-Za-z0-9._-]+", user + password):
                raise SipLabError("user names and passwords: letters, digits, '.', '_', '-'")
        self.qop = qop
        self.server_children = server_children
        self.initial_attackers = attackers
        self.lab = netns.Lab()
        self.tmp: Path | None = None
        self.server_log: Path | None = None
        self._kamailio: subprocess.Popen | None = None
        self._kamailio_log = None
        self._clients: list[_SippProcess] = []
        self._attackers: list[netns.Namespace] = []
        self._run_counter = 0
        self._log_offset = 0
        self._requests: list[ServerRequest] = []
        self._messages: list[ServerMessage] = []
        self._requests_by_source: dict[str, int] = {}
        self._replies_by_dest: dict[str, dict[int, int]] = {}

    # ----------------------------------------------------------------- life cycle

    def __enter__(self) -> SipLab:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        for tool in ("kamailio", "sipp", "ip"):
            if shutil.which(tool) is None:
                raise SipLabError(f"{tool} is not installed (run: make host)")
        _sweep_stale_dirs()
        try:
            self.tmp = Path(tempfile.mkdtemp(prefix=f"fastban-siplab-{os.getpid()}-"))
            self.lab.__enter__()
            self._build_topology()
            for _ in range(self.initial_attackers):
                self.add_attacker()
            self._start_kamailio()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stops every client and Kamailio, then removes the namespaces and the temp dir."""
        for client in self._clients:
            try:
                client.stop()
            except Exception:
                pass
        self._clients.clear()
        self._stop_kamailio()
        self._scan_log()                 # the tallies stay readable after close
        self.lab.close()
        self._attackers.clear()
        if self.tmp is not None and not os.environ.get("FASTBAN_SIPLAB_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ----------------------------------------------------------------- topology

    def _build_topology(self) -> None:
        lab = self.lab
        self.server_namespace = lab.namespace("srv")
        self.router_namespace = lab.namespace("net")
        self.phone_namespace = lab.namespace("pho")
        net = self.router_namespace
        link = lab.link(self.server_namespace, net,
                        f"{SERVER_V4}/24", f"{ROUTER_SERVER_V4}/24",
                        f"{SERVER_V6}/64", f"{ROUTER_SERVER_V6}/64")
        self.server_iface = link.a
        self.router_server_iface = link.b
        # A bridge without a set address takes its lowest port's, so adding a client could
        # change the router's MAC under the neighbour caches of the clients already there.
        net.run(["ip", "link", "add", "br0", "address", BRIDGE_MAC, "type", "bridge",
                 "stp_state", "0", "forward_delay", "0"])
        for cidr in (f"{ROUTER_PHONE_V4}/24", f"{ROUTER_ATTACKER_V4}/24",
                     f"{ROUTER_PHONE_V6}/64", f"{ROUTER_ATTACKER_V6}/64"):
            net.run(["ip", "addr", "add", cidr, "dev", "br0", *(["nodad"] if ":" in cidr else [])])
        net.run(["ip", "link", "set", "br0", "up"])
        net.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        net.run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        _default_routes(self.server_namespace, ROUTER_SERVER_V4, ROUTER_SERVER_V6)
        self._join_bridge(self.phone_namespace, PHONE_V4, PHONE_V6,
                          ROUTER_PHONE_V4, ROUTER_PHONE_V6)

    def _join_bridge(self, ns: netns.Namespace, v4: str, v6: str, gw4: str, gw6: str) -> None:
        link = self.lab.link(ns, self.router_namespace, f"{v4}/24", f"{v6}/64",
                             addresses_b=())
        self.router_namespace.run(["ip", "link", "set", link.b, "master", "br0"])
        _default_routes(ns, gw4, gw6)

    def router_mac(self) -> str:
        """The MAC address the clients reach the router at."""
        out = self.router_namespace.run(["ip", "-json", "link", "show", "br0"]).stdout
        return json.loads(out)[0]["address"]

    def add_attacker(self) -> int:
        """Adds an attacker namespace on the bridge; returns its index."""
        index = len(self._attackers)
        v4, v6 = attacker_addresses(index)
        ns = self.lab.namespace("att")
        self._attackers.append(ns)
        self._join_bridge(ns, v4, v6, ROUTER_ATTACKER_V4, ROUTER_ATTACKER_V6)
        return index

    # ----------------------------------------------------------------- addresses

    def describe(self) -> str:
        """A few lines on the lab's layout, for the demo and for failing tests."""
        lines = [
            f"server  {self.server_namespace.name}: {SERVER_V4} {SERVER_V6} on "
            f"{self.server_iface} (guarded interface), Kamailio UDP+TCP {SIP_PORT}, "
            f"bad password -> {self.bad_auth_reply}",
            f"router  {self.router_namespace.name}: bridge br0 for the clients",
            f"phone   {self.phone_namespace.name}: {PHONE_V4} {PHONE_V6} (user {PHONE_USER})",
        ]
        for i, ns in enumerate(self._attackers):
            v4, v6 = attacker_addresses(i)
            lines.append(f"attacker {i} {ns.name}: {v4} {v6}")
        return "\n".join(lines)

    @property
    def phone_address(self) -> str:
        return PHONE_V4

    def phone_address_of(self, family: int = 4) -> str:
        return PHONE_V4 if family == 4 else PHONE_V6

    def attacker_address(self, index: int = 0, family: int = 4) -> str:
        if index >= len(self._attackers):
            raise SipLabError(f"the lab has {len(self._attackers)} attacker(s), no {index}")
        return attacker_addresses(index)[0 if family == 4 else 1]

    def attacker_namespace(self, index: int = 0) -> netns.Namespace:
        return self._attackers[index]

    @property
    def attackers(self) -> int:
        return len(self._attackers)

    def server_address(self, family: int = 4) -> str:
        if family not in (4, 6):
            raise SipLabError("family must be 4 or 6")
        return SERVER_V4 if family == 4 else SERVER_V6

    # ----------------------------------------------------------------- Kamailio

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
            self.kamailio_pgid = proc.pid
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
                replies = self._replies_by_dest.setdefault(_normal(m.group(2)), {})
                replies[int(m.group(1))] = replies.get(int(m.group(1)), 0) + 1

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

    def server_request_counts(self) -> dict[str, int]:
        """Requests received so far, by source address."""
        self._scan_log()
        return dict(self._requests_by_source)

    def server_replies_to(self, address: str) -> dict[int, int]:
        """The replies Kamailio's script sent to `address` so far, by status code."""
        self._scan_log()
        return dict(self._replies_by_dest.get(_normal(address), {}))

    # ----------------------------------------------------------------- a stand-in ban

    def drop_at_router(self, address: str) -> None:
        """Makes the router drop every packet from `address` (a policy-routing blackhole).

        Not the guard: a control for tests that need "the server hears nothing from X"."""
        family = "-6" if ":" in address else "-4"
        self.router_namespace.run(["ip", family, "rule", "add", "from", _normal(address),
                                   "blackhole", "priority", "100"])

    def undrop_at_router(self, address: str) -> None:
        family = "-6" if ":" in address else "-4"
        self.router_namespace.run(["ip", family, "rule", "del", "from", _normal(address),
                                   "blackhole", "priority", "100"], check=False)

    # ----------------------------------------------------------------- clients

    def _sipp(self, ns: netns.Namespace, scenario: str, local: str, family: int,
              transport: str, extra: list[str], bound: float) -> _SippProcess:
        if transport not in ("udp", "tcp"):
            raise SipLabError("transport must be 'udp' or 'tcp'")
        if not self.server_running():
            raise SipLabError("the SIP server is not running")
        assert self.tmp is not None
        self._run_counter += 1
        workdir = self.tmp / f"sipp-{self._run_counter}-{Path(scenario).stem}"
        workdir.mkdir()
        shutil.copy(LAB_FILES / scenario, workdir / scenario)
        server = self.server_address(family)
        args = [f"{_uri_host(server)}:{SIP_PORT}", "-sf", scenario,
                "-i", local, "-t", "u1" if transport == "udp" else "t1",
                "-key", "domain", _uri_host(server), "-key", "contact_host", _uri_host(local),
                "-nostdin", "-timer_resol", "1",
                "-trace_counts", "-trace_stat", "-stf", "stat.csv", "-fd", "1",
                "-timeout", f"{int(bound) + 1}s", *extra]
        client = _SippProcess(ns, workdir, args, bound + 2)
        self._clients.append(client)
        return client

    def start_phone(self, count: int = 1, interval: float = 1.0, family: int = 4,
                    transport: str = "udp", user: str = PHONE_USER,
                    password: str | None = None, response_timeout: float = 2.0) -> PhoneHandle:
        """Starts the phone registering `count` times, one every `interval` seconds."""
        if not 1 <= count <= 100000:
            raise SipLabError("count must be 1..100000")
        interval = max(0.001, float(interval))
        password = self.users.get(user, "") if password is None else password
        bound = count * interval + 4 * response_timeout + 10
        sipp = self._sipp(self.phone_namespace, "phone_register.xml",
                          self.phone_address_of(family), family, transport,
                          ["-s", user, "-au", user, "-ap", password,
                           "-m", str(count), "-l", "1", "-r", "1",
                           "-rp", f"{max(1, int(interval * 1000))}",
                           "-recv_timeout", str(int(response_timeout * 1000))], bound)
        return PhoneHandle(sipp)

    def register_phone(self, count: int = 1, interval: float = 1.0, **kwargs) -> RegisterResult:
        """Registers the phone `count` times and returns (successes, failures, ...)."""
        return self.start_phone(count, interval, **kwargs).wait()

    def start_attacker(self, guesses: int = 10, rate: float = 20.0, transport: str = "udp",
                       family: int = 4, index: int = 0, user: str = PHONE_USER,
                       password: str = "wrong-guess", response_timeout: float = 0.2,
                       method: str = "REGISTER", parallel: int = 1) -> AttackerHandle:
        """Starts attacker `index` guessing `user`'s password with one Call-ID throughout.

        REGISTER (default): guesses + 1 REGISTERs (the first fetches a challenge), each answered
        by 401 (or 403 in 403 mode). INVITE: guesses + 1 INVITEs answered by 407 (or 403), each
        answer ACKed. At most `rate` turns per second: sipp pauses 1/rate s between turns, and
        one sipp loop manages about 100 turns/s at best (sipp's scheduling, not the server);
        a turn whose answer never comes waits response_timeout more, so a banned attacker keeps
        sending. `parallel` runs that many such loops at once from the same address, each with
        its own Call-ID (requests: parallel * (guesses + 1)). Returns a handle to wait() for or
        stop()."""
        scenarios = {"REGISTER": "attacker_guess.xml", "INVITE": "attacker_invite.xml"}
        if method not in scenarios:
            raise SipLabError("method must be REGISTER or INVITE")
        if not 1 <= guesses <= 1000000:
            raise SipLabError("guesses must be 1..1000000")
        if rate <= 0:
            raise SipLabError("rate must be positive")
        if not 1 <= parallel <= 1000:
            raise SipLabError("parallel must be 1..1000")
        if password == self.users.get(user):
            raise SipLabError("the attacker's password must be wrong")
        address = self.attacker_address(index, family)
        pause_ms = max(0, int(1000 / rate))
        bound = (guesses * (pause_ms / 1000 + response_timeout) + response_timeout + 10
                 + parallel / 100)
        sipp = self._sipp(self._attackers[index], scenarios[method], address, family,
                          transport,
                          ["-s", user, "-au", user, "-ap", password,
                           "-set", "guesses", str(guesses), "-d", str(pause_ms),
                           "-m", str(parallel), "-l", str(parallel),
                           "-r", str(parallel), "-rp", "10", "-nr",
                           "-recv_timeout", str(max(1, int(response_timeout * 1000))),
                           "-default_behaviors", "none"], bound)
        return AttackerHandle(sipp, address, transport)


def _sweep_stale_dirs() -> None:
    """Removes the temp dirs of labs whose process was killed (the pid is in the name)."""
    for path in Path(tempfile.gettempdir()).glob("fastban-siplab-*-*"):
        match = re.fullmatch(r"fastban-siplab-(\d+)-\w+", path.name)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            shutil.rmtree(path, ignore_errors=True)


def _default_routes(ns: netns.Namespace, gw4: str, gw6: str) -> None:
    ns.run(["ip", "route", "add", "default", "via", gw4])
    ns.run(["ip", "-6", "route", "add", "default", "via", gw6])


def _normal(address: str) -> str:
    return str(ipaddress.ip_address(address.strip("[]")))
