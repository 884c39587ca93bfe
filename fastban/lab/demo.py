"""`make demo`: a live password-guessing attack on a real SIP server, stopped by fastban.

Builds a throwaway namespace lab (fastban.lab.siplab: Kamailio with digest authentication, a
phone, an attacker), starts `fastban run` on the server's interface (fastban.lab.guard_process),
and narrates: the phone registers, the attacker guesses, the guard counts the failures and bans,
the attacker's packets are dropped before they reach Kamailio, the list of blocked addresses,
the unblock. Everything is removed at the end. Nothing is sent outside the lab.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from fastban.lab.guard_process import BANTIME, MAXRETRY, GuardProcess
from fastban.lab.siplab import SipLab


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
