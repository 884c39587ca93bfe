# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled SIP parser (``fastban._sipparser``).

Same API and same results as ``fastban.sip_pure``, which documents the accepted grammar.

The message is scanned with a C pointer (line ends and control bytes 8 bytes at a time); no
Python object is made per header.  A ``SipMessage`` keeps a reference to the packet and the
(offset, length) of each bytes field, and makes the bytes object when the field is read, so a
batch parse costs one object per packet and the consumer pays only for the fields it reads.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from libc.stdint cimport uint64_t
from libc.string cimport memcmp, memcpy, memset

__all__ = ["MAX_NONCES", "MAX_NONCE_SIZE", "MAX_SIZE", "SipMessage", "parse", "parse_batch"]

ctypedef const unsigned char* cptr

MAX_SIZE = 65535
cdef Py_ssize_t _MAX_SIZE = 65535

cdef enum:
    C_MAX_NONCES = 4            # nonces kept per tuple
    C_MAX_NONCE_SIZE = 256      # longer nonces are not returned
    # unfolded values (at most the message size) and the unescaped nonces kept (at most 2 x 4)
    SCRATCH_SIZE = 65536 + 2 * C_MAX_NONCES * C_MAX_NONCE_SIZE

MAX_NONCES = C_MAX_NONCES
MAX_NONCE_SIZE = C_MAX_NONCE_SIZE

FIELDS = (
    "is_response", "status", "reason", "method", "request_uri", "call_id", "cseq",
    "cseq_method", "via_count", "via_transport", "via_host", "via_port", "via_branch",
    "via_received", "via_rport", "from_user", "from_tag", "to_user", "to_tag", "user_agent",
    "server", "content_length", "has_www_authenticate", "has_proxy_authenticate",
    "has_authorization", "has_proxy_authorization", "challenge_nonces", "credential_nonces",
    "stale", "truncated",
)

cdef bytes _EMPTY = b""
cdef tuple _NO_NONCES = ()

cdef unsigned char _TOK[256]     # RFC 3261 token characters
cdef unsigned char _LOW[256]     # ASCII lower-case
cdef unsigned char _BADC[256]    # control bytes (all but HT), including CR and LF, and DEL
# The unfolded values of a message's folded headers are written here one after the other
# (each no longer than the lines it comes from, so a message of at most _MAX_SIZE bytes fits),
# and so are the nonces kept that had to be unescaped, then all is copied into SipMessage._alt.
# The GIL is held for the whole parse.
cdef unsigned char _scratch[SCRATCH_SIZE]
cdef Py_ssize_t _scratch_used = 0   # bytes of _scratch holding this message's values
cdef cptr _base = NULL              # the packet being parsed


cdef void _init_tables() noexcept:
    cdef int c
    cdef const char* extra = b"-.!%*_+`'~"
    for c in range(256):
        _LOW[c] = c + 32 if 65 <= c <= 90 else c
        _BADC[c] = 1 if (c < 32 and c != 9) or c == 127 else 0
        _TOK[c] = 1 if (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122) else 0
    c = 0
    while extra[c]:
        _TOK[<unsigned char>extra[c]] = 1
        c += 1

_init_tables()


# header ids
cdef enum:
    H_OTHER = 0
    H_VIA = 1
    H_CALLID = 2
    H_CSEQ = 3
    H_FROM = 4
    H_TO = 5
    H_UA = 6
    H_SERVER = 7
    H_CLEN = 8
    H_WWW = 9
    H_PROXYAUTHN = 10
    H_AUTHZ = 11
    H_PROXYAUTHZ = 12


cdef enum:
    F_REASON = 0
    F_METHOD = 1
    F_REQUEST_URI = 2
    F_CALL_ID = 3
    F_CSEQ_METHOD = 4
    F_VIA_TRANSPORT = 5
    F_VIA_HOST = 6
    F_VIA_BRANCH = 7
    F_VIA_RECEIVED = 8
    F_FROM_USER = 9
    F_FROM_TAG = 10
    F_TO_USER = 11
    F_TO_TAG = 12
    F_USER_AGENT = 13
    F_SERVER = 14
    F_CHALLENGE_NONCE = 15      # 15..18: challenge_nonces[0..3]
    F_CREDENTIAL_NONCE = 19     # 19..22: credential_nonces[0..3]
    N_LAZY = 23


