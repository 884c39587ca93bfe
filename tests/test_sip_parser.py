"""The SIP parser, pinned on real-looking messages; every test runs against both implementations."""

import importlib
import os
import subprocess
import sys

import pytest

from sip_corpus import (
    ASTERISK_200, ASTERISK_401, ASTERISK_SHA256_MD5_401, COMPACT_407, ESCAPED_NONCE_401,
    FOLDED_MULTIVIA_401, FREESWITCH_403, FREESWITCH_407, INVITE_PROXY_AUTH, IPV6_TCP_403,
    KAMAILIO_100, KAMAILIO_200_CONTACTS, KAMAILIO_407, KAMAILIO_PROXY_407, KAMAILIO_WWW_401,
    MINIMAL_RESPONSE, NOT_SIP, ODD_SPACING_407, REGISTER_WITH_AUTH, SAMPLES, SIPP_REGISTER_AUTH,
    SIPVICIOUS_OPTIONS, SIPVICIOUS_REGISTER, STALE_401, UNCLOSED_QUOTE_401, WEIRD_CASE_401,
    WITH_BODY_200, msg, realistic_responses,
)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def load_impl(name):
    """fastban.sip_pure, or fastban._sipparser (skips when not built; fails when CI=true)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        reason = (f"{name} is not built ({exc}); "
                  "run: .venv/bin/python setup.py build_ext --inplace")
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(params=["fastban.sip_pure", "fastban._sipparser"], ids=["pure", "cython"])
def sip(request):
    return load_impl(request.param)


@pytest.fixture
def both():
    return load_impl("fastban.sip_pure"), load_impl("fastban._sipparser")


DEFAULTS = {
    "is_response": False, "status": 0, "reason": b"", "method": b"", "request_uri": b"",
    "call_id": b"", "cseq": -1, "cseq_method": b"", "via_count": 0, "via_transport": b"",
    "via_host": b"", "via_port": 0, "via_branch": b"", "via_received": b"", "via_rport": -1,
    "from_user": b"", "from_tag": b"", "to_user": b"", "to_tag": b"", "user_agent": b"",
    "server": b"", "content_length": -1, "has_www_authenticate": False,
    "has_proxy_authenticate": False, "has_authorization": False, "has_proxy_authorization": False,
    "challenge_nonces": (), "credential_nonces": (), "stale": False, "truncated": False,
}


def fields(sip, data):
    m = sip.parse(data)
    assert m is not None, data
    d = m.as_dict()
    assert list(d) == list(DEFAULTS)
    for name, value in d.items():
        assert getattr(m, name) == value
        assert type(value) is type(DEFAULTS[name]), name
    return d


def expect(sip, data, **changes):
    """The parse of data equals the defaults with these changes, field for field."""
    want = dict(DEFAULTS, **changes)
    assert fields(sip, data) == want


# --- real-looking messages -----------------------------------------------------------------

def test_asterisk_pjsip_401(sip):
    expect(
        sip, ASTERISK_401,
        is_response=True, status=401, reason=b"Unauthorized", call_id=b"1627369848",
        cseq=1, cseq_method=b"REGISTER", via_count=1, via_transport=b"UDP",
        via_host=b"203.0.113.9", via_port=5062, via_branch=b"z9hG4bK-3159829934",
        via_received=b"203.0.113.9", via_rport=5062, from_user=b"100",
        from_tag=b"6630626235316164313363340131313930343534", to_user=b"100",
        to_tag=b"z9hG4bK-3159829934", server=b"Asterisk PBX 18.9.0", content_length=0,
        has_www_authenticate=True,
        challenge_nonces=(b"1627369848/9f1c3b7e0c8a9d1e2f3a4b5c6d7e8f90",),
    )


def test_kamailio_407(sip):
    expect(
        sip, KAMAILIO_407,
        is_response=True, status=407, reason=b"Proxy Authentication Required",
        call_id=b"4c1d7a5e6f8a9b0c1d2e3f4a5b6c7d8e@192.0.2.55:5060", cseq=102,
        cseq_method=b"INVITE", via_count=1, via_transport=b"UDP", via_host=b"192.0.2.55",
        via_port=5060, via_branch=b"z9hG4bK.a1b2c3d4", via_received=b"198.51.100.77",
        via_rport=5060, from_user=b"2001", from_tag=b"as6f3a1e2b", to_user=b"0044207946000",
        to_tag=b"1c9e1d2a8b7f6e5d4c3b2a1908f7e6d5.7f1e",
        server=b"kamailio (5.6.4 (x86_64/linux))", content_length=0,
        has_proxy_authenticate=True, challenge_nonces=(b"ZFq2kWRatmVPpb1i2Cs/w1mjD4Y1Rb6y",),
    )


def test_freeswitch_403(sip):
    expect(
        sip, FREESWITCH_403,
        is_response=True, status=403, reason=b"Forbidden",
        call_id=b"ZDk1NTg3YmQwNzQ2ODE3ZjhjMGRiNzZmNGYzZTYyYzM", cseq=2,
        cseq_method=b"REGISTER", via_count=1, via_transport=b"UDP", via_host=b"203.0.113.44",
        via_port=5060, via_branch=b"z9hG4bK-d8754z-7f3d1b", via_received=b"203.0.113.44",
        via_rport=5060, from_user=b"1001", from_tag=b"0f8a1b2c", to_user=b"1001",
        to_tag=b"Ngtm6rS3jyU1H", user_agent=b"FreeSWITCH-mod_sofia/1.10.9-release~64bit",
        content_length=0,
    )


def test_200_and_100(sip):
    ok = fields(sip, ASTERISK_200)
    assert (ok["status"], ok["reason"], ok["cseq"], ok["to_tag"]) == (
        200, b"OK", 18734, b"z9hG4bKPj2b8c7d")
    trying = fields(sip, KAMAILIO_100)
    assert trying["status"] == 100
    assert trying["reason"] == b"trying -- your call is important to us"
    assert trying["to_tag"] == b"" and trying["to_user"] == b"0044207946000"


def test_sipvicious_register(sip):
    expect(
        sip, SIPVICIOUS_REGISTER,
        method=b"REGISTER", request_uri=b"sip:198.51.100.20", call_id=b"1627369848", cseq=1,
        cseq_method=b"REGISTER", via_count=1, via_transport=b"UDP", via_host=b"203.0.113.9",
        via_port=5062, via_branch=b"z9hG4bK-3159829934", via_rport=0, from_user=b"100",
        from_tag=b"6630626235316164313363340131313930343534", to_user=b"100",
        user_agent=b"friendly-scanner", content_length=0,
    )


def test_sipvicious_options(sip):
    d = fields(sip, SIPVICIOUS_OPTIONS)
    assert d["is_response"] is False and d["status"] == 0 and d["reason"] == b""
    assert d["method"] == b"OPTIONS" and d["request_uri"] == b"sip:100@198.51.100.20"
    assert d["user_agent"] == b"friendly-scanner"
    # display name glued to the '<' as sipvicious writes it
    assert d["from_user"] == b"100" and d["to_user"] == b"100"
    assert d["from_tag"] == b"6435343836323034313363340131333532363933303739"
    assert (d["via_host"], d["via_port"], d["via_rport"]) == (b"127.0.1.1", 5060, 0)


def test_register_with_authorization_over_tcp(sip):
    d = fields(sip, REGISTER_WITH_AUTH)
    assert d["has_authorization"] is True and d["has_proxy_authorization"] is False
    assert d["credential_nonces"] == (b"abc",) and d["challenge_nonces"] == ()
    assert d["via_transport"] == b"TCP" and d["via_port"] == 49152
    assert d["via_rport"] == -1 and d["via_received"] == b""
    assert d["user_agent"] == b"Zoiper rv2.10.19.6"


def test_compact_headers(sip):
    expect(
        sip, COMPACT_407,
        is_response=True, status=407, reason=b"Proxy Authentication Required",
        call_id=b"a84b4c76e66710@pc33.atlanta.example.com", cseq=314159, cseq_method=b"INVITE",
        via_count=1, via_transport=b"UDP", via_host=b"192.0.2.1", via_port=5060,
        via_branch=b"z9hG4bKnashds8", via_received=b"192.0.2.101", via_rport=40000,
        from_user=b"alice", from_tag=b"1928301774", to_user=b"bob", to_tag=b"a6c85cf",
        content_length=0, has_proxy_authenticate=True,
        challenge_nonces=(b"wf84f1ceczx41ae6cbe5aea9c8e88d359",),
    )


def test_folded_headers_and_several_vias(sip):
    d = fields(sip, FOLDED_MULTIVIA_401)
    # two comma-separated values on a folded Via line, plus one more Via line
    assert d["via_count"] == 3
    assert d["via_host"] == b"proxy2.example.net" and d["via_port"] == 5060
    assert d["via_branch"] == b"z9hG4bK721e4.1" and d["via_received"] == b"192.0.2.3"
    assert d["via_rport"] == -1
    assert (d["from_user"], d["from_tag"]) == (b"bob", b"99")
    assert (d["cseq"], d["cseq_method"]) == (7, b"REGISTER")
    assert d["user_agent"] == b"Linphone Desktop/5.2.0 (Ubuntu)"
    assert d["has_www_authenticate"] is True
    assert d["challenge_nonces"] == (b"6a4f1c",)  # on the continuation line


def test_via_lines_and_commas_count(sip):
    data = msg(
        b"SIP/2.0 401 Unauthorized",
        b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKtop;received=198.51.100.1;rport=1024,"
        b"SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2 , SIP/2.0/TCP 10.0.0.3;branch=z9hG4bK3",
        b"Via: SIP/2.0/UDP 10.0.0.4;branch=z9hG4bK4",
        b"v: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK5,,",
    )
    d = fields(sip, data)
    assert d["via_count"] == 5  # empty comma-separated values do not count
    assert (d["via_host"], d["via_port"], d["via_branch"]) == (b"10.0.0.1", 5060, b"z9hG4bKtop")
    assert (d["via_received"], d["via_rport"]) == (b"198.51.100.1", 1024)


def test_ipv6_via_and_tcp(sip):
    d = fields(sip, IPV6_TCP_403)
    assert d["via_transport"] == b"TCP"
    assert d["via_host"] == b"2001:db8::9" and d["via_port"] == 5070
    assert d["via_received"] == b"2001:db8::9" and d["via_rport"] == 5070
    assert d["from_user"] == b"alice" and d["call_id"] == b"ipv6-call@2001:db8::9"


def test_ipv6_via_without_port(sip):
    data = msg(b"SIP/2.0 403 Forbidden", b"Via: SIP/2.0/UDP [fe80::1];branch=z9hG4bK6;rport")
    d = fields(sip, data)
    assert (d["via_host"], d["via_port"], d["via_rport"]) == (b"fe80::1", 0, 0)


def test_header_name_and_param_case(sip):
    d = fields(sip, WEIRD_CASE_401)
    assert d["call_id"] == b"case-call" and d["cseq"] == 9 and d["cseq_method"] == b"register"
    assert d["via_transport"] == b"udp"  # as written
    assert d["via_branch"] == b"z9hG4bKcase" and d["via_rport"] == 0
    assert d["via_received"] == b"192.0.2.67"
    assert d["from_user"] == b"Carol" and d["from_tag"] == b"ctag" and d["to_tag"] == b"ttag"
    assert d["user_agent"] == b"MicroSIP/3.21.3" and d["content_length"] == 0
    assert d["has_www_authenticate"] is True


def test_missing_fields_get_defaults(sip):
    expect(sip, MINIMAL_RESPONSE, is_response=True, status=403, reason=b"Forbidden")


def test_lf_only_line_ends(sip):
    assert fields(sip, ASTERISK_401.replace(b"\r\n", b"\n")) == fields(sip, ASTERISK_401)


def test_body_is_ignored(sip):
    d = fields(sip, WITH_BODY_200)
    assert d["content_length"] == 50 and d["call_id"] == b"body@x"
    # lines in the body that look like headers are not read
    data = msg(b"SIP/2.0 200 OK", b"Content-Length: 20", body=b"Call-ID: in-the-body\r\n\x00")
    assert fields(sip, data)["call_id"] == b""


def test_empty_reason_and_status_without_reason(sip):
    assert fields(sip, b"SIP/2.0 480\r\n\r\n")["status"] == 480
    d = fields(sip, b"SIP/2.0 503 \r\n\r\n")
    assert (d["status"], d["reason"]) == (503, b"")


def test_first_header_wins(sip):
    data = msg(b"SIP/2.0 403 Forbidden", b"Call-ID: first", b"i: second", b"CSeq: 5 BYE",
               b"CSeq: 6 ACK", b"User-Agent: a", b"User-Agent: b")
    d = fields(sip, data)
    assert (d["call_id"], d["cseq"], d["cseq_method"], d["user_agent"]) == (
        b"first", 5, b"BYE", b"a")


def test_addr_forms(sip):
    cases = [
        (b'"Mr. \\"Q\\" <x@y>" <sip:eve@example.com>;tag=t1', b"eve", b"t1"),
        (b"Eve <sips:eve:secret@example.com;transport=tls>;x=1;tag = t2 ", b"eve", b"t2"),
        (b"sip:+15551234567@gw.example.com;user=phone;tag=t3", b"+15551234567", b"t3"),
        (b"<tel:+15551234567>;tag=t4", b"", b"t4"),
        (b"<sip:example.com>", b"", b""),
        (b'"unterminated <sip:a@b>;tag=x', b"", b""),
        (b"<sip:a@b;tag=inside", b"", b""),
    ]
    for value, user, tag in cases:
        d = fields(sip, msg(b"SIP/2.0 401 Unauthorized", b"From: " + value, b"To: " + value))
        assert (d["from_user"], d["from_tag"]) == (user, tag), value
        assert (d["to_user"], d["to_tag"]) == (user, tag), value


def test_cseq_and_content_length_numbers(sip):
    for value, number, method in [(b"1 REGISTER", 1, b"REGISTER"), (b"  42\tINVITE ", 42, b"INVITE"),
                                  (b"2147483647 X", 2147483647, b"X"),
                                  (b"2147483648 X", -1, b"X"), (b"abc INVITE", -1, b"INVITE"),
                                  (b"7", 7, b""), (b"", -1, b"")]:
        d = fields(sip, msg(b"SIP/2.0 401 Unauthorized", b"CSeq: " + value))
        assert (d["cseq"], d["cseq_method"]) == (number, method), value
    for value, number in [(b"0", 0), (b" 1234 ", 1234), (b"-1", -1), (b"12a", -1), (b"", -1),
                          (b"99999999999", -1)]:
        assert fields(sip, msg(b"SIP/2.0 200 OK", b"l: " + value))["content_length"] == number


def test_malformed_top_via_keeps_defaults(sip):
    for via in [b"SIP/2.0 UDP 10.0.0.1", b"SIP/2.0/UDP [::1", b"SIP/2.0/UDP 2001:db8::1",
                b"SIP/2.0/UDP host:99999;branch=x", b"SIP/2.0/UDP host junk;branch=x",
                b"SIP/2.0/UDP ;branch=x"]:
        d = fields(sip, msg(b"SIP/2.0 401 Unauthorized", b"Via: " + via,
                            b"Via: SIP/2.0/UDP 10.9.9.9;branch=second"))
        assert d["via_count"] == 2, via
        assert (d["via_transport"], d["via_host"], d["via_port"], d["via_branch"],
                d["via_received"], d["via_rport"]) == (b"", b"", 0, b"", b"", -1), via


def test_via_params(sip):
    d = fields(sip, msg(b"SIP/2.0 401 Unauthorized",
                        b"Via: SIP / 2.0 / UDP  host.example : 5060 ; rport = 5080 ; "
                        b"branch = z9hG4bKa ; branch=z9hG4bKb ; received=[2001:db8::2];maddr=x"))
    assert d["via_transport"] == b"UDP" and d["via_host"] == b"host.example"
    assert (d["via_port"], d["via_rport"], d["via_branch"]) == (5060, 5080, b"z9hG4bKa")
    assert d["via_received"] == b"2001:db8::2"
    for rport, want in [(b";rport", 0), (b";rport=", 0), (b";rport=0", 0), (b";rport=65536", 0),
                        (b";rport=x", 0), (b";rport=1", 1), (b"", -1)]:
        d = fields(sip, msg(b"SIP/2.0 401 Unauthorized", b"Via: SIP/2.0/UDP h" + rport))
        assert d["via_rport"] == want, rport


def test_auth_header_flags(sip):
    data = msg(b"SIP/2.0 401 Unauthorized", b"www-authenticate: Digest a=1",
               b"Proxy-Authenticate: Digest b=2", b"AUTHORIZATION: Digest c=3",
               b"Proxy-Authorization:")
    d = fields(sip, data)
    assert d["has_www_authenticate"] and d["has_proxy_authenticate"]
    assert d["has_authorization"] and d["has_proxy_authorization"]


def test_request_line(sip):
    d = fields(sip, b"INVITE sip:bob@biloxi.example.com;transport=udp SIP/2.0\r\n\r\n")
    assert (d["method"], d["request_uri"]) == (b"INVITE", b"sip:bob@biloxi.example.com;transport=udp")
    assert d["is_response"] is False and d["status"] == 0


@pytest.mark.parametrize("name", sorted(NOT_SIP))
def test_not_sip(sip, name):
    assert sip.parse(NOT_SIP[name]) is None


def test_size_limit(sip):
    pad = b"X-Pad: " + b"a" * (65535 - len(ASTERISK_401) - 9) + b"\r\n"
    at_limit = ASTERISK_401[:-2] + pad + b"\r\n"
    assert len(at_limit) == 65535 == sip.MAX_SIZE
    assert sip.parse(at_limit) is not None
    assert sip.parse(at_limit + b"x") is None


def test_bytes_like_and_wrong_types(sip):
    assert sip.parse(bytearray(ASTERISK_401)).status == 401
    assert sip.parse(memoryview(ASTERISK_401)).status == 401
    with pytest.raises(TypeError):
        sip.parse(ASTERISK_401.decode())
    with pytest.raises(TypeError):
        sip.parse(None)


def test_parse_batch(sip):
    packets = [ASTERISK_401, b"garbage", KAMAILIO_407, b"", FREESWITCH_403, bytearray(ASTERISK_200)]
    out = sip.parse_batch(packets)
    assert isinstance(out, list) and len(out) == len(packets)
    assert [m.status if m is not None else None for m in out] == [401, None, 407, None, 403, 200]
    assert sip.parse_batch([]) == []
    assert len(sip.parse_batch(iter(packets))) == len(packets)
    corpus = realistic_responses(200)
    assert [m.as_dict() for m in sip.parse_batch(corpus)] == [sip.parse(p).as_dict() for p in corpus]


def test_messages_are_independent(sip):
    """A message keeps its values after other (folded) messages are parsed."""
    first = sip.parse(FOLDED_MULTIVIA_401)
    want = first.as_dict()
    other = FOLDED_MULTIVIA_401.replace(b"folded-call-id", b"another-id").replace(b"Linphone", b"X")
    for m in sip.parse_batch([other, COMPACT_407, other]):
        assert m.call_id in (b"another-id", b"a84b4c76e66710@pc33.atlanta.example.com")
    assert first.as_dict() == want
    assert first.user_agent == b"Linphone Desktop/5.2.0 (Ubuntu)"


def test_pickle_round_trip(sip):
    import pickle
    for data in (ASTERISK_401, FOLDED_MULTIVIA_401, SIPVICIOUS_OPTIONS, ESCAPED_NONCE_401,
                 ODD_SPACING_407):
        m = sip.parse(data)
        assert pickle.loads(pickle.dumps(m)).as_dict() == m.as_dict()


def test_message_is_read_only_in_cython():
    c = load_impl("fastban._sipparser")
    m = c.parse(ASTERISK_401)
    with pytest.raises(AttributeError):
        m.status = 200
    assert "401" in repr(m)


# --- Digest nonces and stale ---------------------------------------------------------------

KAMAILIO_NONCE = b"ZbQ3sWW0NoVt2ZKaXZ0CYRCn0Cd3nUSx"
KAMAILIO_PROXY_NONCE = b"ZbQ3xGW0N5hUq0vB0s1aRy0RS5eOQm7k"


def test_kamailio_www_challenge(sip):
    expect(
        sip, KAMAILIO_WWW_401,
        is_response=True, status=401, reason=b"Unauthorized",
        call_id=b"NjU4ZTk2YzJlMTk3ZmQ0YTk4ZWQzNzE2NDI0YzA2NzE", cseq=1, cseq_method=b"REGISTER",
        via_count=1, via_transport=b"UDP", via_host=b"198.51.100.23", via_port=5060,
        via_branch=b"z9hG4bK-524287-1---b3c8f1e6a4d2", via_received=b"198.51.100.23",
        via_rport=5060, from_user=b"1001", from_tag=b"7c3e9b21", to_user=b"1001",
        to_tag=b"5e8f9a3c2b1d0e7f6a5b4c3d2e1f0a9b.a2c4",
        server=b"kamailio (5.7.3 (x86_64/linux))", content_length=0,
        has_www_authenticate=True, challenge_nonces=(KAMAILIO_NONCE,),
    )


def test_kamailio_proxy_challenge(sip):
    d = fields(sip, KAMAILIO_PROXY_407)
    assert d["has_proxy_authenticate"] and not d["has_www_authenticate"]
    assert d["challenge_nonces"] == (KAMAILIO_PROXY_NONCE,) and d["credential_nonces"] == ()
    assert d["stale"] is False and (d["cseq"], d["cseq_method"]) == (2, b"INVITE")


def test_asterisk_one_nonce_for_two_algorithms(sip):
    d = fields(sip, ASTERISK_SHA256_MD5_401)
    nonce = b"1718031234/5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b"
    assert d["challenge_nonces"] == (nonce, nonce)  # one per line, not made unique
    assert d["stale"] is False and d["has_www_authenticate"]


def test_freeswitch_proxy_challenge(sip):
    d = fields(sip, FREESWITCH_407)
    assert d["challenge_nonces"] == (b"c5f3a0d2-6e1b-4c8a-b7d9-2f4e6a8c0b1d",)
    assert d["user_agent"] == b"FreeSWITCH-mod_sofia/1.10.11-release~64bit"


def test_stale_upper_case(sip):
    d = fields(sip, STALE_401)
    assert d["stale"] is True
    assert d["challenge_nonces"] == (b"6661c0e8000012a9f3b5b8e0d4c2a7f1",)


def test_sipp_register_authorization(sip):
    expect(
        sip, SIPP_REGISTER_AUTH,
        method=b"REGISTER", request_uri=b"sip:sip.example.net", call_id=b"2-31337@203.0.113.5",
        cseq=2, cseq_method=b"REGISTER", via_count=1, via_transport=b"UDP",
        via_host=b"203.0.113.5", via_port=5061, via_branch=b"z9hG4bK-31337-2-1",
        from_user=b"1001", from_tag=b"31337SIPpTag002", to_user=b"1001", content_length=0,
        has_authorization=True, credential_nonces=(KAMAILIO_NONCE,),
    )


def test_invite_proxy_authorization(sip):
    d = fields(sip, INVITE_PROXY_AUTH)
    assert d["has_proxy_authorization"] and not d["has_authorization"]
    assert d["credential_nonces"] == (KAMAILIO_PROXY_NONCE,) and d["challenge_nonces"] == ()
    body = INVITE_PROXY_AUTH.split(b"\r\n\r\n", 1)[1]
    assert d["method"] == b"INVITE" and d["content_length"] == len(body) == 134


def test_escaped_quotes_in_nonce(sip):
    d = fields(sip, ESCAPED_NONCE_401)
    # realm="lab \"west\", nonce=fake" is one quoted-string: its "nonce=" is not a param
    assert d["challenge_nonces"] == (b'a"b\\c/"d',)


def test_odd_spacing_and_folded_challenge(sip):
    d = fields(sip, ODD_SPACING_407)
    assert d["challenge_nonces"] == (b"n0nce-odd", b"n0nce-folded")
    assert d["stale"] is True  # on the Proxy-Authenticate's second continuation line
    assert d["has_www_authenticate"] and d["has_proxy_authenticate"]


def test_unclosed_quote_gives_no_nonce_for_its_line(sip):
    d = fields(sip, UNCLOSED_QUOTE_401)
    assert d["challenge_nonces"] == (b"e5f6a7b8",)
    assert d["stale"] is False  # the stale=true of the malformed line is not taken
    assert d["call_id"] == b"unclosed@192.0.2.35" and d["has_www_authenticate"]


@pytest.mark.parametrize("value, nonce, stale", [
    (b'Digest nonce="abc"', b"abc", False),
    (b"Digest nonce=abc", b"abc", False),
    (b'Digest nonce = "abc" , stale = true', b"abc", True),
    (b'Digest\tnonce="abc"', b"abc", False),
    (b'Digest nonce="first", nonce="second"', b"first", False),
    (b'Digest realm="a", nonce="", nonce="b"', None, False),  # the first one is empty
    (b'Digest cnonce="c", nonce="n"', b"n", False),
    (b'Digest realm="a", nonce="b", Digest realm="c", nonce="d", stale=TRUE', b"b", True),
    (b'Basic realm="x", Digest realm="y", nonce="z"', b"z", False),
    (b'Digest nonce="x",, ,stale="TrUe",', b"x", True),
    (b'Digest nonce="x", stale=false', b"x", False),
    (b'Digest nonce="x", stale="tr\\ue"', b"x", True),
    (b"Digest stale=true", None, True),
    (b'Digest nonce="a b,c;d=e"', b"a b,c;d=e", False),
    (b'Digest nonce="\xff\xfe\x80"', b"\xff\xfe\x80", False),
    (b"Digest nonce=\"" + b"n" * 256 + b"\"", b"n" * 256, False),
    (b"Digest nonce=\"" + b"n" * 257 + b"\"", None, False),
    (b"Digest nonce=\"" + b"n\\\\" * 128 + b"\"", b"n\\" * 128, False),  # 256 once unescaped
    (b"Digest", None, False),
    (b"", None, False),
    (b'nonce="abc"', None, False),  # no scheme
    (b'Digestnonce="abc"', None, False),
    (b'Digest realm="a" nonce="b"', None, False),  # no comma
    (b'Digest nonce="b', None, False),
    (b'Digest nonce="b\\"', None, False),  # the quote is escaped: still open
    (b'Digest nonce="b\\', None, False),
    (b"Digest nonce=", None, False),
    (b"Digest nonce=, stale=true", None, False),
    (b'Digest nonce=b"c"', None, False),
    (b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", None, False),  # token68: not a param list
    (b'Digest stale=true, nonce="x", realm="unclosed', None, False),
])
def test_auth_param_grammar(sip, value, nonce, stale):
    nonces = (nonce,) if nonce is not None else ()
    for name in (b"WWW-Authenticate", b"Proxy-Authenticate"):
        d = fields(sip, msg(b"SIP/2.0 401 Unauthorized", name + b": " + value))
        assert (d["challenge_nonces"], d["stale"]) == (nonces, stale), (name, value)
    for name in (b"Authorization", b"Proxy-Authorization"):
        d = fields(sip, msg(b"REGISTER sip:x SIP/2.0", name + b": " + value))
        # credentials report their nonce; a stale param in them is not the challenge's
        assert (d["credential_nonces"], d["stale"]) == (nonces, False), (name, value)


def test_at_most_four_nonces_in_message_order(sip):
    data = msg(
        b"SIP/2.0 401 Unauthorized",
        b'WWW-Authenticate: Digest nonce="w1"',
        b'Proxy-Authenticate: Digest nonce="p2"',
        b'WWW-Authenticate: Digest realm="no nonce here"',
        b'Authorization: Digest nonce="a1"',
        b'WWW-Authenticate: Digest nonce="w3"',
        b'Proxy-Authorization: Digest nonce="a2"',
        b'WWW-Authenticate: Digest nonce="w4"',
        b'WWW-Authenticate: Digest nonce="w5", stale=true',  # not kept, but its stale counts
        b'Authorization: Digest nonce="a3"',
        b'Authorization: Digest nonce="a4"',
        b'Authorization: Digest nonce="a5"',
    )
    d = fields(sip, data)
    assert sip.MAX_NONCES == 4 and sip.MAX_NONCE_SIZE == 256
    assert d["challenge_nonces"] == (b"w1", b"p2", b"w3", b"w4")
    assert d["credential_nonces"] == (b"a1", b"a2", b"a3", b"a4")
    assert d["stale"] is True


def test_nonce_quoted_across_a_fold(sip):
    data = msg(b"SIP/2.0 407 Proxy Authentication Required",
               b'Proxy-Authenticate: Digest realm="x", nonce="abc', b'   def", qop="auth"')
    assert fields(sip, data)["challenge_nonces"] == (b"abc def",)


def test_nonces_survive_other_parses(sip):
    """Unescaped and unfolded nonces live in a shared buffer in the compiled parser."""
    first = sip.parse(ESCAPED_NONCE_401)
    folded = sip.parse(ODD_SPACING_407)
    for m in sip.parse_batch([ESCAPED_NONCE_401.replace(b"a\\\"b", b"z\\\"z"), ODD_SPACING_407,
                              FOLDED_MULTIVIA_401]):
        assert m.challenge_nonces
    assert first.challenge_nonces == (b'a"b\\c/"d',)
    assert folded.challenge_nonces == (b"n0nce-odd", b"n0nce-folded")


# --- cut-off messages (cut=True) -------------------------------------------------------------

def header_lines(data):
    """[(line, end)] for the start line, each header line and the empty line closing them:
    end is the offset just after the line's CRLF."""
    out = []
    pos = 0
    while True:
        end = data.index(b"\r\n", pos) + 2
        out.append((data[pos:end - 2], end))
        if end - 2 == pos:
            return out
        pos = end


