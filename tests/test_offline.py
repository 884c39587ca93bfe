"""The commands with no guard running change nothing they were not asked to.

A real guard leaves its pinned maps on a namespace's interface with settings of its own
(a whitelist, a second SIP port, a port scope); then it stops and the commands run with other
settings or none: `list` writes nothing (maps, config, state files: read before and after),
`ban` adds just its ban, `unban` removes the ban from the maps and from the saved state so
the next start does not bring it back, also when the maps cannot be reached from the
command's mount namespace.
"""
import os
import subprocess

import pytest

from conftest import require_tool
from fastban.dataplane import DataPlane
from fastban.lab import netns
from fastban.lab.guard_process import GuardProcess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def guard(kernel, tmp_path):
    with netns.Lab() as lab:
        server = lab.namespace("srv")
        link = lab.link(server, lab.namespace("cli"), "10.241.0.1/24", "10.241.0.2/24")
        guard = GuardProcess(server, link.a, tmp_path, whitelist="10.241.0.0/28 fd00:241::/64",
                             sip_ports=[5060, 5080], ban_scope="ports", ban_ports=[5060, 5061],
                             challenge_grace=7.5)
        guard.start()
        try:
            yield guard
        finally:
            guard.detach()


def kernel_view(iface):
    dataplane = DataPlane.open_pinned(iface)
    try:
        return {"whitelisted": sorted(map(str, dataplane.whitelisted())),
                "sip_ports": dataplane.sip_ports(), "scope": dataplane.scope(),
                "config": dataplane.config_values(),
                "bans": sorted((str(ban.target), ban.expires_ns) for ban in dataplane.bans())}
    finally:
        dataplane.close()


def files(folder):
    return {path.name: (path.stat().st_mtime_ns, path.read_bytes())
            for path in sorted(folder.iterdir()) if path.name.startswith("state")}


def bare(guard, *args, config=None):
    """A command with only the interface and socket: default settings, or another file."""
    extra = ["--config", str(config)] if config else []
    return subprocess.run(guard.command(*args, "--iface", guard.iface, "--socket", guard.socket,
                                        *extra),
                          capture_output=True, text=True, timeout=60)


def test_a_stopped_guard_list_writes_nothing(guard, tmp_path):
    guard.cli("ban", "10.241.0.99", "--time", "600")
    guard.cli("ban", "198.51.100.0/24", "--time", "0")
    guard.stop()
    before, saved = kernel_view(guard.iface), files(tmp_path)
    assert before["whitelisted"] == ["10.241.0.0/28", "fd00:241::/64"]
    assert before["sip_ports"] == [5060, 5080] and before["scope"] == [5060, 5061]
    other = tmp_path / "other.toml"
    other.write_text('whitelist = ""\nsip_ports = [5060]\n')
    # (bare commands read the default state file: it is absent here, so the reasons are not
    # known to them, but the maps are)
    assert not os.path.exists("/var/lib/fastban/state.msgpack")
    for command in (bare(guard, "list"), bare(guard, "list", "--json"),
                    bare(guard, "list", config=other), guard.cli("list", "--json")):
        assert command.returncode == 0, command.stderr
        assert "10.241.0.99/32" in command.stdout and "198.51.100.0/24" in command.stdout
    assert kernel_view(guard.iface) == before
    assert files(tmp_path) == saved


def test_a_stopped_guard_ban_adds_only_its_ban(guard, tmp_path):
    guard.stop()
    before = kernel_view(guard.iface)
    other = tmp_path / "other.toml"         # the same state file, none of the kernel settings
    other.write_text(f'state_file = "{tmp_path}/state.msgpack"\n')
    banned = bare(guard, "ban", "203.0.113.7", "--time", "0", config=other)
    assert "banned 203.0.113.7" in banned.stdout, banned.stderr
    after = kernel_view(guard.iface)
    assert after["bans"] == sorted(before["bans"] + [("203.0.113.7", 0)])
    assert {k: v for k, v in after.items() if k != "bans"} == \
        {k: v for k, v in before.items() if k != "bans"}
    refused = guard.cli("ban", "10.241.0.5", check=False)        # in the guard's whitelist
    assert refused.returncode == 1 and "whitelisted" in refused.stderr
    guard.start()
    assert guard.json("list")["bans"][0]["reason"] == "banned by hand"


