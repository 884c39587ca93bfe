"""The SIP lab: a real Kamailio doing digest authentication, a sipp phone and sipp attackers.

No fastban here: these tests pin what the end-to-end test relies on. The phone registers; a
wrong password never gets a 200; what the clients sent is what the server counts, per source.
A slow machine must not fail them: clients that expect answers wait up to SLOW seconds for each,
and a phone's UDP retransmissions are allowed for (the server counts them too).
"""

import os
import subprocess

import pytest

from fastban import siplab
from fastban.siplab import SipLab, SipLabError
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
