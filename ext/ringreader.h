/* What ext/ringreader.pyx needs from C: the record layout (bpf/abi.h), the ring buffer's header
 * bits (linux/bpf.h) and the loads and stores the ring's protocol orders. */
#include <linux/types.h>
#include <linux/bpf.h>
#include "abi.h"

static inline __u64 fb_load_acquire_u64(const volatile void *p)
{
    return __atomic_load_n((const volatile __u64 *)p, __ATOMIC_ACQUIRE);
}

static inline __u32 fb_load_acquire_u32(const volatile void *p)
{
    return __atomic_load_n((const volatile __u32 *)p, __ATOMIC_ACQUIRE);
}

static inline void fb_store_release_u64(volatile void *p, __u64 value)
{
    __atomic_store_n((volatile __u64 *)p, value, __ATOMIC_RELEASE);
}
