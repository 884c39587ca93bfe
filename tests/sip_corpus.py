"""Real-looking SIP messages, built in code, shared by the parser tests, fuzz tests and benchmarks.

``SAMPLES`` maps a name to the bytes of one message; ``realistic_responses(n)`` gives the mix the
capture path sees in front of a PBX under attack (mostly 401/407/403, some 100/200).
"""

import random

CRLF = b"\r\n"


def msg(*lines, body=b""):
    """Lines (bytes) joined with CRLF, closed by an empty line, then the body."""
    return CRLF.join(lines) + CRLF + CRLF + body


# Asterisk 18 chan_pjsip challenging a REGISTER from a sipvicious scan.
ASTERISK_401 = msg(
    b"SIP/2.0 401 Unauthorized",
    b"Via: SIP/2.0/UDP 203.0.113.9:5062;rport=5062;received=203.0.113.9;branch=z9hG4bK-3159829934",
    b"Call-ID: 1627369848",
    b"From: \"100\" <sip:100@198.51.100.20>;tag=6630626235316164313363340131313930343534",
    b"To: \"100\" <sip:100@198.51.100.20>;tag=z9hG4bK-3159829934",
    b"CSeq: 1 REGISTER",
    b'WWW-Authenticate: Digest realm="asterisk",nonce="1627369848/9f1c3b7e0c8a9d1e2f3a4b5c6d7e8f90",'
    b'opaque="5b1e6c1a2d3f4e5a",algorithm=md5,qop="auth"',
    b"Server: Asterisk PBX 18.9.0",
    b"Content-Length:  0",
)

# Kamailio 5 proxy challenging an INVITE.
KAMAILIO_407 = msg(
    b"SIP/2.0 407 Proxy Authentication Required",
    b"Via: SIP/2.0/UDP 192.0.2.55:5060;branch=z9hG4bK.a1b2c3d4;rport=5060;received=198.51.100.77",
    b"From: <sip:2001@sip.example.net>;tag=as6f3a1e2b",
    b"To: <sip:0044207946000@sip.example.net>;tag=1c9e1d2a8b7f6e5d4c3b2a1908f7e6d5.7f1e",
    b"Call-ID: 4c1d7a5e6f8a9b0c1d2e3f4a5b6c7d8e@192.0.2.55:5060",
    b"CSeq: 102 INVITE",
    b'Proxy-Authenticate: Digest realm="sip.example.net", nonce="ZFq2kWRatmVPpb1i2Cs/w1mjD4Y1Rb6y"',
    b"Server: kamailio (5.6.4 (x86_64/linux))",
    b"Content-Length: 0",
)

# FreeSWITCH refusing a REGISTER for a wrong password.
FREESWITCH_403 = msg(
    b"SIP/2.0 403 Forbidden",
    b"Via: SIP/2.0/UDP 203.0.113.44:5060;rport=5060;branch=z9hG4bK-d8754z-7f3d1b;received=203.0.113.44",
    b"Max-Forwards: 70",
    b"From: <sip:1001@pbx.example.com>;tag=0f8a1b2c",
    b"To: <sip:1001@pbx.example.com>;tag=Ngtm6rS3jyU1H",
    b"Call-ID: ZDk1NTg3YmQwNzQ2ODE3ZjhjMGRiNzZmNGYzZTYyYzM",
    b"CSeq: 2 REGISTER",
    b"User-Agent: FreeSWITCH-mod_sofia/1.10.9-release~64bit",
    b"Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, UPDATE, REGISTER, REFER, NOTIFY",
    b"Supported: timer, path, replaces",
    b"Content-Length: 0",
)

ASTERISK_200 = msg(
    b"SIP/2.0 200 OK",
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;rport=5060;received=192.0.2.10;branch=z9hG4bKPj2b8c7d",
    b"Call-ID: 0b5e2b1d-4f3c-4a1e-9d2b-7c6a5f4e3d2c",
    b"From: <sip:201@pbx.example.com>;tag=a2f9c81e",
    b"To: <sip:201@pbx.example.com>;tag=z9hG4bKPj2b8c7d",
    b"CSeq: 18734 REGISTER",
    b"Date: Mon, 30 Nov 2026 03:00:00 GMT",
    b"Contact: <sip:201@192.0.2.10:5060;ob>;expires=299",
    b"Expires: 300",
    b"Server: Asterisk PBX 20.5.0",
    b"Content-Length:  0",
)

KAMAILIO_100 = msg(
    b"SIP/2.0 100 trying -- your call is important to us",
    b"Via: SIP/2.0/UDP 192.0.2.55:5060;branch=z9hG4bK.a1b2c3d5;rport=5060;received=198.51.100.77",
    b"From: <sip:2001@sip.example.net>;tag=as6f3a1e2b",
    b"To: <sip:0044207946000@sip.example.net>",
    b"Call-ID: 4c1d7a5e6f8a9b0c1d2e3f4a5b6c7d8e@192.0.2.55:5060",
    b"CSeq: 103 INVITE",
    b"Server: kamailio (5.6.4 (x86_64/linux))",
    b"Content-Length: 0",
)

