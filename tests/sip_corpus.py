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

# --- Digest challenges and credentials ------------------------------------------------------

# Kamailio auth module, www_challenge() on a REGISTER (its order: realm, nonce, qop, algorithm),
# with an opaque added.
KAMAILIO_WWW_401 = msg(
    b"SIP/2.0 401 Unauthorized",
    b"Via: SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK-524287-1---b3c8f1e6a4d2;rport=5060;"
    b"received=198.51.100.23",
    b"From: <sip:1001@sip.example.net>;tag=7c3e9b21",
    b"To: <sip:1001@sip.example.net>;tag=5e8f9a3c2b1d0e7f6a5b4c3d2e1f0a9b.a2c4",
    b"Call-ID: NjU4ZTk2YzJlMTk3ZmQ0YTk4ZWQzNzE2NDI0YzA2NzE",
    b"CSeq: 1 REGISTER",
    b'WWW-Authenticate: Digest realm="sip.example.net", nonce="ZbQ3sWW0NoVt2ZKaXZ0CYRCn0Cd3nUSx", '
    b'opaque="2b4c6d8e0f1a3b5c", qop="auth", algorithm=MD5',
    b"Server: kamailio (5.7.3 (x86_64/linux))",
    b"Content-Length: 0",
)

# Kamailio proxy_challenge() on an INVITE.
KAMAILIO_PROXY_407 = msg(
    b"SIP/2.0 407 Proxy Authentication Required",
    b"Via: SIP/2.0/UDP 203.0.113.77:5080;branch=z9hG4bK-d8754z-9a1c2b3d4e5f;rport=5080;"
    b"received=203.0.113.77",
    b"From: \"2002\" <sip:2002@sip.example.net>;tag=1f2e3d4c",
    b"To: <sip:00972599123456@sip.example.net>;tag=5e8f9a3c2b1d0e7f6a5b4c3d2e1f0a9b.b7d1",
    b"Call-ID: 3f6a2c1e-8b7d-4e5f-a9c0-1d2e3f4a5b6c",
    b"CSeq: 2 INVITE",
    b'Proxy-Authenticate: Digest realm="sip.example.net", '
    b'nonce="ZbQ3xGW0N5hUq0vB0s1aRy0RS5eOQm7k", opaque="2b4c6d8e0f1a3b5c", qop="auth", '
    b"algorithm=MD5",
    b"Server: kamailio (5.7.3 (x86_64/linux))",
    b"Content-Length: 0",
)

# Asterisk 21 chan_pjsip offering SHA-256 and MD5: one WWW-Authenticate per algorithm, one nonce.
ASTERISK_SHA256_MD5_401 = msg(
    b"SIP/2.0 401 Unauthorized",
    b"Via: SIP/2.0/UDP 192.0.2.140:5060;rport=5060;received=192.0.2.140;"
    b"branch=z9hG4bKPj8f2d6c1a-3b4e-4f5a-9c8d-7e6f5a4b3c2d",
    b"Call-ID: 8a3f0e2c-5d6b-4c7a-9e8f-1a2b3c4d5e6f",
    b"From: <sip:3001@pbx.example.org>;tag=b9c8d7e6-f5a4",
    b"To: <sip:3001@pbx.example.org>;tag=z9hG4bKPj8f2d6c1a-3b4e-4f5a-9c8d-7e6f5a4b3c2d",
    b"CSeq: 39017 REGISTER",
    b'WWW-Authenticate: Digest realm="asterisk",'
    b'nonce="1718031234/5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b",opaque="6f1e2d3c4b5a6978",'
    b'algorithm=SHA-256,qop="auth"',
    b'WWW-Authenticate: Digest realm="asterisk",'
    b'nonce="1718031234/5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b",opaque="6f1e2d3c4b5a6978",'
    b'algorithm=MD5,qop="auth"',
    b"Server: Asterisk PBX 21.3.0",
    b"Content-Length:  0",
)