@cython.no_gc  # only bytes and C fields: no reference cycles possible
@cython.freelist(64)
cdef class SipMessage:
    """One parsed SIP message (read-only); ``as_dict()`` gives every field.

    The bytes fields are kept as (offset, length) into the packet (or, for folded header
    values, into one buffer of unfolded values) and made into bytes when read.
    """

    cdef readonly bint is_response
    cdef readonly int status
    cdef readonly long cseq
    cdef readonly int via_count
    cdef readonly int via_port
    cdef readonly int via_rport
    cdef readonly long content_length
    cdef readonly bint has_www_authenticate
    cdef readonly bint has_proxy_authenticate
    cdef readonly bint has_authorization
    cdef readonly bint has_proxy_authorization
    cdef readonly bint stale
    cdef readonly bint truncated
    cdef int _challenge_nonce_count
    cdef int _credential_nonce_count
    cdef bytes _data                 # the packet
    cdef bytes _alt                  # unfolded header values, or None
    cdef unsigned int _altmask       # bit f set: field f is in _alt
    cdef int _off[N_LAZY]            # into a packet of at most 64 KiB, or into _scratch
    cdef int _len[N_LAZY]

    def __cinit__(self):
        memset(self._len, 0, sizeof(self._len))
        self.cseq = -1
        self.via_rport = -1
        self.content_length = -1

    cdef inline void _set(self, int f, cptr p, Py_ssize_t n) noexcept:
        """Field f is p[:n]; p points into the packet (_base) or into _scratch."""
        if n <= 0:
            self._len[f] = 0
            return
        if p >= _scratch and p < _scratch + sizeof(_scratch):
            self._off[f] = p - _scratch
            self._altmask |= (<unsigned int>1 << f)
        else:
            self._off[f] = p - _base
            self._altmask &= ~(<unsigned int>1 << f)
        self._len[f] = n

    cdef inline bytes _get(self, int f):
        if self._len[f] == 0:
            return _EMPTY
        cdef bytes src = self._alt if (self._altmask >> f) & 1 else self._data
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(src) + self._off[f], self._len[f])

    @property
    def reason(self):
        return self._get(F_REASON)

    @property
    def method(self):
        return self._get(F_METHOD)

    @property
    def request_uri(self):
        return self._get(F_REQUEST_URI)

    @property
    def call_id(self):
        return self._get(F_CALL_ID)

    @property
    def cseq_method(self):
        return self._get(F_CSEQ_METHOD)

    @property
    def via_transport(self):
        return self._get(F_VIA_TRANSPORT)

    @property
    def via_host(self):
        return self._get(F_VIA_HOST)

    @property
    def via_branch(self):
        return self._get(F_VIA_BRANCH)

    @property
    def via_received(self):
        return self._get(F_VIA_RECEIVED)

    @property
    def from_user(self):
        return self._get(F_FROM_USER)

    @property
    def from_tag(self):
        return self._get(F_FROM_TAG)

    @property
    def to_user(self):
        return self._get(F_TO_USER)

    @property
    def to_tag(self):
        return self._get(F_TO_TAG)

    @property
    def user_agent(self):
        return self._get(F_USER_AGENT)

    @property
    def server(self):
        return self._get(F_SERVER)

    cdef tuple _nonces(self, int first, int count):
        if count == 0:
            return _NO_NONCES
        return tuple([self._get(first + k) for k in range(count)])

    @property
    def challenge_nonces(self):
        return self._nonces(F_CHALLENGE_NONCE, self._challenge_nonce_count)

    @property
    def credential_nonces(self):
        return self._nonces(F_CREDENTIAL_NONCE, self._credential_nonce_count)

    def as_dict(self):
        return {name: getattr(self, name) for name in FIELDS}

    def __reduce__(self):
        # cut=True only matters when the header section is not closed, i.e. when truncated
        return parse, (self._data, self.truncated)

    def __repr__(self):
        if self.is_response:
            start = f"{self.status} {self.reason!r}"
        else:
            start = f"{self.method!r} {self.request_uri!r}"
        return f"<SipMessage {start} call_id={self.call_id!r} cseq={self.cseq}>"


