"""The web process's way to the guard: control-protocol calls run off the event loop, one
connection each, so a slow answer never holds up another request."""

from __future__ import annotations

import asyncio

from fastban import control

CALL_TIMEOUT = 10.0


class GuardUnavailable(Exception):
    """No guard answers on the control socket."""


class GuardLink:
    def __init__(self, socket_path: str, timeout: float = CALL_TIMEOUT):
        self.socket_path, self.timeout = socket_path, timeout

    def call_now(self, op: str, **arguments):
        """The guard's answer (blocking). ControlError for a refused request."""
        try:
            with control.Client(self.socket_path, timeout=self.timeout) as client:
                return client.call(op, **arguments)
        except control.NotRunning as error:
            raise GuardUnavailable(str(error)) from None
        except OSError as error:
            raise GuardUnavailable(f"the guard on {self.socket_path} did not answer: "
                                   f"{error}") from None

    async def call(self, op: str, **arguments):
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.call_now(op, **arguments))
