"""The per-source rate limit with `fastban run` in front of the lab's Kamailio: a REGISTER flood
from one source is cut to its rate while the phone, registering as phones do, is untouched;
stats and `fastban limited` say so."""

import time

import pytest

from conftest import require_tool
from fastban.lab.siplab import SipLab

from labwait import running_guard, settle

RATE, BURST = 10, 20
FLOOD, FLOOD_RATE = 300, 200.0


@pytest.fixture(scope="module")
def lab(kernel):
    require_tool("kamailio")
    require_tool("sipp")
    with SipLab(attackers=1) as lab:
        yield lab


@pytest.fixture(scope="module")
def guard(lab, tmp_path_factory):
    with running_guard(lab, tmp_path_factory.mktemp("guard"), maxretry=1000, rate_limit=RATE,
                       rate_limit_burst=BURST) as guard:
        yield guard


def test_a_register_flood_is_cut_to_its_rate_and_the_phone_is_not(lab, guard):
    flooder, forger = lab.attacker_address(0), lab.add_forger()
    phone = lab.start_phone(count=10, interval=0.5)      # 2 REGISTERs a turn: 4/s < RATE
    started = time.monotonic()
    flood = forger.send(FLOOD, source=flooder, methods=("REGISTER",), rate=FLOOD_RATE)
    flood_seconds = time.monotonic() - started
    registrations = phone.wait()
    reached = settle(lab, flooder)

    assert flood.sent == FLOOD
    assert registrations.successes == 10 and registrations.failures == 0
    assert BURST <= reached <= BURST + RATE * flood_seconds + 2
    stats = guard.json("stats")
    assert stats["rate_limited"] == FLOOD - reached
    limited = {row["address"]: row["requests_dropped"]
               for row in guard.json("limited")["sources"]}
    assert limited == {flooder: FLOOD - reached}         # the phone is not there
    assert lab.phone_address not in limited
    text = guard.cli("limited").stdout
    assert f"burst {BURST}" in text and flooder in text


def test_a_reload_turns_the_limit_off(lab, guard):
    flooder, forger = lab.attacker_address(0), lab.add_forger()
    settings = guard.config.read_text()
    assert f"rate_limit = {RATE}\n" in settings
    guard.restore_settings(settings.replace(f"rate_limit = {RATE}\n", "rate_limit = 0\n")
                           .encode())
    before = settle(lab, flooder)
    limited_before = guard.json("stats")["rate_limited"]
    flood = forger.send(100, source=flooder, methods=("REGISTER",), rate=FLOOD_RATE)
    assert settle(lab, flooder) - before == flood.sent == 100
    assert guard.json("stats")["rate_limited"] == limited_before