cdef inline bint _isws(unsigned char c) noexcept:
    return c == 32 or c == 9


cdef inline bint _isdigit(unsigned char c) noexcept:
    return 48 <= c <= 57


cdef inline long _number(cptr p, Py_ssize_t n) noexcept:
    """1-10 ASCII digits <= 2**31-1 -> value, else -1."""
    cdef long long v = 0
    cdef Py_ssize_t i
    if n <= 0 or n > 10:
        return -1
    for i in range(n):
        if not _isdigit(p[i]):
            return -1
        v = v * 10 + (p[i] - 48)
    if v > 2147483647:
        return -1
    return <long>v


cdef inline bint _ieq(cptr a, const char* lit, Py_ssize_t n) noexcept:
    """a[:n].lower() == lit (lit lower-case, n bytes)."""
    cdef Py_ssize_t i
    for i in range(n):
        if _LOW[a[i]] != <unsigned char>lit[i]:
            return False
    return True


cdef inline Py_ssize_t _until(cptr p, Py_ssize_t i, Py_ssize_t e, unsigned char c) noexcept:
    """Index of the first c in p[i:e], or e."""
    while i < e and p[i] != c:
        i += 1
    return i


cdef inline Py_ssize_t _find(cptr p, Py_ssize_t i, Py_ssize_t e, unsigned char c) noexcept:
    while i < e:
        if p[i] == c:
            return i
        i += 1
    return -1


cdef inline Py_ssize_t _skip_ws(cptr p, Py_ssize_t i, Py_ssize_t e) noexcept:
    """Index of the first byte of p[i:e] that is not SP/HT, or e."""
    while i < e and _isws(p[i]):
        i += 1
    return i


cdef inline void _trim(cptr p, Py_ssize_t* s, Py_ssize_t* e) noexcept:
    """Narrow p[s:e] (in place) to leave out leading and trailing SP/HT."""
    cdef Py_ssize_t a = _skip_ws(p, s[0], e[0]), b = e[0]
    while b > a and _isws(p[b - 1]):
        b -= 1
    s[0] = a
    e[0] = b


cdef inline Py_ssize_t _next_item(cptr v, Py_ssize_t i, Py_ssize_t n, unsigned char sep,
                                  Py_ssize_t* s, Py_ssize_t* e) noexcept:
    """The item v[i:j] up to the next sep (or n): returns j; s, e get its bounds trimmed."""
    s[0] = i
    i = _until(v, i, n, sep)
    e[0] = i
    _trim(v, s, e)
    return i


cdef struct _Param:
    Py_ssize_t ns, ne       # name, trimmed
    Py_ssize_t vs, ve       # value after the first '=', trimmed (empty when there is no '=')
    bint has_value          # there is an '='


cdef inline Py_ssize_t _next_param(cptr v, Py_ssize_t i, Py_ssize_t n, _Param* p) noexcept:
    """The parameter v[i:j] up to the next ';' (or n): returns j; p gets name and value."""
    cdef Py_ssize_t e = _until(v, i, n, 59), eq = _until(v, i, e, 61)
    p.ns = i
    p.ne = eq
    _trim(v, &p.ns, &p.ne)
    p.has_value = eq < e
    if p.has_value:
        p.vs = eq + 1
        p.ve = e
        _trim(v, &p.vs, &p.ve)
    else:
        p.vs = p.ve = e
    return e


cdef inline bint _word_flagged(uint64_t w) noexcept:
    """True if any of the 8 bytes is < 0x20 or == 0x7f (exact, SWAR)."""
    cdef uint64_t d = w ^ 0x7f7f7f7f7f7f7f7fULL
    return (((w - 0x2020202020202020ULL) & ~w) | ((d - 0x0101010101010101ULL) & ~d)) \
        & 0x8080808080808080ULL != 0


