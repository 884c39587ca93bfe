"""The failure rules, pinned one behaviour at a time (time is passed in)."""

import ipaddress
import random
from types import SimpleNamespace

import pytest

from fastban.decisions import BanDecision
from fastban.rules import FailureRules, RuleSettings

A = ipaddress.ip_address("203.0.113.9")
B = ipaddress.ip_address("198.51.100.7")
V6 = ipaddress.ip_address("2001:db8:1:2::99")


def resp(status, call_id=b"c1", branch=b"z9hG4bK-1", method=b"REGISTER", received=b"",
         nonce=None, stale=False):
    """A parsed response as fastban.sip.parse() returns it (only what the rules read)."""
    return SimpleNamespace(
        is_response=True, status=status, call_id=call_id, via_branch=branch,
        cseq=1, cseq_method=method, via_received=received, stale=stale,
        challenge_nonces=(nonce,) if nonce else (), credential_nonces=(),
    )


def req(call_id=b"c1", branch=b"x", nonce=None, method=b"REGISTER"):
    """A parsed request; with a nonce, it carries credentials answering that nonce."""
    return SimpleNamespace(is_response=False, status=0, call_id=call_id, via_branch=branch,
                           cseq=1, cseq_method=method, via_received=b"", stale=False,
                           challenge_nonces=(), credential_nonces=(nonce,) if nonce else ())


def login(r, peer, t, call_id=b"reg", nonce=b"n-login"):
    """A phone's REGISTER -> 401 -> REGISTER with the right credentials -> 200."""
    r.observe(t, peer, resp(401, call_id, b"l1", nonce=nonce))
    r.observe(t + 0.01, peer, req(call_id, b"l2", nonce))
    return r.observe(t + 0.02, peer, resp(200, call_id, b"l2"))


def bad_guesses(r, peer, n, t0=0.0, call_id=b"guess", status=401):
    """A guesser as svcrack or a phone with a wrong password: one challenge, then n requests
    with credentials answering the last nonce, each rejected by a 401 bringing the next nonce
    (or a 403, after which the old nonce is used again). Returns the n decisions."""
    r.observe(t0, peer, resp(401, call_id, b"c0", nonce=b"g-0"))
    decisions, nonce = [], b"g-0"
    for i in range(1, n + 1):
        r.observe(t0 + i, peer, req(call_id, b"a%d" % i, nonce))
        if status == 401:
            nonce = b"g-%d" % i
        decisions.append(r.observe(t0 + i + 0.01, peer,
                                   resp(status, call_id, b"a%d" % i,
                                        nonce=nonce if status == 401 else None)))
    return decisions


def rules(**kw):
    return FailureRules(RuleSettings(**kw))


def guess_with_401(r, peer, n, t0=0.0, call_id=b"atk"):
    """Attack tool: same Call-ID and CSeq, a new branch per guess; wrong creds get a 401.
    Returns (decision, guess index) of the first ban, else (None, n)."""
    r.observe(t0, peer, resp(401, call_id, b"z9hG4bK-0"))  # the initial challenge
    for i in range(1, n + 1):
        d = r.observe(t0 + i, peer, resp(401, call_id, b"z9hG4bK-%d" % i))
        if d:
            return d, i
    return None, n


def test_defaults_are_mikopbx():
    s = RuleSettings()
    assert (s.maxretry, s.findtime, s.challenge_grace, s.trust_time) == (10, 1800, 32, 3600)
    assert s.max_sources == 100_000 and s.max_open_challenges == 200_000
    assert s.count_register_404 is False


def test_a_challenge_alone_is_not_a_failure():
    r = rules()
    assert r.observe(0, A, resp(401)) is None
    assert r.failures_of(A) == 0
    assert r.stats["challenges"] == 1


def test_challenge_answered_by_200_is_cleared():
    r = rules(maxretry=1)
    r.observe(0, A, resp(401, branch=b"b1"))
    r.observe(0.1, A, resp(200, branch=b"b2"))
    assert r.expire(1000) == []
    assert r.failures_of(A) == 0
    assert r.stats["cleared"] == 1


