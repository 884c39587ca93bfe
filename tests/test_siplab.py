"""The SIP lab: a real Kamailio doing digest authentication, a sipp phone and sipp attackers,
an office behind NAT, a forger, scanners (svwar, svcrack, sipp) and recordings.

No fastban here: these tests pin what the end-to-end test relies on. The phone registers; a
wrong password never gets a 200; what the clients sent is what the server counts, per source.
The office's honest phones reach the server as one address with a port each and never fail
authentication; forged requests arrive with the forged address and their answers never reach
the office's phones; guessers and scanners look to the server as they do on the wire.
A slow machine must not fail them: clients that expect answers wait up to SLOW seconds for each
(the office phones SLOW + 2), and UDP retransmissions are allowed for (the server counts them
too).
"""

import os
import subprocess
from collections import Counter

import pytest

from fastban.lab import siplab
from fastban.lab.siplab import SipLab, SipLabError
from conftest import require_tool

SLOW = 3.0


@pytest.fixture(scope="module")
def tools(kernel):
    require_tool("kamailio")
    require_tool("sipp")


@pytest.fixture(scope="module")
def lab(tools):
    with SipLab(attackers=2) as lab:
        yield lab


@pytest.fixture(scope="module")
def lab403(tools):
    with SipLab(attackers=1, bad_auth_reply="403", qop=False) as lab:   # digest without qop
        yield lab


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
            pids.append(int(entry))
    return pids


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


# ------------------------------------------------------------------ without root


def test_config_renders_every_placeholder_and_user():
    lab = SipLab(users={"1001": "pw-one", "2002": "pw-two"}, bad_auth_reply="403")
    cfg = lab.render_config()
    assert "@@" not in cfg
    assert 'case "2002":' in cfg and '"pw-two"' in cfg
    assert "#!define BAD_AUTH_403" in cfg
    for listen in ("udp:192.0.2.10:5060", "tcp:[2001:db8:2::10]:5060"):
        assert f"listen={listen}" in cfg


def test_bad_options_are_refused():
    with pytest.raises(SipLabError):
        SipLab(bad_auth_reply="404")
    with pytest.raises(SipLabError):
        SipLab(users={"2002": "x"})
    with pytest.raises(SipLabError):
        siplab.attacker_addresses(siplab.MAX_ATTACKERS)


def test_attacker_addresses_are_distinct():
    seen = {siplab.attacker_addresses(i) for i in range(siplab.MAX_ATTACKERS)}
    assert len(seen) == siplab.MAX_ATTACKERS


# ------------------------------------------------------------------ a real server


def test_phone_registers(lab):
    before = lab.server_requests_from(lab.phone_address)
    result = lab.register_phone(count=3, interval=0.05, response_timeout=SLOW)
    assert (result.successes, result.failures) == (3, 0)
    assert result.responses[401] == 3 and result.responses[200] == 3
    assert result.requests_sent >= 6          # 6 unless a slow answer caused a retransmission
    assert lab.server_requests_from(lab.phone_address) - before == result.requests_sent
    assert lab.server_replies_to(lab.phone_address).get(200, 0) >= 3


def test_phone_registers_over_tcp_and_ipv6(lab):
    address = lab.phone_address_of(6)
    before = lab.server_requests_from(address)
    result = lab.register_phone(count=2, interval=0.05, family=6, transport="tcp",
                                response_timeout=SLOW)
    assert (result.successes, result.failures) == (2, 0)
    assert lab.server_requests_from(address) - before == result.requests_sent == 4


def test_phone_with_a_wrong_password_fails(lab):
    result = lab.register_phone(count=1, interval=0.05, password="not-it",
                                response_timeout=0.5)
    assert result.successes == 0 and result.failures == 1
    assert result.responses.get(200, 0) == 0