def expected_after_cut(data, line_fields, cut):
    """The fields parse(data[:cut], cut=True) must give (None if the start line is cut):
    line_fields is [(line prefix, fields it sets once complete)], later lines overriding."""
    lines = header_lines(data)
    if cut < lines[0][1]:
        return None
    want = dict(DEFAULTS, truncated=True)
    for line, end in lines:
        if end > cut:
            break
        if not line:
            want["truncated"] = False
            break
        for prefix, changes in line_fields:
            if line.startswith(prefix):
                want.update(changes)
                break
    return want


def check_cut(sip, data, line_fields, cut):
    part = data[:cut]
    want = expected_after_cut(data, line_fields, cut)
    got = sip.parse(part, cut=True)
    assert (None if got is None else got.as_dict()) == want, (cut, part[-60:])
    if want is None or want["truncated"]:
        assert sip.parse(part) is None, cut
        assert sip.parse(part, cut=False) is None, cut
    else:
        assert sip.parse(part).as_dict() == want


CONTACTS_200_FIELDS = [
    (b"SIP/2.0 200 OK", dict(is_response=True, status=200, reason=b"OK")),
    (b"Via:", dict(via_count=1, via_transport=b"UDP", via_host=b"198.51.100.23", via_port=5060,
                   via_branch=b"z9hG4bK-524287-1---c4d9a2f7b5e3",
                   via_received=b"198.51.100.23", via_rport=5060)),
    (b"From:", dict(from_user=b"1001", from_tag=b"7c3e9b21")),
    (b"To:", dict(to_user=b"1001", to_tag=b"5e8f9a3c2b1d0e7f6a5b4c3d2e1f0a9b.c3e5")),
    (b"Call-ID:", dict(call_id=b"NjU4ZTk2YzJlMTk3ZmQ0YTk4ZWQzNzE2NDI0YzA2NzE")),
    (b"CSeq:", dict(cseq=2, cseq_method=b"REGISTER")),
    (b"Server:", dict(server=b"kamailio (5.7.3 (x86_64/linux))")),
    (b"Content-Length:", dict(content_length=0)),
]

