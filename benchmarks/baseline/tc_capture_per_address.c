/* The capture program as it was before it read Call-IDs (bpf/tc_capture.c and fastban.h of
 * commit 1d96e61, maps unpinned): one count of challenges outstanding per destination
 * address. Kept so that benchmarks/capture_cost.py measures before and after side by side.
 */
/* fastban TC (clsact) program: forwards the SIP responses the failure rules need to user space.
 *
 * Looks only at UDP/TCP packets whose SOURCE port is in sip_ports (IPv4, IPv6, 802.1Q/QinQ),
 * reads the status line "SIP/2.0 NNN" at the start of the payload, and forwards, with the
 * packet bytes, through the perf buffer "captures":
 *   - 401 and 407 (and counts a challenge outstanding for the destination),
 *   - 403 (and 404 when config FB_CFG_COUNT_404 is 1),
 *   - any other final response (>= 200) only when the destination has a challenge outstanding
 *     that is less than FB_CHALLENGE_STALE_NS old (and then counts it answered).
 * Never changes or drops a packet. Compiled alone by benchmarks/capture_cost.py, as a baseline.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#ifndef FB_CAPACITY
#define FB_CAPACITY 1048576
#endif
#ifndef FB_PIN_DIR
#define FB_PIN_DIR "/sys/fs/bpf/fastban/default"
#endif
#define FB_PIN(name) FB_PIN_DIR "/" name

/* Value of every ban map (exact and range, both families): 16 bytes. */
struct fb_ban_value {
    __u64 expires_ns;       /* monotonic ns; 0 = permanent */
    __u64 hits;             /* packets dropped by this ban (atomic add) */
};

/* Key of the IPv4 exact map is a __be32; of the IPv6 exact map, this. */
struct fb_addr6 {
    __u8 addr[16];
};

/* LPM trie keys (ranges and allowlist). prefixlen is host order, addr network order. */
struct fb_lpm4 {
    __u32 prefixlen;
    __u8 addr[4];
};

struct fb_lpm6 {
    __u32 prefixlen;
    __u8 addr[16];
};

/* Key of the challenge table: the destination of a 401/407, IPv4 as ::ffff:a.b.c.d. */
struct fb_peer {
    __u8 addr[16];
};

struct fb_challenge {
    __u32 outstanding;      /* 401/407 sent minus final answers forwarded since */
    __u32 pad;
    __u64 last_ns;          /* ktime of the last 401/407 */
};

/* Metadata ahead of the packet bytes of each captured response: 56 bytes. */
struct fb_capture_meta {
    __u64 ktime_ns;
    __u8 saddr[16];         /* IPv4 in the first 4 bytes */
    __u8 daddr[16];
    __u16 sport;            /* host order */
    __u16 dport;
    __u16 status;           /* SIP status code */
    __u16 payload_off;      /* offset of "SIP/2.0" in the packet bytes that follow */
    __u32 cap_len;          /* packet bytes that follow */
    __u8 family;            /* 4 or 6 */
    __u8 protocol;          /* IPPROTO_UDP or IPPROTO_TCP */
    __u8 direction;         /* FB_DIR_* */
    __u8 pad;
};

/* Per-CPU counters (index into the "counters" map). */
#define FB_CNT_SEEN             0   /* unused: user space reports seen = passed + dropped */
#define FB_CNT_PASSED           1
#define FB_CNT_DROPPED          2
#define FB_CNT_ALLOWLISTED      3   /* passed because the source is allowlisted */
#define FB_CNT_CAP_EXAMINED     4   /* packets from a SIP port with a status line */
#define FB_CNT_CAPTURED         5   /* responses forwarded to user space */
#define FB_CNT_CAP_FAILED       6   /* perf submit failed (no reader, buffer full) */
#define FB_CNT_MAX              8

/* Config array (index into the "config" map, __u32 values). */
#define FB_CFG_SCOPE_PORTS      0   /* 1 = drop only traffic to ports in scope_ports */
#define FB_CFG_COUNT_404        1   /* 1 = forward 404 responses too */
#define FB_CFG_RANGES_V4        2   /* 1 = ranges_v4 may hold bans (else XDP skips the trie) */
#define FB_CFG_RANGES_V6        3   /* 1 = ranges_v6 may hold bans */
#define FB_CFG_ALLOW_V4         4   /* 1 = allow_v4 holds networks (else XDP skips the trie) */
#define FB_CFG_ALLOW_V6         5
#define FB_CFG_MAX              8

#define FB_DIR_EGRESS           0
#define FB_DIR_INGRESS          1

#define FB_CHALLENGE_STALE_NS   (64ULL * 1000000000ULL)
#define FB_CHALLENGE_ENTRIES    16384   /* LRU, preallocated: about 1.5 MB */
#define FB_CAPTURE_MAX          8192    /* packet bytes copied per captured response */
#define FB_PORT_ENTRIES         1024

struct fb_vlan_hdr {
    __be16 tci;
    __be16 proto;
};

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

/* Maps shared by both programs. */
BPF_F_TABLE("percpu_array", __u32, __u64, counters, FB_CNT_MAX, 0);
BPF_F_TABLE("array", __u32, __u32, config, FB_CFG_MAX, 0);

static __always_inline void fb_count(__u32 index)
{
    __u64 *value = counters.lookup(&index);
    if (value)
        *value += 1;
}

static __always_inline __u32 fb_config(__u32 index)
{
    __u32 *value = config.lookup(&index);
    return value ? *value : 0;
}



BPF_F_TABLE("hash", __u16, __u8, sip_ports, FB_PORT_ENTRIES, BPF_F_NO_PREALLOC);
BPF_F_TABLE("lru_hash", struct fb_peer, struct fb_challenge, challenges,
                 FB_CHALLENGE_ENTRIES, 0);
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