@pytest.mark.parametrize("transport,family", [("udp", 4), ("tcp", 6)])
def test_attacker_gets_401_and_never_200(lab, transport, family):
    address = lab.attacker_address(0, family)
    before = lab.server_requests_from(address)
    result = lab.start_attacker(guesses=15, rate=200, transport=transport,
                                family=family, response_timeout=SLOW).wait()
    assert result.requests_sent == 16            # one to fetch a challenge, 15 guesses
    assert result.responses.get(401) == 16
    assert result.responses.get(200, 0) == 0 and result.timeouts == 0
    got = [r for r in lab.server_requests()[-16:] if r.source == address]
    assert len(got) == 16 and len({r.call_id for r in got}) == 1    # one Call-ID throughout
    assert lab.server_requests_from(address) - before == 16


def test_attacker_gets_403_in_403_mode(lab403):
    address = lab403.attacker_address(0, 6)
    result = lab403.start_attacker(guesses=10, rate=200, family=6,
                                   response_timeout=SLOW).wait()
    assert result.requests_sent == 11
    assert result.responses.get(401) == 1 and result.responses.get(403) == 10
    assert result.responses.get(200, 0) == 0
    assert lab403.server_replies_to(address) == {401: 1, 403: 10}
    assert lab403.register_phone(count=1, interval=0.05, response_timeout=SLOW).successes == 1


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_invite_attacker_gets_407_and_acks_are_counted(lab, transport):
    address = lab.attacker_address(1)
    before = lab.server_requests_from(address)
    before_acks = lab.server_requests_from(address, method="ACK")
    result = lab.start_attacker(guesses=8, rate=200, index=1, method="INVITE",
                                transport=transport, response_timeout=SLOW).wait()
    assert result.by_method == {"INVITE": 9, "ACK": 9}
    assert result.responses.get(407) == 9
    assert result.responses.get(486, 0) == 0 and result.responses.get(200, 0) == 0
    assert lab.server_requests_from(address) - before == 18
    assert lab.server_requests_from(address, method="ACK") - before_acks == 9


def test_invite_attacker_gets_403_in_403_mode(lab403):
    result = lab403.start_attacker(guesses=4, rate=200, method="INVITE",
                                   response_timeout=SLOW).wait()
    assert result.responses.get(407) == 1 and result.responses.get(403) == 4
    assert result.requests_sent == 10


def test_parallel_guessing_loops_each_keep_their_call_id(lab):
    address = lab.attacker_address(0)
    before = len(lab.server_requests())
    result = lab.start_attacker(guesses=5, rate=200, parallel=3, response_timeout=SLOW).wait()
    assert result.requests_sent == 18 and result.responses.get(401) == 18
    got = [r for r in lab.server_requests()[before:] if r.source == address]
    assert len(got) == 18
    assert sorted(sum(r.call_id == c for r in got) for c in {r.call_id for r in got}) == [6, 6, 6]


def test_counts_per_source_with_everyone_at_once(lab):
    sources = [lab.phone_address, lab.attacker_address(0), lab.attacker_address(1)]
    before = {a: lab.server_requests_from(a) for a in sources}
    phone = lab.start_phone(count=5, interval=0.1, response_timeout=SLOW)
    attackers = [lab.start_attacker(guesses=30, rate=100, index=i, response_timeout=SLOW)
                 for i in (0, 1)]
    results = [a.wait() for a in attackers]
    phone_result = phone.wait()
    assert phone_result.successes == 5
    sent = [phone_result.requests_sent] + [r.requests_sent for r in results]
    assert sent[0] >= 10 and sent[1:] == [31, 31]
    for address, count in zip(sources, sent):
        assert lab.server_requests_from(address) - before[address] == count
    assert all(r.responses.get(200, 0) == 0 for r in results)


