/* fastban TC (clsact) program: forwards the SIP responses the failure rules need to user space.
 *
 * Looks only at UDP/TCP packets whose SOURCE port is in sip_ports (IPv4, IPv6, 802.1Q/QinQ),
 * reads the status line "SIP/2.0 NNN" at the start of the payload, and forwards, with the
 * packet bytes, through the perf buffer "captures":
 *   - 401 and 407 (and counts a challenge outstanding for the destination),
 *   - 403 (and 404 when config FB_CFG_COUNT_404 is 1),
 *   - any other final response (>= 200) only when the destination has a challenge outstanding
 *     that is less than FB_CHALLENGE_STALE_NS old (and then counts it answered).
 * Never changes or drops a packet. Compiled together with xdp_drop.c by fastban/dataplane.py.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include "fastban.h"

BPF_TABLE_PINNED("hash", __u16, __u8, sip_ports, FB_PORT_ENTRIES,
                 FB_PIN("sip_ports"), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lru_hash", struct fb_peer, struct fb_challenge, challenges,
                 FB_CHALLENGE_ENTRIES, FB_PIN("challenges"));
BPF_PERF_OUTPUT(captures);
/* Never written: lets user space read the compiled layout of struct fb_capture_meta. */
BPF_ARRAY(meta_layout, struct fb_capture_meta, 1);

static __always_inline int fb_capture(struct __sk_buff *skb, __u8 direction)
{
    struct fb_capture_meta meta = {};
    __u32 off = sizeof(struct ethhdr);
    __be16 proto;

    if (bpf_skb_load_bytes(skb, 12, &proto, 2) < 0)
        return TC_ACT_OK;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (proto == htons(ETH_P_8021Q) || proto == htons(ETH_P_8021AD)) {
            if (bpf_skb_load_bytes(skb, off + 2, &proto, 2) < 0)
                return TC_ACT_OK;
            off += sizeof(struct fb_vlan_hdr);
        }
    }

    __u8 l4proto;
    if (proto == htons(ETH_P_IP)) {
        struct iphdr ip;
        if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
            return TC_ACT_OK;
        if (ip.frag_off & htons(0x1FFF))
            return TC_ACT_OK;
        meta.family = 4;
        l4proto = ip.protocol;
        __builtin_memcpy(meta.saddr, &ip.saddr, 4);
        __builtin_memcpy(meta.daddr, &ip.daddr, 4);
        off += ip.ihl * 4;
    } else if (proto == htons(ETH_P_IPV6)) {
        struct ipv6hdr ip6;
        if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0)
            return TC_ACT_OK;
        meta.family = 6;
        l4proto = ip6.nexthdr;
        __builtin_memcpy(meta.saddr, &ip6.saddr, 16);
        __builtin_memcpy(meta.daddr, &ip6.daddr, 16);
        off += sizeof(ip6);
        /* Skip up to four extension headers (hop-by-hop, routing, destination, fragment). */
#pragma unroll
        for (int i = 0; i < 4; i++) {
            if (l4proto != 0 && l4proto != 43 && l4proto != 60 && l4proto != 44)
                break;
            __u8 ext[4];
            if (bpf_skb_load_bytes(skb, off, ext, sizeof(ext)) < 0)
                return TC_ACT_OK;
            if (l4proto == 44) {
                if ((ext[2] << 5 | ext[3] >> 3) != 0)
                    return TC_ACT_OK;     /* a later fragment: no status line in it */
                off += 8;
            } else {
                off += (ext[1] + 1) * 8;
            }
            l4proto = ext[0];
        }
    } else {
        return TC_ACT_OK;
    }
    if (l4proto != IPPROTO_UDP && l4proto != IPPROTO_TCP)
        return TC_ACT_OK;

    __be16 ports[2];
    if (bpf_skb_load_bytes(skb, off, ports, 4) < 0)
        return TC_ACT_OK;
    __u16 sport = ntohs(ports[0]);
    if (!sip_ports.lookup(&sport))
        return TC_ACT_OK;
    if (l4proto == IPPROTO_UDP) {
        off += 8;
    } else {
        __u8 doff;
        if (bpf_skb_load_bytes(skb, off + 12, &doff, 1) < 0)
            return TC_ACT_OK;
        off += (doff >> 4) * 4;
    }

    char line[12];                        /* "SIP/2.0 NNN " */
    if (off > 0xFFFF || bpf_skb_load_bytes(skb, off, line, sizeof(line)) < 0)
        return TC_ACT_OK;
    if (line[0] != 'S' || line[1] != 'I' || line[2] != 'P' || line[3] != '/' ||
        line[4] != '2' || line[5] != '.' || line[6] != '0' || line[7] != ' ')
        return TC_ACT_OK;
    __u16 status = 0;
#pragma unroll
    for (int i = 8; i < 11; i++) {
        if (line[i] < '0' || line[i] > '9')
            return TC_ACT_OK;
        status = status * 10 + (line[i] - '0');
    }
    if (line[11] != ' ' && line[11] != '\r')
        return TC_ACT_OK;
    fb_count(FB_CNT_CAP_EXAMINED);
    if (status < 200)
        return TC_ACT_OK;

    struct fb_peer peer = {};
    if (meta.family == 4) {
        peer.addr[10] = 0xff;
        peer.addr[11] = 0xff;
        __builtin_memcpy(&peer.addr[12], meta.daddr, 4);
    } else {
        __builtin_memcpy(peer.addr, meta.daddr, 16);
    }
    __u64 now = bpf_ktime_get_ns();
    int forward = 0;
    struct fb_challenge *challenge = challenges.lookup(&peer);

    if (status == 401 || status == 407) {
        forward = 1;
        if (challenge) {
            if (now - challenge->last_ns > FB_CHALLENGE_STALE_NS)
                challenge->outstanding = 0;
            __sync_fetch_and_add(&challenge->outstanding, 1);
            challenge->last_ns = now;
        } else {
            struct fb_challenge fresh = {.outstanding = 1, .last_ns = now};
            challenges.update(&peer, &fresh);
        }
    } else {
        if (status == 403 || (status == 404 && fb_config(FB_CFG_COUNT_404)))
            forward = 1;
        if (challenge) {
            if (challenge->outstanding > 0 && now - challenge->last_ns <= FB_CHALLENGE_STALE_NS) {
                forward = 1;
                __sync_fetch_and_add(&challenge->outstanding, -1);
                if (challenge->outstanding == 0)
                    challenges.delete(&peer);
            } else {
                challenges.delete(&peer);
            }
        }
    }
    if (!forward)
        return TC_ACT_OK;

    meta.ktime_ns = now;
    meta.sport = sport;
    meta.dport = ntohs(ports[1]);
    meta.status = status;
    meta.payload_off = off;
    meta.protocol = l4proto;
    meta.direction = direction;
    __u32 len = skb->len;
    if (len > FB_CAPTURE_MAX)
        len = FB_CAPTURE_MAX;
    meta.cap_len = len;
    int rc = captures.perf_submit_skb(skb, len, &meta, sizeof(meta));
    if (rc < 0)
        fb_count(FB_CNT_CAP_FAILED);
    else
        fb_count(FB_CNT_CAPTURED);
    return TC_ACT_OK;
}

int tc_capture_egress(struct __sk_buff *skb)
{
    return fb_capture(skb, FB_DIR_EGRESS);
}

int tc_capture_ingress(struct __sk_buff *skb)
{
    return fb_capture(skb, FB_DIR_INGRESS);
}