WWW_401_FIELDS = [
    (b"SIP/2.0 401", dict(is_response=True, status=401, reason=b"Unauthorized")),
    (b"Via:", dict(via_count=1, via_transport=b"UDP", via_host=b"198.51.100.23", via_port=5060,
                   via_branch=b"z9hG4bK-524287-1---b3c8f1e6a4d2",
                   via_received=b"198.51.100.23", via_rport=5060)),
    (b"From:", dict(from_user=b"1001", from_tag=b"7c3e9b21")),
    (b"To:", dict(to_user=b"1001", to_tag=b"5e8f9a3c2b1d0e7f6a5b4c3d2e1f0a9b.a2c4")),
    (b"Call-ID:", dict(call_id=b"NjU4ZTk2YzJlMTk3ZmQ0YTk4ZWQzNzE2NDI0YzA2NzE")),
    (b"CSeq:", dict(cseq=1, cseq_method=b"REGISTER")),
    (b"WWW-Authenticate:", dict(has_www_authenticate=True, challenge_nonces=(KAMAILIO_NONCE,))),
    (b"Server:", dict(server=b"kamailio (5.7.3 (x86_64/linux))")),
    (b"Content-Length:", dict(content_length=0)),
]

ODD_407_FIELDS = [
    (b"SIP/2.0 407", dict(is_response=True, status=407, reason=b"Proxy Authentication Required")),
    (b"Via:", dict(via_count=1, via_transport=b"UDP", via_host=b"192.0.2.34", via_port=5060,
                   via_branch=b"z9hG4bKodd")),
    (b"Call-ID:", dict(call_id=b"odd@192.0.2.34")),
    (b"CSeq:", dict(cseq=5, cseq_method=b"INVITE")),
    (b"www-authenticate:", dict(has_www_authenticate=True, challenge_nonces=(b"n0nce-odd",))),
    (b"Proxy-Authenticate:", dict(has_proxy_authenticate=True)),
    (b'\tnonce="n0nce-folded"', dict(challenge_nonces=(b"n0nce-odd", b"n0nce-folded"))),
    (b"   stale", dict(stale=True)),
    (b"Content-Length:", dict(content_length=0)),
]


