"""What the edges of a fleet tell each other, and what an edge refuses of what it reads."""
import ipaddress

import msgpack
import pytest

from fastban.fleet.messages import (MAX_FLEET_BAN, MAX_MESSAGE, FleetBan, FleetMessageError,
                                    FleetUnban, decode, encode_ban, encode_unban)

NOW = 1_800_000_000.0
PREFIX = (24, 48)


def ban(target="203.0.113.7/32", expires_at=NOW + 600, **fields):
    values = {"reason": "5 failures in 2 s: 5 proven (5×bad credentials 401)", "failures": 5,
              "failure_class": "proven", "edge": "edge-a", "banned_at": NOW - 1, **fields}
    return FleetBan(ipaddress.ip_network(target), expires_at, **values)


def message(**fields):
    values = {"v": 1, "op": "ban", "target": "203.0.113.7/32", "expires_at": NOW + 600,
              "reason": "hand", "failures": 0, "class": "", "edge": "edge-b", "at": NOW}
    values.update(fields)
    return msgpack.packb({k: v for k, v in values.items() if v is not ...})


def test_a_ban_and_an_unban_come_back_as_they_were_sent():
    for sent in (ban(), ban("2001:db8:113::/64", failure_class="mixed"), ban(expires_at=0)):
        assert decode(encode_ban(sent), NOW, PREFIX) == sent
    unban = FleetUnban(ipaddress.ip_network("203.0.113.7/32"), "edge-c", NOW)
    assert decode(encode_unban(unban), NOW, PREFIX) == unban


@pytest.mark.parametrize("raw,why,words", [
    (None, "unreadable", "NoneType"),
    (b"\xc1garbage", "unreadable", "not msgpack"),
    (b"\x93\x01\x02", "unreadable", "not msgpack"),                     # cut short
    (msgpack.packb([1, 2, 3]), "malformed", "not a fleet message"),
    (msgpack.packb({"v": 2}), "malformed", "version 1"),
    (b"\x00" * (MAX_MESSAGE + 1), "oversized", "at most 1024"),
    (message(op="ban_all"), "malformed", "unknown operation"),
    (message(target="0.0.0.0/0"), "too_broad", "broader than /24"),
    (message(target="10.0.0.0/8"), "too_broad", "broader than /24"),
    (message(target="2001:db8::/32"), "too_broad", "broader than /48"),
    (message(target="203.0.113.7/24"), "malformed", "not a network"),  # host bits set
    (message(target="banana"), "malformed", "not a network"),
    (message(target=7), "malformed", "no target"),
    (message(expires_at=86400.0), "expired", "expired at 86400"),      # 1970
    (message(expires_at=NOW + MAX_FLEET_BAN + 10), "too_far_ahead", "ahead"),
    (message(expires_at=float("nan")), "malformed", "not a time"),
    (message(expires_at=True), "malformed", "not a time"),
    (message(expires_at=...), "malformed", "not a time"),
    (message(reason="line one\nline two"), "malformed", "one printable line"),
    (message(reason="\x1b[2Jcleared"), "malformed", "one printable line"),
    (message(reason="x" * 301), "malformed", "one printable line"),
    (message(reason=b"bytes"), "malformed", "one printable line"),
    (message(failures=-1), "malformed", "failures"),
    (message(failures="5"), "malformed", "failures"),
    (message(**{"class": "certain"}), "malformed", "failure class"),
    (message(edge="edge a"), "malformed", "not an edge name"),
    (message(edge="../etc"), "malformed", "not an edge name"),
    (message(edge="count"), "malformed", "not an edge name"),      # "fleet count" is ours
    (message(edge=None), "malformed", "not an edge name"),
    (message(at=-5), "malformed", "not a time"),
    (msgpack.packb({1: 2}), "unreadable", "not msgpack"),               # keys not text
])
def test_a_hostile_message_is_refused_with_its_reason(raw, why, words):
    with pytest.raises(FleetMessageError) as refused:
        decode(raw, NOW, PREFIX)
    assert refused.value.why == why and words in str(refused.value)


@pytest.mark.parametrize("text", [
    "203.0.113.7/32", "203.0.113.0/24", "0.0.0.0/0", "255.255.255.255/32", "203.0.113.7",
    "203.0.113.7/33", "203.0.113.7/24", "203.0.113.07/32", "203.0.113/32", "203.0.113.7/032",
    "203.0.113.7/+3", "203.0.113.7/٣٢", "203.0.113.7/", "1.2.3.4.5/32", " 1.2.3.4/32",
    "2001:db8::/64", "::ffff:1.2.3.4/128", "203.0.113.256/32"])
def test_an_ipv4_target_is_read_as_ipaddress_reads_it(text):
    try:
        expected = ipaddress.ip_network(text, strict=True)
    except ValueError:
        expected = None
    if expected is not None and expected.prefixlen < 24:
        expected = "too_broad"
    try:
        got = decode(message(target=text), NOW, PREFIX).target
    except FleetMessageError as error:
        got = "too_broad" if error.why == "too_broad" else None
        assert got or error.why == "malformed"
    assert got == expected


def test_a_ban_key_must_hold_the_ban_of_its_own_target():
    raw = message(target="203.0.113.7/32")
    assert decode(raw, NOW, PREFIX, stored_as=b"203.0.113.7/32").target == \
        ipaddress.ip_network("203.0.113.7/32")
    for key in (b"203.0.113.8/32", b"203.0.113.7", b""):
        with pytest.raises(FleetMessageError, match="holds another target"):
            decode(raw, NOW, PREFIX, stored_as=key)
    with pytest.raises(FleetMessageError, match="holds another target"):
        decode(encode_unban(FleetUnban(ipaddress.ip_network("203.0.113.7/32"), "edge-c", NOW)),
               NOW, PREFIX, stored_as=b"203.0.113.7/32")


def test_the_broadest_range_is_the_edges_setting():
    assert decode(message(target="10.0.0.0/8"), NOW, (8, 32)).target == \
        ipaddress.ip_network("10.0.0.0/8")
    with pytest.raises(FleetMessageError):
        decode(message(target="203.0.113.0/24"), NOW, (25, 48))


def test_msgpack_bombs_stop_at_the_size_limit():
    nested = b"\x91" * 1000 + b"\x00"           # 1000 nested lists, within 1024 bytes
    with pytest.raises(FleetMessageError) as refused:
        decode(nested, NOW, PREFIX)
    assert refused.value.why in ("unreadable", "malformed")


def test_the_publish_queue_never_blocks_and_counts_its_overflow(monkeypatch):
    """Redis gone for long: the guard's offers are never refused nor waited on; past the
    queue's limit they are counted, and the edge's own bans are all published again later."""
    from fastban.fleet import link as link_module
    monkeypatch.setattr(link_module, "QUEUE_LIMIT", 10)
    link = link_module.FleetLink(store=None, edge="edge-a", sink=None, min_prefix=PREFIX)
    for i in range(15):
        link.offer(ban(f"203.0.113.{i}/32"))
    stats = link.stats()
    # the 11th found the queue full: it was emptied (its bans come again with all the others)
    assert stats["publish_overflow"] == 1 and link._republish and stats["queue"] == 4
    assert stats["connected"] is False and stats["edge"] == "edge-a"
