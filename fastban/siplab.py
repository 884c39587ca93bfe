"""A SIP lab: a real SIP server (Kamailio) doing digest authentication, a phone, attackers,
offices behind NAT, a forger and scanners.

Used by the end-to-end test, the demo and the benchmarks. Needs root, iproute2, kamailio and
sipp (Debian: kamailio, sip-tester); offices need nftables, recordings tcpdump, scanners
sipvicious (svwar, svcrack). Nothing is sent to any address outside the lab.

Topology (every box is a network namespace; the lines are veth pairs)::

      phone 198.51.100.10     attacker i 203.0.113.(10+i)     forger 203.0.113.250
      2001:db8:100::10        2001:db8:113::(10+i, in hex)    2001:db8:113::fa
            |                        |                          |
            +---------------------- br0 ------------------------+
            |                        |                          "net": a router; the clients'
       office gateway i           router                        veths are ports of bridge br0
       198.51.100.(20+i)             |                          (198.51.100.1, 203.0.113.1,
       2001:db8:100::(20+i)          | 192.0.2.1  2001:db8:2::1  2001:db8:100::1,
       nftables masquerade           |                          2001:db8:113::1); forwarding
            |                        |                          on, no reverse-path filter
       192.168.(50+i).1              | lab.server_iface:
       fd00:(50+i)::1                |   192.0.2.10  2001:db8:2::10
            |                     server                        Kamailio, UDP and TCP 5060,
       office i (phones)                                        v4 and v6
       192.168.(50+i).2  fd00:(50+i)::2

The server has ONE interface (`server_iface`) and every client reaches it through the router,
so the guard attaches XDP and TC to that one interface and sees every client's own source
address (routed, not NATed) -- except an office's phones, which it sees as the office's one
public address, each phone with its own source port.

    with SipLab(attackers=2) as lab:
        ok = lab.register_phone(count=3, interval=0.2)        # RegisterResult
        attack = lab.start_attacker(guesses=20, rate=50)       # AttackerHandle
        result = attack.wait()                                 # AttackResult
        lab.server_requests_from(lab.attacker_address(0))      # == result.requests_sent

        office = lab.add_office()                              # Office
        phones = office.start_phones(count=50, duration=180)   # OfficePhonesHandle
        guesser = office.start_guesser(guesses=20)             # AttackerHandle, public address
        phones.wait().auth_rejections                          # OfficeResult; 0
        lab.server_auth_failures_to(office.public_address())   # == 20, the guesser's

        forger = lab.add_forger()                              # Forger
        forger.send(count=10000, source=office.public_address())       # ForgeResult
        lab.start_scanner(extensions="3000-3099", tool="sipp").wait()  # ScanResult
        with lab.record("server.pcap") as recording: ...      # tcpdump on server_iface

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

Counting at the clients: sipp's -trace_counts file (per scenario message: sent, received,
timeouts) and -trace_stat file (successful and failed calls); the office phones and the sipp
scanner also log each dialog (-trace_logs), read back phone by phone (OfficeResult) or
extension by extension (ScanResult). On the wire: `record` (pcap), `count_fragments` and
`packets_containing` read it.
"""

from __future__ import annotations

import contextlib
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
import sys
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
MAX_OFFICES = 10
FORGER_V4, FORGER_V6 = "203.0.113.250", "2001:db8:113::fa"

DEFAULT_USERS = {"1001": "phone-1001-secret", "1002": "phone-1002-secret"}
PHONE_USER = "1001"
REALM = "fastban.lab"
OFFICE_ACCOUNT_BASE = 3000       # the office accounts are 3000, 3001, ... (office_accounts of them)
# The office phones' ports, and the ports their gateway maps them to; the forger's default
# source ports lie below, so no answer to a forged request can match a phone's NAT mapping.
OFFICE_PORTS = (32768, 60999)
FORGED_PORTS = (1024, 32767)

_REQ_LINE = re.compile(r"FBLAB REQ src=(\S+) sport=(\d+) proto=(\S+) method=(\S+) callid=(\S*)")
_REP_LINE = re.compile(r"FBLAB REP (\d{3}) dst=(\S+)(.*)")
_FIELD = re.compile(r"(\w+)=(\S*)")
_RCV_LINE = re.compile(r"FBLAB RCV src=(\S+) sport=(\d+) proto=(\d+) len=\d+ first=(\S*)")
_PROTOS = {"1": "udp", "2": "tcp", "3": "tls", "4": "sctp", "5": "ws", "6": "wss"}


class SipLabError(RuntimeError):
    pass


def attacker_addresses(index: int) -> tuple[str, str]:
    """The IPv4 and IPv6 address of attacker `index` (0-based)."""
    if not 0 <= index < MAX_ATTACKERS:
        raise SipLabError(f"attacker index {index} outside 0..{MAX_ATTACKERS - 1}")
    return f"203.0.113.{10 + index}", f"2001:db8:113::{10 + index:x}"


def office_public_addresses(index: int) -> tuple[str, str]:
    """The IPv4 and IPv6 address office `index` (0-based) is seen from, on the phone's subnets."""
    _check_office_index(index)
    return f"198.51.100.{20 + index}", f"2001:db8:100::{20 + index}"


def office_private_addresses(index: int) -> tuple[str, str]:
    """The IPv4 and IPv6 address of the phones of office `index`, behind its NAT."""
    _check_office_index(index)
    return f"192.168.{50 + index}.2", f"fd00:{50 + index}::2"


def _office_gateway_private_addresses(index: int) -> tuple[str, str]:
    return f"192.168.{50 + index}.1", f"fd00:{50 + index}::1"


def _check_office_index(index: int) -> None:
    if not 0 <= index < MAX_OFFICES:
        raise SipLabError(f"office index {index} outside 0..{MAX_OFFICES - 1}")


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