def test_provisional_does_not_clear_and_requests_ignored():
    r = rules(maxretry=1)
    r.observe(0, A, resp(407, branch=b"b1", method=b"INVITE"))
    assert r.observe(0.1, A, resp(100, branch=b"b2", method=b"INVITE")) is None
    assert r.observe(0.1, A, req()) is None
    assert r.stats["provisional_ignored"] == 1 and r.stats["requests_ignored"] == 1
    # the challenge is still open: unanswered after the grace -> failure -> ban (maxretry 1)
    [d] = r.expire(40)
    assert d.address == A and "unanswered 407" in d.reason


@pytest.mark.parametrize("other", [486, 487, 302, 500, 603, 404, 488])
def test_any_other_final_answer_clears(other):
    r = rules(maxretry=1)
    r.observe(0, A, resp(407, branch=b"b1", method=b"INVITE"))
    r.observe(1, A, resp(other, branch=b"b2", method=b"INVITE"))
    assert r.expire(100) == []


def test_repeated_401_new_branch_same_cseq_banned_after_exactly_n():
    r = rules(maxretry=10)
    d, i = guess_with_401(r, A, 20)
    assert i == 10
    assert isinstance(d, BanDecision)
    assert d.address == A and d.network == ipaddress.ip_network("203.0.113.9/32")
    assert d.failures == 10 and d.first_failure_at == 1 and d.decided_at == 10
    assert d.proven == 0 and d.failure_class == "unproven"
    assert d.reason == "10 failures in 9 s: 10 unproven (10×repeated 401)"


def test_407_repeated_counts_too():
    r = rules(maxretry=3)
    r.observe(0, A, resp(407, b"i", b"b0", b"INVITE"))
    assert r.observe(1, A, resp(407, b"i", b"b1", b"INVITE")) is None
    assert r.observe(2, A, resp(407, b"i", b"b2", b"INVITE")) is None
    d = r.observe(3, A, resp(407, b"i", b"b3", b"INVITE"))
    assert d and "3×repeated 407" in d.reason


def test_403_guessing_banned_after_exactly_n_not_before():
    r = rules(maxretry=10)
    for i in range(1, 10):
        r.observe(i, A, resp(401, b"atk", b"c%d" % i))
        assert r.observe(i + 0.1, A, resp(403, b"atk", b"a%d" % i)) is None
    assert r.failures_of(A) == 9
    r.observe(10, A, resp(401, b"atk", b"c10"))
    d = r.observe(10.1, A, resp(403, b"atk", b"a10"))
    assert d and d.failures == 10 and "10×403" in d.reason
    # 401 followed by 403 counted once per guess; nothing left to expire
    assert r.expire(1000) == []


def test_retransmitted_401_same_branch_counts_once():
    r = rules(maxretry=2)
    for t in range(5):
        assert r.observe(t * 0.5, A, resp(401, branch=b"same")) is None
    assert r.failures_of(A) == 0
    assert r.stats["retransmissions"] == 4
    # ... and after the grace it is a single unanswered challenge
    r.expire(100)
    assert r.failures_of(A) == 1


def test_retransmitted_403_counts_once():
    r = rules(maxretry=3)
    for t in range(7):  # an INVITE's 403 retransmitted by timer G (never ACKed)
        r.observe(t, A, resp(403, b"inv", b"b1", b"INVITE"))
    assert r.failures_of(A) == 1


def test_scanner_never_answering_banned_via_grace():
    r = rules(maxretry=10, challenge_grace=32)
    methods = [b"REGISTER", b"INVITE", b"OPTIONS"]
    for ext in range(30):
        status = 407 if methods[ext % 3] == b"INVITE" else 401
        r.observe(ext * 0.1, A, resp(status, b"scan-%d" % ext, b"b%d" % ext, methods[ext % 3]))
    assert r.expire(31) == []  # not yet: grace not over
    decisions = r.expire(40)
    assert len(decisions) == 1  # banned once; the rest were dropped with the reset
    d = decisions[0]
    assert d.address == A and d.failures == 10
    assert "unanswered 401" in d.reason and "unanswered 407" in d.reason
    assert r.expire(100) == []
    assert r.failures_of(A) == 0