def test_an_offline_unban_survives_the_next_start(guard):
    guard.cli("ban", "203.0.113.8", "--time", "600")
    guard.cli("ban", "203.0.113.9", "--time", "600")
    guard.stop()
    assert guard.cli("unban", "203.0.113.8").stdout.strip() == "unbanned 203.0.113.8"
    assert ("203.0.113.8", ) not in [b[:1] for b in kernel_view(guard.iface)["bans"]]
    guard.start()
    assert [row["target"] for row in guard.json("list")["bans"]] == ["203.0.113.9/32"]


def test_an_offline_unban_that_cannot_reach_the_maps_changes_the_saved_state(guard):
    """From another mount namespace (an empty bpffs) the pinned maps are not there: the
    saved state is changed, the message says so, and the next start lifts the ban."""
    require_tool("unshare")
    guard.cli("ban", "203.0.113.10", "--time", "600")
    guard.stop()
    command = guard.command("unban", "203.0.113.10", "--config", str(guard.config),
                            "--iface", guard.iface)
    script = "mount -t bpf bpf /sys/fs/bpf && exec " + " ".join(command)
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("unbanned 203.0.113.10 (from the saved state only: the "
                                   "kernel maps were not found)")
    assert "no fastban maps pinned" in done.stderr
    assert [b[0] for b in kernel_view(guard.iface)["bans"]] == ["203.0.113.10"]
    guard.start()
    assert guard.json("list")["bans"] == []
    assert kernel_view(guard.iface)["bans"] == []
    assert "lifted by hand while no guard ran" in guard.log()


def test_commands_read_the_service_settings_file_by_default(guard, tmp_path):
    """With no --config, /etc/fastban/fastban.toml (here in a private mount namespace with an
    overlay on /etc, so the host's /etc is untouched) is what the service and the commands
    read: its whitelist refuses the ban."""
    require_tool("unshare")
    guard.stop()
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    (upper / "fastban").mkdir()
    (upper / "fastban" / "fastban.toml").write_text(
        f'whitelist = "203.0.113.0/24"\nstate_file = "{tmp_path}/state.msgpack"\n')
    command = guard.command("ban", "203.0.113.11", "--iface", guard.iface)
    script = (f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc"
              " && exec " + " ".join(command))
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 1 and "203.0.113.11/32 is whitelisted (203.0.113.0/24)" in \
        done.stderr, done.stderr
    assert not os.path.exists("/etc/fastban/fastban.toml") or \
        "203.0.113.0/24" not in open("/etc/fastban/fastban.toml").read()


def test_list_through_the_running_guard_streams_every_row(guard):
    """More bans than one message of the control protocol holds rows: the listing comes in
    chunks, and the JSON is whole."""
    import ipaddress
    import json as jsonlib
    guard.stop()
    dataplane = DataPlane.open_pinned(guard.iface)
    try:
        for n in range(25_000):
            dataplane.ban(ipaddress.IPv4Address(0xC6120000 + n))      # 198.18.0.0/15
    finally:
        dataplane.close()
    guard.start()
    listed = guard.cli("list", "--json")
    rows = jsonlib.loads(listed.stdout)["bans"]
    assert len(rows) == 25_000 and rows[0]["target"] == "198.18.0.0/32"
    assert rows[-1]["target"] == str(ipaddress.IPv4Address(0xC6120000 + 24_999)) + "/32"
    text = guard.cli("list").stdout.splitlines()
    assert len(text) == 25_001 and text[0].startswith("ADDRESS")