# FreeSWITCH (sofia-sip) challenging an INVITE; its nonces are UUIDs.
FREESWITCH_407 = msg(
    b"SIP/2.0 407 Proxy Authentication Required",
    b"Via: SIP/2.0/UDP 198.51.100.61:5060;rport=5060;branch=z9hG4bK-2b1a3c;received=198.51.100.61",
    b"From: <sip:1002@pbx.example.com>;tag=9d8c7b6a",
    b"To: <sip:5551212@pbx.example.com>;tag=Hc0F1Ny3Qm2Kp",
    b"Call-ID: YjM0OGQ1ZTZmNzg5MGExYjJjM2Q0ZTVmNmE3Yjg5MGE",
    b"CSeq: 102 INVITE",
    b"User-Agent: FreeSWITCH-mod_sofia/1.10.11-release~64bit",
    b"Accept: application/sdp",
    b"Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, UPDATE, REGISTER, REFER, NOTIFY",
    b"Supported: timer, path, replaces",
    b'Proxy-Authenticate: Digest realm="pbx.example.com", '
    b'nonce="c5f3a0d2-6e1b-4c8a-b7d9-2f4e6a8c0b1d", algorithm=MD5, qop="auth"',
    b"Content-Length: 0",
)

# A 401 to a REGISTER sent with an expired nonce: stale, written in upper case.
STALE_401 = msg(
    b"SIP/2.0 401 Unauthorized",
    b"Via: SIP/2.0/UDP 192.0.2.201:5060;branch=z9hG4bK3f1e7a;rport=5060;received=192.0.2.201",
    b"From: <sip:4004@voip.example.com>;tag=a1b2c3",
    b"To: <sip:4004@voip.example.com>;tag=37GkEhwl6",
    b"Call-ID: 7e1f3a5b9c2d@192.0.2.201",
    b"CSeq: 21 REGISTER",
    b'WWW-Authenticate: Digest realm="voip.example.com", nonce="6661c0e8000012a9f3b5b8e0d4c2a7f1", '
    b'qop="auth", stale=TRUE, algorithm=MD5',
    b"Server: OpenSIPS (3.4.5 (x86_64/linux))",
    b"Content-Length: 0",
)

# sipp's [authentication] answering KAMAILIO_WWW_401 (no blanks, cnonce is not the nonce).
SIPP_REGISTER_AUTH = msg(
    b"REGISTER sip:sip.example.net SIP/2.0",
    b"Via: SIP/2.0/UDP 203.0.113.5:5061;branch=z9hG4bK-31337-2-1",
    b"From: <sip:1001@sip.example.net>;tag=31337SIPpTag002",
    b"To: <sip:1001@sip.example.net>",
    b"Call-ID: 2-31337@203.0.113.5",
    b"CSeq: 2 REGISTER",
    b"Contact: sip:1001@203.0.113.5:5061",
    b'Authorization: Digest username="1001",realm="sip.example.net",uri="sip:sip.example.net",'
    b'nonce="ZbQ3sWW0NoVt2ZKaXZ0CYRCn0Cd3nUSx",response="8d1c3f0a6e2b4d7c9a1e3f5b7d9c0a2e",'
    b'algorithm=MD5,cnonce="6b8b4567",qop=auth,nc=00000001',
    b"Max-Forwards: 70",
    b"Expires: 3600",
    b"Content-Length: 0",
)

# A softphone's INVITE answering KAMAILIO_PROXY_407.
_SDP = (b"v=0\r\no=Z 0 1 IN IP4 203.0.113.77\r\ns=Z\r\nc=IN IP4 203.0.113.77\r\nt=0 0\r\n"
        b"m=audio 8000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n")
INVITE_PROXY_AUTH = msg(
    b"INVITE sip:00972599123456@sip.example.net SIP/2.0",
    b"Via: SIP/2.0/UDP 203.0.113.77:5080;branch=z9hG4bK-d8754z-0b1c2d3e4f5a;rport",
    b"Max-Forwards: 70",
    b"Contact: <sip:2002@203.0.113.77:5080>",
    b"To: <sip:00972599123456@sip.example.net>",
    b"From: \"2002\" <sip:2002@sip.example.net>;tag=1f2e3d4c",
    b"Call-ID: 3f6a2c1e-8b7d-4e5f-a9c0-1d2e3f4a5b6c",
    b"CSeq: 3 INVITE",
    b'Proxy-Authorization: Digest username="2002", realm="sip.example.net", '
    b'nonce="ZbQ3xGW0N5hUq0vB0s1aRy0RS5eOQm7k", uri="sip:00972599123456@sip.example.net", '
    b'response="f0e1d2c3b4a5968778695a4b3c2d1e0f", cnonce="a1b2c3d4", nc=00000001, qop=auth, '
    b'algorithm=MD5, opaque="2b4c6d8e0f1a3b5c"',
    b"User-Agent: Z 5.6.2 v2.10.20.2",
    b"Content-Type: application/sdp",
    b"Content-Length: %d" % len(_SDP),
    body=_SDP,
)