def test_sliding_window():
    r = rules(maxretry=3, findtime=100)
    r.observe(0, A, resp(403, b"a", b"1"))
    r.observe(50, A, resp(403, b"b", b"1"))
    assert r.observe(101, A, resp(403, b"c", b"1")) is None  # the first left the window
    d = r.observe(140, A, resp(403, b"d", b"1"))
    assert d and d.failures == 3 and d.first_failure_at == 50


def test_history_reset_after_ban():
    r = rules(maxretry=2)
    r.observe(0, A, resp(403, b"a", b"1"))
    assert r.observe(1, A, resp(403, b"b", b"1"))
    assert r.failures_of(A) == 0
    assert r.observe(2, A, resp(403, b"c", b"1")) is None


def test_sources_counted_separately():
    r = rules(maxretry=2)
    r.observe(0, A, resp(403, b"a", b"1"))
    assert r.observe(1, B, resp(403, b"b", b"1")) is None
    assert r.observe(2, A, resp(403, b"c", b"1")).address == A


def test_register_404_counts_only_when_enabled():
    off = rules(maxretry=1)
    assert off.observe(0, A, resp(404, method=b"REGISTER")) is None
    on = rules(maxretry=1, count_register_404=True)
    assert on.observe(0, A, resp(404, b"x", method=b"INVITE")) is None
    d = on.observe(0, A, resp(404, method=b"REGISTER"))
    assert d and "404 to REGISTER" in d.reason


@pytest.mark.parametrize("wl,peer", [
    (["203.0.113.9"], "203.0.113.9"),
    (["203.0.113.0/24"], "203.0.113.200"),
    (["2001:db8:1:2::99"], "2001:db8:1:2::99"),
    (["2001:db8::/32"], "2001:db8:ffff::1"),
])
def test_whitelist_never_counted_nor_banned(wl, peer):
    r = rules(maxretry=1, whitelist=tuple(ipaddress.ip_network(n) for n in wl))
    p = ipaddress.ip_address(peer)
    for i in range(20):
        assert r.observe(i, p, resp(403, b"c%d" % i, b"b")) is None
        r.observe(i, p, resp(401, b"s%d" % i, b"b"))
    assert r.expire(1000) == []
    assert r.stats["whitelisted_skipped"] == 40 and r.stats["failures"] == 0
    # a neighbour outside the whitelist is still banned
    other = ipaddress.ip_address("192.0.2.1")
    assert r.observe(0, other, resp(403)) is not None


def test_ipv6_peer_and_prefix_ban():
    r = rules(maxretry=2)
    r.observe(0, V6, resp(403, b"a", b"1"))
    d = r.observe(1, V6, resp(403, b"b", b"1"))
    assert d.network == ipaddress.ip_network("2001:db8:1:2::99/128")
    # with a /64 prefix, rotating addresses inside the /64 is one source
    r = rules(maxretry=3, ipv6_ban_prefix=64)
    for i in range(2):
        assert r.observe(i, ipaddress.ip_address(f"2001:db8:1:2::{i + 1}"), resp(403, b"%d" % i)) is None
    d = r.observe(5, ipaddress.ip_address("2001:db8:1:2::ffff"), resp(403, b"z"))
    assert d.network == ipaddress.ip_network("2001:db8:1:2::/64")
    # IPv4 stays per address; keys of the two families never collide
    assert r.source_key(A) == int(A)
    assert r.source_key(ipaddress.ip_address("2001:db8:1:2::1")) == \
        r.source_key(ipaddress.ip_address("2001:db8:1:2::ffff"))
    assert r.source_key(ipaddress.ip_address("::cb00:7109")) != r.source_key(A)


def test_via_received_mismatch_counted():
    r = rules()
    r.observe(0, A, resp(200, received=b"203.0.113.9"))
    r.observe(0, A, resp(200, b"c2", received=b"10.0.0.5"))
    r.observe(0, V6, resp(200, b"c3", received=b"[2001:db8:1:2::99]"))
    r.observe(0, A, resp(200, b"c4"))  # absent: nothing to compare
    assert r.stats["via_received_mismatch"] == 1


