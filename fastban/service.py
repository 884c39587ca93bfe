"""`fastban run`: the guard as a long-running service on one interface.

One thread waits on the capture (its ring buffer) and hands each batch of captured packets to the
guard straight away, so a ban reaches the kernel map as soon as the response that crossed the
threshold is read. The control socket is served from a second thread, the HEP input
(``hep_listen``, fastban.hep_input) from a third; all take one lock.

SIGTERM and SIGINT stop the service; the programs stay attached and the bans stay enforced
unless `detach_on_exit`. SIGHUP reloads the settings file.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time

from fastban import control
from fastban.config import load_settings
from fastban.dataplane import DataPlane
from fastban.fleet.edge import start_fleet
from fastban.guard import Guard, GuardError
from fastban.hep_input import HepInput

log = logging.getLogger("fastban")

POLL_MS = 100
TICK_SECONDS = 0.5
# The guard allocates a few short-lived objects per response and keeps long-lived ones (bans,
# failure histories) by the hundred thousand. CPython's default thresholds (a young pass every
# 700 allocations) scan those again and again, and the older passes stall the capture thread
# long enough to overflow the capture's ring (benchmarks/controller_rate.py measures the loss).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Moves what exists now (loaded state, compiled programs) out of the collector's sight and
    makes collections rarer; cycles are still collected, objects without cycles are freed at
    once as always."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class Service:
    def __init__(self, settings, iface: str, *, config_path=None, overrides=None,
                 detach_on_exit: bool = False):
        self.settings, self.iface = settings, iface
        self.config_path, self.overrides = config_path, overrides or {}
        self.detach_on_exit = detach_on_exit
        # Bound first: a taken address ends the start before anything is attached.
        self.hep = HepInput(settings, self._hep_received) if settings.hep_listen else None
        self.dataplane = DataPlane(iface, capacity=settings.map_capacity,
                                   sip_ports=settings.sip_ports,
                                   capture=settings.capture_direction,
                                   count_register_404=settings.count_register_404,
                                   challenge_grace=settings.challenge_grace,
                                   rate_entries=settings.rate_limit_sources)
        if self.dataplane.replaced_pins:
            log.info("replaced the pinned maps %s left by another version of fastban",
                     ", ".join(self.dataplane.replaced_pins))
        self.mode = self.dataplane.attach(settings.xdp_mode)
        self.guard = Guard(settings, self.dataplane)
        self.lock = threading.Lock()
        self.pending: list = []
        self.dataplane.on_capture_batch(self.pending.extend)
        self.server = control.Server(settings.control_socket, self.answer, self.lock)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.fleet = None

    def answer(self, request: dict):
        """One control request, with the lock held (fastban.control.Server)."""
        op = request["op"]
        try:
            if op == "list":
                newest = request.get("newest")
                if newest is not None and (not isinstance(newest, int) or newest < 1):
                    raise control.ControlError("newest: a whole number of bans ≥ 1")
                return control.Stream(self.guard.listing_later(newest))
            if op == "stats":
                figures = {**self.guard.stats(), "iface": self.iface, "xdp_mode": self.mode}
                if self.fleet is not None:
                    figures["fleet"] = self.fleet.stats()
                if self.hep is not None:
                    figures["hep"] = self.hep.figures()
                    figures["hep_rejected"] = figures["hep"]["rejected"]
                return figures
            if op == "ban":
                record = self.guard.ban(request["target"], request.get("duration"),
                                        request.get("reason"))
                return record.to_wire()
            if op == "unban":
                return {"removed": self.guard.unban(request["target"])}
            if op == "unban_all":
                return {"removed": self.guard.unban_all()}
            if op == "banned":
                return {"banned": self.guard.banned(request["address"])}
            if op == "web_login_failed":
                return self.guard.web_login_failed(request["address"])
            if op == "history":
                return self.guard.history()
            if op == "settings":
                return {"config_path": self.config_path and os.path.abspath(self.config_path),
                        "overridden": sorted(k for k, v in self.overrides.items()
                                             if v is not None)}
            if op == "reload":
                self._reload_locked(raise_errors=True)
                return {"reloaded": True}
        except (GuardError, KeyError, TypeError) as error:
            message = f"missing argument {error}" if isinstance(error, KeyError) else str(error)
            raise control.ControlError(message) from None
        raise control.ControlError(f"unknown operation {op!r}")

    def run(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
        self.server.start()
        self.fleet = start_fleet(self.settings, self.guard, self.lock)
        if self.hep is not None:
            self.hep.start()
            log.info("HEP input on %s (UDP and TCP), from %s", self.settings.hep_listen,
                     " ".join(map(str, self.settings.hep_senders)) or "no one")
        tune_gc()
        s = self.settings
        log.info("guarding %s (XDP %s): ban after %d failures within %d s for %d s; "
                 "SIP ports %s; control socket %s", self.iface, self.mode, s.maxretry,
                 s.findtime, s.bantime, ",".join(map(str, s.sip_ports)), s.control_socket)
        next_tick = 0.0
        try:
            while not self._stop.is_set():
                read_until = self.guard.wall()
                self.dataplane.poll(POLL_MS)
                with self.lock:
                    if self.pending:             # filled by poll(), on this thread
                        self.guard.handle_packets(self.pending)
                        self.pending.clear()
                    if time.monotonic() >= next_tick:
                        self.guard.tick(read_until)
                        next_tick = time.monotonic() + TICK_SECONDS
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
        finally:
            self.shutdown()

    def _hep_received(self, received: list) -> None:
        """A batch of the HEP input (its thread)."""
        with self.lock:
            self.guard.handle_hep(received)

    def reload(self) -> None:
        """SIGHUP: the settings file again."""
        with self.lock:
            self._reload_locked(raise_errors=False)

    def _reload_locked(self, raise_errors: bool) -> None:
        try:
            settings = load_settings(self.config_path, self.overrides)
        except ValueError as error:
            log.error("reload refused, keeping the running settings: %s", error)
            if raise_errors:
                raise control.ControlError(f"reload refused: {error}") from None
            return
        fleet = ("fleet_redis", "fleet_name", "edge_name", "fleet_min_prefix",
                 "fleet_counting")
        if any(getattr(settings, key) != getattr(self.settings, key) for key in fleet):
            log.warning("the fleet settings changed: they apply when fastban run restarts")
        self.guard.reload(settings)
        if self.hep is not None:
            self.hep.reconfigure(settings)
        elif settings.hep_listen:
            log.warning("hep_listen is set: the HEP input starts when fastban run restarts")
        self.settings = settings

    def shutdown(self) -> None:
        self.server.stop()
        if self.fleet is not None:
            self.fleet.stop()
        if self.hep is not None:
            self.hep.stop()
        with self.lock:
            self.guard.save()
        if self.detach_on_exit:
            self.dataplane.detach()
            log.info("stopped; programs detached from %s, bans lifted", self.iface)
        else:
            self.dataplane.close()
            log.info("stopped; %d bans stay enforced on %s", len(self.guard.state.bans),
                     self.iface)
