"""Pure-Python SIP parser: the fallback, and the reference for ``fastban._sipparser``.

Both modules expose the same API (``parse``, ``parse_batch``, ``SipMessage``, ``MAX_SIZE``) and
must give identical results; ``tests/test_sip_parser.py`` and ``tests/test_sip_fuzz.py`` run
against both.  Everything works on ``bytes``; nothing is decoded to ``str``.

What counts as SIP (anything else gives ``None``, never an exception):

* at most ``MAX_SIZE`` (65535) bytes and not empty;
* a start line that is exactly ``SIP/2.0 NNN[ reason]`` (NNN = 100..699) or
  ``METHOD SP request-uri SP SIP/2.0`` (method a token, single spaces, version upper-case);
  leading empty lines are not skipped;
* lines end in CRLF or a bare LF; the header section must be closed by an empty line (see
  "Cut-off messages" below for ``cut=True``); the body after it is ignored, Content-Length is
  not checked against it;
* no control bytes (0x00-0x1f except HT, and 0x7f; a CR not followed by LF) before that empty
  line; bytes >= 0x80 are allowed in values;
* every header line is ``name [SP/HT] ":" value`` with a token name; a line starting with SP/HT
  continues the previous header (not allowed right after the start line).

How fields are read:

* header names are case-insensitive and the compact forms v i f t l (and the ignored m k s c e)
  are understood; a folded value is its stripped pieces joined by one space;
* Call-ID, CSeq, From, To, User-Agent, Server, Content-Length: the first header wins;
* Via: every comma-separated non-empty value of every Via line counts in ``via_count``; the top
  Via is the first one.  If its ``SIP/2.0/TRANSPORT host[:port]`` part is malformed (e.g. an
  unbracketed IPv6 address, a port over 65535, junk before the first ``;``) all ``via_*``
  fields except ``via_count`` keep their defaults.  Transport is returned as written.  Brackets
  are stripped from an IPv6 host and from ``received=``.  Parameter names are case-insensitive;
  the first occurrence wins; values are stripped of blanks but otherwise as written.
  ``rport`` is -1 when absent, 0 when present without a (valid, <= 65535) number.
* From/To: ``"display" <uri>;params``, ``display <uri>;params`` or ``uri;params``; the user is
  the part of the URI between ``scheme:`` and ``@`` (a ``:password`` is cut off; b"" when the
  URI has no ``@``, e.g. ``tel:``).  A malformed value (unclosed quote or ``<``) gives b"" for
  user and tag.
* CSeq: ``number method``; a number that is not 1-10 digits <= 2**31-1 gives -1.
  Content-Length: the same rule.
* ``has_*`` flags report the presence of WWW-Authenticate, Proxy-Authenticate, Authorization and
  Proxy-Authorization header lines.
* Digest nonces: ``challenge_nonces`` holds the ``nonce`` of every WWW-Authenticate and
  Proxy-Authenticate line, ``credential_nonces`` that of every Authorization and
  Proxy-Authorization line, in message order, at most ``MAX_NONCES`` (4) each (later ones are
  not kept); a line without a nonce adds nothing.  ``stale`` is True when a WWW-Authenticate
  or Proxy-Authenticate line has ``stale=true`` (value case-insensitive, quoted or not).  The
  value of these four headers (unfolded and stripped like any other) must be, with blank =
  SP/HT::

      value     = challenge *( *blank "," *blank element )
      element   = challenge / param / ""
      challenge = scheme [ 1*blank param ]
      param     = name *blank "=" *blank ( token / quoted-string )

  scheme and name are tokens, the name case-insensitive; in a quoted-string a backslash
  escapes the next byte.  Several challenges on one line ("Digest ..., Digest ...") are not told
  apart: the params are taken by name.  A value that does not match (an unclosed quote, a
  missing comma, ...) gives neither nonce nor stale for that line; the message still parses.
  The nonce of a line is its first ``nonce`` param, unescaped and without the quotes; when that
  one is empty or longer than ``MAX_NONCE_SIZE`` (256) bytes the line gives no nonce.

Cut-off messages (an IP first fragment, a capture cut at a length): with ``parse(data,
cut=True)`` a header section that is not closed by the empty line still parses: every header
line that is complete (ended by LF) is read, as a folded header made of its complete lines, and
the incomplete last line is dropped unread (whatever its bytes; a cut continuation line too);
``truncated`` is then True.  The start line must be complete.  A header whose continuation
lines were cut off entirely cannot be told from a complete one: its value is what arrived.
With a closed header section ``cut=True`` changes nothing (``truncated`` False).  The parser
does not judge what is missing: a caller must treat a truncated message without ``call_id`` or
with ``cseq == -1`` as unusable.  With ``cut=False`` (the default, and ``parse_batch``) an
unclosed header section gives None.

``parse`` takes bytes (bytearray and memoryview are copied to bytes); any other type is a
programming error and raises TypeError.  Only the first message in the buffer is read: callers
that see several messages in one TCP segment split them first.  Nothing is asserted about the
body, so a capture cut inside the body still parses, but one cut inside the headers does not
unless ``cut=True``.
"""

