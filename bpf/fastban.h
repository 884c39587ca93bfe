/* fastban: what both BPF programs share besides the ABI (bpf/abi.h): the pin directory, the
 * counters and config maps, and their helpers.
 *
 * xdp_drop.c and tc_capture.c are compiled as one BCC program by fastban/dataplane/program.py
 * (so that they share these maps and cost one compile), with bpf/ on the include path.
 *
 * Compile-time settings, passed with -D:
 *   FB_CAPACITY   entries per ban and whitelist map (default FB_CAPACITY_DEFAULT)
 *   FB_RATE_ENTRIES  sources the rate limit tracks (default FB_RATE_ENTRIES_DEFAULT)
 *   FB_PIN_DIR    string literal, directory under bpffs where the maps are pinned
 */
#ifndef FASTBAN_H
#define FASTBAN_H

#include "abi.h"

#ifndef FB_CAPACITY
#define FB_CAPACITY FB_CAPACITY_DEFAULT
#endif
#ifndef FB_RATE_ENTRIES
#define FB_RATE_ENTRIES FB_RATE_ENTRIES_DEFAULT
#endif
#ifndef FB_PIN_DIR
#define FB_PIN_DIR "/sys/fs/bpf/fastban/default"
#endif
#define FB_PIN(name) FB_PIN_DIR "/" name

BPF_TABLE_PINNED("percpu_array", __u32, __u64, counters, FB_CNT_MAX, FB_PIN("counters"));
BPF_TABLE_PINNED("array", __u32, __u32, config, FB_CFG_MAX, FB_PIN("config"));
/* The SIP ports (host order): the capture reads messages from and to them, the rate limit
 * and the admission count requests to them. */
BPF_TABLE_PINNED("hash", __u16, __u8, sip_ports, FB_PORT_ENTRIES,
                 FB_PIN("sip_ports"), BPF_F_NO_PREALLOC);

/* Sources that logged in within trust_time (the rules' trust, written by user space): value
 * the monotonic ns the trust ends. Keys as the whitelist's (host-order prefixlen). */
BPF_TABLE_PINNED("lpm_trie", struct fb_lpm4, __u64, trusted_v4, FB_TRUSTED_ENTRIES,
                 FB_PIN("trusted_v4"), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct fb_lpm6, __u64, trusted_v6, FB_TRUSTED_ENTRIES,
                 FB_PIN("trusted_v6"), BPF_F_NO_PREALLOC);

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

/* 1 if the source (4 or 16 bytes, network order) is trusted now. */
static __always_inline int fb_trusted(__u8 family, __u8 *saddr, __u64 now_ns)
{
    __u64 *until;
    if (family == 4) {
        struct fb_lpm4 key = {.prefixlen = 32};
        __builtin_memcpy(key.addr, saddr, 4);
        until = trusted_v4.lookup(&key);
    } else {
        struct fb_lpm6 key = {.prefixlen = 128};
        __builtin_memcpy(key.addr, saddr, 16);
        until = trusted_v6.lookup(&key);
    }
    return until && now_ns < *until;
}

#endif /* FASTBAN_H */