cdef inline Py_ssize_t _line(cptr p, Py_ssize_t pos, Py_ssize_t n, Py_ssize_t* nxt) noexcept:
    """End of the line starting at pos (without CR LF); -1 if bad bytes or no LF."""
    cdef Py_ssize_t i = pos, e
    cdef unsigned char c
    cdef uint64_t w
    while True:
        # 8 bytes at a time while none is a control byte, then byte by byte over one word
        while i + 8 <= n:
            memcpy(&w, p + i, 8)
            if _word_flagged(w):
                break
            i += 8
        if i >= n:
            return -1
        e = i + 8 if i + 8 <= n else n
        while i < e:
            c = p[i]
            if _BADC[c]:
                if c == 10:
                    nxt[0] = i + 1
                    return i
                if c == 13 and i + 1 < n and p[i + 1] == 10:
                    nxt[0] = i + 2
                    return i
                return -1
            i += 1


cdef int _parse_params_via(SipMessage m, cptr v, Py_ssize_t i, Py_ssize_t n) except -1:
    """Parameters after the ';' at v[i-1], split on ';'."""
    cdef Py_ssize_t ns, ne, vs, ve
    cdef _Param pr
    cdef bint seen_branch = False, seen_received = False, seen_rport = False
    cdef long port
    while True:
        i = _next_param(v, i, n, &pr)
        ns = pr.ns
        ne = pr.ne
        vs = pr.vs
        ve = pr.ve
        if ne - ns == 6 and _ieq(v + ns, b"branch", 6):
            if not seen_branch:
                seen_branch = True
                m._set(F_VIA_BRANCH, v + vs, ve - vs)
        elif ne - ns == 8 and _ieq(v + ns, b"received", 8):
            if not seen_received:
                seen_received = True
                if ve - vs >= 2 and v[vs] == 91 and v[ve - 1] == 93:
                    vs += 1
                    ve -= 1
                m._set(F_VIA_RECEIVED, v + vs, ve - vs)
        elif ne - ns == 5 and _ieq(v + ns, b"rport", 5):
            if not seen_rport:
                seen_rport = True
                port = _number(v + vs, ve - vs)
                m.via_rport = port if 0 < port <= 65535 else 0
        if i >= n:
            return 0
        i += 1


cdef int _parse_top_via(SipMessage m, cptr v, Py_ssize_t n) except -1:
    """``SIP/2.0/UDP host[:port][;params]`` (stripped, not empty) into m.via_*."""
    cdef Py_ssize_t i = 0, k, start, ts = 0, te = 0, hs, he, j
    cdef long port = 0
    for k in range(3):
        i = _skip_ws(v, i, n)
        start = i
        while i < n and _TOK[v[i]]:
            i += 1
        if i == start:
            return 0
        ts = start
        te = i
        i = _skip_ws(v, i, n)
        if k < 2:
            if i >= n or v[i] != 47:
                return 0
            i += 1
    if i < n and v[i] == 91:
        j = _find(v, i + 1, n, 93)
        if j < 0:
            return 0
        hs = i + 1
        he = j
        i = j + 1
    else:
        hs = i
        while i < n and v[i] != 58 and v[i] != 59 and not _isws(v[i]):
            i += 1
        he = i
    if he == hs:
        return 0
    i = _skip_ws(v, i, n)
    if i < n and v[i] == 58:
        i = _skip_ws(v, i + 1, n)
        start = i
        while i < n and _isdigit(v[i]):
            i += 1
        if i == start or i - start > 5:
            return 0
        port = _number(v + start, i - start)
        if port > 65535:
            return 0
        i = _skip_ws(v, i, n)
    if i < n and v[i] != 59:
        return 0
    m._set(F_VIA_TRANSPORT, v + ts, te - ts)
    m._set(F_VIA_HOST, v + hs, he - hs)
    m.via_port = port
    if i < n:
        _parse_params_via(m, v, i + 1, n)
    return 0


