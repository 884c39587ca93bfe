/* fastban TC (clsact) program: copies to user space the SIP messages the failure rules need.
 *
 * Each hook reads the roles config gives it (FB_CFG_ROLES_EGRESS / _INGRESS): responses
 * (UDP/TCP from a port in sip_ports) and/or requests (to a port in sip_ports); the frame is
 * walked by bpf/walk.h (IP first fragments included). The remote party (the destination of a
 * response, the source of a request) is the "peer". Copied, with the packet bytes, through the
 * ring buffer "captures" (one ring for all CPUs, so records arrive in the order written):
 *   - every 401 and 407 (which mark the peer challenged, and its Call-ID open), 403, and 404
 *     when config FB_CFG_COUNT_404 is 1;
 *   - any other final response to a challenged peer on a Call-ID that is open;
 *   - requests from a challenged peer that carry credentials (which open their Call-ID);
 *   - over TCP, a segment that does not hold exactly one whole message (it may hold another
 *     message the rules need), and segments that start inside a message.
 * "Challenged" and "open" last challenge_grace (config FB_CFG_GRACE_MS) after the last mark.
 * The Call-ID, the credentials and the length of a message are read by the header scan, an
 * automaton whose table user space writes (fastban/headerscan.py). Whatever the scan cannot
 * read within FB_SCAN_MAX bytes counts as open: it costs a copy, never a withheld message.
 * With FB_CFG_ARMED, it bans armed sources itself (bpf/armed.h). Never changes or drops a
 * packet. Compiled together with xdp_drop.c (fastban/dataplane).
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include "fastban.h"

BPF_TABLE_PINNED("lru_hash", struct fb_peer, struct fb_peer_state, challenged,
                 FB_PEER_ENTRIES, FB_PIN("challenged"));
BPF_TABLE_PINNED("lru_hash", struct fb_call_key, __u64, open_calls,
                 FB_CALL_ENTRIES, FB_PIN("open_calls"));
BPF_ARRAY(scan_table, struct fb_scan_table, 1);
/* 16 MiB. The default wakeup of bpf_ringbuf_output wakes the reader only when it has read
 * everything before the record (it may be asleep), so a burst costs one wakeup, a lone record
 * one too. */
BPF_RINGBUF_OUTPUT(captures, FB_CAPTURE_RING_PAGES);
/* A record (the meta, then the packet) is assembled here: bpf_ringbuf_reserve takes only a
 * constant size, bpf_ringbuf_output a bounded one. */
struct fb_capture_record {
    struct fb_capture_meta meta;
    __u8 bytes[FB_CAPTURE_MAX];
};
BPF_PERCPU_ARRAY(capture_record, struct fb_capture_record, 1);
/* Never written: lets user space read the compiled layout of struct fb_capture_meta. */
BPF_ARRAY(meta_layout, struct fb_capture_meta, 1);

/* What one packet needs, kept in map memory between the steps: the verifier then sees the
 * same state at the scan loop from every path, and checks the loop once. */
struct fb_work {
    struct fb_capture_meta meta;
    struct fb_peer peer;
    __u64 now;
    __u64 grace;
    __u32 action;           /* FB_ACT_* */
    __u32 scan_len;         /* bytes loaded into bytes[] */
    __u64 stop_flags;       /* the scan stops at a byte with these flags */
    __u64 counts;           /* the scan's results: Call-IDs | Content-Lengths << 16 |
                               credentials << 32 */
    __u64 header_end;
    __u64 call_at;          /* where the (last) Call-ID and Content-Length values start */
    __u64 length_at;
    __u64 call_hash;
    __u64 call_read;        /* 1: call_hash is the hash of the only Call-ID's value */
    __u64 content_length;
    __u64 length_read;      /* 1: content_length is the only Content-Length's value */
    __u8 bytes[2 * FB_SCAN_MAX];    /* twice the scan: a length masked to 2 * FB_SCAN_MAX - 1
                                       fits, which the verifier can see */
};
BPF_PERCPU_ARRAY(work, struct fb_work, 1);

/* Results go through map memory: reading them back, not reusing what the compiler kept in
 * registers, lets the verifier see one state after a loop, whichever iteration left it. */
#define fb_forget() __asm__ __volatile__("" ::: "memory")

#define FB_ACT_CHALLENGE        1   /* a 401/407: copy, mark the peer and its Call-ID */
#define FB_ACT_FAILURE          2   /* a 403/404: copy */
#define FB_ACT_ANSWER           3   /* a final answer to a challenged peer: copy if its call is open */
#define FB_ACT_OTHER            4   /* a response nobody waits for: only TCP may need a copy */
#define FB_ACT_REQUEST          5   /* a request from a challenged peer: copy if it has credentials */

