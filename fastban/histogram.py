"""A latency histogram with fixed buckets, as Prometheus reads one: cumulative counts per upper
bound, their sum and count. Pure; the guard observes into it and the control protocol carries
`to_wire()` to /metrics."""

from __future__ import annotations

import bisect

# Seconds from the response on the wire to the ban in the kernel map.
BAN_LATENCY_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                      0.25, 0.5, 1.0, 2.5)


class Histogram:
    def __init__(self, bounds=BAN_LATENCY_BOUNDS):
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("bucket bounds must be increasing")
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)      # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def to_wire(self) -> dict:
        """{"buckets": [[upper bound, observations ≤ it], ...], "sum", "count"}; the last
        bucket's bound is None (+Inf)."""
        cumulative, buckets = 0, []
        for bound, n in zip((*self.bounds, None), self.counts):
            cumulative += n
            buckets.append([bound, cumulative])
        return {"buckets": buckets, "sum": self.sum, "count": cumulative}
