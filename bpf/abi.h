/* fastban's kernel ABI: every struct and constant the BPF programs share with user space.
 *
 * This file is the one source of them. The programs include it; fastban/abi.py reads
 * it, builds its ctypes structs and constants from it, and checks at load time that the
 * compiled programs lay the structs out the same way. So it holds only what that reader
 * understands: "#define NAME <integer expression>" and "struct NAME { <type> <field>[<n>]; };"
 * with the fixed-width types __u8 __u16 __u32 __u64 __be16 __be32 and these structs; C
 * comments anywhere.
 *
 * Addresses are in network byte order; times are the kernel's monotonic clock in ns
 * (bpf_ktime_get_ns, Python's time.monotonic_ns), 0 = never.
 */
#ifndef FASTBAN_ABI_H
#define FASTBAN_ABI_H

/* ---- the ban maps (bpf/xdp_drop.c) ---- */

#define FB_CAPACITY_DEFAULT     1048576 /* entries per ban and whitelist map */
#define FB_PORT_ENTRIES         1024    /* entries of the port maps (scope, SIP ports) */
#define FB_TRUSTED_ENTRIES      262144  /* trusted sources (addresses or IPv6 prefixes) */

/* Value of every ban map (exact and range, both families): 16 bytes. */
struct fb_ban_value {
    __u64 expires_ns;       /* monotonic ns; 0 = permanent */
    __u64 hits;             /* packets dropped by this ban (atomic add) */
};

/* Key of the IPv4 exact map is a __be32; of the IPv6 exact map, this. */
struct fb_addr6 {
    __u8 addr[16];
};

/* LPM trie keys (ranges and whitelist). prefixlen is host order, addr network order. */
struct fb_lpm4 {
    __u32 prefixlen;
    __u8 addr[4];
};

struct fb_lpm6 {
    __u32 prefixlen;
    __u8 addr[16];
};

/* ---- the capture (bpf/tc_capture.c) ---- */

#define FB_PEER_ENTRIES         65536   /* challenged peers (LRU, preallocated) */
#define FB_CALL_ENTRIES         131072  /* open Call-IDs (LRU, preallocated) */
#define FB_CAPTURE_MAX          8192    /* packet bytes copied per captured message */
#define FB_CAPTURE_RING_PAGES   4096    /* the ring buffer "captures": 16 MiB (a power of two) */

/* Key of the "challenged" table: the remote party of a SIP message (the destination of a
 * response, the source of a request), IPv4 as ::ffff:a.b.c.d. */
struct fb_peer {
    __u8 addr[16];
};

/* Value of the "challenged" table. */
struct fb_peer_state {
    __u64 challenged_ns;    /* ktime of the last 401/407 sent to the peer */
    __u64 any_call_ns;      /* ktime of the last message whose Call-ID the scan could not read:
                               for the grace after it, every Call-ID of the peer counts as open */
};

/* Key of the "open_calls" table: a peer and the hash of a Call-ID (fastban/headerscan.py). */
struct fb_call_key {
    __u8 addr[16];
    __u64 call_hash;
};

/* Metadata ahead of the packet bytes of each captured message. */
struct fb_capture_meta {
    __u64 ktime_ns;
    __u8 saddr[16];         /* IPv4 in the first 4 bytes */
    __u8 daddr[16];
    __u16 sport;            /* host order */
    __u16 dport;
    __u16 status;           /* SIP status of a response, else 0 */
    __u16 payload_off;      /* offset of the TCP/UDP payload in the packet bytes that follow */
    __u32 payload_len;      /* TCP/UDP payload bytes on the wire (of the whole datagram for an
                               IP first fragment), so more than follow when the copy is cut */
    __u32 cap_len;          /* packet bytes that follow */
    __u32 tcp_seq;          /* host order */
    __u8 family;            /* 4 or 6 */
    __u8 protocol;          /* IPPROTO_UDP or IPPROTO_TCP */
    __u8 direction;         /* FB_DIR_* */
    __u8 kind;              /* FB_KIND_* */
    __u8 flags;             /* FB_META_* */
    __u8 reason;            /* FB_WHY_*: why it was copied */
    __u16 pad;
};

#define FB_DIR_EGRESS           0
#define FB_DIR_INGRESS          1

#define FB_KIND_RESPONSE        1   /* starts with a status line, from a SIP port */
#define FB_KIND_REQUEST         2   /* starts with a request line, to a SIP port */
#define FB_KIND_CONTINUATION    3   /* a TCP segment that starts inside a message */