static __always_inline int fb_fresh(__u64 then, struct fb_work *w)
{
    return then != 0 && w->now - then <= w->grace;
}

#include "armed.h"

static __always_inline void *fb_skb_read(struct __sk_buff *skb, __u32 off, void *buffer,
                                         __u32 len)
{
    return bpf_skb_load_bytes(skb, off, buffer, len) == 0 ? buffer : NULL;
}

#define FB_WALK_NAME fb_walk_skb
#define FB_WALK_CTX struct __sk_buff
#define FB_WALK_READ fb_skb_read
#include "walk.h"

/* Walks the frame (bpf/walk.h) and its TCP/UDP header into w->meta; returns the payload
 * offset, or 0 for a packet to leave alone. */
static __always_inline __u32 fb_walk(struct __sk_buff *skb, struct fb_work *w)
{
    struct fb_capture_meta *meta = &w->meta;
    struct fb_walk walk;
    if (!fb_walk_skb(skb, &walk) || walk.later_fragment)
        return 0;                             /* a later fragment holds no header of ours */
    if (walk.l4proto != IPPROTO_UDP && walk.l4proto != IPPROTO_TCP)
        return 0;
    meta->family = walk.family;
    meta->protocol = walk.l4proto;
    __builtin_memcpy(meta->saddr, walk.saddr, 16);
    __builtin_memcpy(meta->daddr, walk.daddr, 16);
    if (walk.first_fragment)
        meta->flags |= FB_META_FRAGMENT;
    __u32 off = walk.l4_off, l3_end = walk.l3_end;

    __be16 ports[2];
    if (bpf_skb_load_bytes(skb, off, ports, 4) < 0)
        return 0;
    meta->sport = ntohs(ports[0]);
    meta->dport = ntohs(ports[1]);
    if (walk.l4proto == IPPROTO_UDP) {
        __be16 udp_len;
        if (bpf_skb_load_bytes(skb, off + 4, &udp_len, 2) < 0)
            return 0;
        meta->payload_len = ntohs(udp_len) >= 8 ? ntohs(udp_len) - 8 : 0;
        off += 8;
    } else {
        __u8 tcp[14];
        if (bpf_skb_load_bytes(skb, off, tcp, sizeof(tcp)) < 0)
            return 0;
        meta->tcp_seq = (__u32)tcp[4] << 24 | (__u32)tcp[5] << 16 | (__u32)tcp[6] << 8 | tcp[7];
        if (tcp[13] & 0x01)
            meta->flags |= FB_META_TCP_FIN;
        if (tcp[13] & 0x04)
            meta->flags |= FB_META_TCP_RST;
        off += (tcp[12] >> 4) * 4;
        meta->payload_len = l3_end > off ? l3_end - off : 0;
    }
    if (off > 0xFFFF)
        return 0;
    meta->payload_off = off;
    return off;
}

/* Reads the start of the payload into meta->kind (and status) and w->peer, and chooses what
 * the packet needs (w->action); returns 0 to leave it alone, 1 to go on. */
static __always_inline int fb_classify(struct __sk_buff *skb, __u8 direction,
                                       struct fb_work *w, __u32 off)
{
    struct fb_capture_meta *meta = &w->meta;
    __u32 roles = fb_config(direction == FB_DIR_EGRESS ? FB_CFG_ROLES_EGRESS
                                                       : FB_CFG_ROLES_INGRESS);
    __u16 sport = meta->sport, dport = meta->dport;
    int response_side = (roles & FB_ROLE_RESPONSES) && sip_ports.lookup(&sport);
    int request_side = (roles & FB_ROLE_REQUESTS) && sip_ports.lookup(&dport);
    if (!response_side && !request_side)
        return 0;
    if (skb->len <= off)
        return 0;                             /* no payload: a bare TCP ACK, SYN, FIN */

