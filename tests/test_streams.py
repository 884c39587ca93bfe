"""Messages out of segments (fastban.streams), on the bytes servers and phones really send."""
import ipaddress
import random


from fastban.packets import Segment
from fastban.streams import MessageReader

from traces import sip_request, sip_response

SERVER, PHONE = ipaddress.ip_address("192.0.2.10"), ipaddress.ip_address("198.51.100.7")


def response(status, call_id="c1", branch="z9hG4bK1"):
    return sip_response(status, call_id=call_id, branch=branch, via_host=str(PHONE),
                        transport="TCP")


def tcp(payload, seq, *, wire=None, fin=False, src=SERVER, dst=PHONE, sport=5060,
        dport=40000):
    return Segment(src, dst, sport, dport, "tcp", payload,
                   len(payload) if wire is None else wire, seq, tcp_fin=fin)


def udp(payload, *, wire=None, fragment=False):
    return Segment(SERVER, PHONE, 5060, 40000, "udp", payload,
                   len(payload) if wire is None else wire, fragment=fragment)


def statuses(items):
    return [(m.status, first) for m, first in items]


def test_a_datagram_is_one_message_and_keepalives_are_skipped():
    reader = MessageReader()
    assert statuses(reader.read(udp(response(401)))) == [(401, True)]
    for keepalive in (b"\r\n\r\n", b"\r\n", b"\0\0\0\0"):
        assert reader.read(udp(keepalive)) == []
    assert reader.read(udp(b"not sip at all\r\n\r\n")) == []
    assert reader.stats["keepalives"] == 3 and reader.stats["malformed"] == 1


def test_a_first_fragment_is_read_as_a_cut_off_message():
    big = response(200).replace(b"Server:", b"".join(
        b"Contact: <sip:%d@192.168.50.2:%d>\r\n" % (3000 + i, 40000 + i) for i in range(40))
        + b"Server:")
    [(message, first)] = MessageReader().read(udp(big[:1472], wire=len(big), fragment=True))
    assert message.truncated and message.call_id == b"c1" and message.cseq == 1 and first
    reader = MessageReader()
    cut_early = big[:big.index(b"Call-ID")]
    assert reader.read(udp(cut_early, wire=len(big), fragment=True)) == []
    assert reader.stats == {**reader.stats, "fragments": 1, "truncated": 1,
                            "truncated_unusable": 1, "messages": 0}


def test_a_tcp_segment_with_several_messages_and_one_split_over_segments():
    reader = MessageReader()
    a, b, c = response(200, "a"), response(401, "b"), response(403, "c")
    first = a + b + c[:30]
    got = reader.read(tcp(first, 1000))
    assert [(m.call_id, f) for m, f in got] == [(b"a", True), (b"b", False)]
    [(message, was_first)] = reader.read(tcp(c[30:], 1000 + len(first)))
    assert message.call_id == b"c" and not was_first       # began inside another segment


def test_tcp_bodies_are_skipped_by_content_length_and_crlf_between_messages():
    with_body = response(200, "body").replace(b"Content-Length: 0",
                                              b"Content-Length: 11") + b"v=0\r\no=- 1\r\n"
    reader = MessageReader()
    got = reader.read(tcp(with_body + b"\r\n\r\n" + response(401, "next"), 1))
    assert [m.call_id for m, _ in got] == [b"body", b"next"]
    assert [f for _, f in got] == [True, False]


def test_retransmitted_and_overlapping_tcp_bytes_are_read_once():
    reader = MessageReader()
    a, b = response(200, "a"), response(401, "b")
    assert len(reader.read(tcp(a, 5000))) == 1
    assert reader.read(tcp(a, 5000)) == []                       # the same segment again
    assert reader.stats["tcp_retransmissions"] == 1
    got = reader.read(tcp(a[-10:] + b, 5000 + len(a) - 10))     # old bytes, then new ones
    assert [m.call_id for m, _ in got] == [b"b"]