def test_cut_expectations_cover_the_whole_messages(sip):
    """Uncut, each message gives the fields its table lists: the tables are complete."""
    for data, line_fields in [(KAMAILIO_200_CONTACTS, CONTACTS_200_FIELDS),
                              (KAMAILIO_WWW_401, WWW_401_FIELDS),
                              (ODD_SPACING_407, ODD_407_FIELDS)]:
        want = expected_after_cut(data, line_fields, len(data))
        assert want["truncated"] is False
        assert fields(sip, data) == want
    assert len(KAMAILIO_200_CONTACTS) > 8000
    lines = [line for line, _ in header_lines(KAMAILIO_200_CONTACTS)]
    assert sum(line.startswith(b"Contact:") for line in lines) == 40


def test_cut_at_every_header_boundary(sip):
    data = KAMAILIO_200_CONTACTS
    for line, end in header_lines(data):
        for cut in (end - 2, end - 1, end):  # before the CR, between CR and LF, after the LF
            check_cut(sip, data, CONTACTS_200_FIELDS, cut)


def test_cut_at_every_byte_of_the_first_600(sip):
    for cut in range(601):
        check_cut(sip, KAMAILIO_200_CONTACTS, CONTACTS_200_FIELDS, cut)


def test_challenge_cut_before_and_after_its_nonce(sip):
    data = KAMAILIO_WWW_401
    www_end = next(end for line, end in header_lines(data) if line.startswith(b"WWW-"))
    for cut in range(len(data) + 1):
        check_cut(sip, data, WWW_401_FIELDS, cut)
    assert sip.parse(data[:www_end - 1], cut=True).challenge_nonces == ()
    assert sip.parse(data[:www_end], cut=True).challenge_nonces == (KAMAILIO_NONCE,)