def test_unanswered_attacker_keeps_going_and_the_server_counts_only_what_arrived(lab):
    address = lab.attacker_address(1)
    before = lab.server_requests_from(address)
    lab.drop_at_router(address)
    try:
        handle = lab.start_attacker(guesses=5, rate=100, index=1, response_timeout=0.05)
        result = handle.wait()
    finally:
        lab.undrop_at_router(address)
    assert result.requests_sent == 6 and result.timeouts == 6
    assert lab.server_requests_from(address) == before
    # the way is open again
    result = lab.start_attacker(guesses=2, rate=100, index=1, response_timeout=SLOW).wait()
    assert result.responses.get(401) == 3


def test_an_attacker_added_to_a_running_lab(lab):
    router = lab.router_mac()
    index = lab.add_attacker()
    # the clients already there keep reaching the router at the address they cached
    assert lab.router_mac() == router == siplab.BRIDGE_MAC
    assert lab.register_phone(count=1, interval=0.05, response_timeout=SLOW).successes == 1
    address = lab.attacker_address(index, 6)
    assert address == siplab.attacker_addresses(index)[1]
    result = lab.start_attacker(guesses=3, rate=200, index=index, family=6,
                                response_timeout=SLOW).wait()
    assert result.responses.get(401) == 4
    assert lab.server_requests_from(address) == 4


def test_stopping_an_attacker_early(lab):
    handle = lab.start_attacker(guesses=100000, rate=50)
    assert handle.running()
    result = handle.stop()
    assert not handle.running()
    assert result.responses.get(200, 0) == 0


def test_everything_is_gone_after_close(tools):
    lab = SipLab(attackers=2)
    lab.start()
    pgid = lab.kamailio_pid
    try:
        ours = {ns.name for ns in lab.lab.namespaces}
        assert len(ours) == 5 and ours <= _netns_names()
        assert len(_group_pids(pgid)) > 1                    # the master and its children
        attacker = lab.start_attacker(guesses=100000, rate=20)   # left running on purpose
        sipp_pid = attacker._sipp.proc.pid
    finally:
        lab.close()
    assert _group_pids(pgid) == []
    assert not os.path.exists(f"/proc/{sipp_pid}")
    assert not (ours & _netns_names())
    assert not lab.tmp.exists()


def test_cleanup_when_the_block_raises(tools):
    with pytest.raises(RuntimeError):
        with SipLab(attackers=1) as lab:
            pgid = lab.kamailio_pid
            names = {ns.name for ns in lab.lab.namespaces}
            phone = lab.register_phone(count=1, interval=0.05, response_timeout=SLOW)
            assert phone.successes == 1
            raise RuntimeError("boom")
    assert _group_pids(pgid) == []
    assert not (names & _netns_names())
    # the tallies outlive close
    assert lab.server_requests_from(lab.phone_address) == phone.requests_sent


XDP_DROP_ONE_SOURCE = r"""
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
int drop_one(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != htons(ETH_P_IP))
        return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end)
        return XDP_PASS;
    return ip->saddr == SOURCE ? XDP_DROP : XDP_PASS;
}
"""


def test_an_xdp_program_on_the_server_interface_sees_every_client(lab):
    """The guard's premise: one native-XDP program on lab.server_iface can silence one client
    (the server counts nothing from it) while the phone goes on registering."""
    import socket

    from bcc import BPF

    address = lab.attacker_address(0)
    source = int.from_bytes(socket.inet_aton(address), "little")   # as the kernel loads it
    bpf = BPF(text=XDP_DROP_ONE_SOURCE.encode(), cflags=[f"-DSOURCE={source}u"])
    fn = bpf.load_func(b"drop_one", BPF.XDP)
    iface = lab.server_iface.encode()
    before = lab.server_requests_from(address)
    with lab.server_namespace.entered():
        bpf.attach_xdp(iface, fn, 0)          # native (veth driver) mode
    try:
        result = lab.start_attacker(guesses=4, rate=100, response_timeout=0.05).wait()
        phone = lab.register_phone(count=2, interval=0.05, response_timeout=SLOW)
    finally:
        with lab.server_namespace.entered():
            bpf.remove_xdp(iface, 0)
        bpf.cleanup()
    assert result.requests_sent == 5 and result.timeouts == 5
    assert lab.server_requests_from(address) == before
    assert phone.successes == 2


