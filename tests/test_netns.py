import subprocess

import pytest

from fastban.lab import netns


@pytest.fixture
def lab(kernel):
    with netns.Lab() as lab:
        yield lab


def test_two_namespaces_reach_each_other_over_v4_and_v6(lab):
    server, client = lab.namespace("srv"), lab.namespace("cli")
    link = lab.link(server, client, "10.201.0.1/24", "10.201.0.2/24",
                    "fd00:201::1/64", "fd00:201::2/64")
    client.run(["ping", "-c1", "-W2", link.ip_a(4)])
    client.run(["ping", "-c1", "-W2", link.ip_a(6)])


def _interfaces() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def test_entered_switches_the_thread_and_returns(lab):
    server = lab.namespace("srv")
    link = lab.link(server, lab.namespace("cli"), "10.202.0.1/24", "10.202.0.2/24")
    before = _interfaces()
    with server.entered():
        inside = _interfaces()
    after = _interfaces()
    assert inside == {"lo", link.a}            # the server's namespace: its loopback and veth
    assert after == before                     # back in the host's namespace
    assert link.a not in after and link.b not in after


def test_close_removes_everything_even_after_a_failure(kernel):
    with pytest.raises(RuntimeError):
        with netns.Lab() as lab:
            ns = lab.namespace("srv")
            lab.link(ns, None, "10.203.0.1/24", "10.203.0.2/24")
            host_end = lab.host_links[0]
            raise RuntimeError("test body failed")
    assert ns.name not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                         text=True).stdout
    assert subprocess.run(["ip", "link", "show", host_end], capture_output=True).returncode != 0
