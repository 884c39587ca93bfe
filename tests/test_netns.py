import subprocess

import pytest

from fastban import netns


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


def test_entered_switches_the_thread_and_returns(lab):
    server = lab.namespace("srv")
    lab.link(server, lab.namespace("cli"), "10.202.0.1/24", "10.202.0.2/24")
    with server.entered():
        inside = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    outside = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert server.name not in outside
    assert "fb" in inside and inside != outside


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
