"""The Settings form of the web page: checking, rewriting the shipped settings file, writing it."""

import ipaddress
import os
import stat
import tomllib
from importlib.resources import files

import pytest

from fastban import config
from fastban.web import files as web_files
from fastban.web.files import write_atomically
from fastban.web.settings_form import FormResult, check_form, page_values

SHIPPED_PATH = files("fastban") / "data" / "fastban.toml"
SHIPPED = SHIPPED_PATH.read_text(encoding="utf-8")
net = ipaddress.ip_network


def changed_lines(old, new):
    """The (old, new) pairs of lines that differ; both texts must have as many lines."""
    old_lines, new_lines = old.splitlines(), new.splitlines()
    assert len(old_lines) == len(new_lines)
    return [(a, b) for a, b in zip(old_lines, new_lines) if a != b]


def test_page_values_of_the_shipped_file():
    settings = config.load_settings(SHIPPED_PATH)
    assert page_values(settings) == {"maxretry": "10", "findtime": "1800", "bantime": "43200",
                                     "whitelist": ""}


def test_page_values_shows_hosts_as_bare_addresses():
    settings = config.load_settings(overrides={
        "whitelist": "93.188.40.10/32 10.0.0.0/8 2001:db8::1 2001:db8::/32", "maxretry": 3})
    assert page_values(settings)["whitelist"] == "93.188.40.10 10.0.0.0/8 2001:db8::1 2001:db8::/32"
    assert page_values(settings)["maxretry"] == "3"


def test_a_word_for_a_number_is_refused_on_its_field():
    result = check_form({"maxretry": "ten"}, SHIPPED)
    assert result.text is None and result.values == {}
    assert result.errors == {"maxretry": 'must be a whole number ≥ 1, got "ten"'}


def test_every_bad_field_gets_its_own_error():
    result = check_form({"maxretry": "0", "findtime": "half an hour", "bantime": "-5",
                         "whitelist": "10.0.0.1 10.0.0.300"}, SHIPPED)
    assert result.text is None
    assert set(result.errors) == {"maxretry", "findtime", "bantime", "whitelist"}
    assert "whole number" in result.errors["findtime"] and '"half an hour"' in result.errors["findtime"]
    assert result.errors["whitelist"] == '"10.0.0.300" is not an IP address or subnet'
    assert not any(message.startswith(name) for name, message in result.errors.items())


def test_a_good_value_changes_only_its_line_and_keeps_the_inline_comment():
    result = check_form({"maxretry": "7"}, SHIPPED)
    assert result.errors == {}
    assert tomllib.loads(result.text)["maxretry"] == 7
    assert changed_lines(SHIPPED, result.text) == [
        ("maxretry = 10          # number of attempts for blocking",
         "maxretry = 7          # number of attempts for blocking")]
    assert result.values == {"maxretry": 7, "findtime": 1800, "bantime": 43200, "whitelist": ()}


def test_all_page_fields_at_once():
    result = check_form({"maxretry": " 5 ", "findtime": "600", "bantime": "3600",
                         "whitelist": "93.188.40.10 10.0.0.0/8"}, SHIPPED)
    loaded = tomllib.loads(result.text)
    assert (loaded["maxretry"], loaded["findtime"], loaded["bantime"]) == (5, 600, 3600)
    assert loaded["whitelist"] == "93.188.40.10 10.0.0.0/8"
    assert len(changed_lines(SHIPPED, result.text)) == 4
    assert ('whitelist = "93.188.40.10 10.0.0.0/8"         # space-separated IPs and subnets, '
            'e.g. "93.188.40.10 10.0.0.0/8";') in result.text.splitlines()
    assert "# add the firewall's \"never block addresses from this network\" subnets" in result.text


def test_the_whitelist_round_trips_through_the_page(tmp_path):
    result = check_form({"whitelist": "93.188.40.10 10.0.0.0/8"}, SHIPPED)
    path = tmp_path / "fastban.toml"
    path.write_text(result.text)
    settings = config.load_settings(path)
    assert settings.whitelist == (net("93.188.40.10/32"), net("10.0.0.0/8"))
    assert page_values(settings)["whitelist"] == "93.188.40.10 10.0.0.0/8"
    assert check_form(page_values(settings), result.text).text == result.text


def test_a_whitelist_array_in_the_file_is_written_as_a_string():
    text = SHIPPED.replace('whitelist = ""         #', 'whitelist = ["10.0.0.1", "10.0.0.2"] #')
    assert tomllib.loads(text)["whitelist"] == ["10.0.0.1", "10.0.0.2"]
    result = check_form({"whitelist": "10.0.0.1 192.168.0.0/16"}, text)
    assert tomllib.loads(result.text)["whitelist"] == "10.0.0.1 192.168.0.0/16"
    assert changed_lines(text, result.text) == [
        ('whitelist = ["10.0.0.1", "10.0.0.2"] # space-separated IPs and subnets, '
         'e.g. "93.188.40.10 10.0.0.0/8";',
         'whitelist = "10.0.0.1 192.168.0.0/16" # space-separated IPs and subnets, '
         'e.g. "93.188.40.10 10.0.0.0/8";')]


def test_the_same_values_written_differently_leave_the_file_alone():
    text = SHIPPED.replace('whitelist = ""', 'whitelist = ["10.0.0.1/32"]')
    assert check_form({"maxretry": "010", "whitelist": "10.0.0.1"}, text).text == text