def test_forget_drops_history_and_open_challenges():
    r = rules(maxretry=2)
    r.observe(0, A, resp(403, b"a", b"1"))
    r.observe(0, A, resp(401, b"s", b"1"))
    r.forget("203.0.113.9")
    assert r.failures_of(A) == 0
    assert r.expire(100) == []
    # new activity after forget() counts again
    r.observe(200, A, resp(401, b"s2", b"1"))
    r.expire(300)
    assert r.failures_of(A) == 1


def test_nat_with_many_phones_never_banned():
    """50 phones behind one address, each REGISTER->401->REGISTER(auth)->200, every 30 s."""
    r = rules()
    nat = ipaddress.ip_address("192.0.2.50")
    t = 0.0
    for cycle in range(2 * 60 * 4):  # 4 hours of simulated time (24 h is in test_replay)
        for phone in range(50):
            cid = b"phone-%d" % phone
            t = cycle * 30 + phone * 0.5
            assert r.observe(t, nat, resp(401, cid, b"b%d-a" % cycle)) is None
            assert r.observe(t + 0.05, nat, resp(200, cid, b"b%d-b" % cycle)) is None
        assert r.expire(t) == []
    assert r.stats["failures"] == 0 and r.tracked_calls == 0


def test_caps_hold_under_flood_of_call_ids():
    r = rules(max_open_challenges=1000, max_sources=500)
    rnd = random.Random(1)
    for i in range(20_000):
        peer = ipaddress.ip_address(rnd.getrandbits(32))
        r.observe(i * 0.0001, peer, resp(401, rnd.randbytes(8), b"b"))
        assert r.tracked_calls <= 1000 and r.tracked_sources <= 500
    assert r.stats["challenges_evicted"] == 19_000
    assert r.stats["sources_evicted"] > 0


def test_eviction_counts_unanswered_so_flood_cannot_hide_a_scanner():
    r = rules(maxretry=10, max_open_challenges=100)
    decisions = []
    for i in range(1000):  # one scanner, random Call-IDs, far faster than the grace
        assert r.observe(i * 0.001, A, resp(401, b"rnd-%d" % i, b"b")) is None
        if r.next_expiry() <= i * 0.001:  # a decision is waiting
            decisions += r.expire(i * 0.001)
    assert decisions and decisions[0].failures == 10
    assert "10×unanswered 401" in decisions[0].reason
    assert r.tracked_calls <= 100


def test_open_challenge_count_stays_exact():
    rnd = random.Random(5)
    r = rules(maxretry=5, max_open_challenges=50)
    peers = [ipaddress.ip_address(f"192.0.2.{i}") for i in range(1, 6)]
    for i in range(5000):
        now = i * 0.05
        status = rnd.choice((401, 401, 407, 403, 200, 486, 100, 404))
        r.observe(now, rnd.choice(peers), resp(status, b"c%d" % rnd.randrange(80),
                                               b"b%d" % rnd.randrange(3)))
        if i % 7 == 0:
            r.expire(now)
        if i % 500 == 0:
            r.forget(rnd.choice(peers))
        assert r.open_challenges == sum(1 for c in r._calls.values() if c.open)
        assert r.tracked_calls <= 50


# -- proven failures, trust and forgers ----------------------------------------------------

def test_credentials_answering_an_issued_nonce_make_a_proven_failure():
    r = rules(maxretry=3)
    *before, d = bad_guesses(r, A, 3)
    assert before == [None, None]
    assert d.failures == 3 and d.proven == 3 and d.failure_class == "proven"
    assert d.reason == "3 failures in 2 s: 3 proven (3×bad credentials 401)"
    assert r.stats["credentials_proven"] == 3 and r.stats["failures_proven"] == 3


def test_a_nonce_in_a_challenge_sent_again_is_issued_too():
    """A stateless server (Kamailio without tm) answers a REGISTER sent again with the same
    headers but a new nonce: counted once, and credentials for the new nonce prove a failure."""
    r = rules(maxretry=2)
    r.observe(0.0, A, resp(401, b"c", b"b0", nonce=b"first"))
    assert r.observe(0.5, A, resp(401, b"c", b"b0", nonce=b"second")) is None
    assert r.stats["retransmissions"] == 1
    r.observe(1.0, A, req(b"c", b"b1", b"second"))
    assert r.observe(1.01, A, resp(401, b"c", b"b1", nonce=b"third")) is None
    assert r.stats["failures_proven"] == 1 and r.failures_of(A) == 1


