/* fastban: the structs and constants shared by the kernel programs and user space.
 *
 * fastban/dataplane.py mirrors every struct here with a ctypes.Structure of the same name
 * (FbBanValue for struct fb_ban_value, ...); tests/test_dataplane.py checks that the sizes agree.
 * Addresses are in network byte order; times are the kernel's monotonic clock in ns
 * (bpf_ktime_get_ns, Python's time.monotonic_ns), 0 = never.
 *
 * Also declares the maps both programs use (counters, config). It is included textually by
 * dataplane.py ahead of xdp_drop.c and tc_capture.c, which are compiled as one BCC program, so
 * that they share the maps and cost one compile.
 *
 * Compile-time settings, passed by dataplane.py with -D:
 *   FB_CAPACITY   entries per ban and allow map (default 1048576)
 *   FB_PIN_DIR    string literal, directory under bpffs where the maps are pinned
 */
#ifndef FASTBAN_H
#define FASTBAN_H

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
BPF_TABLE_PINNED("percpu_array", __u32, __u64, counters, FB_CNT_MAX, FB_PIN("counters"));
BPF_TABLE_PINNED("array", __u32, __u32, config, FB_CFG_MAX, FB_PIN("config"));

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

#endif /* FASTBAN_H */
