"""The HEPv3 decoder front: the compiled ``fastban._hepparser`` when built, else
``fastban.hep_pure``.

Set ``FASTBAN_PURE_PYTHON=1`` to force the pure-Python fallback.  Both give identical results;
the accepted format and the reasons a packet is refused are documented in ``fastban.hep_pure``.

    >>> from fastban import hep
    >>> try:
    ...     hep.decode(b"HEP3\\x00\\x05")
    ... except hep.HepError as error:
    ...     print(error.reason)
    length
"""

import os

if os.environ.get("FASTBAN_PURE_PYTHON", "") not in ("", "0"):
    from fastban.hep_pure import (FIELDS, MAX_HEP_SIZE, REJECT_REASONS, HepError, HepMessage,
                                  decode, decode_batch)
    IMPLEMENTATION = "python"
else:
    try:
        from fastban._hepparser import (FIELDS, MAX_HEP_SIZE, REJECT_REASONS, HepError,
                                        HepMessage, decode, decode_batch)
    except ImportError:  # not built (pure-Python install): the fallback serves
        from fastban.hep_pure import (FIELDS, MAX_HEP_SIZE, REJECT_REASONS, HepError,
                                      HepMessage, decode, decode_batch)
        IMPLEMENTATION = "python"
    else:
        IMPLEMENTATION = "cython"

__all__ = ["FIELDS", "IMPLEMENTATION", "MAX_HEP_SIZE", "REJECT_REASONS", "HepError",
           "HepMessage", "decode", "decode_batch"]