def test_a_key_absent_from_the_file_is_appended():
    text = SHIPPED.replace("bantime = 43200        # block for (seconds)\n", "")
    result = check_form({"bantime": "600"}, text)
    assert result.text == text + "bantime = 600\n"
    assert tomllib.loads(result.text)["bantime"] == 600


def test_an_unknown_field_is_refused():
    result = check_form({"maxretry": "7", "sip_ports": "5060"}, SHIPPED)
    assert result.text is None
    assert result.errors == {"_form": 'unknown field "sip_ports"'}


def test_bantime_above_bantime_max_with_increment_is_refused_on_bantime():
    text = SHIPPED.replace("bantime_increment = false", "bantime_increment = true")
    result = check_form({"bantime": "700000"}, text)
    assert result.text is None
    assert result.errors == {"bantime": "bantime_max: must be ≥ bantime (700000), got 604800"}
    assert check_form({"bantime": "700000"}, SHIPPED).errors == {}  # increment off: no cap


def test_nothing_changed_gives_the_same_text():
    for submitted in ({}, {"maxretry": "10", "findtime": "1800", "bantime": "43200",
                           "whitelist": ""}):
        result = check_form(submitted, SHIPPED)
        assert result == FormResult(SHIPPED, {}, result.values)
        assert result.text is SHIPPED


def test_a_broken_file_is_reported_on_the_form():
    not_toml = check_form({"maxretry": "7"}, SHIPPED + "\nthis is = not toml\n")
    assert not_toml.text is None and "not valid TOML" in not_toml.errors["_form"]
    bad_value = check_form({"maxretry": "7"},
                           SHIPPED.replace("bantime_factor = 2.0", "bantime_factor = 0.5"))
    assert bad_value.text is None
    assert bad_value.errors == {"_form": "the settings file: bantime_factor: must be a number ≥ 1, "
                                         "got 0.5"}
    retired = check_form({}, SHIPPED + 'never_block = "10.0.0.0/8"\n')
    assert "never_block" in retired.errors["_form"]


def test_the_form_can_fix_a_bad_page_value_of_the_file():
    text = SHIPPED.replace("maxretry = 10 ", 'maxretry = "x"')
    assert "maxretry" in check_form({}, text).errors["_form"]
    result = check_form({"maxretry": "4"}, text)
    assert result.errors == {} and tomllib.loads(result.text)["maxretry"] == 4


def test_a_file_without_a_trailing_newline():
    result = check_form({"maxretry": "3", "findtime": "60"}, "maxretry = 5")
    assert result.text == "maxretry = 3\nfindtime = 60\n"


# -- write_atomically ---------------------------------------------------------------------------

def test_write_atomically_replaces_the_content_and_keeps_the_mode(tmp_path):
    path = tmp_path / "fastban.toml"
    path.write_text(SHIPPED)
    os.chmod(path, 0o640)
    new_text = check_form({"maxretry": "7"}, SHIPPED).text
    write_atomically(path, new_text)
    assert path.read_text() == new_text
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["fastban.toml"]


def test_write_atomically_keeps_the_owner_as_root(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    path = tmp_path / "fastban.toml"
    path.write_text(SHIPPED)
    os.chown(path, 1234, 5678)
    write_atomically(path, "maxretry = 3\n")
    assert (path.stat().st_uid, path.stat().st_gid) == (1234, 5678)


def test_a_failed_write_leaves_the_original_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "fastban.toml"
    path.write_text(SHIPPED)

    def failing_fsync(descriptor):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(web_files.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        write_atomically(path, "maxretry = 3\n")
    assert path.read_text() == SHIPPED
    assert os.listdir(tmp_path) == ["fastban.toml"]


WRITE_INTO = """
import sys
from fastban.web.files import write_atomically
try:
    write_atomically(sys.argv[1], "maxretry = 3\\n")
except OSError as error:
    print(error.errno)
"""


def test_a_folder_that_cannot_be_written_leaves_the_original(tmp_path):
    """Root writes into any folder, so as root the folder is a read-only bind mount (in a
    mount namespace of its own); otherwise its mode forbids writing."""
    import errno
    import subprocess
    import sys

    path = tmp_path / "fastban.toml"
    path.write_text(SHIPPED)
    if os.geteuid() == 0:
        script = (f'mount --bind "{tmp_path}" "{tmp_path}" && '
                  f'mount -o remount,bind,ro "{tmp_path}" && '
                  f'exec "{sys.executable}" -c "$0" "{path}"')
        result = subprocess.run(["unshare", "--mount", "sh", "-c", script, WRITE_INTO],
                                capture_output=True, text=True, timeout=60)
        assert result.stdout.strip() == str(errno.EROFS), result.stderr
    else:
        os.chmod(tmp_path, 0o555)
        try:
            with pytest.raises(OSError):
                write_atomically(path, "maxretry = 3\n")
        finally:
            os.chmod(tmp_path, 0o755)
    assert path.read_text() == SHIPPED
    assert os.listdir(tmp_path) == ["fastban.toml"]


def test_a_missing_folder_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        write_atomically(tmp_path / "missing" / "fastban.toml", "maxretry = 3\n")
    assert os.listdir(tmp_path) == []