def test_a_403_to_proven_credentials_is_proven_too():
    r = rules(maxretry=2)
    decisions = bad_guesses(r, A, 2, status=403)
    assert decisions[0] is None and decisions[1].kinds == {"bad credentials 403": 2}


def test_made_up_or_borrowed_nonces_prove_nothing():
    """A forger never sees the nonces the server sends to the address it forges: its made-up
    nonce, or one the server issued to the forger's own address, proves nothing."""
    r = rules(maxretry=100)
    r.observe(0, B, resp(401, b"forger-own", b"f1", nonce=b"issued-to-B"))
    r.observe(1, A, resp(401, b"spoofed", b"s1", nonce=b"issued-to-A"))
    for i, nonce in enumerate((b"made-up", b"issued-to-B")):
        r.observe(2 + i, A, req(b"spoofed", b"s-%d" % i, nonce))
        r.observe(2.01 + i, A, resp(401, b"spoofed", b"s-%d" % i, nonce=b"next"))
    assert r.stats["failures_proven"] == 0
    assert r.stats["failures_repeated_challenge"] == 2


def test_credentials_from_an_address_not_challenged_within_the_grace_are_ignored():
    """The capture copies requests with credentials only from addresses challenged within
    challenge_grace; the rules read no others, so a replay decides as the live guard does."""
    r = rules(maxretry=1, challenge_grace=10)
    r.observe(0, A, resp(401, b"c", b"1", nonce=b"n"))
    r.observe(30, A, req(b"c", b"2", b"n"))             # long after the challenge
    assert r.stats["requests_ignored"] == 1 and r.stats["credentials_waiting"] == 0
    r.observe(30.1, A, resp(403, b"c", b"2"))
    assert r.stats["failures_403"] == 1 and r.stats["failures_proven"] == 0


def test_an_answer_after_the_grace_proves_nothing():
    r = rules(maxretry=10, challenge_grace=5)
    r.observe(0, A, resp(401, b"c", b"1", nonce=b"n"))
    r.observe(1, A, req(b"c", b"2", b"n"))
    r.observe(20, A, resp(200, b"c", b"2"))
    assert not r.is_trusted(A, 20) and r.stats["logins"] == 0


def test_a_stale_challenge_is_no_failure():
    r = rules(maxretry=1)
    r.observe(0, A, resp(401, b"c", b"1", nonce=b"old"))
    r.observe(1, A, req(b"c", b"2", b"old"))
    assert r.observe(1.1, A, resp(401, b"c", b"2", nonce=b"new", stale=True)) is None
    assert r.observe(2, A, resp(401, b"c", b"3", nonce=b"newer", stale=True)) is None
    assert r.stats["stale_challenges"] == 2 and r.stats["failures"] == 0


def test_a_login_trusts_the_source_and_forged_failures_then_count_nothing():
    r = rules(maxretry=3, trust_time=600)
    assert login(r, A, 0) is None
    assert r.is_trusted(A, 1) and r.stats["logins"] == 1
    for i in range(50):                                 # spoofed REGISTERs, never answered
        r.observe(1 + i * 0.01, A, resp(401, b"forged-%d" % i, b"b", nonce=b"x%d" % i))
        r.observe(2 + i * 0.01, A, resp(403, b"forged-403-%d" % i, b"b"))
    assert r.expire(100) == []
    assert r.failures_of(A) == 0 and r.stats["unproven_of_trusted"] == 100
    # ... but the same flood bans an address that never logged in
    for i in range(3):
        r.observe(200 + i, B, resp(403, b"forged-%d" % i, b"b"))
    assert r.stats["bans"] == 1


def test_a_trusted_source_guessing_passwords_is_still_banned():
    r = rules(maxretry=4)
    login(r, A, 0)
    decisions = bad_guesses(r, A, 4, t0=10)
    assert decisions[:3] == [None] * 3
    assert decisions[3].failure_class == "proven" and decisions[3].failures == 4


