"""`make demo`: a live password-guessing attack on a real SIP server, stopped by fastban.

Builds a throwaway namespace lab (fastban.siplab: Kamailio with digest authentication, a phone,
an attacker), starts `fastban run` on the server's interface, and narrates: the phone registers,
the attacker guesses, the guard counts the failures and bans, the attacker's packets are dropped
before they reach Kamailio, the list of blocked addresses, the unblock. Everything is removed at
the end. Nothing is sent outside the lab.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fastban.siplab import SipLab

MAXRETRY, BANTIME = 5, 600


class GuardProcess:
    """`fastban run` as a process in a network namespace, with its own settings and log."""

    def __init__(self, namespace, iface: str, workdir: Path, **settings):
        self.namespace, self.iface, self.workdir = namespace, iface, Path(workdir)
        self.config = self.workdir / "fastban.toml"
        self.socket = str(self.workdir / "control.sock")
        values = {"maxretry": MAXRETRY, "findtime": 600, "bantime": BANTIME,
                  "state_file": str(self.workdir / "state.msgpack"),
                  "control_socket": self.socket, **settings}
        self.config.write_text("".join(f"{key} = {json.dumps(value)}\n"
                                       for key, value in values.items()))
        self.log_path = self.workdir / "guard.log"
        self.process: subprocess.Popen | None = None

    def command(self, *args: str) -> list[str]:
        return self.namespace.nsenter([sys.executable, "-m", "fastban", *args])

    def start(self, *extra: str, timeout: float = 60) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command("run", "--iface", self.iface, "--config", str(self.config), *extra),
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fastban run exited with {self.process.returncode}:\n"
                                   f"{self.log_path.read_text()[-2000:]}")
            if self.cli("stats", check=False).returncode == 0:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"fastban run did not answer within {timeout} s")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Runs a fastban command against this guard's settings and socket."""
        result = subprocess.run(self.command(*args, "--config", str(self.config),
                                             "--iface", self.iface),
                                capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(f"fastban {' '.join(args)}: exit {result.returncode}: "
                               f"{result.stderr.strip()}")
        return result

    def json(self, *args: str):
        return json.loads(self.cli(*args, "--json").stdout)

    def stop(self, signal_name: str = "TERM", timeout: float = 20) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        if signal_name == "KILL":
            self.process.kill()
        else:
            self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def detach(self) -> None:
        """Stops the guard and removes its programs and pins, even if its settings are broken."""
        from fastban.dataplane import DEFAULT_PIN_ROOT, remove_pins

        self.stop()
        if self.cli("detach", check=False).returncode != 0:
            remove_pins(os.path.join(DEFAULT_PIN_ROOT, self.iface))


def _say(text: str = "") -> None:
    print(text, flush=True)


def _follow(path: Path, stop: threading.Event) -> None:
    """Echoes the guard's log as it grows."""
    offset = 0
    while not stop.is_set():
        if path.exists():
            with open(path) as log:
                log.seek(offset)
                for line in log:
                    _say(f"    [guard] {line.rstrip()}")
                offset = log.tell()
        stop.wait(0.1)


def main() -> int:
    if os.geteuid() != 0:
        print("fastban demo: needs root (namespaces, XDP): run it with sudo", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="fastban-demo-") as workdir, \
            SipLab(attackers=1) as lab:
        attacker = lab.attacker_address(0)
        _say("fastban demo: a Kamailio SIP server with digest authentication, a phone and an "
             "attacker, each in its own network namespace.")
        _say(f"  server   {lab.server_address(4)} on {lab.server_iface} (the guarded interface)")
        _say(f"  phone    {lab.phone_address}    user 1001, right password")
        _say(f"  attacker {attacker}    guesses 1001's password")
        _say()
        guard = GuardProcess(lab.server_namespace, lab.server_iface, Path(workdir))
        stop_follow = threading.Event()
        follower = threading.Thread(target=_follow, args=(guard.log_path, stop_follow),
                                    daemon=True)
        follower.start()
        try:
            _say(f"1. fastban run --iface {lab.server_iface}: ban after {MAXRETRY} failures "
                 f"within 600 s, for {BANTIME} s")
            guard.start()
            _say()
            _say("2. the phone registers (REGISTER, 401 challenge, REGISTER with credentials, "
                 "200 OK), 3 times")
            phone = lab.register_phone(count=3, interval=0.3)
            _say(f"    phone: {phone.successes} registrations succeeded, {phone.failures} failed")
            _say()
            guesses = 40
            _say(f"3. the attacker tries {guesses} passwords at 20 a second, one Call-ID, "
                 "as sipvicious does")
            result = lab.start_attacker(guesses=guesses, rate=20).wait()
            time.sleep(0.3)
            reached = lab.server_requests_from(attacker)
            _say(f"    attacker sent {result.requests_sent} REGISTERs; Kamailio received "
                 f"{reached}; answers the attacker got: {result.responses}")
            _say()
            _say("4. fastban list: the blocked addresses")
            _say(_indent(guard.cli("list").stdout))
            _say("5. fastban stats")
            _say(_indent(guard.cli("stats").stdout))
            _say("6. the phone still registers while the attacker is banned")
            phone = lab.register_phone(count=2, interval=0.3)
            _say(f"    phone: {phone.successes} registrations succeeded, {phone.failures} failed")
            _say()
            _say(f"7. fastban unban {attacker}: the unblock button")
            _say(_indent(guard.cli("unban", attacker).stdout))
            before = lab.server_requests_from(attacker)
            lab.start_attacker(guesses=2, rate=20).wait()
            time.sleep(0.3)
            _say(f"    the attacker reaches Kamailio again: "
                 f"{lab.server_requests_from(attacker) - before} more REGISTERs received")
            _say()
        finally:
            guard.detach()
            stop_follow.set()
            follower.join()
        _say("8. guard stopped and detached; lab removed.")
    return 0


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.rstrip().splitlines()) + "\n"


if __name__ == "__main__":
    sys.exit(main())
