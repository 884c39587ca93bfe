"""The compiled reader of the capture's BPF ring buffer (fastban.dataplane.ring): drains every
record committed into CapturedPackets, without a Python call per record but the packet's own.

The pure-Python RingReader in fastban.dataplane.ring reads the same rings the same way (and
decodes with fastban.dataplane.capture.decode_capture); both must give equal packets.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "ringreader.h":
    cdef struct fb_capture_meta:
        uint64_t ktime_ns
        uint8_t saddr[16]
        uint8_t daddr[16]
        uint16_t sport
        uint16_t dport
        uint16_t status
        uint16_t payload_off
        uint32_t payload_len
        uint32_t cap_len
        uint32_t tcp_seq
        uint8_t family
        uint8_t protocol
        uint8_t direction
        uint8_t kind
        uint8_t flags
        uint8_t reason
    uint64_t fb_load_acquire_u64(const void *p) nogil
    uint32_t fb_load_acquire_u32(const void *p) nogil
    void fb_store_release_u64(void *p, uint64_t value) nogil
    uint32_t BPF_RINGBUF_BUSY_BIT
    uint32_t BPF_RINGBUF_DISCARD_BIT
    uint32_t BPF_RINGBUF_HDR_SZ
    uint8_t FB_DIR_INGRESS
    uint8_t FB_META_FRAGMENT
    uint8_t FB_META_TCP_FIN
    uint8_t FB_META_TCP_RST
    uint8_t FB_META_KERNEL_BAN

META_SIZE = sizeof(fb_capture_meta)
# The offsets the C compiler gave the fields, for fastban.dataplane.ring to check against abi.h.
cdef fb_capture_meta _probe
META_OFFSETS = {
    "ktime_ns": <size_t>&_probe.ktime_ns - <size_t>&_probe,
    "saddr": <size_t>&_probe.saddr - <size_t>&_probe,
    "daddr": <size_t>&_probe.daddr - <size_t>&_probe,
    "sport": <size_t>&_probe.sport - <size_t>&_probe,
    "dport": <size_t>&_probe.dport - <size_t>&_probe,
    "status": <size_t>&_probe.status - <size_t>&_probe,
    "payload_off": <size_t>&_probe.payload_off - <size_t>&_probe,
    "payload_len": <size_t>&_probe.payload_len - <size_t>&_probe,
    "cap_len": <size_t>&_probe.cap_len - <size_t>&_probe,
    "tcp_seq": <size_t>&_probe.tcp_seq - <size_t>&_probe,
    "family": <size_t>&_probe.family - <size_t>&_probe,
    "protocol": <size_t>&_probe.protocol - <size_t>&_probe,
    "direction": <size_t>&_probe.direction - <size_t>&_probe,
    "kind": <size_t>&_probe.kind - <size_t>&_probe,
    "flags": <size_t>&_probe.flags - <size_t>&_probe,
    "reason": <size_t>&_probe.reason - <size_t>&_probe,
}


cdef class RingReader:
    """Reads a ring mapped by fastban.dataplane.ring.map_ring: consumer (the consumer page,
    writable), data (the producer page, then the data pages twice, read-only)."""
    cdef object _consumer_map, _data_map
    cdef unsigned char *_consumer
    cdef const unsigned char *_producer
    cdef const unsigned char *_data
    cdef uint64_t _mask
    cdef uint64_t _size
    cdef readonly long malformed
    cdef object _packet_class, _address
    cdef list _protocols, _kinds, _reasons

    def __init__(self, consumer_map, data_map, size_t size, size_t page_size, decoding):
        cdef unsigned char[::1] consumer = consumer_map
        cdef const unsigned char[::1] data = data_map
        if size & (size - 1) or <size_t>data.shape[0] < page_size + 2 * size:
            raise ValueError("the ring's data must be a power of two, mapped twice")
        self._consumer_map, self._data_map = consumer_map, data_map
        self._consumer = &consumer[0]
        self._producer = &data[0]
        self._data = &data[page_size]
        self._size, self._mask = size, size - 1
        self.malformed = 0
        (self._packet_class, self._address, self._protocols, self._kinds,
         self._reasons) = decoding.packet_class, decoding.address, list(decoding.protocols), \
            list(decoding.kinds), list(decoding.reasons)

    def drain(self, list out):
        """Appends every record committed (in order) to out; returns how many."""
        cdef uint64_t consumer = fb_load_acquire_u64(self._consumer)
        cdef uint64_t producer = fb_load_acquire_u64(self._producer)
        cdef uint32_t header, length
        cdef const unsigned char *record
        cdef long count = 0
        try:
            while consumer < producer:
                while consumer < producer:
                    record = self._data + (consumer & self._mask)
                    header = fb_load_acquire_u32(record)
                    if header & BPF_RINGBUF_BUSY_BIT:
                        return count            # being written: the next drain reads it
                    length = header & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT)
                    if length > self._size - BPF_RINGBUF_HDR_SZ:
                        self.malformed += 1     # cannot be: the ring is not what we think
                        consumer = producer
                        break
                    consumer += (length + BPF_RINGBUF_HDR_SZ + 7) & ~7
                    if header & BPF_RINGBUF_DISCARD_BIT:
                        continue
                    packet = self._decode(record + BPF_RINGBUF_HDR_SZ, length)
                    if packet is None:
                        self.malformed += 1
                    else:
                        out.append(packet)
                        count += 1
                producer = fb_load_acquire_u64(self._producer)
            return count
        finally:
            fb_store_release_u64(self._consumer, consumer)

    cdef object _decode(self, const unsigned char *record, uint32_t length):
        """As decode_capture does with the record's bytes."""
        cdef size_t meta_size = sizeof(fb_capture_meta)
        if length < meta_size:
            return None
        cdef const fb_capture_meta *meta = <const fb_capture_meta *>record
        cdef size_t cap = meta.cap_len
        if cap > length - meta_size:
            cap = length - meta_size
        cdef const unsigned char *frame = record + meta_size
        cdef size_t start = meta.payload_off
        cdef size_t end = start + meta.payload_len
        if start > cap:
            start = cap
        if end > cap:
            end = cap
        if end < start:
            end = start
        cdef int width = 4 if meta.family == 4 else 16
        cdef uint8_t flags = meta.flags
        return self._packet_class(
            self._address(PyBytes_FromStringAndSize(<const char *>meta.saddr, width)),
            self._address(PyBytes_FromStringAndSize(<const char *>meta.daddr, width)),
            meta.sport, meta.dport, self._protocols[meta.protocol], meta.status,
            PyBytes_FromStringAndSize(<const char *>frame + start, end - start), meta.ktime_ns,
            "ingress" if meta.direction == FB_DIR_INGRESS else "egress",
            PyBytes_FromStringAndSize(<const char *>frame, cap), self._kinds[meta.kind],
            meta.payload_len, meta.tcp_seq, (flags & FB_META_FRAGMENT) != 0,
            (flags & FB_META_TCP_FIN) != 0, (flags & FB_META_TCP_RST) != 0,
            self._reasons[meta.reason], (flags & FB_META_KERNEL_BAN) != 0)
