"""bpf/abi.h is the one source of the kernel ABI: user space reads it, and refuses to run
programs that lay it out otherwise."""
import ctypes as ct
import os
import re
import shutil

import pytest

from fastban import abi
from fastban.abi import ABI, AbiError

HEADER = """
/* a comment */
#ifndef X
#define X
#define FB_A 4      /* trailing comment */
#define FB_B (FB_A * 2 + 1)
#define FB_C 0x10ULL
#define FB_D (1 << FB_A | FB_C)
struct fb_inner { __u16 port; __u8 pad[FB_A - 2]; };
struct fb_outer {
    __u64 when;     // C++ comment
    struct fb_inner inner[2];
    __be32 addr;
};
#endif
"""


def test_the_reader_takes_defines_and_structs():
    constants, structs = abi.parse(HEADER, "test.h")
    assert constants == {"FB_A": 4, "FB_B": 9, "FB_C": 16, "FB_D": 16}
    outer = structs["fb_outer"]
    assert [name for name, _ in outer._fields_] == ["when", "inner", "addr"]
    assert ct.sizeof(structs["fb_inner"]) == 4 and outer.addr.offset == 16
    assert ct.sizeof(outer) == 24                       # padded to its u64 like C does


@pytest.mark.parametrize("line, error", [
    ("int counter;", "test.h:2: cannot read 'int counter;'"),
    ("#define FB_X (FB_NOPE + 1)", "test.h:2: cannot evaluate 'FB_NOPE'"),
    ("#define FB_X \"text\"", "test.h:2: cannot evaluate"),
    ("struct fb_bad { float x; };", "struct fb_bad: unknown type 'float'"),
    ("struct fb_bad { __u8 x : 3; };", "struct fb_bad: cannot read '__u8 x : 3'"),
])
def test_anything_else_is_one_line_naming_it(line, error):
    with pytest.raises(AbiError) as raised:
        abi.parse("#define FB_OK 1\n" + line + "\n", "test.h")
    assert error in str(raised.value) and "\n" not in str(raised.value)


def test_the_real_header_gives_every_layout_user_space_uses():
    meta = ABI.struct("fb_capture_meta")
    assert ct.sizeof(meta) == 72 and meta.payload_len.offset == 48
    assert ct.sizeof(ABI.struct("fb_scan_table")) == ABI["FB_SCAN_STATES"] * 512 + 256
    assert set(ABI.pinned) == {"counters", "config", "bans_v4", "bans_v6", "ranges_v4",
                               "ranges_v6", "whitelist_v4", "whitelist_v6", "scope_ports",
                               "sip_ports", "challenged", "open_calls", "trusted_v4",
                               "trusted_v6", "rate_limit",
                               "admission", "armed"}
    assert ct.sizeof(ABI.struct("fb_admission")) == 8
    assert ct.sizeof(ABI.struct("fb_armed")) == 56
    assert ABI.maps["config"].entries == ABI["FB_CFG_MAX"]
    assert ABI.maps["bans_v4"].entries is None           # the DataPlane's capacity
    assert ABI.group("FB_ROLE_") == {"responses": 1, "requests": 2}
    with pytest.raises(AbiError):
        ABI["FB_NO_SUCH_THING"]


def test_a_map_sized_otherwise_than_the_header_is_refused(kernel, tmp_path, monkeypatch):
    """FB_CFG_MAX shrunk in a scratch copy the programs are compiled from: the config map
    they declare no longer holds the indexes user space writes."""
    from fastban.dataplane import DataPlane, DataPlaneError, program
    from fastban.lab import netns
    scratch = tmp_path / "bpf"
    shutil.copytree(abi.bpf_dir(), scratch)
    header = scratch / "abi.h"
    header.write_text(re.sub(r"#define FB_CFG_MAX +\d+", "#define FB_CFG_MAX 8",
                             header.read_text()))
    original = program.program_source
    monkeypatch.setattr(program, "program_source", lambda directory=None: original(scratch))
    root = f"/sys/fs/bpf/fastban-abi-size-{os.getpid()}"
    try:
        with netns.Lab() as lab:
            with lab.namespace("abi").entered(), pytest.raises(DataPlaneError) as raised:
                DataPlane("lo", capture="none", pin_root=root)
        declared = ABI["FB_CFG_MAX"]
        assert f"disagree on map config: 8 entries compiled, {declared} declared" \
            in str(raised.value)
    finally:
        program.remove_pins(f"{root}/lo")
        if os.path.isdir(root):
            os.rmdir(root)


