/* The admission of SIP requests under the server's capacity (included by xdp_drop.c).
 *
 * One bucket for all sources, shared by the CPUs: admitting a request moves its clock
 * (next_ns) on by 1/capacity s with an atomic add. Trusted requests always pass and move it,
 * so they take their share first; an untrusted request passes only while the clock is at most
 * FB_ADMISSION_BURST_MS ahead of now, so untrusted sources share what trusted ones leave.
 * The clock of an idle bucket is brought up to now by a plain store; racing with another
 * CPU's add it loses that add (one request admitted more). Two CPUs may both pass the check
 * before either adds: the clock overshoots by a request each. Trusted requests stop moving the
 * clock once it is FB_ADMISSION_DEBT_MS ahead, so a trusted surge beyond the capacity shuts
 * untrusted sources out for at most about that long after it ends.
 */
#ifndef FASTBAN_ADMISSION_H
#define FASTBAN_ADMISSION_H

BPF_TABLE_PINNED("array", __u32, struct fb_admission, admission, 1, FB_PIN("admission"));

/* 1 if one more SIP request fits in capacity requests/s, trusted sources first. */
static __always_inline int fb_capacity_admits(int trusted, __u32 capacity, __u64 now_ns)
{
    __u32 key = 0;
    struct fb_admission *bucket = admission.lookup(&key);
    if (!bucket)
        return 1;
    __u64 interval = 1000000000ULL / capacity;
    __u64 burst = (__u64)FB_ADMISSION_BURST_MS * 1000000;
    __u64 next = *(volatile __u64 *)&bucket->next_ns;
    if (next < now_ns) {
        next = now_ns;
        bucket->next_ns = next;
    }
    if (next > now_ns + burst) {
        if (!trusted)
            return 0;
        if (next > now_ns + (__u64)FB_ADMISSION_DEBT_MS * 1000000)
            return 1;
    }
    __sync_fetch_and_add(&bucket->next_ns, interval);
    return 1;
}

#endif /* FASTBAN_ADMISSION_H */
