"""The capture's ring buffer and its readers (fastban.dataplane.ring, fastban._ringreader).

On a ring laid out in plain memory: the protocol (discarded, busy, malformed records, the wrap
around the end) and the compiled reader against the pure one. On the real kernel: records
arrive complete and in order, a burst drains in one poll, a full ring counts its losses and
recovers, a lone record wakes the reader, and both readers decode the kernel's records alike.
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import mmap
import os
import random
import socket
import struct
import time

import pytest

from fastban.dataplane import DataPlane, FbCaptureMeta, decode_capture, ring
from fastban.dataplane.capture import DECODING
from fastban.lab import netns

IP = ipaddress.ip_address
SRV4, CLI4 = "10.213.0.1", "10.213.0.2"
SRV6, CLI6 = "fd00:213::1", "fd00:213::2"


def _compiled():
    return pytest.importorskip("fastban._ringreader", reason="the compiled reader is not built")


# ---- a ring in plain memory ----

class MemoryRing:
    """A ring buffer laid out as the kernel maps it, written by the test as the kernel would."""

    def __init__(self, size: int = 1 << 16):
        self.size = size
        self.consumer = mmap.mmap(-1, ring.PAGE_SIZE)
        self.data = mmap.mmap(-1, ring.PAGE_SIZE + 2 * size)
        self.producer = 0

    def write(self, sample: bytes, header_bits: int = 0) -> None:
        header = struct.pack("<II", len(sample) | header_bits, 0)
        record = header + sample + b"\0" * (-len(sample) % 8)
        at = self.producer & (self.size - 1)
        for base in (ring.PAGE_SIZE + at, ring.PAGE_SIZE + at + self.size):
            end = min(base + len(record), len(self.data))
            self.data[base:end] = record[:end - base]
        if at + len(record) > self.size:           # the wrap: its tail at the data's start
            tail = record[self.size - at:]
            self.data[ring.PAGE_SIZE:ring.PAGE_SIZE + len(tail)] = tail
        self.producer += len(record)
        struct.pack_into("<Q", self.data, 0, self.producer)

    def set_header(self, position: int, value: int) -> None:
        at = position & (self.size - 1)
        for base in (ring.PAGE_SIZE + at, ring.PAGE_SIZE + at + self.size):
            struct.pack_into("<I", self.data, base, value)

    @property
    def consumed(self) -> int:
        return struct.unpack_from("<Q", self.consumer, 0)[0]

    def rewind(self, position: int) -> None:
        struct.pack_into("<Q", self.consumer, 0, position)


def _record(index: int, family: int = 4, payload: bytes | None = None, **fields) -> bytes:
    """struct fb_capture_meta + a frame whose payload names index."""
    payload = payload if payload is not None else f"SIP/2.0 403 Forbidden #{index}\r\n".encode()
    header = b"\x45" + b"\0" * 27 if family == 4 else b"\x60" + b"\0" * 47
    frame = b"\2" * 14 + header + payload
    meta = FbCaptureMeta(ktime_ns=1000 + index, sport=5060, dport=5062, status=403,
                         payload_off=len(frame) - len(payload), payload_len=len(payload),
                         cap_len=len(frame), family=family, protocol=17, kind=1, reason=1,
                         tcp_seq=index)
    for name, value in fields.items():
        setattr(meta, name, value)
    source = bytes([10, 0, index >> 8 & 0xFF, index & 0xFF]) if family == 4 else \
        bytes([0xFD, 0] + [0] * 12 + [index >> 8 & 0xFF, index & 0xFF])
    ct.memmove(meta.saddr, source, len(source))
    ct.memmove(meta.daddr, source[::-1], len(source))
    return bytes(meta) + frame


def _reader(kind: str, memory: MemoryRing):
    """The pure or the compiled reader (whatever FASTBAN_PURE_PYTHON says) of memory."""
    if kind == "pure":
        return ring.PureRingReader(memory.consumer, memory.data, memory.size, decode_capture)
    return _compiled().RingReader(memory.consumer, memory.data, memory.size, ring.PAGE_SIZE,
                                  DECODING)


@pytest.mark.parametrize("kind", ["pure", "compiled"])
def test_a_reader_skips_discarded_stops_at_busy_and_counts_malformed(kind):
    memory = MemoryRing()
    reader = _reader(kind, memory)
    memory.write(_record(1))
    memory.write(_record(2), ring.DISCARD_BIT)
    memory.write(b"short")                             # shorter than the meta: malformed
    memory.write(_record(3))
    busy_at = memory.producer
    memory.write(_record(4), ring.BUSY_BIT)
    memory.write(_record(5))
    out = []
    assert reader.drain(out) == 2
    assert [p.tcp_seq for p in out] == [1, 3] and reader.malformed == 1
    assert memory.consumed == busy_at                  # the busy record is read next time
    memory.set_header(busy_at, len(_record(4)))        # committed
    out.clear()
    assert reader.drain(out) == 2 and [p.tcp_seq for p in out] == [4, 5]
    assert memory.consumed == memory.producer
    assert reader.drain(out) == 0


@pytest.mark.parametrize("kind", ["pure", "compiled"])
def test_a_reader_reads_records_across_the_end_of_the_ring_in_order(kind):
    memory = MemoryRing(size=1 << 12)
    reader, seen = _reader(kind, memory), []
    for batch in range(40):                            # ~10 times round the 4 KiB ring
        for index in range(batch * 3, batch * 3 + 3):
            memory.write(_record(index, payload=b"x" * (index * 7 % 200)))
        out = []
        reader.drain(out)
        seen += out
    assert [p.tcp_seq for p in seen] == list(range(120))
    assert all(p.payload == b"x" * (p.tcp_seq * 7 % 200) for p in seen)
    assert reader.malformed == 0


def test_the_compiled_reader_decodes_as_decode_capture_does():
    rng = random.Random(7)
    records = []
    for index in range(300):
        fields = {"direction": rng.choice([0, 1]), "kind": rng.choice([0, 1, 2, 3, 9]),
                  "reason": rng.randrange(0, 8), "flags": rng.randrange(0, 32),
                  "protocol": rng.choice([6, 17, 99]), "status": rng.choice([0, 200, 401]),
                  "payload_len": rng.choice([0, 5, 40, 5000])}
        record = _record(index, family=rng.choice([4, 6]), **fields)
        if rng.random() < 0.2:                         # a payload_off or cap_len past the copy
            record = _record(index, payload_off=rng.randrange(0, 200),
                             cap_len=rng.randrange(0, 300), **fields)
        records.append(record)
    memory = MemoryRing(size=1 << 20)
    for record in records:
        memory.write(record)
    pure, compiled = _reader("pure", memory), _reader("compiled", memory)
    expected, got = [], []
    pure.drain(expected)
    memory.rewind(0)
    compiled.drain(got)
    assert expected == [decode_capture(record) for record in records]
    assert got == expected


def test_the_compiled_reader_was_built_with_the_meta_of_abi_h():
    ring.check_compiled_layout(_compiled(), FbCaptureMeta)


# ---- the real kernel ----

def _message(index: int) -> bytes:
    return (f"SIP/2.0 403 Forbidden\r\nCall-ID: ring-{index:07d}\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


class Rig:
    def __init__(self, lab: netns.Lab, pin_root: str):
        self.srv = lab.namespace("srv")
        self.cli = lab.namespace("cli")
        self.link = lab.link(self.srv, self.cli, f"{SRV4}/24", f"{CLI4}/24",
                             f"{SRV6}/64", f"{CLI6}/64")
        with self.srv.entered():
            self.dp = DataPlane(self.link.a, capture="egress", pin_root=pin_root)
            self.dp.attach()
            self.sock4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.sock4.bind((SRV4, 5060))
        self.sock6.bind((SRV6, 5060))
        self.packets: list = []
        self.batches: list[int] = []
        self.dp.on_capture(self.packets.append)
        self.dp.on_capture_batch(lambda batch: self.batches.append(len(batch)))

    def send(self, count: int, family: int = 4, start: int = 0) -> list[bytes]:
        sock, client = (self.sock4, CLI4) if family == 4 else (self.sock6, CLI6)
        messages = [_message(i) for i in range(start, start + count)]
        for message in messages:
            sock.sendto(message, (client, 5062))
        return messages

    def collect(self, count: int, timeout: float = 5.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.packets) < count and time.monotonic() < deadline:
            self.dp.poll(50)
        got = list(self.packets)
        self.packets.clear()
        self.batches.clear()
        return got


@pytest.fixture(scope="module")
def rig(kernel):
    pin_root = f"/sys/fs/bpf/fastban-test-ring-{os.getpid()}"
    with netns.Lab() as lab:
        rig = Rig(lab, pin_root)
        try:
            yield rig
        finally:
            with rig.srv.entered():
                rig.dp.detach()
            rig.dp.close()
            rig.sock4.close()
            rig.sock6.close()
            if os.path.isdir(pin_root):
                os.rmdir(pin_root)


@pytest.fixture
def quiet(rig):
    """The ring drained and nothing collected."""
    rig.dp.poll(0)
    rig.collect(0)
    return rig


@pytest.mark.parametrize("family", [4, 6])
def test_kernel_records_arrive_complete_and_in_order(quiet, family):
    messages = quiet.send(500, family)
    got = quiet.collect(500)
    assert [p.payload for p in got] == messages
    client = IP(CLI4 if family == 4 else CLI6)
    assert all(p.dst == client and p.status == 403 and p.dport == 5062 for p in got)
    header = 14 + (20 if family == 4 else 40) + 8      # Ethernet, IP, UDP
    assert all(p.packet[header:] == p.payload and p.payload_len == len(p.payload) for p in got)
    assert [p.ktime_ns for p in got] == sorted(p.ktime_ns for p in got)


def test_a_burst_drains_in_one_poll(quiet):
    messages = quiet.send(3000)
    time.sleep(0.3)                                    # all in the ring before the poll
    quiet.dp.poll(100)
    assert quiet.batches == [3000]
    assert [p.payload for p in quiet.collect(0)] == messages


def test_a_lone_record_wakes_the_reader_at_once(quiet):
    quiet.send(1)
    started = time.monotonic()
    quiet.dp.poll(2000)
    waited = time.monotonic() - started
    assert len(quiet.collect(0)) == 1
    assert waited < 0.2, f"the poll waited {waited:.3f} s for a lone record"


def test_a_full_ring_counts_what_it_lost_and_the_reader_recovers(quiet):
    dp = quiet.dp
    before = dp.counters()
    record = 8 + ct.sizeof(FbCaptureMeta) + 14 + 20 + 8 + len(_message(0))
    sent = 2 * dp.capture_pages * ring.PAGE_SIZE // record
    messages = quiet.send(sent)                        # no poll meanwhile: the ring fills
    got = quiet.collect(sent, timeout=3.0)
    after = dp.counters()
    failed = after["capture_failed"] - before["capture_failed"]
    assert failed > 0
    assert after["captured"] - before["captured"] == len(got) == sent - failed
    assert after["capture_lost"] - before["capture_lost"] == failed
    assert [p.payload for p in got] == messages[:len(got)]
    again = quiet.send(20, start=sent)
    assert [p.payload for p in quiet.collect(20)] == again
    assert dp.counters()["capture_failed"] == after["capture_failed"]


def test_both_readers_decode_the_kernels_records_alike(quiet):
    compiled = _compiled()
    table = quiet.dp.bpf[b"captures"]
    consumer, data = ring.map_ring(table.map_fd, table.max_entries)
    try:
        start = struct.unpack_from("<Q", consumer, 0)[0]
        quiet.send(200, 4)
        quiet.send(200, 6, start=200)
        time.sleep(0.3)
        first, second = [], []
        compiled.RingReader(consumer, data, table.max_entries, ring.PAGE_SIZE,
                            DECODING).drain(first)
        struct.pack_into("<Q", consumer, 0, start)      # nothing is written meanwhile
        ring.PureRingReader(consumer, data, table.max_entries, decode_capture).drain(second)
    finally:
        consumer.close()
        data.close()
    assert len(first) == 400 and first == second


def test_the_capture_reads_with_the_reader_the_environment_chooses(rig):
    reader = rig.dp._capture._reader
    if os.environ.get("FASTBAN_PURE_PYTHON", "") not in ("", "0"):
        assert isinstance(reader, ring.PureRingReader)
    else:
        assert isinstance(reader, _compiled().RingReader)
