/* fastban: the threshold ban decided in the kernel, for bpf/tc_capture.c (after struct fb_work).
 *
 * User space (fastban/arming.py) arms a source one proven failure short of maxretry in the
 * "armed" table. With config FB_CFG_ARMED set, the capture, over UDP:
 *   - on a request from an armed peer, keeps the hash of its Call-ID when it carries
 *     credentials, and forgets it when a request without them comes on that Call-ID;
 *   - on a final response to an armed peer on that Call-ID: a 401/407/403 bans the peer in
 *     bans_v4/bans_v6 at once (and marks the copy FB_META_KERNEL_BAN), any other takes the
 *     request (a challenge to a request without credentials, a 200, never ban).
 * A failure is told from a retransmission of it as the rules tell them (fastban/rules.py): by
 * its status, Call-ID and top Via branch. The hash of the response's bytes before its Call-ID's
 * value (the status line, and the Via, From and To every SIP stack writes ahead of the Call-ID)
 * is compared with that of the failure that armed the source. A retransmission hashes the same
 * (a stateful server resends its stored bytes, RFC 3261 17.2.1; a stateless one answers the same
 * request with the same headers: only the nonce, after the Call-ID, may change); a new failure
 * has a new branch. When two failures hash the same anyway (a Via after the Call-ID), the
 * capture does not ban and user space decides, as without arms.
 */
#ifndef FASTBAN_ARMED_H
#define FASTBAN_ARMED_H

BPF_TABLE_PINNED("lru_hash", struct fb_peer, struct fb_armed, armed, FB_ARMED_ENTRIES,
                 FB_PIN("armed"));

/* FNV-1a over the bytes before the Call-ID's value (fastban.headerscan.failure_hash). */
static __always_inline __u64 fb_hash_failure(struct fb_work *w)
{
    __u64 h = FB_FNV_OFFSET;
    __u32 n = w->call_at;
#pragma clang loop unroll(disable)
    for (__u32 i = 0; i < FB_SCAN_MAX; i++) {
        if (i >= n)
            break;
        h = (h ^ w->bytes[i]) * FB_FNV_PRIME;
    }
    return h;
}

static __always_inline void fb_armed_request(struct fb_work *w, struct fb_armed *arm)
{
    if (((w->counts >> 32) & 0xFFFF) != 0) {
        arm->request_hash = w->call_hash;
        arm->request_ns = w->now;
    } else if (arm->request_hash == w->call_hash) {
        arm->request_hash = 0;
    }
}

static __always_inline void fb_armed_response(struct fb_work *w, struct fb_armed *arm)
{
    if (arm->request_hash != w->call_hash)
        return;
    __u16 status = w->meta.status;
    if (status != 401 && status != 407 && status != 403) {
        arm->request_hash = 0;                /* answered otherwise */
        return;
    }
    if (arm->banned_ns || w->now >= arm->deadline_ns || !fb_fresh(arm->request_ns, w))
        return;
    __u64 hash = fb_hash_failure(w);
    if (hash == arm->failure_hash)
        return;                               /* the failure that armed it, sent again */
    __u64 expires = arm->ban_ns ? w->now + arm->ban_ns : 0;
    struct fb_ban_value ban = {.expires_ns = expires};
    int rc;
    if (w->meta.family == 4) {
        __be32 key;
        __builtin_memcpy(&key, &w->peer.addr[12], 4);
        rc = bans_v4.update(&key, &ban);
    } else {
        struct fb_addr6 key;
        __builtin_memcpy(key.addr, w->peer.addr, 16);
        rc = bans_v6.update(&key, &ban);
    }
    if (rc != 0)
        return;                               /* a full table: user space decides as before */
    arm->request_hash = 0;
    arm->failure_hash = hash;
    arm->expires_ns = expires;
    arm->banned_ns = bpf_ktime_get_ns();      /* written: after the map update */
    w->meta.flags |= FB_META_KERNEL_BAN;
    fb_count(FB_CNT_KERNEL_BANS);
}

/* After the scan: what an armed peer's message does to its arm. */
static __always_inline void fb_armed_message(struct fb_work *w)
{
    struct fb_capture_meta *meta = &w->meta;
    if (!w->call_read || meta->protocol != IPPROTO_UDP || (meta->flags & FB_META_FRAGMENT))
        return;
    if (meta->kind == FB_KIND_RESPONSE && meta->status < 200)
        return;
    struct fb_armed *arm = armed.lookup(&w->peer);
    if (!arm)
        return;
    if (meta->kind == FB_KIND_REQUEST)
        fb_armed_request(w, arm);
    else
        fb_armed_response(w, arm);
}

#endif /* FASTBAN_ARMED_H */