def test_folded_challenge_cut_at_every_byte(sip):
    for cut in range(len(ODD_SPACING_407) + 1):
        check_cut(sip, ODD_SPACING_407, ODD_407_FIELDS, cut)


def test_cut_true_changes_nothing_on_closed_headers(sip):
    for data in SAMPLES.values():
        assert sip.parse(data, cut=True).as_dict() == sip.parse(data).as_dict()
    # cut inside the body: still closed headers, not truncated
    for data in (WITH_BODY_200[:-10], INVITE_PROXY_AUTH[:-50]):
        m = sip.parse(data, cut=True)
        assert m.truncated is False and m.as_dict() == sip.parse(data).as_dict()


@pytest.mark.parametrize("data, changes", [
    (b"SIP/2.0 401 Unauthorized\r\n", {}),
    (b"SIP/2.0 401 Unauthorized\r\nCall-ID: a\r\n", dict(call_id=b"a")),
    (b"SIP/2.0 401 Unauthorized\r\nCall-ID: a\r\n\r", dict(call_id=b"a")),  # empty line cut
    (b"SIP/2.0 401 Unauthorized\r\nCall-ID: a\r", {}),
    (b"SIP/2.0 401 Unauthorized\r\nCall-ID: a\r\nCSeq: 1 \x00RE", dict(call_id=b"a")),  # unread
    (b"SIP/2.0 401 Unauthorized\r\nCall-ID: a\r\nCSeq: 1 REG\rX", dict(call_id=b"a")),
    (b"SIP/2.0 401 Unauthorized\r\nCall-ID: a\r\n b", dict(call_id=b"a")),
    (b"SIP/2.0 401 Unauthorized\r\nCall-ID: a\r\n b\r\n", dict(call_id=b"a b")),
    (b"SIP/2.0 401 Unauthorized\r\nCall-ID: a\r\n b\r\n \x00", dict(call_id=b"a b")),
    (b"SIP/2.0 401 Unauthorized\r\n Via: x", {}),  # a continuation, but incomplete: unread
    (b"SIP/2.0 401 Unauthorized\r\nCSeq: 7 REGISTER\r\nCall-",
     dict(cseq=7, cseq_method=b"REGISTER")),
    (b"SIP/2.0 401 Unauthorized\nCall-ID: lf\nCSeq", dict(call_id=b"lf")),
])
def test_cut_edge_cases(sip, data, changes):
    want = dict(DEFAULTS, is_response=True, status=401, reason=b"Unauthorized", truncated=True,
                **changes)
    assert sip.parse(data, cut=True).as_dict() == want
    assert sip.parse(data) is None


