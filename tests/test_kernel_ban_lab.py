"""The threshold ban decided in the kernel in front of the lab's real Kamailio, with
`fastban run` (kernel_ban on) arming the sources: a password guesser is banned by the capture
at its maxretry-th proven failure, the ban recorded by the guard as its own; a failure response
Kamailio sends again, for the same request sent again, is not counted twice."""
import re
import socket
import time

import pytest

from conftest import require_tool, wait_for
from fastban.lab.siplab import SipLab
from labwait import running_guard

MAXRETRY = 5


@pytest.fixture(scope="module")
def lab(kernel):
    for tool in ("kamailio", "sipp"):
        require_tool(tool)
    with SipLab(attackers=2) as lab:
        yield lab


@pytest.fixture
def guard(lab, tmp_path):
    with running_guard(lab, tmp_path, maxretry=MAXRETRY, findtime=600, bantime=600,
                       kernel_ban=True) as guard:
        yield guard


def test_a_guesser_is_banned_by_the_kernel_and_the_guard_records_it(lab, guard):
    guesser = lab.start_attacker(index=0, guesses=20, rate=20).wait()
    wait_for(lambda: guard.json("list")["bans"], what="the guesser's ban record")
    [row] = guard.json("list")["bans"]
    stats = guard.json("stats")
    assert row["target"] == f"{lab.attacker_address(0)}/32" and row["failures"] == MAXRETRY
    assert f"{MAXRETRY} proven ({MAXRETRY}×bad credentials 401)" in row["reason"]
    assert (stats["kernel_bans"], stats["kernel_bans_lifted"]) == (1, 0)
    # the first REGISTER's challenge, then MAXRETRY failures: nothing passed after the ban
    assert guesser.responses.get(401, 0) == MAXRETRY + 1


class Guesser:
    """REGISTERs with wrong credentials from an attacker's address, by hand: one Call-ID, each
    guess a new branch, the nonce of the server's last challenge."""

    def __init__(self, lab, index: int):
        self.address = lab.attacker_address(index)
        self.server = (lab.server_address(), 5060)
        with lab._attackers[index].entered():
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.address, 0))
        self.sock.settimeout(2.0)
        self.nonce, self.cseq = None, 0

    def request(self, branch: str) -> bytes:
        self.cseq += 1
        server = self.server[0]
        authorization = (f'Authorization: Digest username="1000", realm="lab", '
                         f'nonce="{self.nonce}", uri="sip:{server}", '
                         f'response="0123456789abcdef0123456789abcdef"\r\n'
                         if self.nonce else "")
        port = self.sock.getsockname()[1]
        return (f"REGISTER sip:{server} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {self.address}:{port};branch={branch};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:1000@{server}>;tag=g1\r\n"
                f"To: <sip:1000@{server}>\r\nCall-ID: kernel-ban-guess\r\n"
                f"CSeq: {self.cseq} REGISTER\r\nContact: <sip:1000@{self.address}:{port}>\r\n"
                f"{authorization}Content-Length: 0\r\n\r\n").encode()

    def send(self, message: bytes, learn: bool = True) -> bytes | None:
        self.sock.sendto(message, self.server)
        try:
            answer = self.sock.recv(65535)
        except socket.timeout:
            return None
        found = re.search(rb'nonce="([^"]+)"', answer)
        if found and learn:
            self.nonce = found.group(1).decode()
        return answer


def test_a_failure_sent_again_is_not_counted_twice_and_the_next_one_bans(lab, guard):
    guesser = Guesser(lab, 1)
    assert guesser.send(guesser.request("z9hG4bK-kb-0")).startswith(b"SIP/2.0 401")
    for n in range(1, MAXRETRY):
        last = guesser.request(f"z9hG4bK-kb-{n}")
        assert guesser.send(last).startswith(b"SIP/2.0 401")
    wait_for(lambda: guard.json("stats")["sources_armed"] == 1, what="the guesser armed")
    # the same request again: Kamailio answers it again (statelessly: the same status, Call-ID
    # and branch; its nonce may differ, and the rules do not take the nonce of a response they
    # read as a retransmission). One failure: no ban, in the kernel or the guard.
    again = guesser.send(last, learn=False)
    assert again is not None and again.startswith(b"SIP/2.0 401")
    time.sleep(1.0)
    stats = guard.json("stats")
    assert guard.json("list")["bans"] == [] and stats["kernel_bans"] == 0
    assert stats["failures_proven"] == MAXRETRY - 1
    assert stats["rule_counts"]["retransmissions"] >= 1
    # a new guess: banned by the kernel, on the answer
    assert guesser.send(guesser.request(f"z9hG4bK-kb-{MAXRETRY}")).startswith(b"SIP/2.0 401")
    assert guesser.send(guesser.request("z9hG4bK-kb-after")) is None     # dropped by XDP
    wait_for(lambda: guard.json("list")["bans"], what="the ban record")
    [row] = guard.json("list")["bans"]
    assert f"{MAXRETRY} proven ({MAXRETRY}×bad credentials 401)" in row["reason"]
    stats = guard.json("stats")
    assert (stats["kernel_bans"], stats["kernel_bans_lifted"]) == (1, 0)