cdef int _parse_addr(SipMessage m, cptr v, Py_ssize_t n, int f_user, int f_tag) except -1:
    """From/To value (stripped) -> user and tag, into fields f_user and f_tag."""
    cdef Py_ssize_t i, lt, gt, us, ue, ps, pe, semi, colon, at, e
    cdef _Param pr
    cdef unsigned char c
    if n > 0 and v[0] == 34:
        i = 1
        while i < n:
            c = v[i]
            if c == 92:
                i += 2
                continue
            if c == 34:
                break
            i += 1
        if i >= n:
            return 0
        lt = _find(v, i + 1, n, 60)
        if lt < 0:
            return 0
    else:
        lt = _find(v, 0, n, 60)
    if lt >= 0:
        gt = _find(v, lt + 1, n, 62)
        if gt < 0:
            return 0
        us = lt + 1
        ue = gt
        ps = gt + 1
        pe = n
    else:
        semi = _find(v, 0, n, 59)
        us = 0
        if semi < 0:
            ue = n
            ps = pe = n
        else:
            ue = semi
            ps = semi
            pe = n
    # user: between "scheme:" and "@", without ":password"
    colon = _find(v, us, ue, 58)
    if colon > us:
        at = _find(v, colon + 1, ue, 64)
        if at >= 0:
            e = _find(v, colon + 1, at, 58)
            if e < 0:
                e = at
            m._set(f_user, v + colon + 1, e - colon - 1)
    # tag: the parameters after the first ';'
    i = _find(v, ps, pe, 59)
    if i < 0:
        return 0
    i += 1
    while True:
        i = _next_param(v, i, pe, &pr)
        if pr.ne - pr.ns == 3 and _ieq(v + pr.ns, b"tag", 3):
            if pr.has_value:
                m._set(f_tag, v + pr.vs, pr.ve - pr.vs)
            return 0
        if i >= pe:
            return 0
        i += 1


cdef struct _AuthParams:
    Py_ssize_t nonce_start, nonce_end   # the first nonce as written, without quotes (-1: none)
    Py_ssize_t nonce_escapes            # backslashes escaping a byte in it
    bint stale                          # a stale param is true


cdef inline Py_ssize_t _token_end(cptr v, Py_ssize_t i, Py_ssize_t n) noexcept:
    while i < n and _TOK[v[i]]:
        i += 1
    return i


cdef inline bint _word_has_quote_or_backslash(uint64_t w) noexcept:
    """True if any of the 8 bytes is '"' or a backslash (exact, SWAR)."""
    cdef uint64_t q = w ^ 0x2222222222222222ULL, b = w ^ 0x5c5c5c5c5c5c5c5cULL
    return (((q - 0x0101010101010101ULL) & ~q) | ((b - 0x0101010101010101ULL) & ~b)) \
        & 0x8080808080808080ULL != 0


cdef inline Py_ssize_t _quoted_end(cptr v, Py_ssize_t i, Py_ssize_t n,
                                   Py_ssize_t* escapes) noexcept:
    """Index of the '"' closing the quoted-string whose content starts at v[i], or -1 when it is
    not closed; escapes gets the number of escaping backslashes in it."""
    cdef uint64_t w
    cdef unsigned char c
    escapes[0] = 0
    while i + 8 <= n:
        memcpy(&w, v + i, 8)
        if _word_has_quote_or_backslash(w):
            break
        i += 8
    while i < n:
        c = v[i]
        if c == 34:
            return i
        if c == 92:
            escapes[0] += 1
            i += 1
        i += 1
    return -1


cdef bint _unescaped_ieq(cptr v, Py_ssize_t s, Py_ssize_t e, const char* lit,
                         Py_ssize_t n) noexcept:
    """The param value v[s:e] (unescaped) .lower() == lit (n bytes)."""
    cdef Py_ssize_t k = 0
    while s < e:
        if v[s] == 92:  # in a checked quoted-string a backslash is followed by a byte before e
            s += 1
        if k >= n or _LOW[v[s]] != <unsigned char>lit[k]:
            return False
        k += 1
        s += 1
    return k == n


cdef Py_ssize_t _unescape(cptr v, Py_ssize_t s, Py_ssize_t e, unsigned char* dst) noexcept:
    """The quoted-string content v[s:e] without its escaping backslashes into dst: its size."""
    cdef Py_ssize_t out = 0
    while s < e:
        if v[s] == 92:
            s += 1
        dst[out] = v[s]
        out += 1
        s += 1
    return out


