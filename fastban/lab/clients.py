"""The lab's client programs: a program running in a lab namespace (_Background), sipp
(_SippProcess) and what a sipp run did (ClientRun, MessageCount), and the handles of the
phone and of sipp's password guesser (PhoneHandle, AttackerHandle). SipLab starts them.

Counting at the clients: sipp's -trace_counts file (per scenario message: sent, received,
timeouts) and -trace_stat file (successful and failed calls); the office phones and the sipp
scanner also log each dialog (-trace_logs), read back phone by phone (OfficeResult,
fastban/lab/office.py) or extension by extension (ScanResult, fastban/lab/attackers.py).
"""

from __future__ import annotations

import csv
import ctypes
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastban.lab import netns
from fastban.lab.plan import SipLabError


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
    """A running sipp in a client namespace, its files in its own directory; `relay` (a TLS
    relay sipp talks to, see transports.py) is stopped when sipp ends or is stopped."""

    def __init__(self, ns: netns.Namespace, workdir: Path, args: list[str], bound: float,
                 env: dict[str, str] | None = None, relay: _Background | None = None):
        self.relay = relay
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

    def stop_process(self) -> int:
        try:
            return super().stop_process()
        finally:
            if self.relay is not None:
                self.relay.stop_process()

    def _collect(self) -> ClientRun:
        if self.relay is not None:
            self.relay.stop_process()
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

