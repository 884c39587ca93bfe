/* fastban XDP program: drops frames whose source address is banned, on the guarded interface.
 *
 * Order: the exact map (hash), then the ranges (LPM); a match that is in scope is then
 * checked against the whitelist (LPM), which always wins. User space flags which tries hold
 * entries (FB_CFG_RANGES_*, FB_CFG_WHITELIST_*) and empty ones are not looked up. Checking the
 * whitelist after a match gives the same verdicts as checking it first, and keeps the unbanned
 * packet's path to one hash lookup.
 * A ban whose expires_ns has passed is ignored, so bans lapse with no process running; the
 * (coarse) clock is read only for a ban that has an expiry.
 * With scope "ports" (config FB_CFG_SCOPE_PORTS), only TCP/UDP traffic to a port in
 * scope_ports is dropped. The frame is walked by bpf/walk.h; non-IP frames pass.
 */
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include "fastban.h"

BPF_TABLE_PINNED("hash", __be32, struct fb_ban_value, bans_v4, FB_CAPACITY,
                 FB_PIN("bans_v4"), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("hash", struct fb_addr6, struct fb_ban_value, bans_v6, FB_CAPACITY,
                 FB_PIN("bans_v6"), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct fb_lpm4, struct fb_ban_value, ranges_v4, FB_CAPACITY,
                 FB_PIN("ranges_v4"), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct fb_lpm6, struct fb_ban_value, ranges_v6, FB_CAPACITY,
                 FB_PIN("ranges_v6"), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct fb_lpm4, __u32, whitelist_v4, FB_CAPACITY,
                 FB_PIN("whitelist_v4"), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct fb_lpm6, __u32, whitelist_v6, FB_CAPACITY,
                 FB_PIN("whitelist_v6"), BPF_F_NO_PREALLOC);
/* Destination ports (host order) in scope when FB_CFG_SCOPE_PORTS is 1. */
BPF_TABLE_PINNED("hash", __u16, __u8, scope_ports, FB_PORT_ENTRIES,
                 FB_PIN("scope_ports"), BPF_F_NO_PREALLOC);

static __always_inline void *fb_xdp_read(struct xdp_md *ctx, __u32 off, void *buffer,
                                         __u32 len)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    if (off > FB_WALK_MAX_OFFSET)
        return NULL;
    void *at = data + off;
    if (at + len > end)
        return NULL;
    return at;
}

#define FB_WALK_NAME fb_walk_xdp
#define FB_WALK_CTX struct xdp_md
#define FB_WALK_READ fb_xdp_read
#include "walk.h"
#include "rate_limit.h"
#include "admission.h"

/* The coarse monotonic clock (same clock, updated once per scheduler tick) costs a third less
 * than bpf_ktime_get_ns on a VM; a ban lapses at most one tick (a few ms) after its expiry. */
static __always_inline int fb_active(struct fb_ban_value *ban)
{
    return ban->expires_ns == 0 || bpf_ktime_get_coarse_ns() < ban->expires_ns;
}

static __always_inline int fb_pass(void)
{
    fb_count(FB_CNT_PASSED);
    return XDP_PASS;
}

static __always_inline int fb_whitelisted(struct fb_walk *walk)
{
    if (walk->family == 4) {
        if (!fb_config(FB_CFG_WHITELIST_V4))
            return 0;
        struct fb_lpm4 lpm = {.prefixlen = 32};
        __builtin_memcpy(lpm.addr, walk->saddr, 4);
        return whitelist_v4.lookup(&lpm) != NULL;
    }
    if (!fb_config(FB_CFG_WHITELIST_V6))
        return 0;
    struct fb_lpm6 lpm = {.prefixlen = 128};
    __builtin_memcpy(lpm.addr, walk->saddr, 16);
    return whitelist_v6.lookup(&lpm) != NULL;
}

/* 1 if the frame is a SIP request: a UDP datagram to a SIP port with more than a keep-alive
 * (CRLF CRLF) in it, or a TCP SYN (a new connection) to one. */
static __always_inline int fb_sip_request(struct xdp_md *ctx, struct fb_walk *walk)
{
    if (!walk->l4_off || walk->later_fragment)
        return 0;
    __u8 buffer[14];
    __u8 *l4;
    if (walk->l4proto == IPPROTO_UDP) {
        l4 = fb_xdp_read(ctx, walk->l4_off, buffer, 8);
        if (!l4 || ((__u16)l4[4] << 8 | l4[5]) <= 8 + 4)
            return 0;
    } else if (walk->l4proto == IPPROTO_TCP) {
        l4 = fb_xdp_read(ctx, walk->l4_off, buffer, 14);
        if (!l4 || (l4[13] & 0x12) != 0x02)         /* SYN without ACK */
            return 0;
    } else {
        return 0;
    }
    __u16 dport = (__u16)l4[2] << 8 | l4[3];
    return sip_ports.lookup(&dport) != NULL;
}