cdef bint _auth_params(cptr v, Py_ssize_t n, _AuthParams* a) noexcept:
    """Auth header value (stripped) into a: False when it does not match the grammar."""
    cdef Py_ssize_t i = 0, ns, ne, j, vs, ve, escapes
    cdef bint first = True, has_param
    a.nonce_start = -1
    a.stale = False
    while True:
        i = _skip_ws(v, i, n)
        if i < n and _TOK[v[i]]:
            ns = i
            ne = _token_end(v, i, n)
            j = _skip_ws(v, ne, n)
            has_param = True
            if j < n and v[j] == 61:  # '=': the token is a param name
                if first:
                    return False
            elif j > ne and j < n and _TOK[v[j]]:  # a scheme, then a param
                ns = j
                ne = _token_end(v, j, n)
                j = _skip_ws(v, ne, n)
                if j >= n or v[j] != 61:
                    return False
            else:  # a scheme alone
                has_param = False
            i = j
            if has_param:
                i = _skip_ws(v, j + 1, n)
                escapes = 0
                if i < n and v[i] == 34:
                    vs = i + 1
                    ve = _quoted_end(v, vs, n, &escapes)
                    if ve < 0:
                        return False
                    i = ve + 1
                elif i < n and _TOK[v[i]]:
                    vs = i
                    i = _token_end(v, i, n)
                    ve = i
                else:
                    return False
                if ne - ns == 5 and _ieq(v + ns, b"nonce", 5):
                    if a.nonce_start < 0:
                        a.nonce_start = vs
                        a.nonce_end = ve
                        a.nonce_escapes = escapes
                elif ne - ns == 5 and _ieq(v + ns, b"stale", 5) \
                        and _unescaped_ieq(v, vs, ve, b"true", 4):
                    a.stale = True
                i = _skip_ws(v, i, n)
        elif first:
            return False
        first = False
        if i >= n:
            return True
        if v[i] != 44:
            return False
        i += 1


cdef bint _keep_nonce(SipMessage m, int f, cptr v, _AuthParams* a) noexcept:
    """Field f = the nonce _auth_params found in v, unescaped; False when there is none to keep."""
    global _scratch_used
    cdef Py_ssize_t size
    cdef unsigned char* dst
    if a.nonce_start < 0:
        return False
    size = a.nonce_end - a.nonce_start - a.nonce_escapes
    if size <= 0 or size > C_MAX_NONCE_SIZE:
        return False
    if a.nonce_escapes:
        dst = _scratch + _scratch_used
        _unescape(v, a.nonce_start, a.nonce_end, dst)
        _scratch_used += size
        m._set(f, dst, size)
    else:
        m._set(f, v + a.nonce_start, size)
    return True


cdef inline int _header_id(cptr name, Py_ssize_t L) noexcept:
    cdef unsigned char c
    if L == 1:
        c = _LOW[name[0]]
        if c == b'v':
            return H_VIA
        if c == b'i':
            return H_CALLID
        if c == b'f':
            return H_FROM
        if c == b't':
            return H_TO
        if c == b'l':
            return H_CLEN
        return H_OTHER
    if L == 2:
        return H_TO if _ieq(name, b"to", 2) else H_OTHER
    if L == 3:
        return H_VIA if _ieq(name, b"via", 3) else H_OTHER
    if L == 4:
        if _ieq(name, b"cseq", 4):
            return H_CSEQ
        if _ieq(name, b"from", 4):
            return H_FROM
        return H_OTHER
    if L == 6:
        return H_SERVER if _ieq(name, b"server", 6) else H_OTHER
    if L == 7:
        return H_CALLID if _ieq(name, b"call-id", 7) else H_OTHER
    if L == 10:
        return H_UA if _ieq(name, b"user-agent", 10) else H_OTHER
    if L == 13:
        return H_AUTHZ if _ieq(name, b"authorization", 13) else H_OTHER
    if L == 14:
        return H_CLEN if _ieq(name, b"content-length", 14) else H_OTHER
    if L == 16:
        return H_WWW if _ieq(name, b"www-authenticate", 16) else H_OTHER
    if L == 18:
        return H_PROXYAUTHN if _ieq(name, b"proxy-authenticate", 18) else H_OTHER
    if L == 19:
        return H_PROXYAUTHZ if _ieq(name, b"proxy-authorization", 19) else H_OTHER
    return H_OTHER