def test_trust_ends_with_trust_time_and_drops_earlier_unproven_failures():
    r = rules(maxretry=5, trust_time=100)
    for i in range(3):
        r.observe(i, A, resp(403, b"f%d" % i, b"b"))
    assert r.failures_of(A) == 3
    login(r, A, 10)
    assert r.failures_of(A) == 0                        # the unproven ones are gone
    assert r.is_trusted(A, 109) and not r.is_trusted(A, 111)
    r.expire(111)
    r.observe(112, A, resp(403, b"after", b"b"))
    assert r.failures_of(A) == 1


def test_trust_and_counts_are_per_ipv6_prefix():
    r = rules(maxretry=2, ipv6_ban_prefix=64)
    phone = ipaddress.ip_address("2001:db8:1:2::10")
    neighbour = ipaddress.ip_address("2001:db8:1:2::20")
    login(r, phone, 0)
    assert r.is_trusted(neighbour, 1)
    assert r.trusted(1) == {ipaddress.ip_network("2001:db8:1:2::/64"): 3600.02}


def test_restored_trust_holds_until_its_time():
    r = rules(maxretry=1)
    r.restore_trust(ipaddress.ip_network("203.0.113.9/32"), 500, now=0)
    r.restore_trust(ipaddress.ip_network("198.51.100.7/32"), 5, now=10)   # already over
    assert r.is_trusted(A, 499) and not r.is_trusted(B, 10)
    assert r.observe(1, A, resp(403)) is None


def test_a_closed_403_keeps_its_record_so_a_retransmission_counts_once():
    """A 200 on the same Call-ID must not reset what a 403 left: the capture does not copy
    that 200 (no challenge is open), so the rules must not depend on it."""
    r = rules(maxretry=5)
    r.observe(0, A, resp(403, b"inv", b"b1", b"INVITE"))
    r.observe(1, A, resp(200, b"inv", b"b2", b"INVITE"))
    r.observe(2, A, resp(403, b"inv", b"b1", b"INVITE"))     # timer G retransmission
    assert r.failures_of(A) == 1


def test_reconfigure_keeps_the_counts_unless_the_structure_changes():
    r = rules(maxretry=5, findtime=100)
    for i in range(3):
        r.observe(i, A, resp(403, b"%d" % i, b"b"))
    r.reconfigure(RuleSettings(maxretry=4, findtime=1000, trust_time=10))
    assert r.failures_of(A) == 3
    assert r.observe(500, A, resp(403, b"x", b"b")).failures == 4
    with pytest.raises(ValueError):
        r.reconfigure(RuleSettings(ipv6_ban_prefix=64))


def test_waiting_requests_nonces_and_challenged_addresses_are_bounded():
    r = rules(max_open_challenges=100, max_sources=50)
    rnd = random.Random(3)
    for i in range(5000):
        peer = ipaddress.ip_address(rnd.getrandbits(32))
        r.observe(i * 0.001, peer, resp(401, b"c%d" % i, b"b", nonce=rnd.randbytes(8)))
        r.observe(i * 0.001, peer, req(b"c%d" % i, b"r%d" % i, rnd.randbytes(8)))
    assert len(r._waiting) <= 100 and len(r._nonces) <= 100 and len(r._challenged) <= 50
    r.expire(10_000)
    assert not r._waiting and not r._challenged and not r._calls


def test_settings_validation():
    with pytest.raises(ValueError):
        RuleSettings(maxretry=0)
    with pytest.raises(ValueError):
        RuleSettings(ipv6_ban_prefix=0)
    s = RuleSettings(whitelist=("10.0.0.1", "10.1.0.0/16"))
    assert s.whitelist[1] == ipaddress.ip_network("10.1.0.0/16")


# -- property: interleaving does not change the count -------------------------------------

from hypothesis import given, settings as hsettings, strategies as st  # noqa: E402


@hsettings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 6), st.sampled_from([401, 407, 403])),
                min_size=1, max_size=12),
       st.randoms(use_true_random=False))
