"""Messages seen twice: a clear-text message the wire capture and HEP both carry counts once.

A server that sends HEP mirrors every message it handles, the plain UDP and TCP ones too,
which the guard also reads on the wire. Both copies are the same message: the same peer, the
same start line (status or method), Call-ID, CSeq and top-Via branch. The first copy to
arrive goes on to the rules, a second one within ``window`` seconds is skipped and counted.
The bytes are not compared: the wire's copy may be cut (an IP first fragment, or a copy the
kernel shortened), HEP's is whole.

A message repeated by its sender within the window (a UDP retransmission) is the same message
too and is skipped here; the rules would not have counted it again either (a retransmitted
response is not a new failure). A new transaction has a new branch, so it is never taken for
a copy. Pure logic; bounded: at most ``cap`` messages are remembered, the oldest forgotten.
"""

from __future__ import annotations

from collections import deque

WINDOW = 2.0
CAP = 200_000


class Duplicates:
    def __init__(self, window: float = WINDOW, cap: int = CAP):
        self.window, self.cap = window, cap
        self._seen: dict[tuple, float] = {}      # fingerprint -> time first seen
        # (time, fingerprint) oldest first: forgetting from the front of the dict itself would
        # make each next(iter(dict)) walk the holes its deletions left (quadratic).
        self._order: deque = deque()

    def seen(self, now: float, peer, message) -> bool:
        """Whether this message (to or from ``peer``) was seen within the window; records it."""
        seen, order = self._seen, self._order
        horizon = now - self.window
        while order and (order[0][0] < horizon or len(order) >= self.cap):
            at, old = order.popleft()
            if seen.get(old) == at:
                del seen[old]
        key = (int(peer), message.status, message.method, message.call_id, message.cseq,
               message.cseq_method, message.via_branch)
        at = seen.get(key)
        if at is not None and now - at <= self.window:
            return True
        seen[key] = now
        order.append((now, key))
        return False

    def __len__(self) -> int:
        return len(self._seen)