    char line[12];                            /* "SIP/2.0 NNN " or "METHOD ..." */
    int whole_line = bpf_skb_load_bytes(skb, off, line, sizeof(line)) == 0;
    if (whole_line && response_side && line[0] == 'S' && line[1] == 'I' && line[2] == 'P' &&
        line[3] == '/') {
        if (line[4] != '2' || line[5] != '.' || line[6] != '0' || line[7] != ' ')
            return 0;
        __u16 status = 0;
#pragma unroll
        for (int i = 8; i < 11; i++) {
            if (line[i] < '0' || line[i] > '9')
                return 0;
            status = status * 10 + (line[i] - '0');
        }
        if (line[11] != ' ' && line[11] != '\r')
            return 0;
        meta->kind = FB_KIND_RESPONSE;
        meta->status = status;
    } else if (whole_line && request_side && line[0] >= 'A' && line[0] <= 'Z' &&
               line[1] >= 'A' && line[1] <= 'Z' && line[2] >= 'A' && line[2] <= 'Z') {
        meta->kind = FB_KIND_REQUEST;
    } else if (meta->protocol == IPPROTO_TCP) {
        meta->kind = FB_KIND_CONTINUATION;
    } else {
        return 0;
    }
    fb_count(FB_CNT_CAPTURE_EXAMINED);

    /* The peer is the far end: who a response goes to, who a request comes from. A TCP
     * continuation belongs to the side its ports say. */
    int towards_peer = meta->kind == FB_KIND_RESPONSE ||
                       (meta->kind == FB_KIND_CONTINUATION && response_side);
    __u8 *peer_addr = towards_peer ? meta->daddr : meta->saddr;
    if (meta->family == 4) {
        __builtin_memset(w->peer.addr, 0, 10);
        w->peer.addr[10] = 0xff;
        w->peer.addr[11] = 0xff;
        __builtin_memcpy(&w->peer.addr[12], peer_addr, 4);
    } else {
        __builtin_memcpy(w->peer.addr, peer_addr, 16);
    }
    w->now = bpf_ktime_get_ns();
    __u16 status = meta->status;
    if ((status == 403 || (status == 404 && fb_config(FB_CFG_COUNT_404))) &&
        meta->protocol != IPPROTO_TCP && !fb_config(FB_CFG_ARMED)) {
        meta->reason = FB_WHY_FAILURE;        /* nothing to read in it */
        w->action = 0;
        return 1;
    }
    w->grace = (__u64)fb_config(FB_CFG_GRACE_MS) * 1000000ULL;
    struct fb_peer_state *state = challenged.lookup(&w->peer);
    int peer_challenged = state && fb_fresh(state->challenged_ns, w);
    int any_call = state && fb_fresh(state->any_call_ns, w);

    if (meta->kind == FB_KIND_CONTINUATION) {
        if (towards_peer) {
            meta->reason = FB_WHY_TCP_SEGMENT;
        } else if (peer_challenged) {
            meta->reason = FB_WHY_TCP_SEGMENT;
            if (state)
                state->any_call_ns = w->now;  /* it may hold a request with credentials */
        } else {
            return 0;
        }
        w->action = 0;
        return 1;
    }
    if (meta->kind == FB_KIND_REQUEST) {
        if (!peer_challenged)
            return 0;
        w->action = FB_ACT_REQUEST;
        return 1;
    }
    if (status == 401 || status == 407) {
        if (state) {
            state->challenged_ns = w->now;
        } else {
            struct fb_peer_state fresh = {.challenged_ns = w->now};
            challenged.update(&w->peer, &fresh);
        }
        w->action = FB_ACT_CHALLENGE;
    } else if (status == 403 || (status == 404 && fb_config(FB_CFG_COUNT_404))) {
        w->action = FB_ACT_FAILURE;          /* over TCP: the segment may hold more */
    } else if (status >= 200 && peer_challenged) {
        if (any_call) {
            meta->reason = FB_WHY_UNSURE;
            fb_count(FB_CNT_CAPTURE_UNSURE);
            w->action = 0;
            return 1;
        }
        w->action = FB_ACT_ANSWER;
    } else if (meta->protocol == IPPROTO_TCP) {
        w->action = FB_ACT_OTHER;
    } else {
        return 0;
    }
    return 1;
}

/* The header scan, step 1 (fastban/headerscan.py): the automaton over w->bytes[0, scan_len),
 * to the end of the header section, or to the first Call-ID when that is all a UDP response
 * needs. Most bytes only move the state; the few whose state has flags (a colon of a header the
 * scan wants, the end) are written to map memory, so both paths meet the verifier in one
 * state. */
