"""The operator's commands fail with one line that says what to do, and the right exit code."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import require_tool
from fastban.admin import print_bans

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fastban(*args, user=None, tmp_path=None):
    command = [sys.executable, "-m", "fastban", *args]
    if user:
        command = ["runuser", "-u", user, "--", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert "Traceback" not in result.stderr
    return result


def test_a_bad_setting_names_it_and_exits_2(tmp_path):
    result = fastban("run", "--iface", "lo", "--maxretry", "ten")
    assert result.returncode == 2
    assert result.stderr.strip() == 'fastban: maxretry: must be a whole number ≥ 1, got "ten"'


def test_a_bad_config_file_names_the_setting(tmp_path):
    config = tmp_path / "fastban.toml"
    config.write_text('whitelist = "10.0.0.1 not-an-address"\n')
    result = fastban("list", "--config", str(config))
    assert result.returncode == 2 and "whitelist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_no_guard_running_for_stats(tmp_path):
    result = fastban("stats", "--socket", str(tmp_path / "none.sock"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"fastban: no guard is listening on {tmp_path}/none.sock"


def test_unknown_interface(kernel, tmp_path):
    result = fastban("run", "--iface", "fbnosuch0", "--state-file", str(tmp_path / "s"),
                     "--socket", str(tmp_path / "c.sock"))
    assert result.returncode == 1
    assert result.stderr.strip() == "fastban: no network interface named 'fbnosuch0' (see `ip link`)"


def test_list_on_an_interface_never_guarded(kernel, tmp_path):
    result = fastban("list", "--iface", "fbnosuch0", "--socket", str(tmp_path / "c.sock"))
    assert result.returncode == 1 and "none has left bans on fbnosuch0" in result.stderr


def test_without_root_says_so(kernel, tmp_path):
    if shutil.which("runuser") is None:
        pytest.skip("runuser is missing")
    os.chmod(tmp_path, 0o777)
    result = fastban("run", "--iface", "lo", "--state-file", str(tmp_path / "s"),
                     "--socket", str(tmp_path / "c.sock"), user="nobody")
    assert result.returncode == 1
    assert "needs root" in result.stderr and "sudo" in result.stderr


def test_unban_needs_a_target_or_all():
    result = fastban("unban")
    assert result.returncode == 2 and "target" in result.stderr.lower()


def test_list_table_format(capsys):
    rows = [{"target": "203.0.113.9/32", "reason": "10 failures in 412 s: 10×403",
             "failures": 10, "banned_at": 1764460800.0, "expires_at": 1764504000.0,
             "time_left": 3725.0, "packets_dropped": 1234, "origin": "sip",
             "failure_class": "unproven"},
            {"target": "2001:db8::/64", "reason": "banned by hand", "failures": 0,
             "banned_at": None, "expires_at": 0.0, "time_left": None, "packets_dropped": 0,
             "origin": "hand", "failure_class": ""}]
    print_bans(iter(rows), as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ADDRESS", "BANNED", "AT", "TIME", "LEFT", "DROPPED",
                                "FAILURES", "ORIGIN", "REASON"]
    assert lines[1].split()[:6] == ["203.0.113.9/32", "2025-11-30T00:00:00Z", "1h02m", "1234",
                                    "10", "sip"]
    assert lines[1].endswith("10 failures in 412 s: 10×403")
    assert lines[2].split()[:6] == ["2001:db8::/64", "-", "permanent", "0", "0", "hand"]
    print_bans(iter([]), as_json=False)
    assert capsys.readouterr().out == "no addresses are blocked\n"
    print_bans(iter(rows), as_json=True)
    assert json.loads(capsys.readouterr().out) == {"bans": rows}
    print_bans(iter([]), as_json=True)
    assert json.loads(capsys.readouterr().out) == {"bans": []}


def test_missing_kernel_headers_say_what_to_run(kernel, tmp_path):
    """In a private mount namespace /lib/modules is an empty tmpfs: no headers for BCC."""
    require_tool("unshare")
    if os.path.exists("/sys/kernel/kheaders.tar.xz"):
        pytest.skip("this kernel carries its own headers (kheaders), so none can be missing")
    script = (f"mount -t tmpfs none /lib/modules && exec {sys.executable} -m fastban run "
              f"--iface lo --state-file {tmp_path}/s --socket {tmp_path}/c.sock")
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                            text=True, timeout=60, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    release = os.uname().release
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"fastban: no kernel headers for {release} at "
                                     f"/lib/modules/{release}/build: run `make host`")


_WITHOUT = """\
import runpy, sys
blocked = set(sys.argv[1].split(","))
class Without:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Without())
sys.argv = ["fastban", *sys.argv[2:]]
runpy.run_module("fastban", run_name="__main__")
"""


def fastban_without(tmp_path, modules, *args):
    """`fastban ARGS` in a Python where the given modules cannot be imported."""
    script = tmp_path / "without.py"
    script.write_text(_WITHOUT)
    result = subprocess.run([sys.executable, str(script), modules, *args], capture_output=True,
                            text=True, timeout=60, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert "Traceback" not in result.stderr
    return result


@pytest.mark.parametrize("modules, args, line", [
    ("msgpack", ["stats"],
     "fastban: the Python module 'msgpack' is missing: make setup (pip: msgpack)"),
    ("scapy", ["replay", "tests/data/guess401.pcap"],
     "fastban replay: the Python module 'scapy' is missing: make setup (pip: scapy)"),
    ("bcc", ["run", "--iface", "lo", "--state-file", "{tmp}/state.msgpack",
             "--socket", "{tmp}/control.sock"],
     "fastban: BCC is not importable: install Debian's python3-bpfcc (run `make host`), "
     "not the PyPI package 'bcc'"),
])
def test_a_missing_module_is_named_in_one_line(tmp_path, modules, args, line):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = fastban_without(tmp_path, modules, *args)
    assert result.returncode == 1
    assert result.stderr.strip() == line


def test_every_command_is_offered_without_bcc(tmp_path):
    result = fastban_without(tmp_path, "bcc", "--help")
    assert result.returncode == 0
    for command in ("run", "list", "ban", "unban", "detach", "stats", "replay"):
        assert f"    {command} " in result.stdout, command