import re

__all__ = ["MAX_NONCES", "MAX_NONCE_SIZE", "MAX_SIZE", "SipMessage", "parse", "parse_batch"]

MAX_SIZE = 65535
MAX_NONCES = 4          # nonces kept per tuple
MAX_NONCE_SIZE = 256    # longer nonces are not returned
_INT_MAX = 2147483647

_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN_CHAR = rb"[A-Za-z0-9\-.!%*_+`'~]"
_TOKEN = re.compile(_TOKEN_CHAR + rb"+")
_WS = b" \t"

# One element of an auth header value and the comma after it (see the docstring's grammar):
# ``first`` is a param name, or a scheme when ``name`` (after a blank) follows it or when no
# value does.  Possessive quantifiers: every token is as long as it can be, nothing backtracks.
_AUTH_ELEMENT = re.compile(
    rb"[ \t]*+(?:(?P<first>" + _TOKEN_CHAR + rb"++)[ \t]*+"
    rb"(?:(?:(?<=[ \t])(?P<name>" + _TOKEN_CHAR + rb"++)[ \t]*+)?=[ \t]*+"
    rb"(?:(?P<token>" + _TOKEN_CHAR + rb"++)|\"(?P<quoted>(?:[^\"\\]++|\\.)*+)\"))?"
    rb")?[ \t]*+(?:(?P<comma>,)|\Z)",
    re.S)
_ESCAPED_BYTE = re.compile(rb"\\(.)", re.S)

FIELDS = (
    "is_response", "status", "reason", "method", "request_uri", "call_id", "cseq",
    "cseq_method", "via_count", "via_transport", "via_host", "via_port", "via_branch",
    "via_received", "via_rport", "from_user", "from_tag", "to_user", "to_tag", "user_agent",
    "server", "content_length", "has_www_authenticate", "has_proxy_authenticate",
    "has_authorization", "has_proxy_authorization", "challenge_nonces", "credential_nonces",
    "stale", "truncated",
)


class SipMessage:
    """One parsed SIP message; the fields are listed in ``FIELDS`` and ``as_dict()``."""

    __slots__ = FIELDS

    def __init__(self):
        self.is_response = False
        self.status = 0
        self.reason = b""
        self.method = b""
        self.request_uri = b""
        self.call_id = b""
        self.cseq = -1
        self.cseq_method = b""
        self.via_count = 0
        self.via_transport = b""
        self.via_host = b""
        self.via_port = 0
        self.via_branch = b""
        self.via_received = b""
        self.via_rport = -1
        self.from_user = b""
        self.from_tag = b""
        self.to_user = b""
        self.to_tag = b""
        self.user_agent = b""
        self.server = b""
        self.content_length = -1
        self.has_www_authenticate = False
        self.has_proxy_authenticate = False
        self.has_authorization = False
        self.has_proxy_authorization = False
        self.challenge_nonces = ()
        self.credential_nonces = ()
        self.stale = False
        self.truncated = False

    def as_dict(self):
        return {name: getattr(self, name) for name in FIELDS}

    def __repr__(self):
        if self.is_response:
            start = f"{self.status} {self.reason!r}"
        else:
            start = f"{self.method!r} {self.request_uri!r}"
        return f"<SipMessage {start} call_id={self.call_id!r} cseq={self.cseq}>"


def _number(value):
    """1-10 ASCII digits <= 2**31-1 -> int, else -1."""
    if 0 < len(value) <= 10 and value.isdigit():
        number = int(value)
        if number <= _INT_MAX:
            return number
    return -1


