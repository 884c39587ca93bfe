"""The attackers besides sipp's password guesser (SipLab.start_attacker): the forger
(Forger, made by SipLab.add_forger; its packets come from fastban/lab/forge.py), the extension
scanners (svwar or sipp: ScannerHandle, ScanResult) and sipvicious' svcrack (CrackHandle,
CrackResult), which SipLab.start_scanner and SipLab.start_svcrack start (Scanners is that part
of SipLab).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastban.lab import netns
from fastban.lab.clients import ClientRun, _Background, _SippProcess
from fastban.lab.plan import (FORGED_PORTS, FORGER_V4, FORGER_V6, PHONE_USER, REALM, SIP_PORT,
                              SipLabError, _family_index, _normal)

if TYPE_CHECKING:
    from fastban.lab.siplab import SipLab


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


class Scanners:
    """The scanner part of SipLab: start_scanner (svwar or the sipp scanner) and start_svcrack,
    from an attacker's namespace. Uses the lab's attackers (_attackers, attacker_address), its
    sipp (_sipp), working directories (_workdir), list of clients, server_address and
    unknown_user_reply."""

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

