"""The compiled failure rules (fastban._rules, built by setup.py from fastban/rules.py) decide
exactly as the plain source: the same bans and the same counters on the same traffic."""

import importlib.util
import ipaddress
import os
from dataclasses import asdict
from pathlib import Path

import pytest

import fastban.detection
from fastban import sip
from fastban.config import load_settings
from fastban.replay import replay
from fastban.rules import RuleSettings

from traces import (
    SERVER6, T0, Trace, extension_scan, guess_401, guess_403, nat_phones, random_addresses,
    retransmitted_401, wrong_password_phone)

compiled = pytest.importorskip("fastban._rules", reason="the compiled rules are not built")
DATA = Path(__file__).parent / "data"


def _pure_rules_module(monkeypatch):
    """fastban/rules.py loaded as plain Python, whatever FASTBAN_PURE_PYTHON says."""
    monkeypatch.setenv("FASTBAN_PURE_PYTHON", "1")
    spec = importlib.util.spec_from_file_location(
        "fastban_rules_source", Path(fastban.detection.__file__).with_name("rules.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.delenv("FASTBAN_PURE_PYTHON")
    return module


@pytest.fixture
def both(monkeypatch):
    pure = _pure_rules_module(monkeypatch).FailureRules
    assert pure.__module__ == "fastban_rules_source" and compiled.IMPLEMENTATION == "cython"
    return {"pure": pure, "compiled": compiled.FailureRules}


def _replayed(monkeypatch, rules_class, path, settings):
    monkeypatch.setattr(fastban.detection, "FailureRules", rules_class)
    result = replay(path, settings)
    return [asdict(ban) for ban in result.bans], result.rules


def _attacks(path, v6):
    """Logins, wrong passwords, guesses, a scan, retransmissions and a flood of Call-IDs."""
    if v6:
        trace, peers = Trace(server=SERVER6), ["2001:db8:1::1"] + \
            [f"2001:db8:bad::{n}" for n in range(1, 6)]
    else:
        trace, peers = Trace(), ["198.51.100.1"] + [f"203.0.113.{n}" for n in range(1, 6)]
    nat_phones(trace, peers[0], duration=600)
    wrong_password_phone(trace, peers[1], t0=T0 + 5)
    guess_401(trace, peers[2], 30, t0=T0 + 10)
    guess_403(trace, peers[3], 25, t0=T0 + 20)
    extension_scan(trace, peers[4], 30, t0=T0 + 30)
    retransmitted_401(trace, peers[5], t0=T0 + 40)
    for i, peer in enumerate(random_addresses(800, v6=v6)):
        trace.respond(T0 + 50 + i * 0.001, peer, 401, call_id=f"flood-{i}", branch=f"z9{i}")
    return trace.write(path)


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("overrides", [
    {}, {"maxretry": 3, "ipv6_ban_prefix": 64, "max_open_challenges": 300, "max_sources": 100,
         "count_register_404": True, "whitelist": ["198.51.100.0/24", "2001:db8:1::/48"]}])
def test_same_decisions_on_attack_traffic(tmp_path, monkeypatch, both, overrides, v6):
    path = _attacks(tmp_path / "attacks.pcap", v6)
    settings = load_settings(overrides=overrides)
    pure = _replayed(monkeypatch, both["pure"], path, settings)
    assert pure[0] and pure[1]["failures"] > 0
    assert _replayed(monkeypatch, both["compiled"], path, settings) == pure


def test_same_decisions_on_the_stored_capture(monkeypatch, both):
    path, settings = DATA / "guess401.pcap", load_settings()
    pure = _replayed(monkeypatch, both["pure"], path, settings)
    assert len(pure[0]) == 1
    assert _replayed(monkeypatch, both["compiled"], path, settings) == pure


def test_same_decisions_on_the_403_flood_of_the_benchmark(both):
    """benchmarks.controller_rate's responses: 5,000 destinations, 10 403s each."""
    messages = []
    for n in range(50_000):
        dst = ipaddress.IPv4Address("100.64.0.1") + n // 10
        payload = (f"SIP/2.0 403 Forbidden\r\nVia: SIP/2.0/UDP {dst}:5060;branch=z9hG4bK-{n};"
                   f"received={dst}\r\nCall-ID: rate-{n}\r\nCSeq: 1 REGISTER\r\n"
                   f"Content-Length: 0\r\n\r\n").encode()
        messages.append((dst, sip.parse(payload)))
    outcomes = {}
    for name, rules_class in both.items():
        rules = rules_class(RuleSettings(maxretry=10))
        decisions = [rules.observe(T0 + n * 1e-4, peer, m) for n, (peer, m) in enumerate(messages)]
        outcomes[name] = ([d for d in decisions if d is not None], rules.stats,
                          rules.expire(T0 + 100), rules.tracked_calls, rules.tracked_sources)
    assert len(outcomes["pure"][0]) == 5000
    assert outcomes["compiled"] == outcomes["pure"]


def test_the_front_picks_the_compiled_rules_unless_pure_python_is_asked():
    import fastban.rules
    pure_asked = os.environ.get("FASTBAN_PURE_PYTHON", "") not in ("", "0")
    assert (fastban.rules.FailureRules is compiled.FailureRules) != pure_asked
    assert fastban.rules.IMPLEMENTATION == ("python" if pure_asked else "cython")
