"""An office behind NAT (Office, made by SipLab.add_office): its phones, one sipp
(fastban/lab/office_phone.xml) playing them all, what they did phone by phone and dialog by
dialog (OfficeResult), and a password guesser on one of its machines (Office.start_guesser).
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastban.lab import netns
from fastban.lab.clients import AttackerHandle, ClientRun, _SippProcess
from fastban.lab.plan import (SipLabError, _family_index, office_private_addresses,
                              office_public_addresses)

if TYPE_CHECKING:
    from fastban.lab.siplab import SipLab


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