# ------------------------------------------------------------------ offices, forgery, scanners
#
# One lab for these: an office behind NAT, a forger and an attacker; unknown accounts get 404
# (what lets svwar tell the accounts apart). The honest office's runs come first, and every
# count at the server is taken as a difference, so the tests do not depend on each other.


def test_office_and_forger_addresses_are_distinct_and_outside_the_other_subnets():
    publics = {siplab.office_public_addresses(i) for i in range(siplab.MAX_OFFICES)}
    privates = {siplab.office_private_addresses(i) for i in range(siplab.MAX_OFFICES)}
    assert len(publics) == len(privates) == siplab.MAX_OFFICES
    attackers = {a for i in range(siplab.MAX_ATTACKERS) for a in siplab.attacker_addresses(i)}
    clients = attackers | {siplab.PHONE_V4, siplab.PHONE_V6}
    assert not clients & {a for pair in publics | privates for a in pair}
    assert not clients & {siplab.FORGER_V4, siplab.FORGER_V6}
    with pytest.raises(SipLabError):
        siplab.office_public_addresses(siplab.MAX_OFFICES)


def test_office_accounts_are_in_the_config_with_their_own_passwords():
    lab = SipLab(office_accounts=3, unknown_user_reply="404")
    assert lab.office_accounts == ["3000", "3001", "3002"]
    passwords = {lab.users[a] for a in lab.office_accounts}
    assert len(passwords) == 3
    cfg = lab.render_config()
    for account in lab.office_accounts:
        assert f'case "{account}":' in cfg and f'"{lab.users[account]}"' in cfg
    assert "#!define UNKNOWN_USER_404" in cfg
    assert "#!define UNKNOWN_USER_401" in SipLab().render_config()
    with pytest.raises(SipLabError):
        SipLab(unknown_user_reply="403")


def test_extension_ranges():
    assert siplab.parse_extensions("1000-1002,2000") == ["1000", "1001", "1002", "2000"]
    for bad in ("1002-1000", "abc", "1-200000"):
        with pytest.raises(SipLabError):
            siplab.parse_extensions(bad)


@pytest.fixture(scope="module")
def office_lab(tools):
    require_tool("nft")
    require_tool("tcpdump")
    with SipLab(attackers=1, unknown_user_reply="404") as lab:
        lab.add_office()
        lab.add_forger()
        yield lab


def test_office_phones_work_through_the_nat(office_lab):
    """20 phones, 30 s, each its own account: the server sees one address and 20 ports, every
    phone registers, calls are answered 200 and 486 as asked, keep-alives are answered, and the
    server never refuses a credential."""
    lab, office = office_lab, office_lab.office(0)
    public = office.public_address(4)
    start = len(lab.server_messages())
    replies_start = len(lab.server_replies())
    failures_before = lab.server_auth_failures_to(public)
    result = office.run_phones(count=20, duration=30, register_interval=15,
                               options_interval=5, call_interval=10, call_hold=1.0,
                               response_timeout=SLOW + 2)

    assert len(result.phones) == 20 and result.phones_registered == 20
    assert {p.user for p in result.phones} == set(lab.office_accounts[:20])
    assert result.auth_rejections == 0 and result.failures == 0
    for kind in ("REGISTER", "OPTIONS", "INVITE", "BYE"):
        tally = result.by_kind[kind]
        assert tally.sent == tally.answered > 0, (kind, tally)
    assert result.calls_answered > 0 and result.calls_busy > 0
    assert result.by_kind["BYE"].sent == result.calls_answered
    assert result.run.successful_calls == 20 and result.run.unexpected == 0

    messages = lab.server_messages()[start:]
    assert {m.source for m in messages} == {public}                 # never a private address
    assert len({m.port for m in messages}) == 20 == len(result.ports)
    assert sum(m.is_request for m in messages) == result.requests_sent
    assert lab.server_auth_failures_to(public) == failures_before
    replies = [r for r in lab.server_replies()[replies_start:] if r.destination == public]
    invite_answers = Counter(r.code for r in replies if r.method == "INVITE")
    retransmitted = sum(c.retrans for c in result.run.counts)   # each got one more answer
    for code, calls in ((200, result.calls_answered), (486, result.calls_busy),
                        (407, result.calls_made)):
        assert calls <= invite_answers[code] <= calls + retransmitted, code
    assert all(r.reason != "bad-credentials" for r in replies)