def _parse_top_via(msg, v):
    """``SIP/2.0/UDP host[:port][;params]`` (v stripped, not empty) into msg.via_*."""
    n = len(v)
    i = 0
    parts = []
    for k in range(3):
        while i < n and v[i] in _WS:
            i += 1
        m = _TOKEN.match(v, i)
        if m is None:
            return
        parts.append(m.group())
        i = m.end()
        while i < n and v[i] in _WS:
            i += 1
        if k < 2:
            if i >= n or v[i] != 0x2F:  # '/'
                return
            i += 1
    if i < n and v[i] == 0x5B:  # '['
        j = v.find(b"]", i + 1)
        if j < 0:
            return
        host = v[i + 1:j]
        i = j + 1
    else:
        start = i
        while i < n and v[i] not in b":; \t":
            i += 1
        host = v[start:i]
    if not host:
        return
    while i < n and v[i] in _WS:
        i += 1
    port = 0
    if i < n and v[i] == 0x3A:  # ':'
        i += 1
        while i < n and v[i] in _WS:
            i += 1
        start = i
        while i < n and 0x30 <= v[i] <= 0x39:
            i += 1
        digits = v[start:i]
        if not digits or len(digits) > 5 or int(digits) > 65535:
            return
        port = int(digits)
        while i < n and v[i] in _WS:
            i += 1
    if i < n and v[i] != 0x3B:  # ';'
        return
    msg.via_transport = parts[2]
    msg.via_host = host
    msg.via_port = port
    seen_branch = seen_received = seen_rport = False
    for param in v[i + 1:].split(b";") if i < n else ():
        name, eq, value = param.partition(b"=")
        name = name.strip(_WS).lower()
        value = value.strip(_WS)
        if name == b"branch":
            if not seen_branch:
                seen_branch = True
                msg.via_branch = value
        elif name == b"received":
            if not seen_received:
                seen_received = True
                if len(value) >= 2 and value[0] == 0x5B and value[-1] == 0x5D:
                    value = value[1:-1]
                msg.via_received = value
        elif name == b"rport":
            if not seen_rport:
                seen_rport = True
                port = _number(value)
                msg.via_rport = port if 0 < port <= 65535 else 0


def _parse_addr(v):
    """From/To value (stripped) -> (user, tag)."""
    n = len(v)
    if v[:1] == b'"':
        i = 1
        while i < n:
            c = v[i]
            if c == 0x5C:  # backslash escapes the next byte
                i += 2
                continue
            if c == 0x22:
                break
            i += 1
        if i >= n:
            return b"", b""
        lt = v.find(b"<", i + 1)
        if lt < 0:
            return b"", b""
    else:
        lt = v.find(b"<")
    if lt >= 0:
        gt = v.find(b">", lt + 1)
        if gt < 0:
            return b"", b""
        uri = v[lt + 1:gt]
        params = v[gt + 1:]
    else:
        semi = v.find(b";")
        if semi < 0:
            uri, params = v, b""
        else:
            uri, params = v[:semi], v[semi:]
    user = b""
    colon = uri.find(b":")
    if colon > 0:
        rest = uri[colon + 1:]
        at = rest.find(b"@")
        if at >= 0:
            user = rest[:at].split(b":", 1)[0]
    tag = b""
    for param in params.split(b";")[1:]:
        name, eq, value = param.partition(b"=")
        if name.strip(_WS).lower() == b"tag":
            tag = value.strip(_WS)
            break
    return user, tag


def _auth_params(value):
    """Auth header value (stripped) -> (nonce or None, stale); (None, False) when malformed."""
    nonce = None
    seen_nonce = stale = False
    pos = 0
    first_element = True
    while True:
        m = _AUTH_ELEMENT.match(value, pos)
        if m is None:
            return None, False
        first, name, token, quoted, comma = m.groups()
        param = token if quoted is None else quoted
        if name is None and param is not None:
            name = first  # a param without a scheme before it
            if first_element:
                return None, False
        elif first_element and first is None:
            return None, False
        first_element = False
        if name is not None:
            if quoted is not None and b"\\" in quoted:
                param = _ESCAPED_BYTE.sub(rb"\1", quoted)
            name = name.lower()
            if name == b"nonce":
                if not seen_nonce:
                    seen_nonce = True
                    nonce = param
            elif name == b"stale" and param.lower() == b"true":
                stale = True
        if comma is None:
            break
        pos = m.end()
    if nonce is not None and not 0 < len(nonce) <= MAX_NONCE_SIZE:
        nonce = None
    return nonce, stale