# What sipvicious (svwar / svmap) sends.
SIPVICIOUS_REGISTER = msg(
    b"REGISTER sip:198.51.100.20 SIP/2.0",
    b"Via: SIP/2.0/UDP 203.0.113.9:5062;branch=z9hG4bK-3159829934;rport",
    b"Max-Forwards: 70",
    b"From: \"100\" <sip:100@198.51.100.20>;tag=6630626235316164313363340131313930343534",
    b"To: \"100\" <sip:100@198.51.100.20>",
    b"User-Agent: friendly-scanner",
    b"Call-ID: 1627369848",
    b"Contact: <sip:100@203.0.113.9:5062>",
    b"CSeq: 1 REGISTER",
    b"Accept: application/sdp",
    b"Content-Length: 0",
)

SIPVICIOUS_OPTIONS = msg(
    b"OPTIONS sip:100@198.51.100.20 SIP/2.0",
    b"Via: SIP/2.0/UDP 127.0.1.1:5060;branch=z9hG4bK-2105566393;rport",
    b"Max-Forwards: 70",
    b"To: \"sipvicious\"<sip:100@1.1.1.1>",
    b"From: \"sipvicious\"<sip:100@1.1.1.1>;tag=6435343836323034313363340131333532363933303739",
    b"User-Agent: friendly-scanner",
    b"Call-ID: 571230826378098346315498",
    b"Contact: sip:100@127.0.1.1:5060",
    b"CSeq: 1 OPTIONS",
    b"Accept: application/sdp",
    b"Content-Length: 0",
)

REGISTER_WITH_AUTH = msg(
    b"REGISTER sip:pbx.example.com SIP/2.0",
    b"Via: SIP/2.0/TCP 198.51.100.7:49152;branch=z9hG4bK776asdhds;alias",
    b"From: <sip:1001@pbx.example.com>;tag=49583",
    b"To: <sip:1001@pbx.example.com>",
    b"Call-ID: 843817637684230@998sdasdh09",
    b"CSeq: 1827 REGISTER",
    b'Authorization: Digest username="1001", realm="pbx.example.com", nonce="abc", '
    b'uri="sip:pbx.example.com", response="0123456789abcdef0123456789abcdef"',
    b"User-Agent: Zoiper rv2.10.19.6",
    b"Content-Length: 0",
)

# Compact header forms (RFC 3261 7.3.3), lower-case names.
COMPACT_407 = msg(
    b"SIP/2.0 407 Proxy Authentication Required",
    b"v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds8;received=192.0.2.101;rport=40000",
    b"f: sip:alice@atlanta.example.com;tag=1928301774",
    b"t: <sip:bob@biloxi.example.com>;tag=a6c85cf",
    b"i: a84b4c76e66710@pc33.atlanta.example.com",
    b"CSeq: 314159 INVITE",
    b"m: <sip:alice@192.0.2.1>",
    b"k: timer",
    b"s: hello",
    b"c: application/sdp",
    b"e: gzip",
    b'proxy-authenticate: Digest realm="atlanta.example.com", nonce="wf84f1ceczx41ae6cbe5aea9c8e88d359"',
    b"l: 0",
)

# Folded header lines, several Via lines and comma-separated Via values.
FOLDED_MULTIVIA_401 = msg(
    b"SIP/2.0 401 Unauthorized",
    b"Via: SIP/2.0/UDP proxy2.example.net:5060;branch=z9hG4bK721e4.1;received=192.0.2.3 ,",
    b"     SIP/2.0/UDP proxy1.example.net:5060;branch=z9hG4bK721e4.0",
    b"Via: SIP/2.0/UDP 203.0.113.80:5060;branch=z9hG4bKxyz;rport=5060",
    b"From: \"Bob\"",
    b"  <sip:bob@example.net>;tag=99",
    b"To: <sip:bob@example.net>;tag=as1234",
    b"Call-ID: folded-call-id",
    b"CSeq:",
    b"\t7 REGISTER",
    b"WWW-Authenticate: Digest realm=\"example.net\",",
    b"  nonce=\"6a4f1c\"",
    b"User-Agent: Linphone Desktop/5.2.0",
    b"\t(Ubuntu)",
    b"Content-Length: 0",
)

