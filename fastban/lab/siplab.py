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
       office i (phones)                                        v4 and v6 (+ TLS 5061: tls=True)
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

    with SipLab(tls=True, hep_to="127.0.0.1:9060") as lab:   # + hep_transport="tcp"
        collector = lab.start_hep_collector()                # HepCollector, server namespace
        lab.register_phone(transport="tls")                    # sipp -> socat relay -> TLS 5061
        lab.start_attacker(guesses=20, transport="tls").wait()
        collector.containing(b"SIP/2.0 401")                   # HEPv3 packets, raw bytes
        lab.tls_connect(0, timeout=2)                          # True: a TLS handshake got through

The lab's parts, each in a module of its own (their public names are all importable from
here too): the addresses and accounts (fastban/lab/plan.py), Kamailio and the counting at the
server (server.py), sipp and the counting at the clients (clients.py), the office (office.py),
the forger and the scanners (attackers.py), recordings (recording.py), the TLS relay, bare
connection attempts and the HEP collector (transports.py). SipLab, here, builds
the topology, runs the life cycle and starts the clients.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

from fastban.lab import netns
from fastban.lab.attackers import (CrackHandle, CrackResult, Forger, ForgeResult, ScanResult,
                                   ScannerHandle, Scanners, parse_extensions)
from fastban.lab.clients import (AttackerHandle, AttackResult, ClientRun, MessageCount,
                                 PhoneHandle, RegisterResult, _Background, _SippProcess)
from fastban.lab.office import (PHONE_EVENTS, PHONE_KINDS, DialogTally, Office,
                                OfficePhonesHandle, OfficeResult, PhoneTally)
from fastban.lab.plan import (BRIDGE_MAC, DEFAULT_USERS, FORGED_PORTS, FORGER_V4, FORGER_V6,
                              LAB_FILES, MAX_ATTACKERS, MAX_OFFICES, OFFICE_ACCOUNT_BASE,
                              OFFICE_PORTS, PHONE_USER, PHONE_V4, PHONE_V6, REALM,
                              ROUTER_ATTACKER_V4, ROUTER_ATTACKER_V6, ROUTER_PHONE_V4,
                              ROUTER_PHONE_V6, ROUTER_SERVER_V4, ROUTER_SERVER_V6, SERVER_V4,
                              SERVER_V6, SIP_PORT, TLS_PORT, SipLabError, _normal,
                              _office_gateway_private_addresses, _uri_host, attacker_addresses,
                              office_private_addresses, office_public_addresses)
from fastban.lab.recording import (FragmentCount, Recorder, Recording, count_fragments,
                                   packets_containing)
from fastban.lab.server import KamailioServer, ServerMessage, ServerReply, ServerRequest
from fastban.lab.transports import HepCollector, TlsRelay, Transports

# The lab's public names, wherever they live: `from fastban.lab import siplab` reaches them all.
__all__ = ["SipLab", "CrackHandle", "CrackResult", "Forger", "ForgeResult", "ScanResult",
           "ScannerHandle", "parse_extensions", "AttackerHandle", "AttackResult", "ClientRun",
           "MessageCount", "PhoneHandle", "RegisterResult", "PHONE_EVENTS", "PHONE_KINDS",
           "DialogTally", "Office", "OfficePhonesHandle", "OfficeResult", "PhoneTally",
           "BRIDGE_MAC", "DEFAULT_USERS", "FORGED_PORTS", "FORGER_V4", "FORGER_V6",
           "LAB_FILES", "MAX_ATTACKERS", "MAX_OFFICES", "OFFICE_ACCOUNT_BASE", "OFFICE_PORTS",
           "PHONE_USER", "PHONE_V4", "PHONE_V6", "REALM", "ROUTER_ATTACKER_V4",
           "ROUTER_ATTACKER_V6", "ROUTER_PHONE_V4", "ROUTER_PHONE_V6", "ROUTER_SERVER_V4",
           "ROUTER_SERVER_V6", "SERVER_V4", "SERVER_V6", "SIP_PORT", "SipLabError",
           "attacker_addresses", "office_private_addresses", "office_public_addresses",
           "FragmentCount", "Recording", "count_fragments", "packets_containing",
           "ServerMessage", "ServerReply", "ServerRequest", "TLS_PORT", "HepCollector",
           "TlsRelay"]


