"""What `fastban stats` (and /metrics) shows of a guard: its counters, the kernel's, the rules'."""

from __future__ import annotations

from fastban import sip


def guard_stats(guard) -> dict:
    counters = guard.dataplane.counters()
    rules, reader = guard.rules.stats, guard.detector.reader.stats
    detected = guard.detector.stats
    return {
        "packets_seen": counters.get("seen", 0),
        "packets_passed": counters.get("passed", 0),
        "packets_dropped": counters.get("dropped", 0),
        "sip_packets_examined": counters.get("capture_examined", 0),
        "packets_captured": counters.get("captured", 0),
        "captured_by_reason": dict(guard.copied_by_reason),
        "requests_captured": counters.get("capture_requests", 0),
        "captured_unsure": counters.get("capture_unsure", 0),
        "events_lost": counters.get("capture_lost", 0),
        "sip_messages": reader["messages"],
        "hep_messages_read": detected["hep_messages"],
        "duplicates_skipped": detected["duplicates"],
        "responses_parsed": rules["responses_seen"],
        "requests_parsed": rules["requests_seen"],
        "malformed_skipped": reader["malformed"],
        "fragments": reader["fragments"],
        "truncated": reader["truncated"],
        "truncated_unusable": reader["truncated_unusable"],
        "challenges_seen": rules["challenges"],
        "failures_counted": rules["failures"],
        "failures_proven": rules["failures_proven"],
        "unproven_of_trusted": rules["unproven_of_trusted"],
        "logins": rules["logins"],
        "trusted_sources": guard.rules.trusted_sources,
        "challenges_open": guard.rules.open_challenges,
        "bans_active": len(guard.state.bans),
        "bans_total": guard.counts["bans_total"],
        "bans_refused": guard.counts["bans_refused"],
        "unbans_total": guard.counts["unbans_total"],
        "bans_by_origin": dict(guard.bans_by_origin),
        "kernel_bans": counters.get("kernel_bans", 0),      # armed sources the capture banned
        "kernel_bans_lifted": guard.arming.counts["kernel_bans_lifted"],   # ... unconfirmed
        "sources_armed": guard.arming.armed,
        "failures_web_login": rules["failures_web_login"],
        "whitelisted": counters.get("whitelisted", 0),
        "rate_limited": counters.get("rate_limited", 0),
        "sip_requests_over_capacity": counters.get("over_capacity", 0),
        "sip_requests_trusted_admitted": counters.get("trusted_admitted", 0),
        "trust_refused_by_kernel": guard.kernel_trust.refused,
        "ban_latency": guard.ban_latency.to_wire(),
        "parser": sip.IMPLEMENTATION,
        "rule_counts": dict(rules),        # what `fastban replay` reports as "rules"
    }