def test_office_phones_over_tcp_and_ipv6(office_lab):
    lab, office = office_lab, office_lab.office(0)
    public = office.public_address(6)
    start = len(lab.server_messages())
    result = office.run_phones(count=5, duration=8, family=6, transport="tcp",
                               register_interval=4, options_interval=2, call_interval=3,
                               call_hold=0.5, response_timeout=SLOW + 2)
    assert result.phones_registered == 5
    assert result.auth_rejections == 0 and result.failures == 0
    assert result.by_kind["OPTIONS"].answered > 0 and result.calls_made > 0
    messages = lab.server_messages()[start:]
    assert {(m.source, m.proto) for m in messages} == {(public, "tcp")}
    assert len({m.port for m in messages}) == 5


def test_a_shared_account_gets_a_200_ok_in_ip_fragments(office_lab, tmp_path):
    """40 phones register one account: the server's 200 OK lists every contact, outgrows one
    packet and leaves the server interface as IP fragments, which the NAT passes on."""
    lab, office = office_lab, office_lab.office(0)
    public = office.public_address(4)
    with lab.record(tmp_path / "shared.pcap") as recording:
        result = office.run_phones(count=40, duration=6, shared_account=True,
                                   register_interval=2, options_interval=None,
                                   call_interval=None, response_timeout=SLOW + 2)
    assert {p.user for p in result.phones} == {lab.office_accounts[0]}
    assert result.phones_registered == 40 and result.failures == 0
    fragments = siplab.count_fragments(recording.path)
    assert fragments.fragments >= 2 * fragments.datagrams > 0
    assert set(fragments.by_source) == {lab.server_address(4)}
    assert recording.packets_dropped == 0
    # Put together again, the fragments are 200 OKs to the office listing (at the last
    # registrations) the contacts of all 40 phones, at their private address.
    from scapy.layers.inet import IP, UDP, defragment
    from scapy.utils import rdpcap
    whole = [bytes(p[UDP].payload) for p in defragment(rdpcap(str(recording.path)))
             if IP in p and UDP in p and p[IP].dst == public and len(p[IP]) > 1500]
    assert len(whole) == fragments.datagrams
    assert all(w.startswith(b"SIP/2.0 200 OK") for w in whole)
    contact = f"<sip:{lab.office_accounts[0]}@{office.private_address(4)}:".encode()
    assert max(w.count(contact) for w in whole) >= 40


