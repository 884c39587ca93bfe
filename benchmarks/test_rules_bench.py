"""Failure rules throughput (observe calls per second) on a realistic mix, and replay speed.

    .venv/bin/python -m pytest benchmarks/test_rules_bench.py --benchmark-only \
        --benchmark-columns=min,median,ops

The mix (per 1000 responses, messages parsed by fastban.sip from real-looking bytes):
~80 % legitimate REGISTER/INVITE flows from 2000 phones (401/407 then 200/180/486),
~10 % password guessing (repeated 401 on one Call-ID, and 401 -> 403) from 40 sources,
~5 % scanner challenges never answered (random Call-IDs), ~5 % retransmitted 401s;
with a 3-entry whitelist and expire() called once per simulated second.
Each test records ``observes_per_second`` (or ``packets_per_second``) from the median in
``extra_info``; it is printed at the end.  Nothing is asserted about speed.
"""

import ipaddress
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from fastban import sip  # noqa: E402
from fastban.config import load_settings  # noqa: E402
from fastban.replay import replay  # noqa: E402
from fastban.rules import FailureRules  # noqa: E402
from traces import Trace, nat_phones, sip_response  # noqa: E402

N = 20_000
RESULTS = {}


def realistic_mix(n=N, seed=3):
    rnd = random.Random(seed)
    phones = [ipaddress.ip_address(f"10.{i // 250}.{i % 250}.{rnd.randrange(1, 250)}")
              for i in range(2000)]
    attackers = [ipaddress.ip_address(f"203.0.113.{i + 1}") for i in range(40)]
    events = []
    t = 1_764_460_800.0
    branch = 0

    def msg(status, call_id, method="REGISTER", peer="10.0.0.1"):
        nonlocal branch
        branch += 1
        return sip.parse(sip_response(status, call_id=call_id, branch=f"z9hG4bK{branch}",
                                      via_host=str(peer), method=method))

    while len(events) < n:
        t += 0.01
        r = rnd.random()
        if r < 0.8:
            p = rnd.choice(phones)
            cid = f"c{rnd.randrange(10_000_000)}"
            if rnd.random() < 0.5:
                events += [(t, p, msg(401, cid, peer=p)), (t + 0.005, p, msg(200, cid, peer=p))]
            else:
                events += [(t, p, msg(407, cid, "INVITE", p)), (t + 0.005, p, msg(180, cid, "INVITE", p)),
                           (t + 0.006, p, msg(rnd.choice((200, 486)), cid, "INVITE", p))]
        elif r < 0.9:
            a = rnd.choice(attackers)
            cid = f"atk-{a}"
            events.append((t, a, msg(rnd.choice((401, 401, 403)), cid, peer=a)))
        elif r < 0.95:
            a = rnd.choice(attackers)
            events.append((t, a, msg(401, f"scan{rnd.randrange(10**9)}", "OPTIONS", a)))
        else:
            p = rnd.choice(phones)
            m = msg(401, "retx", peer=p)
            events += [(t, p, m), (t + 0.5, p, m)]
    return events[:n]


EVENTS = realistic_mix()


def _observe_all(settings):
    rules = FailureRules(settings)
    next_expire = EVENTS[0][0] + 1
    bans = 0
    for now, peer, m in EVENTS:
        if now >= next_expire:
            bans += len(rules.expire(now))
            next_expire = now + 1
        if rules.observe(now, peer, m) is not None:
            bans += 1
    return bans


def _record(benchmark, key, count, unit):
    rate = count / benchmark.stats.stats.median
    benchmark.extra_info[unit] = round(rate)
    RESULTS[key] = (rate, unit)


def test_rules_observe_throughput(benchmark):
    settings = load_settings(overrides={"whitelist": "192.168.0.0/16 10.200.0.1 fd00::/8"}) \
        .rule_settings()
    bans = benchmark(_observe_all, settings)
    assert bans > 0  # the mix does ban its attackers
    _record(benchmark, "rules observe()", len(EVENTS), "observes_per_second")


def test_replay_throughput(benchmark, tmp_path):
    path = nat_phones(Trace(), "198.51.100.1", phones=20, duration=3600).write(tmp_path / "nat.pcap")
    result = benchmark.pedantic(replay, args=(path, load_settings()), rounds=3, iterations=1)
    _record(benchmark, "replay (pcap -> parser -> rules)", result.packets, "packets_per_second")


def teardown_module(module):
    for key, (rate, unit) in RESULTS.items():
        print(f"\n{key}: {rate:,.0f} {unit.replace('_', ' ')}", file=sys.__stdout__)