cdef int _header(SipMessage m, int hid, cptr v, Py_ssize_t n, unsigned int* seen) except -1:
    """One header value (stripped; folding already undone)."""
    cdef Py_ssize_t i, s, e
    cdef _AuthParams auth
    if hid == H_VIA:
        i = 0
        while True:
            i = _next_item(v, i, n, 44, &s, &e)
            if e > s:
                m.via_count += 1
                if m.via_count == 1:
                    _parse_top_via(m, v + s, e - s)
            if i >= n:
                return 0
            i += 1
    if hid == H_WWW or hid == H_PROXYAUTHN:
        if hid == H_WWW:
            m.has_www_authenticate = True
        else:
            m.has_proxy_authenticate = True
        if _auth_params(v, n, &auth):
            if auth.stale:
                m.stale = True
            if m._challenge_nonce_count < C_MAX_NONCES and _keep_nonce(
                    m, F_CHALLENGE_NONCE + m._challenge_nonce_count, v, &auth):
                m._challenge_nonce_count += 1
        return 0
    if hid == H_AUTHZ or hid == H_PROXYAUTHZ:
        if hid == H_AUTHZ:
            m.has_authorization = True
        else:
            m.has_proxy_authorization = True
        if m._credential_nonce_count < C_MAX_NONCES and _auth_params(v, n, &auth) \
                and _keep_nonce(m, F_CREDENTIAL_NONCE + m._credential_nonce_count, v, &auth):
            m._credential_nonce_count += 1
        return 0
    if seen[0] & (<unsigned int>1 << hid):
        return 0
    seen[0] |= (<unsigned int>1 << hid)
    if hid == H_CALLID:
        m._set(F_CALL_ID, v, n)
    elif hid == H_CSEQ:
        i = 0
        while i < n and not _isws(v[i]):
            i += 1
        if i > 0:
            m.cseq = _number(v, i)
            i = _skip_ws(v, i, n)
            s = i
            while i < n and not _isws(v[i]):
                i += 1
            m._set(F_CSEQ_METHOD, v + s, i - s)
    elif hid == H_FROM:
        _parse_addr(m, v, n, F_FROM_USER, F_FROM_TAG)
    elif hid == H_TO:
        _parse_addr(m, v, n, F_TO_USER, F_TO_TAG)
    elif hid == H_UA:
        m._set(F_USER_AGENT, v, n)
    elif hid == H_SERVER:
        m._set(F_SERVER, v, n)
    elif hid == H_CLEN:
        m.content_length = _number(v, n)
    return 0


cdef Py_ssize_t _unfold(cptr p, Py_ssize_t s, Py_ssize_t end, unsigned char* dst) noexcept:
    """Join the stripped non-empty pieces of the lines in p[s:end] with one space into dst."""
    cdef Py_ssize_t out = 0, nl, e, ps, pe
    while True:
        nl = _find(p, s, end, 10)
        e = end if nl < 0 else nl
        if nl >= 0 and e > s and p[e - 1] == 13:
            e -= 1
        ps = s
        pe = e
        while ps < pe and _isws(p[ps]):
            ps += 1
        while pe > ps and _isws(p[pe - 1]):
            pe -= 1
        if pe > ps:
            if out > 0:
                dst[out] = 32
                out += 1
            memcpy(dst + out, p + ps, pe - ps)
            out += pe - ps
        if nl < 0:
            return out
        s = nl + 1