/* An unbanned frame: a SIP request of a source that is neither whitelisted nor trusted may be
 * over its rate (rate_limit.h), and any SIP request may be over the server's capacity, which
 * admits trusted sources first (admission.h). */
static __always_inline int fb_admit(struct xdp_md *ctx, struct fb_walk *walk)
{
    __u32 rate = fb_config(FB_CFG_RATE_LIMIT), capacity = fb_config(FB_CFG_SIP_CAPACITY);
    if ((!rate && !capacity) || !fb_sip_request(ctx, walk) || fb_whitelisted(walk))
        return fb_pass();
    __u64 now = bpf_ktime_get_ns();
    int trusted = fb_trusted(walk->family, walk->saddr, now);
    if (rate && !trusted && !fb_rate_allows(walk, rate, now)) {
        fb_count(FB_CNT_RATE_LIMITED);
        return XDP_DROP;
    }
    if (capacity && !fb_capacity_admits(trusted, capacity, now)) {
        fb_count(FB_CNT_OVER_CAPACITY);
        return XDP_DROP;
    }
    if (capacity && trusted)
        fb_count(FB_CNT_TRUSTED_ADMITTED);
    return fb_pass();
}

/* 1 if the frame is in scope: scope all, or a TCP/UDP destination port in scope_ports. */
static __always_inline int fb_in_scope(struct xdp_md *ctx, struct fb_walk *walk)
{
    if (!fb_config(FB_CFG_SCOPE_PORTS))
        return 1;
    if (!walk->l4_off || (walk->l4proto != IPPROTO_TCP && walk->l4proto != IPPROTO_UDP))
        return 0;
    __u8 buffer[2];
    __be16 *port = fb_xdp_read(ctx, walk->l4_off + 2, buffer, 2);
    if (!port)
        return 0;
    __u16 dport = ntohs(*port);
    return scope_ports.lookup(&dport) != NULL;
}

int xdp_fastban(struct xdp_md *ctx)
{
    struct fb_walk walk;
    if (!fb_walk_xdp(ctx, &walk))
        return fb_pass();

    struct fb_ban_value *ban;
    int whitelisted;
    if (walk.family == 4) {
        __be32 saddr;
        __builtin_memcpy(&saddr, walk.saddr, 4);
        ban = bans_v4.lookup(&saddr);
        if (ban && !fb_active(ban))
            ban = NULL;
        struct fb_lpm4 lpm = {.prefixlen = 32};
        __builtin_memcpy(lpm.addr, walk.saddr, 4);
        if (!ban && fb_config(FB_CFG_RANGES_V4)) {
            ban = ranges_v4.lookup(&lpm);
            if (ban && !fb_active(ban))
                ban = NULL;
        }
        if (!ban)
            return fb_admit(ctx, &walk);
        if (!fb_in_scope(ctx, &walk))
            return fb_pass();
        whitelisted = fb_config(FB_CFG_WHITELIST_V4) && whitelist_v4.lookup(&lpm);
    } else {
        struct fb_addr6 key;
        __builtin_memcpy(key.addr, walk.saddr, 16);
        ban = bans_v6.lookup(&key);
        if (ban && !fb_active(ban))
            ban = NULL;
        struct fb_lpm6 lpm = {.prefixlen = 128};
        __builtin_memcpy(lpm.addr, walk.saddr, 16);
        if (!ban && fb_config(FB_CFG_RANGES_V6)) {
            ban = ranges_v6.lookup(&lpm);
            if (ban && !fb_active(ban))
                ban = NULL;
        }
        if (!ban)
            return fb_admit(ctx, &walk);
        if (!fb_in_scope(ctx, &walk))
            return fb_pass();
        whitelisted = fb_config(FB_CFG_WHITELIST_V6) && whitelist_v6.lookup(&lpm);
    }
    if (whitelisted) {
        fb_count(FB_CNT_WHITELISTED);
        return fb_pass();
    }
    __sync_fetch_and_add(&ban->hits, 1);
    fb_count(FB_CNT_DROPPED);
    return XDP_DROP;
}
