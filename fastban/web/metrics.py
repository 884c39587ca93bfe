"""/metrics: the guard's counters for Prometheus, read from the guard at each scrape.

Built with prometheus_client: a collector asks the guard for its stats over the control socket
and turns them into metric families, named as Prometheus asks (counters end in _total, units
in the name, base units: seconds). When the guard does not answer, only fastban_up (0) is
exposed. README.md lists every metric.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)
from prometheus_client.registry import Collector

from fastban import control
from fastban.decisions import ORIGINS
from fastban.fleet.messages import WHY
from fastban.web.guard_link import GuardUnavailable

# counters: (metric name without _total, stats key, help)
COUNTERS = (
    ("fastban_packets_seen", "packets_seen", "Packets XDP saw on the guarded interface."),
    ("fastban_packets_passed", "packets_passed", "Packets XDP passed."),
    ("fastban_packets_dropped", "packets_dropped", "Packets XDP dropped: their source is banned."),
    ("fastban_packets_whitelisted", "whitelisted",
     "Packets XDP passed because their source is whitelisted."),
    ("fastban_requests_rate_limited", "rate_limited",
     "SIP requests XDP dropped: their source was over rate_limit."),
    ("fastban_sip_packets_examined", "sip_packets_examined",
     "SIP packets the capture program read."),
    ("fastban_packets_captured", "packets_captured",
     "SIP packets the capture program copied to the guard."),
    ("fastban_responses_parsed", "responses_parsed", "SIP responses the guard parsed."),
    ("fastban_requests_parsed", "requests_parsed",
     "SIP requests with credentials the guard parsed."),
    ("fastban_malformed_skipped", "malformed_skipped", "Malformed SIP messages skipped."),
    ("fastban_events_lost", "events_lost",
     "Captured packets lost because the guard fell behind the capture's ring buffer."),
    ("fastban_logins", "logins", "Successful SIP logins (their sources become trusted)."),
    ("fastban_sip_requests_over_capacity", "sip_requests_over_capacity",
     "SIP requests of untrusted sources XDP dropped over sip_capacity."),
    ("fastban_sip_requests_trusted_admitted", "sip_requests_trusted_admitted",
     "SIP requests of trusted sources XDP admitted under sip_capacity."),
    ("fastban_web_login_failures", "failures_web_login", "Wrong passwords on the web page."),
    ("fastban_unbans", "unbans_total", "Bans lifted by hand."),
    ("fastban_bans_refused", "bans_refused", "Bans refused because the kernel table was full."),
    ("fastban_duplicates_skipped", "duplicates_skipped",
     "SIP messages both the wire and HEP carried, counted once."),
)
GAUGES = (
    ("fastban_bans_active", "bans_active", "Bans in force."),
    ("fastban_challenges_open", "challenges_open", "401/407 challenges not yet answered."),
    ("fastban_trusted_addresses", "trusted_sources",
     "Addresses trusted after a successful login."),
)


class GuardCollector(Collector):
    def __init__(self, fetch_stats: Callable[[], dict]):
        self.fetch_stats = fetch_stats

    def collect(self):
        up = GaugeMetricFamily("fastban_up", "1 when the guard answered this scrape.")
        try:
            stats = self.fetch_stats()
        except (GuardUnavailable, control.ControlError):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families(stats)


def families(stats: dict):
    """The metric families of one answer of the guard's stats."""
    for name, key, text in COUNTERS:
        yield CounterMetricFamily(name, text, value=stats.get(key, 0))
    failures = CounterMetricFamily("fastban_failures", "Failed logins counted, by class: "
                                   "proven (the source held the server's nonce, or a wrong "
                                   "web page password) or unproven.", labels=["class"])
    proven = stats.get("failures_proven", 0)
    failures.add_metric(["proven"], proven)
    failures.add_metric(["unproven"], stats.get("failures_counted", 0) - proven)
    yield failures
    bans = CounterMetricFamily("fastban_bans", "Bans made, by origin.", labels=["origin"])
    by_origin = stats.get("bans_by_origin", {})
    for origin in sorted(set(ORIGINS) | set(by_origin)):
        bans.add_metric([origin], by_origin.get(origin, 0))
    yield bans
    for name, key, text in GAUGES:
        yield GaugeMetricFamily(name, text, value=stats.get(key, 0))
    latency = stats.get("ban_latency") or {"buckets": [[None, 0]], "sum": 0.0}
    yield HistogramMetricFamily(
        "fastban_ban_latency_seconds",
        "Seconds from the SIP response on the wire to the ban in the kernel map.",
        buckets=[("+Inf" if bound is None else repr(float(bound)), count)
                 for bound, count in latency["buckets"]],
        sum_value=latency["sum"])
    if stats.get("fleet"):
        yield from fleet_families(stats["fleet"])
    if stats.get("hep"):
        yield from hep_families(stats["hep"])


