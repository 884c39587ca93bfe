/* fastban XDP program: drops frames whose source address is banned, on the guarded interface.
 *
 * Order: the exact map (hash), then the ranges (LPM); a match that is in scope is then
 * checked against the allowlist (LPM), which always wins. User space flags which tries hold
 * entries (FB_CFG_RANGES_*, FB_CFG_ALLOW_*) and empty ones are not looked up. Checking the allowlist after a match gives the same
 * verdicts as checking it first, and keeps the unbanned packet's path to one hash lookup.
 * A ban whose expires_ns has passed is ignored, so bans lapse with no process running; the
 * (coarse) clock is read only for a ban that has an expiry.
 * With scope "ports" (config FB_CFG_SCOPE_PORTS), only TCP/UDP traffic to a port in
 * scope_ports is dropped. 802.1Q and QinQ tags are skipped; non-IP frames pass.
 * Loaded by fastban/dataplane.py, which compiles fastban.h + this file + tc_capture.c as one.
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
BPF_TABLE_PINNED("lpm_trie", struct fb_lpm4, __u32, allow_v4, FB_CAPACITY,
                 FB_PIN("allow_v4"), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct fb_lpm6, __u32, allow_v6, FB_CAPACITY,
                 FB_PIN("allow_v6"), BPF_F_NO_PREALLOC);
/* Destination ports (host order) in scope when FB_CFG_SCOPE_PORTS is 1. */
BPF_TABLE_PINNED("hash", __u16, __u8, scope_ports, FB_PORT_ENTRIES,
                 FB_PIN("scope_ports"), BPF_F_NO_PREALLOC);

/* The coarse monotonic clock (same clock, updated once per scheduler tick) costs a third less
 * than bpf_ktime_get_ns on a VM; a ban lapses at most one tick (a few ms) after its expiry. */
static __always_inline int fb_active(struct fb_ban_value *ban)
{
    return ban->expires_ns == 0 || bpf_ktime_get_coarse_ns() < ban->expires_ns;
}

/* Returns the drop verdict for a matching ban, counting the hit. */
static __always_inline int fb_drop(struct fb_ban_value *ban)
{
    __sync_fetch_and_add(&ban->hits, 1);
    fb_count(FB_CNT_DROPPED);
    return XDP_DROP;
}

static __always_inline int fb_pass(void)
{
    fb_count(FB_CNT_PASSED);
    return XDP_PASS;
}

/* 1 if the frame is in scope: scope all, or a TCP/UDP destination port in scope_ports. */
static __always_inline int fb_in_scope(int has_port, __u16 dport)
{
    if (!fb_config(FB_CFG_SCOPE_PORTS))
        return 1;
    if (!has_port)
        return 0;
    return scope_ports.lookup(&dport) != NULL;
}

/* Reads the destination port of the TCP/UDP header at l4; returns 0 if none. */
static __always_inline int fb_dport(void *l4, void *end, __u8 proto, __u16 *dport)
{
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
        return 0;
    __be16 *ports = l4;
    if ((void *)(ports + 2) > end)
        return 0;
    *dport = ntohs(ports[1]);
    return 1;
}

int xdp_fastban(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    __u64 off = sizeof(struct ethhdr);
    __u16 dport = 0;
    int has_port = 0;

    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return fb_pass();
    __be16 proto = eth->h_proto;

#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (proto == htons(ETH_P_8021Q) || proto == htons(ETH_P_8021AD)) {
            struct fb_vlan_hdr *vlan = data + off;
            if ((void *)(vlan + 1) > end)
                return fb_pass();
            proto = vlan->proto;
            off += sizeof(struct fb_vlan_hdr);
        }
    }

    struct fb_ban_value *ban;

    if (proto == htons(ETH_P_IP)) {
        struct iphdr *ip = data + off;
        if ((void *)(ip + 1) > end)
            return fb_pass();
        __be32 saddr = ip->saddr;
        struct fb_lpm4 lpm = {.prefixlen = 32};
        __builtin_memcpy(lpm.addr, &saddr, 4);
        ban = bans_v4.lookup(&saddr);
        if (ban && !fb_active(ban))
            ban = NULL;
        if (!ban && fb_config(FB_CFG_RANGES_V4)) {
            ban = ranges_v4.lookup(&lpm);
            if (ban && !fb_active(ban))
                ban = NULL;
        }
        if (!ban)
            return fb_pass();
        if (!(ip->frag_off & htons(0x1FFF))) {      /* first fragment: ports are there */
            void *l4 = (void *)ip + ip->ihl * 4;
            has_port = fb_dport(l4, end, ip->protocol, &dport);
        }
        if (!fb_in_scope(has_port, dport))
            return fb_pass();
        if (fb_config(FB_CFG_ALLOW_V4) && allow_v4.lookup(&lpm)) {
            fb_count(FB_CNT_ALLOWLISTED);
            return fb_pass();
        }
        return fb_drop(ban);
    }

    if (proto == htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = data + off;
        if ((void *)(ip6 + 1) > end)
            return fb_pass();
        struct fb_addr6 key;
        __builtin_memcpy(key.addr, &ip6->saddr, 16);
        ban = bans_v6.lookup(&key);
        if (ban && !fb_active(ban))
            ban = NULL;
        struct fb_lpm6 lpm = {.prefixlen = 128};
        __builtin_memcpy(lpm.addr, &ip6->saddr, 16);
        if (!ban && fb_config(FB_CFG_RANGES_V6)) {
            ban = ranges_v6.lookup(&lpm);
            if (ban && !fb_active(ban))
                ban = NULL;
        }
        if (!ban)
            return fb_pass();
        /* Skip up to four extension headers to find TCP/UDP. */
        __u8 nexthdr = ip6->nexthdr;
        void *l4 = (void *)(ip6 + 1);
        int fragment_tail = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            if (nexthdr == 0 || nexthdr == 43 || nexthdr == 60) {   /* hop, routing, dest */
                __u8 *ext = l4;
                if ((void *)(ext + 2) > end)
                    break;
                nexthdr = ext[0];
                l4 += (ext[1] + 1) * 8;
            } else if (nexthdr == 44) {                               /* fragment */
                __u8 *ext = l4;
                if ((void *)(ext + 8) > end)
                    break;
                nexthdr = ext[0];
                if ((ext[2] << 5 | ext[3] >> 3) != 0)
                    fragment_tail = 1;
                l4 += 8;
            }
        }
        if (!fragment_tail)
            has_port = fb_dport(l4, end, nexthdr, &dport);
        if (!fb_in_scope(has_port, dport))
            return fb_pass();
        if (fb_config(FB_CFG_ALLOW_V6) && allow_v6.lookup(&lpm)) {
            fb_count(FB_CNT_ALLOWLISTED);
            return fb_pass();
        }
        return fb_drop(ban);
    }

    return fb_pass();
}