@pytest.mark.parametrize("data", [
    b"SIP/2.0 401 Unauthorized",  # the start line itself is cut
    b"SIP/2.0 401 Unauthorized\r",
    b"SIP/2.0 401 Unauth\x00",
    b"SIP/2.0 401 Unauthorized\r\nCall-ID: \x00a\r\nCSeq",  # a complete line is still checked
    b"SIP/2.0 401 Unauthorized\r\nnot a header\r\nCSeq",
    b"SIP/2.0 401 Unauthorized\r\n Via: x\r\nCSeq",  # complete fold after the start line
])
def test_cut_is_still_none_for_junk(sip, data):
    assert sip.parse(data, cut=True) is None


def test_cut_on_not_sip(sip):
    cut_but_sip = {"no_empty_line", "truncated"}
    for name, data in NOT_SIP.items():
        m = sip.parse(data, cut=True)
        if name in cut_but_sip:
            assert m.truncated is True and m.status == 401, name
        else:
            assert m is None, name


def test_parse_batch_does_not_cut(sip):
    cut_off, whole = sip.parse_batch([KAMAILIO_WWW_401[:300], KAMAILIO_WWW_401])
    assert cut_off is None
    assert whole.status == 401 and whole.truncated is False


def test_truncated_message_pickles(sip):
    import pickle
    m = sip.parse(KAMAILIO_WWW_401[:400], cut=True)
    assert m.truncated and m.call_id
    assert pickle.loads(pickle.dumps(m)).as_dict() == m.as_dict()