def test_after_a_gap_the_stream_starts_again_at_a_start_line():
    """The live capture leaves out segments that are one whole uninteresting message; the
    next segment then starts a message."""
    reader = MessageReader()
    a, b, c = response(200, "a"), response(200, "b"), response(401, "c")
    reader.read(tcp(a, 100))
    got = reader.read(tcp(c, 100 + len(a) + len(b)))            # b was not copied
    assert [(m.call_id, f) for m, f in got] == [(b"c", True)]
    assert reader.stats["tcp_resyncs"] == 1
    # a segment that starts inside a message cannot be read after a gap
    d = response(403, "d")
    assert reader.read(tcp(d[20:], 10_000)) == []
    assert reader.stats["tcp_unaligned"] == 1
    assert [m.call_id for m, _ in reader.read(tcp(d, 10_000 + len(d) - 20))] == [b"d"]


def test_a_cut_copy_ends_its_message_cut_off():
    """The kernel copies at most 8192 bytes of a packet: the message the copy stops in is read
    as far as its complete header lines go; the stream goes on at the next start line."""
    reader = MessageReader()
    a, b = response(200, "a"), response(401, "b")
    segment = a + b
    cut = len(a) + b.index(b"Server:")                     # b's Call-ID and CSeq are in
    got = reader.read(tcp(segment[:cut], 1, wire=len(segment)))
    assert [(m.call_id, m.truncated) for m, _ in got] == [(b"a", False), (b"b", True)]
    assert [m.call_id for m, _ in reader.read(tcp(a, 1 + len(segment)))] == [b"a"]


def test_the_sequence_number_wraps():
    reader = MessageReader()
    a, b = response(200, "a"), response(401, "b")
    start = (1 << 32) - len(a) // 2
    reader.read(tcp(a, start))
    assert [m.call_id for m, _ in reader.read(tcp(b, (start + len(a)) % (1 << 32)))] == [b"b"]


def test_flows_are_bounded_and_fin_forgets_one():
    reader = MessageReader(max_flows=10)
    for port in range(100):
        reader.read(tcp(response(200, str(port)), 1, dport=port + 1))
    assert reader.flows == 10 and reader.stats["tcp_flows_evicted"] == 90
    reader.read(tcp(response(200, "bye"), 1 + len(response(200, "99")), dport=100, fin=True))
    assert reader.flows == 9


def test_an_endless_message_is_dropped_at_the_size_limit():
    reader = MessageReader()
    endless = b"SIP/2.0 200 OK\r\nX: " + b"a" * 70_000
    seq = 1
    for start in range(0, len(endless), 8000):
        piece = endless[start:start + 8000]
        reader.read(tcp(piece, seq))
        seq += len(piece)
    assert reader.stats["malformed"] == 1 and reader._flows[(SERVER, 5060, PHONE, 40000)].buffer == b""


def test_requests_over_tcp_are_read_like_responses():
    register = sip_request("REGISTER", call_id="r", branch="z9hG4bKr", via_host=str(PHONE),
                           auth=True, transport="TCP")
    [(message, first)] = MessageReader().read(tcp(register, 7, src=PHONE, dst=SERVER,
                                                  sport=40000, dport=5060))
    assert not message.is_response and message.credential_nonces == (b"1234abcd",) and first


def test_random_cuts_of_a_stream_give_the_same_messages():
    """However a stream of messages is cut into segments, the same messages come out."""
    rnd = random.Random(11)
    messages = [response(rnd.choice((200, 401, 403, 407)), f"m{i}", f"z9hG4bK{i}")
                for i in range(60)]
    stream = b"".join(m + (b"\r\n" if i % 7 == 0 else b"") for i, m in enumerate(messages))
    for trial in range(20):
        reader, seq, offset, got = MessageReader(), 9_000, 0, []
        while offset < len(stream):
            size = rnd.randint(1, 900)
            got += reader.read(tcp(stream[offset:offset + size], seq))
            seq, offset = seq + len(stream[offset:offset + size]), offset + size
        assert [m.call_id for m, _ in got] == [b"m%d" % i for i in range(60)], trial