static __always_inline void fb_scan(struct fb_work *w, struct fb_scan_table *table)
{
    __u32 n = w->scan_len;
    __u64 state = 0;
    w->counts = 0;
    w->header_end = 0;
    w->call_at = 0;
    w->length_at = 0;
    fb_forget();
    if (n > FB_SCAN_MAX)
        n = FB_SCAN_MAX;
#pragma clang loop unroll(disable)
    for (__u32 i = 0; i < FB_SCAN_MAX; i++) {
        if (i >= n)
            break;
        __u64 step = table->step[(state & (FB_SCAN_STATES - 1)) << 8 | w->bytes[i]];
        state = step;
        if (step < 256)
            continue;                         /* no flags */
        __u64 flags = step >> 8;
        if (flags & w->stop_flags) {          /* the end, or the first Call-ID */
            __u64 at_call_id = -((flags >> 2) & 1);
            w->header_end = (i + 1) & -((flags >> 5) & 1);
            w->call_at = ((i + 1) & at_call_id) | (w->call_at & ~at_call_id);
            w->counts += (flags >> 2) & 1;
            break;
        }
        __u64 first = w->call_at;
        first = ((first | -first) >> 63) ^ 1;                 /* 1 while none was seen */
        __u64 mask = -((flags >> 2) & first);
        w->call_at = ((i + 1) & mask) | (w->call_at & ~mask);
        mask = -((flags >> 3) & 1);
        w->length_at = ((i + 1) & mask) | (w->length_at & ~mask);
        w->counts += ((flags >> 2) & 1) | ((flags >> 3) & 1) << 16 | ((flags >> 4) & 1) << 32;
        fb_forget();
    }
    fb_forget();
}

/* Step 2: the hash of the Call-ID value, to its LF. */
static __always_inline void fb_hash_call_id(struct fb_work *w, struct fb_scan_table *table)
{
    __u64 h = FB_FNV_OFFSET, read = 0;
    __u32 at = w->call_at, n = w->scan_len;
#pragma clang loop unroll(disable)
    for (__u32 j = 0; j < FB_CALL_ID_SPAN; j++) {
        __u32 k = at + j;
        if (k >= n)
            break;
        __u64 c = w->bytes[k & (2 * FB_SCAN_MAX - 1)];
        __u64 kind = table->call_id_byte[c];
        if (kind == FB_HASH_END) {
            read = 1;
            break;
        }
        __u64 mask = kind - 1;                /* FB_HASH_BYTE: all ones; FB_HASH_SKIP: 0 */
        h = (((h ^ c) * FB_FNV_PRIME) & mask) | (h & ~mask);
    }
    w->call_hash = h;
    w->call_read = read;
    fb_forget();
}

/* Step 3: the Content-Length value: blanks, 1-10 digits, blanks or CR, LF. */
static __always_inline void fb_read_length(struct fb_work *w)
{
    __u64 value = 0, read = 0;
    __u32 at = w->length_at, n = w->scan_len, digits = 0, phase = 0;
#pragma unroll
    for (__u32 j = 0; j < FB_LENGTH_SPAN; j++) {
        __u32 k = at + j;
        if (k >= n)
            break;
        __u8 c = w->bytes[k & (2 * FB_SCAN_MAX - 1)];
        if (c >= '0' && c <= '9' && phase < 2 && digits < 10) {
            value = value * 10 + (c - '0');
            digits++;
            phase = 1;
        } else if (c == '\n' && digits) {
            read = 1;
            break;
        } else if (c == ' ' || c == '\t' || (c == '\r' && digits)) {
            if (phase == 1)
                phase = 2;
        } else {
            break;
        }
    }
    w->content_length = value;
    w->length_read = read;
    fb_forget();
}

static __always_inline void fb_open_call(struct fb_work *w, int call_known)
{
    if (call_known) {
        struct fb_call_key key = {.call_hash = w->call_hash};
        __builtin_memcpy(key.addr, w->peer.addr, 16);
        __u64 now = w->now;
        open_calls.update(&key, &now);
        return;
    }
    struct fb_peer_state *state = challenged.lookup(&w->peer);
    if (state) {
        state->any_call_ns = w->now;
    } else {
        struct fb_peer_state fresh = {.any_call_ns = w->now};
        challenged.update(&w->peer, &fresh);
    }
}

/* After the scan: what to copy, and the marks it leaves. Returns the FB_WHY_* reason, 0 for
 * no copy. */