IPV6_TCP_403 = msg(
    b"SIP/2.0 403 Forbidden",
    b"Via: SIP/2.0/TCP [2001:db8::9]:5070;branch=z9hG4bK-ipv6;received=[2001:db8::9];rport=5070",
    b"From: <sip:alice@[2001:db8::1]>;tag=ipv6from",
    b"To: <sip:alice@[2001:db8::1]>;tag=ipv6to",
    b"Call-ID: ipv6-call@2001:db8::9",
    b"CSeq: 5 REGISTER",
    b"Server: OpenSIPS (3.4.2 (x86_64/linux))",
    b"Content-Length: 0",
)

WEIRD_CASE_401 = msg(
    b"SIP/2.0 401 Unauthorized",
    b"VIA: SIP/2.0/udp 192.0.2.66;BRANCH=z9hG4bKcase;RPort;Received=192.0.2.67",
    b"CALL-ID: case-call",
    b"cseq: 9 register",
    b"FROM: <SIP:Carol@example.com>;TAG=ctag",
    b"tO: <sip:carol@example.com>;Tag=ttag",
    b"user-agent: MicroSIP/3.21.3",
    b"www-AUTHENTICATE: Digest realm=\"x\"",
    b"content-LENGTH: 0",
)

MINIMAL_RESPONSE = msg(b"SIP/2.0 403 Forbidden")

WITH_BODY_200 = msg(
    b"SIP/2.0 200 OK",
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK77",
    b"Call-ID: body@x",
    b"CSeq: 1 INVITE",
    b"Content-Type: application/sdp",
    b"Content-Length: 50",
    body=b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n",
)

SAMPLES = {
    "asterisk_401": ASTERISK_401,
    "kamailio_407": KAMAILIO_407,
    "freeswitch_403": FREESWITCH_403,
    "asterisk_200": ASTERISK_200,
    "kamailio_100": KAMAILIO_100,
    "sipvicious_register": SIPVICIOUS_REGISTER,
    "sipvicious_options": SIPVICIOUS_OPTIONS,
    "register_with_auth": REGISTER_WITH_AUTH,
    "compact_407": COMPACT_407,
    "folded_multivia_401": FOLDED_MULTIVIA_401,
    "ipv6_tcp_403": IPV6_TCP_403,
    "weird_case_401": WEIRD_CASE_401,
    "minimal_response": MINIMAL_RESPONSE,
    "with_body_200": WITH_BODY_200,
    "lf_only_401": ASTERISK_401.replace(b"\r\n", b"\n"),
}

# Inputs that are not SIP.
NOT_SIP = {
    "empty": b"",
    "crlf_keepalive": b"\r\n\r\n",
    "http": b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic\r\n\r\n",
    "no_empty_line": ASTERISK_401[:-2],
    "truncated": ASTERISK_401[:100],
    "status_too_big": ASTERISK_401.replace(b"SIP/2.0 401", b"SIP/2.0 701", 1),
    "status_two_digits": b"SIP/2.0 40 Bad\r\n\r\n",
    "sip_1_0": ASTERISK_401.replace(b"SIP/2.0 401", b"SIP/1.0 401", 1),
    "nul_in_header": ASTERISK_401.replace(b"Call-ID: ", b"Call-ID: \x00", 1),
    "bare_cr": ASTERISK_401.replace(b"CSeq: 1 REGISTER\r\n", b"CSeq: 1 REGISTER\r", 1),
    "header_without_colon": ASTERISK_401.replace(b"Call-ID:", b"Call-ID", 1),
    "space_in_header_name": ASTERISK_401.replace(b"Call-ID:", b"Call ID:", 1),
    "fold_after_start_line": b"SIP/2.0 401 Unauthorized\r\n Via: x\r\n\r\n",
    "request_two_spaces": b"REGISTER  sip:x SIP/2.0\r\n\r\n",
    "request_no_version": b"REGISTER sip:x\r\n\r\n",
    "request_lower_version": b"REGISTER sip:x sip/2.0\r\n\r\n",
    "oversized": ASTERISK_401[:-4] + b"\r\nX-Pad: " + b"a" * 65536 + b"\r\n\r\n",
    "binary": bytes(range(256)),
    "rtp_like": b"\x80\x00\x12\x34" + b"\x00" * 160,
}


def realistic_responses(count=1000, seed=7):
    """The responses a guard sees on the capture path, in a realistic mix, as a list of bytes."""
    rng = random.Random(seed)
    weighted = [
        (ASTERISK_401, 30), (KAMAILIO_407, 15), (FREESWITCH_403, 20), (ASTERISK_200, 15),
        (KAMAILIO_100, 10), (COMPACT_407, 5), (IPV6_TCP_403, 5),
    ]
    population = [m for m, _ in weighted]
    weights = [w for _, w in weighted]
    out = []
    for i in range(count):
        base = rng.choices(population, weights)[0]
        # vary the Call-ID and branch so the corpus is not one cached object
        out.append(base.replace(b"z9hG4bK", b"z9hG4bK%06d" % i, 1))
    return out