class _Background:
    """A program running in a lab namespace in its own process group, its output in a file of
    its own directory; stopped (SIGTERM to the group, then SIGKILL) by stop() or the lab's close.
    """

    def __init__(self, ns: netns.Namespace, workdir: Path, args: list[str], bound: float,
                 output: str = "out.txt", env: dict[str, str] | None = None):
        self.workdir = workdir
        self.program = Path(args[0]).name
        self.bound = bound
        self.started = time.monotonic()
        self.output_path = workdir / output
        self._output = open(self.output_path, "wb")
        self.proc = ns.popen(args, cwd=workdir, stdin=subprocess.DEVNULL,
                             stdout=self._output, stderr=subprocess.STDOUT,
                             env=None if env is None else {**os.environ, **env},
                             start_new_session=True, preexec_fn=_child_setup(os.getpid()))

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_exit(self, timeout: float | None = None) -> int:
        """Waits for the program to end by itself (at most its bound, or `timeout`); one that
        does not is stopped and SipLabError raised."""
        if timeout is None:
            timeout = max(0.0, self.started + self.bound - time.monotonic()) + 5
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop_process()
            raise SipLabError(f"{self.program} did not finish within {timeout:.0f} s; stopped "
                              f"it (output in {self.workdir})")
        return self.proc.returncode

    def stop_process(self) -> int:
        if self.proc.poll() is None:
            _signal_group(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if not self._output.closed:
            self._output.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""

    def stop(self) -> object:
        """Stops the program; subclasses also return what they read from its files."""
        return self.stop_process()


class _SippProcess(_Background):
    """A running sipp in a client namespace, its files in its own directory."""

    def __init__(self, ns: netns.Namespace, workdir: Path, args: list[str], bound: float,
                 env: dict[str, str] | None = None):
        super().__init__(ns, workdir, ["sipp", *args], bound, output="sipp.out", env=env)
        self.result_run: ClientRun | None = None

    def wait_run(self, timeout: float | None = None) -> ClientRun:
        if self.result_run is not None:
            return self.result_run
        self.wait_exit(timeout)
        return self._collect()

    def stop(self) -> ClientRun:
        """Stops sipp (SIGTERM to its own process group, then SIGKILL) and reads its files."""
        self.stop_process()
        return self._collect()

    def _collect(self) -> ClientRun:
        if self.result_run is None:
            if not self._output.closed:
                self._output.close()
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


# ----------------------------------------------------------------------------- the office


PHONE_EVENTS = ("start", "ok", "busy", "rejected", "timeout")
PHONE_KINDS = ("REGISTER", "OPTIONS", "INVITE", "BYE")
_PHONE_LINE = re.compile(r"FBPHONE phone=(\d+) user=(\S*) port=(\d+) kind=(\w+) event=(\w+)")


@dataclass
class DialogTally:
    """One kind of dialog of office phones (REGISTER, OPTIONS, INVITE = a call, BYE): how many
    were sent and how they ended, as the phones logged them."""
    sent: int = 0
    ok: int = 0          # 200 (for INVITE: the call was answered)
    busy: int = 0        # INVITE only: 486
    rejected: int = 0    # the server challenged the credentials again (authentication failed)
    timeouts: int = 0    # no answer within the response timeout

    @property
    def answered(self) -> int:
        return self.ok + self.busy

    @property
    def failed(self) -> int:
        return self.rejected + self.timeouts

    def add(self, event: str) -> None:
        if event == "start":
            self.sent += 1
        elif event == "timeout":
            self.timeouts += 1
        else:
            setattr(self, event, getattr(self, event) + 1)


@dataclass
class PhoneTally:
    """One office phone: its account, its own source port (inside the office) and its dialogs."""
    phone: int                      # sipp's call number, 1..count
    user: str
    port: int
    dialogs: dict[str, DialogTally] = field(
        default_factory=lambda: {kind: DialogTally() for kind in PHONE_KINDS})

    @property
    def registrations_ok(self) -> int:
        return self.dialogs["REGISTER"].ok


@dataclass
class OfficeResult:
    """What the office phones did, phone by phone (from their log) and in packets (sipp's counts).

    by_kind totals the phones' dialogs; `run` is sipp's own view (packets sent, retransmissions,
    unexpected messages)."""
    phones: list[PhoneTally]
    by_kind: dict[str, DialogTally]
    run: ClientRun

    @property
    def registrations_ok(self) -> int:
        return self.by_kind["REGISTER"].ok

    @property
    def phones_registered(self) -> int:
        """Phones with at least one successful registration."""
        return sum(1 for p in self.phones if p.registrations_ok > 0)

    @property
    def calls_made(self) -> int:
        return self.by_kind["INVITE"].sent

    @property
    def calls_answered(self) -> int:
        """Calls the server answered 200 (then ACKed, held, and ended by BYE)."""
        return self.by_kind["INVITE"].ok

    @property
    def calls_busy(self) -> int:
        """Calls the server answered 486."""
        return self.by_kind["INVITE"].busy

    @property
    def auth_rejections(self) -> int:
        """Requests whose good credentials the server did not accept: must be 0."""
        return sum(t.rejected for t in self.by_kind.values())

    @property
    def failures(self) -> int:
        """Dialogs that ended in a rejection or a timeout."""
        return sum(t.failed for t in self.by_kind.values())

    @property
    def ports(self) -> set[int]:
        return {p.port for p in self.phones}

    @property
    def requests_sent(self) -> int:
        """Requests put on the wire, ACKs and retransmissions included."""
        return self.run.requests_sent


def _office_result(run: ClientRun, log: Path) -> OfficeResult:
    phones: dict[int, PhoneTally] = {}
    totals = {kind: DialogTally() for kind in PHONE_KINDS}
    text = log.read_text(errors="replace") if log.exists() else ""
    for m in _PHONE_LINE.finditer(text):
        number, user, port, kind, event = (int(m.group(1)), m.group(2), int(m.group(3)),
                                           m.group(4), m.group(5))
        if kind not in totals or event not in PHONE_EVENTS:
            continue
        phone = phones.setdefault(number, PhoneTally(number, user, port))
        phone.dialogs[kind].add(event)
        totals[kind].add(event)
    return OfficeResult([phones[n] for n in sorted(phones)], totals, run)


class OfficePhonesHandle:
    """The phones of an office running in the background; wait() or stop() gives the result."""

    def __init__(self, sipp: _SippProcess, office: Office, count: int, transport: str):
        self._sipp = sipp
        self.office = office
        self.count = count
        self.transport = transport

    def running(self) -> bool:
        return self._sipp.running()

    def wait(self, timeout: float | None = None) -> OfficeResult:
        return _office_result(self._sipp.wait_run(timeout), self._sipp.workdir / "phones.log")

    def stop(self) -> OfficeResult:
        return _office_result(self._sipp.stop(), self._sipp.workdir / "phones.log")


class Office:
    """An office behind NAT: phones on private addresses in `namespace`, and a gateway
    (`gateway_namespace`) on the bridge with the office's public address that masquerades them
    (nftables, IPv4 and IPv6, UDP and TCP to ports OFFICE_PORTS, which the phones' own ports
    are in, so a phone usually keeps its port). The server sees every phone of the office as
    this one public address, each phone with its own source port.

    Made by SipLab.add_office(). The phones are one sipp process (office_phone.xml), one sipp
    "call" per phone for the whole run, each with its own socket; the accounts are the lab's
    office accounts (3000, 3001, ...), all with the right password."""

    def __init__(self, lab: SipLab, index: int, namespace: netns.Namespace,
                 gateway_namespace: netns.Namespace, lan_iface: str, wan_iface: str):
        self.lab = lab
        self.index = index
        self.namespace = namespace
        self.gateway_namespace = gateway_namespace
        self.lan_iface = lan_iface          # in `namespace`: the phones' interface
        self.wan_iface = wan_iface          # in `gateway_namespace`: the public side

    def public_address(self, family: int = 4) -> str:
        return office_public_addresses(self.index)[_family_index(family)]

    def private_address(self, family: int = 4) -> str:
        return office_private_addresses(self.index)[_family_index(family)]

    def start_phones(self, count: int = 50, duration: float = 180.0, family: int = 4,
                     transport: str = "udp", shared_account: bool = False,
                     register_interval: float | None = 60.0,
                     options_interval: float | None = 15.0,
                     call_interval: float | None = 120.0, call_hold: float = 3.0,
                     answer_share: float = 0.5, start_rate: float = 20.0,
                     response_timeout: float = 5.0, first_account: int = 0,
                     seed: int | None = None) -> OfficePhonesHandle:
        """Starts `count` phones for `duration` seconds; returns a handle to wait() for or stop().

        Each phone registers when it starts (start_rate phones a second boot), then until the
        deadline does, at random, on average every register_interval seconds a registration,
        every options_interval an OPTIONS keep-alive and every call_interval a call (None: never);
        a call asks to be answered 200 with probability answer_share (else 486) and an answered
        call lasts call_hold seconds (0.5 to 1.5 times it) before the BYE. Each phone has its own
        account, lab.office_accounts[first_account + i]; shared_account: all phones register the
        one account lab.office_accounts[first_account], so the 200 OK lists every phone's
        contact. seed: sipp's random generator (GSL_RNG_SEED); default random."""
        if not 1 <= count <= 1000:
            raise SipLabError("count must be 1..1000")
        if not 0 < duration <= 24 * 3600:
            raise SipLabError("duration must be positive, at most a day")
        if not 0 <= answer_share <= 1:
            raise SipLabError("answer_share must be 0..1")
        if start_rate <= 0 or response_timeout <= 0 or call_hold < 0:
            raise SipLabError("start_rate and response_timeout positive, call_hold not negative")
        accounts = self.lab.office_accounts
        needed = 1 if shared_account else count
        if first_account < 0 or first_account + needed > len(accounts):
            raise SipLabError(f"the lab has {len(accounts)} office accounts; {needed} from "
                              f"{first_account} do not fit (SipLab(office_accounts=...))")
        chosen = ([accounts[first_account]] * count if shared_account
                  else accounts[first_account:first_account + count])
        injection = "SEQUENTIAL\n" + "".join(
            f"{a};[authentication username={a} password={self.lab.users[a]}]\n" for a in chosen)

        rates = {kind: (0.0 if interval is None else 1.0 / _positive(interval, kind))
                 for kind, interval in (("register", register_interval),
                                        ("options", options_interval),
                                        ("call", call_interval))}
        total = sum(rates.values())
        pause_ms = 1000.0 / total if total else duration * 1000.0 * 10
        p_register = rates["register"] / total if total else 0.0
        p_options = p_register + (rates["options"] / total if total else 0.0)
        start_spread = count / start_rate
        deadline_ms = (time.time() + duration) * 1000.0
        bound = (duration + start_spread + 1.5 * call_hold + 4 * response_timeout + 15)
        sipp = self.lab._sipp(
            self.namespace, "office_phone.xml", self.private_address(family), family,
            transport,
            ["-inf", "accounts.csv",
             "-set", "deadline_ms", f"{deadline_ms:.0f}", "-set", "pause_ms", f"{pause_ms:.3f}",
             "-set", "p_register", f"{p_register:.6f}", "-set", "p_options", f"{p_options:.6f}",
             "-set", "p_answer", f"{answer_share:.6f}",
             "-set", "hold_ms", f"{call_hold * 1000:.0f}",
             "-m", str(count), "-l", str(count), "-r", f"{start_rate:g}", "-rp", "1000",
             "-max_socket", str(count + 64),
             "-recv_timeout", str(int(response_timeout * 1000)),
             "-trace_logs", "-log_file", "phones.log", "-default_behaviors", "none"],
            bound, socket_per_call=True, files={"accounts.csv": injection},
            env={"GSL_RNG_SEED": str(secrets.randbits(31) if seed is None else seed)})
        return OfficePhonesHandle(sipp, self, count, transport)

    def run_phones(self, **kwargs) -> OfficeResult:
        """start_phones(...).wait()."""
        return self.start_phones(**kwargs).wait()

    def record(self, path: str | Path):
        """SipLab.record on the office's LAN: every packet the phones send and receive."""
        return self.lab.record(path, iface=self.lan_iface, namespace=self.namespace)

    def start_guesser(self, guesses: int = 10, rate: float = 20.0, user: str | None = None,
                      password: str = "wrong", family: int = 4, transport: str = "udp",
                      response_timeout: float = 0.2, method: str = "REGISTER",
                      parallel: int = 1) -> AttackerHandle:
        """A password guesser on an office machine: SipLab.start_attacker's loop (one Call-ID,
        a wrong password for an existing office account, by default the first) from the
        office's private address, so the server sees it at the office's public address, the
        address of the honest phones. The handle's `address` is that public address."""
        user = self.lab.office_accounts[0] if user is None else user
        if user not in self.lab.users:
            raise SipLabError(f"{user!r} is no account of the lab")
        return self.lab._guess(self.namespace, self.private_address(family),
                               self.public_address(family), family, transport, guesses, rate,
                               user, password, response_timeout, method, parallel)


def _positive(value: float, name: str) -> float:
    if value <= 0:
        raise SipLabError(f"the {name} interval must be positive (or None)")
    return float(value)


def _family_index(family: int) -> int:
    if family not in (4, 6):
        raise SipLabError("family must be 4 or 6")
    return 0 if family == 4 else 1


# ----------------------------------------------------------------------------- the forger


@dataclass
class ForgeResult:
    """What Forger.send put on the wire."""
    sent: int
    by_method: dict[str, int]
    source: str                 # the forged source address
    call_id_prefix: str         # every forged Call-ID starts with it (and "-")

    def is_forged(self, call_id: str) -> bool:
        return call_id.startswith(self.call_id_prefix + "-")


class Forger:
    """A host on the bridge (FORGER_V4 / FORGER_V6) that sends SIP requests over UDP with another
    host's source address. The router does not filter by reverse path, so they reach the server,
    which answers the forged address: for an office, its gateway, which has no NAT mapping for
    them (by default the forged source ports, FORGED_PORTS, lie below OFFICE_PORTS, the ports
    the gateway maps phones to) and drops them, answering the server ICMP port unreachable
    (rate-limited by its kernel).

    Made by SipLab.add_forger(); the packets are built and sent by fastban/lab/forge.py (scapy,
    a raw IP socket) run inside the forger's namespace."""

    def __init__(self, lab: SipLab, namespace: netns.Namespace):
        self.lab = lab
        self.namespace = namespace

    def address(self, family: int = 4) -> str:
        return (FORGER_V4, FORGER_V6)[_family_index(family)]

    def send(self, count: int = 10000, *, source: str,
             methods: tuple[str, ...] = ("REGISTER", "INVITE", "OPTIONS"),
             credentials: bool = False, rate: float = 1000.0, user: str | None = None,
             ports: tuple[int, int] = FORGED_PORTS) -> ForgeResult:
        """Sends `count` forged requests to the server from `source` (its family picks the
        server's address), at most `rate` a second, and returns once all are sent. Each has its
        own Call-ID, branch and random source port in `ports`; the method is picked at random
        from `methods`. credentials: each carries a made-up Authorization (Proxy-Authorization
        for INVITE) with a random nonce and response, for `user` (default the first office
        account)."""
        if not 1 <= count <= 1_000_000:
            raise SipLabError("count must be 1..1000000")
        if rate <= 0:
            raise SipLabError("rate must be positive")
        bad = [m for m in methods if not re.fullmatch(r"[A-Z]+", m)]
        if not methods or bad:
            raise SipLabError(f"methods must be SIP method names, not {bad or methods}")
        if not 1 <= ports[0] <= ports[1] <= 65535:
            raise SipLabError("ports must be (low, high) within 1..65535")
        if user is None:
            user = self.lab.office_accounts[0] if self.lab.office_accounts else PHONE_USER
        source = _normal(source)
        family = 6 if ":" in source else 4
        prefix = f"forged-{secrets.token_hex(3)}"
        seconds = count / rate
        out = self.namespace.run(
            [sys.executable, "-m", "fastban.lab.forge", "--source", source,
             "--destination", self.lab.server_address(family), "--port", str(SIP_PORT),
             "--count", str(count), "--rate", f"{rate:g}", "--methods", ",".join(methods),
             "--user", user, "--realm", REALM, "--ports", f"{ports[0]}-{ports[1]}",
             "--call-id-prefix", prefix, "--max-seconds", f"{seconds * 2 + 10:.0f}",
             *(["--credentials"] if credentials else [])],
            timeout=seconds * 2 + 60).stdout
        report = json.loads(out.strip().splitlines()[-1])
        return ForgeResult(report["sent"], report["by_method"], source, prefix)


# ----------------------------------------------------------------------------- scanners


_SVWAR_ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*(reqauth|noauth|weird)\s*\|\s*$", re.M)
_SVCRACK_ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*(\S+)\s*\|\s*$", re.M)
_SCAN_LINE = re.compile(r"FBSCAN extension=(\S+) code=(\S+)")


def parse_extensions(extensions: str) -> list[str]:
    """"1000-1100,2000" -> ["1000", ..., "1100", "2000"] (svwar's -e syntax)."""
    out: list[str] = []
    for part in extensions.split(","):
        part = part.strip()
        if re.fullmatch(r"\d+", part):
            out.append(part)
        elif re.fullmatch(r"\d+-\d+", part):
            low, high = (int(p) for p in part.split("-"))
            if low > high or high - low >= 100000:
                raise SipLabError(f"extension range {part!r}: low-high, at most 100000")
            out.extend(str(n) for n in range(low, high + 1))
        else:
            raise SipLabError(f"extensions: numbers and ranges like 1000-1100, not {part!r}")
    return out


@dataclass
class ScanResult:
    """An extension scan. found: extension -> what the scanner made of it (svwar: "reqauth",
    the account exists and asks for credentials; "noauth"; "weird"). answers (sipp scanner
    only): extension -> status code, or "timeout"."""
    tool: str
    returncode: int
    found: dict[str, str]
    answers: dict[str, str] = field(default_factory=dict)
    output: str = ""
    run: ClientRun | None = None       # sipp's counts (sipp scanner only)


class ScannerHandle:
    """An extension scanner running in the background; wait() or stop() gives its ScanResult."""

    def __init__(self, process: _Background, tool: str, address: str):
        self._process = process
        self.tool = tool
        self.address = address

    def running(self) -> bool:
        return self._process.running()

    def wait(self, timeout: float | None = None) -> ScanResult:
        if isinstance(self._process, _SippProcess):
            return self._sipp_result(self._process.wait_run(timeout))
        return self._svwar_result(self._process.wait_exit(timeout))

    def stop(self) -> ScanResult:
        if isinstance(self._process, _SippProcess):
            return self._sipp_result(self._process.stop())
        return self._svwar_result(self._process.stop_process())

    def _svwar_result(self, returncode: int) -> ScanResult:
        output = self._process.output()
        return ScanResult("svwar", returncode, dict(_SVWAR_ROW.findall(output)), output=output)

    def _sipp_result(self, run: ClientRun) -> ScanResult:
        log = self._process.workdir / "scan.log"
        answers = dict(_SCAN_LINE.findall(log.read_text(errors="replace"))) if log.exists() else {}
        found = {ext: "reqauth" for ext, code in answers.items() if code == "401"}
        return ScanResult("sipp", run.returncode, found, answers, run.stdout_tail, run)


@dataclass
class CrackResult:
    """An svcrack run. cracked: account -> the password svcrack found (its 200 OK)."""
    returncode: int
    cracked: dict[str, str]
    output: str


class CrackHandle:
    """svcrack running in the background; wait() or stop() gives its CrackResult."""

    def __init__(self, process: _Background, address: str, user: str):
        self._process = process
        self.address = address
        self.user = user

    def running(self) -> bool:
        return self._process.running()

    def wait(self, timeout: float | None = None) -> CrackResult:
        return self._result(self._process.wait_exit(timeout))

    def stop(self) -> CrackResult:
        return self._result(self._process.stop_process())

    def _result(self, returncode: int) -> CrackResult:
        output = self._process.output()
        rows = dict(_SVCRACK_ROW.findall(output))
        rows.pop("Extension", None)
        return CrackResult(returncode, rows, output)


# ----------------------------------------------------------------------------- recordings


@dataclass
class Recording:
    """A pcap file SipLab.record() wrote; the counts are tcpdump's, known once it stopped."""
    path: Path
    iface: str
    packets_captured: int | None = None   # written to the file
    packets_dropped: int | None = None    # lost by the kernel (tcpdump's buffer was full)


_CAPTURE_STATS = re.compile(r"(\d+) packets? captured,? (\d+) packets? received by filter,? "
                            r"(\d+) packets? dropped by kernel")


def _wait_for_output(process: _Background, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in process.output():
            return
        if not process.running():
            raise SipLabError(f"{process.program} exited with {process.proc.returncode}: "
                              f"{process.output()[-1500:]}")
        time.sleep(0.05)
    process.stop_process()
    raise SipLabError(f"{process.program} did not say {text!r} within {timeout} s")


def _capture_stats(process: _Background) -> tuple[int, int, int] | None:
    """tcpdump's last report: (captured, received by the filter, dropped by the kernel)."""
    found = _CAPTURE_STATS.findall(" ".join(process.output().split()))
    return tuple(int(n) for n in found[-1]) if found else None


def _stop_capture(process: _Background, recording: Recording, timeout: float = 10) -> None:
    """Stops tcpdump once it has written what the kernel gave it: SIGUSR1 makes it report its
    counts, and it is caught up when every packet the filter took is captured or dropped. On
    loopback (where the outgoing copies are counted but not captured) that never holds, and the
    wait ends at `timeout`."""
    deadline = time.monotonic() + timeout
    reports = 0
    while process.running() and time.monotonic() < deadline:
        os.kill(process.proc.pid, signal.SIGUSR1)     # ip netns exec became tcpdump
        reports += 1
        while process.running() and time.monotonic() < deadline:
            if len(_CAPTURE_STATS.findall(" ".join(process.output().split()))) >= reports:
                break
            time.sleep(0.02)
        stats = _capture_stats(process)
        if stats is not None and stats[0] + stats[2] >= stats[1]:
            break
        time.sleep(0.05)
    if process.running():
        os.kill(process.proc.pid, signal.SIGINT)
        try:
            process.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    process.stop_process()
    summary = re.search(r"(\d+) packets? captured\s+(\d+) packets? received by filter\s+"
                        r"(\d+) packets? dropped by kernel\s*$", process.output())
    stats = (tuple(int(n) for n in summary.groups()) if summary else _capture_stats(process))
    if stats is not None:
        recording.packets_captured, recording.packets_dropped = stats[0], stats[2]


@dataclass
class FragmentCount:
    """The IP fragments in a capture (IPv4 with more-fragments or an offset, IPv6 with a
    Fragment header)."""
    fragments: int = 0                        # fragment packets
    datagrams: int = 0                        # distinct datagrams they are parts of
    by_source: dict[str, int] = field(default_factory=dict)    # fragment packets per source


def packets_containing(path: str | Path, text: str | bytes) -> int:
    """How many packets of the pcap file `path` contain `text` anywhere in their bytes (e.g. a
    Call-ID: a SIP message is sent in clear)."""
    from scapy.utils import RawPcapReader

    needle = text.encode() if isinstance(text, str) else text
    with RawPcapReader(str(path)) as packets:
        return sum(1 for data, _ in packets if needle in data)


def count_fragments(path: str | Path, source: str | None = None) -> FragmentCount:
    """Counts the IP fragments in the pcap file `path` (only those from `source`, if given)."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
    from scapy.utils import PcapReader

    wanted = None if source is None else _normal(source)
    count = FragmentCount()
    datagrams = set()
    with PcapReader(str(path)) as packets:
        for packet in packets:
            if IP in packet:
                ip = packet[IP]
                if not (ip.flags.MF or ip.frag):
                    continue
                key = (ip.src, ip.dst, ip.id, 4)
                src = ip.src
            elif IPv6ExtHdrFragment in packet:
                src = packet[IPv6].src
                key = (src, packet[IPv6].dst, packet[IPv6ExtHdrFragment].id, 6)
            else:
                continue
            src = _normal(src)
            if wanted is not None and src != wanted:
                continue
            count.fragments += 1
            count.by_source[src] = count.by_source.get(src, 0) + 1
            datagrams.add(key)
    count.datagrams = len(datagrams)
    return count


def _uri_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


class SipLab:
    """The namespaces, Kamailio and the clients; all stopped and removed on close.

    bad_auth_reply: "401" (default; a wrong password gets a fresh challenge) or "403".
    users: user -> password known to the server (default DEFAULT_USERS; the phone is "1001").
    office_accounts: how many office accounts (3000, 3001, ...; lab.office_accounts) the server
    knows besides `users`, each with its own random password (lab.users[account]).
    unknown_user_reply: a REGISTER for an account that does not exist is challenged like any
    other ("401", default) or answered 404 ("404": svwar can then tell which accounts exist).
    """

    def __init__(self, attackers: int = 1, bad_auth_reply: str = "401",
                 users: dict[str, str] | None = None, qop: bool = True,
                 server_children: int = 2, office_accounts: int = 100,
                 unknown_user_reply: str = "401"):
        if bad_auth_reply not in ("401", "403"):
            raise SipLabError("bad_auth_reply must be '401' or '403'")
        if unknown_user_reply not in ("401", "404"):
            raise SipLabError("unknown_user_reply must be '401' or '404'")
        self.unknown_user_reply = unknown_user_reply
        if not 0 <= office_accounts <= 1000:
            raise SipLabError("office_accounts must be 0..1000")
        self.bad_auth_reply = bad_auth_reply
        self.users = dict(users or DEFAULT_USERS)
        if PHONE_USER not in self.users:
            raise SipLabError(f"users must contain the phone's user {PHONE_USER!r}")
        self.office_accounts = [str(OFFICE_ACCOUNT_BASE + k) for k in range(office_accounts)]
        for account in self.office_accounts:
            self.users.setdefault(account, f"office-{account}-{secrets.token_hex(4)}")
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
        self._clients: list[_Background] = []
        self._attackers: list[netns.Namespace] = []
        self._offices: list[Office] = []
        self._forger: Forger | None = None
        self._helpers: list[_Helper] = []
        self._run_counter = 0
        self._log_offset = 0
        self._requests: list[ServerRequest] = []
        self._messages: list[ServerMessage] = []
        self._requests_by_source: dict[str, int] = {}
        self._replies_by_dest: dict[str, dict[int, int]] = {}
        self._replies: list[ServerReply] = []

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
        self._offices.clear()
        self._forger = None
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
        # The forger sends with other clients' addresses; a router filtering by reverse path
        # (IPv4 inherits the host's setting) would drop them.
        for scope in ("all", "default", "br0"):
            net.run(["sysctl", "-qw", f"net.ipv4.conf.{scope}.rp_filter=0"])
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

    def add_office(self) -> Office:
        """Adds an office behind NAT (see Office) and returns it. Office i is at
        office_public_addresses(i) on the bridge and office_private_addresses(i) inside."""
        index = len(self._offices)
        public_v4, public_v6 = office_public_addresses(index)
        private_v4, private_v6 = office_private_addresses(index)
        lan_v4, lan_v6 = _office_gateway_private_addresses(index)
        gateway = self.lab.namespace("ogw")
        office = self.lab.namespace("off")
        lan = self.lab.link(office, gateway, f"{private_v4}/24", f"{lan_v4}/24",
                            f"{private_v6}/64", f"{lan_v6}/64")
        wan = self.lab.link(gateway, self.router_namespace, f"{public_v4}/24", f"{public_v6}/64",
                            addresses_b=())
        self.router_namespace.run(["ip", "link", "set", wan.b, "master", "br0"])
        _default_routes(gateway, ROUTER_PHONE_V4, ROUTER_PHONE_V6)
        _default_routes(office, lan_v4, lan_v6)
        gateway.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        gateway.run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        low, high = OFFICE_PORTS
        office.run(["sysctl", "-qw", f"net.ipv4.ip_local_port_range={low} {high}"])
        ruleset = (f"table inet fastban_lab_nat {{\n"
                   f"  chain postrouting {{\n"
                   f"    type nat hook postrouting priority srcnat; policy accept;\n"
                   f"    oifname \"{wan.a}\" meta l4proto {{ tcp, udp }} "
                   f"masquerade to :{low}-{high}\n"
                   f"    oifname \"{wan.a}\" masquerade\n"
                   f"  }}\n"
                   f"}}\n")
        gateway.run(["nft", "-f", "-"], input=ruleset)
        entry = Office(self, index, office, gateway, lan_iface=lan.a, wan_iface=wan.a)
        self._offices.append(entry)
        return entry

    def office(self, index: int = 0) -> Office:
        if not 0 <= index < len(self._offices):
            raise SipLabError(f"the lab has {len(self._offices)} office(s), no {index}")
        return self._offices[index]

    @property
    def offices(self) -> list[Office]:
        return list(self._offices)

    def add_forger(self) -> Forger:
        """Adds the forger (see Forger), a namespace on the bridge at FORGER_V4 / FORGER_V6;
        a lab has one, so a second call returns the same."""
        if self._forger is None:
            ns = self.lab.namespace("frg")
            self._join_bridge(ns, FORGER_V4, FORGER_V6, ROUTER_ATTACKER_V4, ROUTER_ATTACKER_V6)
            self._forger = Forger(self, ns)
        return self._forger

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
        for office in self._offices:
            lines.append(f"office {office.index} {office.namespace.name}: "
                         f"{office.private_address(4)} {office.private_address(6)} behind NAT "
                         f"{office.gateway_namespace.name}: {office.public_address(4)} "
                         f"{office.public_address(6)}")
        if self._forger is not None:
            lines.append(f"forger {self._forger.namespace.name}: {FORGER_V4} {FORGER_V6}")
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

    def server_request_counts(self) -> dict[str, int]:
        """Requests received so far, by source address."""
        self._scan_log()
        return dict(self._requests_by_source)

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

    # ----------------------------------------------------------------- recording

    @contextlib.contextmanager
    def record(self, path: str | Path, iface: str | None = None,
               namespace: netns.Namespace | None = None):
        """Records the server's traffic to the pcap file `path` for the duration of the block:
        tcpdump in the server namespace on `iface` (default server_iface), both directions,
        whole packets. Yields a Recording; at exit tcpdump is stopped once it has written every
        packet the kernel gave it, and the Recording tells how many it wrote and how many the
        kernel dropped. The file can be read by `fastban replay`. `namespace` (with `iface`)
        records elsewhere in the lab instead (Office.record: what the office phones receive)."""
        if shutil.which("tcpdump") is None:
            raise SipLabError("tcpdump is not installed (run: make host)")
        if namespace is not None and iface is None:
            raise SipLabError("recording in another namespace needs its iface")
        namespace = namespace or self.server_namespace
        iface = iface or self.server_iface
        path = Path(path).resolve()
        capture = _Background(namespace, self._workdir("tcpdump"),
                              ["tcpdump", "-i", iface, "-s", "0", "-U", "--immediate-mode",
                               "-n", "-Z", "root", "-w", str(path)],
                              bound=24 * 3600, output="tcpdump.err")
        self._clients.append(capture)
        recording = Recording(path, iface)
        try:
            _wait_for_output(capture, "listening on", timeout=15)
            yield recording
        finally:
            _stop_capture(capture, recording)

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

    def _workdir(self, name: str) -> Path:
        assert self.tmp is not None
        self._run_counter += 1
        workdir = self.tmp / f"{self._run_counter}-{name}"
        workdir.mkdir()
        return workdir

    def _sipp(self, ns: netns.Namespace, scenario: str, local: str, family: int,
              transport: str, extra: list[str], bound: float, socket_per_call: bool = False,
              files: dict[str, str] | None = None,
              env: dict[str, str] | None = None) -> _SippProcess:
        """sipp in `ns` from `local` to the server, with one socket for all its calls (-t u1,
        t1) or one per call (-t un, tn); `files` (name -> text) are written to its directory."""
        if transport not in ("udp", "tcp"):
            raise SipLabError("transport must be 'udp' or 'tcp'")
        if not self.server_running():
            raise SipLabError("the SIP server is not running")
        workdir = self._workdir(f"sipp-{Path(scenario).stem}")
        shutil.copy(LAB_FILES / scenario, workdir / scenario)
        for name, text in (files or {}).items():
            (workdir / name).write_text(text)
        server = self.server_address(family)
        sockets = ("un" if transport == "udp" else "tn") if socket_per_call else (
            "u1" if transport == "udp" else "t1")
        args = [f"{_uri_host(server)}:{SIP_PORT}", "-sf", scenario,
                "-i", local, "-t", sockets,
                "-key", "domain", _uri_host(server), "-key", "contact_host", _uri_host(local),
                "-nostdin", "-timer_resol", "1",
                "-trace_counts", "-trace_stat", "-stf", "stat.csv", "-fd", "1",
                "-timeout", f"{int(bound) + 1}s", *extra]
        client = _SippProcess(ns, workdir, args, bound + 2, env=env)
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
        address = self.attacker_address(index, family)
        return self._guess(self._attackers[index], address, address, family, transport,
                           guesses, rate, user, password, response_timeout, method, parallel)

    def _guess(self, ns: netns.Namespace, local: str, seen_as: str, family: int,
               transport: str, guesses: int, rate: float, user: str, password: str,
               response_timeout: float, method: str, parallel: int) -> AttackerHandle:
        """The guessing loop of start_attacker from `local` in `ns`; the server sees `seen_as`."""
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
        pause_ms = max(0, int(1000 / rate))
        bound = (guesses * (pause_ms / 1000 + response_timeout) + response_timeout + 10
                 + parallel / 100)
        sipp = self._sipp(ns, scenarios[method], local, family, transport,
                          ["-s", user, "-au", user, "-ap", password,
                           "-set", "guesses", str(guesses), "-d", str(pause_ms),
                           "-m", str(parallel), "-l", str(parallel),
                           "-r", str(parallel), "-rp", "10", "-nr",
                           "-recv_timeout", str(max(1, int(response_timeout * 1000))),
                           "-default_behaviors", "none"], bound)
        return AttackerHandle(sipp, seen_as, transport)

    def start_scanner(self, index: int = 0, extensions: str = "1000-1100",
                      method: str = "REGISTER", family: int = 4, tool: str = "auto",
                      pace: float = 0.005, max_silence: float = 3.0, transport: str = "udp",
                      response_timeout: float = 1.0) -> ScannerHandle:
        """Starts an extension scan from attacker `index`: one request per extension, each with
        a new Call-ID, none of the challenges answered. Returns a handle to wait() for.

        tool="svwar" (sipvicious): svwar --force (it would stop when an unknown extension is
        challenged), one socket on port 5060, a request whenever `pace` seconds pass with no
        answer to read, and the end `max_silence` seconds after the last answer. It scans over
        UDP and IPv4 only (0.3.3 writes an IPv6 Via without brackets, which Kamailio cannot
        parse). It learns what an unknown account gets from a first request for a random
        number, and stops at the first answer that is neither that nor 404/200 and the like:
        against a server that challenges unknown accounts too it stops after its second
        REGISTER, so REGISTER scans need SipLab(unknown_user_reply="404"). method "OPTIONS"
        scans with OPTIONS (answered 200 by the lab, so svwar finds nothing). Where it cannot
        work, SipLabError.

        tool="sipp" (fastban/lab/scanner_register.xml, REGISTER only): the same wire behaviour
        against any lab, over UDP or TCP, IPv4 or IPv6, one REGISTER every `pace` seconds, each
        waited for at most response_timeout.

        tool="auto" (default): svwar where it works, else the sipp scanner."""
        if tool == "auto":
            svwar_works = (family == 4 and transport == "udp"
                           and (method == "OPTIONS" or self.unknown_user_reply == "404"))
            tool = "svwar" if svwar_works else "sipp"
        address = self.attacker_address(index, family)
        ns = self._attackers[index]
        numbers = parse_extensions(extensions)
        if pace <= 0:
            raise SipLabError("pace must be positive")
        if tool == "sipp":
            if method != "REGISTER":
                raise SipLabError("the sipp scanner sends REGISTER only")
            bound = len(numbers) * pace + response_timeout + 10
            sipp = self._sipp(ns, "scanner_register.xml", address, family, transport,
                              ["-inf", "extensions.csv", "-m", str(len(numbers)),
                               "-r", f"{1.0 / pace:g}", "-rp", "1000", "-l", str(len(numbers)),
                               "-recv_timeout", str(max(1, int(response_timeout * 1000))),
                               "-trace_logs", "-log_file", "scan.log",
                               "-default_behaviors", "none"], bound,
                              files={"extensions.csv": "SEQUENTIAL\n" + "".join(
                                  f"{n};\n" for n in numbers)})
            return ScannerHandle(sipp, "sipp", address)
        if tool != "svwar":
            raise SipLabError("tool must be 'auto', 'svwar' or 'sipp'")
        if shutil.which("svwar") is None:
            raise SipLabError("svwar is not installed (sipvicious; run: make host)")
        if family != 4 or transport != "udp":
            raise SipLabError("svwar 0.3.3 scans over UDP and IPv4 only; use tool='sipp'")
        if method not in ("REGISTER", "OPTIONS"):
            raise SipLabError("svwar's method here: REGISTER or OPTIONS")
        if method == "REGISTER" and self.unknown_user_reply != "404":
            raise SipLabError("svwar stops after its second REGISTER when unknown accounts are "
                              "challenged too: use SipLab(unknown_user_reply='404') or "
                              "tool='sipp'")
        bound = len(numbers) * (pace + 0.01) + max_silence + 20
        process = _Background(ns, self._workdir("svwar"),
                              ["svwar", "--force", "-e", extensions, "-m", method,
                               "-x", address, "-b", address, "-p", str(SIP_PORT),
                               "-t", f"{pace:g}", "--maximumtime", f"{max_silence:g}",
                               self.server_address(4)], bound)
        self._clients.append(process)
        return ScannerHandle(process, "svwar", address)

    def start_svcrack(self, index: int = 0, user: str = PHONE_USER,
                      passwords: list[str] | None = None, guesses: int = 20,
                      max_silence: float = 3.0, pace: float = 0.005) -> CrackHandle:
        """Starts sipvicious' svcrack from attacker `index` guessing `user`'s password over
        UDP/IPv4 (0.3.3's IPv6 Via is unbracketed), trying `passwords` in order (default
        `guesses` wrong ones). What it does on the wire, against this server: a REGISTER
        without credentials (Call-ID new, CSeq 1), then each guess answers the last challenge
        with that challenge's Call-ID (so one Call-ID throughout while every guess gets a fresh
        401), CSeq always 2, a new branch each; it stops at a 200 (the password, in the
        result's `cracked`) or when the passwords run out. Whenever `pace` seconds pass with no
        answer and no challenge in hand, it sends another REGISTER without credentials with a
        new Call-ID, until `max_silence` seconds without an answer: a banned svcrack keeps
        sending about 1/pace REGISTERs a second, each a new Call-ID."""
        if shutil.which("svcrack") is None:
            raise SipLabError("svcrack is not installed (sipvicious; run: make host)")
        address = self.attacker_address(index, 4)
        if passwords is None:
            passwords = [f"guess-{n}" for n in range(guesses)]
        if not passwords or any(not p or p.strip() != p or "\n" in p for p in passwords):
            raise SipLabError("passwords: non-empty words without surrounding blanks")
        workdir = self._workdir("svcrack")
        (workdir / "passwords.txt").write_text("".join(f"{p}\n" for p in passwords))
        bound = len(passwords) * (pace + 0.05) + max_silence + 20
        process = _Background(self._attackers[index], workdir,
                              ["svcrack", "-u", user, "-d", str(workdir / "passwords.txt"),
                               "-x", address, "-b", address, "-p", str(SIP_PORT),
                               "-t", f"{pace:g}", "--maximumtime", f"{max_silence:g}",
                               self.server_address(4)], bound)
        self._clients.append(process)
        return CrackHandle(process, address, user)


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