def _start_line(msg, line):
    if line[:8] == b"SIP/2.0 " and len(line) >= 11 and line[8] in b"123456" \
            and line[9:11].isdigit() \
            and (len(line) == 11 or line[11] == 0x20):
        msg.is_response = True
        msg.status = int(line[8:11])
        msg.reason = line[12:].strip(_WS)
        return True
    parts = line.split(b" ")
    if len(parts) != 3 or parts[2] != b"SIP/2.0" or not _TOKEN.fullmatch(parts[0]) \
            or not parts[1] or b"\t" in parts[1]:
        return False
    msg.method = parts[0]
    msg.request_uri = parts[1]
    return True


def parse(data, cut=False):
    """bytes of one SIP message -> SipMessage, or None when it is not (complete, sane) SIP.

    cut=True: the message may be cut off inside its header section (then ``truncated``).
    """
    if not isinstance(data, bytes):
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        else:
            raise TypeError(f"parse() needs bytes, not {type(data).__name__}")
    n = len(data)
    if n == 0 or n > MAX_SIZE:
        return None
    lines = []
    pos = 0
    truncated = False
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:  # no empty line closing the headers
            if not cut:
                return None
            truncated = True
            break
        end = nl - 1 if nl > pos and data[nl - 1] == 0x0D else nl
        line = data[pos:end]
        pos = nl + 1
        if not line:
            break
        if _BAD.search(line):
            return None
        lines.append(line)
    if not lines:
        return None
    msg = SipMessage()
    if not _start_line(msg, lines[0]):
        return None
    msg.truncated = truncated
    headers = []
    for line in lines[1:]:
        if line[0] in _WS:
            if not headers:
                return None
            headers[-1][1].append(line)
            continue
        colon = line.find(b":")
        name = line[:colon].rstrip(_WS) if colon > 0 else b""
        if not name or not _TOKEN.fullmatch(name):
            return None
        headers.append((name.lower(), [line[colon + 1:]]))
    seen = set()
    for name, pieces in headers:
        if len(pieces) == 1:
            value = pieces[0].strip(_WS)
        else:
            value = b" ".join(p for p in (x.strip(_WS) for x in pieces) if p)
        if name == b"v":
            name = b"via"
        elif name == b"i":
            name = b"call-id"
        elif name == b"f":
            name = b"from"
        elif name == b"t":
            name = b"to"
        elif name == b"l":
            name = b"content-length"
        if name == b"via":
            for item in value.split(b","):
                item = item.strip(_WS)
                if item:
                    msg.via_count += 1
                    if msg.via_count == 1:
                        _parse_top_via(msg, item)
            continue
        if name == b"www-authenticate" or name == b"proxy-authenticate":
            if name == b"www-authenticate":
                msg.has_www_authenticate = True
            else:
                msg.has_proxy_authenticate = True
            nonce, stale = _auth_params(value)
            if stale:
                msg.stale = True
            if nonce is not None and len(msg.challenge_nonces) < MAX_NONCES:
                msg.challenge_nonces += (nonce,)
            continue
        if name == b"authorization" or name == b"proxy-authorization":
            if name == b"authorization":
                msg.has_authorization = True
            else:
                msg.has_proxy_authorization = True
            if len(msg.credential_nonces) < MAX_NONCES:
                nonce = _auth_params(value)[0]
                if nonce is not None:
                    msg.credential_nonces += (nonce,)
            continue
        if name in seen:
            continue
        seen.add(name)
        if name == b"call-id":
            msg.call_id = value
        elif name == b"cseq":
            parts = value.replace(b"\t", b" ").split()
            if parts:
                msg.cseq = _number(parts[0])
                if len(parts) > 1:
                    msg.cseq_method = parts[1]
        elif name == b"from":
            msg.from_user, msg.from_tag = _parse_addr(value)
        elif name == b"to":
            msg.to_user, msg.to_tag = _parse_addr(value)
        elif name == b"user-agent":
            msg.user_agent = value
        elif name == b"server":
            msg.server = value
        elif name == b"content-length":
            msg.content_length = _number(value)
    return msg


def parse_batch(packets):
    """A list (any iterable) of bytes -> a list of SipMessage or None, in the same order."""
    return [parse(p) for p in packets]
