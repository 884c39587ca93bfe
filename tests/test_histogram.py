"""fastban.histogram.Histogram: Prometheus buckets ("less than or equal"), cumulative on the wire."""
import pytest

from fastban.histogram import BAN_LATENCY_BOUNDS, Histogram

BOUNDS = (0.1, 0.5, 1.0)


def test_an_observation_below_the_first_bound_lands_in_the_first_bucket():
    histogram = Histogram(BOUNDS)
    histogram.observe(0.05)
    assert histogram.counts == [1, 0, 0, 0]


def test_an_observation_between_bounds_lands_in_the_next_bound_up():
    histogram = Histogram(BOUNDS)
    histogram.observe(0.3)
    histogram.observe(0.7)
    assert histogram.counts == [0, 1, 1, 0]


def test_an_observation_exactly_on_a_bound_lands_in_that_bound():
    histogram = Histogram(BOUNDS)
    for bound in BOUNDS:
        histogram.observe(bound)
    assert histogram.counts == [1, 1, 1, 0]


def test_an_observation_above_every_bound_lands_in_inf():
    histogram = Histogram(BOUNDS)
    histogram.observe(1.0000001)
    histogram.observe(50.0)
    assert histogram.counts == [0, 0, 0, 2]


def test_sum_and_count_follow_the_observations():
    histogram = Histogram(BOUNDS)
    assert (histogram.sum, histogram.count) == (0.0, 0)
    for value in (0.05, 0.5, 2.0):
        histogram.observe(value)
    assert histogram.sum == pytest.approx(2.55)
    assert histogram.count == 3


def test_to_wire_buckets_are_cumulative_and_end_with_none():
    histogram = Histogram(BOUNDS)
    for value in (0.05, 0.1, 0.3, 0.3, 0.9, 7.0):
        histogram.observe(value)
    wire = histogram.to_wire()
    assert wire["buckets"] == [[0.1, 2], [0.5, 4], [1.0, 5], [None, 6]]
    assert wire["count"] == 6
    assert wire["sum"] == pytest.approx(8.65)


def test_to_wire_of_an_empty_histogram_has_every_bound_at_zero():
    wire = Histogram(BOUNDS).to_wire()
    assert wire == {"buckets": [[0.1, 0], [0.5, 0], [1.0, 0], [None, 0]], "sum": 0.0,
                    "count": 0}


def test_the_default_bounds_are_the_ban_latency_bounds():
    wire = Histogram().to_wire()
    assert [bound for bound, _ in wire["buckets"]] == [*BAN_LATENCY_BOUNDS, None]


@pytest.mark.parametrize("bounds", [(0.5, 0.1), (0.1, 0.1, 0.5), (1.0, 0.5, 2.0)])
def test_bounds_that_are_not_increasing_are_refused(bounds):
    with pytest.raises(ValueError, match="increasing"):
        Histogram(bounds)
