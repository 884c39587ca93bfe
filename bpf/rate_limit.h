/* The per-source rate limit of SIP requests (included by xdp_drop.c).
 *
 * A token bucket per source, kept as the time its bucket is full again (struct fb_rate_state):
 * a source may send burst requests at once, then rate per second. The table is an LRU hash, so
 * a flood of spoofed sources evicts the least recently seen ones instead of filling it; an
 * evicted source starts again with a full bucket.
 *
 * CPUs share an entry without a lock: the interval is added atomically, but the check before
 * it reads the entry unlocked and the reset of an idle bucket to now is a plain store, so each
 * CPU racing another on one source can admit one request more than the bucket holds. The limit
 * is approximate by that much.
 */
#ifndef FASTBAN_RATE_LIMIT_H
#define FASTBAN_RATE_LIMIT_H

BPF_TABLE_PINNED("lru_hash", struct fb_peer, struct fb_rate_state, rate_limit, FB_RATE_ENTRIES,
                 FB_PIN("rate_limit"));

/* 1 if the source may send one more SIP request now, at rate requests/s. */
static __always_inline int fb_rate_allows(struct fb_walk *walk, __u32 rate, __u64 now_ns)
{
    struct fb_peer key = {};
    if (walk->family == 4) {
        key.addr[10] = 0xff;
        key.addr[11] = 0xff;
        __builtin_memcpy(&key.addr[12], walk->saddr, 4);
    } else {
        __builtin_memcpy(key.addr, walk->saddr, 16);
    }
    __u64 interval = FB_NS_PER_SECOND / rate;
    __u32 burst = fb_config(FB_CFG_RATE_BURST);
    __u64 allowance = (__u64)(burst ? burst : 1) * interval;
    struct fb_rate_state *state = rate_limit.lookup(&key);
    if (!state) {
        struct fb_rate_state fresh = {.busy_until_ns = now_ns + interval};
        rate_limit.update(&key, &fresh);
        return 1;
    }
    __u64 busy_until = state->busy_until_ns;
    if (busy_until < now_ns) {
        state->busy_until_ns = now_ns + interval;
        return 1;
    }
    if (busy_until + interval - now_ns > allowance) {
        __sync_fetch_and_add(&state->limited, 1);
        state->last_limited_ns = now_ns;
        return 0;
    }
    __sync_fetch_and_add(&state->busy_until_ns, interval);
    return 1;
}

#endif /* FASTBAN_RATE_LIMIT_H */