# Escaped quotes and backslashes in quoted-strings; a "nonce=" inside the realm is not a param.
ESCAPED_NONCE_401 = msg(
    b"SIP/2.0 401 Unauthorized",
    b"Via: SIP/2.0/UDP 192.0.2.33:5060;branch=z9hG4bKesc",
    b"Call-ID: escaped@192.0.2.33",
    b"CSeq: 4 REGISTER",
    b'WWW-Authenticate: Digest realm="lab \\"west\\", nonce=fake", '
    b'nonce="a\\"b\\\\c/\\"d", qop="auth"',
    b"Content-Length: 0",
)

# Odd spacing: lower-case name, no blank after the colon, blanks and tabs around '=' and ',',
# an upper-case param name, a trailing comma; and a Proxy-Authenticate folded inside its params.
ODD_SPACING_407 = msg(
    b"SIP/2.0 407 Proxy Authentication Required",
    b"Via: SIP/2.0/UDP 192.0.2.34:5060;branch=z9hG4bKodd",
    b"Call-ID: odd@192.0.2.34",
    b"CSeq: 5 INVITE",
    b'www-authenticate:Digest   realm = "odd.example"\t,NONCE= "n0nce-odd" ,  qop = auth ,'
    b"algorithm=MD5,",
    b'Proxy-Authenticate: Digest realm="odd.example",',
    b'\tnonce="n0nce-folded",',
    b"   stale = \"true\"",
    b"Content-Length: 0",
)

# An unclosed quote makes its line give no nonce (nor its stale); the next line still counts.
UNCLOSED_QUOTE_401 = msg(
    b"SIP/2.0 401 Unauthorized",
    b"Via: SIP/2.0/UDP 192.0.2.35:5060;branch=z9hG4bKunclosed",
    b"Call-ID: unclosed@192.0.2.35",
    b"CSeq: 6 REGISTER",
    b'WWW-Authenticate: Digest realm="broken.example", stale=true, nonce="a1b2c3d4',
    b'WWW-Authenticate: Digest realm="broken.example", nonce="e5f6a7b8"',
    b"Content-Length: 0",
)

# --- a long response for the cut-off tests ---------------------------------------------------

# Kamailio registrar 200 OK listing 40 bindings of one AOR (a SIP trunk, or a scan that
# registered many contacts).  Kamailio writes them comma-separated on one Contact line; here
# each is its own Contact line (the same thing by RFC 3261 7.3.1), so that the message has a
# header boundary every ~170 bytes over several KB.
KAMAILIO_200_CONTACTS = msg(
    b"SIP/2.0 200 OK",
    b"Via: SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK-524287-1---c4d9a2f7b5e3;rport=5060;"
    b"received=198.51.100.23",
    b"From: <sip:1001@sip.example.net>;tag=7c3e9b21",
    b"To: <sip:1001@sip.example.net>;tag=5e8f9a3c2b1d0e7f6a5b4c3d2e1f0a9b.c3e5",
    b"Call-ID: NjU4ZTk2YzJlMTk3ZmQ0YTk4ZWQzNzE2NDI0YzA2NzE",
    b"CSeq: 2 REGISTER",
    *[b"Contact: <sip:1001@203.0.113.%d:%d;transport=udp;rinstance=%016x>;expires=%d;"
      b'received="sip:203.0.113.%d:%d";'
      b'+sip.instance="<urn:uuid:0f1e2d3c-4b5a-6978-8695-a4b3c2d1%04x>";reg-id=1'
      % (10 + k, 50000 + 7 * k, 0x5A17C0DE00000000 + 977 * k, 3600 - 13 * k, 10 + k,
         50000 + 7 * k, k)
      for k in range(40)],
    b"Server: kamailio (5.7.3 (x86_64/linux))",
    b"Content-Length: 0",
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
    "kamailio_www_401": KAMAILIO_WWW_401,
    "kamailio_proxy_407": KAMAILIO_PROXY_407,
    "asterisk_sha256_md5_401": ASTERISK_SHA256_MD5_401,
    "freeswitch_407": FREESWITCH_407,
    "stale_401": STALE_401,
    "sipp_register_auth": SIPP_REGISTER_AUTH,
    "invite_proxy_auth": INVITE_PROXY_AUTH,
    "escaped_nonce_401": ESCAPED_NONCE_401,
    "odd_spacing_407": ODD_SPACING_407,
    "unclosed_quote_401": UNCLOSED_QUOTE_401,
    "kamailio_200_contacts": KAMAILIO_200_CONTACTS,
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
