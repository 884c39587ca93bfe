"""What reading a captured record costs user space: the perf buffer of before (BCC's
perf_buffer_poll, a ctypes callback per record, ct.string_at, decode_capture) against the ring
buffer read in place (fastban.dataplane.ring: the compiled reader, and the pure one).

A small TC program, run with BPF_PROG_TEST_RUN over the controller rig's 403 frames
(benchmarks/controller_rate.write_frames), writes each record to both a perf buffer and a ring
buffer: the same bytes (struct fb_capture_meta of the frame, then the frame) in both. Each
trial fills both with `count` records, then drains one and the other, alternating which goes
first; the figure is the wall time of the drain divided by the records it delivered, median of
the trials. The process is pinned to one CPU (the perf buffer's records then are in one ring).

    .venv/bin/python -m benchmarks.ring_cost [--quick]
"""

from __future__ import annotations

import argparse
import ctypes as ct
import os
import struct
import tempfile
import time
from pathlib import Path

from benchmarks.bpfsys import prog_test_run
from benchmarks.common import machine, median, save_json
from benchmarks.controller_rate import write_frames
from fastban.abi import ABI
from fastban.dataplane import FbCaptureMeta, decode_capture, ring
from fastban.dataplane.capture import DECODING
from fastban.dataplane.maps import import_bcc, lib

PAGES = 8192                # 32 MiB, for the perf buffer (per CPU) and the ring alike: holds
                            # the 50,000 records of a trial (~400 bytes each)
FRAMES_USED = 500           # distinct frames, each run `count / FRAMES_USED` times

PROGRAM = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include "abi.h"

BPF_PERF_OUTPUT(perf_records);
BPF_RINGBUF_OUTPUT(ring_records, PAGES);
BPF_ARRAY(meta_in, struct fb_capture_meta, 1);
struct record {
    struct fb_capture_meta meta;
    __u8 bytes[FB_CAPTURE_MAX];
};
BPF_PERCPU_ARRAY(scratch, struct record, 1);

int both(struct __sk_buff *skb)
{
    __u32 zero = 0;
    struct fb_capture_meta *meta = meta_in.lookup(&zero);
    struct record *r = scratch.lookup(&zero);
    if (!meta || !r)
        return TC_ACT_OK;
    __u32 len = meta->cap_len;
    __asm__ __volatile__("" : "+r"(len));
    len = ((len - 1) & (FB_CAPTURE_MAX - 1)) + 1;
    perf_records.perf_submit_skb(skb, len, meta, sizeof(*meta));
    __builtin_memcpy(&r->meta, meta, sizeof(*meta));
    if (bpf_skb_load_bytes(skb, 0, r->bytes, len) == 0)
        ring_records.ringbuf_output(r, sizeof(r->meta) + len, 0);
    return TC_ACT_OK;
}
"""


def _frames() -> list[bytes]:
    with tempfile.TemporaryDirectory(prefix="fbring-") as workdir:
        path = Path(workdir) / "f"
        write_frames(path, b"\2" * 6, b"\4" * 6)
        data, frames, offset = path.read_bytes(), [], 0
        while offset < len(data) and len(frames) < FRAMES_USED:
            (length,) = struct.unpack_from("<H", data, offset)
            frames.append(data[offset + 2:offset + 2 + length])
            offset += 2 + length
    return frames


def _meta(frame: bytes) -> FbCaptureMeta:
    meta = FbCaptureMeta(ktime_ns=1, sport=5060, dport=5060, status=403, payload_off=42,
                         payload_len=len(frame) - 42, cap_len=len(frame), family=4,
                         protocol=17, kind=1, reason=1)
    ct.memmove(meta.saddr, frame[26:30], 4)
    ct.memmove(meta.daddr, frame[30:34], 4)
    return meta


class Rig:
    def __init__(self):
        bcc = import_bcc()
        self.bpf = bcc.BPF(text=PROGRAM.encode(), cflags=[
            f"-I{Path(ABI.source).parent}", f"-DPAGES={PAGES}", "-w"])
        self.prog = self.bpf.load_func(b"both", bcc.BPF.SCHED_CLS)
        self.meta_fd = self.bpf[b"meta_in"].map_fd
        self.perf_got: list = []

        def on_event(cpu, data, size):          # what Capture._on_event did, less its guard
            packet = decode_capture(ct.string_at(data, size))
            if packet is not None:
                self.perf_got.append(packet)
        self.bpf[b"perf_records"].open_perf_buffer(on_event, page_cnt=PAGES)
        table = self.bpf[b"ring_records"]
        self.size = table.max_entries
        self.maps = ring.map_ring(table.map_fd, self.size)
        compiled = ring.compiled_reader()
        self.readers = {"ring_pure": ring.PureRingReader(*self.maps, self.size, decode_capture)}
        if compiled is not None:
            self.readers["ring_compiled"] = compiled.RingReader(*self.maps, self.size,
                                                                ring.PAGE_SIZE, DECODING)

    def fill(self, frames: list[bytes], count: int) -> None:
        repeat = max(1, count // len(frames))
        for frame in frames:
            meta = _meta(frame)
            lib().bpf_update_elem(self.meta_fd, ct.byref(ct.c_uint32(0)), ct.byref(meta), 0)
            prog_test_run(self.prog.fd, frame, repeat=repeat)

    def drain_perf(self) -> tuple[int, float]:
        self.perf_got.clear()
        t0 = time.perf_counter()
        self.bpf.perf_buffer_poll(0)
        elapsed = time.perf_counter() - t0
        return len(self.perf_got), elapsed

    def drain_ring(self, name: str) -> tuple[int, float, list]:
        out: list = []
        t0 = time.perf_counter()
        self.readers[name].drain(out)
        return len(out), time.perf_counter() - t0, out


def run(count: int, trials: int) -> dict:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    frames, rig = _frames(), Rig()
    costs: dict[str, list[float]] = {"perf_callback": [], **{name: [] for name in rig.readers}}
    names = list(rig.readers)
    delivered = {}
    for trial in range(trials):
        ring_name = names[trial % len(names)]
        rig.fill(frames, count)
        order = ["perf", ring_name] if trial % 2 == 0 else [ring_name, "perf"]
        for which in order:
            if which == "perf":
                n, elapsed = rig.drain_perf()
                costs["perf_callback"].append(elapsed / n * 1e6)
                delivered["perf_callback"] = n
                perf_packets = list(rig.perf_got)
            else:
                n, elapsed, ring_packets = rig.drain_ring(which)
                costs[which].append(elapsed / n * 1e6)
                delivered[which] = n
        assert ring_packets == perf_packets, "the two buffers delivered different packets"
    result = {name: round(median(values), 3) for name, values in costs.items() if values}
    return {"machine": machine(), "records_per_drain": delivered, "trials": trials,
            "us_per_record": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = run(count=20_000 if args.quick else 50_000, trials=6 if args.quick else 12)
    save_json("ring_cost", result)
    print(result["records_per_drain"], result["us_per_record"])


if __name__ == "__main__":
    main()
