"""Logged-in sessions of the web page, in memory: an id for the cookie and a CSRF token each.

A session ends after IDLE seconds without a request, LIFETIME seconds after the login, or at
logout. At most MAX_SESSIONS live at once; a new login past it ends the oldest.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

IDLE = 1800.0
LIFETIME = 12 * 3600.0
MAX_SESSIONS = 64


@dataclass
class Session:
    id: str
    csrf: str
    started: float
    seen: float
    address: str

    def csrf_matches(self, token) -> bool:
        return isinstance(token, str) and hmac.compare_digest(token.encode(), self.csrf.encode())


class Sessions:
    def __init__(self, idle: float = IDLE, lifetime: float = LIFETIME,
                 cap: int = MAX_SESSIONS):
        self.idle, self.lifetime, self.cap = idle, lifetime, cap
        self._live: OrderedDict[str, Session] = OrderedDict()

    def start(self, now: float, address: str) -> Session:
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now, address)
        self._live[session.id] = session
        while len(self._live) > self.cap:
            self._live.popitem(last=False)
        return session

    def get(self, session_id, now: float) -> Session | None:
        if not isinstance(session_id, str):
            return None
        session = self._live.get(session_id)
        if session is None:
            return None
        if now - session.seen > self.idle or now - session.started > self.lifetime:
            del self._live[session_id]
            return None
        session.seen = now
        return session

    def end(self, session_id) -> None:
        self._live.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._live)
