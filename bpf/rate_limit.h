/* The per-source rate limit of SIP requests (included by xdp_drop.c). */
#ifndef FASTBAN_RATE_LIMIT_H
#define FASTBAN_RATE_LIMIT_H

/* 1 if the source may send one more SIP request now, at rate requests/s. */
static __always_inline int fb_rate_allows(struct fb_walk *walk, __u32 rate, __u64 now_ns)
{
    return 1;
}

#endif /* FASTBAN_RATE_LIMIT_H */
