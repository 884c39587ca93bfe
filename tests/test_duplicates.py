"""fastban.duplicates: a message the wire and HEP both carry counts once."""

import ipaddress

from fastban import sip
from fastban.duplicates import Duplicates

from traces import sip_request, sip_response

PEER = ipaddress.ip_address("203.0.113.9")
OTHER = ipaddress.ip_address("203.0.113.10")


def response(status=401, branch="z9hG4bK1", call_id="c1", cseq=1):
    return sip.parse(sip_response(status, call_id=call_id, branch=branch, via_host=str(PEER),
                                  cseq=cseq))


def test_the_second_copy_within_the_window_is_a_duplicate():
    seen = Duplicates(window=2.0)
    assert not seen.seen(100.0, PEER, response())
    assert seen.seen(100.004, PEER, response())       # HEP's copy, 4 ms after the wire's
    assert seen.seen(101.9, PEER, response())


def test_a_new_transaction_or_another_peer_is_not_a_copy():
    seen = Duplicates()
    assert not seen.seen(1.0, PEER, response(branch="z9hG4bK1"))
    assert not seen.seen(1.1, PEER, response(branch="z9hG4bK2"))      # the next guess
    assert not seen.seen(1.2, PEER, response(status=403, branch="z9hG4bK2"))
    assert not seen.seen(1.3, PEER, response(cseq=2, branch="z9hG4bK2"))
    assert not seen.seen(1.4, OTHER, response(branch="z9hG4bK1"))
    assert not seen.seen(1.5, PEER, response(call_id="c2", branch="z9hG4bK1"))


def test_a_request_and_its_answer_are_different_messages():
    seen = Duplicates()
    request = sip.parse(sip_request("REGISTER", call_id="c1", branch="z9hG4bK1",
                                    via_host=str(PEER), auth=True))
    assert not seen.seen(1.0, PEER, request)
    assert not seen.seen(1.0, PEER, response())
    assert seen.seen(1.1, PEER, request)


def test_past_the_window_the_same_message_counts_again():
    seen = Duplicates(window=2.0)
    assert not seen.seen(10.0, PEER, response())
    assert not seen.seen(12.5, PEER, response())
    assert seen.seen(13.0, PEER, response())          # within 2 s of the copy at 12.5


def test_old_entries_are_forgotten_and_the_cap_holds():
    seen = Duplicates(window=1.0, cap=100)
    for i in range(1000):
        seen.seen(float(i) / 1000, PEER, response(branch=f"z9hG4bK{i}"))
    assert len(seen) == 100
    later = Duplicates(window=1.0)
    for i in range(50):
        later.seen(0.0, PEER, response(branch=f"z9hG4bK{i}"))
    for i in range(50):
        later.seen(5.0 + i, PEER, response(branch=f"z9hG4bKlate{i}"))
    assert len(later) <= 2                   # the early ones went as the later came