def test_what_python_reads_follows_the_header(tmp_path):
    """A change made in a scratch copy of bpf/ is what user space then reads: there is no
    second copy of a layout or constant in Python to disagree with it."""
    scratch = tmp_path / "bpf"
    shutil.copytree(abi.bpf_dir(), scratch)
    header = scratch / "abi.h"
    text = header.read_text()
    changed = text.replace("#define FB_SCAN_MAX             2048",
                           "#define FB_SCAN_MAX             1024").replace(
        "    __u16 sport;            /* host order */", "    __u32 sport;")
    assert changed != text
    header.write_text(changed)
    copy = abi.load(scratch)
    assert copy["FB_SCAN_MAX"] == 1024 and ABI["FB_SCAN_MAX"] == 2048
    assert copy.struct("fb_capture_meta").dport.offset == \
        ABI.struct("fb_capture_meta").dport.offset + 2


def test_a_program_laid_out_otherwise_than_the_header_is_refused(kernel, tmp_path,
                                                                monkeypatch):
    """The programs compiled from a scratch copy whose struct fb_peer_state grew a field, while
    user space reads the real header: the DataPlane refuses to start, in one line."""
    from fastban.dataplane import DataPlaneError, program
    from fastban.lab import netns
    scratch = tmp_path / "bpf"
    shutil.copytree(abi.bpf_dir(), scratch)
    header = scratch / "abi.h"
    header.write_text(header.read_text().replace(
        "    __u64 any_call_ns;", "    __u64 any_call_ns;\n    __u64 added;", 1))
    original = program.program_source
    monkeypatch.setattr(program, "program_source", lambda directory=None: original(scratch))
    root = f"/sys/fs/bpf/fastban-abi-{os.getpid()}"
    try:
        with netns.Lab() as lab:
            ns = lab.namespace("abi")
            with ns.entered(), pytest.raises(DataPlaneError) as raised:
                from fastban.dataplane import DataPlane
                DataPlane("lo", capture="none", pin_root=root)
        message = str(raised.value)
        assert "\n" not in message
        assert "disagree on map challenged value: 24 bytes compiled, 16 declared" in message
    finally:
        program.remove_pins(f"{root}/lo")
        if os.path.isdir(root):
            os.rmdir(root)


def test_the_compiled_programs_agree_with_the_header(kernel):
    """What DataPlane checks at every start, here on its own: every map's key and value and
    the capture's record, field by field."""
    from bcc import BPF
    from fastban.dataplane import program
    root = f"/sys/fs/bpf/fastban-abi-ok-{os.getpid()}"
    os.makedirs(f"{root}/x")
    try:
        bpf = BPF(text=program.program_source().encode(),
                  cflags=[f'-DFB_PIN_DIR="{root}/x"', "-w"])
        abi.verify_compiled(ABI, bpf)
        assert ct.sizeof(bpf[b"meta_layout"].Leaf) == ct.sizeof(ABI.struct("fb_capture_meta"))
        bpf.cleanup()
    finally:
        program.remove_pins(f"{root}/x")
        os.rmdir(root)


def test_a_capture_record_with_its_fields_reordered_is_refused(tmp_path):
    """decode_capture unpacks the record in abi.h's field order: a scratch header that swaps
    two fields of the same size is refused (at import, for the real header) rather than read
    as the other field."""
    from fastban.dataplane.capture import check_record_fields
    check_record_fields(ABI.struct("fb_capture_meta"), ABI.source)
    scratch = tmp_path / "bpf"
    shutil.copytree(abi.bpf_dir(), scratch)
    header = scratch / "abi.h"
    text = header.read_text()
    swapped = text.replace("    __u16 sport;", "    __u16 @@;").replace(
        "    __u16 dport;", "    __u16 sport;").replace("    __u16 @@;", "    __u16 dport;")
    assert swapped != text
    header.write_text(swapped)
    with pytest.raises(AbiError) as raised:
        check_record_fields(abi.load(scratch).struct("fb_capture_meta"), "scratch")
    assert "\n" not in str(raised.value) and "fb_capture_meta" in str(raised.value)