cdef int _parse(SipMessage m, cptr p, Py_ssize_t n, bint cut) except -2:
    """0 when p[:n] is SIP (fields filled in), -1 when it is not.

    cut: a header section cut off before its empty line is read up to its last complete line.
    """
    global _scratch_used
    cdef Py_ssize_t pos = 0, le, nxt = 0, ls, colon, ne, vs, ve, sp1, sp2, i, rs, re_, fe
    cdef unsigned int seen = 0
    cdef int hid
    cdef bint folded, cut_in_fold
    cdef cptr v
    cdef Py_ssize_t vn
    # start line
    le = _line(p, 0, n, &nxt)
    if le <= 0:
        return -1
    if le >= 11 and memcmp(p, b"SIP/2.0 ", 8) == 0 and 49 <= p[8] <= 54 \
            and _isdigit(p[9]) and _isdigit(p[10]) and (le == 11 or p[11] == 32):
        m.is_response = True
        m.status = (p[8] - 48) * 100 + (p[9] - 48) * 10 + (p[10] - 48)
        rs = 12
        re_ = le
        _trim(p, &rs, &re_)
        m._set(F_REASON, p + rs, re_ - rs)
    else:
        sp1 = _find(p, 0, le, 32)
        if sp1 <= 0:
            return -1
        for i in range(sp1):
            if not _TOK[p[i]]:
                return -1
        sp2 = _find(p, sp1 + 1, le, 32)
        if sp2 <= sp1 + 1:
            return -1
        if _find(p, sp1 + 1, sp2, 9) >= 0:
            return -1
        if le - sp2 - 1 != 7 or memcmp(p + sp2 + 1, b"SIP/2.0", 7) != 0:
            return -1
        m._set(F_METHOD, p, sp1)
        m._set(F_REQUEST_URI, p + sp1 + 1, sp2 - sp1 - 1)
    pos = nxt
    # headers, up to the empty line
    while True:
        ls = pos
        le = _line(p, pos, n, &nxt)
        if le < 0:
            if cut and _find(p, ls, n, 10) < 0:  # the last line is incomplete: dropped unread
                m.truncated = True
                return 0
            return -1
        if le == ls:
            return 0
        if _isws(p[ls]):
            return -1
        colon = _find(p, ls, le, 58)
        if colon <= ls:
            return -1
        ne = colon
        while ne > ls and _isws(p[ne - 1]):
            ne -= 1
        if ne == ls:
            return -1
        for i in range(ls, ne):
            if not _TOK[p[i]]:
                return -1
        vs = colon + 1
        ve = le
        pos = nxt
        folded = cut_in_fold = False
        while pos < n and _isws(p[pos]):
            fe = _line(p, pos, n, &nxt)
            if fe < 0:
                if cut and _find(p, pos, n, 10) < 0:
                    cut_in_fold = True
                    break
                return -1
            ve = fe
            folded = True
            pos = nxt
        hid = _header_id(p + ls, ne - ls)
        if cut_in_fold:
            m.truncated = True
            if hid == H_OTHER:
                return 0
        elif hid == H_OTHER:
            continue
        if folded:
            # unfolded values of one message go one after the other into _scratch (never
            # longer than the lines they come from, so they fit)
            v = _scratch + _scratch_used
            vn = _unfold(p, vs, ve, _scratch + _scratch_used)
            _scratch_used += vn
        else:
            while vs < ve and _isws(p[vs]):
                vs += 1
            while ve > vs and _isws(p[ve - 1]):
                ve -= 1
            v = p + vs
            vn = ve - vs
        _header(m, hid, v, vn, &seen)
        if cut_in_fold:
            return 0


cdef object _parse_bytes(bytes data, bint cut):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    if n == 0 or n > _MAX_SIZE:
        return None
    global _base, _scratch_used
    cdef SipMessage m = SipMessage.__new__(SipMessage)
    _base = <cptr>PyBytes_AS_STRING(data)
    _scratch_used = 0
    if _parse(m, _base, n, cut) < 0:
        return None
    m._data = data
    if m._altmask:
        m._alt = PyBytes_FromStringAndSize(<const char*>_scratch, _scratch_used)
    return m


def parse(data, bint cut=False):
    """bytes of one SIP message -> SipMessage, or None when it is not (complete, sane) SIP.

    cut=True: the message may be cut off inside its header section (then ``truncated``).
    """
    if not isinstance(data, bytes):
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        else:
            raise TypeError(f"parse() needs bytes, not {type(data).__name__}")
    return _parse_bytes(<bytes>data, cut)


def parse_batch(packets):
    """A list (any iterable) of bytes -> a list of SipMessage or None, in the same order."""
    cdef list out = []
    for data in packets:
        if isinstance(data, bytes):
            out.append(_parse_bytes(<bytes>data, False))
        else:
            out.append(parse(data))
    return out
