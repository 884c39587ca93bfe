"""A guard started on the lab, and waiting on the lab's Kamailio and the guard's ban list, for
the lab tests."""

from __future__ import annotations

import time
from contextlib import contextmanager

from fastban import sip
from fastban.lab.guard_process import GuardProcess


@contextmanager
def running_guard(lab, workdir, **settings):
    """`fastban run` on the lab's server interface with these settings, detached at the end;
    it runs this test run's parser (FASTBAN_PURE_PYTHON is passed on)."""
    guard = GuardProcess(lab.server_namespace, lab.server_iface, workdir, **settings)
    guard.start()
    try:
        assert guard.json("stats")["parser"] == sip.IMPLEMENTATION
        yield guard
    finally:
        guard.detach()


def settle(lab, address, timeout=3.0):
    """Waits until Kamailio's count of requests from address stops moving; returns it."""
    last, deadline = -1, time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = lab.server_requests_from(address)
        if now == last:
            return now
        last = now
        time.sleep(0.3)
    return last


def row_for(guard, address):
    """The guard's listed ban of the single address, or None."""
    return {row["target"]: row for row in guard.json("list")["bans"]}.get(f"{address}/32")


def wait_for_ban(guard, address, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = row_for(guard, address)
        if row is not None:
            return row
        time.sleep(0.1)
    return None
