"""HEPv3 decode throughput, both implementations, and decode + SIP parse through the batch path.

    .venv/bin/python -m pytest benchmarks/test_hep_bench.py --benchmark-only \
        --benchmark-columns=min,median,ops

The corpus: BATCH HEP-wrapped SIP messages as a HEP input sees them from a PBX under attack,
the responses of sip_corpus.realistic_responses() and some requests, wrapped as Kamailio
siptrace (with an auth key and a correlation id), Asterisk res_hep (with its Call-ID UUID
chunk) and FreeSWITCH (sofia-sip) do, IPv4 and IPv6.  Each test records
``messages_per_second`` (from the median round) and ``messages_per_second_best`` (from the
fastest round) in ``extra_info``; they show with ``--benchmark-json`` and are printed at the
end.  Goal for the compiled decode + parse: 500,000 messages/s on one core.  Nothing is
asserted about speed.
"""

import importlib
import os
import random
import socket
import struct
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from sip_corpus import (  # noqa: E402
    INVITE_PROXY_AUTH, REGISTER_WITH_AUTH, SIPP_REGISTER_AUTH, SIPVICIOUS_REGISTER,
    realistic_responses,
)

BATCH = 4000
KEY = b"spoofme"
RESULTS = {}


def _chunk(kind, data):
    return struct.pack("!HHH", 0, kind, 6 + len(data)) + data


def _wrap(payload, i, rng):
    """payload as one of the three senders would send it (see tests/test_hep_decode.py)."""
    v6 = i % 5 == 0
    family = 10 if v6 else 2
    if v6:
        src, dst, kinds = (socket.inet_pton(socket.AF_INET6, f"2001:db8::{i % 4000 + 1:x}"),
                           socket.inet_pton(socket.AF_INET6, "2001:db8::5"), (5, 6))
    else:
        src, dst, kinds = (bytes([203, 0, 113, i % 250 + 1]), bytes([198, 51, 100, 20]), (3, 4))
    sport, dport = 5060 + rng.randrange(1000), 5060
    fixed = [_chunk(1, bytes([family])), _chunk(2, bytes([17])),
             _chunk(kinds[0], src), _chunk(kinds[1], dst),
             _chunk(7, struct.pack("!H", sport)), _chunk(8, struct.pack("!H", dport)),
             _chunk(9, struct.pack("!I", 1764643888 + i)), _chunk(10, struct.pack("!I", i)),
             _chunk(11, b"\x01"), _chunk(12, struct.pack("!I", 2001))]
    sender = i % 3
    if sender == 0:      # Kamailio: addresses before ports, correlation id, auth key, payload
        chunks = fixed + [_chunk(0x11, b"call-%d" % i), _chunk(0x0e, KEY)]
    elif sender == 1:    # Asterisk: ports before addresses, auth key, UUID, payload
        chunks = fixed[:2] + fixed[4:] + fixed[2:4] + [_chunk(0x0e, KEY),
                                                       _chunk(0x11, b"call-%d" % i)]
    else:                # FreeSWITCH: ports before addresses, payload (no key: sent unkeyed)
        chunks = fixed[:2] + fixed[4:] + fixed[2:4]
    body = b"".join(chunks) + _chunk(0x0f, payload)
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body


def _corpus(count, seed=11):
    rng = random.Random(seed)
    requests = [SIPVICIOUS_REGISTER, REGISTER_WITH_AUTH, SIPP_REGISTER_AUTH, INVITE_PROXY_AUTH]
    messages = realistic_responses(count)
    for i in range(0, count, 4):          # a quarter of requests
        messages[i] = requests[(i // 4) % len(requests)]
    return [_wrap(message, i, rng) for i, message in enumerate(messages)]


DATAGRAMS = _corpus(BATCH)


def _impl(name):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        pytest.skip(f"{name} is not built ({exc}); "
                    "run: .venv/bin/python setup.py build_ext --inplace")


@pytest.fixture(params=[("fastban._hepparser", "fastban._sipparser"),
                        ("fastban.hep_pure", "fastban.sip_pure")], ids=["cython", "pure"])
def impl(request):
    hep_name, sip_name = request.param
    return hep_name, _impl(hep_name), _impl(sip_name)


def _record(benchmark, key, per_call):
    stats = benchmark.stats.stats
    rates = (per_call / stats.median, per_call / stats.min)
    benchmark.extra_info["messages_per_second"] = round(rates[0])
    benchmark.extra_info["messages_per_second_best"] = round(rates[1])
    RESULTS[key] = rates


def test_hep_decode_batch(benchmark, impl):
    """decode_batch alone (no key configured: nothing checked)."""
    name, hep, _ = impl
    out = benchmark(hep.decode_batch, DATAGRAMS)
    assert len(out) == BATCH and all(not isinstance(m, str) for m in out)
    _record(benchmark, f"decode {name}", BATCH)


def test_hep_decode_and_parse_batch(benchmark, impl):
    """The HEP input's path: decode_batch, then parse_batch of the payloads."""
    name, hep, sip = impl

    def run():
        return sip.parse_batch([m.payload for m in hep.decode_batch(DATAGRAMS)])

    out = benchmark(run)
    assert len(out) == BATCH and all(m is not None for m in out)
    _record(benchmark, f"decode+parse {name}", BATCH)


def test_hep_decode_and_parse_batch_keyed(benchmark, impl):
    """The same with an auth key configured: the FreeSWITCH third is refused (auth_key); the
    rate counts every datagram, refused or not."""
    name, hep, sip = impl

    def run():
        decoded = hep.decode_batch(DATAGRAMS, KEY)
        return sip.parse_batch([m.payload for m in decoded if not isinstance(m, str)])

    out = benchmark(run)
    assert len(out) == BATCH - BATCH // 3 and all(m is not None for m in out)
    _record(benchmark, f"decode+parse keyed {name}", BATCH)


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    """Prints the messages/second figures after the module's benchmarks have run."""
    yield
    if not RESULTS:
        return
    lines = ["", f"HEP decode throughput, {BATCH} messages a batch, messages/second "
                 "(from the median and the best round):"]
    for key in sorted(RESULTS):
        median, best = RESULTS[key]
        lines.append(f"  {key:<44} {median:>12,.0f} {best:>12,.0f}")
    for kind in ("decode", "decode+parse"):
        cy = RESULTS.get(f"{kind} fastban._hepparser")
        py = RESULTS.get(f"{kind} fastban.hep_pure")
        if cy and py:
            lines.append(f"  {kind} speed-up cython/pure: {cy[0] / py[0]:.1f}x (median)")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capman is not None:
        with capman.global_and_fixture_disabled():
            for line in lines:
                reporter.write_line(line)