def test_forged_requests_reach_the_server_spoofed_and_the_answers_never_reach_the_phones(
        office_lab, tmp_path):
    lab, office, forger = office_lab, office_lab.office(0), office_lab.add_forger()
    public = office.public_address(4)
    requests_start, replies_start = len(lab.server_requests()), len(lab.server_replies())
    failures_before = lab.server_auth_failures_to(public)
    with office.record(tmp_path / "office.pcap") as recording:
        phones = office.start_phones(count=3, duration=4, register_interval=2,
                                     options_interval=0.5, call_interval=None,
                                     response_timeout=SLOW + 2)
        forged = forger.send(count=2000, source=public, rate=1000)
        honest = phones.wait()
    assert forged.sent == 2000 and sum(forged.by_method.values()) == 2000

    got = [r for r in lab.server_requests()[requests_start:] if forged.is_forged(r.call_id)]
    assert len(got) == forged.sent and len({r.call_id for r in got}) == forged.sent
    assert {r.source for r in got} == {public}
    assert Counter(r.method for r in got) == forged.by_method
    answers = [r for r in lab.server_replies()[replies_start:] if forged.is_forged(r.call_id)]
    assert {r.destination for r in answers} == {public}
    assert Counter((r.method, r.code) for r in answers) == {
        ("REGISTER", 401): forged.by_method["REGISTER"],
        ("INVITE", 407): forged.by_method["INVITE"],
        ("OPTIONS", 200): forged.by_method["OPTIONS"]}
    assert lab.server_auth_failures_to(public) == failures_before     # no credentials sent

    # The office capture holds the phones' own answers, and none of the forged ones.
    assert honest.failures == 0 and honest.by_kind["OPTIONS"].ok > 0
    assert siplab.packets_containing(recording.path, "SIP/2.0 200 OK") >= (
        honest.by_kind["OPTIONS"].ok)
    assert siplab.packets_containing(recording.path, forged.call_id_prefix) == 0


def test_forged_credentials_are_refused_at_the_office_address(office_lab):
    lab, office, forger = office_lab, office_lab.office(0), office_lab.add_forger()
    public = office.public_address(6)
    failures_before = lab.server_auth_failures_to(public)
    replies_start = len(lab.server_replies())
    forged = forger.send(count=300, source=public, credentials=True, rate=1000)
    answers = [r for r in lab.server_replies()[replies_start:] if forged.is_forged(r.call_id)]
    assert len(answers) == forged.sent
    refused = forged.by_method["REGISTER"] + forged.by_method["INVITE"]
    assert sum(r.is_auth_failure for r in answers) == refused
    assert lab.server_auth_failures_to(public) - failures_before == refused


def test_a_guesser_inside_the_office_fails_at_the_office_address(office_lab):
    """The guesser and honest phones share the office's public address; the server refuses
    exactly the guesser's credentials."""
    lab, office = office_lab, office_lab.office(0)
    public = office.public_address(4)
    failures_before = lab.server_auth_failures_to(public)
    requests_before = lab.server_requests_from(public)
    phones = office.start_phones(count=5, duration=5, register_interval=1,
                                 options_interval=1, call_interval=2, call_hold=0.5,
                                 response_timeout=SLOW + 2)
    guesser = office.start_guesser(guesses=12, rate=20, user=lab.office_accounts[1],
                                   response_timeout=SLOW)
    assert guesser.address == public
    guessed = guesser.wait()
    honest = phones.wait()
    assert guessed.requests_sent == 13 and guessed.responses.get(401) == 13
    assert guessed.responses.get(200, 0) == 0
    assert honest.phones_registered == 5 and honest.auth_rejections == 0
    assert lab.server_auth_failures_to(public) - failures_before == 12
    assert (lab.server_requests_from(public) - requests_before
            == honest.requests_sent + guessed.requests_sent)


def test_svwar_finds_the_accounts_and_answers_no_challenge(office_lab):
    lab = office_lab
    address = lab.attacker_address(0)
    requests_start = len(lab.server_requests())
    replies_start = len(lab.server_replies())
    result = lab.start_scanner(extensions="2990-3009").wait()
    assert result.tool == "svwar" and result.returncode == 0
    assert result.found == {str(n): "reqauth" for n in range(3000, 3010)}
    got = [r for r in lab.server_requests()[requests_start:] if r.source == address]
    assert {r.method for r in got} == {"REGISTER"}
    assert len(got) == 21                    # a random account first, then the 20 extensions
    assert len({r.call_id for r in got}) == len(got)     # nothing answered: each Call-ID once
    replies = Counter((r.code, r.reason) for r in lab.server_replies()[replies_start:]
                      if r.destination == address)
    assert replies == {(401, "challenge"): 10, (404, "unknown-user"): 11}


