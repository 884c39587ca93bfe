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
from fastban.web.guard_link import GuardUnavailable

# counters: (metric name without _total, stats key, help)
COUNTERS = (
    ("fastban_packets_seen", "packets_seen", "Packets XDP saw on the guarded interface."),
    ("fastban_packets_passed", "packets_passed", "Packets XDP passed."),
    ("fastban_packets_dropped", "packets_dropped", "Packets XDP dropped: their source is banned."),
    ("fastban_packets_whitelisted", "whitelisted",
     "Packets XDP passed because their source is whitelisted."),
    ("fastban_sip_packets_examined", "sip_packets_examined",
     "SIP packets the capture program read."),
    ("fastban_packets_captured", "packets_captured",
     "SIP packets the capture program copied to the guard."),
    ("fastban_responses_parsed", "responses_parsed", "SIP responses the guard parsed."),
    ("fastban_requests_parsed", "requests_parsed",
     "SIP requests with credentials the guard parsed."),
    ("fastban_malformed_skipped", "malformed_skipped", "Malformed SIP messages skipped."),
    ("fastban_events_lost", "events_lost",
     "Captured packets lost because the guard fell behind the perf buffer."),
    ("fastban_logins", "logins", "Successful SIP logins (their sources become trusted)."),
    ("fastban_web_login_failures", "failures_web_login", "Wrong passwords on the web page."),
    ("fastban_unbans", "unbans_total", "Bans lifted by hand."),
    ("fastban_bans_refused", "bans_refused", "Bans refused because the kernel table was full."),
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


def registry_for(fetch_stats: Callable[[], dict]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GuardCollector(fetch_stats))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
