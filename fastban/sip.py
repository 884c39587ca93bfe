"""The SIP parser front: the compiled ``fastban._sipparser`` when built, else ``fastban.sip_pure``.

Set ``FASTBAN_PURE_PYTHON=1`` to force the pure-Python fallback.  Both give identical results;
the accepted grammar is documented in ``fastban.sip_pure``.

    >>> from fastban import sip
    >>> msg = sip.parse(b"SIP/2.0 401 Unauthorized\\r\\nCall-ID: abc\\r\\n\\r\\n")
    >>> msg.status, msg.call_id
    (401, b'abc')
"""

import os

if os.environ.get("FASTBAN_PURE_PYTHON", "") not in ("", "0"):
    from fastban.sip_pure import FIELDS, MAX_SIZE, SipMessage, parse, parse_batch
    IMPLEMENTATION = "python"
else:
    try:
        from fastban._sipparser import FIELDS, MAX_SIZE, SipMessage, parse, parse_batch
    except ImportError:  # not built (pure-Python install): the fallback serves
        from fastban.sip_pure import FIELDS, MAX_SIZE, SipMessage, parse, parse_batch
        IMPLEMENTATION = "python"
    else:
        IMPLEMENTATION = "cython"

__all__ = ["FIELDS", "IMPLEMENTATION", "MAX_SIZE", "SipMessage", "parse", "parse_batch"]