def test_the_sipp_scanner_over_ipv6_and_tcp(office_lab):
    lab = office_lab
    address = lab.attacker_address(0, 6)
    requests_start = len(lab.server_requests())
    result = lab.start_scanner(extensions="3095-3104", tool="sipp", family=6,
                               transport="tcp", response_timeout=SLOW).wait()
    assert result.answers == {**{str(n): "401" for n in range(3095, 3100)},
                              **{str(n): "404" for n in range(3100, 3105)}}
    got = [r for r in lab.server_requests()[requests_start:] if r.source == address]
    assert len(got) == 10 == len({r.call_id for r in got})


def test_svwar_is_refused_where_it_would_stop_at_once_and_the_sipp_scanner_goes_instead(lab):
    with pytest.raises(SipLabError, match="unknown_user_reply"):
        lab.start_scanner(extensions="1000-1010", tool="svwar")
    with pytest.raises(SipLabError, match="IPv4"):
        lab.start_scanner(extensions="1000-1010", tool="svwar", family=6)
    address = lab.attacker_address(0)
    before = lab.server_replies_to(address).get(401, 0)
    result = lab.start_scanner(extensions="1000-1010", response_timeout=SLOW).wait()
    assert result.tool == "sipp"
    assert result.answers == {str(n): "401" for n in range(1000, 1011)}
    assert lab.server_replies_to(address).get(401, 0) - before == 11


def test_svcrack_guesses_with_one_call_id_until_the_password(office_lab):
    lab = office_lab
    address = lab.attacker_address(0)
    user = lab.office_accounts[2]
    requests_start = len(lab.server_requests())
    failures_before = lab.server_auth_failures_to(address)
    wrong = [f"wrong-{n}" for n in range(6)]
    result = lab.start_svcrack(user=user,
                               passwords=[*wrong, lab.users[user], "never-tried"]).wait()
    assert result.cracked == {user: lab.users[user]}
    got = [r for r in lab.server_requests()[requests_start:] if r.source == address]
    assert len(got) == 8                     # one for a challenge, 6 wrong, the right one
    assert len({r.call_id for r in got}) == 1
    assert lab.server_auth_failures_to(address) - failures_before == 6


def test_a_recording_holds_every_packet_and_fastban_replay_reads_it(lab, tmp_path):
    from fastban.replay import replay

    before = lab.server_requests_from(lab.phone_address)
    with lab.record(tmp_path / "phone.pcap") as recording:
        phone = lab.register_phone(count=2, interval=0.05, response_timeout=SLOW)
    assert phone.successes == 2
    sent = lab.server_requests_from(lab.phone_address) - before
    assert recording.packets_dropped == 0
    assert siplab.packets_containing(recording.path, "REGISTER sip:") == sent
    assert siplab.packets_containing(recording.path, "SIP/2.0 200 OK") >= 2
    assert replay(recording.path).packets == recording.packets_captured


def test_an_office_forger_capture_and_scanner_are_gone_after_close(tools, tmp_path):
    lab = SipLab(attackers=1, unknown_user_reply="404")
    lab.start()
    try:
        office = lab.add_office()
        lab.add_forger()
        ours = {ns.name for ns in lab.lab.namespaces}
        assert len(ours) == 7 and ours <= _netns_names()
        with lab.record(tmp_path / "left.pcap"):
            capture_pid = lab._clients[-1].proc.pid
            phones = office.start_phones(count=3, duration=600)     # left running on purpose
            scan = lab.start_scanner(extensions="1-99999", pace=0.05, max_silence=60)
            pids = [capture_pid, phones._sipp.proc.pid, scan._process.proc.pid]
            assert all(os.path.exists(f"/proc/{pid}") for pid in pids)
            lab.close()
    finally:
        lab.close()
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)
    assert not (ours & _netns_names())
