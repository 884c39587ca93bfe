"""SIP parser throughput, both implementations, on the response mix the capture path sees.

    .venv/bin/python -m pytest benchmarks/test_parser_bench.py --benchmark-only \
        --benchmark-columns=min,median,ops

Each test records ``responses_per_second`` (from the median round) and
``responses_per_second_best`` (from the fastest round; the better figure on a shared, noisy
machine) in ``extra_info``; they show with ``--benchmark-json`` and are printed at the end.  Nothing is asserted about speed.
"""

import importlib
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from sip_corpus import ASTERISK_401, realistic_responses  # noqa: E402

BATCH = 1000
CORPUS = realistic_responses(BATCH)
RESULTS = {}


def _impl(name):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        pytest.skip(f"{name} is not built ({exc}); run: .venv/bin/python setup.py build_ext --inplace")


@pytest.fixture(params=["fastban._sipparser", "fastban.sip_pure"], ids=["cython", "pure"])
def impl(request):
    return request.param, _impl(request.param)


def _record(benchmark, key, per_call):
    stats = benchmark.stats.stats
    rates = (per_call / stats.median, per_call / stats.min)
    benchmark.extra_info["responses_per_second"] = round(rates[0])
    benchmark.extra_info["responses_per_second_best"] = round(rates[1])
    RESULTS[key] = rates


def test_parse_single(benchmark, impl):
    name, mod = impl
    msg = benchmark(mod.parse, ASTERISK_401)
    assert msg.status == 401
    _record(benchmark, f"single {name}", 1)


def test_parse_batch(benchmark, impl):
    name, mod = impl
    out = benchmark(mod.parse_batch, CORPUS)
    assert len(out) == BATCH and all(m is not None for m in out)
    _record(benchmark, f"batch {name}", BATCH)


def test_parse_batch_and_read(benchmark, impl):
    """Batch parse, then read what the failure rules read from every message.

    The compiled parser makes a bytes field when it is read, so this is the honest figure for
    the capture path; ``test_parse_batch`` alone is the parse.
    """
    name, mod = impl

    def run():
        n = 0
        for m in mod.parse_batch(CORPUS):
            if m.is_response and m.status >= 400:
                n += len(m.call_id) + len(m.via_branch) + len(m.via_received) + len(m.cseq_method)
        return n

    assert benchmark(run) > 0
    _record(benchmark, f"batch+read {name}", BATCH)


def test_parse_loop(benchmark, impl):
    """parse() called per packet from Python, for comparison with the batch call."""
    name, mod = impl
    parse = mod.parse

    def loop():
        return [parse(p) for p in CORPUS]

    benchmark(loop)
    _record(benchmark, f"loop {name}", BATCH)


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    """Prints the responses/second figures after the module's benchmarks have run."""
    yield
    if not RESULTS:
        return
    lines = ["", "SIP parser throughput, responses/second (from the median and the best round):"]
    for key in sorted(RESULTS):
        median, best = RESULTS[key]
        lines.append(f"  {key:<28} {median:>12,.0f} {best:>12,.0f}")
    for kind in ("batch", "batch+read"):
        cy, py = RESULTS.get(f"{kind} fastban._sipparser"), RESULTS.get(f"{kind} fastban.sip_pure")
        if cy and py:
            lines.append(f"  {kind} speed-up cython/pure: {cy[0] / py[0]:.1f}x (median)")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capman is not None:
        with capman.global_and_fixture_disabled():
            for line in lines:
                reporter.write_line(line)