class SipLab(KamailioServer, Recorder, Scanners, Transports):
    """The namespaces, Kamailio and the clients; all stopped and removed on close.

    bad_auth_reply: "401" (default; a wrong password gets a fresh challenge) or "403".
    users: user -> password known to the server (default DEFAULT_USERS; the phone is "1001").
    office_accounts: how many office accounts (3000, 3001, ...; lab.office_accounts) the server
    knows besides `users`, each with its own random password (lab.users[account]).
    unknown_user_reply: a REGISTER for an account that does not exist is challenged like any
    other ("401", default) or answered 404 ("404": svwar can then tell which accounts exist).
    tls: the server also serves SIP over TLS on TLS_PORT (5061); clients then take
    transport="tls" (sipp over TCP to a socat relay in its namespace, see transports.py).
    hep_to ("127.0.0.1:PORT" or "[::1]:PORT", in the server's namespace), hep_transport ("udp"
    or "tcp"), hep_auth_key, hep_capture_id: Kamailio mirrors every SIP message it receives or
    sends as HEPv3 to that collector (see server.py; start_hep_collector listens there).
    """

    def __init__(self, attackers: int = 1, bad_auth_reply: str = "401",
                 users: dict[str, str] | None = None, qop: bool = True,
                 server_children: int = 2, office_accounts: int = 100,
                 unknown_user_reply: str = "401", tls: bool = False,
                 hep_to: str | None = None, hep_transport: str = "udp",
                 hep_auth_key: str | None = None, hep_capture_id: int = 2001):
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
        self._configure_server(tls, hep_to, hep_transport, hep_auth_key, hep_capture_id)
        self.server_children = server_children
        self.initial_attackers = attackers
        self.lab = netns.Lab()
        self.tmp: Path | None = None
        self._init_server()
        self._clients: list[_Background] = []
        self._attackers: list[netns.Namespace] = []
        self._offices: list[Office] = []
        self._forger: Forger | None = None
        self._run_counter = 0

    # ----------------------------------------------------------------- life cycle

    def __enter__(self) -> SipLab:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        for tool in ("kamailio", "sipp", "ip", *(("socat", "openssl") if self.tls else ())):
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
            f"{self.server_iface} (guarded interface), Kamailio UDP+TCP {SIP_PORT}"
            f"{f' + TLS {TLS_PORT}' if self.tls else ''}, bad password -> {self.bad_auth_reply}"
            f"{f', HEP to {self.hep_to} over {self.hep_transport}' if self.hep_to else ''}",
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

    @property
    def attackers(self) -> int:
        return len(self._attackers)

    def server_address(self, family: int = 4) -> str:
        if family not in (4, 6):
            raise SipLabError("family must be 4 or 6")
        return SERVER_V4 if family == 4 else SERVER_V6


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
        t1) or one per call (-t un, tn); `files` (name -> text) are written to its directory.
        transport "tls": sipp over TCP to a TLS relay in `ns` (started here, stopped with sipp);
        the scenarios name the transport in Via and Contact with the key [via_transport]."""
        if transport not in ("udp", "tcp", "tls"):
            raise SipLabError("transport must be 'udp', 'tcp' or 'tls'")
        if transport == "tls" and not self.tls:
            raise SipLabError("transport 'tls' needs a lab with tls=True")
        if not self.server_running():
            raise SipLabError("the SIP server is not running")
        workdir = self._workdir(f"sipp-{Path(scenario).stem}")
        shutil.copy(LAB_FILES / scenario, workdir / scenario)
        for name, text in (files or {}).items():
            (workdir / name).write_text(text)
        server = self.server_address(family)
        sockets = ("un" if transport == "udp" else "tn") if socket_per_call else (
            "u1" if transport == "udp" else "t1")
        relay = None
        remote = f"{_uri_host(server)}:{SIP_PORT}"
        if transport == "tls":
            relay = self._start_tls_relay(ns, local, family, bound + 5)
            remote = f"{_uri_host(local)}:{relay.port}"
        args = [remote, "-sf", scenario,
                "-i", local, "-t", sockets, "-key", "via_transport", transport.upper(),
                "-key", "domain", _uri_host(server), "-key", "contact_host", _uri_host(local),
                "-nostdin", "-timer_resol", "1",
                "-trace_counts", "-trace_stat", "-stf", "stat.csv", "-fd", "1",
                "-timeout", f"{int(bound) + 1}s", *extra]
        try:
            client = _SippProcess(ns, workdir, args, bound + 2, env=env, relay=relay)
        except BaseException:
            if relay is not None:
                relay.stop_process()
            raise
        self._clients.append(client)
        return client

    def start_phone(self, count: int = 1, interval: float = 1.0, family: int = 4,
                    transport: str = "udp", user: str = PHONE_USER,
                    password: str | None = None, response_timeout: float = 2.0) -> PhoneHandle:
        """Starts the phone registering `count` times, one every `interval` seconds, over
        `transport` "udp", "tcp" or "tls" (a lab with tls=True: through a relay, see
        transports.py; the server then sees the relay's source port, not sipp's)."""
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
        its own Call-ID (requests: parallel * (guesses + 1)). transport: "udp", "tcp", or
        "tls" in a lab with tls=True (one TLS connection, through a relay). Returns a handle
        to wait() for or stop()."""
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


def _sweep_stale_dirs() -> None:
    """Removes the temp dirs of labs whose process was killed (the pid is in the name)."""
    for path in Path(tempfile.gettempdir()).glob("fastban-siplab-*-*"):
        match = re.fullmatch(r"fastban-siplab-(\d+)-\w+", path.name)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            shutil.rmtree(path, ignore_errors=True)


def _default_routes(ns: netns.Namespace, gw4: str, gw6: str) -> None:
    ns.run(["ip", "route", "add", "default", "via", gw4])
    ns.run(["ip", "-6", "route", "add", "default", "via", gw6])

