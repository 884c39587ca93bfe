"""The SIP parser, pinned on real-looking messages; every test runs against both implementations."""

import importlib
import os
import subprocess
import sys

import pytest

from sip_corpus import (
    ASTERISK_200, ASTERISK_401, COMPACT_407, FOLDED_MULTIVIA_401, FREESWITCH_403, IPV6_TCP_403,
    KAMAILIO_100, KAMAILIO_407, MINIMAL_RESPONSE, NOT_SIP, REGISTER_WITH_AUTH, SAMPLES,
    SIPVICIOUS_OPTIONS, SIPVICIOUS_REGISTER, WEIRD_CASE_401, WITH_BODY_200, msg,
    realistic_responses,
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
    for data in (ASTERISK_401, FOLDED_MULTIVIA_401, SIPVICIOUS_OPTIONS):
        m = sip.parse(data)
        assert pickle.loads(pickle.dumps(m)).as_dict() == m.as_dict()


def test_message_is_read_only_in_cython():
    c = load_impl("fastban._sipparser")
    m = c.parse(ASTERISK_401)
    with pytest.raises(AttributeError):
        m.status = 200
    assert "401" in repr(m)


# --- both implementations agree ------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_implementations_agree_on_corpus(both, name):
    pure, cy = both
    assert pure.parse(SAMPLES[name]).as_dict() == cy.parse(SAMPLES[name]).as_dict()


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