# --- both implementations agree ------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_implementations_agree_on_corpus(both, name):
    pure, cy = both
    assert pure.parse(SAMPLES[name]).as_dict() == cy.parse(SAMPLES[name]).as_dict()


def test_implementations_agree_on_every_cut(both):
    pure, cy = both
    for data in SAMPLES.values():
        for cut in range(len(data) + 1):
            a, b = pure.parse(data[:cut], cut=True), cy.parse(data[:cut], cut=True)
            assert (a is None) == (b is None), data[:cut]
            assert a is None or a.as_dict() == b.as_dict(), data[:cut]


def test_implementations_agree_on_variations(both):
    pure, cy = both
    for data in SAMPLES.values():
        for cut in range(0, len(data), 7):
            variants = [data[:cut], data[:cut] + b"\r\n\r\n", data[:cut] + b"\r\n " + data[cut:],
                        data[:cut] + b"," + data[cut:], data[:cut] + b";" + data[cut:]]
            for v in variants:
                a, b = pure.parse(v), cy.parse(v)
                assert (a is None) == (b is None), v
                assert a is None or a.as_dict() == b.as_dict(), v


# --- the front -----------------------------------------------------------------------------

def _front(env_value):
    env = dict(os.environ)
    env.pop("FASTBAN_PURE_PYTHON", None)
    if env_value is not None:
        env["FASTBAN_PURE_PYTHON"] = env_value
    code = ("from fastban import sip; m = sip.parse(%r); "
            "print(sip.IMPLEMENTATION, m.status, sip.SipMessage.__module__)" % ASTERISK_401)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=root)
    return out.stdout.split()


def test_front_forced_pure():
    assert _front("1") == ["python", "401", "fastban.sip_pure"]


def test_front_prefers_extension():
    load_impl("fastban._sipparser")
    assert _front(None) == ["cython", "401", "fastban._sipparser"]
    assert _front("0")[0] == "cython"


def test_front_api():
    from fastban import sip
    assert sip.IMPLEMENTATION in ("cython", "python")
    assert sip.parse(KAMAILIO_407).status == 407
    assert isinstance(sip.parse(KAMAILIO_407), sip.SipMessage)
    assert [m.status for m in sip.parse_batch([KAMAILIO_407])] == [407]