static __always_inline __u8 fb_decide(struct fb_work *w)
{
    __u32 action = w->action;
    __u64 counts = w->counts;
    int call_known = w->call_read;
    int credentials = ((counts >> 32) & 0xFFFF) != 0;
    __u8 reason = 0;

    if (action == FB_ACT_CHALLENGE) {
        fb_open_call(w, call_known);
        reason = FB_WHY_FAILURE;
    } else if (action == FB_ACT_FAILURE) {
        reason = FB_WHY_FAILURE;
    } else if (action == FB_ACT_ANSWER) {
        if (!call_known) {
            reason = FB_WHY_UNSURE;
        } else {
            struct fb_call_key key = {.call_hash = w->call_hash};
            __builtin_memcpy(key.addr, w->peer.addr, 16);
            __u64 *marked = open_calls.lookup(&key);
            if (marked && fb_fresh(*marked, w))
                reason = FB_WHY_OPEN_CALL;
        }
    } else if (action == FB_ACT_REQUEST) {
        if (credentials) {
            fb_open_call(w, call_known);
            reason = FB_WHY_CREDENTIALS;
        } else if (w->header_end == 0) {
            fb_open_call(w, 0);               /* credentials may lie past the scan */
            reason = FB_WHY_UNSURE;
        }
    }
    if (w->meta.protocol == IPPROTO_TCP && reason == 0) {
        __u64 end = w->header_end;
        int one_message = end != 0 && ((counts >> 16) & 0xFFFF) == 1 && w->length_read &&
                          end + w->content_length == w->meta.payload_len;
        if (!one_message) {
            reason = FB_WHY_TCP_SEGMENT;
            if (action == FB_ACT_REQUEST)
                fb_open_call(w, 0);           /* a later message may carry credentials */
        }
    }
    if (reason == FB_WHY_UNSURE)
        fb_count(FB_CNT_CAPTURE_UNSURE);
    return reason;
}

static __always_inline int fb_capture(struct __sk_buff *skb, __u8 direction)
{
    __u32 zero = 0;
    struct fb_work *w = work.lookup(&zero);
    struct fb_scan_table *table = scan_table.lookup(&zero);
    if (!w || !table)
        return TC_ACT_OK;
    __builtin_memset(&w->meta, 0, sizeof(w->meta));
    w->action = 0;
    __u32 off = fb_walk(skb, w);
    if (off == 0 || !fb_classify(skb, direction, w, off))
        return TC_ACT_OK;

    if (w->action != 0) {
        off = w->meta.payload_off;      /* from memory: the same state for the scan from any path */
        __u32 n = skb->len > off ? skb->len - off : 0;
        if (n > FB_SCAN_MAX)
            n = FB_SCAN_MAX;
        n &= 2 * FB_SCAN_MAX - 1;
        if (n == 0 || bpf_skb_load_bytes(skb, off, w->bytes, n) < 0)
            n = 0;
        w->scan_len = n;
        w->stop_flags = FB_SCAN_END;
        if (w->meta.protocol != IPPROTO_TCP && w->action != FB_ACT_REQUEST)
            w->stop_flags |= FB_SCAN_CALL_ID;
        fb_count(FB_CNT_CAPTURE_SCANNED);
        fb_scan(w, table);
        w->call_read = 0;
        if (w->counts & 0xFFFF)
            fb_hash_call_id(w, table);
        w->length_read = 0;
        if (w->meta.protocol == IPPROTO_TCP && ((w->counts >> 16) & 0xFFFF) == 1)
            fb_read_length(w);
        w->meta.reason = fb_decide(w);
        if (fb_config(FB_CFG_ARMED))
            fb_armed_message(w);
    }
    if (w->meta.reason == 0)
        return TC_ACT_OK;

    struct fb_capture_meta *meta = &w->meta;
    if (meta->kind == FB_KIND_REQUEST)
        fb_count(FB_CNT_CAPTURE_REQUESTS);
    meta->ktime_ns = w->now;
    meta->direction = direction;
    __u32 len = skb->len;
    if (len > FB_CAPTURE_MAX)
        len = FB_CAPTURE_MAX;
    meta->cap_len = len;
    struct fb_capture_record *record = capture_record.lookup(&zero);
    if (!record)
        return TC_ACT_OK;
    __builtin_memcpy(&record->meta, meta, sizeof(*meta));
    /* [1, FB_CAPTURE_MAX] in a way the verifier sees (the barrier keeps the compiler from
     * dropping the mask it knows to be a no-op). */
    __asm__ __volatile__("" : "+r"(len));
    len = ((len - 1) & (FB_CAPTURE_MAX - 1)) + 1;
    int rc = -1;
    if (bpf_skb_load_bytes(skb, 0, record->bytes, len) == 0)
        rc = captures.ringbuf_output(record, sizeof(record->meta) + len, 0);
    if (rc < 0)
        fb_count(FB_CNT_CAPTURE_FAILED);
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