#define FB_META_FRAGMENT        1   /* an IP first fragment: the datagram goes on elsewhere */
#define FB_META_TCP_FIN         2
#define FB_META_TCP_RST         4

#define FB_WHY_FAILURE          1   /* 401, 403, 407 (404 when counted) */
#define FB_WHY_OPEN_CALL        2   /* a final answer on a Call-ID with a challenge open */
#define FB_WHY_UNSURE           3   /* the scan could not read the Call-ID */
#define FB_WHY_CREDENTIALS      4   /* a request with credentials from a challenged peer */
#define FB_WHY_TCP_SEGMENT      5   /* a TCP segment holding more or less than one message */

#define FB_ROLE_RESPONSES       1   /* responses from the SIP ports */
#define FB_ROLE_REQUESTS        2   /* requests to the SIP ports */

/* ---- armed sources: the threshold ban decided in the kernel (bpf/tc_capture.c) ---- */

#define FB_ARMED_ENTRIES        65536   /* armed sources (LRU: an evicted arm falls back to user space) */
#define FB_META_KERNEL_BAN      8       /* flag of a copied response on which the capture banned its peer */

/* Value of the "armed" table (key: struct fb_peer): a source one proven failure short of
 * maxretry, written by user space (fastban/arming.py). The capture bans it at its next 401/407/403
 * that answers a request with credentials from it, unless that response is the failure that
 * armed it sent again (failure_hash: FNV-1a of its bytes up to its Call-ID's value, which hold
 * its status and top Via branch, fastban.headerscan.failure_hash). */
struct fb_armed {
    __u64 deadline_ns;      /* the arm lapses then (its oldest failure leaves findtime) */
    __u64 ban_ns;           /* duration of the ban the capture writes; 0 = permanent */
    __u64 failure_hash;     /* the failure that armed it, then the one that banned it */
    __u64 request_hash;     /* Call-ID hash of the last request with credentials from the peer;
                               0 once a final answer or a request without credentials took it */
    __u64 request_ns;       /* when that request arrived (ingress) */
    __u64 banned_ns;        /* when the capture had written the ban; 0 = not yet */
    __u64 expires_ns;       /* the expiry it wrote: the failure's ktime + ban_ns (0 = permanent) */
};

/* ---- the header scan (fastban/headerscan.py builds its table) ---- */

#define FB_SCAN_MAX             2048    /* message bytes the header scan reads */
#define FB_SCAN_STATES          128     /* rows of the scan table (a power of two) */
#define FB_CALL_ID_SPAN         256     /* bytes of a Call-ID value the hash reads */
#define FB_LENGTH_SPAN          24      /* bytes of a Content-Length value */
#define FB_SCAN_CALL_ID         4       /* flags of a scan state */
#define FB_SCAN_LENGTH          8
#define FB_SCAN_CREDENTIALS     16
#define FB_SCAN_END             32
#define FB_HASH_BYTE            0       /* what a byte of a Call-ID value is to the hash */
#define FB_HASH_SKIP            1
#define FB_HASH_END             2
#define FB_FNV_OFFSET           0xCBF29CE484222325
#define FB_FNV_PRIME            0x100000001B3

/* The scan's automaton, written by user space: step[state << 8 | byte] is the next state in
 * its low byte and that state's flags in its high byte; call_id_byte[byte] is FB_HASH_BYTE,
 * FB_HASH_SKIP (SP, HT, CR) or FB_HASH_END (LF). */
struct fb_scan_table {
    __u16 step[FB_SCAN_STATES * 256];
    __u8 call_id_byte[256];
};

/* ---- the packet walk (bpf/walk.h, and fastban/packets.py in user space) ---- */

#define FB_VLAN_TAGS_MAX        2       /* 802.1Q / 802.1ad / 0x9100 tags skipped */
#define FB_ETH_P_8021Q          0x8100
#define FB_ETH_P_8021AD         0x88A8
#define FB_ETH_P_QINQ           0x9100  /* the outer tag of QinQ before 802.1ad */
#define FB_ETH_P_IP             0x0800
#define FB_ETH_P_IPV6           0x86DD
#define FB_IPV6_EXT_MAX         4       /* IPv6 extension headers skipped */
#define FB_WALK_MAX_OFFSET      4096    /* no header the walk reads starts past this */
#define FB_IPPROTO_HOPOPTS      0
#define FB_IPPROTO_ROUTING      43
#define FB_IPPROTO_FRAGMENT     44
#define FB_IPPROTO_AH           51
#define FB_IPPROTO_DSTOPTS      60
#define FB_IPPROTO_TCP          6
#define FB_IPPROTO_UDP          17