def hep_families(hep: dict):
    """The HEP input's figures (fastban stats: hep), when hep_listen is set."""
    yield CounterMetricFamily("fastban_hep_received", "HEP packets received, taken or refused.",
                              value=hep.get("received", 0))
    yield CounterMetricFamily("fastban_hep_messages", "SIP messages taken from HEP.",
                              value=hep.get("messages", 0))
    rejected = CounterMetricFamily("fastban_hep_rejected", "HEP packets refused, by reason: a "
                                   "sender not in hep_senders, a wrong key, a damaged packet.",
                                   labels=["reason"])
    for key in sorted(hep):           # every reason is in the figures, 0 or not
        if key.startswith("rejected_"):
            rejected.add_metric([key[len("rejected_"):]], hep[key])
    yield rejected
    yield GaugeMetricFamily("fastban_hep_connections", "HEP senders connected over TCP.",
                            value=hep.get("connections", 0))


FLEET_COUNTERS = (
    ("fastban_fleet_published", "published",
     "Bans, unbans and (fleet_counting) failures this edge wrote to the fleet's Redis."),
    ("fastban_fleet_received", "received", "Fleet messages this edge read from Redis."),
    ("fastban_fleet_applied", "applied", "Bans of other edges enforced here."),
    ("fastban_fleet_unbans_applied", "unbans_applied", "Unbans of other edges applied here."),
    ("fastban_fleet_publish_overflow", "publish_overflow",
     "Changes not queued for publishing because the queue was full."),
    ("fastban_fleet_connection_losses", "connection_losses", "Connections to Redis lost."),
    ("fastban_fleet_catch_ups", "catch_ups", "Reads of every active fleet ban (at start, and "
                                              "back after a gap the stream no longer held)."),
)
# Why a message of the fleet was not enforced here (fleet stats "refused_<why>")
FLEET_REFUSALS = ("whitelisted", "table_full", *WHY)


def fleet_families(fleet: dict):
    """The fleet link's figures (fastban stats: fleet), when the guard is in a fleet."""
    connected = GaugeMetricFamily("fastban_fleet_connected",
                                  "1 while this edge is connected to the fleet's Redis.")
    connected.add_metric([], 1 if fleet.get("connected") else 0)
    yield connected
    yield GaugeMetricFamily("fastban_fleet_publish_queue", "Changes waiting to be published.",
                            value=fleet.get("queue", 0))
    for name, key, text in FLEET_COUNTERS:
        yield CounterMetricFamily(name, text, value=fleet.get(key, 0))
    refused = CounterMetricFamily("fastban_fleet_refused", "Fleet messages not enforced here, "
                                  "by reason: whitelisted here, the kernel table full, or a "
                                  "message refused as hostile.", labels=["reason"])
    for why in FLEET_REFUSALS:
        refused.add_metric([why], fleet.get(f"refused_{why}", 0))
    yield refused
    for name, key, text in (
            ("fastban_fleet_lag_seconds", "lag_last_ms",
             "Seconds from a ban on its edge to its read here, of the newest ban read."),
            ("fastban_fleet_lag_max_seconds", "lag_max_ms",
             "The most seconds from a ban on its edge to its read here since the start.")):
        yield GaugeMetricFamily(name, text, value=(fleet.get(key) or 0) / 1000)


def registry_for(fetch_stats: Callable[[], dict]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GuardCollector(fetch_stats))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
