"""Fuzz: mutated and random input never crashes either parser, and both give the same answer,
with and without cut=True."""

import importlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip_corpus import NOT_SIP, SAMPLES

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

pure = importlib.import_module("fastban.sip_pure")
try:
    cy = importlib.import_module("fastban._sipparser")
except ImportError as exc:  # pragma: no cover - depends on the build
    cy = None
    _missing = (f"fastban._sipparser is not built ({exc}); "
                "run: .venv/bin/python setup.py build_ext --inplace")


@pytest.fixture(autouse=True)
def _need_extension():
    if cy is None:
        if IN_CI:
            pytest.fail(_missing)
        pytest.skip(_missing)


FUZZ = settings(max_examples=2000, deadline=1000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SEEDS = sorted(SAMPLES.values()) + [NOT_SIP["http"], NOT_SIP["fold_after_start_line"]]

# bytes that matter to the grammar, so mutations hit interesting paths more often than chance
INTERESTING = b"\r\n \t:;,=<>@[]\"\\/0123456789\x00\x7f\xff"


def agree(data, cut):
    """Both implementations return None or a SipMessage, never raise, and agree."""
    a = pure.parse(data, cut=cut)
    b = cy.parse(data, cut=cut)
    assert a is None or isinstance(a, pure.SipMessage)
    assert b is None or isinstance(b, cy.SipMessage)
    assert (a is None) == (b is None), (data, cut)
    if a is not None:
        assert a.as_dict() == b.as_dict(), (data, cut)
    return a


def check(data):
    """agree() in both modes; cut=True gives the cut=False answer whenever that is a message,
    and marks truncated exactly the messages cut=False refuses."""
    whole = agree(data, False)
    cut = agree(data, True)
    if whole is not None:
        assert cut is not None and cut.as_dict() == whole.as_dict(), data
    elif cut is not None:
        assert cut.truncated, data
    return whole


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["truncate", "flip", "set", "insert", "delete", "dup"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "truncate":
            del data[pos:]
        elif kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[pos] = draw(st.sampled_from(INTERESTING))
        elif kind == "insert":
            chunk = draw(st.one_of(
                st.binary(max_size=8),
                st.sampled_from([b"\r\n", b"\r\n ", b"\r\n\r\n", b",", b";rport", b";branch=",
                                 b"[", b"]", b":", b'"', b"<", b">", b"@", b"\t", b"\\",
                                 b", nonce=", b'nonce="', b", stale=true", b", Digest ",
                                 b"\r\nWWW-Authenticate: Digest ", b"=", b" = "]),
            ))
            data[pos:pos] = chunk
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        else:  # duplicate a slice, e.g. a header line
            end = min(len(data), pos + draw(st.integers(1, 80)))
            data[pos:pos] = data[pos:end]
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_messages(data):
    check(data)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data):
    check(data)


@settings(max_examples=300, deadline=1000, derandomize=True, database=None)
@given(st.binary(max_size=200), st.sampled_from([b"SIP/2.0 401 Unauthorized\r\n",
                                                  b"REGISTER sip:x SIP/2.0\r\n"]))
def test_random_headers_after_valid_start_line(body, start):
    check(start + body)
    check(start + body + b"\r\n\r\n")


@settings(max_examples=200, deadline=1000, derandomize=True, database=None)
@given(st.lists(st.sampled_from([
    b"Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKx;rport;received=10.0.0.1",
    b"v: SIP/2.0/TCP 10.0.0.2 , SIP/2.0/UDP h:1",
    b"From: \"a\\\"b\" <sip:u:p@h>;tag=1", b"f: sip:u@h;tag=2", b"To: <sip:x@y>",
    b"Call-ID: abc", b"i: def", b"CSeq: 7 REGISTER", b"l: 0", b"Server: x", b"User-Agent: y",
    b" folded", b"\tfolded", b"WWW-Authenticate: Digest", b"X-Other: z",
    b'WWW-Authenticate: Digest realm="r", nonce="n1", qop="auth"',
    b'Proxy-Authenticate: Digest nonce=n2,stale=TRUE', b'Authorization: Digest nonce="a\\"b"',
    b'Proxy-Authorization: Digest username="u", nonce="n3"', b' nonce="folded",', b"\tstale=true",
]), max_size=12))
def test_header_soup(lines):
    head = b"\r\n".join([b"SIP/2.0 407 Proxy Authentication Required"] + lines)
    check(head + b"\r\n\r\n")
    check(head)  # not closed: None, or with cut=True the complete lines
    check(head + b"\r\n")


AUTH_ATOMS = [b"Digest", b"Basic", b" ", b"\t", b",", b"=", b'"', b"\\", b"nonce", b"NONCE",
              b"stale", b"true", b"TRUE", b"realm", b"x", b"\xff", b'""', b'"tr\\ue"', b"cnonce",
              b"\r\n "]

AUTH_NAMES = [b"WWW-Authenticate", b"Proxy-Authenticate", b"Authorization", b"Proxy-Authorization"]


def check_auth_header(name, value):
    head = b"SIP/2.0 401 Unauthorized\r\n" + name + b": " + value
    check(head + b"\r\n\r\n")
    check(head + b"\r\n" + name + b": Digest nonce=second\r\n\r\n")
    check(head + b"\r\n")  # headers not closed: read with cut=True only


@settings(max_examples=500, deadline=1000, derandomize=True, database=None)
@given(st.lists(st.sampled_from(AUTH_ATOMS), max_size=16), st.sampled_from(AUTH_NAMES))
def test_auth_value_soup(atoms, name):
    check_auth_header(name, b"".join(atoms))


# Auth values shaped like the grammar, with what breaks it mixed in: a missing comma (a blank as
# separator), folds, stray quotes and backslashes inside quoted-strings, empty values.
QUOTED_CONTENT = st.lists(st.sampled_from([b"a", b"Z", b"0", b"/", b" ", b"\t", b",", b"=", b";",
                                          b'\\"', b"\\\\", b"\\", b'"', b"\xff"]),
                          max_size=8).map(b"".join)
AUTH_PARAM = st.builds(
    lambda name, eq, value: name + eq + value,
    st.sampled_from([b"nonce", b"NONCE", b"stale", b"Stale", b"realm", b"cnonce", b"qop"]),
    st.sampled_from([b"=", b" = ", b"\t=\t", b"= "]),
    st.one_of(st.sampled_from([b"true", b"TRUE", b'"true"', b'"tr\\ue"', b'"TRUE\\"', b"false",
                               b"abc-123", b"", b'""']),
              QUOTED_CONTENT.map(lambda content: b'"' + content + b'"')),
)
AUTH_ELEMENT = st.one_of(AUTH_PARAM, AUTH_PARAM.map(lambda param: b"Digest " + param),
                         st.sampled_from([b"", b"Basic", b"Digest"]))
AUTH_SEPARATOR = st.sampled_from([b",", b", ", b" ,", b"\t,\t", b" ", b"\r\n ,", b",\r\n\t"])


@st.composite
def auth_values(draw):
    value = draw(st.sampled_from([b"Digest ", b"Digest\t", b"digest  ", b"", b"Digest"]))
    value += draw(AUTH_PARAM)
    for element in draw(st.lists(AUTH_ELEMENT, max_size=6)):
        value += draw(AUTH_SEPARATOR) + element
    return value


@settings(max_examples=1500, deadline=1000, derandomize=True, database=None)
@given(auth_values(), st.sampled_from(AUTH_NAMES))
def test_auth_values(value, name):
    check_auth_header(name, value)


def test_oversized_and_huge_inputs_are_not_sip():
    big = SAMPLES["asterisk_401"] + b"x" * 70000
    assert check(big) is None
    assert check(b"SIP/2.0 401 Unauthorized\r\n" + b"A" * 200000) is None
    # a long run of folded lines under the size limit does not hang
    folded = b"SIP/2.0 401 Unauthorized\r\nCall-ID: a\r\n" + b" b\r\n" * 16000 + b"\r\n"
    m = check(folded)
    assert m is not None and len(m.call_id) == 1 + 2 * 16000


def test_batch_agrees():
    packets = SEEDS + [s[: len(s) // 2] for s in SEEDS] + [b"\xff" * 40]
    a = pure.parse_batch(packets)
    b = cy.parse_batch(packets)
    assert [x.as_dict() if x else None for x in a] == [x.as_dict() if x else None for x in b]
    assert all(x is None or not x.truncated for x in b)  # parse_batch never cuts