/* ---- the admission under the server's capacity (bpf/admission.h) ---- */

#define FB_ADMISSION_BURST_MS   20  /* untrusted requests may come at once: capacity x this long */
#define FB_ADMISSION_DEBT_MS    1000 /* how far ahead trusted requests may take the tokens */

/* The one element of the "admission" array, shared by the CPUs: the bucket as a virtual
 * clock (GCRA), 1/capacity s later for every request admitted and never behind now; an
 * untrusted request passes only while it is at most FB_ADMISSION_BURST_MS ahead of now. */
struct fb_admission {
    __u64 next_ns;          /* monotonic ns; atomic add */
};

/* ---- counters and config, shared by both programs ---- */

/* Per-CPU counters (index into the "counters" map). */
#define FB_CNT_SEEN             0   /* unused: user space reports seen = passed + dropped */
#define FB_CNT_PASSED           1
#define FB_CNT_DROPPED          2
#define FB_CNT_WHITELISTED      3   /* passed because the source is whitelisted */
#define FB_CNT_CAPTURE_EXAMINED 4   /* SIP messages (and TCP segments) looked at */
#define FB_CNT_CAPTURED         5   /* messages copied to user space */
#define FB_CNT_CAPTURE_FAILED   6   /* the ring buffer could not take the copy (full) */
#define FB_CNT_CAPTURE_SCANNED  7   /* messages whose headers the capture scanned */
#define FB_CNT_CAPTURE_REQUESTS 8   /* requests copied */
#define FB_CNT_CAPTURE_UNSURE   9   /* copied because the scan could not decide */
#define FB_CNT_RATE_LIMITED     10  /* SIP requests dropped by the per-source rate limit */
#define FB_CNT_OVER_CAPACITY    11  /* SIP requests of untrusted sources dropped over sip_capacity */
#define FB_CNT_TRUSTED_ADMITTED 12  /* SIP requests of trusted sources admitted */
#define FB_CNT_KERNEL_BANS      13  /* armed sources the capture banned itself */
#define FB_CNT_MAX              16

/* Config array (index into the "config" map, __u32 values). */
#define FB_CFG_SCOPE_PORTS      0   /* 1 = drop only traffic to ports in scope_ports */
#define FB_CFG_COUNT_404        1   /* 1 = copy 404 responses too */
#define FB_CFG_RANGES_V4        2   /* 1 = ranges_v4 may hold bans (else XDP skips the trie) */
#define FB_CFG_RANGES_V6        3   /* 1 = ranges_v6 may hold bans */
#define FB_CFG_WHITELIST_V4     4   /* 1 = whitelist_v4 holds networks (else XDP skips it) */
#define FB_CFG_WHITELIST_V6     5
#define FB_CFG_GRACE_MS         6   /* challenge_grace in ms: how long a challenge stays open */
#define FB_CFG_ROLES_EGRESS     7   /* FB_ROLE_* read on TC egress */
#define FB_CFG_ROLES_INGRESS    8   /* FB_ROLE_* read on TC ingress */
#define FB_CFG_RATE_LIMIT       9   /* SIP requests/s allowed per source; 0 = no limit */
#define FB_CFG_RATE_BURST       10  /* requests a source may send at once above the rate */
#define FB_CFG_SIP_CAPACITY     11  /* SIP requests/s the server answers; 0 = no admission */
#define FB_CFG_ARMED            12  /* 1 = the armed map may hold sources */
#define FB_CFG_MAX              16

/* ---- the per-source rate limit of SIP requests (bpf/rate_limit.h) ---- */

#define FB_RATE_ENTRIES_DEFAULT 65536   /* sources tracked (LRU, preallocated); the setting
                                           rate_limit_sources compiles another */
#define FB_NS_PER_SECOND        1000000000

/* Value of the "rate_limit" table (key: struct fb_peer, IPv4 as ::ffff:a.b.c.d). The bucket is
 * kept as the time it would be empty again ("virtual scheduling"): each request admitted adds
 * one interval (1 s / rate); a request is dropped while that time is more than burst intervals
 * ahead of now. */
struct fb_rate_state {
    __u64 busy_until_ns;    /* monotonic ns the source's admitted requests "paid for" */
    __u64 limited;          /* requests of the source dropped (atomic add) */
    __u64 last_limited_ns;  /* ktime of the last one, 0 = never */
};

#endif /* FASTBAN_ABI_H */