def test_interleaved_conversations_count_exactly_the_wrong_guesses(convs, rnd):
    """Each conversation: a peer, one Call-ID, a first challenge, `guesses` wrong answers
    (a fresh challenge or a 403), then either a 200 (legit) or silence (attacker)."""
    events = []
    expected = {}
    for n, (legit, guesses, wrong) in enumerate(convs):
        peer = ipaddress.ip_address(f"198.51.100.{n + 1}")
        cid = b"conv%d" % n
        first = 407 if wrong == 407 else 401
        steps = [first] + [wrong] * guesses
        if wrong == 403:  # a 403 ends a transaction; the next guess is challenged first
            steps = [first] + [s for _ in range(guesses) for s in (first, 403)][1:] \
                if guesses else [first]
        steps.append(200 if legit else None)
        t = rnd.uniform(0, 5)
        for k, status in enumerate(steps):
            if status is not None:
                events.append((t, peer, resp(status, cid, b"b%d" % k)))
            t += rnd.uniform(0.01, 3)
        # silence after a challenge: it expires unanswered (one more); after a 403: nothing
        open_at_end = not legit and (wrong != 403 or guesses == 0)
        expected[peer] = guesses + open_at_end
    events.sort(key=lambda e: e[0])
    r = rules(maxretry=1000)
    for t, peer, m in events:
        r.expire(t)
        assert r.observe(t, peer, m) is None
    r.expire(10_000)
    for peer, n in expected.items():
        assert r.failures_of(peer) == n, peer


def test_wrong_web_passwords_count_with_sip_failures_as_proven():
    r = rules(maxretry=5, findtime=600)
    assert all(d is None for d in bad_guesses(r, A, 3))
    assert r.web_login_failed(10.0, A) is None
    decision = r.web_login_failed(11.0, A)
    assert decision is not None and decision.failures == 5 and decision.proven == 5
    assert decision.failure_class == "proven"
    assert "1×wrong web page password" not in decision.reason
    assert "2×wrong web page password" in decision.reason
    assert r.stats["failures_web_login"] == 2 and r.stats["failures_proven"] == 5
    assert r.failures_of(A) == 0                         # reset by the ban


def test_wrong_web_passwords_of_a_trusted_or_whitelisted_address():
    r = rules(maxretry=2, trust_time=3600, whitelist=(ipaddress.ip_network("198.51.100.0/24"),))
    assert r.web_login_failed(1.0, B) is None and r.web_login_failed(2.0, B) is None
    assert r.failures_of(B) == 0 and r.stats["whitelisted_skipped"] == 2
    login(r, A, 0.0)                                      # a phone of A logged in
    assert r.web_login_failed(1.0, A) is None
    assert r.web_login_failed(2.0, A) is not None        # proven: trust does not excuse it


def test_a_200_read_before_its_request_is_still_a_login():
    """The live capture reads the CPUs' rings one after another, so the 200 OK can come to the
    rules just before the REGISTER it answers: within REORDER_WINDOW it is still a login."""
    r = rules(maxretry=3, trust_time=600)
    r.observe(0, A, resp(401, b"reg", b"l1", nonce=b"n-1"))
    assert r.observe(0.02, A, resp(200, b"reg", b"l2")) is None      # the answer, first
    r.observe(0.01, A, req(b"reg", b"l2", b"n-1"))                    # then its request
    assert r.stats["logins"] == 1 and r.stats["answers_before_request"] == 1
    assert r.is_trusted(A, 1) and r.stats["cleared"] == 1 and r.stats["failures"] == 0


def test_a_request_long_after_the_200_or_unproven_is_no_login():
    r = rules(maxretry=3, trust_time=600)
    r.observe(0, A, resp(401, b"reg", b"l1", nonce=b"n-1"))
    r.observe(0.02, A, resp(200, b"reg", b"l2"))
    r.observe(2.0, A, req(b"reg", b"l2", b"n-1"))                     # 2 s later
    r.observe(3, A, resp(401, b"reg2", b"m1", nonce=b"n-2"))
    r.observe(3.02, A, resp(200, b"reg2", b"m2"))
    r.observe(3.01, A, req(b"reg2", b"m2", b"not-issued"))            # a nonce never issued
    assert r.stats["logins"] == 0 and not r.is_trusted(A, 4)
